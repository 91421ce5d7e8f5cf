"""Descriptor matching on the core's exact kNN: Lowe's ratio test and mutual check.

Both directions run on the blocked SIMD kernels of the core (exact, threaded): L2 for SIFT
(:func:`pylocalize.index.knn.assign`), Hamming for binary descriptors such as ORB
(:class:`pylocalize.index.binary.BinaryIndex`), so matching 4000 query features against
tens of thousands of map features is a fraction of a second on two cores.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from pylocalize.index.binary import BinaryIndex
from pylocalize.index.knn import assign

METRICS = ("l2", "hamming")


def _nearest(a: np.ndarray, b: np.ndarray, m: int, metric: str, index_b: Optional[BinaryIndex] = None):
    """``(labels int64 (n, m), distances float64 (n, m))``: the ``m`` nearest rows of ``b`` to
    each row of ``a``, nearest first, ties to the smaller index; L2 distances (not squared)
    or Hamming distances. ``index_b``: a :class:`BinaryIndex` already holding ``b`` under ids
    ``0..len(b)-1`` (a map's layer index), searched instead of a new one."""
    if metric == "hamming":
        if index_b is None:
            index_b = BinaryIndex(8 * b.shape[1])
            index_b.add(b)
        dist, labels = index_b.search(a, m)
        return labels, dist.astype(np.float64)
    labels, dist = assign(a, b, m)
    labels, dist = labels.reshape(len(a), m), dist.reshape(len(a), m)
    return labels, np.sqrt(np.maximum(dist.astype(np.float64), 0))


def match_descriptors(a: np.ndarray, b: np.ndarray, ratio: float = 0.8, mutual: bool = True,
                      groups_b: Optional[np.ndarray] = None, candidates: int = 8, metric: str = "l2",
                      index_b: Optional[BinaryIndex] = None) -> np.ndarray:
    """Matches between two descriptor sets.

    A feature of ``a`` is matched to its nearest neighbour in ``b`` when that neighbour is
    closer than ``ratio`` x the second nearest, and, with ``mutual``, when it is also
    the nearest neighbour of that feature of ``b`` in ``a``.

    ``metric``: ``"l2"`` (float or uint8 descriptors such as RootSIFT) or ``"hamming"``
    (binary descriptors packed 8 bits a byte, uint8 (n, bytes), such as ORB); the ratio is
    one of distances either way (not squared). For Hamming, ``index_b`` may be a
    :class:`BinaryIndex` that already holds ``b`` under ids ``0..len(b)-1``: it is searched
    instead of indexing ``b`` again.

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
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; use one of {METRICS}")
    if len(a) == 0 or len(b) < 2:
        return np.zeros((0, 2), np.int64)
    if metric == "hamming":
        fa, fb = (_binary_rows(x, name) for x, name in ((a, "a"), (b, "b")))
        if fa.shape[1] != fb.shape[1]:
            raise ValueError(f"binary descriptors of {fa.shape[1]} and {fb.shape[1]} bytes cannot be compared")
        if index_b is not None and (len(index_b) != len(fb) or index_b.code_size != fb.shape[1]):
            raise ValueError(f"index_b holds {len(index_b)} codes of {index_b.code_size} bytes, b {fb.shape}: give "
                             "the index of b (ids 0..len(b)-1) or none")
    else:
        # uint8 descriptors (SIFT as stored in maps) are matched as they are: the same
        # distances as their float copies, faster
        dtype = np.uint8 if a.dtype == np.uint8 and b.dtype == np.uint8 else np.float32
        fa, fb, index_b = np.ascontiguousarray(a, dtype=dtype), np.ascontiguousarray(b, dtype=dtype), None
    if groups_b is None:
        labels, dist = _nearest(fa, fb, 2, metric, index_b)
        second = dist[:, 1]
    else:
        groups_b = np.asarray(groups_b)
        if groups_b.shape != (len(b),):
            raise ValueError(f"groups_b must have one label per feature of b ({len(b)}), got shape {groups_b.shape}")
        labels, dist = _nearest(fa, fb, min(max(int(candidates), 2), len(fb)), metric, index_b)
        other = groups_b[labels] != groups_b[labels[:, :1]]
        first_other = np.argmax(other, axis=1)
        second = np.where(other.any(1), dist[np.arange(len(fa)), first_other], np.inf)
    keep = dist[:, 0] < ratio * second
    if mutual:
        # only features of b that some feature of a picked need their nearest neighbour in
        # a: usually a fraction of b, so this costs far less than a second full pass
        chosen = np.unique(labels[keep, 0])
        if len(chosen):
            back, _ = _nearest(np.ascontiguousarray(fb[chosen]), fa, 1, metric)
            nearest_in_a = np.full(len(fb), -1, np.int64)
            nearest_in_a[chosen] = back[:, 0]
            keep &= nearest_in_a[labels[:, 0]] == np.arange(len(fa))
    idx = np.flatnonzero(keep)
    return np.stack([idx, labels[idx, 0]], 1).astype(np.int64)


def _binary_rows(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"{name}: binary descriptors must be uint8 (n, bytes), packed 8 bits a byte; got {x.dtype} "
                         f"{x.shape}")
    return np.ascontiguousarray(x)
