"""Seeded synthetic descriptor-like vectors.

I.i.d. Gaussian vectors make every approximate search look equally bad, because nearest
neighbours are barely nearer than anything else. Real local and global descriptors are
clustered and lie near a low-dimensional subspace; these vectors have both: cluster
centres plus anisotropic noise with a decaying spectrum, then a random rotation.
"""

from __future__ import annotations

import numpy as np


def clustered_vectors(n: int, dim: int = 128, *, clusters: int = 256, seed: int = 0,
                      normalize: bool = True) -> np.ndarray:
    """``float32 (n, dim)`` database vectors drawn from a seeded mixture.

    :func:`clustered_queries` with the same ``dim``, ``clusters`` and ``seed`` draws new
    points (queries) from the same mixture. ``normalize`` scales rows to unit length, so
    inner product and L2 rank alike.
    """
    return _mixture(dim, clusters, seed).sample(n, seed, normalize)


def clustered_queries(n: int, dim: int = 128, *, clusters: int = 256, seed: int = 0,
                      normalize: bool = True) -> np.ndarray:
    """New points from the same mixture as :func:`clustered_vectors` with that ``seed``."""
    return _mixture(dim, clusters, seed).sample(n, seed + 1_000_003, normalize)


class _Mixture:
    def __init__(self, dim: int, clusters: int, seed: int):
        rng = np.random.default_rng(seed)
        self.centers = rng.standard_normal((clusters, dim)) * 1.5
        spectrum = 0.85 ** np.arange(dim) + 0.05
        rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        self.noise = (spectrum[:, None] * rotation).astype(np.float64)
        self.weights = rng.dirichlet(np.full(clusters, 2.0))

    def sample(self, n: int, seed: int, normalize: bool) -> np.ndarray:
        rng = np.random.default_rng([seed, n])
        labels = rng.choice(len(self.centers), size=n, p=self.weights)
        x = self.centers[labels] + rng.standard_normal((n, self.noise.shape[0])) @ self.noise
        if normalize:
            x /= np.linalg.norm(x, axis=1, keepdims=True)
        return np.ascontiguousarray(x, dtype=np.float32)


def _mixture(dim: int, clusters: int, seed: int) -> _Mixture:
    return _Mixture(dim, clusters, seed)
