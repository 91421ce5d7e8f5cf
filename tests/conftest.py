"""Shared fixtures and numpy reference implementations for the test suite."""

from __future__ import annotations

import numpy as np
import pytest

import pylocalize

SIMD_LEVELS = pylocalize.supported_simd_levels()
INT32_MAX = np.iinfo(np.int32).max


@pytest.fixture(params=SIMD_LEVELS)
def simd_level(request):
    """Runs a test under every SIMD level this CPU supports."""
    old = pylocalize.simd_level()
    pylocalize.set_simd_level(request.param)
    yield request.param
    pylocalize.set_simd_level(old)


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
