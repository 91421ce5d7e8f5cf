"""Threads, SIMD dispatch (including the PYLOCALIZE_SIMD variable) and Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
from conftest import SIMD_LEVELS

import pylocalize

CHECK = """
import numpy as np, pylocalize
rng = np.random.default_rng(0)
xb = rng.integers(0, 256, (5000, 32), dtype=np.uint8)
index = pylocalize.BinaryIndex(256); index.add(xb)
d, i = index.search(xb[:50], 3)
bits = np.unpackbits(xb, axis=1).astype(np.float32)
ref = (bits[:50, None, :] != bits[None, :, :]).sum(-1)
assert (d[:, 0] == 0).all() and (i[:, 0] == np.arange(50)).all()
assert (np.sort(ref, 1)[:, :3] == d).all()
print(pylocalize.simd_level())
"""


@pytest.mark.parametrize("level", SIMD_LEVELS)
def test_env_forces_simd_level(level, tmp_path):
    # cwd away from the checkout, so the installed package is imported, not the sources
    env = dict(os.environ, PYLOCALIZE_SIMD=level)
    out = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == level


def test_env_bad_value_warns(tmp_path):
    env = dict(os.environ, PYLOCALIZE_SIMD="sse9")
    code = "import warnings, pylocalize; print(pylocalize.simd_level())"
    out = subprocess.run([sys.executable, "-W", "always", "-c", code], env=env, capture_output=True,
                         text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0
    assert "not a SIMD level" in out.stderr
    assert out.stdout.strip().splitlines()[-1] == pylocalize.detected_simd_level()


def test_set_levels_and_threads():
    old_level, old_threads = pylocalize.simd_level(), pylocalize.get_num_threads()
    try:
        for level in SIMD_LEVELS:
            pylocalize.set_simd_level(level)
            assert pylocalize.simd_level() == level
        with pytest.raises(ValueError, match="unknown SIMD level"):
            pylocalize.set_simd_level("sse9")
        pylocalize.set_num_threads(3)
        assert pylocalize.get_num_threads() == 3
        pylocalize.set_num_threads(-1)
        assert pylocalize.get_num_threads() == pylocalize._core.num_cores()
        with pytest.raises(ValueError, match="num_threads"):
            pylocalize.set_num_threads(-5)
    finally:
        pylocalize.set_simd_level(old_level)
        pylocalize.set_num_threads(old_threads)
    assert isinstance(pylocalize.has_cuda(), bool)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_stops_a_long_search(num_threads):
    rng = np.random.default_rng(0)
    index = pylocalize.BinaryIndex(1024)
    index.add(rng.integers(0, 256, (100_000, 128), dtype=np.uint8))
    queries = rng.integers(0, 256, (20_000, 128), dtype=np.uint8)
    old = pylocalize.simd_level()
    pylocalize.set_simd_level("scalar")  # slowest path: the full search would take minutes
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            index.search(queries, 10)
    finally:
        timer.cancel()
        pylocalize.set_simd_level(old)
    # the index is still usable
    assert index.search(queries[:1], 1)[1].shape == (1, 1)
