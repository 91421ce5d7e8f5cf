"""Fault campaign over every file format pylocalize writes.

For each format a small valid sample is saved, then seeded mutants of it are loaded, each in
a worker process under an address-space limit, and used (a search, an encode, a predict), so
that a file which loads but breaks the first use is caught too. Mutations:

- ``truncate``: the file cut at a random length;
- ``bitflip``: 1 to 4 random bits flipped anywhere;
- ``header``: random bytes written into the header and tables (containers) or the first bytes;
- ``meta``, ``section``: a container's metadata value, or a section's dtype, rank, shape,
  offset or size, set to a hostile value (0, -1, 2**31, 2**63 - 1, off by one...) with every
  checksum recomputed, as a buggy or hostile producer would write it;
- ``payload``: bits of a section's payload flipped with its checksum recomputed (the file is
  then "valid" at the container level; the loader's own checks must catch what matters).

Each mutant ends as one of: ``same`` (loaded, same results as the original: the mutation hit
bytes that do not matter, e.g. alignment padding), ``changed`` (loaded with other results:
allowed only for the checksum-recomputing kinds, where the file is as valid as any), ``refused``
(``pylocalize.FormatError``), or a failure: ``silent`` (a damaged file loaded with other
results), ``error`` (any other exception), ``crash`` (the worker died), ``hang`` (no answer
within the time limit).

Run ``python tools/fuzz_formats.py --mutants 100000`` for the long campaign (figures in
benchmarks/README.md); ``tests/test_fuzz.py`` runs a short one in CI.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

log = logging.getLogger("pylocalize.fuzz")

# Container layout (cpp/pylocalize/util/format.h), needed to craft consistent mutants.
HEADER = 64
META_ENTRY = 32
SECTION_ENTRY = 88
MAGIC = b"PYLOC\0"
HOSTILE = [0, 1, -1, 2, 7, 8, 63, 64, 65, 255, 256, 2**16, 2**20, 2**24, 2**31 - 1, 2**31, 2**32 - 1, 2**32,
           2**40, 2**62, 2**63 - 1, -2**31, -2**63]
CRC_KEEPING = ("truncate", "bitflip", "header")  # damage a reader must notice
CRAFTED = ("meta", "section", "payload")          # consistent checksums: any outcome but a failure
FAILURES = ("silent", "error", "crash", "hang")


# ----------------------------------------------------------------------------- samples

def _fingerprint(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, (list, tuple)):
            h.update(_fingerprint(*p).encode())
        elif isinstance(p, np.ndarray) or hasattr(p, "__array__"):
            a = np.ascontiguousarray(np.asarray(p))
            h.update(str((a.dtype.str, a.shape)).encode())
            h.update(a.tobytes())
        else:
            h.update(repr(p).encode())
    return h.hexdigest()


def _rng_data(seed=0):
    return np.random.default_rng(seed)


def _make_binary(folder: Path) -> Path:
    import pylocalize

    index = pylocalize.BinaryIndex(64)
    rng = _rng_data(1)
    index.add(rng.integers(0, 256, (300, 8), dtype=np.uint8), np.arange(300, dtype=np.int64) * 3 + 1)
    index.save(folder / "binary.pyloc")
    return folder / "binary.pyloc"


def _use_binary(path: Path, mmap: bool = False) -> str:
    import pylocalize

    index = pylocalize.BinaryIndex.load(path, mmap=mmap)
    q = _rng_data(2).integers(0, 256, (4, index.nbits // 8), dtype=np.uint8)
    return _fingerprint(len(index), index.search(q, 5), index.range_search(q[:1], 28))


def _make_multibit(folder: Path) -> Path:
    import pylocalize

    dim, bits = 20, 3  # a dim that is not a multiple of 8: padding bits in every code
    index = pylocalize.MultiBitIndex(dim, bits)
    x = _rng_data(3).normal(size=(300, dim)).astype(np.float32)
    index.add(pylocalize.binarize(x, bits))
    index.save(folder / "multibit.pyloc")
    return folder / "multibit.pyloc"


def _use_multibit(path: Path, mmap: bool = False) -> str:
    import pylocalize

    index = pylocalize.MultiBitIndex.load(path, mmap=mmap)
    q = pylocalize.binarize(_rng_data(4).normal(size=(3, index.dim)).astype(np.float32), index.bits_per_dim)
    return _fingerprint(len(index), index.search(q, 5), index.search(q, 5, candidates=20))


def _make_cann(folder: Path) -> Path:
    import pylocalize

    rng = _rng_data(5)
    index = pylocalize.CANNIndex(16, method="ivf", nprobe=4)
    index.add((rng.normal(size=(600, 16)) * 40).astype(np.float32), rng.integers(0, 20, 600))
    index.train(nlist=8, seed=0)
    index.save(folder / "cann.pyloc")
    return folder / "cann.pyloc"


def _use_cann(path: Path) -> str:
    import pylocalize

    q = (_rng_data(6).normal(size=(20, 16)) * 40).astype(np.float32)
    # the sample stores method="ivf"; read into memory, and searched in place memory-mapped
    exact = pylocalize.CANNIndex.load(path, mmap=False, method="exact")
    ivf = pylocalize.CANNIndex.load(path, mmap=True, method="ivf", nprobe=4)
    return _fingerprint(len(exact), exact.search(q, 5), ivf.search(q, 5) if ivf.is_trained else None)


def _make_cann_pq(folder: Path) -> Path:
    import pylocalize

    rng = _rng_data(7)
    x = (rng.normal(size=(600, 16)) * 40).astype(np.float32)
    index = pylocalize.CANNPQIndex(16, m=4, nprobe=3)
    index.train(x, nlist=6, seed=0, pq_iterations=4)
    index.add(x, rng.integers(0, 20, 600))
    index.save(folder / "cann_pq.pyloc")
    return folder / "cann_pq.pyloc"


def _use_cann_pq(path: Path, mmap: bool = False) -> str:
    import pylocalize

    q = (_rng_data(8).normal(size=(20, 16)) * 40).astype(np.float32)
    index = pylocalize.CANNPQIndex.load(path, mmap=mmap)
    return _fingerprint(len(index), index.search(q, 5), index.reconstruct())


def _make_map(folder: Path) -> Path:
    from pylocalize.geometry import Camera
    from pylocalize.localization import Map

    rng = _rng_data(7)
    n, per = 4, 50
    points = rng.normal(size=(100, 3))
    cams = [Camera.from_string("SIMPLE_RADIAL 640 480 500 320 240 0.01")] * n
    poses = np.tile(np.c_[np.eye(3), [0, 0, 4]], (n, 1, 1))
    kps = [rng.uniform(0, 480, (per, 2)).astype(np.float32) for _ in range(n)]
    descs = [rng.integers(0, 120, (per, 128), dtype=np.uint8) for _ in range(n)]
    ids = [np.where(rng.random(per) < 0.5, rng.integers(0, 100, per), -1).astype(np.int64) for _ in range(n)]
    m = Map([f"db/{i:02d}.jpg" for i in range(n)], cams, poses, kps, descs, ids, points)
    m.save(folder / "map")
    return folder / "map"


def _use_map(path: Path) -> str:
    from pylocalize.localization import Map

    m = Map.load(path)
    q = _rng_data(8).integers(0, 120, (50, 128), dtype=np.uint8)
    return _fingerprint(m.names, [c.to_string() for c in m.cameras], m.cam_from_world, m.keypoints,
                        m.descriptors, m.point_ids, m.points3D, m.image_dir, m.retrieve(q, 3),
                        [m.points3D[p[p >= 0]] for p in m.point_ids])


def _make_map_orb(folder: Path) -> Path:
    """A map with an ORB layer beside its SIFT (issue 21): optional sections of map.pyloc."""
    from pylocalize.localization import Map
    from pylocalize.localization.layers import BinaryLayer

    _make_map(folder)
    m = Map.load(folder / "map", mmap=False)
    rng = _rng_data(9)
    n, per = len(m.names), 40
    kps = [rng.uniform(0, 480, (per, 2)).astype(np.float32) for _ in range(n)]
    descs = [rng.integers(0, 256, (per, 32), dtype=np.uint8) for _ in range(n)]
    ids = [np.where(rng.random(per) < 0.6, rng.integers(0, 60, per), -1).astype(np.int64) for _ in range(n)]
    m.layers["orb"] = BinaryLayer("orb", kps, descs, ids, rng.normal(size=(60, 3)), {"max_features": 500})
    m.save(folder / "map")
    return folder / "map"


def _make_map_patches(folder: Path) -> Path:
    """A map with point patches of its SIFT observations (issue 21): optional sections of map.pyloc."""
    from pylocalize.localization import Map

    _make_map(folder)
    m = Map.load(folder / "map", mmap=False)
    rng = _rng_data(11)
    m.patches["sift"] = [rng.integers(0, 256, (int((ids >= 0).sum()), 16, 16), dtype=np.uint8) for ids in m.point_ids]
    m.save(folder / "map")
    return folder / "map"


def _use_map_patches(path: Path) -> str:
    from pylocalize.localization import Map

    m = Map.load(path)
    return _fingerprint(_use_map(path), sorted(m.patches), m.patches["sift"])


def _use_map_orb(path: Path) -> str:
    from pylocalize.localization import Map

    m = Map.load(path)
    layer = m.feature_layer("orb")
    q = _rng_data(10).integers(0, 256, (30, 32), dtype=np.uint8)
    return _fingerprint(_use_map(path), m.feature_layers, sorted(m.layers["orb"].options.items()), layer.keypoints,
                        layer.descriptors, layer.point_ids, layer.points3D, m.match_2d3d(q, [0, 2], features="orb"),
                        m.match_2d3d(q, range(len(m.names)), features="orb"),
                        m.retrieve(q, 3, return_scores=True, features="orb"))


def _make_map_sfm(folder: Path) -> Path:
    """A map as SfM leaves it: the kept COLMAP model folder and a geo origin beside the index."""
    from pylocalize.localization import Map
    from pylocalize.localization.colmap_export import reconstruction_from_map

    _make_map(folder)
    m = Map.load(folder / "map")
    m.image_dir = None
    m.sfm_reconstruction = reconstruction_from_map(m)
    m.geo_origin = np.array([55.6989, 13.1949, 35.0])
    m.save(folder / "map")
    return folder / "map"


def _use_map_sfm(path: Path) -> str:
    from pylocalize.localization import Map

    m = Map.load(path)
    rec = m.sfm_model()
    points = sorted(rec.points3D)
    return _fingerprint(_use_map(path), m.geo_origin, sorted(im.name for im in rec.images.values()),
                        [rec.points3D[p].xyz for p in points], [rec.points3D[p].track.length() for p in points],
                        [np.asarray(im.cam_from_world().matrix()) for im in rec.images.values()])


def _make_objects(folder: Path) -> Path:
    from pylocalize.datasets.synthetic import textured_box_object
    from pylocalize.objects import onboard

    rep = onboard(textured_box_object(0), num_views=4, num_inplane=2, size=112, num_words=16, pca_dim=16)
    rep.save(folder / "object.pyloc")
    return folder / "object.pyloc"


def _values_objects(path: Path) -> list:
    from pylocalize.objects import ObjectRepresentation

    rep = ObjectRepresentation.load(path)
    return [*[getattr(rep, k) for k in ("template_poses", "template_K", "patch_template", "patch_xy", "patch_xyz",
                                        "patch_desc", "template_bow")],
            rep.bow.mean, rep.bow.components, rep.bow.words, rep.bow.idf,
            [np.asarray(rep.template_patches(t)) if not isinstance(rep.template_patches(t), slice)
             else (rep.template_patches(t).start, rep.template_patches(t).stop)
             for t in range(len(rep.template_poses))]]


def _use_objects(path: Path) -> str:
    return _fingerprint(*_values_objects(path))


def _latlon(seed, n):
    rng = _rng_data(seed)
    centres = np.array([[48.85, 2.35], [40.71, -74.0], [35.68, 139.69], [-33.87, 151.2]])
    return np.clip(centres[rng.integers(0, 4, n)] + rng.normal(0, 1.0, (n, 2)), -89, 89)


def _make_cells(folder: Path) -> Path:
    from pylocalize.geo import CellHierarchy

    CellHierarchy.from_latlon(_latlon(9, 800), max_images=(200, 50), min_images=4).save(folder / "cells.plc")
    return folder / "cells.plc"


def _use_cells(path: Path) -> str:
    from pylocalize.geo import CellHierarchy

    h = CellHierarchy.load(path)
    return _fingerprint(h.cell_of(_latlon(10, 50)), h.cell_ids)


def _make_gallery(folder: Path) -> Path:
    from pylocalize.geo import GeoGallery

    rng = _rng_data(11)
    GeoGallery(rng.normal(size=(200, 12)), _latlon(12, 200), binary=True).save(folder / "gallery.plc")
    return folder / "gallery.plc"


def _use_gallery(path: Path) -> str:
    from pylocalize.geo import GeoGallery

    g = GeoGallery.load(path)
    q = _rng_data(13).normal(size=(5, g.dim))
    return _fingerprint(len(g), g.binary, g.search(q, 4), g.predict(q, k=4))


def _make_two_stage(folder: Path) -> Path:
    from pylocalize.index.two_stage import TwoStageIndex

    x = _rng_data(14).normal(size=(200, 16)).astype(np.float32)
    index = TwoStageIndex(folder / "two_stage", 16, 2, candidates=20)
    index.add(x)
    index.save()
    del index
    return folder / "two_stage"


def _use_two_stage(path: Path) -> str:
    from pylocalize.index.two_stage import TwoStageIndex

    index = TwoStageIndex.load(path)
    q = _rng_data(15).normal(size=(4, index.dim)).astype(np.float32)
    return _fingerprint(len(index), index.search(q, 5), np.asarray(index.vectors()))


def _make_binarizer(folder: Path) -> Path:
    from pylocalize.codes.learned import RecurrentBinarizer

    model = RecurrentBinarizer(16, 16, 2, hidden=16, seed=0)
    model.save(folder / "binarizer.pt")
    return folder / "binarizer.pt"


def _use_binarizer(path: Path) -> str:
    from pylocalize.codes.learned import RecurrentBinarizer

    model = RecurrentBinarizer.load(path)
    return _fingerprint(model.encode(_rng_data(16).normal(size=(8, model.in_dim)).astype(np.float32)))


def _make_geodecoder(folder: Path) -> Path:
    from pylocalize.geo import CellHierarchy
    from pylocalize.geo.model import GeoDecoder

    h = CellHierarchy.from_latlon(_latlon(17, 600), max_images=(200, 60), min_images=4)
    GeoDecoder(h, 8, num_scenes=2, d_model=8, num_heads=2, independent_layers=1, dependent_layers=1,
               ffn_mult=1, dropout=0.0).save(folder / "decoder.pt")
    return folder / "decoder.pt"


def _use_geodecoder(path: Path) -> str:
    from pylocalize.geo.model import GeoDecoder

    model = GeoDecoder.load(path)
    tokens = _rng_data(18).normal(size=(3, 2, model.token_dim)).astype(np.float32)
    return _fingerprint(model.predict(tokens))


def _make_posetext(folder: Path) -> Path:
    from pylocalize.posetext.model import ClauseBank, PoseTextModel

    PoseTextModel(embed_dim=8, hidden=16, bank=ClauseBank(), seed=0).save(folder / "posetext.pt")
    return folder / "posetext.pt"


def _use_posetext(path: Path) -> str:
    from pylocalize.posetext import generate_poses
    from pylocalize.posetext.model import PoseTextModel

    model = PoseTextModel.load(path)
    return _fingerprint(model.embed_poses(generate_poses(3, seed=0)), model.bank.clauses)


@dataclass
class Format:
    make: Callable[[Path], Path]
    use: Callable[[Path], str]
    needs_torch: bool = False
    # golden snapshots whose layout this format no longer reads: their files must be refused
    # with a FormatError whose message names the fix (``rebuild``)
    retired: Tuple[str, ...] = ()
    rebuild: str = ""
    # what ``use`` fingerprints, for formats whose fresh save goes through floating-point
    # code of other libraries (OpenCV, BLAS): their last bits change with those libraries'
    # versions, so a golden file is compared with a fresh save to a tolerance, not bit for bit
    values: Optional[Callable[[Path], list]] = None


FORMATS: Dict[str, Format] = {
    "binary": Format(_make_binary, _use_binary),
    "binary-mmap": Format(_make_binary, lambda p: _use_binary(p, mmap=True)),
    "multibit": Format(_make_multibit, _use_multibit),
    "multibit-mmap": Format(_make_multibit, lambda p: _use_multibit(p, mmap=True)),
    "cann": Format(_make_cann, _use_cann),
    "cann-pq": Format(_make_cann_pq, _use_cann_pq),
    "cann-pq-mmap": Format(_make_cann_pq, lambda p: _use_cann_pq(p, mmap=True)),
    "map": Format(_make_map, _use_map),
    "map-sfm": Format(_make_map_sfm, _use_map_sfm),
    "map-orb": Format(_make_map_orb, _use_map_orb),
    "map-patches": Format(_make_map_patches, _use_map_patches),
    # layouts 1 (float32 descriptors), 2 (float32 model points) and 3 (float16
    # descriptors) retired by issue 18's smaller, faster onboarding
    "objects": Format(_make_objects, _use_objects, values=_values_objects,
                      retired=("2026-11-30-before-issue16", "2026-11-30-issue16", "2026-11-30-issue17",
                               "2026-11-30-issue18", "2026-11-30-issue18-objects3"),
                      rebuild="onboard the object again"),
    "cells": Format(_make_cells, _use_cells),
    "gallery": Format(_make_gallery, _use_gallery),
    "two-stage": Format(_make_two_stage, _use_two_stage),
    "binarizer": Format(_make_binarizer, _use_binarizer, needs_torch=True),
    "geodecoder": Format(_make_geodecoder, _use_geodecoder, needs_torch=True),
    "posetext": Format(_make_posetext, _use_posetext, needs_torch=True),
}


# ----------------------------------------------------------------------------- mutations

def _container_tables(data: bytes):
    """(num_meta, num_sections) if ``data`` is a container with intact table counts."""
    if len(data) < HEADER or data[:6] != MAGIC:
        return None
    num_meta, num_sections = struct.unpack_from("<HI", data, 10)
    if HEADER + num_meta * META_ENTRY + num_sections * SECTION_ENTRY > len(data):
        return None
    return num_meta, num_sections


def _reseal(buf: bytearray, num_meta: int, num_sections: int, payload_crcs: bool) -> None:
    """Recomputes a container's checksums (section CRCs too with ``payload_crcs``)."""
    tables = num_meta * META_ENTRY + num_sections * SECTION_ENTRY
    if payload_crcs:
        for s in range(num_sections):
            e = HEADER + num_meta * META_ENTRY + s * SECTION_ENTRY
            offset, nbytes = struct.unpack_from("<QQ", buf, e + 64)
            if offset + nbytes <= len(buf):
                struct.pack_into("<I", buf, e + 80, zlib.crc32(bytes(buf[offset:offset + nbytes])))
    struct.pack_into("<I", buf, 56, zlib.crc32(bytes(buf[HEADER:HEADER + tables])))
    struct.pack_into("<I", buf, 60, zlib.crc32(bytes(buf[:60])))


def mutate(data: bytes, kind: str, rng: np.random.Generator) -> Optional[bytes]:
    """A mutant of ``data`` of ``kind``, or None where the kind does not apply."""
    buf = bytearray(data)
    n = len(buf)
    if n == 0:
        return None  # an empty file (a lock file) has nothing to damage
    if kind == "truncate":
        return bytes(buf[:int(rng.integers(0, n))])
    if kind == "bitflip":
        for _ in range(int(rng.integers(1, 5))):
            i = int(rng.integers(0, n))
            buf[i] ^= 1 << int(rng.integers(0, 8))
        return bytes(buf)
    tables = _container_tables(data)
    if kind == "header":
        end = n if tables is None else HEADER + tables[0] * META_ENTRY + tables[1] * SECTION_ENTRY
        end = max(1, min(end, n, 4096))
        for _ in range(int(rng.integers(1, 4))):
            buf[int(rng.integers(0, end))] = int(rng.integers(0, 256))
        return bytes(buf)
    if tables is None:
        return None
    num_meta, num_sections = tables
    value = int(HOSTILE[int(rng.integers(0, len(HOSTILE)))])
    if kind == "meta":
        if num_meta == 0:
            return None
        e = HEADER + int(rng.integers(0, num_meta)) * META_ENTRY
        old = struct.unpack_from("<q", buf, e + 24)[0]
        value = int(rng.choice([value, old + 1, old - 1, old * 2, -old])) if rng.random() < 0.5 else value
        struct.pack_into("<q", buf, e + 24, max(-2**63, min(2**63 - 1, value)))
    elif kind == "section":
        if num_sections == 0:
            return None
        e = HEADER + num_meta * META_ENTRY + int(rng.integers(0, num_sections)) * SECTION_ENTRY
        fields = {"dtype": (24, "<I"), "ndim": (28, "<I"), "shape0": (32, "<q"), "shape1": (40, "<q"),
                  "shape2": (48, "<q"), "offset": (64, "<Q"), "nbytes": (72, "<Q")}
        name = list(fields)[int(rng.integers(0, len(fields)))]
        pos, fmt = fields[name]
        old = struct.unpack_from(fmt, buf, e + pos)[0]
        if rng.random() < 0.5:
            value = int(rng.choice([old + 1, old - 1, old * 2, old // 2, old + 64]))
        bits = 32 if fmt.endswith("I") else 64
        value &= (1 << bits) - 1
        if fmt.endswith("q") and value >= 1 << 63:
            value -= 1 << 64
        struct.pack_into(fmt, buf, e + pos, value)
        # A consistent producer would also keep nbytes = shape * dtype size: do that half the time.
        if name.startswith("shape") and rng.random() < 0.5:
            dtype, ndim = struct.unpack_from("<II", buf, e + 24)
            size = {1: 1, 2: 4, 3: 8, 4: 4, 5: 8, 6: 8}.get(dtype, 1)
            count = 1
            for d in range(min(ndim, 4)):
                count *= struct.unpack_from("<q", buf, e + 32 + 8 * d)[0]
            struct.pack_into("<Q", buf, e + 72, (count * size) & ((1 << 64) - 1))
    elif kind == "payload":
        if num_sections == 0:
            return None
        e = HEADER + num_meta * META_ENTRY + int(rng.integers(0, num_sections)) * SECTION_ENTRY
        offset, nbytes = struct.unpack_from("<QQ", buf, e + 64)
        if nbytes == 0 or offset + nbytes > n:
            return None
        for _ in range(int(rng.integers(1, 9))):
            i = offset + int(rng.integers(0, nbytes))
            if rng.random() < 0.3:
                buf[i] = int(rng.choice([0, 255, 0x7F, 0x80]))
            else:
                buf[i] ^= 1 << int(rng.integers(0, 8))
    else:
        raise ValueError(f"unknown mutation {kind!r}")
    _reseal(buf, num_meta, num_sections, payload_crcs=True)
    return bytes(buf)


# ----------------------------------------------------------------------------- worker

def _limit_address_space(extra_bytes: int) -> None:
    import resource

    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    limit = vm + extra_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def worker_main(extra_bytes: int) -> None:
    """Loads ``format<TAB>path`` lines from stdin, answers one JSON line each."""
    import pylocalize

    try:
        import torch  # noqa: F401  (imported before the limit: its libraries map a lot)
    except ImportError:
        pass
    pylocalize.set_num_threads(1)
    if sys.platform.startswith("linux"):
        _limit_address_space(extra_bytes)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        name, path = line.rstrip("\n").split("\t")
        try:
            answer = {"outcome": "loaded", "fingerprint": FORMATS[name].use(Path(path))}
        except pylocalize.FormatError as error:
            answer = {"outcome": "refused", "message": str(error)[:300]}
        except BaseException as error:  # noqa: BLE001  everything else is a finding
            answer = {"outcome": "error", "type": type(error).__name__, "message": str(error)[:300]}
        print(json.dumps(answer), flush=True)


class Worker:
    """A worker process; restarted after a crash or a hang."""

    def __init__(self, extra_bytes: int, timeout: float):
        self.extra_bytes, self.timeout = extra_bytes, timeout
        self.proc: Optional[subprocess.Popen] = None

    def _start(self) -> None:
        env = dict(os.environ, PYTHONFAULTHANDLER="1", OMP_NUM_THREADS="1")
        # stderr goes to a file: a pipe nobody reads could fill and stall the worker
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker",
                                      "--extra-bytes", str(self.extra_bytes)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                     text=True, env=env)
        ready = self._read(120.0)
        if ready is None or not ready.get("ready"):
            self.proc.kill()
            self.proc.wait()
            self.stderr.seek(0)
            raise RuntimeError("the fuzz worker did not start:\n" + self.stderr.read()[-2000:])

    def _read(self, timeout: float) -> Optional[dict]:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        return json.loads(line) if line else None

    def run(self, name: str, path: Path) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        try:
            self.proc.stdin.write(f"{name}\t{path}\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        answer = self._read(self.timeout)
        if answer is not None:
            return answer
        if self.proc.poll() is None:  # alive but silent: a hang
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            return {"outcome": "hang"}
        code = self.proc.wait()
        self.proc = None
        return {"outcome": "crash", "signal": -code if code < 0 else None, "exit": code}

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


# ----------------------------------------------------------------------------- campaign

@dataclass
class Report:
    name: str
    counts: Dict[str, int] = field(default_factory=dict)
    failures: List[dict] = field(default_factory=list)

    def add(self, outcome: str, detail: Optional[dict] = None) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        if outcome in FAILURES and detail is not None:
            self.failures.append(detail)


def _files_of(sample: Path) -> List[Path]:
    return sorted(p for p in sample.rglob("*") if p.is_file()) if sample.is_dir() else [sample]


def _stage(sample: Path, target: Path, data: bytes, work: Path) -> Path:
    """A copy of ``sample`` at ``work`` with ``target`` replaced by ``data``; other files hard-linked."""
    if work.exists():
        shutil.rmtree(work) if work.is_dir() else work.unlink()
    if sample.is_dir():
        for src in _files_of(sample):
            dst = work / src.relative_to(sample)
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src == target:
                dst.write_bytes(data)
            else:
                os.link(src, dst)
        return work
    work.write_bytes(data)
    return work


def fuzz_format(name: str, mutants: int, seed: int, worker: Worker, scratch: Path,
                keep: Optional[Path] = None, progress: bool = False, position: int = 0) -> Report:
    """Runs ``mutants`` mutants of format ``name`` through ``worker``."""
    report = Report(name)
    folder = scratch / f"{name}-sample"
    folder.mkdir()
    sample = FORMATS[name].make(folder)
    original = worker.run(name, sample)
    if original.get("outcome") != "loaded":
        raise RuntimeError(f"{name}: the unmutated sample does not load: {original}")
    files = [f for f in _files_of(sample) if f.stat().st_size > 0]  # not empty lock files
    contents = {f: f.read_bytes() for f in files}
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    kinds = CRC_KEEPING + CRAFTED
    iterator = range(mutants)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc=name, unit="mutant", position=position, mininterval=5)
    for i in iterator:
        target = files[int(rng.integers(0, len(files)))]
        kind = kinds[int(rng.integers(0, len(kinds)))]
        data = mutate(contents[target], kind, rng)
        if data is None or data == contents[target]:
            report.add("skipped")
            continue
        staged = _stage(sample, target, data, scratch / f"{name}-mutant{sample.suffix}")
        answer = worker.run(name, staged)
        outcome = answer["outcome"]
        if outcome == "loaded":
            if answer["fingerprint"] == original["fingerprint"]:
                outcome = "same"
            else:
                outcome = "changed" if kind in CRAFTED else "silent"
        detail = {"format": name, "mutant": i, "kind": kind, "file": str(target.relative_to(sample.parent)),
                  **{k: v for k, v in answer.items() if k != "fingerprint"}}
        report.add(outcome, detail)
        if outcome in FAILURES:
            log.warning("%s mutant %d (%s of %s): %s", name, i, kind, target.name, detail)
            if keep is not None:  # the whole mutant (a folder format: every file), to load again
                dst = keep / f"{name}-{i}-{kind}-{target.name}"
                dst.parent.mkdir(parents=True, exist_ok=True)
                if staged.is_dir():
                    shutil.copytree(staged, dst / sample.name)
                else:
                    dst.write_bytes(data)
    return report


def run_campaign(names: List[str], mutants: int, seed: int = 0, timeout: float = 30.0,
                 extra_bytes: int = 4 << 30, keep: Optional[Path] = None, progress: bool = False,
                 jobs: int = 1) -> Dict[str, Report]:
    """Runs ``mutants`` mutants of each format in ``names`` (``jobs`` formats at a time, each
    in a fresh worker, so damage done by one format's mutants stays there); failing mutants
    are copied to ``keep``."""
    from concurrent.futures import ThreadPoolExecutor

    try:
        import torch  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False
    names = [n for n in names if have_torch or not FORMATS[n].needs_torch]
    scratch = Path(tempfile.mkdtemp(prefix="pylocalize-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))

    def one(position_name):
        position, name = position_name
        worker = Worker(extra_bytes, timeout)
        try:
            return fuzz_format(name, mutants, seed, worker, scratch, keep, progress, position)
        finally:
            worker.close()

    try:
        with ThreadPoolExecutor(max(1, jobs)) as pool:
            reports = list(pool.map(one, enumerate(names)))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {r.name: r for r in reports}


def golden_formats() -> List[str]:
    """Formats with a file of their own (the ``-mmap`` variants read the same files)."""
    return [n for n in FORMATS if not n.endswith("-mmap")]


def write_golden(folder: Path) -> None:
    """One sample of each format under ``folder/<format>/``, to commit as golden files."""
    for name in golden_formats():
        (folder / name).mkdir(parents=True, exist_ok=False)
        FORMATS[name].make(folder / name)


def golden_sample(folder: Path) -> Path:
    """The sample saved in a golden format folder (a file, or the one sub-folder)."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if len(entries) != 1:
        raise ValueError(f"{folder}: expected one sample, found {[p.name for p in entries]}")
    return entries[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutants", type=int, default=1000, help="mutants per format")
    parser.add_argument("--formats", default="all", help="comma-separated, from: " + ", ".join(FORMATS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds before a load counts as a hang")
    parser.add_argument("--jobs", type=int, default=1, help="formats fuzzed at a time")
    parser.add_argument("--keep", type=Path, help="folder to copy failing mutants into")
    parser.add_argument("--json", type=Path, help="write the counts here")
    parser.add_argument("--write-golden", type=Path, metavar="DIR",
                        help="save one sample of each format under DIR/<format>/ and exit (tests/data/golden)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--extra-bytes", type=int, default=4 << 30, help="address space a worker may add")
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(args.extra_bytes)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.write_golden:
        write_golden(args.write_golden)
        return 0
    names = list(FORMATS) if args.formats == "all" else args.formats.split(",")
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        parser.error(f"unknown formats {unknown}; choose from {list(FORMATS)}")
    t0 = time.perf_counter()
    reports = run_campaign(names, args.mutants, args.seed, args.timeout, args.extra_bytes, args.keep, progress=True,
                           jobs=args.jobs)
    columns = ["same", "changed", "refused", "skipped", *FAILURES]
    print(f"{'format':14s}" + "".join(f"{c:>9s}" for c in columns))
    for name, report in reports.items():
        print(f"{name:14s}" + "".join(f"{report.counts.get(c, 0):9d}" for c in columns))
    print(f"{args.mutants} mutants per format, seed {args.seed}, {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({n: r.counts for n, r in reports.items()}, indent=1))
    return 1 if any(r.counts.get(f, 0) for r in reports.values() for f in FAILURES) else 0


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
