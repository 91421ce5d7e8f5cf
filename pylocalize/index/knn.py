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


def assign(x: np.ndarray, centroids: np.ndarray, m: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """The ``m`` nearest centroids of each row: ``labels int64`` and squared L2 ``distances
    float32``, shaped ``(n,)`` for ``m = 1`` and ``(n, m)`` otherwise, nearest first."""
    labels, dist = _core.assign(x, centroids, int_scalar(m, "m"))
    if m == 1:
        return labels[:, 0], dist[:, 0]
    return labels, dist
