"""Descriptor matching on the core's exact kNN: Lowe's ratio test and mutual check.

Both directions run on the blocked SIMD kernels of :mod:`pylocalize.index.knn` (exact,
threaded), so matching 4000 query features against tens of thousands of map features is
a fraction of a second on two cores.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from pylocalize.index.knn import assign


def match_descriptors(a: np.ndarray, b: np.ndarray, ratio: float = 0.8, mutual: bool = True,
                      groups_b: Optional[np.ndarray] = None, candidates: int = 8) -> np.ndarray:
    """Matches between two descriptor sets.

    A feature of ``a`` is matched to its nearest neighbour in ``b`` when that neighbour is
    closer than ``ratio`` x the second nearest (L2), and, with ``mutual``, when it is also
    the nearest neighbour of that feature of ``b`` in ``a``.

    ``groups_b`` labels features of ``b`` that stand for one thing (the observations of
    one 3D point in several images): the ratio test then compares with the nearest
    neighbour of another group, among the ``candidates`` nearest, instead of rejecting a
    match because two views of the same point look alike. A feature whose ``candidates``
    neighbours all share its group passes.

    Returns
    -------
    int64 (m, 2)
        Index pairs ``(i in a, j in b)``, sorted by ``i``.
    """
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    if len(a) == 0 or len(b) < 2:
        return np.zeros((0, 2), np.int64)
    # uint8 descriptors (SIFT as stored in maps) are matched as they are: the same distances
    # as their float copies, faster
    dtype = np.uint8 if a.dtype == np.uint8 and b.dtype == np.uint8 else np.float32
    fa = np.ascontiguousarray(a, dtype=dtype)
    fb = np.ascontiguousarray(b, dtype=dtype)
    if groups_b is None:
        labels, dist = assign(fa, fb, 2)
        second = dist[:, 1]
    else:
        groups_b = np.asarray(groups_b)
        if groups_b.shape != (len(b),):
            raise ValueError(f"groups_b must have one label per feature of b ({len(b)}), got shape {groups_b.shape}")
        labels, dist = assign(fa, fb, min(max(int(candidates), 2), len(fb)))
        other = groups_b[labels] != groups_b[labels[:, :1]]
        first_other = np.argmax(other, axis=1)
        second = np.where(other.any(1), dist[np.arange(len(fa)), first_other], np.inf)
    # squared distances: the ratio test compares d1 < ratio * d2
    keep = np.sqrt(np.maximum(dist[:, 0], 0)) < ratio * np.sqrt(np.maximum(second, 0))
    if mutual:
        # only features of b that some feature of a picked need their nearest neighbour in
        # a: usually a fraction of b, so this costs far less than a second full pass
        chosen = np.unique(labels[keep, 0])
        if len(chosen):
            back, _ = assign(np.ascontiguousarray(fb[chosen]), fa, 1)
            nearest_in_a = np.full(len(fb), -1, np.int64)
            nearest_in_a[chosen] = back
            keep &= nearest_in_a[labels[:, 0]] == np.arange(len(fa))
    idx = np.flatnonzero(keep)
    return np.stack([idx, labels[idx, 0]], 1).astype(np.int64)
