"""k-means and nearest-centroid assignment on the core's blocked SIMD kernels.

Used for the CANN inverted file, visual vocabularies (bag of words, VLAD) and anywhere a
clustering of float vectors is needed. Training subsamples to at most
``max_points_per_centroid * k`` points, seeds with k-means++ (random distinct points for
very large problems) and splits the largest cluster when one empties; deterministic for a
seed.
"""

from __future__ import annotations

import warnings
from typing import Optional, Tuple

import numpy as np

from pylocalize import _core
from pylocalize.index._args import int_scalar
from pylocalize.index._device import Device, parse_device


def kmeans(x: np.ndarray, k: int, iterations: int = 20, seed: int = 0, max_points_per_centroid: int = 256, *,
           n_iter: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means.

    Parameters
    ----------
    x : float32 (n, d)
    k : int
        Number of centroids, ``1 <= k <= n``.
    iterations : int
        Lloyd iterations (the name :meth:`CANNIndex.train` uses too).
    seed : int
    max_points_per_centroid : int
        Training subsample size per centroid (0: use every point).

    Returns
    -------
    centroids : float32 (k, d)
    labels : int64 (n,)
        Nearest centroid of every point of ``x``.
    n_iter : int, optional
        Deprecated name of ``iterations`` (a DeprecationWarning); kept so older callers run.
    """
    if n_iter is not None:
        if iterations != 20:
            raise TypeError("kmeans() got both iterations and its deprecated alias n_iter: pass iterations only")
        warnings.warn("kmeans(n_iter=) is deprecated: use kmeans(iterations=)", DeprecationWarning, stacklevel=2)
        iterations = n_iter
    centroids, labels, _ = _core.kmeans(np.ascontiguousarray(x, dtype=np.float32) if x.dtype != np.float32 else x,
                                        int_scalar(k, "k"), int(iterations), int(seed), int(max_points_per_centroid))
    return centroids, labels


def assign(x: np.ndarray, centroids: np.ndarray, m: int = 1, *,
           device: Device = "cpu") -> Tuple[np.ndarray, np.ndarray]:
    """The ``m`` nearest centroids of each row: ``labels int64`` and squared L2 ``distances
    float32``, shaped ``(n,)`` for ``m = 1`` and ``(n, m)`` otherwise, nearest first (ties
    to the smaller index).

    ``x`` and ``centroids`` both float32, or both uint8 (descriptors against descriptors,
    as in matching): uint8 gives the same result as their float32 copies, from a quarter of
    the bytes and, on AVX2, integer multiply-adds.

    ``device="cuda"`` (or ``"cuda:N"``) assigns with the CUDA kernels, with the same labels
    and distances (``m`` up to 2048); the centroids are copied to the device for the call."""
    ordinal = parse_device(device)
    if ordinal is not None:
        centroids = np.asarray(centroids)
        if not isinstance(x, np.ndarray) or x.dtype != centroids.dtype:
            raise ValueError("x and centroids must both be float32 or both uint8 numpy arrays")
        rows = _core.GpuFloatRows(centroids, ordinal)
        k = centroids.shape[0]
        if not 1 <= int_scalar(m, "m") <= k:
            raise ValueError(f"m must be in 1..{k}, got {m}")
        labels, dist = rows.search(x.astype(np.float32) if x.dtype == np.uint8 else x, int(m), "l2",
                                   centroids.shape[1])
    else:
        labels, dist = _core.assign(x, centroids, int_scalar(m, "m"))
    if m == 1:
        return labels[:, 0], dist[:, 0]
    return labels, dist


class CoarseQuantizer:
    """The nearest of many centroids, as an inverted file finds a feature's list and the
    lists a query feature probes.

    Exact (every centroid) below 1,024 centroids. From 1,024 on, two-level: the centroids
    are grouped by k-means into about ``sqrt(k)`` groups, and a row is compared with the
    group centres and then only with the members of its ``group_probe`` nearest groups
    (default 8), about ``(1 + group_probe) sqrt(k)`` distances instead of ``k``. It misses a
    row's true nearest centroid only when that one lies outside those groups
    (``benchmarks/bench_coarse_quantizer.py`` measures how often). :class:`CANNIndex`
    (method ``"ivf"``) and :class:`CANNPQIndex` assign with it.
    """

    def __init__(self, centroids: np.ndarray, seed: int = 0, group_probe: Optional[int] = None):
        centroids = np.ascontiguousarray(centroids, np.float32)
        if centroids.ndim != 2 or len(centroids) == 0:
            raise ValueError(f"centroids must be a non-empty (k, dim) array, got shape {centroids.shape}")
        options = {} if group_probe is None else {"group_probe": int_scalar(group_probe, "group_probe")}
        self._impl = _core.CoarseQuantizer(centroids, int_scalar(seed, "seed"), **options)

    two_level = property(lambda self: self._impl.two_level, doc="Whether rows are assigned through groups.")

    def __len__(self) -> int:
        return self._impl.size

    def assign(self, x: np.ndarray, m: int = 1) -> Tuple[np.ndarray, np.ndarray]:
        """The ``m`` nearest centroids found for each row, as :func:`assign` returns them."""
        labels, dist = self._impl.assign(np.ascontiguousarray(x, np.float32), int_scalar(m, "m"))
        if m == 1:
            return labels[:, 0], dist[:, 0]
        return labels, dist
