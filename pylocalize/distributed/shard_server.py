"""One shard of a sharded index: the state of a Ray actor, and the shard files' writer.

:class:`ShardServer` holds one index loaded from its file with ``mmap=True`` (pages are read
when a search touches them, so a restarted actor is ready in the time it takes to map the
file). It imports no Ray: :mod:`pylocalize.distributed.sharded` makes it an actor.

Every answer carries the server's *incarnation*, a random token drawn when it starts. Ray
restarts a killed actor by running the constructor again, which reloads the file it was
created with; the driver sees the new token and, where that file is not the shard's state
(changes not saved yet, or a save to a new file since), calls :meth:`ShardServer.restore`.

A load that fails (missing or corrupt file) does not fail the constructor -- Ray would then
report the actor dead, not why -- but every call, so the driver names the shard and the file.
"""

from __future__ import annotations

import os
import secrets
from typing import Callable, List, Optional, Tuple

import numpy as np

import pylocalize
from pylocalize.index.binary import BinaryIndex, MultiBitIndex
from pylocalize.index.cann import CANNIndex

INDEX_CLASSES = {"BinaryIndex": BinaryIndex, "MultiBitIndex": MultiBitIndex, "CANNIndex": CANNIndex}


def load_index(kind: str, source, options: Optional[dict] = None):
    """An index of ``kind`` from a file path (memory-mapped) or from :meth:`serialize` bytes."""
    cls = INDEX_CLASSES[kind]
    options = options or {}
    if isinstance(source, np.ndarray):
        return cls.deserialize(source, **options) if kind == "CANNIndex" else cls.deserialize(source)
    return cls.load(source, mmap=True, **options) if kind == "CANNIndex" else cls.load(source, mmap=True)


def remove_keys(index, keys: np.ndarray) -> int:
    """Removes ids (codes) or image ids (CANN) ``keys``; returns the entries removed."""
    if len(keys) == 0:
        return 0
    return index.remove_images(keys) if isinstance(index, CANNIndex) else index.remove_ids(keys)


def write_shard(kind: str, source, drop: np.ndarray, path: str) -> Tuple[int, int]:
    """Writes one shard of ``source`` (an index file's path, or an index's bytes): a copy of it
    without the keys ``drop`` (those of the other shards), saved to ``path``. Returns the
    shard's entry count and file size. Run in this process or as a Ray task, one per shard."""
    index = load_index(kind, source)
    remove_keys(index, drop)
    index.save(path)
    return index.ntotal, os.path.getsize(path)


class ShardServer:
    """An index shard served from one file (the body of a Ray actor).

    Every call answers ``(token, ok, value)``: the incarnation's token, and the call's value,
    or ``ok`` False and the exception it raised (returned, not raised, so that the driver can
    tell which incarnation failed and name the shard in the message it raises).

    Parameters
    ----------
    kind : str
        ``"BinaryIndex"``, ``"MultiBitIndex"`` or ``"CANNIndex"``.
    path : str
        The shard's file.
    options : dict
        CANN search options given to :meth:`CANNIndex.load` (kernel, method...).
    threads : int, optional
        The core's threads in this process (``pylocalize.set_num_threads``).
    """

    def __init__(self, kind: str, path: str, options: Optional[dict] = None, threads: Optional[int] = None):
        self.token = secrets.token_hex(8)
        self.kind, self.options = kind, dict(options or {})
        if threads is not None:
            pylocalize.set_num_threads(threads)
        self._load(path)

    def _load(self, path: str) -> None:
        self.path, self.index, self.error = path, None, None
        try:
            self.index = load_index(self.kind, path, self.options)
        except Exception as error:  # answered by every call (see _ready): the driver names the shard
            self.error = error

    def _ready(self):
        if self.error is not None:
            raise self.error
        return self.index

    def _answer(self, work: Callable[[], object]) -> Tuple[str, bool, object]:
        try:
            return self.token, True, work()
        except Exception as error:
            return self.token, False, error

    def info(self):
        """``{"ntotal", "bytes", "params", "node", "pid", "path"}`` (CANN: the search ``options`` and
        descriptor ``dtype``; multi-bit: ``has_vectors``): what the driver checks at open."""
        return self._answer(self._info)

    def _info(self) -> dict:
        from pylocalize.distributed._runtime import node_id

        index = self._ready()
        params = ({"nbits": index.nbits} if self.kind == "BinaryIndex" else
                  {"dim": index.dim, "bits_per_dim": index.bits_per_dim} if self.kind == "MultiBitIndex" else
                  {"dim": index.dim})
        info = {"ntotal": int(index.ntotal), "bytes": os.path.getsize(self.path), "params": params,
                "node": node_id(), "pid": os.getpid(), "path": self.path}
        if self.kind == "CANNIndex":
            info["options"], info["dtype"] = index.search_options, index.dtype
        elif self.kind == "MultiBitIndex":
            info["has_vectors"] = index.has_vectors
        return info

    # -- searches --------------------------------------------------------------------------
    def search(self, batch: dict, k: int, kwargs: dict):
        """``index.search(batch["queries"], k, **kwargs)`` (multi-bit: with the batch's
        ``query_vectors`` when re-ranking); CANN searches its list of query sets by
        ``search_batch`` with ``kwargs`` ``method`` and ``nprobe``."""
        return self._answer(lambda: self._search(batch, k, kwargs))

    def _search(self, batch: dict, k: int, kwargs: dict):
        index = self._ready()
        if self.kind == "CANNIndex":
            index.method, index.nprobe = kwargs["method"], kwargs["nprobe"]
            return index.search_batch(batch["queries"], k)
        if kwargs.get("rerank"):
            kwargs = dict(kwargs, query_vectors=batch.get("query_vectors"))
        return index.search(batch["queries"], k, **kwargs)

    def range_search(self, batch: dict, radius: int):
        return self._answer(lambda: self._ready().range_search(batch["queries"], radius))

    def rerank(self, batch: dict, counts: np.ndarray):
        """Multi-bit re-ranking of a given number of candidates per query: query ``i``'s
        ``counts[i]`` best codes here by SDC, ordered by exact inner product, as
        ``(scores, ids)`` of width ``max(counts)`` padded with ``(-inf, -1)``."""
        return self._answer(lambda: self._rerank(batch["queries"], batch["query_vectors"], counts))

    def _rerank(self, codes: np.ndarray, vectors: np.ndarray, counts: np.ndarray):
        index = self._ready()
        width = int(counts.max(initial=0))
        scores = np.full((len(counts), width), -np.inf, np.float32)
        ids = np.full((len(counts), width), -1, np.int64)
        for c in np.unique(counts[counts > 0]):
            rows = np.flatnonzero(counts == c)
            s, i = index.search(codes[rows], int(c), query_vectors=vectors[rows], rerank=int(c))
            scores[rows, :c], ids[rows, :c] = s, i
        return scores, ids

    # -- changes ---------------------------------------------------------------------------
    def apply(self, op: tuple):
        """Applies one change ``("add", args)`` or ``("remove", keys)``."""
        return self._answer(lambda: self._apply(op))

    def _apply(self, op: tuple):
        index = self._ready()
        verb, args = op
        if verb == "add":
            return index.add(*args)
        if verb == "remove":
            return remove_keys(index, args)
        raise ValueError(f"unknown shard change {verb!r}")

    def restore(self, path: str, ops: List[tuple]):
        """Reloads ``path`` (the shard's last saved file) and replays ``ops``, the changes made
        since; the value is the result of each op."""
        self.token = secrets.token_hex(8)  # answers from before the restore must not pass as restored
        self._load(path)
        return self._answer(lambda: [self._apply(op) for op in ops])

    def save(self, path: str):
        """Writes the shard to ``path`` (atomically) and serves from that file from now on;
        the value is the file's size."""
        return self._answer(lambda: self._save(path))

    def _save(self, path: str) -> int:
        self._ready().save(path)
        self.path = path
        return os.path.getsize(path)
