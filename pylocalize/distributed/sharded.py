"""Sharded indexes on Ray: :class:`ShardedBinaryIndex`, :class:`ShardedMultiBitIndex`,
:class:`ShardedCANNIndex`.

Each shard is a Ray actor (:class:`~pylocalize.distributed.shard_server.ShardServer`) that
memory-maps its own index file; a search puts the queries in Ray's object store once, fans
out to every shard and merges their top-k (:mod:`pylocalize.distributed.merge`). For the exact
searches -- Hamming kNN and range search, multi-bit SDC (with or without re-ranking), CANN
``"exact"`` -- the results are those of one local index over the same data, ties included:
codes are split by id and CANN features by image (all of an image's features in one shard),
so every distance or per-image score is computed as one index would, and the merge keeps the
core's order. The approximate searches (CANN ``"ivf"`` and ``"grid"``, multi-bit
``candidates``) return the merge of each shard's approximate search.

Faults. Actors are created with ``max_restarts`` and their calls with ``max_task_retries``:
Ray restarts a killed actor (which maps its file again) and retries its calls. Every answer
carries the actor's incarnation; when a restarted actor's file is not the shard's state
(changes since the last save, or a save to a new file), the driver reloads the right file into
it and replays the changes it keeps until the next save, then asks again. A missing or corrupt
shard file is an error naming the shard and its file; an answer that does not come within
``timeout`` seconds is a ``TimeoutError`` naming the shards that did not answer.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from pylocalize import _core
from pylocalize._core import FormatError
from pylocalize._folders import FolderLock, remove_unreferenced, unique_name
from pylocalize.distributed._runtime import ensure_ray, require_ray
from pylocalize.distributed.layout import (
    ShardEntry,
    ShardLayout,
    partition,
    place,
    resolve,
    shard_file_pattern,
)
from pylocalize.distributed.merge import merge_ranges, merge_topk
from pylocalize.distributed.shard_server import INDEX_CLASSES, ShardServer, load_index, write_shard
from pylocalize.index._args import as_ids, int_scalar
from pylocalize.index.cann import METHODS

logger = logging.getLogger(__name__)
PathLike = Union[str, "os.PathLike[str]"]
REOPEN = "reopen the index with open(layout file)"


@functools.lru_cache(maxsize=None)
def _server_class():
    """The shard server as a Ray actor class (made once per process)."""
    return ensure_ray().remote(ShardServer)


class _Shard:
    """The driver's record of one shard: its actor, current file, keys and unsaved changes."""

    def __init__(self, number: int, path: str, keys: np.ndarray, count: int, actor):
        self.number, self.path, self.born, self.keys, self.count, self.actor = number, path, path, keys, count, actor
        self.good = set()  # incarnations (tokens) known to hold the shard's current state
        self.stale = set()  # incarnations found not to (answers from them are asked again)
        self.bytes = 0  # size of the file
        self.pending: List[tuple] = []  # changes since the file was written, replayed into a restarted actor

    def name(self) -> str:
        return f"shard {self.number} ({self.path})"


def _shard_error(shard: _Shard, error: BaseException) -> BaseException:
    """``error`` raised in ``shard``'s actor, as the same kind of exception naming the shard."""
    cause = getattr(error, "cause", None) or error
    message = f"{shard.name()}: {cause}"
    if isinstance(cause, (FormatError, FileNotFoundError)):
        message += ("; a layout's shard files are written together by one save: put back the file that save wrote, "
                    "or shard the index again")
    for kind in (FormatError, FileNotFoundError, IsADirectoryError, PermissionError, ValueError, MemoryError,
                 OSError, RuntimeError):
        if isinstance(cause, kind):
            return kind(message)
    return RuntimeError(message)


class _ShardedIndex:
    """What the three sharded indexes share: actors, calls with fault handling, changes, saves."""

    KIND = ""
    LARGEST = False  # results best first by largest value (scores) rather than smallest (distances)

    def __init__(self, layout: ShardLayout, layout_path: Path, *, threads: Optional[int] = None,
                 max_restarts: int = 4, max_task_retries: int = 4, timeout: Optional[float] = 600.0,
                 actor_options: Optional[dict] = None, batch_size: int = 1024, options: Optional[dict] = None):
        """Use :meth:`open` or :meth:`from_index`."""
        if layout.kind != self.KIND:
            raise FormatError(f"{layout_path} is the layout of a sharded {layout.kind}, not a {self.KIND}: "
                              f"open it with Sharded{layout.kind}.open")
        for name, value in (("max_restarts", max_restarts), ("max_task_retries", max_task_retries)):
            if int_scalar(value, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if threads is not None and (int_scalar(threads, "threads") == 0 or threads < -1):
            raise ValueError(f"threads must be >= 1 or -1 (every core), got {threads}")
        self.batch_size = int_scalar(batch_size, "batch_size")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds or None (no limit), got {timeout}")
        self.timeout, self.params, self.next_id = timeout, dict(layout.params), layout.next_id
        self._ray = ensure_ray()
        self._shards: List[_Shard] = []
        self._start(layout, layout_path, threads, options or {},
                    dict(actor_options or {}, max_restarts=max_restarts, max_task_retries=max_task_retries))

    def _start(self, layout: ShardLayout, layout_path: Path, threads, options: dict, actor_options: dict) -> None:
        """Creates one actor per shard and checks that each holds the file the layout recorded."""
        server = _server_class().options(**actor_options)
        for number, entry in enumerate(layout.shards):
            path = os.fspath(resolve(layout_path, entry.file))
            actor = server.remote(self.KIND, path, options, threads)
            self._shards.append(_Shard(number, path, entry.keys, entry.count, actor))
        try:
            infos = self._call([(s, "info", ()) for s in self._shards])
            for shard, entry, info in zip(self._shards, layout.shards, infos):
                self._check_shard(shard, entry, info, layout_path)
                shard.bytes = entry.bytes
        except BaseException:
            self.close()
            raise
        self._opened(infos)

    def _opened(self, infos: List[dict]) -> None:
        """What a kind takes from its shards' first answers (search options, dtype...)."""

    def _check_shard(self, shard: _Shard, entry: ShardEntry, info: dict, layout_path: Path) -> None:
        if info["params"] != self.params:
            raise FormatError(f"{shard.name()}: an index of {info['params']}, the layout {layout_path} one of "
                              f"{self.params}")
        if info["ntotal"] != entry.count or info["bytes"] != entry.bytes:
            raise FormatError(f"{shard.name()}: {info['ntotal']} entries in {info['bytes']} bytes, the layout "
                              f"{layout_path} recorded {entry.count} in {entry.bytes}: not the file this layout "
                              "was saved with; open the layout saved with it or shard the index again")

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def open(cls, layout_path: PathLike, **kwargs):
        """Opens the sharded index saved to ``layout_path``: one Ray actor per shard file.

        Parameters
        ----------
        layout_path : path
            The layout file written by :meth:`save` or :meth:`from_index`.
        threads : int, optional
            The core's threads in each shard's process (default: the core's default).
        max_restarts, max_task_retries : int
            How often Ray restarts a shard's actor, and retries a call on a restarted one.
        timeout : float or None
            Seconds to wait for the shards' answers to one call (None: no limit).
        actor_options : dict, optional
            More options for the actors (Ray's ``.options``: ``num_cpus``, ``scheduling_strategy``...).
        batch_size : int
            Queries (query images for CANN) per call to a shard; a search of more runs as
            several calls, pipelined.

        Raises
        ------
        FileNotFoundError, pylocalize.FormatError
            A missing or invalid layout file, or a shard file missing, corrupt or not the one
            the layout recorded (the message names the shard and its file).
        """
        require_ray()  # before anything else: without Ray, say how to install it
        layout_path = Path(os.path.abspath(layout_path))
        return cls(ShardLayout.read(layout_path), layout_path, **kwargs)

    @classmethod
    def from_index(cls, source, num_shards: int, layout_path: PathLike, *, parallel: bool = False, **kwargs):
        """Shards ``source`` (an index, or the path of an index file) into ``num_shards``
        files beside ``layout_path`` (:func:`shard_index`) and opens them (:meth:`open`)."""
        require_ray()
        shard_index(source, num_shards, layout_path, parallel=parallel, kind=cls.KIND)
        return cls.open(layout_path, **kwargs)

    def close(self) -> None:
        """Ends the shards' actors (unsaved changes are lost)."""
        for shard in self._shards:
            self._ray.kill(shard.actor, no_restart=True)
        self._shards = []

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- calls -----------------------------------------------------------------------------
    def _get(self, tasks: Sequence[tuple], refs: list) -> list:
        """The answers ``(token, ok, value)`` of ``refs`` (see :class:`ShardServer`); an actor
        that could not take the call (restarting) answers ``(None, True, None)``."""
        ray = self._ray
        _, waiting = ray.wait(list(refs), num_returns=len(refs), timeout=self.timeout)
        if waiting:
            late = sorted({tasks[refs.index(r)][0].number for r in waiting})
            raise TimeoutError(f"shards {late} did not answer within {self.timeout} s (files: "
                               f"{[self._shards[n].path for n in late]}); check the cluster (`ray status`) or "
                               "raise timeout")
        answers = []
        for (shard, _, _), ref in zip(tasks, refs):
            try:
                answers.append(ray.get(ref))
            except ray.exceptions.ActorUnavailableError:
                answers.append((None, True, None))
            except ray.exceptions.RayActorError as error:
                raise RuntimeError(f"{shard.name()}: its actor died and was not restarted "
                                   f"({type(error).__name__}); {REOPEN}") from None
            except ray.exceptions.RayTaskError as error:
                raise _shard_error(shard, error) from None
        return answers

    def _call(self, tasks: Sequence[Tuple[_Shard, str, tuple]]) -> list:
        """Runs ``(shard, method, args)`` calls on the shards' actors; returns their values.

        An answer from an incarnation that does not hold the shard's state is not used: the
        shard is restored (its file reloaded, its unsaved changes replayed) and the call made
        again, or, for a change (``apply``, one per shard per call), its replayed result taken.
        A call that failed in an incarnation holding the state raises its error, naming the shard.
        """
        out, todo = [None] * len(tasks), list(range(len(tasks)))
        for _ in range(2 + 8 * len(self._shards)):
            if not todo:
                return out
            refs = [getattr(tasks[j][0].actor, tasks[j][1]).remote(*tasks[j][2]) for j in todo]
            retry = []
            for j, (token, ok, value) in zip(todo, self._get([tasks[j] for j in todo], refs)):
                shard, method = tasks[j][0], tasks[j][1]
                if (token is not None and token not in shard.good and token not in shard.stale and not shard.pending
                        and shard.path == shard.born):
                    shard.good.add(token)  # a restarted actor mapped the file that is the shard's state
                if token is not None and token in shard.good:
                    if not ok:
                        raise _shard_error(shard, value)
                    out[j] = value
                elif method == "apply":
                    out[j] = self._restore(shard)[-1]
                else:
                    if token is None or token not in shard.stale:
                        self._restore(shard)
                    retry.append(j)
                if token is not None and token not in shard.good:
                    shard.stale.add(token)
            todo = retry
        raise RuntimeError(f"shards {sorted({tasks[j][0].number for j in todo})} kept restarting; {REOPEN}")

    def _restore(self, shard: _Shard) -> list:
        """Reloads the shard's file into its actor and replays its unsaved changes; returns the
        result of each change."""
        logger.info("%s restarted: reloading its file and %d unsaved changes", shard.name(), len(shard.pending))
        task = (shard, "restore", (shard.path, shard.pending))
        token, ok, value = self._get([task], [shard.actor.restore.remote(shard.path, shard.pending)])[0]
        if token is None:
            raise RuntimeError(f"{shard.name()}: its actor did not come back; {REOPEN}")
        if not ok:
            raise _shard_error(shard, value)
        shard.good = {token}
        return value

    def _change(self, changes: dict) -> dict:
        """Applies ``{shard: op}``; returns ``{shard: result}``. The ops are kept (and replayed
        into a restarted actor) until the next save."""
        shards = list(changes)
        for shard in shards:
            shard.pending.append(changes[shard])
        try:
            results = self._call([(s, "apply", (changes[s],)) for s in shards])
        except Exception:
            # some shards may have taken the change: put every one back as it was before it
            for shard in shards:
                shard.pending.pop()
                self._restore(shard)
            raise
        return dict(zip(shards, results))

    def _put_chunks(self, batch: dict) -> list:
        """``batch`` (query arrays of one length: queries, query vectors) cut into chunks of
        ``batch_size`` queries, each put in the object store once for every shard to read."""
        n = len(batch["queries"])
        starts = range(0, n, self.batch_size) if n else [0]
        return [self._ray.put({key: value[i:i + self.batch_size] for key, value in batch.items()}) for i in starts]

    def _fan_out(self, method: str, chunks: list, *args) -> List[list]:
        """``method(chunk, *args)`` on every shard for each chunk; per chunk, the shards' values
        in shard order."""
        values = self._call([(s, method, (ref,) + args) for ref in chunks for s in self._shards])
        n = len(self._shards)
        return [values[c * n:(c + 1) * n] for c in range(len(chunks))]

    def describe(self) -> List[dict]:
        """Per shard, what its actor reports now: ``ntotal``, ``bytes``, ``path``, the Ray
        ``node`` and process ``pid`` it runs in."""
        return [dict(info, shard=s.number) for s, info in zip(self._shards, self._call(
            [(s, "info", ()) for s in self._shards]))]

    # -- properties ------------------------------------------------------------------------
    @property
    def num_shards(self) -> int:
        return len(self._shards)

    @property
    def ntotal(self) -> int:
        """Entries over all shards (codes, or features for CANN)."""
        return int(sum(s.count for s in self._shards))

    def __len__(self) -> int:
        return self.ntotal

    def shard_counts(self) -> List[int]:
        """Entries per shard."""
        return [int(s.count) for s in self._shards]

    def shard_paths(self) -> List[str]:
        """The file each shard serves (or last reloads)."""
        return [s.path for s in self._shards]

    def shard_actors(self) -> list:
        """The shards' Ray actor handles (to place or inspect them)."""
        return [s.actor for s in self._shards]

    def __repr__(self) -> str:
        return f"Sharded{self.KIND}({self.params}, ntotal={self.ntotal}, num_shards={self.num_shards})"

    # -- changes ---------------------------------------------------------------------------
    def _route(self, keys: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        """The shard of each sorted unique key: the shard holding it, else a new place."""
        where = np.full(len(keys), -1, np.int64)
        for s in self._shards:
            where[np.isin(keys, s.keys, assume_unique=True)] = s.number
        new = where < 0
        where[new] = place(keys[new], sizes[new], np.array(self.shard_counts()))
        return where

    def _add(self, keys: np.ndarray, build_args) -> None:
        """Adds entries whose keys are ``keys`` (one per entry): ``build_args(rows)`` the add's
        arguments for the entries ``rows``."""
        unique, inverse, sizes = np.unique(keys, return_inverse=True, return_counts=True)
        shard_of_entry = self._route(unique, sizes)[inverse.reshape(-1)]
        rows = {s: np.flatnonzero(shard_of_entry == s.number) for s in self._shards}
        rows = {s: r for s, r in rows.items() if len(r)}
        self._change({s: ("add", build_args(r)) for s, r in rows.items()})
        for s, r in rows.items():
            s.keys = np.union1d(s.keys, keys[r])
            s.count += len(r)

    def _remove(self, keys) -> int:
        """Removes the entries of ``keys`` from the shards holding them; returns how many."""
        keys = np.unique(as_ids(keys).reshape(-1))
        changes = {}
        for s in self._shards:
            mine = keys[np.isin(keys, s.keys, assume_unique=True)]
            if len(mine):
                changes[s] = ("remove", mine)
        removed = self._change(changes)
        for s, count in removed.items():
            s.keys = np.setdiff1d(s.keys, changes[s][1], assume_unique=True)
            s.count -= int(count)
        return int(sum(removed.values()))

    # -- saving ----------------------------------------------------------------------------
    def save(self, layout_path: PathLike) -> None:
        """Writes the shards and then the layout file ``layout_path`` (the commit point).

        A shard goes to a new file beside the layout, written by its actor (so the folder must
        be storage the actors' nodes share), unless it is unchanged and already one of this
        layout's files. Files of earlier saves of this layout are removed after the commit.
        Two saves of one layout take turns (a lock file beside it).
        """
        layout_path = Path(os.path.abspath(layout_path))
        folder = layout_path.parent
        folder.mkdir(parents=True, exist_ok=True)
        pattern = shard_file_pattern(layout_path)
        with FolderLock(folder, f".{layout_path.name}.lock", wait=True):
            tasks, targets = [], {}
            for s in self._shards:
                current = Path(s.path)
                if s.pending or current.parent != folder or not pattern.match(current.name):
                    targets[s] = os.fspath(folder / unique_name(f"{layout_path.stem}-{s.number}", ".pyloc"))
                    tasks.append((s, "save", (targets[s],)))
            for (s, path), size in zip(targets.items(), self._call(tasks)):
                s.path, s.pending, s.bytes = path, [], size
            entries = [ShardEntry(os.path.relpath(s.path, folder), s.bytes, s.count, s.keys) for s in self._shards]
            ShardLayout(self.KIND, self.params, entries, self.next_id).write(layout_path)
            remove_unreferenced(folder, pattern, keep=[Path(s.path).name for s in self._shards])


def _check_k(k) -> int:
    if int_scalar(k, "k") < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return int(k)


# -- the three kinds -------------------------------------------------------------------------
class _CodeShards(_ShardedIndex):
    """Ids of the code indexes: default ids continue after the largest id ever added, as in one index."""

    def _check_codes(self, codes, code_size: int, name: str = "codes") -> np.ndarray:
        """Checked here, before a change reaches some shards and not others (or a search all of them)."""
        codes = np.asarray(codes)
        if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] != code_size:
            raise ValueError(f"{name} must be uint8 (n, {code_size}): packed codes of this index's length, got "
                             f"{codes.dtype} {codes.shape}")
        return np.ascontiguousarray(codes)

    def _new_ids(self, n: int, ids) -> np.ndarray:
        if ids is None:
            return np.arange(self.next_id, self.next_id + n, dtype=np.int64)
        ids = as_ids(ids)
        if ids.shape != (n,):
            raise ValueError(f"ids must have shape ({n},), one per code, got {ids.shape}")
        if n and ids.min() < 0:
            raise ValueError(f"ids must be >= 0 (-1 marks empty result slots), got {ids.min()}")
        return ids

    def _add_codes(self, ids: np.ndarray, build_args) -> None:
        self._add(ids, build_args)
        if len(ids):
            self.next_id = max(self.next_id, int(ids.max()) + 1)

    def remove_ids(self, ids) -> int:
        """Removes every code whose id is in ``ids`` (from the shard holding it); returns how many."""
        return self._remove(ids)

    def _topk(self, chunks: list, k: int, kwargs: dict) -> Tuple[np.ndarray, np.ndarray]:
        parts = [merge_topk(values, k, self.LARGEST)[:2] for values in self._fan_out("search", chunks, k, kwargs)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


class ShardedBinaryIndex(_CodeShards):
    """:class:`pylocalize.BinaryIndex` split by id over Ray actors; exact Hamming kNN and range
    search with the results of one index (ties to the smaller id).

    Make one with :meth:`from_index` (from an index or its file) or :meth:`open` (a layout
    file); see :meth:`_ShardedIndex.open` for the options. ``add`` places new ids on the
    shards holding the fewest codes (an id already stored goes to its shard), ``remove_ids``
    routes by the layout's ids, :meth:`save` writes changed shards and the layout.
    """

    KIND = "BinaryIndex"
    nbits = property(lambda self: self.params["nbits"], doc="Code length in bits.")
    code_size = property(lambda self: self.params["nbits"] // 8, doc="Code length in bytes.")

    def add(self, codes: np.ndarray, ids: Optional[np.ndarray] = None) -> None:
        """Adds codes ``uint8 (n, nbits/8)`` with ``ids`` (default: after the largest id so far)."""
        codes = self._check_codes(codes, self.code_size)
        ids = self._new_ids(len(codes), ids)
        self._add_codes(ids, lambda rows: (codes[rows], ids[rows]))

    def search(self, queries: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """``(distances int32 (nq, k), ids int64 (nq, k))`` as :meth:`BinaryIndex.search`."""
        k = _check_k(k)
        return self._topk(self._put_chunks({"queries": self._check_codes(queries, self.code_size, "queries")}), k, {})

    def range_search(self, queries: np.ndarray, radius: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(lims, distances, ids)`` as :meth:`BinaryIndex.range_search`."""
        queries, radius = self._check_codes(queries, self.code_size, "queries"), int_scalar(radius, "radius")
        chunks = self._put_chunks({"queries": queries})
        merged = [merge_ranges(parts, len(parts[0][0]) - 1) for parts in self._fan_out("range_search", chunks, radius)]
        lims = np.concatenate([[0]] + [m[0][1:] for m in merged]).astype(np.int64)
        offsets = np.cumsum([0] + [m[0][-1] for m in merged[:-1]])
        lims[1:] += np.repeat(offsets, [len(m[0]) - 1 for m in merged])
        return lims, np.concatenate([m[1] for m in merged]), np.concatenate([m[2] for m in merged])


class ShardedMultiBitIndex(_CodeShards):
    """:class:`pylocalize.MultiBitIndex` split by id over Ray actors.

    SDC search, and SDC search re-ranked by exact inner product (``rerank``), give the results
    of one index: re-ranking runs in two rounds, first the ``max(rerank, k)`` best SDC
    candidates over all shards, then each shard re-ranks those of its own. Progressive search
    (``candidates``) is approximate, per shard. Changes and saves as :class:`ShardedBinaryIndex`.
    """

    KIND = "MultiBitIndex"
    LARGEST = True
    dim = property(lambda self: self.params["dim"], doc="Dimension of the encoded vectors.")
    bits_per_dim = property(lambda self: self.params["bits_per_dim"], doc="Bits per dimension.")
    code_size = property(lambda self: self.params["bits_per_dim"] * ((self.params["dim"] + 7) // 8),
                         doc="Bytes per code.")

    def _opened(self, infos: List[dict]) -> None:
        self.has_vectors = any(info["has_vectors"] for info in infos)

    def add(self, codes: np.ndarray, ids: Optional[np.ndarray] = None, vectors: Optional[np.ndarray] = None) -> None:
        """Adds codes (and their float vectors) as :meth:`MultiBitIndex.add`."""
        codes = self._check_codes(codes, self.code_size)
        ids = self._new_ids(len(codes), ids)
        if self.ntotal and (vectors is not None) != self.has_vectors:
            raise ValueError("every add of a multi-bit index must pass vectors or none must: this one "
                             f"{'keeps' if self.has_vectors else 'has no'} float vectors")
        if vectors is not None:
            vectors = np.ascontiguousarray(vectors)
            if vectors.dtype != np.float32 or vectors.shape != (len(codes), self.dim):
                raise ValueError(f"vectors must be float32 ({len(codes)}, {self.dim}), got {vectors.dtype} "
                                 f"{vectors.shape}")
        self._add_codes(ids, lambda rows: (codes[rows], ids[rows], None if vectors is None else vectors[rows]))
        self.has_vectors = vectors is not None

    def search(self, query_codes: np.ndarray, k: int, *, query_vectors: Optional[np.ndarray] = None,
               rerank: int = 0, candidates: int = 0) -> Tuple[np.ndarray, np.ndarray]:
        """``(scores float32 (nq, k), ids int64 (nq, k))`` as :meth:`MultiBitIndex.search`."""
        k, rerank, candidates = _check_k(k), int_scalar(rerank, "rerank"), int_scalar(candidates, "candidates")
        batch = {"queries": self._check_codes(query_codes, self.code_size, "query_codes")}
        if rerank > 0:
            if query_vectors is None:
                raise ValueError("rerank > 0 needs query_vectors (float32, one per query code)")
            batch["query_vectors"] = np.ascontiguousarray(query_vectors)
        chunks = self._put_chunks(batch)
        if rerank <= 0 or candidates > 0:
            return self._topk(chunks, k, dict(rerank=rerank, candidates=candidates))
        return self._search_reranked(chunks, k, max(rerank, k))

    def _search_reranked(self, chunks: list, k: int, pool: int) -> Tuple[np.ndarray, np.ndarray]:
        """Round 1: the ``pool`` best SDC candidates of each query over all shards; round 2:
        each shard re-ranks its share of them (its own best by SDC, as the pool is a prefix of
        every shard's order), and the re-ranked lists merge by inner product."""
        n = len(self._shards)
        tasks = []
        for ref, values in zip(chunks, self._fan_out("search", chunks, pool, {})):
            column = merge_topk(values, pool, largest=True)[2]
            shard = np.where(column >= 0, column // pool, -1)
            tasks += [(s, "rerank", (ref, (shard == s.number).sum(axis=1))) for s in self._shards]
        answers = self._call(tasks)
        parts = [merge_topk(answers[c * n:(c + 1) * n], k, largest=True)[:2] for c in range(len(chunks))]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


CANN_OPTIONS = ("method", "nprobe", "kernel", "p0", "p1", "sigma", "grid")


class ShardedCANNIndex(_ShardedIndex):
    """:class:`pylocalize.CANNIndex` split by image over Ray actors: all features of an image in
    one shard, so each image's score is computed as one index computes it. Method ``"exact"``
    gives the results of one index, ties included; ``"ivf"`` probes the lists the index was
    trained with (every shard keeps them) and ``"grid"`` hashes per shard: both approximate.

    ``method`` and ``nprobe`` may be changed between searches, as on :class:`CANNIndex`; the
    other search options (kernel...) are those stored in the shard files, or given to
    :meth:`open` / :meth:`from_index` as to :meth:`CANNIndex.load`.
    """

    KIND = "CANNIndex"
    LARGEST = True
    dim = property(lambda self: self.params["dim"], doc="Descriptor dimension.")

    def __init__(self, layout: ShardLayout, layout_path: Path, **kwargs):
        options = {key: kwargs.pop(key) for key in CANN_OPTIONS if key in kwargs}
        super().__init__(layout, layout_path, options=options, **kwargs)

    def _opened(self, infos: List[dict]) -> None:
        options = infos[0]["options"]
        self.method, self.nprobe = options["method"], options["nprobe"]
        self.dtype = next((info["dtype"] for info in infos if info["dtype"] is not None), None)

    @property
    def num_images(self) -> int:
        return int(sum(len(s.keys) for s in self._shards))

    def image_ids(self) -> np.ndarray:
        """The distinct database image ids, ascending."""
        return np.sort(np.concatenate([s.keys for s in self._shards]))

    def add(self, descriptors: np.ndarray, image_ids) -> None:
        """Adds features as :meth:`CANNIndex.add`; an image already stored gets them in its shard."""
        descriptors = np.ascontiguousarray(descriptors)
        if descriptors.ndim != 2 or descriptors.shape[1] != self.dim or descriptors.dtype not in (np.float32, np.uint8):
            raise ValueError(f"descriptors must be float32 or uint8 (n, {self.dim}), got {descriptors.dtype} "
                             f"{descriptors.shape}")
        if self.dtype is not None and descriptors.dtype != self.dtype:
            raise ValueError(f"descriptors must be {self.dtype}, the dtype of the stored features")
        if descriptors.dtype == np.float32 and not np.isfinite(descriptors).all():
            raise ValueError("descriptors must be finite (no NaN or Inf)")
        if np.isscalar(image_ids):
            image_ids = np.full(len(descriptors), int_scalar(image_ids, "image_ids"), np.int64)
        image_ids = as_ids(image_ids, "image_ids")
        if image_ids.shape != (len(descriptors),) or (len(image_ids) and image_ids.min() < 0):
            raise ValueError(f"image_ids must be ints >= 0 of shape ({len(descriptors)},), got {image_ids.shape}")
        self._add(image_ids, lambda rows: (descriptors[rows], image_ids[rows]))
        self.dtype = str(descriptors.dtype) if len(descriptors) else self.dtype

    def remove_images(self, image_ids) -> int:
        """Removes every feature of these images; returns the number of features removed."""
        return self._remove(image_ids)

    def search(self, query_descriptors: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """``(scores float32 (k,), image_ids int64 (k,))`` as :meth:`CANNIndex.search`."""
        scores, ids = self.search_batch([query_descriptors], k)
        return scores[0], ids[0]

    def search_batch(self, query_sets: Sequence[np.ndarray], k: int) -> Tuple[np.ndarray, np.ndarray]:
        """:meth:`search` for many query images: ``(scores (n, k), image_ids (n, k))``."""
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        kwargs = {"method": self.method, "nprobe": int_scalar(self.nprobe, "nprobe")}
        k = _check_k(k)
        chunks = self._put_chunks({"queries": list(query_sets)})
        parts = [merge_topk(values, k, True)[:2] for values in self._fan_out("search", chunks, k, kwargs)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


SHARDED_CLASSES = {cls.KIND: cls for cls in (ShardedBinaryIndex, ShardedMultiBitIndex, ShardedCANNIndex)}


def open_sharded(layout_path: PathLike, **kwargs) -> _ShardedIndex:
    """The sharded index of the kind its layout file records (:meth:`_ShardedIndex.open`)."""
    require_ray()
    layout_path = Path(os.path.abspath(layout_path))
    layout = ShardLayout.read(layout_path)
    return SHARDED_CLASSES[layout.kind](layout, layout_path, **kwargs)


# -- writing shards ---------------------------------------------------------------------------
def _kind_of(source) -> str:
    """The kind of an index object or of an index file (from its container tag)."""
    for kind, cls in INDEX_CLASSES.items():
        if isinstance(source, cls):
            return kind
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(f"shard a BinaryIndex, MultiBitIndex or CANNIndex, or the path of one's file; got "
                         f"{type(source).__name__}")
    try:
        tag = _core.read_container(os.fspath(source), mmap=True)[0]
    except FormatError as error:
        raise FormatError(f"{source}: not an index file ({error}); give a BinaryIndex, MultiBitIndex or CANNIndex "
                          "file (.pyloc)") from None
    if tag not in INDEX_CLASSES:
        raise FormatError(f"{source} holds a {tag}; a BinaryIndex, MultiBitIndex or CANNIndex file can be sharded")
    return tag


def _source_keys(kind: str, index, data) -> Tuple[np.ndarray, np.ndarray, Optional[int], dict]:
    """``(keys, sizes, next_id, params)`` of ``index`` (whose file or bytes are ``data``): its
    distinct ids (image ids) with the entries of each, its next default id, and its sizes."""
    if kind == "CANNIndex":
        # shards are balanced by features (what a shard's memory and search time grow with),
        # an image never split
        return index.image_ids(), index.image_feature_counts(), None, {"dim": index.dim}
    keys, sizes = np.unique(index.ids(), return_counts=True)
    meta = _core.read_container(data, mmap=True)[2]
    params = {"nbits": index.nbits} if kind == "BinaryIndex" else {"dim": index.dim, "bits_per_dim": index.bits_per_dim}
    return keys, sizes, int(meta["next_id"]), params


def shard_index(source, num_shards: int, layout_path: PathLike, *, parallel: bool = False,
                kind: Optional[str] = None) -> ShardLayout:
    """Splits an index into ``num_shards`` shard files and a layout file ``layout_path``.

    Codes are split by id into consecutive id ranges, CANN features by image (consecutive image
    ids, about as many features per shard, an image never split); each shard file is a copy
    of the index without the other shards' entries, so it keeps the index's options (and a
    CANN index's trained lists).

    Parameters
    ----------
    source : BinaryIndex, MultiBitIndex, CANNIndex or path
        The index, or its file (memory-mapped, never changed).
    num_shards : int
        At least 1.
    layout_path : path
        The layout file to write; the shard files go beside it (``<stem>-<shard>-<hex>.pyloc``).
    parallel : bool
        Write the shards as Ray tasks, in parallel on the cluster (the folder must then be
        storage the cluster's nodes share); else one after another in this process.
    kind : str, optional
        The kind the caller expects; another is a ``ValueError``.
    """
    if int_scalar(num_shards, "num_shards") < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    found = _kind_of(source)
    if kind is not None and found != kind:
        raise ValueError(f"the source is a {found}; shard it with Sharded{found}")
    path_given = isinstance(source, (str, os.PathLike))
    data = os.path.abspath(source) if path_given else source.serialize()
    keys, sizes, next_id, params = _source_keys(found, load_index(found, data) if path_given else source, data)
    parts = partition(keys, sizes, num_shards)
    layout_path = Path(os.path.abspath(layout_path))
    layout_path.parent.mkdir(parents=True, exist_ok=True)
    names = [unique_name(f"{layout_path.stem}-{s}", ".pyloc") for s in range(num_shards)]
    jobs = [(found, data, np.setdiff1d(keys, parts[s], assume_unique=True), os.fspath(layout_path.parent / names[s]))
            for s in range(num_shards)]
    written = _write_shards(jobs, parallel)
    entries = [ShardEntry(name, size, count, part) for name, (count, size), part in zip(names, written, parts)]
    layout = ShardLayout(found, params, entries, next_id)
    with FolderLock(layout_path.parent, f".{layout_path.name}.lock", wait=True):
        layout.write(layout_path)
        remove_unreferenced(layout_path.parent, shard_file_pattern(layout_path), keep=names)
    return layout


def _write_shards(jobs: list, parallel: bool) -> list:
    """Runs :func:`write_shard` for each job, here or as Ray tasks."""
    if not parallel:
        return [write_shard(*job) for job in jobs]
    ray = ensure_ray()
    task = ray.remote(write_shard)
    source = ray.put(jobs[0][1])  # the source's path or bytes, shared by every task
    return ray.get([task.remote(kind, source, drop, path) for kind, _, drop, path in jobs])
