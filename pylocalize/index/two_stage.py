"""Two-stage search: multi-bit codes in memory find candidates, float vectors on disk
re-rank them (the bi-granular layout: compact codes for recall, full vectors for precision).

Memory holds only the codes (``bits_per_dim / 32`` of the float size); the float vectors
live in a file that is appended to on :meth:`TwoStageIndex.add` and memory-mapped for
re-ranking, so only the candidates' rows are read.

Files of an index folder: the manifest ``two_stage.json`` (the commit point of a save,
written last, atomically) names the codes file ``codes-<hex>.pyloc``, the binarizer file
``binarizer-<hex>.pt`` and the vectors file ``vectors-<hex>.f32``, and records how many
vectors were committed and the CRC-32 of their bytes. A crash at any moment leaves the last
committed index loadable: bytes appended after the last save are ignored, a damaged vector
is refused. Folders saved before this layout (``vectors.f32``, ``codes.pyloc``,
``binarizer.pt``, no checksum) still load.
"""

from __future__ import annotations

import json
import os
import re
import threading
import zlib
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from pylocalize._core import FormatError
from pylocalize._folders import FolderLock, remove_unreferenced, unique_name
from pylocalize.codes import binarize
from pylocalize.codes.learned import RecurrentBinarizer
from pylocalize.containers import write_bytes_atomic
from pylocalize.index.binary import MultiBitIndex

INFO_FILE = "two_stage.json"
LOCK_FILE = "two_stage.lock"
LAYOUT = 2  # manifest layout (with its own CRC-32); 1 (no "layout" key): fixed file names, no checksum
# Layout-1 file names, still read (and a legacy vectors file is appended to in place)
VECTORS_FILE = "vectors.f32"
CODES_FILE = "codes.pyloc"
BINARIZER_FILE = "binarizer.pt"
# The names a save writes: strict patterns, so that a manifest cannot name a file elsewhere
# (a layout-1 folder's vectors.f32 keeps being appended to by the saves of its later layout)
_NAMES = {"vectors_file": re.compile(r"^(vectors-[0-9a-f]{16}|vectors)\.f32$"),
          "codes_file": re.compile(r"^codes-[0-9a-f]{16}\.pyloc$"),
          "binarizer_file": re.compile(r"^binarizer-[0-9a-f]{16}\.pt$")}
_ANY_FILE = re.compile(r"^(vectors-[0-9a-f]{16}\.f32|codes-[0-9a-f]{16}\.pyloc|binarizer-[0-9a-f]{16}\.pt)$")
_LEGACY = (VECTORS_FILE, CODES_FILE, BINARIZER_FILE, INFO_FILE + ".tmp")
_REBUILD = "build the index again (TwoStageIndex(...).add(vectors); save())"


def _manifest_crc(info: dict) -> int:
    """CRC-32 of a manifest's contents (every key but the checksum, in a canonical order)."""
    body = {k: v for k, v in info.items() if k != "manifest_crc32"}
    return zlib.crc32(json.dumps(body, sort_keys=True).encode("utf-8"))


def _crc32_of_file(path: Path, nbytes: int) -> int:
    """CRC-32 of the first ``nbytes`` of ``path``, read in pieces."""
    crc = 0
    with open(path, "rb") as f:
        while nbytes > 0:
            chunk = f.read(min(nbytes, 1 << 24))
            if not chunk:
                break
            crc = zlib.crc32(chunk, crc)
            nbytes -= len(chunk)
    return crc


_COPY_ROWS = 1 << 16  # vectors per chunk when saving a copy to another folder


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return a.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _read_manifest(path: Path):
    """``(raw bytes, manifest, layout)`` of the folder's manifest, its own CRC checked."""
    try:
        raw = (path / INFO_FILE).read_bytes()
        info = json.loads(raw)
        if not isinstance(info, dict):
            raise ValueError("the manifest is not a JSON object")
    except (FileNotFoundError, ValueError) as error:
        raise FormatError(f"{path}: not a saved TwoStageIndex ({error})") from None
    layout = info.get("layout", 1)
    if layout not in (1, LAYOUT):
        raise FormatError(f"{path}: a TwoStageIndex of layout {layout}; this pylocalize reads layouts 1 and "
                          f"{LAYOUT}: upgrade pylocalize or {_REBUILD}")
    if layout == LAYOUT and info.get("manifest_crc32") != _manifest_crc(info):
        # a flipped digit in the manifest (a count, a centre value, "candidates") would
        # otherwise load as another index
        raise FormatError(f"{path / INFO_FILE}: the manifest's CRC-32 does not match its contents; the file is "
                          f"damaged: {_REBUILD}")
    return raw, info, layout


def _manifest_files(info: dict, layout: int) -> dict:
    """The files a manifest names, each checked to be a name a save writes (layout 1 had
    fixed names)."""
    if layout == 1:
        return {"vectors_file": VECTORS_FILE, "codes_file": CODES_FILE,
                "binarizer_file": BINARIZER_FILE if info["learned"] else None}
    files = {key: info[key] for key in _NAMES}
    for key, pattern in _NAMES.items():
        name = files[key]
        if (name is not None or key != "binarizer_file" or info["learned"]) and \
                not (isinstance(name, str) and pattern.match(name)):
            raise ValueError(f"{key} {name!r} is not a name a save writes")
    return files


class _ReadWriteLock:
    """Many searches at once, or one add/save alone (searches must not read the codes while
    ``add`` grows them)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False

    def read(self):
        return _Held(self, False)

    def write(self):
        return _Held(self, True)


class _Held:
    def __init__(self, lock: _ReadWriteLock, write: bool):
        self.lock, self.write = lock, write

    def __enter__(self):
        cond = self.lock._cond
        with cond:
            if self.write:
                cond.wait_for(lambda: not self.lock._writing and self.lock._readers == 0)
                self.lock._writing = True
            else:
                cond.wait_for(lambda: not self.lock._writing)
                self.lock._readers += 1

    def __exit__(self, *exc):
        cond = self.lock._cond
        with cond:
            if self.write:
                self.lock._writing = False
            else:
                self.lock._readers -= 1
            cond.notify_all()


class TwoStageIndex:
    """SDC candidates from :class:`MultiBitIndex`, exact inner-product re-ranking against
    memory-mapped float vectors.

    Parameters
    ----------
    path : directory
        Where the float vectors (and, on :meth:`save`, the codes) are kept.
    dim : int
        Float vector dimension.
    bits_per_dim : int
        Code planes (1 to 4).
    binarizer : RecurrentBinarizer, optional
        Learned codes; default the training-free :func:`pylocalize.binarize`.
    candidates : int
        SDC candidates re-ranked per query (at least ``k``).
    center : float32 (dim,), optional
        Subtracted before training-free binarization. Sign codes need data centred on
        zero: pass the data's mean for non-negative descriptors such as RootSIFT (whose
        raw signs are all positive). A learned binarizer centres by itself.

    Concurrency
    -----------
    - **One writer per folder.** A new index, or a loaded one on its first :meth:`add` or
      :meth:`save`, takes an exclusive ``flock`` on ``two_stage.lock`` in the folder and
      holds it while it has changes to commit: until :meth:`save` commits them (or
      :meth:`close`, or the object is collected, or the process ends). A second writer on
      the folder meanwhile, in another process or another object of this one, gets a
      ``RuntimeError`` naming the folder. An index whose folder another writer has saved to
      since it loaded or saved is refused as a writer too (load it again).
    - **Readers take no lock.** A loaded index that only searches keeps valid mappings
      whatever a writer does: no file that may be mapped is ever truncated or rewritten (a
      new index writes a new vectors file; a save writes new codes and binarizer files and
      appends vectors past the committed ones), and files a commit no longer names are
      unlinked, which leaves other processes' mappings intact. A reader sees the index as
      it was when loaded; load again to see later saves.
    - **Threads.** :meth:`search` may run in many threads at once. :meth:`add` and
      :meth:`save` may run in one thread while others search: they wait for the running
      searches and hold new ones back until done (a read/write lock in the object).
    """

    def __init__(self, path, dim: int, bits_per_dim: int = 2, binarizer=None, candidates: int = 100, *,
                 center: Optional[np.ndarray] = None, _existing: bool = False):
        self.path = Path(path)
        if binarizer is not None and (binarizer.in_dim != dim or binarizer.bits_per_dim != bits_per_dim):
            raise ValueError(f"the binarizer maps {binarizer.in_dim} dims at {binarizer.bits_per_dim} bits, "
                             f"the index expects {dim} at {bits_per_dim}")
        self.dim, self.bits_per_dim, self.binarizer = int(dim), int(bits_per_dim), binarizer
        self.candidates = int(candidates)
        self.center = None
        if center is not None:
            if binarizer is not None:
                raise ValueError("center applies to training-free codes; a learned binarizer centres by itself")
            center = np.asarray(center, dtype=np.float32)
            if center.shape != (self.dim,) or not np.isfinite(center).all():
                raise ValueError(f"center must be {self.dim} finite values (e.g. the data's mean), "
                                 f"got shape {center.shape}")
            self.center = center
        code_dim = binarizer.out_dim if binarizer is not None else self.dim
        self.codes = MultiBitIndex(code_dim, self.bits_per_dim)
        self._rw = _ReadWriteLock()
        self._writer = None  # the folder lock, while this object is the folder's writer
        self._map = None
        self._committed: Optional[dict] = None  # the manifest this object loaded or last saved
        self._binarizer_file: Optional[str] = None
        self._crc = 0  # CRC-32 of the vectors added so far, kept up to date by add
        if not _existing:
            # A new index starts empty, whatever the folder held: its vectors go to a new file,
            # and the folder's old index stays loadable (its files untouched, so that readers
            # mapping them keep working) until this one's first save commits.
            self.path.mkdir(parents=True, exist_ok=True)
            self._become_writer()
            self._vectors_file = unique_name("vectors", ".f32")
            with open(self.path / self._vectors_file, "xb"):
                pass
        else:
            self._vectors_file = VECTORS_FILE

    @property
    def _vectors_path(self) -> Path:
        return self.path / self._vectors_file

    def __len__(self) -> int:
        return len(self.codes)

    def __repr__(self) -> str:
        kind = "learned" if self.binarizer is not None else "training-free"
        return f"TwoStageIndex({len(self)} vectors, dim={self.dim}, {self.bits_per_dim} bits/dim {kind}, {self.path})"

    def encode(self, x: np.ndarray) -> np.ndarray:
        if self.binarizer is not None:
            return self.binarizer.encode(x)
        return binarize(x - self.center if self.center is not None else x, self.bits_per_dim)

    def _check(self, x) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"vectors must be (n, {self.dim}), got shape {x.shape}")
        if x.dtype.kind != "f" or not np.isfinite(x).all():
            raise ValueError("vectors must be finite floating-point values")
        return np.ascontiguousarray(x, dtype=np.float32)

    # ------------------------------------------------------------------ writer

    def _become_writer(self) -> None:
        """Takes the folder's writer lock (once); refuses a loaded index whose folder
        another writer has committed to since it was loaded."""
        if self._writer is not None:
            return
        lock = FolderLock(self.path, LOCK_FILE, wait=False, what="a TwoStageIndex",
                          fix="close the other index (TwoStageIndex.close()) before writing to this folder")
        if self._committed is not None:
            try:
                current = json.loads((self.path / INFO_FILE).read_bytes())
            except (OSError, ValueError):
                current = None
            if current != self._committed:
                lock.release()
                raise RuntimeError(f"{self.path}: the index was saved by another writer after this one was loaded; "
                                   "load it again (TwoStageIndex.load) to add to it")
        self._writer = lock

    def close(self) -> None:
        """Gives up the folder's writer lock (the index stays usable; a later add or save
        takes it again)."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> "TwoStageIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def add(self, x: np.ndarray) -> None:
        """Encodes and adds vectors; their float values are appended to the vectors file
        (kept only once :meth:`save` commits them)."""
        x = self._check(x)
        codes = self.encode(x)
        data = x.tobytes()
        with self._rw.write():
            self._become_writer()
            # write at the end of the vectors held, not at the end of the file: bytes past it
            # (a tail a crashed writer appended without committing) are overwritten
            with open(self._vectors_path, "r+b") as f:
                f.seek(len(self) * self.dim * 4)
                f.write(data)
            self.codes.add(codes)
            self._crc = zlib.crc32(data, self._crc)
            self._map = None

    def save(self, path=None) -> None:
        """Commits the index: new codes (and binarizer) files, the vectors file synced to
        disk, then the manifest naming them (atomically, last); then removes the files the
        manifest no longer names.

        With ``path`` another folder, writes there a complete copy of the index as it is
        now (its added vectors included) and leaves this index and its folder as they are;
        the index stays bound to its own folder.
        """
        if path is not None and not _same_folder(Path(path), self.path):
            self._save_copy(Path(path))
            return
        with self._rw.write():
            self._become_writer()
            codes_file = unique_name("codes", ".pyloc")
            self.codes.save(self.path / codes_file)
            if self.binarizer is not None and self._binarizer_file is None:
                self._binarizer_file = unique_name("binarizer", ".pt")
                self.binarizer.save(self.path / self._binarizer_file)
            fd = os.open(self._vectors_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)  # the committed vectors must be on disk before the manifest is
            finally:
                os.close(fd)
            info = {"layout": LAYOUT, "dim": self.dim, "bits_per_dim": self.bits_per_dim,
                    "candidates": self.candidates, "learned": self.binarizer is not None, "count": len(self),
                    "center": None if self.center is None else self.center.tolist(),
                    "vectors_file": self._vectors_file, "vectors_crc32": self._crc, "codes_file": codes_file,
                    "binarizer_file": self._binarizer_file}
            info["manifest_crc32"] = _manifest_crc(info)
            data = json.dumps(info).encode("utf-8")
            write_bytes_atomic(self.path / INFO_FILE, data)  # the commit
            self._committed = json.loads(data)
            keep = [codes_file, self._vectors_file] + ([self._binarizer_file] if self._binarizer_file else [])
            remove_unreferenced(self.path, _ANY_FILE, keep=keep, legacy=_LEGACY)
            # Nothing left to commit: let another writer in. This object's next change takes
            # the lock again and is refused if someone else has committed meanwhile.
            self.close()

    def _save_copy(self, target: Path) -> None:
        with self._rw.read():  # searches go on; an add waits until the copy is taken
            vectors = self.vectors()
            copy = TwoStageIndex(target, self.dim, self.bits_per_dim, self.binarizer, self.candidates,
                                 center=self.center)
            try:
                # the copy encodes the vectors again: the same encoder gives the same codes
                for start in range(0, len(vectors), _COPY_ROWS):
                    copy.add(np.asarray(vectors[start:start + _COPY_ROWS]))
                copy.save()
            finally:
                copy.close()

    # ------------------------------------------------------------------ reading

    def vectors(self) -> np.ndarray:
        """The float vectors, memory-mapped (read-only)."""
        vectors = self._map
        if vectors is None:
            n = len(self)
            expected = n * self.dim * 4
            size = self._vectors_path.stat().st_size
            if size < expected:
                raise FormatError(f"{self._vectors_path}: {size} bytes, expected {expected} for {n} vectors of "
                                  f"{self.dim} float32; the file is truncated or not this index's")
            # only the vectors held are mapped: bytes appended past them are not this index's yet
            vectors = np.memmap(self._vectors_path, np.float32, "r", shape=(n, self.dim)) if n else \
                np.zeros((0, self.dim), np.float32)
            self._map = vectors
        return vectors

    @property
    def memory_bytes(self) -> int:
        """Bytes of codes held in memory (the vectors stay on disk)."""
        return len(self) * (self.bits_per_dim * ((self.codes.dim + 7) // 8))

    def search(self, x: np.ndarray, k: int, candidates: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """The ``k`` largest inner products: ``(scores float32 (nq, k), ids int64 (nq, k))``,
        ``-1`` ids where fewer than ``k`` vectors exist."""
        x = self._check(x)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        c = max(int(candidates or self.candidates), k)
        query_codes = self.encode(x)
        with self._rw.read():
            _, cand = self.codes.search(query_codes, c)
            vectors = self.vectors()
            scores = np.full((len(x), k), -np.inf, np.float32)
            ids = np.full((len(x), k), -1, np.int64)
            for i, row in enumerate(cand):
                row = row[row >= 0]
                if len(row) == 0:
                    continue
                order = np.sort(row)  # read rows in file order
                exact = np.asarray(vectors[order]) @ x[i]
                best = np.lexsort((order, -exact))[:k]  # score descending, smaller id on ties
                scores[i, :len(best)] = exact[best]
                ids[i, :len(best)] = order[best]
        return scores, ids

    @classmethod
    def load(cls, path) -> "TwoStageIndex":
        """The index last committed by :meth:`save` in folder ``path``, as a reader (no lock
        until its first add or save).

        Raises
        ------
        pylocalize.FormatError
            The folder holds no saved index, its files disagree, or a file is damaged
            (the vectors' CRC-32 does not match the one recorded).
        FileNotFoundError
            No folder at ``path``.
        """
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such folder (a TwoStageIndex is a folder)")
        raw, info, layout = _read_manifest(path)
        try:
            files = _manifest_files(info, layout)
            binarizer = None
            if info["learned"]:
                binarizer = RecurrentBinarizer.load(path / files["binarizer_file"])
            center = info.get("center")
            index = cls(path, int(info["dim"]), int(info["bits_per_dim"]), binarizer, int(info["candidates"]),
                        center=None if center is None else np.asarray(center, np.float32), _existing=True)
            index._vectors_file = files["vectors_file"]
            index._binarizer_file = files["binarizer_file"] if layout == LAYOUT else None
            index.codes = MultiBitIndex.load(path / files["codes_file"], mmap=True)
            count = int(info["count"])
        except FormatError:
            raise
        except FileNotFoundError as error:
            raise FormatError(f"{path}: a file of the saved TwoStageIndex is missing ({error}); {_REBUILD}") from None
        except (KeyError, TypeError, ValueError) as error:
            raise FormatError(f"{path}: not a valid TwoStageIndex manifest ({error})") from None
        if len(index) != count:
            raise FormatError(f"{path}: {len(index)} codes but {count} recorded; the files disagree")
        if (index.codes.dim, index.codes.bits_per_dim) != ((binarizer.out_dim if binarizer else index.dim),
                                                          index.bits_per_dim):
            raise FormatError(f"{path}: the codes file does not match the manifest's dimensions")
        if not index._vectors_path.is_file():
            raise FormatError(f"{index._vectors_path}: the vectors file is missing; {_REBUILD}")
        index.vectors()  # checks the vectors file's size now rather than at the first search
        index._crc = _crc32_of_file(index._vectors_path, count * index.dim * 4)
        if layout == LAYOUT and index._crc != info.get("vectors_crc32"):
            raise FormatError(f"{index._vectors_path}: the vectors' CRC-32 does not match the one recorded at save; "
                              f"the file is damaged: {_REBUILD}")
        index._committed = json.loads(raw)
        return index
