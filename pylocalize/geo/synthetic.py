"""Synthetic image tokens generated from location and scene, for tests, demos and benchmarks.

No real photos with worldwide GPS and pretrained backbone weights are available offline, so
the heads are exercised on tokens whose content is a known function of where and what a
photo is: each token of a photo is the sum of a random embedding of its cell at every
granularity of a :class:`CellHierarchy`, scaled by how much that kind of scene reveals about
place, plus a random embedding of its scene, plus Gaussian noise. Scene 0 shows the fine
cell best (a street with signs), the last scene the least (an indoor shot: the coarse cell
only, faintly). Photos outside a kept cell get no embedding for that granularity.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from pylocalize.geo.cells import CellHierarchy


def scene_strengths(num_scenes: int, num_hierarchies: int) -> np.ndarray:
    """``(num_scenes, num_hierarchies)`` gains: coarse cells show in every scene, fine cells
    only in the first (most revealing) scenes."""
    s = np.linspace(0, 1, num_scenes)[:, None] if num_scenes > 1 else np.zeros((1, 1))
    h = np.linspace(0, 1, num_hierarchies)[None, :] if num_hierarchies > 1 else np.zeros((1, 1))
    return np.clip(1.0 - s * (0.4 + 0.6 * h), 0.05, 1.0)


def synthetic_tokens(hierarchy: CellHierarchy, latlon, num_tokens: int = 4, dim: int = 64, num_scenes: int = 3,
                     noise: float = 1.0, scenes: Optional[Sequence[int]] = None, seed: int = 0,
                     embedding_seed: int = 0):
    """Tokens ``float32 (n, num_tokens, dim)`` and scene labels ``int64 (n,)`` of photos at
    ``latlon``.

    ``embedding_seed`` fixes the cell and scene embeddings (use the same one for training and
    test photos); ``seed`` draws the scenes (when not given) and the noise.
    """
    labels = hierarchy.cell_of(latlon)
    n = len(labels)
    world = np.random.default_rng(embedding_seed)
    cell_embeddings = [world.normal(size=(c, dim)) / np.sqrt(1.0) for c in hierarchy.num_cells]
    scene_embeddings = world.normal(size=(num_scenes, dim))
    rng = np.random.default_rng(seed)
    scenes = rng.integers(0, num_scenes, n) if scenes is None else np.asarray(scenes, np.int64)
    gain = scene_strengths(num_scenes, hierarchy.num_hierarchies)[scenes]  # (n, H)
    signal = scene_embeddings[scenes].astype(np.float64)
    for h, e in enumerate(cell_embeddings):
        has = labels[:, h] >= 0
        signal[has] += gain[has, h:h + 1] * e[labels[has, h]]
    tokens = signal[:, None, :] + noise * rng.normal(size=(n, num_tokens, dim))
    return tokens.astype(np.float32), scenes.astype(np.int64)


__all__ = ["scene_strengths", "synthetic_tokens"]
