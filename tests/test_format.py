"""The versioned container format: round trips and every kind of broken file."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from conftest import container_sections

import pylocalize
from pylocalize import _core


def make_index_file(tmp_path):
    rng = np.random.default_rng(0)
    index = pylocalize.BinaryIndex(128)
    index.add(rng.integers(0, 256, (500, 16), dtype=np.uint8))
    path = tmp_path / "index.pyloc"
    index.save(path)
    return path


def test_container_round_trip(tmp_path):
    sections = {
        "a": np.arange(10, dtype=np.float32).reshape(2, 5),
        "b": np.array([1, -2, 3], dtype=np.int64),
        "empty": np.zeros((0, 4), dtype=np.uint8),
    }
    path = tmp_path / "c.pyloc"
    _core.write_container(str(path), "Thing", {"n": 3, "neg": -7}, sections)
    for source in (str(path), _core.write_container(None, "Thing", {"n": 3, "neg": -7}, sections)):
        for mmap in (False, True):
            tag, version, meta, got = _core.read_container(source, mmap=mmap)
            assert tag == "Thing" and version == (1, 0) and meta == {"n": 3, "neg": -7}
            for name, arr in sections.items():
                assert got[name].dtype == arr.dtype and got[name].shape == arr.shape
                np.testing.assert_array_equal(got[name], arr)
                assert not got[name].flags.writeable
                if mmap and isinstance(source, str) and arr.size:  # mapped sections feed SIMD loads
                    assert got[name].ctypes.data % 64 == 0


def test_section_written_from_pieces_is_the_joined_section(tmp_path):
    """A section given as a list of arrays (a map's per-image arrays) is written in turn and
    gives the same file, byte for byte, as the joined array; pieces that do not stack are
    refused with a message naming the section."""
    rng = np.random.default_rng(3)
    pieces = [rng.integers(0, 255, (n, 128), dtype=np.uint8) for n in (3, 0, 17, 1)]
    ids = [np.arange(n, dtype=np.int64) for n in (3, 0, 17, 1)]
    joined = {"descriptors": np.concatenate(pieces), "point_ids": np.concatenate(ids)}
    listed = {"descriptors": pieces, "point_ids": tuple(ids)}
    for path in (None, tmp_path / "pieces.pyloc"):
        want = _core.write_container(None, "Thing", {"n": 1}, joined)
        got = _core.write_container(None if path is None else str(path), "Thing", {"n": 1}, listed)
        got = got if path is None else np.frombuffer(path.read_bytes(), np.uint8)
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="'descriptors': piece 1 has another dtype or trailing shape"):
        _core.write_container(None, "Thing", {}, {"descriptors": [pieces[0], pieces[2][:, :64].copy()]})
    with pytest.raises(ValueError, match="'descriptors': piece 1 has another dtype"):
        _core.write_container(None, "Thing", {}, {"descriptors": [pieces[0], pieces[2].astype(np.int16)]})
    with pytest.raises(ValueError, match="'descriptors' is an empty list"):
        _core.write_container(None, "Thing", {}, {"descriptors": []})
    with pytest.raises(ValueError, match="'descriptors' must be a numpy array or a list of them"):
        _core.write_container(None, "Thing", {}, {"descriptors": [pieces[0], "x"]})


def test_crc_is_standard_crc32(tmp_path):
    path = make_index_file(tmp_path)
    data = path.read_bytes()
    assert data[:6] == b"PYLOC\x00"
    (header_crc,) = struct.unpack_from("<I", data, 60)
    assert header_crc == zlib.crc32(data[:60])


@pytest.mark.parametrize("threads", [1, 2])
def test_large_section_crc_is_standard_crc32(tmp_path, threads):
    """Sections of 16 MB and more are checked in pieces on every thread and the pieces'
    CRCs combined: the result must still be zlib's CRC-32 of the whole section, and a flipped
    bit in any piece (first, middle, the short last one) must still be caught."""
    size = 37 * 2**20 + 13  # nine 4 MB pieces and a short tenth
    payload = np.random.default_rng(5).integers(0, 256, size, dtype=np.uint8)
    previous = _core.get_num_threads()
    _core.set_num_threads(threads)
    try:
        path = tmp_path / "big.pyloc"
        _core.write_container(str(path), "Thing", {}, {"big": payload})
        data = bytearray(path.read_bytes())
        entry, offset, nbytes = container_sections(bytes(data))["big"]
        assert nbytes == size
        assert struct.unpack_from("<I", data, entry + 80)[0] == zlib.crc32(payload.tobytes())
        for at in (5, 4 * 2**20 - 1, 4 * 2**20, 21 * 2**20 + 7, size - 1):
            data[offset + at] ^= 0x01
            path.write_bytes(bytes(data))
            with pytest.raises(pylocalize.FormatError, match="checksum"):
                _core.read_container(str(path), mmap=True)
            data[offset + at] ^= 0x01
        path.write_bytes(bytes(data))
        np.testing.assert_array_equal(_core.read_container(str(path), mmap=True)[3]["big"], payload)
    finally:
        _core.set_num_threads(previous)


def test_truncated_file(tmp_path):
    path = make_index_file(tmp_path)
    data = path.read_bytes()
    for size in (0, 10, 63, 64, 200, len(data) - 1):
        path.write_bytes(data[:size])
        with pytest.raises(pylocalize.FormatError):
            pylocalize.BinaryIndex.load(path)
        with pytest.raises(pylocalize.FormatError):
            pylocalize.BinaryIndex.load(path, mmap=True)


def test_bit_flips_anywhere_are_detected(tmp_path):
    path = make_index_file(tmp_path)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(1)
    for pos in list(range(0, 64, 7)) + rng.integers(64, len(data), 40).tolist():
        flipped = bytearray(data)
        flipped[pos] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(flipped))
        try:
            index = pylocalize.BinaryIndex.load(path)
        except pylocalize.FormatError:
            continue
        # Only alignment padding between sections carries no meaning.
        restored = pylocalize.BinaryIndex.deserialize(np.frombuffer(bytes(data), np.uint8))
        np.testing.assert_array_equal(index.codes(), restored.codes())


def test_wrong_magic_and_not_a_file(tmp_path):
    path = make_index_file(tmp_path)
    data = bytearray(path.read_bytes())
    data[0:5] = b"NOTPY"
    path.write_bytes(bytes(data))
    with pytest.raises(pylocalize.FormatError, match="magic"):
        pylocalize.BinaryIndex.load(path)
    with pytest.raises(FileNotFoundError, match="missing.pyloc"):
        pylocalize.BinaryIndex.load(tmp_path / "missing.pyloc")
    assert issubclass(pylocalize.FormatError, ValueError)


def test_newer_major_version_is_refused(tmp_path):
    path = make_index_file(tmp_path)
    data = bytearray(path.read_bytes())
    struct.pack_into("<H", data, 6, 2)
    struct.pack_into("<I", data, 60, zlib.crc32(bytes(data[:60])))
    path.write_bytes(bytes(data))
    with pytest.raises(pylocalize.FormatError, match="newer.*upgrade"):
        pylocalize.BinaryIndex.load(path)


def test_deserialize_garbage():
    with pytest.raises(pylocalize.FormatError):
        pylocalize.BinaryIndex.deserialize(np.zeros(100, np.uint8))
    with pytest.raises(pylocalize.FormatError):
        pylocalize.MultiBitIndex.deserialize(np.frombuffer(b"PYLOC\x00" + b"\x00" * 80, np.uint8))


def test_atomic_write_leaves_no_temp(tmp_path):
    path = make_index_file(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    with pytest.raises(ValueError, match="cannot write"):
        pylocalize.BinaryIndex(64).save(tmp_path / "no" / "such" / "dir.pyloc")


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temp_files_of_killed_writers_are_removed(tmp_path):
    """A save killed mid-write leaves '<target>.tmp-<pid>-<n>'; the next save of the same
    target removes those of processes that no longer run, and leaves everything else."""
    import os

    from pylocalize.containers import write_bytes_atomic

    target = tmp_path / "data.bin"
    dead = _dead_pid()
    stale = [f"data.bin.tmp-{dead}", f"data.bin.tmp-{dead}-7"]
    kept = [f"data.bin.tmp-{os.getpid()}-99",  # a thread of ours may be writing it
            f"data.bin.tmp-{os.getppid()}-1",  # a live process
            "data.bin.tmp-abc", "other.bin.tmp-1-1", f"data.binx.tmp-{dead}"]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"partial")
    write_bytes_atomic(target, b"new bytes")
    assert target.read_bytes() == b"new bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + ["data.bin"])
    write_bytes_atomic(target, np.arange(3, dtype=np.int32))  # any contiguous buffer
    assert np.frombuffer(target.read_bytes(), np.int32).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="it is a folder"):
        write_bytes_atomic(tmp_path, b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + ["data.bin"])  # no temp left behind


def test_empty_section_with_a_huge_dimension_is_refused():
    """Fault campaign finding: shape (0, 2**62) holds no bytes, so it passed the size checks,
    and numpy then raised 'array is too big' (a ValueError, not FormatError) in the loaders."""
    data = bytearray(_core.write_container(None, "T", {}, {"x": np.zeros((0, 4), np.float64)}))
    struct.pack_into("<q", data, 64 + 40, 2**62)  # the section's second dimension
    struct.pack_into("<I", data, 56, zlib.crc32(bytes(data[64:64 + 88])))
    struct.pack_into("<I", data, 60, zlib.crc32(bytes(data[:60])))
    with pytest.raises(pylocalize.FormatError, match="invalid shape"):
        _core.read_container(np.frombuffer(bytes(data), np.uint8).copy())


def test_read_layout_checks_kind_and_layout_version(tmp_path):
    from pylocalize import _core
    from pylocalize.containers import read_layout

    sections = {"x": np.arange(5, dtype=np.int64)}
    _core.write_container(str(tmp_path / "a.pyloc"), "Thing", {"thing_version": 2}, sections)
    meta, sec = read_layout(tmp_path / "a.pyloc", "Thing", "thing_version", 2, "a thing", "make it again")
    np.testing.assert_array_equal(sec["x"], sections["x"])
    data = _core.write_container(None, "Thing", {"thing_version": 2}, sections)  # bytes work the same way
    meta, _ = read_layout(np.asarray(data), "Thing", "thing_version", 2, "a thing", "make it again")
    assert meta["thing_version"] == 2
    with pytest.raises(pylocalize.FormatError, match="holds a Thing, not a Map"):
        read_layout(tmp_path / "a.pyloc", "Map", "thing_version", 2, "a map", "rebuild")
    with pytest.raises(pylocalize.FormatError,
                       match="layout version 2; this pylocalize reads version 3: make it again"):
        read_layout(tmp_path / "a.pyloc", "Thing", "thing_version", 3, "a thing", "make it again")
    _core.write_container(str(tmp_path / "old.pyloc"), "Thing", {}, sections)  # before the version key existed
    with pytest.raises(pylocalize.FormatError, match="layout version 1;"):
        read_layout(tmp_path / "old.pyloc", "Thing", "thing_version", 2, "a thing", "x", missing_version=1)
