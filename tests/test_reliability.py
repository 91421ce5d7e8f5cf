"""Bad input gives a clean error that says the fix, never a crash or a silent wrong result.

Each test comes from a reproducer of issue 16 (corrupt or crafted files, unpickled arrays,
padding ids, float ids, non-finite intrinsics): it checks the exception type, and that valid
inputs next to the bad ones still give what a numpy brute force gives.
"""

from __future__ import annotations

import os
import pickle
import struct
import zlib

import numpy as np
import pytest
from conftest import brute_knn, hamming_matrix

import pylocalize
from pylocalize import _core


def unpickled(a: np.ndarray) -> np.ndarray:
    """`a` after a pickle round trip: an equal dtype that is not numpy's cached object."""
    return pickle.loads(pickle.dumps(a))


def sdc_reference(cq, cx, dim, u):
    """Cosine of the multi-bit reconstructions, from the definition (little-endian planes)."""
    pb = (dim + 7) // 8

    def planes(c):
        return [2.0 * np.unpackbits(c[:, p * pb:(p + 1) * pb], axis=1, bitorder="little")[:, :dim] - 1
                for p in range(u)]

    rq = sum(2.0 ** -p * s for p, s in enumerate(planes(cq)))
    rx = sum(2.0 ** -p * s for p, s in enumerate(planes(cx)))
    return (rq @ rx.T) / np.linalg.norm(rq, axis=1)[:, None] / np.linalg.norm(rx, axis=1)[None, :]


def fix_crcs(b: bytearray) -> None:
    """Recomputes every CRC of a container (section, tables, header) after an edit."""
    num_meta, num_sections = struct.unpack_from("<HI", b, 10)
    p = 64 + 32 * num_meta
    for _ in range(num_sections):
        offset, nbytes = struct.unpack_from("<QQ", b, p + 64)
        if offset + nbytes <= len(b):
            struct.pack_into("<I", b, p + 80, zlib.crc32(b[offset:offset + nbytes]))
        p += 88
    struct.pack_into("<I", b, 56, zlib.crc32(b[64:p]))
    struct.pack_into("<I", b, 60, zlib.crc32(b[:60]))


def set_bits_in_section(path, name: str, bits: int) -> None:
    """ORs `bits` into every uint64 word of section `name`, CRCs kept valid."""
    b = bytearray(path.read_bytes())
    num_meta, num_sections = struct.unpack_from("<HI", b, 10)
    p = 64 + 32 * num_meta
    for _ in range(num_sections):
        if b[p:p + 24].split(b"\0")[0] == name.encode():
            offset, nbytes = struct.unpack_from("<QQ", b, p + 64)
            words = np.frombuffer(b, np.uint64, nbytes // 8, offset) | np.uint64(bits)
            b[offset:offset + nbytes] = words.tobytes()
        p += 88
    fix_crcs(b)
    path.write_bytes(bytes(b))


# ---------------------------------------------------------------- 1. padding bits of codes

@pytest.mark.parametrize("dim", [4, 20])
def test_multibit_refuses_codes_with_padding_bits(dim, num_threads):
    rng = np.random.default_rng(dim)
    u, pb = 2, (dim + 7) // 8
    index = pylocalize.MultiBitIndex(dim, u)
    codes = rng.integers(0, 256, (3000, index.code_size), dtype=np.uint8)
    queries = rng.integers(0, 256, (16, index.code_size), dtype=np.uint8)
    with pytest.raises(ValueError, match="padding bits") as error:
        index.add(codes)
    assert index.ntotal == 0
    # the fix the message gives, applied as written
    fix = str(error.value).split("clear them with codes")[1]
    exec("codes" + fix, {"codes": codes})
    exec("queries" + fix.replace("codes", "queries"), {"queries": queries})
    mask = (1 << (dim % 8)) - 1
    assert not (codes[:, pb - 1::pb] & ~np.uint8(mask)).any()
    index.add(codes)
    bad = queries.copy()
    bad[3, pb - 1] |= 0x80
    with pytest.raises(ValueError, match="query_codes row 3 sets padding bits"):
        index.search(bad, 5, candidates=10)
    ref = sdc_reference(queries, codes, dim, u)
    # progressive search (the histogram that overflowed): scores are the reference's
    for _ in range(3):
        scores, ids = index.search(queries, 5, candidates=10)
        assert ((ids >= 0) & (ids < len(codes))).all()
        np.testing.assert_allclose(scores, np.take_along_axis(ref, ids, 1), rtol=1e-5, atol=1e-5)
    scores, ids = index.search(queries, 5)
    np.testing.assert_allclose(scores, np.sort(ref, axis=1)[:, ::-1][:, :5], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mmap", [False, True])
def test_multibit_file_with_padding_bits_is_refused(tmp_path, mmap):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 24)).astype(np.float32)
    codes = pylocalize.binarize(x, 2)
    index = pylocalize.MultiBitIndex(24, 2)
    index.add(codes)
    index.save(tmp_path / "good.pyloc")
    loaded = pylocalize.MultiBitIndex.load(tmp_path / "good.pyloc", mmap=mmap)
    scores, ids = loaded.search(codes[:8], 4, candidates=10)
    ref = sdc_reference(codes[:8], codes, 24, 2)
    np.testing.assert_allclose(scores, np.take_along_axis(ref, ids, 1), rtol=1e-5, atol=1e-5)
    index.save(tmp_path / "crafted.pyloc")
    set_bits_in_section(tmp_path / "crafted.pyloc", "blocks", 0xFFFFFFFFFF000000)  # bits 24..63
    with pytest.raises(pylocalize.FormatError, match="padding bits"):
        pylocalize.MultiBitIndex.load(tmp_path / "crafted.pyloc", mmap=mmap)
    data = np.frombuffer((tmp_path / "crafted.pyloc").read_bytes(), np.uint8)
    with pytest.raises(pylocalize.FormatError, match="padding bits"):
        pylocalize.MultiBitIndex.deserialize(data)


@pytest.mark.parametrize("mmap", [False, True])
def test_binary_file_with_bits_beyond_nbits_is_refused(tmp_path, mmap):
    rng = np.random.default_rng(2)
    xb = rng.integers(0, 256, (50, 9), dtype=np.uint8)  # 72 bits: 8 used in the second word
    index = pylocalize.BinaryIndex(72)
    index.add(xb)
    index.save(tmp_path / "good.pyloc")
    d, i = pylocalize.BinaryIndex.load(tmp_path / "good.pyloc", mmap=mmap).search(xb[:7], 5)
    want_d, want_i = brute_knn(hamming_matrix(xb[:7], xb), np.arange(50), 5)
    np.testing.assert_array_equal(d, want_d)
    np.testing.assert_array_equal(i, want_i)
    set_bits_in_section(tmp_path / "good.pyloc", "blocks", 1 << 40)
    with pytest.raises(pylocalize.FormatError, match="beyond nbits"):
        pylocalize.BinaryIndex.load(tmp_path / "good.pyloc", mmap=mmap)


# ---------------------------------------------------------------- 10. loaders' error types

def core_loaders():
    from pylocalize.geo.cells import CellHierarchy

    return [
        pylocalize.BinaryIndex.load,
        lambda p: pylocalize.BinaryIndex.load(p, mmap=True),
        pylocalize.MultiBitIndex.load,
        lambda p: pylocalize.MultiBitIndex.load(p, mmap=True),
        pylocalize.CANNIndex.load,
        _core.read_container,
        lambda p: _core.read_container(p, mmap=True),
        CellHierarchy.load,
    ]


def test_directory_missing_file_and_symlink(tmp_path):
    (tmp_path / "adir").mkdir()
    os.symlink(tmp_path / "adir", tmp_path / "alink")
    for load in core_loaders():
        for name in ("adir", "alink"):
            with pytest.raises(pylocalize.FormatError, match="is a directory"):
                load(str(tmp_path / name))
        with pytest.raises(FileNotFoundError, match="missing.pyloc") as error:
            load(str(tmp_path / "missing.pyloc"))
        assert error.value.filename == str(tmp_path / "missing.pyloc")


def test_names_that_are_not_utf8(tmp_path):
    index = pylocalize.BinaryIndex(256)
    index.add(np.zeros((50, 32), np.uint8))
    index.save(tmp_path / "u.pyloc")
    b = bytearray((tmp_path / "u.pyloc").read_bytes())
    b[16:48] = b"\xe0\xe0".ljust(32, b"\0")  # type tag
    fix_crcs(b)
    (tmp_path / "u.pyloc").write_bytes(bytes(b))
    for load in (pylocalize.BinaryIndex.load, _core.read_container):
        with pytest.raises(pylocalize.FormatError, match=r"\\xe0\\xe0"):
            load(str(tmp_path / "u.pyloc"))
    # a section name: read_container hands names to Python as str
    _core.write_container(str(tmp_path / "s.pyloc"), "Test", {"n": 1}, {"ab": np.zeros(3, np.uint8)})
    b = bytearray((tmp_path / "s.pyloc").read_bytes())
    p = 64 + 32
    assert b[p:p + 2] == b"ab"
    b[p:p + 2] = b"\xff\xfe"
    fix_crcs(b)
    (tmp_path / "s.pyloc").write_bytes(bytes(b))
    with pytest.raises(pylocalize.FormatError, match="section name"):
        _core.read_container(str(tmp_path / "s.pyloc"))
    # UTF-8 that is not ASCII stays valid
    _core.write_container(str(tmp_path / "v.pyloc"), "Tést", {"clé": 2}, {"données": np.arange(3, dtype=np.int64)})
    tag, _, meta, sections = _core.read_container(str(tmp_path / "v.pyloc"))
    assert tag == "Tést" and meta == {"clé": 2}
    np.testing.assert_array_equal(sections["données"], np.arange(3))


def test_header_and_table_edits_raise_only_format_error(tmp_path):
    """Random edits of header and tables with every CRC recomputed: a loader either reads
    the file or raises FormatError, whatever the bytes say."""
    rng = np.random.default_rng(3)
    makers = []
    b = pylocalize.BinaryIndex(72)
    b.add(rng.integers(0, 256, (20, 9), dtype=np.uint8))
    makers.append(("b.pyloc", b, [pylocalize.BinaryIndex.load, lambda p: pylocalize.BinaryIndex.load(p, mmap=True)]))
    m = pylocalize.MultiBitIndex(20, 2)
    x = rng.standard_normal((20, 20)).astype(np.float32)
    m.add(pylocalize.binarize(x, 2), vectors=x)
    makers.append(("m.pyloc", m, [pylocalize.MultiBitIndex.load,
                                  lambda p: pylocalize.MultiBitIndex.load(p, mmap=True)]))
    c = pylocalize.CANNIndex(4)
    c.add(rng.standard_normal((30, 4)).astype(np.float32), np.arange(30) // 3)
    c.train(2)
    makers.append(("c.pyloc", c, [pylocalize.CANNIndex.load, _core.read_container]))
    for name, index, loads in makers:
        index.save(tmp_path / name)
        original = (tmp_path / name).read_bytes()
        num_meta, num_sections = struct.unpack_from("<HI", original, 10)
        end = 64 + 32 * num_meta + 88 * num_sections
        for _ in range(60):
            b = bytearray(original)
            for pos in rng.integers(6, end, 3):
                if 10 <= pos < 16:  # table sizes: mostly tested by the section table edits
                    continue
                b[pos] = rng.integers(0, 256)
            fix_crcs(b)
            (tmp_path / "edited").write_bytes(bytes(b))
            for load in loads:
                try:
                    load(str(tmp_path / "edited"))
                except pylocalize.FormatError:
                    pass


def test_python_loaders_refuse_malformed_layouts(tmp_path):
    from pylocalize.geo import cells, retrieval
    from pylocalize.objects import representation

    cases = [
        (cells.CellHierarchy.load, cells.FORMAT_TAG,
         {"hierarchy_version": cells.HIERARCHY_VERSION, "num_hierarchies": 1}, ["cell_ids_0", "max_images"]),
        (retrieval.GeoGallery.load, retrieval.FORMAT_TAG,
         {"gallery_version": retrieval.GALLERY_VERSION, "dim": 4, "binary": 0}, ["embeddings", "latlon"]),
        (representation.ObjectRepresentation.load, representation.FORMAT_TAG,
         {"representation_version": representation.REPRESENTATION_VERSION, "size": 8, "patch_size": 4,
          "num_assign": 1}, ["info", "template_poses", "pca_mean"]),
    ]
    values = [np.zeros(0, np.uint8), np.zeros(3), np.frombuffer(b"[1]", np.uint8).copy(),
              np.frombuffer(b"\xff", np.uint8).copy()]
    path = str(tmp_path / "layout.pyloc")
    for load, tag, meta, names in cases:
        for drop in [None, *meta]:
            for value in values:
                for subset in (names, names[:1], []):
                    _core.write_container(path, tag, {k: v for k, v in meta.items() if k != drop},
                                          {n: value for n in subset})
                    with pytest.raises(pylocalize.FormatError):
                        load(path)


# ---------------------------------------------------------------- 11. size limits

def test_largest_sizes_save_and_load(tmp_path):
    limit = 2 ** 24
    index = pylocalize.BinaryIndex(limit)
    code = np.zeros((1, limit // 8), np.uint8)
    code[0, :3] = 7
    index.add(code)
    index.save(tmp_path / "b.pyloc")
    loaded = pylocalize.BinaryIndex.load(tmp_path / "b.pyloc")
    d, i = loaded.search(np.zeros((1, limit // 8), np.uint8), 2)
    np.testing.assert_array_equal(d, [[9, np.iinfo(np.int32).max]])
    np.testing.assert_array_equal(i, [[0, -1]])
    with pytest.raises(ValueError, match=str(limit)):
        pylocalize.BinaryIndex(limit + 8)
    pylocalize.MultiBitIndex(limit, 1).save(tmp_path / "m.pyloc")
    assert pylocalize.MultiBitIndex.load(tmp_path / "m.pyloc").dim == limit
    with pytest.raises(ValueError, match=str(limit)):
        pylocalize.MultiBitIndex(limit + 1, 1)
    pylocalize.CANNIndex(2 ** 20).save(tmp_path / "c.pyloc")
    assert pylocalize.CANNIndex.load(tmp_path / "c.pyloc").dim == 2 ** 20
    with pytest.raises(ValueError, match=str(2 ** 20)):
        pylocalize.CANNIndex(2 ** 20 + 1)


# ---------------------------------------------------------------- 12. unpickled arrays

def test_unpickled_arrays_are_accepted(tmp_path):
    rng = np.random.default_rng(4)
    xb = rng.integers(0, 256, (200, 32), dtype=np.uint8)
    ids = np.arange(200, dtype=np.int64) * 2
    index = pylocalize.BinaryIndex(256)
    index.add(unpickled(xb), unpickled(ids))
    d, i = index.search(unpickled(xb[:5]), 4)
    want_d, want_i = brute_knn(hamming_matrix(xb[:5], xb), ids, 4)
    np.testing.assert_array_equal(d, want_d)
    np.testing.assert_array_equal(i, want_i)
    assert index.remove_ids(unpickled(ids[:3])) == 3
    # np.longlong is another dtype object for int64 on Linux: equal, so accepted as well
    index.add(xb[:2], ids[:2].astype(np.longlong))

    x = rng.standard_normal((300, 40)).astype(np.float32)
    q = rng.standard_normal((6, 40)).astype(np.float32)
    cx, cq = pylocalize.binarize(unpickled(x), 2), pylocalize.binarize(unpickled(q), 2)
    multibit = pylocalize.MultiBitIndex(40, 2)
    multibit.add(unpickled(cx), unpickled(np.arange(300, dtype=np.int64)), unpickled(x))
    scores, got = multibit.search(unpickled(cq), 5, query_vectors=unpickled(q), rerank=300)
    want_s, want_i = brute_knn((q @ x.T).astype(np.float64), np.arange(300), 5, largest=True)
    np.testing.assert_array_equal(got, want_i)
    np.testing.assert_allclose(scores, want_s, rtol=1e-5, atol=1e-5)

    for dtype in (np.float32, np.uint8):
        feats = (rng.uniform(0, 100, (60, 8))).astype(dtype)
        images = np.repeat(np.arange(6), 10).astype(np.int64)
        cann = pylocalize.CANNIndex(8)
        cann.add(unpickled(feats), unpickled(images))
        query = np.clip(feats[:7] + rng.normal(0, 5, (7, 8)), 0, 255).astype(dtype)  # not at distance 0
        s1, i1 = cann.search(unpickled(query), 3)
        s2, i2 = cann.search(query, 3)
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(s1, s2)
        sb, ib = cann.search_batch([unpickled(query)], 3)
        np.testing.assert_array_equal(ib[0], i2)
        d = np.sqrt(((query[:, None].astype(np.float64) - feats[None].astype(np.float64)) ** 2).sum(-1))
        a = 0.4592 / (1 - 0.4592)
        nearest = np.stack([d[:, images == m].min(1) for m in range(6)], 1)
        ref = np.where(nearest < 120, (1 - np.clip(nearest / 120, 0, 1) ** a) ** (1 / a), 0).mean(0)
        np.testing.assert_allclose(s1, np.sort(ref)[::-1][:3], atol=1e-4)

    _core.write_container(str(tmp_path / "p.pyloc"), "Test", {}, {"a": unpickled(np.arange(4, dtype=np.int64))})
    np.testing.assert_array_equal(_core.read_container(str(tmp_path / "p.pyloc"))[3]["a"], np.arange(4))


# ---------------------------------------------------------------- 13. ids and k

def test_negative_ids_are_refused_and_change_nothing(tmp_path):
    rng = np.random.default_rng(5)
    index = pylocalize.BinaryIndex(64)
    index.add(np.zeros((2, 8), np.uint8), np.array([3, 4]))
    with pytest.raises(ValueError, match="-1 marks empty result slots"):
        index.add(np.zeros((2, 8), np.uint8), np.array([5, -1]))
    np.testing.assert_array_equal(index.ids(), [3, 4])
    d, i = index.search(np.zeros((1, 8), np.uint8), 3)
    np.testing.assert_array_equal(i, [[3, 4, -1]])

    # a mapped index with float vectors: a refused add must leave the mapping in use intact
    x = rng.standard_normal((30, 16)).astype(np.float32)
    multibit = pylocalize.MultiBitIndex(16, 2)
    multibit.add(pylocalize.binarize(x, 2), vectors=x)
    multibit.save(tmp_path / "m.pyloc")
    loaded = pylocalize.MultiBitIndex.load(tmp_path / "m.pyloc")
    with pytest.raises(ValueError, match="ids must be in 0"):
        loaded.add(pylocalize.binarize(x[:1], 2), np.array([-7]), vectors=x[:1])
    s, got = loaded.search(pylocalize.binarize(x[:3], 2), 2, query_vectors=x[:3], rerank=30)
    want_s, want_i = brute_knn((x[:3] @ x.T).astype(np.float64), np.arange(30), 2, largest=True)
    np.testing.assert_array_equal(got, want_i)
    np.testing.assert_allclose(s, want_s, rtol=1e-5, atol=1e-5)

    cann = pylocalize.CANNIndex(4)
    with pytest.raises(ValueError, match="image_ids must be >= 0"):
        cann.add(np.zeros((3, 4), np.float32), -1)
    with pytest.raises(ValueError, match="image_ids must be >= 0"):
        cann.add(np.zeros((2, 4), np.float32), np.array([0, -2]))
    assert cann.ntotal == 0
    inverted = _core.InvertedFile(4)
    with pytest.raises(ValueError, match="doc_id must be >= 0"):
        inverted.add(np.array([1], np.int64), np.array([1.0], np.float32), -1)


def _rewrite(path, edit):
    """Re-saves the container at ``path`` with ``edit(meta, sections)`` applied, checksums valid."""
    tag, _, meta, sections = _core.read_container(os.fspath(path))
    sections = {k: np.array(v) for k, v in sections.items()}
    edit(meta, sections)
    _core.write_container(os.fspath(path), tag, meta, sections)


@pytest.mark.parametrize("kind", ["binary", "multibit", "cann"])
def test_stored_negative_or_out_of_range_ids_are_refused(tmp_path, kind):
    """A file holding id -1 (the padding of results) or an id at or above next_id (default
    ids would then repeat) was not written by pylocalize: FormatError, checksums valid or not."""
    path = tmp_path / "index.pyloc"
    if kind == "cann":
        index = pylocalize.CANNIndex(4)
        index.add(np.ones((3, 4), np.float32), np.array([0, 1, 2]))
        key, load = "image_ids", pylocalize.CANNIndex.load
    else:
        index = pylocalize.BinaryIndex(64) if kind == "binary" else pylocalize.MultiBitIndex(16, 2)
        index.add(np.zeros((3, 8 if kind == "binary" else 4), np.uint8), np.array([0, 5, 9]))
        key, load = "ids", type(index).load
    index.save(path)
    load(path)

    def negative(meta, sections):
        sections[key][1] = -1

    _rewrite(path, negative)
    with pytest.raises(pylocalize.FormatError, match="corrupt"):
        load(path)
    if kind != "cann":
        index.save(path)
        _rewrite(path, lambda meta, sections: meta.update(next_id=9))  # id 9 is stored
        with pytest.raises(pylocalize.FormatError, match="corrupt"):
            load(path)


def test_float_ids_and_k_are_refused():
    index = pylocalize.BinaryIndex(64)
    index.add(np.zeros((3, 8), np.uint8))
    for bad in ([1.7], np.array([1.0]), [True]):
        with pytest.raises(ValueError, match="ids must be integers"):
            index.remove_ids(bad)
    with pytest.raises(ValueError, match="ids must be integers"):
        index.add(np.zeros((1, 8), np.uint8), np.array([2.5]))
    np.testing.assert_array_equal(index.ids(), [0, 1, 2])
    # integer dtypes of any width are converted
    assert index.remove_ids(np.array([1], np.uint8)) == 1
    index.add(np.ones((1, 8), np.uint8), np.array([9], np.int32))
    np.testing.assert_array_equal(index.ids(), [0, 2, 9])
    with pytest.raises(ValueError, match="ids must fit in int64"):
        index.remove_ids(np.array([2 ** 63], np.uint64))
    for k in (5.0, 1.9, True):
        with pytest.raises(ValueError, match="k must be an int"):
            index.search(np.zeros((1, 8), np.uint8), k)

    cann = pylocalize.CANNIndex(4)
    with pytest.raises(ValueError, match="image_ids must be an int"):
        cann.add(np.zeros((2, 4), np.float32), 1.5)
    cann.add(np.zeros((2, 4), np.float32), 1)
    cann.add(np.ones((2, 4), np.float32), np.array([2, 2], np.int16))
    with pytest.raises(ValueError, match="image_ids must be integers"):
        cann.remove_images([2.9])
    np.testing.assert_array_equal(cann.image_ids(), [1, 2])
    with pytest.raises(ValueError, match="k must be an int"):
        cann.search(np.zeros((1, 4), np.float32), 1.9)
    with pytest.raises(ValueError, match="k must be an int"):
        cann.search_batch([np.zeros((1, 4), np.float32)], 2.0)
    scores, ids = cann.search(np.zeros((1, 4), np.float32), np.int64(2))
    np.testing.assert_array_equal(ids, [1, 2])
    multibit = pylocalize.MultiBitIndex(8, 1)
    multibit.add(np.zeros((2, 1), np.uint8))
    with pytest.raises(ValueError, match="k must be an int"):
        multibit.search(np.zeros((1, 1), np.uint8), 2.0)
    with pytest.raises(ValueError, match="ids must be integers"):
        multibit.add(np.zeros((1, 1), np.uint8), np.array([0.5]))


# ---------------------------------------------------------------- 14. renderer inputs

def test_renderer_refuses_non_finite_intrinsics_and_poses():
    from pylocalize.render import Mesh, Renderer

    tri = Mesh(np.array([[0, 0, 1], [1, 0, 1], [0, 1, 1]], np.float32), np.array([[0, 1, 2]], np.int32))
    pose = np.c_[np.eye(3), np.zeros(3)]
    K = np.array([[100.0, 0, 63.5], [0, 100.0, 47.5], [0, 0, 1]])
    mask = Renderer(128, 96, K).render(tri, pose).mask[0]
    # pixel centres at integer coordinates; the rasterizer's tie rule decides only on edges
    y, x = np.mgrid[0:96, 0:128].astype(np.float64)
    u, v = (x - 63.5) / 100, (y - 47.5) / 100
    eps = 1e-9
    inside = (u > eps) & (v > eps) & (u + v < 1 - eps)
    outside = (u < -eps) | (v < -eps) | (u + v > 1 + eps)
    assert mask[inside].all() and not mask[outside].any()
    # and through pickle, as K and poses come from worker processes
    np.testing.assert_array_equal(Renderer(128, 96, unpickled(K)).render(tri, unpickled(pose)).mask[0], mask)
    for (r, c), value in [((0, 2), np.nan), ((1, 2), np.inf), ((0, 1), np.nan), ((0, 0), np.inf),
                          ((1, 1), -np.inf)]:
        bad = K.copy()
        bad[r, c] = value
        with pytest.raises(ValueError, match="K contains NaN or Inf"):
            Renderer(128, 96, bad).render(tri, pose)
    for fx in (0.0, -100.0):
        bad = K.copy()
        bad[0, 0] = fx
        with pytest.raises(ValueError, match="focal lengths must be positive"):
            Renderer(128, 96, bad).render(tri, pose)
    for value in (np.nan, np.inf):
        bad = np.stack([pose, pose])
        bad[1, 2, 3] = value
        with pytest.raises(ValueError, match="cam_from_model 1 contains NaN or Inf"):
            Renderer(128, 96, K).render(tri, bad)
