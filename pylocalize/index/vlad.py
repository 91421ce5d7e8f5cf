"""VLAD: a global image descriptor from local features, the retrieval baseline CANN is
measured against.

Each local descriptor (RootSIFT, L2-normalised) is assigned to its nearest visual word of
a k-means vocabulary; residuals are summed per word, each word's sum is L2-normalised
(intra-normalisation), then the whole vector is power- (signed square root) and
L2-normalised, and images are ranked by cosine similarity (Arandjelovic and Zisserman,
"All about VLAD", CVPR 2013).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from pylocalize.index.knn import assign, kmeans


def _unit_rows(descriptors: np.ndarray) -> np.ndarray:
    d = np.asarray(descriptors, dtype=np.float32)
    return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)


class VLAD:
    """A VLAD encoder with a ``num_words`` vocabulary trained by :meth:`fit`."""

    def __init__(self, num_words: int = 64, seed: int = 0):
        if num_words < 1:
            raise ValueError(f"num_words must be >= 1, got {num_words}")
        self.num_words, self.seed = int(num_words), int(seed)
        self.centroids = None

    def fit(self, descriptor_sets: Sequence[np.ndarray]) -> "VLAD":
        train = np.concatenate([_unit_rows(d) for d in descriptor_sets if len(d)])
        if len(train) < self.num_words:
            raise ValueError(f"{len(train)} training descriptors for {self.num_words} visual words")
        self.centroids, _ = kmeans(train, self.num_words, iterations=20, seed=self.seed)
        return self

    def encode(self, descriptors: np.ndarray) -> np.ndarray:
        """float32 (num_words * dim,) unit vector; zeros for an image without features."""
        if self.centroids is None:
            raise RuntimeError("call fit() first: VLAD needs a vocabulary")
        k, dim = self.centroids.shape
        v = np.zeros((k, dim), np.float32)
        if len(descriptors):
            r = _unit_rows(descriptors)
            labels, _ = assign(r, self.centroids)
            np.add.at(v, labels, r - self.centroids[labels])
        v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        v = np.sign(v) * np.sqrt(np.abs(v))
        return (v / max(float(np.linalg.norm(v)), 1e-12)).ravel()

    def rank(self, query: np.ndarray, database: np.ndarray) -> np.ndarray:
        """Database rows (encoded) ordered by cosine similarity to an encoded query."""
        return np.argsort(-(np.asarray(database) @ query), kind="stable")
