"""How well a search finds the true neighbours: the one recall@k of pylocalize.

Every recall@k of a k-nearest-neighbour search against exact neighbours (the learned codes'
held-out score, the benchmarks, the tests) is :func:`recall_at`, so that figures measured in
different places mean the same thing. Plain numpy: importing it needs neither the core nor
torch.
"""

from __future__ import annotations

import numpy as np


def recall_at(k: int, found_ids: np.ndarray, true_ids: np.ndarray) -> float:
    """Recall@k: the mean, over queries, of the fraction of the ``k`` true nearest neighbours
    that are among the ``k`` found first.

    For query ``q``, ``|set(found_ids[q, :k]) & set(true_ids[q, :k])| / k``, averaged over
    the queries (each row's ids counted once; a padding id such as ``-1`` counts as a miss
    unless the truth holds it too).

    Parameters
    ----------
    k : int
        How many neighbours count, ``>= 1``.
    found_ids : array of int, shape (nq, >= k)
        Each query's ids as the search returned them, nearest first.
    true_ids : array of int, shape (nq, >= k)
        Each query's exact nearest neighbours, nearest first.

    Returns
    -------
    float in [0, 1]
    """
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    found_ids, true_ids = np.asarray(found_ids), np.asarray(true_ids)
    if len(found_ids) != len(true_ids):
        raise ValueError(f"found_ids has {len(found_ids)} queries, true_ids {len(true_ids)}: give one row per query")
    hits = [len(set(f[:k].tolist()) & set(t[:k].tolist())) for f, t in zip(found_ids, true_ids)]
    return float(np.mean(hits)) / k


__all__ = ["recall_at"]
