"""binarize and MultiBitIndex (SDC) against independent numpy references."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from conftest import brute_knn

import pylocalize
from pylocalize.index.metrics import recall_at


def numpy_binarize(x: np.ndarray, u: int) -> np.ndarray:
    """Reference recurrent binarization, written from the definition."""
    alpha = np.abs(x.astype(np.float64)).mean(1, keepdims=True)
    residual = x.astype(np.float64).copy()
    planes = []
    for p in range(u):
        bit = residual >= 0
        planes.append(np.packbits(bit, axis=1, bitorder="little"))
        residual -= np.where(bit, 1.0, -1.0) * alpha * 2.0 ** -p
    return np.concatenate(planes, axis=1)


def sdc_scores(cq, cx, dim, u):
    """Cosine SDC: sum over plane pairs of 2^-(i+j) <s_qi, s_xj> (s = 2b - 1), divided by
    the norms of the full reconstructions."""
    pb = (dim + 7) // 8
    sq = [2.0 * pylocalize.unpack_bits(np.ascontiguousarray(cq[:, p * pb:(p + 1) * pb]), dim) - 1 for p in range(u)]
    sx = [2.0 * pylocalize.unpack_bits(np.ascontiguousarray(cx[:, p * pb:(p + 1) * pb]), dim) - 1 for p in range(u)]
    out = np.zeros((len(cq), len(cx)))
    for i in range(u):
        for j in range(u):
            out += 2.0 ** -(i + j) * (sq[i] @ sx[j].T)
    norm_q = np.linalg.norm(sum(2.0 ** -p * sq[p] for p in range(u)), axis=1)
    norm_x = np.linalg.norm(sum(2.0 ** -p * sx[p] for p in range(u)), axis=1)
    return out / norm_q[:, None] / norm_x[None, :]


def assert_topk_equivalent(scores, ids, ref, k, atol=1e-5):
    """The returned ids are a correct top-k of `ref` up to float ties: scores match the
    reference, are sorted, and nothing left out scores clearly above the k-th."""
    got = np.take_along_axis(ref, ids, 1)
    np.testing.assert_allclose(scores, got, rtol=1e-5, atol=atol)
    assert (np.diff(scores, axis=1) <= atol).all()
    kth = np.sort(ref, axis=1)[:, -k]
    np.testing.assert_allclose(scores[:, -1], kth, rtol=1e-5, atol=atol)
    for sel in ids:
        assert len(set(sel.tolist())) == k


@pytest.mark.parametrize("dim", [5, 64, 100, 128])
@pytest.mark.parametrize("u", [1, 2, 3, 4])
def test_binarize_matches_reference(dim, u):
    rng = np.random.default_rng(dim * 10 + u)
    x = rng.standard_normal((300, dim)).astype(np.float32)
    codes = pylocalize.binarize(x, u)
    assert codes.shape == (300, u * ((dim + 7) // 8)) and codes.dtype == np.uint8
    ref = numpy_binarize(x, u)
    # float32 vs float64 residuals may differ on values within rounding of zero
    assert (codes != ref).mean() < 1e-3
    # plane 0 is exactly the sign
    pb = (dim + 7) // 8
    np.testing.assert_array_equal(codes[:, :pb], np.packbits(x >= 0, axis=1, bitorder="little"))


def test_more_bits_reconstruct_better():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 96)).astype(np.float32)
    alpha = np.abs(x).mean(1, keepdims=True)
    errors = [np.linalg.norm(pylocalize.reconstruct(pylocalize.binarize(x, u), 96, u) * alpha - x)
              for u in (1, 2, 3, 4)]
    assert errors == sorted(errors, reverse=True)


@pytest.mark.parametrize("dim", [16, 100, 128, 256])
@pytest.mark.parametrize("u", [1, 2, 3, 4])
def test_sdc_search_matches_numpy(dim, u, simd_level):
    rng = np.random.default_rng(dim + u)
    x = rng.standard_normal((700, dim)).astype(np.float32)
    q = rng.standard_normal((9, dim)).astype(np.float32)
    cx, cq = pylocalize.binarize(x, u), pylocalize.binarize(q, u)
    index = pylocalize.MultiBitIndex(dim, u)
    index.add(cx)
    scores, ids = index.search(cq, 15)
    assert_topk_equivalent(scores, ids, sdc_scores(cq, cx, dim, u), 15)
    # the score is the cosine of the reconstructions
    rq, rx = pylocalize.reconstruct(cq, dim, u), pylocalize.reconstruct(cx, dim, u)
    cos = (rq @ rx.T) / np.linalg.norm(rq, axis=1)[:, None] / np.linalg.norm(rx, axis=1)[None, :]
    np.testing.assert_allclose(scores, np.take_along_axis(cos, ids, 1), rtol=1e-5, atol=1e-5)


def test_sdc_parallel_and_padding(num_threads):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((30_000, 64)).astype(np.float32)
    cx = pylocalize.binarize(x, 2)
    index = pylocalize.MultiBitIndex(64, 2)
    index.add(cx, np.arange(30_000, dtype=np.int64)[::-1].copy())
    s, i = index.search(cx[:2], 20)
    assert_topk_equivalent(s, 30_000 - 1 - i, sdc_scores(cx[:2], cx, 64, 2), 20)
    small = pylocalize.MultiBitIndex(64, 2)
    small.add(cx[:3])
    s, i = small.search(cx[:1], 5)
    assert i[0, 3:].tolist() == [-1, -1] and np.isneginf(s[0, 3:]).all()


def structured(rng, n, dim=64, clusters=50):
    centers = rng.standard_normal((clusters, dim)) * 2
    mix = rng.standard_normal((dim, dim)) * (0.7 ** np.arange(dim) / 4 + 0.05)
    x = centers[rng.integers(0, clusters, n)] + rng.standard_normal((n, dim)) @ mix
    return x.astype(np.float32)


def test_more_bits_retrieve_better_and_rerank_is_exact():
    rng = np.random.default_rng(12)
    x = structured(rng, 5000)
    q = structured(np.random.default_rng(13), 50)
    truth = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :10]
    recalls = []
    for u in (1, 2, 4):
        index = pylocalize.MultiBitIndex(64, u)
        index.add(pylocalize.binarize(x, u))
        recalls.append(recall_at(10, index.search(pylocalize.binarize(q, u), 10)[1], truth))
    assert recalls[0] < recalls[1] < recalls[2]
    index = pylocalize.MultiBitIndex(64, 2)
    index.add(pylocalize.binarize(x, 2), vectors=x)
    s, i = index.search(pylocalize.binarize(q, 2), 10, query_vectors=q, rerank=5000)
    ip = q @ x.T
    rs, ri = brute_knn(ip, np.arange(5000), 10, largest=True)
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_allclose(s, rs, rtol=1e-5)
    s2, i2 = index.search(pylocalize.binarize(q, 2), 10, query_vectors=q, rerank=200)
    assert recall_at(10, i2, truth) > recalls[1]
    np.testing.assert_allclose(s2, np.take_along_axis(ip, i2, 1), rtol=1e-5)


def test_multibit_persistence(tmp_path):
    rng = np.random.default_rng(14)
    x = rng.standard_normal((400, 40)).astype(np.float32)
    codes = pylocalize.binarize(x, 3)
    index = pylocalize.MultiBitIndex(40, 3)
    index.add(codes, np.arange(1000, 1400, dtype=np.int64), vectors=x)
    qc = codes[:7]
    expected = index.search(qc, 5, query_vectors=x[:7], rerank=50)
    path = tmp_path / "mb.pyloc"
    index.save(path)
    for loaded in (pylocalize.MultiBitIndex.load(path), pylocalize.MultiBitIndex.load(path, mmap=True),
                   pickle.loads(pickle.dumps(index))):
        assert (loaded.dim, loaded.bits_per_dim, loaded.ntotal, loaded.has_vectors) == (40, 3, 400, True)
        got = loaded.search(qc, 5, query_vectors=x[:7], rerank=50)
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_allclose(got[0], expected[0])
    loaded = pylocalize.MultiBitIndex.load(path, mmap=True)
    loaded.add(codes[:1], vectors=x[:1])  # copy-on-write from the mapping
    assert loaded.ntotal == 401 and pylocalize.MultiBitIndex.load(path).ntotal == 400
    with pytest.raises(pylocalize.FormatError, match="not a BinaryIndex"):
        pylocalize.BinaryIndex.load(path)


def test_multibit_remove_ids_matches_rebuilt_index(tmp_path):
    """remove_ids leaves an index that searches, saves and loads as one built from the rest:
    against a rebuilt index and numpy SDC, with tied (duplicate) codes and a mapped file."""
    rng = np.random.default_rng(15)
    x = rng.standard_normal((300, 40)).astype(np.float32)
    x[100:130] = x[0]  # 31 identical codes: ties that must go to the smaller id
    codes = pylocalize.binarize(x, 3)
    ids = rng.permutation(np.arange(5000, 5300, dtype=np.int64))  # not ascending
    index = pylocalize.MultiBitIndex(40, 3)
    index.add(codes, ids, vectors=x)
    drop = np.concatenate([ids[::3], ids[100:110], [ids[0], 99999]])  # repeats and an unknown id
    gone = np.isin(ids, drop)
    assert index.remove_ids(drop) == gone.sum() and index.remove_ids([99999]) == 0
    rebuilt = pylocalize.MultiBitIndex(40, 3)
    rebuilt.add(codes[~gone], ids[~gone], vectors=x[~gone])
    np.testing.assert_array_equal(index.ids(), ids[~gone])
    qc, qx = codes[[0, 1, 2, 120, 200]], x[[0, 1, 2, 120, 200]]
    for kwargs in (dict(), dict(candidates=60), dict(query_vectors=qx, rerank=40)):
        got, want = index.search(qc, 25, **kwargs), rebuilt.search(qc, 25, **kwargs)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])
    scores, found = index.search(qc, 25)
    ref = sdc_scores(qc, codes[~gone], 40, 3)
    rows = np.searchsorted(ids[~gone], found, sorter=np.argsort(ids[~gone]))
    assert_topk_equivalent(scores, np.argsort(ids[~gone])[rows], ref, 25)
    for s_row, i_row in zip(scores, found):  # equal scores: ascending ids
        for a in range(24):
            if s_row[a] == s_row[a + 1]:
                assert i_row[a] < i_row[a + 1]
    index.save(tmp_path / "removed.pyloc")
    rebuilt.save(tmp_path / "rebuilt.pyloc")
    a = pylocalize._core.read_container(str(tmp_path / "removed.pyloc"))
    b = pylocalize._core.read_container(str(tmp_path / "rebuilt.pyloc"))
    assert a[:2] == b[:2] and a[2].keys() == b[2].keys() and a[3].keys() == b[3].keys()
    for name in a[3]:
        np.testing.assert_array_equal(a[3][name], b[3][name])
    # a mapped index copies before removing: the file keeps every code
    index.add(codes[:5], np.arange(10, 15, dtype=np.int64), vectors=x[:5])
    index.save(tmp_path / "full.pyloc")
    mapped = pylocalize.MultiBitIndex.load(tmp_path / "full.pyloc", mmap=True)
    assert mapped.remove_ids(np.arange(10, 15)) == 5
    np.testing.assert_array_equal(mapped.search(qc, 25, query_vectors=qx, rerank=40)[1],
                                  rebuilt.search(qc, 25, query_vectors=qx, rerank=40)[1])
    assert pylocalize.MultiBitIndex.load(tmp_path / "full.pyloc").ntotal == rebuilt.ntotal + 5
    assert mapped.remove_ids(mapped.ids()) == rebuilt.ntotal and len(mapped) == 0
    assert mapped.search(qc, 2)[1].tolist() == [[-1, -1]] * 5


def test_multibit_errors():
    rng = np.random.default_rng(15)
    x = rng.standard_normal((10, 32)).astype(np.float32)
    codes = pylocalize.binarize(x, 2)
    for u in (0, 5):
        with pytest.raises(ValueError, match="1..4"):
            pylocalize.MultiBitIndex(32, u)
        with pytest.raises(ValueError, match="1..4"):
            pylocalize.binarize(x, u)
    bad = x.copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pylocalize.binarize(bad, 2)
    with pytest.raises(ValueError, match="astype"):
        pylocalize.binarize(x.astype(np.float64), 2)
    index = pylocalize.MultiBitIndex(32, 2)
    with pytest.raises(ValueError, match="8 columns"):
        index.add(pylocalize.binarize(x, 1))
    index.add(codes)
    with pytest.raises(ValueError, match="vectors"):
        index.add(codes, vectors=x)
    with pytest.raises(ValueError, match="rerank needs float vectors"):
        index.search(codes, 3, query_vectors=x, rerank=5)
    with_vectors = pylocalize.MultiBitIndex(32, 2)
    with_vectors.add(codes, vectors=x)
    with pytest.raises(ValueError, match="query_vectors"):
        with_vectors.search(codes, 3, rerank=5)
    with pytest.raises(ValueError, match="pass vectors="):
        with_vectors.add(codes)


def sign_bounds(cq, cx, dim, candidates):
    """Reference for progressive search's documented per-query bound: the rank-th
    smallest sign-plane distance over an evenly spaced sample of the codes, plus one."""
    n, pb = len(cx), (dim + 7) // 8
    want = -(-8 * n // candidates)
    s = min(n, max(1024, min(want, n // 32, 16384)))
    rank = max(1, -(-candidates * s // n))
    sample = cx[(np.arange(s) * n) // s, :pb]
    sq = pylocalize.unpack_bits(np.ascontiguousarray(cq[:, :pb]), dim).astype(np.int32)
    ss = pylocalize.unpack_bits(np.ascontiguousarray(sample), dim).astype(np.int32)
    dist = sq @ (1 - ss).T + (1 - sq) @ ss.T
    return np.sort(dist, axis=1)[:, rank - 1] + 1


@pytest.mark.parametrize("u", [2, 3])
def test_progressive_search_matches_filtered_reference(u, simd_level, num_threads):
    rng = np.random.default_rng(40 + u)
    dim, n, k = 64, 40_000, 10
    x, q = structured(rng, n, dim), structured(rng, 12, dim)
    cx, cq = pylocalize.binarize(x, u), pylocalize.binarize(q, u)
    index = pylocalize.MultiBitIndex(dim, u)
    index.add(cx)
    ref = sdc_scores(cq, cx, dim, u)
    pb = (dim + 7) // 8
    sign = (pylocalize.unpack_bits(np.ascontiguousarray(cq[:, :pb]), dim).astype(np.int32) @
            (1 - pylocalize.unpack_bits(np.ascontiguousarray(cx[:, :pb]), dim).astype(np.int32)).T)
    sign += ((1 - pylocalize.unpack_bits(np.ascontiguousarray(cq[:, :pb]), dim).astype(np.int32)) @
             pylocalize.unpack_bits(np.ascontiguousarray(cx[:, :pb]), dim).astype(np.int32).T)
    for candidates in (10, 4000):
        bound = sign_bounds(cq, cx, dim, candidates)
        allowed = sign < bound[:, None]
        # a query left with fewer than k candidates falls back to exhaustive SDC
        filtered = np.where(allowed | (allowed.sum(1) < k)[:, None], ref, -np.inf)
        scores, ids = index.search(cq, k, candidates=candidates)
        assert_topk_equivalent(scores, ids, filtered, k)
        if candidates == 4000:  # 10 % of the codes: nearly all of exact SDC's top 10
            _, exact = index.search(cq, k)
            assert recall_at(k, ids, exact) >= 0.9
    # candidates >= ntotal is exact SDC
    np.testing.assert_array_equal(index.search(cq, k, candidates=n)[1], index.search(cq, k)[1])


def test_progressive_search_arguments():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2000, 32)).astype(np.float32)
    one = pylocalize.MultiBitIndex(32, 1)
    one.add(pylocalize.binarize(x, 1))
    c1 = pylocalize.binarize(x[:5], 1)
    # 1 bit per dimension: the code is its own sign plane, so the option changes nothing
    np.testing.assert_array_equal(one.search(c1, 7, candidates=50)[1], one.search(c1, 7)[1])
    two = pylocalize.MultiBitIndex(32, 2)
    two.add(pylocalize.binarize(x, 2), vectors=x)
    c2 = pylocalize.binarize(x[:5], 2)
    with pytest.raises(ValueError, match="candidates"):
        two.search(c2, 10, candidates=5)
    with pytest.raises(ValueError, match="candidates"):
        two.search(c2, 10, query_vectors=x[:5], rerank=100, candidates=50)
    with pytest.raises(ValueError, match="candidates"):
        two.search(c2, 10, candidates=-1)
    s, i = two.search(c2, 10, query_vectors=x[:5], rerank=100, candidates=400)
    assert (i[:, 0] == np.arange(5)).all()  # each vector finds itself after exact re-ranking
