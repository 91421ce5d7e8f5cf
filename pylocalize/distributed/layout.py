"""The shard layout file: which file holds which ids, and where new ids go.

A sharded index is a set of index files (one per shard) and one small JSON *layout file*
naming them. The layout file is the commit point of a save, as ``map.pyloc`` is for a map
(:mod:`pylocalize._folders`): the shard files are written first under new unique names, then
the layout file, atomically; files the layout no longer names are removed afterwards. Shard
file names are relative to the layout file's folder, so the folder can move (or be mounted
elsewhere on every node of a cluster).

The layout records for each shard its file, its size in bytes, the number of entries it holds
(codes, or features for CANN) and its *keys* -- ids for the code indexes, image ids for CANN --
as runs ``[first, last]`` of consecutive integers: one run per shard for consecutive ids.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np

from pylocalize._core import FormatError
from pylocalize.containers import write_bytes_atomic

FORMAT = "pylocalize.shards"
VERSION = 1
KINDS = ("BinaryIndex", "MultiBitIndex", "CANNIndex")
# what each kind's ``params`` hold (the constructor's sizes), checked against every shard
PARAMS = {"BinaryIndex": ("nbits",), "MultiBitIndex": ("dim", "bits_per_dim"), "CANNIndex": ("dim",)}
REBUILD = "shard the index again (ShardedXIndex.from_index or `pylocalize index shard`)"


def shard_file_pattern(layout_path) -> "re.Pattern[str]":
    """Names of the shard files a save of ``layout_path`` writes: ``<stem>-<shard>-<16 hex>.pyloc``."""
    return re.compile(rf"^{re.escape(Path(layout_path).stem)}-\d+-[0-9a-f]{{16}}\.pyloc$")


def to_runs(keys: np.ndarray) -> List[List[int]]:
    """Sorted unique ``keys`` as runs ``[first, last]`` of consecutive integers."""
    keys = np.asarray(keys, np.int64)
    if len(keys) == 0:
        return []
    breaks = np.flatnonzero(np.diff(keys) != 1)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [len(keys) - 1]])
    return [[int(keys[s]), int(keys[e])] for s, e in zip(starts, ends)]


def from_runs(runs) -> np.ndarray:
    """The sorted keys of :func:`to_runs` output."""
    if not runs:
        return np.zeros(0, np.int64)
    return np.concatenate([np.arange(first, last + 1, dtype=np.int64) for first, last in runs])


@dataclass
class ShardEntry:
    """One shard: its file (relative to the layout's folder), size, entry count and keys."""

    file: str
    bytes: int
    count: int
    keys: np.ndarray = field(repr=False)


@dataclass
class ShardLayout:
    """What a layout file holds.

    Attributes
    ----------
    kind : str
        ``"BinaryIndex"``, ``"MultiBitIndex"`` or ``"CANNIndex"``.
    params : dict
        The index's sizes (``nbits``; ``dim`` and ``bits_per_dim``; ``dim``).
    shards : list of ShardEntry
    next_id : int or None
        The code indexes' next default id (one more than the largest id ever added), as one
        local index would have it; None for CANN.
    """

    kind: str
    params: dict
    shards: List[ShardEntry]
    next_id: Optional[int] = None

    def to_json(self) -> str:
        shards = [{"file": s.file, "bytes": int(s.bytes), "count": int(s.count), "keys": to_runs(s.keys)}
                  for s in self.shards]
        doc = {"format": FORMAT, "version": VERSION, "kind": self.kind, "params": self.params,
               "next_id": self.next_id, "shards": shards}
        return json.dumps(doc, indent=1)

    def write(self, path) -> None:
        """Writes the layout to ``path`` all-or-nothing (the commit point of a save)."""
        write_bytes_atomic(path, self.to_json().encode("utf-8"))

    @classmethod
    def read(cls, path) -> "ShardLayout":
        """Reads a layout file; a file that is not one is a :class:`pylocalize.FormatError`."""
        path = Path(path)
        if path.is_dir():
            raise IsADirectoryError(f"{path}: a folder; give the layout file (.json) a sharded index was saved to")
        with open(path, "rb") as f:  # FileNotFoundError names the path
            data = f.read()
        try:
            return cls._parse(json.loads(data.decode("utf-8")))
        except FormatError as error:
            raise FormatError(f"{path}: {error}") from None
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise FormatError(f"{path}: not a shard layout file ({type(error).__name__}: {error}); {REBUILD}") from None

    @classmethod
    def _parse(cls, doc: dict) -> "ShardLayout":
        if doc.get("format") != FORMAT:
            raise FormatError(f"not a shard layout file (format {doc.get('format')!r}); {REBUILD}")
        if doc["version"] != VERSION:
            raise FormatError(f"shard layout version {doc['version']}; this pylocalize reads version {VERSION}: "
                              "update pylocalize or " + REBUILD)
        kind, params = doc["kind"], doc["params"]
        if kind not in KINDS or sorted(params) != sorted(PARAMS[kind]) or not all(
                _is_count(v) and v > 0 for v in params.values()):
            raise FormatError(f"kind {kind!r} with params {params!r}: not an index this pylocalize shards")
        next_id = doc["next_id"]
        if (next_id is None) != (kind == "CANNIndex") or (next_id is not None and not _is_count(next_id)):
            raise FormatError(f"next_id {next_id!r}: not a default id for a {kind}")
        shards = [_parse_shard(i, s) for i, s in enumerate(doc["shards"])]
        if not shards:
            raise FormatError("no shards")
        return cls(kind, dict(params), shards, next_id)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _parse_shard(i: int, s: dict) -> ShardEntry:
    file, runs = s["file"], s["keys"]
    if not isinstance(file, str) or not file or "\0" in file:
        raise FormatError(f"shard {i}: file {file!r} is not a file name")
    if not (_is_count(s["bytes"]) and _is_count(s["count"])):
        raise FormatError(f"shard {i}: bytes {s['bytes']!r} and count {s['count']!r} must be counts")
    if not all(isinstance(r, list) and len(r) == 2 and all(_is_count(v) for v in r) and r[0] <= r[1] for r in runs):
        raise FormatError(f"shard {i}: keys must be runs [first, last] of ids >= 0")
    keys = from_runs(runs)
    if len(keys) > 1 and np.any(np.diff(keys) <= 0):
        raise FormatError(f"shard {i}: key runs overlap or are out of order")
    return ShardEntry(file, s["bytes"], s["count"], keys)


def resolve(layout_path, file: str) -> Path:
    """The path of shard ``file`` named by the layout at ``layout_path``."""
    return Path(os.path.abspath(Path(layout_path).parent / file))


# -- placement ------------------------------------------------------------------------------
def quotas(counts: np.ndarray, m: int) -> np.ndarray:
    """How many of ``m`` new entries each shard takes so that the shards holding the fewest
    entries are filled up first, as evenly as integers allow (extras to the lower shards)."""
    counts = np.asarray(counts, np.int64)
    order = np.argsort(counts, kind="stable")
    c = counts[order]
    for j in range(len(c), 0, -1):  # the most shards that can be levelled with m entries
        level, extra = divmod(int(c[:j].sum()) + m, j)
        if level >= c[j - 1]:
            break
    q = np.zeros(len(c), np.int64)
    q[:j] = level - c[:j]
    q[:extra] += 1  # the extras to the levelled shards that held the fewest (then the lower index)
    out = np.zeros_like(q)
    out[order] = q
    return out


def place(keys: np.ndarray, sizes: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The shard of each new key: ``keys`` sorted, ``sizes`` the entries each brings (codes of
    an id, features of an image), ``counts`` what the shards hold now.

    Keys go to shards in consecutive blocks (so consecutive ids stay one run), each shard
    taking about its :func:`quotas` share; a key is never split between shards.
    """
    sizes = np.asarray(sizes, np.int64)
    if len(keys) == 0:
        return np.zeros(0, np.int64)
    q = quotas(counts, int(sizes.sum()))
    active = np.flatnonzero(q > 0)
    if len(active) == 0:  # keys that bring no entries
        return np.full(len(keys), int(np.argmin(counts)), np.int64)
    bounds = np.cumsum(q[active])
    start = np.cumsum(sizes) - sizes  # entries before each key
    return active[np.minimum(np.searchsorted(bounds, start, side="right"), len(active) - 1)]


def partition(keys: np.ndarray, sizes: np.ndarray, num_shards: int) -> List[np.ndarray]:
    """Sorted unique ``keys`` split into ``num_shards`` consecutive blocks of about equal size."""
    shard = place(keys, sizes, np.zeros(num_shards, np.int64))
    return [keys[shard == s] for s in range(num_shards)]


__all__ = ["FORMAT", "KINDS", "ShardEntry", "ShardLayout", "from_runs", "partition", "place", "quotas", "resolve",
           "shard_file_pattern", "to_runs"]
