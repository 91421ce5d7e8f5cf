"""Shared fixtures and numpy reference implementations for the test suite."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import pylocalize

SIMD_LEVELS = pylocalize.supported_simd_levels()

# Child processes run outside the checkout: `python -c` puts its working folder first on
# sys.path, and the checkout's pylocalize/ has no compiled core where the package was
# installed from it (as in CI).
CHILD_CWD = tempfile.mkdtemp(prefix="pylocalize-tests-")

# Sizes in the container layout (cpp/pylocalize/util/format.h)
CONTAINER_HEADER, CONTAINER_META_ENTRY, CONTAINER_SECTION_ENTRY = 64, 32, 88


def container_sections(data: bytes) -> dict:
    """name -> (entry offset, payload offset, nbytes) from a container's section table; the
    section's CRC-32 is the uint32 at entry offset + 80."""
    num_meta, num_sections = struct.unpack_from("<HI", data, 10)
    out = {}
    for s in range(num_sections):
        e = CONTAINER_HEADER + num_meta * CONTAINER_META_ENTRY + s * CONTAINER_SECTION_ENTRY
        name = data[e:e + 24].rstrip(b"\0").decode()
        offset, nbytes = struct.unpack_from("<QQ", data, e + 64)
        out[name] = (e, offset, nbytes)
    return out


def reseal_section(data: bytearray, name: str) -> None:
    """Recomputes the checksums of section ``name`` after the bytes of its payload were
    changed in place, as a buggy writer would leave them: the section's CRC in the table,
    then the table's and the header's CRCs."""
    import zlib

    num_meta, num_sections = struct.unpack_from("<HI", data, 10)
    entry, offset, nbytes = container_sections(bytes(data))[name]
    struct.pack_into("<I", data, entry + 80, zlib.crc32(bytes(data[offset:offset + nbytes])))
    tables_end = CONTAINER_HEADER + num_meta * CONTAINER_META_ENTRY + num_sections * CONTAINER_SECTION_ENTRY
    struct.pack_into("<I", data, 56, zlib.crc32(bytes(data[CONTAINER_HEADER:tables_end])))
    struct.pack_into("<I", data, 60, zlib.crc32(bytes(data[:60])))


def pytest_configure(config):
    """Under CI (``CI`` set, as ``.ci/run`` runs), one line per test, its name written
    before it runs: a run that ends without pytest's summary (a native library exiting
    the process) then shows which test it was in."""
    if os.environ.get("CI") and config.option.verbose < 1:
        config.option.verbose = 1


def child_env() -> dict:
    """Environment of a child Python that imports the same pylocalize as these tests."""
    env = dict(os.environ)
    package_parent = str(Path(pylocalize.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    return env


def python_child(code: str, *args: str, popen: bool = False, **kwargs):
    """``python -c code args...`` with :func:`child_env` in :data:`CHILD_CWD`: a
    ``CompletedProcess`` (``subprocess.run`` keywords), or a ``Popen`` with ``popen``."""
    command = [sys.executable, "-c", code, *args]
    kwargs.setdefault("env", child_env())
    kwargs.setdefault("cwd", CHILD_CWD)
    return subprocess.Popen(command, **kwargs) if popen else subprocess.run(command, **kwargs)
INT32_MAX = np.iinfo(np.int32).max


@pytest.fixture(params=SIMD_LEVELS)
def simd_level(request):
    """Runs a test under every SIMD level this CPU supports."""
    old = pylocalize.simd_level()
    pylocalize.set_simd_level(request.param)
    yield request.param
    pylocalize.set_simd_level(old)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one intra-op thread for a module's tests, then the previous count.

    The tests train tiny models, where torch's worker threads only add overhead, and on a
    shared machine their spinning slows training many-fold. Use it with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``; without torch the test is
    skipped."""
    pytest.importorskip("torch")
    from pylocalize.training import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def num_threads(request):
    old = pylocalize.get_num_threads()
    pylocalize.set_num_threads(request.param)
    yield request.param
    pylocalize.set_num_threads(old)


def hamming_matrix(xq: np.ndarray, xb: np.ndarray) -> np.ndarray:
    """All pairwise Hamming distances, by unpacking bits (independent of the core)."""
    bq = np.unpackbits(xq, axis=1).astype(np.float32)
    bb = np.unpackbits(xb, axis=1).astype(np.float32)
    # popcount(a ^ b) = |a| + |b| - 2 <a, b>; float32 BLAS is exact for these small integers
    d = bq.sum(1)[:, None] + bb.sum(1)[None, :] - 2 * (bq @ bb.T)
    return np.rint(d).astype(np.int32)


def brute_knn(dist: np.ndarray, ids: np.ndarray, k: int, largest: bool = False):
    """Top-k of each row, ties to the smaller id, padded with (pad, -1)."""
    nq, n = dist.shape
    key = -dist if largest else dist
    order = np.lexsort((np.broadcast_to(ids, dist.shape), key), axis=1)[:, :k]
    d = np.take_along_axis(dist, order, 1)
    i = ids[order]
    if k > n:
        pad = -np.inf if largest else INT32_MAX
        d = np.concatenate([d, np.full((nq, k - n), pad, dtype=d.dtype)], axis=1)
        i = np.concatenate([i, np.full((nq, k - n), -1, dtype=np.int64)], axis=1)
    return d, i


def random_codes(rng, n, nbits):
    return rng.integers(0, 256, (n, nbits // 8), dtype=np.uint8)


@pytest.fixture(scope="session")
def ray_local():
    """Ray started in this process with 2 CPUs and no dashboard, for the distributed tests;
    the tests skip where Ray is not installed."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        # Ray's workers start in the driver's working folder and import from it first: started
        # from a checkout, they would import its pylocalize/, which has no compiled core where
        # the package was installed from it (as in CI). So Ray starts from CHILD_CWD.
        # address="local": a cluster of its own, never one a test or a user left running here.
        here = os.getcwd()
        os.chdir(CHILD_CWD)
        try:
            # and they import the package these tests import (a relative PYTHONPATH would
            # resolve in CHILD_CWD)
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                     configure_logging=False, runtime_env={"env_vars": {"PYTHONPATH": child_env()["PYTHONPATH"]}})
        finally:
            os.chdir(here)
    yield ray
    ray.shutdown()
