"""Merging the shards' results into the results of one index.

The core orders every result by (distance, id) -- or (-score, id) -- ascending: ties go to the
smaller id (``cpp/pylocalize/util/topk.h``, CANN's ``TopImages``). That order is total, so the
k best of the union of the shards is the k best of the union of each shard's k best, and
sorting those by the same key gives exactly what one index over all the data returns, ties
included. Padded slots (id ``-1``) carry the worst value and sort after every real entry.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

INT32_MAX = np.iinfo(np.int32).max
_ID_LAST = np.iinfo(np.int64).max  # a padded slot's id in the sort key


def _order(values: np.ndarray, ids: np.ndarray, largest: bool) -> np.ndarray:
    """Per row, the column order by (value, id), ``-value`` when ``largest``."""
    key = -values if largest else values
    return np.lexsort((np.where(ids < 0, _ID_LAST, ids), key), axis=-1)


def merge_topk(parts: Sequence[Tuple[np.ndarray, np.ndarray]], k: int,
               largest: bool) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` best per row of the shards' ``(values, ids)``, each ``(nq, k_s)``.

    Returns ``(values, ids, column)``: column is the source column in the concatenation of the
    parts (so ``column // k_s`` is the shard when all are ``k_s`` wide), ``-1`` in padded slots.
    Rows with fewer than ``k`` entries in all are padded with ``(-inf, -1)`` when ``largest``,
    else ``(2**31 - 1, -1)``, as the core pads.
    """
    values = np.concatenate([np.asarray(p[0]) for p in parts], axis=1)
    ids = np.concatenate([np.asarray(p[1]) for p in parts], axis=1)
    nq, width = ids.shape
    if width < k:
        pad = -np.inf if largest else INT32_MAX
        values = np.concatenate([values, np.full((nq, k - width), pad, values.dtype)], axis=1)
        ids = np.concatenate([ids, np.full((nq, k - width), -1, np.int64)], axis=1)
    order = _order(values, ids, largest)[:, :k]
    column = np.where(order < width, order, -1)
    return (np.ascontiguousarray(np.take_along_axis(values, order, 1)),
            np.ascontiguousarray(np.take_along_axis(ids, order, 1)), column)


def merge_ranges(parts: List[Tuple[np.ndarray, np.ndarray, np.ndarray]],
                 nq: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The shards' range-search results ``(lims, distances, ids)`` as one: per query ascending
    by (distance, id)."""
    query = np.concatenate([np.repeat(np.arange(nq), np.diff(lims)) for lims, _, _ in parts])
    distances = np.concatenate([d for _, d, _ in parts])
    ids = np.concatenate([i for _, _, i in parts])
    order = np.lexsort((ids, distances, query))
    lims = np.zeros(nq + 1, np.int64)
    np.cumsum(np.bincount(query, minlength=nq), out=lims[1:])
    return lims, np.ascontiguousarray(distances[order]), np.ascontiguousarray(ids[order])
