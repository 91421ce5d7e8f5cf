"""BinaryIndex against numpy brute force, across sizes, SIMD levels and thread counts."""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest
from conftest import INT32_MAX, brute_knn, hamming_matrix, random_codes

import pylocalize

NBITS = [8, 64, 72, 128, 192, 200, 256, 512, 1024, 2048]


@pytest.mark.parametrize("nbits", NBITS)
def test_knn_matches_bruteforce(nbits, simd_level, num_threads):
    rng = np.random.default_rng(nbits)
    xb = random_codes(rng, 777, nbits)
    xq = random_codes(rng, 23, nbits)
    index = pylocalize.BinaryIndex(nbits)
    index.add(xb)
    dist = hamming_matrix(xq, xb)
    for k in (1, 10, 777, 1000):
        d, i = index.search(xq, k)
        rd, ri = brute_knn(dist, np.arange(777), k)
        assert d.dtype == np.int32 and i.dtype == np.int64 and d.shape == (23, k)
        np.testing.assert_array_equal(i, ri)
        np.testing.assert_array_equal(d, rd)


@pytest.mark.parametrize("nq", [1, 3, 64])
def test_parallel_over_database_and_queries(nq, simd_level, num_threads):
    # Large enough that few queries split the database across threads.
    rng = np.random.default_rng(nq)
    xb = random_codes(rng, 40_000, 256)
    xq = random_codes(rng, nq, 256)
    index = pylocalize.BinaryIndex(256)
    index.add(xb)
    d, i = index.search(xq, 25)
    rd, ri = brute_knn(hamming_matrix(xq, xb), np.arange(40_000), 25)
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_array_equal(d, rd)


def test_empty_index_pads():
    index = pylocalize.BinaryIndex(64)
    d, i = index.search(np.zeros((2, 8), np.uint8), 3)
    assert (i == -1).all() and (d == INT32_MAX).all()
    lims, rd, ri = index.range_search(np.zeros((2, 8), np.uint8), 64)
    assert lims.tolist() == [0, 0, 0] and rd.size == 0 and ri.size == 0


def test_ties_go_to_smaller_id_with_unordered_ids(simd_level, num_threads):
    rng = np.random.default_rng(5)
    base = random_codes(rng, 10, 128)
    xb = base[rng.integers(0, 10, 30_000)]  # many exact duplicates: massive ties
    ids = rng.permutation(10**6)[:30_000].astype(np.int64)
    index = pylocalize.BinaryIndex(128)
    index.add(xb, ids)
    xq = base[:4]
    d, i = index.search(xq, 50)
    rd, ri = brute_knn(hamming_matrix(xq, xb), ids, 50)
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_array_equal(d, rd)


def test_ids_default_continue_and_remove():
    rng = np.random.default_rng(1)
    xb = random_codes(rng, 100, 64)
    index = pylocalize.BinaryIndex(64)
    index.add(xb[:50])
    index.add(xb[50:])
    np.testing.assert_array_equal(index.ids(), np.arange(100))
    assert index.remove_ids(np.array([3, 7, 7, 1000])) == 2
    assert index.ntotal == 98
    keep = np.setdiff1d(np.arange(100), [3, 7])
    np.testing.assert_array_equal(index.ids(), keep)
    np.testing.assert_array_equal(index.codes(), xb[keep])
    d, i = index.search(xb, 1)
    assert set(i[:, 0].tolist()).isdisjoint({3, 7})
    rd, ri = brute_knn(hamming_matrix(xb, xb[keep]), keep, 5)
    np.testing.assert_array_equal(index.search(xb, 5)[1], ri)
    index.add(xb[:2])  # ids continue after the largest id
    np.testing.assert_array_equal(index.ids()[-2:], [100, 101])
    index.reset()
    assert index.ntotal == 0 and len(index) == 0


@pytest.mark.parametrize("nbits", [64, 200, 256])
def test_range_search(nbits, simd_level, num_threads):
    rng = np.random.default_rng(2)
    xb = random_codes(rng, 3000, nbits)
    xb[100:110] = xb[0]
    xq = np.concatenate([xb[:3], random_codes(rng, 5, nbits)])
    ids = rng.permutation(3000).astype(np.int64)
    index = pylocalize.BinaryIndex(nbits)
    index.add(xb, ids)
    dist = hamming_matrix(xq, xb)
    radius = int(np.quantile(dist, 0.01))
    lims, d, i = index.range_search(xq, radius)
    assert lims.shape == (len(xq) + 1,) and lims[0] == 0
    for q in range(len(xq)):
        hit = np.flatnonzero(dist[q] <= radius)
        order = np.lexsort((ids[hit], dist[q, hit]))
        np.testing.assert_array_equal(i[lims[q]:lims[q + 1]], ids[hit][order])
        np.testing.assert_array_equal(d[lims[q]:lims[q + 1]], dist[q, hit][order])


def test_range_search_single_query_parallel(num_threads):
    rng = np.random.default_rng(8)
    xb = random_codes(rng, 50_000, 256)
    index = pylocalize.BinaryIndex(256)
    index.add(xb)
    lims, d, i = index.range_search(xb[:1], 100)
    dist = hamming_matrix(xb[:1], xb)[0]
    hit = np.flatnonzero(dist <= 100)
    order = np.lexsort((hit, dist[hit]))
    np.testing.assert_array_equal(i, hit[order])


def test_save_load_serialize_pickle(tmp_path):
    rng = np.random.default_rng(3)
    xb = random_codes(rng, 1001, 200)
    ids = rng.permutation(5000)[:1001].astype(np.int64)
    index = pylocalize.BinaryIndex(200)
    index.add(xb, ids)
    expected = index.search(xb[:20], 7)
    path = tmp_path / "index.pyloc"
    index.save(path)
    for loaded in (
        pylocalize.BinaryIndex.load(path),
        pylocalize.BinaryIndex.load(str(path), mmap=True),
        pylocalize.BinaryIndex.deserialize(index.serialize()),
        pickle.loads(pickle.dumps(index)),
    ):
        assert loaded.nbits == 200 and loaded.ntotal == 1001
        got = loaded.search(xb[:20], 7)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])
    # A mapped index copies on change and leaves the file as it was.
    before = path.read_bytes()
    mapped = pylocalize.BinaryIndex.load(path, mmap=True)
    mapped.add(xb[:5])
    mapped.remove_ids(ids[:3])
    assert mapped.ntotal == 1003
    assert path.read_bytes() == before
    np.testing.assert_array_equal(pylocalize.BinaryIndex.load(path).ids(), ids)


def test_concurrent_search_and_add():
    rng = np.random.default_rng(4)
    xb = random_codes(rng, 20_000, 256)
    xq = random_codes(rng, 16, 256)
    index = pylocalize.BinaryIndex(256)
    index.add(xb[:10_000])
    errors = []

    def searcher():
        try:
            for _ in range(20):
                d, i = index.search(xq, 5)
                assert ((i >= 0) & (i < 20_000)).all()
                assert (np.diff(d, axis=1) >= 0).all()
        except Exception as e:  # reported to the main thread
            errors.append(e)

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    for chunk in np.array_split(xb[10_000:], 10):
        index.add(chunk)
    for t in threads:
        t.join()
    assert not errors
    rd, ri = brute_knn(hamming_matrix(xq, xb), np.arange(20_000), 5)
    np.testing.assert_array_equal(index.search(xq, 5)[1], ri)


@pytest.mark.parametrize(
    "make, fix",
    [
        (lambda xb: xb.astype(np.float32), "astype"),
        (lambda xb: xb.astype(np.int8), "astype"),
        (lambda xb: xb[0], "reshape"),
        (lambda xb: np.ascontiguousarray(xb[:, :16]), "32 columns"),
        (lambda xb: np.asfortranarray(xb), "ascontiguousarray"),
        (lambda xb: xb[::2], "ascontiguousarray"),
        (lambda xb: xb.tolist(), "numpy array"),
    ],
)
def test_bad_input_gives_value_error_with_fix(make, fix):
    rng = np.random.default_rng(0)
    xb = random_codes(rng, 10, 256)
    index = pylocalize.BinaryIndex(256)
    with pytest.raises(ValueError, match=fix):
        index.add(make(xb))
    index.add(xb)
    with pytest.raises(ValueError, match=fix):
        index.search(make(xb), 1)


def test_bad_arguments():
    for nbits in (0, -8, 12):
        with pytest.raises(ValueError, match="multiple of 8"):
            pylocalize.BinaryIndex(nbits)
    index = pylocalize.BinaryIndex(64)
    index.add(np.zeros((3, 8), np.uint8))
    with pytest.raises(ValueError, match="k must be"):
        index.search(np.zeros((1, 8), np.uint8), 0)
    with pytest.raises(ValueError, match="one entry per code"):
        index.add(np.zeros((3, 8), np.uint8), np.arange(2, dtype=np.int64))
    with pytest.raises(ValueError, match="radius"):
        index.range_search(np.zeros((1, 8), np.uint8), -1)
    with pytest.raises(ValueError):
        index.search(np.zeros((1, 8), np.uint8), 2.5)


def test_pack_unpack_bits():
    rng = np.random.default_rng(6)
    bits = rng.random((5, 200)) < 0.5
    codes = pylocalize.pack_bits(bits)
    assert codes.shape == (5, 25) and codes.dtype == np.uint8
    np.testing.assert_array_equal(codes, np.packbits(bits, axis=1, bitorder="little"))
    np.testing.assert_array_equal(pylocalize.unpack_bits(codes, 200), bits)
    # bit j of a code is bit j % 8 of byte j // 8
    one = np.zeros((1, 16), bool)
    one[0, 9] = True
    assert pylocalize.pack_bits(one).tolist() == [[0, 2]]
    with pytest.raises(ValueError, match="multiple of 8"):
        pylocalize.pack_bits(np.zeros((1, 12), bool))
    with pytest.raises(ValueError, match="bool"):
        pylocalize.pack_bits(np.zeros((1, 16), np.float32))
    # Hamming distance of packed codes = number of differing bits
    index = pylocalize.BinaryIndex(200)
    index.add(codes)
    d, i = index.search(codes[:1], 5)
    np.testing.assert_array_equal(np.sort((bits[:1] != bits).sum(1)), d[0])
