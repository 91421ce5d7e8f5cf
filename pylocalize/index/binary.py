"""Exact Hamming search (:class:`BinaryIndex`) and multi-bit SDC search (:class:`MultiBitIndex`).

Both keep codes in the core's blocked layout and scan them with SIMD popcount kernels
chosen at run time (AVX-512 VPOPCNTDQ, AVX-512BW, AVX2 or portable C++). Results are
deterministic: best first, ties to the smaller id, rows padded with id ``-1``.
Many queries run in parallel over queries; one or a few run in parallel over the
database, so a single query also uses every thread. Files use the versioned pylocalize
container (magic, version, CRC-32), written atomically, optionally memory-mapped.

``device="cuda"`` (or :meth:`to_gpu`) searches with the CUDA kernels of a build with
``-DPYLOCALIZE_CUDA=ON`` on a device copy of the codes, with the CPU's results bit for bit
(``k`` up to 2048); the other verbs stay on the CPU.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple, Union

import numpy as np

from pylocalize import _core
from pylocalize.index._args import as_ids
from pylocalize.index._args import int_scalar as _int_scalar
from pylocalize.index._device import Device, OnDevice

PathLike = Union[str, "os.PathLike[str]"]


class BinaryIndex(OnDevice):
    """Exact k-NN and range search in Hamming space.

    Parameters
    ----------
    nbits : int
        Code length in bits, a positive multiple of 8. 64, 128, 256, 512 and 1024 bits
        (and 192) have unrolled kernels; any other size uses the generic kernel.
    device : {"cpu", "cuda", "cuda:N"}
        Where searches run (see :meth:`to_gpu`). A search on a GPU is not synchronized with
        changes made from another thread.

    Notes
    -----
    Thread safety: searches (``search``, ``range_search``) may run concurrently from
    several threads with each other and with ``add``, ``remove_ids``, ``reset``, ``len``
    and ``ntotal``. Changes are serialized by the index lock: a search sees the index as it
    was before or after each change, never part of one. Every call releases the GIL while
    it waits for that lock, and Ctrl-C stops a long call made from the main thread.

    Examples
    --------
    >>> import numpy as np, pylocalize
    >>> rng = np.random.default_rng(0)
    >>> xb = rng.integers(0, 256, (1000, 32), dtype=np.uint8)
    >>> index = pylocalize.BinaryIndex(256)
    >>> index.add(xb)
    >>> D, I = index.search(xb[:5], k=3)
    >>> I[:, 0].tolist()
    [0, 1, 2, 3, 4]
    """

    def __init__(self, nbits: int, *, device: Device = "cpu", _impl: Optional[_core.BinaryIndex] = None):
        self._impl = _impl if _impl is not None else _core.BinaryIndex(_int_scalar(nbits, "nbits"))
        self._set_device(device)

    def _make_device_copy(self, ordinal: int):
        return _core.GpuBinaryCodes(self._impl, ordinal)

    @property
    def nbits(self) -> int:
        """Code length in bits."""
        return self._impl.nbits

    @property
    def code_size(self) -> int:
        """Code length in bytes."""
        return self._impl.code_size

    @property
    def ntotal(self) -> int:
        """Number of codes in the index."""
        return self._impl.ntotal

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        where = "" if self._ordinal is None else f", device={self.device!r}"
        return f"BinaryIndex(nbits={self.nbits}, ntotal={self.ntotal}{where})"

    def add(self, codes: np.ndarray, ids: Optional[np.ndarray] = None) -> None:
        """Adds codes ``uint8 (n, nbits/8)``.

        Parameters
        ----------
        codes : numpy.ndarray of uint8, shape (n, code_size)
        ids : numpy.ndarray of int64, shape (n,), optional
            Ids returned by searches. Default: consecutive ids after the largest id added
            so far (0, 1, 2, ... for a fresh index). Integers ``>= 0``: ``-1`` marks
            empty result slots.
        """
        self._changed()
        self._impl.add(codes, None if ids is None else as_ids(ids))

    def search(self, queries: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest codes of each query.

        Parameters
        ----------
        queries : numpy.ndarray of uint8, shape (nq, code_size)
        k : int
            Number of neighbours, ``>= 1``; may exceed ``ntotal``.

        Returns
        -------
        distances : numpy.ndarray of int32, shape (nq, k)
            Hamming distances, ascending; ``2**31 - 1`` in padded slots.
        ids : numpy.ndarray of int64, shape (nq, k)
            Ids of the neighbours, ties to the smaller id; ``-1`` in padded slots.
        """
        if self._ordinal is not None:
            return self._device_copy().search(queries, _int_scalar(k, "k"), self.code_size)
        return self._impl.search(queries, _int_scalar(k, "k"))

    def range_search(self, queries: np.ndarray, radius: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every code within Hamming distance ``radius`` (inclusive) of each query.

        Returns
        -------
        lims : numpy.ndarray of int64, shape (nq + 1,)
            Results of query ``i`` are ``distances[lims[i]:lims[i+1]]`` and ``ids[...]``.
        distances : numpy.ndarray of int32
            Per query ascending, ties to the smaller id.
        ids : numpy.ndarray of int64
        """
        if self._ordinal is not None:
            return self._device_copy().range_search(queries, _int_scalar(radius, "radius"), self.code_size)
        return self._impl.range_search(queries, _int_scalar(radius, "radius"))

    def remove_ids(self, ids: np.ndarray) -> int:
        """Removes every code whose id is in ``ids``; returns how many were removed."""
        self._changed()
        return self._impl.remove_ids(as_ids(ids).reshape(-1))

    def reset(self) -> None:
        """Removes every code."""
        self._changed()
        self._impl.reset()

    def codes(self) -> np.ndarray:
        """The stored codes ``uint8 (ntotal, code_size)`` in insertion order."""
        return self._impl.codes()

    def ids(self) -> np.ndarray:
        """The stored ids ``int64 (ntotal,)`` in insertion order."""
        return self._impl.ids()

    def save(self, path: PathLike) -> None:
        """Writes the index to ``path`` atomically (pylocalize container format)."""
        self._impl.save(os.fspath(path))

    @classmethod
    def load(cls, path: PathLike, mmap: bool = False) -> "BinaryIndex":
        """Reads an index written by :meth:`save`.

        Parameters
        ----------
        mmap : bool
            Memory-map the file instead of reading it; the codes are copied only if the
            index is changed later.

        Raises
        ------
        pylocalize.FormatError
            If the file is truncated, corrupt, not a BinaryIndex, from a newer version, or a
            directory.
        FileNotFoundError
            If there is no file at ``path``.
        """
        return cls(0, _impl=_core.BinaryIndex.load(os.fspath(path), bool(mmap)))

    def serialize(self) -> np.ndarray:
        """The index as bytes (``uint8`` array) in the container format."""
        return self._impl.serialize()

    @classmethod
    def deserialize(cls, data: np.ndarray) -> "BinaryIndex":
        """Rebuilds an index from :meth:`serialize` output."""
        return cls(0, _impl=_core.BinaryIndex.deserialize(np.ascontiguousarray(data, dtype=np.uint8)))

    def __reduce__(self):
        return (BinaryIndex.deserialize, (self.serialize(),))


class MultiBitIndex(OnDevice):
    """Search over multi-bit codes by symmetric distance calculation (SDC).

    Codes come from :func:`pylocalize.binarize` (or any encoder writing the same layout):
    ``bits_per_dim`` bit planes of ``ceil(dim/8)`` bytes each. A pair of codes is scored
    by the cosine of their reconstructions: the inner product
    ``sum_{i,j} 2**-(i+j) * (dim - 2 * popcount(q_i ^ x_j))`` from SIMD popcounts over
    bit-plane pairs, times each code's precomputed inverse reconstruction norm (codes carry
    no scale, and without it the ranking would follow the reconstruction norm). Optionally
    keeps the float vectors to re-rank the best SDC candidates by exact inner product; after
    :meth:`load` those stay memory-mapped.

    Parameters
    ----------
    dim : int
        Dimension of the encoded vectors.
    bits_per_dim : int
        1 to 4 bits per dimension.
    device : {"cpu", "cuda", "cuda:N"}
        Where the SDC scan runs (see :meth:`to_gpu`); re-ranking by the float vectors stays
        on the CPU. A search on a GPU is not synchronized with changes from another thread.

    Notes
    -----
    Thread safety: searches may run concurrently from several threads with each other and
    with ``add``, ``remove_ids``, ``reset``, ``len`` and ``ntotal``. Changes are serialized by the index
    lock: a search sees the index as it was before or after each change, never part of one.
    Every call releases the GIL while it waits for that lock, and Ctrl-C stops a long call
    made from the main thread.
    """

    def __init__(self, dim: int, bits_per_dim: int, *, device: Device = "cpu",
                 _impl: Optional[_core.MultiBitIndex] = None):
        if _impl is None:
            _impl = _core.MultiBitIndex(_int_scalar(dim, "dim"), _int_scalar(bits_per_dim, "bits_per_dim"))
        self._impl = _impl
        self._set_device(device)

    def _make_device_copy(self, ordinal: int):
        return _core.GpuSdcCodes(self._impl, ordinal)

    dim = property(lambda self: self._impl.dim, doc="Dimension of the encoded vectors.")
    bits_per_dim = property(lambda self: self._impl.bits_per_dim, doc="Bits per dimension.")
    code_size = property(lambda self: self._impl.code_size, doc="Bytes per code.")
    ntotal = property(lambda self: self._impl.ntotal, doc="Number of codes.")
    has_vectors = property(lambda self: self._impl.has_vectors, doc="Whether float vectors are kept.")

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        return (f"MultiBitIndex(dim={self.dim}, bits_per_dim={self.bits_per_dim}, "
                f"ntotal={self.ntotal}, has_vectors={self.has_vectors})")

    def add(self, codes: np.ndarray, ids: Optional[np.ndarray] = None,
            vectors: Optional[np.ndarray] = None) -> None:
        """Adds codes ``uint8 (n, code_size)``, optionally with their float vectors.

        Parameters
        ----------
        codes : numpy.ndarray of uint8, shape (n, code_size)
        ids : numpy.ndarray of int64, shape (n,), optional
            Integers ``>= 0``: ``-1`` marks empty result slots.
        vectors : numpy.ndarray of float32, shape (n, dim), optional
            Kept for exact re-ranking; every add of an index must pass them or none must.
        """
        self._changed()
        self._impl.add(codes, None if ids is None else as_ids(ids), vectors)

    def search(self, query_codes: np.ndarray, k: int, *,
               query_vectors: Optional[np.ndarray] = None,
               rerank: int = 0, candidates: int = 0) -> Tuple[np.ndarray, np.ndarray]:
        """The ``k`` best codes of each query by SDC score (largest first).

        Parameters
        ----------
        query_codes : numpy.ndarray of uint8, shape (nq, code_size)
        k : int
        query_vectors : numpy.ndarray of float32, shape (nq, dim), optional
            Needed when ``rerank > 0``.
        rerank : int
            If > 0, the ``max(rerank, k)`` best SDC candidates are re-ranked by exact inner
            product with the stored float vectors.
        candidates : int
            Progressive search (2+ bits per dimension): the first bit plane of a recurrent
            code is the sign code, a coarse code of its own, so the scan counts sign-plane
            Hamming distances first and pays the full SDC score only for codes among about
            the ``candidates`` closest in sign bits (a bound estimated per query on an
            evenly spaced sample of the codes: deterministic). How many are needed depends
            on how good a code the sign plane is (measured figures: ``benchmarks/README.md``);
            where a few dimensions dominate, sign codes are poor and more are needed. Must be
            ``>= k`` and ``>= rerank``; 0 (default) scores every code. No effect at 1 bit per
            dimension.

        Returns
        -------
        scores : numpy.ndarray of float32, shape (nq, k)
            SDC cosines (or exact inner products when re-ranking); ``-inf`` in padded slots.
        ids : numpy.ndarray of int64, shape (nq, k)
            Ties to the smaller id; ``-1`` in padded slots.
        """
        args = (query_codes, _int_scalar(k, "k"), query_vectors, _int_scalar(rerank, "rerank"),
                _int_scalar(candidates, "candidates"))
        if self._ordinal is not None:
            return self._device_copy().search(self._impl, *args)
        return self._impl.search(*args)

    def remove_ids(self, ids: np.ndarray) -> int:
        """Removes every code (and its float vector) whose id is in ``ids``; returns how many
        were removed. The rest searches as an index built from it would."""
        self._changed()
        return self._impl.remove_ids(as_ids(ids).reshape(-1))

    def reset(self) -> None:
        """Removes every code (and vector)."""
        self._changed()
        self._impl.reset()

    def ids(self) -> np.ndarray:
        """The stored ids ``int64 (ntotal,)`` in insertion order."""
        return self._impl.ids()

    def save(self, path: PathLike) -> None:
        """Writes codes, ids and float vectors (if kept) to ``path`` atomically."""
        self._impl.save(os.fspath(path))

    @classmethod
    def load(cls, path: PathLike, mmap: bool = False) -> "MultiBitIndex":
        """Reads an index written by :meth:`save`; float vectors always stay memory-mapped,
        and ``mmap=True`` maps the codes too."""
        return cls(0, 0, _impl=_core.MultiBitIndex.load(os.fspath(path), bool(mmap)))

    def serialize(self) -> np.ndarray:
        """The index as bytes (``uint8`` array) in the container format."""
        return self._impl.serialize()

    @classmethod
    def deserialize(cls, data: np.ndarray) -> "MultiBitIndex":
        """Rebuilds an index from :meth:`serialize` output."""
        return cls(0, 0, _impl=_core.MultiBitIndex.deserialize(np.ascontiguousarray(data, dtype=np.uint8)))

    def __reduce__(self):
        return (MultiBitIndex.deserialize, (self.serialize(),))
