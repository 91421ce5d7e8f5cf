"""CANNIndex (exact) against a numpy brute-force S(m), and its edge cases."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

import pylocalize
from pylocalize import _core
from pylocalize.index import read_pairs, write_pairs_hloc, write_pairs_kapture


def kernel_cann(r, p0=120.0, p1=0.4592):
    a = p1 / (1 - p1)
    x = np.clip(r / p0, 0, 1)
    return np.where(r < p0, (1 - x ** a) ** (1 / a), 0.0)


def kernel_gauss(r, sigma=60.0):
    return np.exp(-r ** 2 / (2 * sigma ** 2))


def brute_scores(x, ids, q, kernel):
    """S(m) for every image id in ids (ascending), by the definition."""
    d = np.sqrt(((q.astype(np.float64)[:, None, :] - x.astype(np.float64)[None]) ** 2).sum(-1))
    images = np.unique(ids)
    s = np.array([kernel(d[:, ids == m].min(1)).mean() if len(q) else 0.0 for m in images])
    return images, s


def check_ranking(scores, ids, images, ref, k, atol=1e-4):
    """Returned ids are a valid top-k of ref (up to float ties) with matching scores."""
    k_eff = min(k, len(images))
    lookup = dict(zip(images.tolist(), ref.tolist()))
    got = np.array([lookup[i] for i in ids[:k_eff]])
    np.testing.assert_allclose(scores[:k_eff], got, atol=atol)
    assert (np.diff(scores[:k_eff]) <= atol).all()
    np.testing.assert_allclose(scores[k_eff - 1], np.sort(ref)[::-1][k_eff - 1], atol=atol)
    assert (ids[k_eff:] == -1).all() and np.isneginf(scores[k_eff:]).all()


def make_db(rng, n_images=20, per_image=40, dim=32, dtype=np.float32):
    centers = rng.uniform(0, 120, (n_images, dim))
    x = np.concatenate([c + rng.normal(0, 25, (per_image, dim)) for c in centers])
    ids = np.repeat(np.arange(n_images) * 3 + 5, per_image)  # non-contiguous ids
    perm = rng.permutation(len(x))
    x, ids = x[perm], ids[perm]
    if dtype == np.uint8:
        x = np.clip(x, 0, 255).astype(np.uint8)
    return x.astype(dtype), ids.astype(np.int64), centers


@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
@pytest.mark.parametrize("kernel", ["cann", "gaussian"])
def test_exact_matches_bruteforce(dtype, kernel, simd_level, num_threads):
    rng = np.random.default_rng(0)
    x, ids, centers = make_db(rng, dtype=dtype)
    index = pylocalize.CANNIndex(32, kernel=kernel, sigma=40.0)
    index.add(x[:300], ids[:300])
    index.add(x[300:], ids[300:])  # images spread over two calls
    q = (centers[4] + rng.normal(0, 25, (50, 32)))
    q = np.clip(q, 0, 255).astype(dtype) if dtype == np.uint8 else q.astype(np.float32)
    images, ref = brute_scores(x, ids, q, kernel_cann if kernel == "cann" else (lambda r: kernel_gauss(r, 40.0)))
    for k in (1, 5, 20, 25):
        scores, got = index.search(q, k)
        assert scores.dtype == np.float32 and got.dtype == np.int64 and scores.shape == (k,)
        check_ranking(scores, got, images, ref, k)
    assert index.search(q, 1)[1][0] == 4 * 3 + 5  # the query's own image wins


def test_uint8_queries_on_float_index_and_batch():
    rng = np.random.default_rng(1)
    x, ids, centers = make_db(rng)
    index = pylocalize.CANNIndex(32)
    index.add(x, ids)
    queries = [(centers[i] + rng.normal(0, 25, (n, 32))).astype(np.float32) for i, n in [(0, 30), (3, 1), (7, 60)]]
    queries.append(np.zeros((0, 32), np.float32))
    scores, got = index.search_batch(queries, 6)
    for j, q in enumerate(queries):
        s1, i1 = index.search(q, 6)
        np.testing.assert_array_equal(i1, got[j])
        np.testing.assert_allclose(s1, scores[j], rtol=1e-6)
    # no query features: every image scores 0, ties to the smaller id
    assert (scores[3] == 0).all() and (got[3] == np.sort(np.unique(ids))[:6]).all()
    qu = np.clip(queries[0], 0, 255).astype(np.uint8)
    images, ref = brute_scores(x, ids, qu.astype(np.float32), kernel_cann)
    s, i = index.search(qu, 5)
    check_ranking(s, i, images, ref, 5)


def test_edge_cases():
    index = pylocalize.CANNIndex(8)
    s, i = index.search(np.zeros((3, 8), np.float32), 4)
    assert (i == -1).all() and np.isneginf(s).all() and index.num_images == 0 and index.dtype is None
    index.add(np.ones((5, 8), np.float32), 42)  # one image, scalar id
    s, i = index.search(np.ones((2, 8), np.float32), 3)
    assert i.tolist() == [42, -1, -1] and s[0] == pytest.approx(1.0)
    assert index.num_images == 1 and index.ntotal == 5 and index.image_ids().tolist() == [42]


def test_remove_images_and_readd():
    rng = np.random.default_rng(2)
    x, ids, centers = make_db(rng)
    index = pylocalize.CANNIndex(32)
    index.add(x, ids)
    q = (centers[2] + rng.normal(0, 25, (40, 32))).astype(np.float32)
    top = index.search(q, 1)[1][0]
    assert index.remove_images([top, 999]) == (ids == top).sum()
    assert top not in index.image_ids() and index.num_images == 19
    keep = ids != top
    images, ref = brute_scores(x[keep], ids[keep], q, kernel_cann)
    s, i = index.search(q, 19)
    check_ranking(s, i, images, ref, 19)
    index.add(x[~keep], ids[~keep])
    assert index.search(q, 1)[1][0] == top


def test_round_trips(tmp_path):
    rng = np.random.default_rng(3)
    x, ids, centers = make_db(rng, dtype=np.uint8)
    index = pylocalize.CANNIndex(32, kernel="gaussian", sigma=30.0)
    index.add(x, ids)
    q = np.clip(centers[5] + rng.normal(0, 25, (20, 32)), 0, 255).astype(np.uint8)
    expected = index.search(q, 7)
    index.save(tmp_path / "cann.pyloc")
    for other in (pylocalize.CANNIndex.load(tmp_path / "cann.pyloc", kernel="gaussian", sigma=30.0),
                  pickle.loads(pickle.dumps(index))):
        assert other.dtype == "uint8" and other.ntotal == len(x)
        got = other.search(q, 7)
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_allclose(got[0], expected[0])
    data = bytearray((tmp_path / "cann.pyloc").read_bytes())
    data[len(data) // 2] ^= 0x10
    (tmp_path / "bad.pyloc").write_bytes(bytes(data))
    with pytest.raises(pylocalize.FormatError):
        pylocalize.CANNIndex.load(tmp_path / "bad.pyloc")


def test_bad_inputs():
    index = pylocalize.CANNIndex(16)
    with pytest.raises(ValueError, match="float32 or uint8"):
        index.add(np.zeros((2, 16), np.float64), [0, 0])
    with pytest.raises(ValueError, match="16 columns"):
        index.add(np.zeros((2, 8), np.float32), [0, 0])
    with pytest.raises(ValueError, match="one entry per descriptor"):
        index.add(np.zeros((2, 16), np.float32), np.array([0], np.int64))
    bad = np.zeros((2, 16), np.float32)
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        index.add(bad, [0, 0])
    index.add(np.zeros((2, 16), np.float32), [0, 0])
    with pytest.raises(ValueError, match="holds float32"):
        index.add(np.zeros((2, 16), np.uint8), [1, 1])
    with pytest.raises(ValueError, match="k must be"):
        index.search(np.zeros((1, 16), np.float32), 0)
    with pytest.raises(ValueError, match="ascontiguousarray"):
        index.search(np.zeros((4, 32), np.float32)[:, ::2], 1)
    with pytest.raises(ValueError, match="query set 1: query descriptors must have 16 columns"):
        index.search_batch([np.zeros((2, 16), np.float32), np.zeros((2, 8), np.float32)], 1)
    with pytest.raises(ValueError, match="kernel must be"):
        pylocalize.CANNIndex(16, kernel="box")
    with pytest.raises(ValueError, match="p1"):
        pylocalize.CANNIndex(16, p1=1.5)
    with pytest.raises(ValueError, match="method"):
        pylocalize.CANNIndex(16, method="magic")


def test_pairs_files(tmp_path):
    pairs = {"q1.jpg": [("db3.jpg", 0.5), ("db1.jpg", 0.25)], "q2.jpg": [("db2.jpg", 0.125)]}
    write_pairs_kapture(tmp_path / "pairsfile.txt", pairs)
    assert read_pairs(tmp_path / "pairsfile.txt") == pairs
    write_pairs_hloc(tmp_path / "pairs.txt", {q: [d for d, _ in v] for q, v in pairs.items()})
    assert (tmp_path / "pairs.txt").read_text().splitlines() == ["q1.jpg db3.jpg", "q1.jpg db1.jpg", "q2.jpg db2.jpg"]
    got = read_pairs(tmp_path / "pairs.txt")
    assert [d for d, _ in got["q1.jpg"]] == ["db3.jpg", "db1.jpg"]
    with pytest.raises(ValueError, match="whitespace"):
        write_pairs_hloc(tmp_path / "x.txt", {"a b": ["c"]})


def vocabulary_db(rng, n_images=300, per_image=60, dim=32, words=3000):
    """Images as random subsets of shared visual words: realistic repeated structure."""
    vocab = rng.normal(0, 40, (words, dim))
    pick = rng.integers(0, words, (n_images, per_image))
    x = (vocab[pick.ravel()] + rng.normal(0, 5, (n_images * per_image, dim))).astype(np.float32)
    ids = np.repeat(np.arange(n_images, dtype=np.int64), per_image)
    return x, ids, vocab, pick


def test_ivf_reaches_recall_of_exact(num_threads):
    rng = np.random.default_rng(7)
    x, ids, vocab, pick = vocabulary_db(rng)
    exact = pylocalize.CANNIndex(32)
    exact.add(x, ids)
    approx = pylocalize.CANNIndex(32, method="ivf", nprobe=8)
    approx.add(x, ids)
    with pytest.raises(ValueError, match="train"):
        approx.search(x[:5], 3)
    approx.train(nlist=64, seed=1)
    assert approx.is_trained and approx.nlist == 64
    queries = [(vocab[pick[i, :40]] + rng.normal(0, 5, (40, 32))).astype(np.float32) for i in range(0, 300, 15)]
    se, ie = exact.search_batch(queries, 20)
    sa, ia = approx.search_batch(queries, 20)
    recall = np.mean([len(set(a) & set(e)) / 20 for a, e in zip(ia, ie)])
    assert recall >= 0.95
    assert (ia[:, 0] == np.arange(0, 300, 15)).all()
    # approximate scores never exceed exact ones: missed pairs only lower S(m)
    exact_lookup = [dict(zip(e, s)) for e, s in zip(ie, se)]
    for ids_a, s_a, lookup in zip(ia, sa, exact_lookup):
        for i, s in zip(ids_a, s_a):
            if i in lookup:
                assert s <= lookup[i] + 1e-5
    # probing every list is exact
    approx.nprobe = 64  # every list: exact
    sf, if_ = approx.search_batch(queries, 20)
    np.testing.assert_allclose(sf, se, atol=1e-4)


def test_ivf_lists_of_uint8_features_beyond_the_first_chunk():
    """The inverted file assigns uint8 features to lists a chunk (65,536 rows) at a time. A
    query made of copies of an image's features, probing one list per feature, finds each
    copy (distance 0) only if the copy sits in the list nearest to it: the source image then
    scores exactly as in exact search, for images in the first and the second chunk."""
    rng = np.random.default_rng(12)
    n_images, per_image = 150, 500  # 75,000 features: two chunks
    x = rng.integers(0, 256, (n_images * per_image, 16)).astype(np.uint8)
    ids = np.repeat(np.arange(n_images, dtype=np.int64), per_image)
    exact, approx = pylocalize.CANNIndex(16, p0=120.0), pylocalize.CANNIndex(16, method="ivf", nprobe=1, p0=120.0)
    for index in (exact, approx):
        index.add(x, ids)
    approx.train(nlist=64, seed=0)
    sources = [3, 77, 140, 149]  # rows up to 75,000: the last two in the second chunk
    queries = [x[i * per_image:(i + 1) * per_image] for i in sources]
    se, ie = exact.search_batch(queries, 10)
    sa, ia = approx.search_batch(queries, 10)
    np.testing.assert_array_equal(ia[:, 0], sources)
    np.testing.assert_array_equal(ie[:, 0], sources)
    np.testing.assert_allclose(sa[:, 0], se[:, 0], rtol=1e-5)


def test_ivf_trained_on_uint8_equals_training_on_the_same_values_as_float():
    """k-means reads uint8 rows by converting only its training sample: the lists, hence the
    results, are those of the same values given as float32."""
    rng = np.random.default_rng(13)
    x = rng.integers(0, 256, (6000, 24)).astype(np.uint8)
    ids = np.repeat(np.arange(60, dtype=np.int64), 100)
    results = []
    for data in (x, x.astype(np.float32)):
        index = pylocalize.CANNIndex(24, method="ivf", nprobe=2, p0=150.0)
        index.add(data, ids)
        index.train(nlist=32, seed=5, max_points_per_list=50)  # a subsample of 1,600 rows
        results.append(index.search_batch([x[i * 100:i * 100 + 60] for i in (0, 31, 59)], 5))
    np.testing.assert_array_equal(results[0][1], results[1][1])
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-6)


def test_ivf_persistence_and_updates(tmp_path):
    rng = np.random.default_rng(8)
    x, ids, vocab, pick = vocabulary_db(rng, n_images=50)
    index = pylocalize.CANNIndex(32, method="ivf", nprobe=4)
    index.add(x[:2000], ids[:2000])
    with pytest.raises(ValueError, match="at least"):
        index.train(nlist=5000)
    index.train(nlist=16)
    index.add(x[2000:], ids[2000:])  # added after training: assigned to the trained lists
    q = (vocab[pick[45, :30]] + rng.normal(0, 5, (30, 32))).astype(np.float32)
    expected = index.search(q, 5)
    assert expected[1][0] == 45
    index.save(tmp_path / "ivf.pyloc")
    loaded = pylocalize.CANNIndex.load(tmp_path / "ivf.pyloc", method="ivf", nprobe=4)
    assert loaded.is_trained and loaded.nlist == 16
    got = loaded.search(q, 5)
    np.testing.assert_array_equal(got[1], expected[1])
    again = pickle.loads(pickle.dumps(index))
    assert again.method == "ivf" and again.nprobe == 4
    np.testing.assert_array_equal(again.search(q, 5)[1], expected[1])
    index.remove_images([45])
    assert index.search(q, 1)[1][0] != 45


GOLDEN_CANN = Path(__file__).parent / "data" / "golden" / "2026-11-30-before-issue16" / "cann" / "cann.pyloc"


def test_search_options_stored(tmp_path):
    """save / serialize keep the search options; load applies them unless told otherwise."""
    rng = np.random.default_rng(11)
    x, ids, vocab, pick = vocabulary_db(rng, n_images=40)
    grid = dict(num_grids=8, num_radii=3, dims=40, cell_factor=0.75, max_bin=100, seed=2**63 + 5)
    index = pylocalize.CANNIndex(32, method="ivf", nprobe=3, kernel="gaussian", sigma=40.0, p0=90.0, grid=grid)
    index.add(x, ids)
    index.train(nlist=12, seed=4)
    q = (vocab[pick[7, :30]] + rng.normal(0, 5, (30, 32))).astype(np.float32)
    expected = index.search(q, 6)
    index.save(tmp_path / "ivf.pyloc")
    options = dict(method="ivf", nprobe=3, kernel="gaussian", p0=90.0, p1=0.4592, sigma=40.0, grid=grid)
    for other in (pylocalize.CANNIndex.load(tmp_path / "ivf.pyloc"),
                  pylocalize.CANNIndex.deserialize(index.serialize()), pickle.loads(pickle.dumps(index))):
        assert other.search_options == options
        got = other.search(q, 6)
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_array_equal(got[0], expected[0])
    loaded = pylocalize.CANNIndex.load(tmp_path / "ivf.pyloc", method="exact", sigma=20.0)
    assert loaded.stored_options == options  # what the file says; the given options win
    assert loaded.method == "exact" and loaded._kernel_args["sigma"] == 20.0 and loaded.nprobe == 3
    # changed attributes are what the next save stores; the grid method configures from them
    index.method, index.nprobe = "grid", 5
    index.save(tmp_path / "grid.pyloc")
    again = pylocalize.CANNIndex.load(tmp_path / "grid.pyloc")
    assert again.method == "grid" and again.nprobe == 5 and again.grid == grid
    np.testing.assert_array_equal(again.search(q, 6)[1], index.search(q, 6)[1])


def test_search_options_of_old_files(tmp_path):
    """A file written before the options were stored loads with the constructor defaults, and
    saving it again adds the options' metadata and, the index being trained, stores its ivf
    layout (layout 2) from which the file's features come back unchanged."""
    old = pylocalize.CANNIndex.load(GOLDEN_CANN)
    assert old.stored_options is None
    defaults = pylocalize.CANNIndex(old.dim).search_options
    assert old.search_options == defaults and old.is_trained
    q = (np.random.default_rng(0).normal(size=(20, old.dim)) * 40).astype(np.float32)
    explicit = pylocalize.CANNIndex.load(GOLDEN_CANN, **defaults)
    np.testing.assert_array_equal(old.search(q, 5)[1], explicit.search(q, 5)[1])
    old.save(tmp_path / "resaved.pyloc")
    tag, version, meta, sections = _core.read_container(str(GOLDEN_CANN))
    tag2, version2, meta2, sections2 = _core.read_container(str(tmp_path / "resaved.pyloc"))
    assert (tag2, version2) == (tag, version)
    assert {k: v for k, v in meta2.items() if k in meta} == meta
    assert set(meta2) - set(meta) == {"search_method", "search_nprobe", "kernel", "kernel_p0", "kernel_p1",
                                      "kernel_sigma", "grid_num_grids", "grid_num_radii", "grid_dims",
                                      "grid_cell_factor", "grid_max_bin", "grid_seed", "layout", "ivf_block"}
    assert meta2["layout"] == 2 and "descriptors" not in sections2
    np.testing.assert_array_equal(sections2["centroids"], sections["centroids"])
    rows, ids = layout_features(sections2, old.dim)
    np.testing.assert_array_equal(rows, sections["descriptors"])
    np.testing.assert_array_equal(ids, sections["image_ids"])
    assert pylocalize.CANNIndex.load(tmp_path / "resaved.pyloc").search_options == defaults


def layout_features(sections, dim):
    """The features in insertion order, read from a layout-2 file's sections with numpy: the
    blocks are 16 slots each, a block dimension-major; feature i is in slot ivf_feature_slot[i]."""
    slot = sections["ivf_feature_slot"]
    blocks = np.asarray(sections["ivf_blocks"]).reshape(-1, dim, 16)
    rows = blocks[slot // 16, :, slot % 16]
    return rows, sections["ivf_images"][sections["ivf_slot_image"][slot]]


@pytest.mark.parametrize("key,value", [("search_method", 3), ("kernel", -1), ("search_nprobe", 0),
                                       ("grid_num_grids", 2**32 + 1), ("grid_dims", 65),
                                       ("kernel_p1", int(np.float64(1.5).view(np.int64))),
                                       ("grid_cell_factor", int(np.float64(np.nan).view(np.int64)))])
def test_bad_stored_search_options(tmp_path, key, value):
    index = pylocalize.CANNIndex(8)
    index.add(np.ones((3, 8), np.float32), 1)
    tag, _, meta, sections = _core.read_container(index.serialize())
    meta[key] = value
    data = np.frombuffer(bytes(_core.write_container(None, tag, meta, sections)), np.uint8)
    with pytest.raises(pylocalize.FormatError, match="corrupt"):
        pylocalize.CANNIndex.deserialize(data)
    del meta[key]
    data = np.frombuffer(bytes(_core.write_container(None, tag, meta, sections)), np.uint8)
    if key == "search_method":  # no options at all: a file from before they were stored
        assert pylocalize.CANNIndex.deserialize(data).stored_options is None
    else:
        with pytest.raises(pylocalize.FormatError, match=key):
            pylocalize.CANNIndex.deserialize(data)


def test_grid_method_reaches_recall():
    rng = np.random.default_rng(9)
    x, ids, vocab, pick = vocabulary_db(rng)
    exact = pylocalize.CANNIndex(32, p0=60.0)
    exact.add(x, ids)
    grid = pylocalize.CANNIndex(32, method="grid", p0=60.0, grid=dict(num_grids=16, dims=6, cell_factor=0.5))
    grid.add(x, ids)
    queries = [(vocab[pick[i, :40]] + rng.normal(0, 5, (40, 32))).astype(np.float32) for i in range(0, 300, 15)]
    se, ie = exact.search_batch(queries, 20)
    sg, ig = grid.search_batch(queries, 20)
    recall = np.mean([len(set(a) & set(e)) / 20 for a, e in zip(ig, ie)])
    assert recall >= 0.9
    assert (ig[:, 0] == np.arange(0, 300, 15)).all()
    # found pairs use exact distances: grid scores never exceed exact ones
    lookups = [dict(zip(e, s)) for e, s in zip(ie, se)]
    for ids_g, s_g, lookup in zip(ig, sg, lookups):
        assert all(s <= lookup.get(i, np.inf) + 1e-5 for i, s in zip(ids_g, s_g))
    with pytest.raises(ValueError, match="unknown grid options"):
        pylocalize.CANNIndex(32, method="grid", grid=dict(cells=3))
