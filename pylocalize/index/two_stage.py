"""Two-stage search: multi-bit codes in memory find candidates, float vectors on disk
re-rank them (the bi-granular layout: compact codes for recall, full vectors for precision).

Memory holds only the codes (``bits_per_dim / 32`` of the float size); the float vectors
live in a file that is appended to on :meth:`TwoStageIndex.add` and memory-mapped for
re-ranking, so only the candidates' rows are read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from pylocalize.codes import binarize
from pylocalize.index.binary import MultiBitIndex

VECTORS_FILE = "vectors.f32"
CODES_FILE = "codes.pyloc"
INFO_FILE = "two_stage.json"
BINARIZER_FILE = "binarizer.pt"


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
    """

    def __init__(self, path, dim: int, bits_per_dim: int = 2, binarizer=None, candidates: int = 100, *,
                 center: Optional[np.ndarray] = None, _existing: bool = False):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
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
                raise ValueError(f"center must be {self.dim} finite values (e.g. the data's mean), got shape {center.shape}")
            self.center = center
        code_dim = binarizer.out_dim if binarizer is not None else self.dim
        self.codes = MultiBitIndex(code_dim, self.bits_per_dim)
        self._vectors_path = self.path / VECTORS_FILE
        if not _existing:  # a new index starts empty, whatever the folder held
            (self.path / INFO_FILE).unlink(missing_ok=True)
            self._vectors_path.write_bytes(b"")
        self._map = None

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

    def add(self, x: np.ndarray) -> None:
        """Encodes and adds vectors; their float values are appended to the vectors file."""
        x = self._check(x)
        codes = self.encode(x)
        with open(self._vectors_path, "ab") as f:
            f.write(x.tobytes())
        self.codes.add(codes)
        self._map = None

    def vectors(self) -> np.ndarray:
        """The float vectors, memory-mapped (read-only)."""
        if self._map is None:
            n = len(self)
            expected = n * self.dim * 4
            if self._vectors_path.stat().st_size != expected:
                raise ValueError(f"{self._vectors_path}: {self._vectors_path.stat().st_size} bytes, expected {expected} "
                                 f"for {n} vectors of {self.dim} float32; the file is truncated or not this index's")
            self._map = np.memmap(self._vectors_path, np.float32, "r", shape=(n, self.dim)) if n else \
                np.zeros((0, self.dim), np.float32)
        return self._map

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
        _, cand = self.codes.search(self.encode(x), c)
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

    def save(self) -> None:
        """Writes the codes and settings beside the vectors file (atomic container writes)."""
        self.codes.save(self.path / CODES_FILE)
        if self.binarizer is not None:
            self.binarizer.save(self.path / BINARIZER_FILE)
        info = {"dim": self.dim, "bits_per_dim": self.bits_per_dim, "candidates": self.candidates,
                "learned": self.binarizer is not None, "count": len(self),
                "center": None if self.center is None else self.center.tolist()}
        tmp = self.path / (INFO_FILE + ".tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, self.path / INFO_FILE)

    @classmethod
    def load(cls, path) -> "TwoStageIndex":
        path = Path(path)
        try:
            info = json.loads((path / INFO_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: not a saved TwoStageIndex ({error})") from None
        binarizer = None
        if info["learned"]:
            from pylocalize.codes.learned import RecurrentBinarizer

            binarizer = RecurrentBinarizer.load(path / BINARIZER_FILE)
        center = info.get("center")
        index = cls(path, info["dim"], info["bits_per_dim"], binarizer, info["candidates"],
                    center=None if center is None else np.asarray(center, np.float32), _existing=True)
        index.codes = MultiBitIndex.load(path / CODES_FILE, mmap=True)
        if len(index) != info["count"]:
            raise ValueError(f"{path}: {len(index)} codes but {info['count']} recorded; the files disagree")
        index.vectors()  # checks the vectors file's size now rather than at the first search
        return index
