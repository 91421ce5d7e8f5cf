"""A trained CANNIndex saved with its ivf layout (layout 2) and loaded memory-mapped.

The in-memory index the file was saved from is the reference: a loaded one, mapped or read,
must give exactly its scores and ids by every method, before and after the same changes.
The file's layout is also read back with numpy (an independent reader of the format)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import container_sections, reseal_section

import pylocalize
from pylocalize import _core

DIM = 32


def _data(seed, n=4000, images=40, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 200, (images, DIM))
    ids = rng.integers(0, images, n)
    x = np.clip(centres[ids] + rng.normal(0, 20, (n, DIM)), 0, 255).astype(dtype)
    q = np.clip(centres[rng.integers(0, images, 60)] + rng.normal(0, 20, (60, DIM)), 0, 255).astype(np.float32)
    return x, ids, q


def _trained(x, ids, seed=0):
    index = pylocalize.CANNIndex(DIM, method="ivf", nprobe=4, p0=150.0)
    index.add(x, ids)
    index.train(seed=seed)
    return index


def _same(a, b, q, method):
    a.method = b.method = method
    sets = [q[:20], q[20:], q[:0]]
    for (sa, ia), (sb, ib) in [(a.search(q, 8), b.search(q, 8)), (a.search_batch(sets, 8), b.search_batch(sets, 8))]:
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(sa, sb)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("mmap", [True, False])
def test_loaded_layout_searches_as_the_saved_index(tmp_path, dtype, mmap):
    x, ids, q = _data(1, dtype=dtype)
    index = _trained(x, ids)
    index.save(tmp_path / "c.pyloc")
    loaded = pylocalize.CANNIndex.load(tmp_path / "c.pyloc", mmap=mmap)
    assert len(loaded) == len(x) and loaded.is_trained and loaded.nlist == index.nlist
    np.testing.assert_array_equal(loaded.image_ids(), np.unique(ids))
    # nothing copied or rebuilt: the layout stays in the file (mapped) or its read buffer
    if mmap:
        # on the heap: the centroids only (the index's, and the coarse quantizer's plain and blocked copies)
        assert loaded.mapped_bytes > x.nbytes and loaded.memory_bytes < x.nbytes
    else:
        assert loaded.mapped_bytes == 0 and loaded.memory_bytes > x.nbytes
    heap = loaded.memory_bytes
    _same(index, loaded, q, "ivf")
    assert loaded.memory_bytes == heap  # the ivf search used the loaded layout as it is
    for method in ("exact", "grid"):  # these recover the insertion order from the layout
        _same(index, loaded, q, method)


def test_changes_on_a_mapped_index(tmp_path):
    x, ids, q = _data(2)
    x2, ids2, _ = _data(3, n=500)
    index = _trained(x, ids)
    index.save(tmp_path / "c.pyloc")
    mapped = pylocalize.CANNIndex.load(tmp_path / "c.pyloc", mmap=True)
    for target in (index, mapped):
        assert target.remove_images([0, 5, 7]) == np.isin(ids, [0, 5, 7]).sum()
        target.add(x2, ids2 + 100)
    assert mapped.mapped_bytes == 0  # copied out of the file before the change
    for method in ("ivf", "exact", "grid"):
        _same(index, mapped, q, method)
    # saved again (over the file it was mapped from) and loaded: still the same
    mapped.save(tmp_path / "c.pyloc")
    _same(index, pylocalize.CANNIndex.load(tmp_path / "c.pyloc"), q, "ivf")
    for target in (index, mapped):
        target.train(nlist=20, seed=3)
    _same(index, mapped, q, "ivf")
    mapped2 = pylocalize.CANNIndex.load(tmp_path / "c.pyloc")
    mapped2.reset()
    assert len(mapped2) == 0 and mapped2.mapped_bytes == 0 and not mapped2.is_trained


def test_mapping_outlives_the_file_it_came_from(tmp_path):
    """A save replaces the file atomically: a mapped index keeps searching the old one."""
    x, ids, q = _data(4)
    index = _trained(x, ids)
    index.save(tmp_path / "c.pyloc")
    mapped = pylocalize.CANNIndex.load(tmp_path / "c.pyloc", mmap=True)
    other_x, other_ids, _ = _data(5)
    _trained(other_x, other_ids).save(tmp_path / "c.pyloc")
    _same(index, mapped, q, "ivf")
    _same(index, mapped, q, "exact")


def test_file_holds_one_copy_of_the_descriptors(tmp_path):
    rng = np.random.default_rng(6)
    x = rng.integers(0, 256, (20000, 128), dtype=np.uint8)
    index = pylocalize.CANNIndex(128, method="ivf")
    index.add(x, rng.integers(0, 100, len(x)))
    index.train(nlist=283, seed=0)
    index.save(tmp_path / "c.pyloc")
    size = (tmp_path / "c.pyloc").stat().st_size
    # one copy of the rows, padded to whole blocks per list (~8 slots per list: 283 lists of
    # ~70 features here, 0.3 % at 20M features), a norm, an image index and a slot per
    # feature (16 B) and the centroids: far from the two copies (2x) of rows plus layout
    _, _, meta, sections = _core.read_container(str(tmp_path / "c.pyloc"))
    num_slots = len(sections["ivf_norms"])
    assert num_slots < len(x) + 16 * index.nlist
    expected = num_slots * (128 + 4 + 4) + len(x) * 8 + index.nlist * 128 * 4
    assert expected < size < expected + 8192 and size < 1.35 * x.nbytes, size / x.nbytes
    assert meta["layout"] == 2 and "descriptors" not in sections


def test_layout_read_back_with_numpy(tmp_path):
    x, ids, _ = _data(7)
    _trained(x, ids).save(tmp_path / "c.pyloc")
    _, _, meta, sec = _core.read_container(str(tmp_path / "c.pyloc"))
    block = meta["ivf_block"]
    slot = sec["ivf_feature_slot"]
    blocks = np.asarray(sec["ivf_blocks"]).reshape(-1, DIM, block)
    np.testing.assert_array_equal(blocks[slot // block, :, slot % block], x)
    np.testing.assert_array_equal(sec["ivf_images"][sec["ivf_slot_image"][slot]], ids)
    # each list's features are nearest to its centroid, and the norms are the rows'
    rows = blocks.transpose(0, 2, 1).reshape(-1, DIM).astype(np.float64)
    used = sec["ivf_slot_image"] >= 0
    np.testing.assert_allclose(sec["ivf_norms"][used], (rows[used] ** 2).sum(1), rtol=1e-6)
    lists = np.repeat(np.arange(len(sec["ivf_list_block"]) - 1), np.diff(sec["ivf_list_block"]) * block)
    d = ((rows[used][:, None, :] - sec["centroids"][None].astype(np.float64)) ** 2).sum(-1)
    assert (d.argmin(1) == lists[used]).mean() > 0.99  # float ties may go either way


@pytest.mark.parametrize("name", ["ivf_blocks", "ivf_norms", "ivf_list_block", "ivf_slot_image", "ivf_images",
                                  "ivf_feature_slot", "centroids"])
@pytest.mark.parametrize("mmap", [True, False])
def test_damaged_layout_is_refused(tmp_path, name, mmap):
    x, ids, q = _data(8)
    _trained(x, ids).save(tmp_path / "c.pyloc")
    data = bytearray((tmp_path / "c.pyloc").read_bytes())
    entry, offset, nbytes = container_sections(bytes(data))[name]
    data[offset + nbytes // 2] ^= 0x10
    (tmp_path / "bad.pyloc").write_bytes(bytes(data))
    with pytest.raises(pylocalize.FormatError, match="checksum"):
        pylocalize.CANNIndex.load(tmp_path / "bad.pyloc", mmap=mmap)


@pytest.mark.parametrize("name,value", [("ivf_slot_image", 10**6), ("ivf_list_block", -1), ("ivf_images", -5),
                                        ("ivf_feature_slot", 10**9)])
def test_crafted_layout_is_refused(tmp_path, name, value):
    """Checksums recomputed, as a buggy writer would leave them: the loader's own checks
    refuse indices that would read outside the layout (feature_slot when first needed)."""
    x, ids, q = _data(9)
    _trained(x, ids).save(tmp_path / "c.pyloc")
    data = bytearray((tmp_path / "c.pyloc").read_bytes())
    entry, offset, nbytes = container_sections(bytes(data))[name]
    fmt = "<i" if name == "ivf_slot_image" else "<q"
    struct.pack_into(fmt, data, offset + 8, value)
    reseal_section(data, name)
    (tmp_path / "bad.pyloc").write_bytes(bytes(data))
    with pytest.raises(pylocalize.FormatError, match="corrupt"):
        index = pylocalize.CANNIndex.load(tmp_path / "bad.pyloc", method="exact")
        index.search(q, 5)


def test_map_load_passes_mmap_to_its_index(tmp_path):
    from pylocalize.geometry import Camera
    from pylocalize.localization import Map

    rng = np.random.default_rng(10)
    n, per = 10, 2100  # more than IVF_MIN_FEATURES: the map trains its index
    cams = [Camera.from_string("SIMPLE_RADIAL 640 480 500 320 240 0.01")] * n
    poses = np.tile(np.c_[np.eye(3), [0, 0, 4]], (n, 1, 1))
    kps = [rng.uniform(0, 480, (per, 2)).astype(np.float32) for _ in range(n)]
    descs = [rng.integers(0, 120, (per, 128), dtype=np.uint8) for _ in range(n)]
    ids = [np.full(per, -1, np.int64) for _ in range(n)]
    m = Map([f"db/{i}.jpg" for i in range(n)], cams, poses, kps, descs, ids, rng.normal(size=(10, 3)))
    m.save(tmp_path / "map")
    q = descs[2][:100]
    mapped, read = Map.load(tmp_path / "map", mmap=True), Map.load(tmp_path / "map", mmap=False)
    assert m.index.is_trained and mapped.index.mapped_bytes > 0 and read.index.mapped_bytes == 0
    want = m.retrieve(q, 3, return_scores=True)
    for other in (mapped, read):
        got = other.retrieve(q, 3, return_scores=True)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_golden_layout_1_file_still_searches_the_same(tmp_path):
    """A trained index saved before the layout was stored gives the same results loaded
    mapped (it builds the layout then) and once saved again as layout 2."""
    golden = Path(__file__).parent / "data" / "golden" / "2026-11-30-issue17" / "cann" / "cann.pyloc"
    old = pylocalize.CANNIndex.load(golden, mmap=True)
    assert old.mapped_bytes == 0  # layout 1: the rows are read, as before
    q = (np.random.default_rng(11).normal(size=(20, old.dim)) * 40).astype(np.float32)
    old.save(tmp_path / "new.pyloc")
    new = pylocalize.CANNIndex.load(tmp_path / "new.pyloc", mmap=True)
    assert new.mapped_bytes > 0
    for method in ("ivf", "exact", "grid"):
        _same(old, new, q, method)


def test_searches_during_changes_of_a_mapped_index(tmp_path):
    """Searches running while a mapped index is changed see it before or after each change
    (the copy-on-write leaves the layout they hold untouched), never a mix or a crash."""
    import threading

    x, ids, q = _data(12)
    x2, ids2, _ = _data(13, n=300)
    index = _trained(x, ids)
    index.save(tmp_path / "c.pyloc")
    states = []
    for change in (lambda i: None, lambda i: i.remove_images([1, 2, 3]), lambda i: i.add(x2, ids2 + 100)):
        change(index)
        states.append(index.search(q, 8)[1].tolist())
    mapped = pylocalize.CANNIndex.load(tmp_path / "c.pyloc", mmap=True)
    seen, stop = [], threading.Event()

    def search():
        while not stop.is_set():
            seen.append(mapped.search(q, 8)[1].tolist())

    threads = [threading.Thread(target=search) for _ in range(2)]
    for t in threads:
        t.start()
    mapped.remove_images([1, 2, 3])
    mapped.add(x2, ids2 + 100)
    stop.set()
    for t in threads:
        t.join()
    seen.append(mapped.search(q, 8)[1].tolist())
    assert all(s in states for s in seen) and seen[-1] == states[-1]


@pytest.mark.parametrize("value", [np.inf, np.nan, 3e38])
def test_crafted_centroids_are_refused_or_harmless(tmp_path, value):
    """A centroid of Inf or NaN (checksums recomputed) is refused; a huge finite one, whose
    squared norm overflows to Inf, loads and searches within the index (a list distance of
    Inf once made the coarse quantizer return no list, and the search read outside them)."""
    x, ids, q = _data(10)
    _trained(x, ids).save(tmp_path / "c.pyloc")
    data = bytearray((tmp_path / "c.pyloc").read_bytes())
    entry, offset, nbytes = container_sections(bytes(data))["centroids"]
    struct.pack_into("<f", data, offset + 4 * DIM, value)  # the second centroid's first value
    reseal_section(data, "centroids")
    (tmp_path / "bad.pyloc").write_bytes(bytes(data))
    if not np.isfinite(value):
        with pytest.raises(pylocalize.FormatError, match="centroid"):
            pylocalize.CANNIndex.load(tmp_path / "bad.pyloc")
        return
    index = pylocalize.CANNIndex.load(tmp_path / "bad.pyloc", method="ivf", nprobe=4)
    scores, images = index.search(q, 5)
    assert np.isin(images[images >= 0], np.unique(ids)).all() and np.isfinite(scores).all()
