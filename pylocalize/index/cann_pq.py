"""CANN retrieval over product-quantized features: a map's descriptors as 32-byte codes.

:class:`CANNPQIndex` ranks database images by the same score as
:class:`~pylocalize.index.cann.CANNIndex`,

    S(m) = (1 / |Q|) * sum_q s(d(q, m)),

d(q, m) the distance from query feature q to the nearest feature of image m within the
``nprobe`` k-means lists nearest to q, but holds each database feature as an ``m``-byte
product-quantizer code (Jégou, Douze, Schmid, TPAMI 2011) instead of its descriptor:
distances are asymmetric (the query exact, the database feature decoded), looked up in a
table per query feature, less the mean squared quantization error of the training sample
(:attr:`CANNPQIndex.quantization_error`): a code's error adds to the distance on average, and
at 32 bytes it is a large part of the kernel's cutoff. A SIFT feature then costs 32 bytes of code and 4 of image index
(with residual codes, as faiss's ``IndexIVFPQ``, 4 more of norm term): ~36 bytes instead of
the 128-byte descriptor and its search copy. Residual codes are an option, not the default:
on generated cities they retrieve no better for 4 more bytes a feature (figures in
benchmarks/README.md, city section).

Quantized distances move images a little in the ranking. :meth:`CANNPQIndex.search_reranked`
puts back exact order where it matters: it re-scores the best ``rerank`` images with the
exact CANN score against their full descriptors (e.g. a map's memory-mapped uint8 arrays),
which are read for those few images only.
"""

from __future__ import annotations

import os
from typing import Callable, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from pylocalize import _core
from pylocalize.index._args import int_scalar
from pylocalize.index.cann import CANNIndex

PathLike = Union[str, "os.PathLike[str]"]
# Where each image's full descriptors come from for re-ranking: database[image_id] or database(image_id).
Database = Union[Sequence[np.ndarray], Mapping[int, np.ndarray], Callable[[int], np.ndarray]]


class ProductQuantizer:
    """A product quantizer: ``m`` sub-quantizers of 256 centroids over ``dim / m`` dimensions each.

    Parameters
    ----------
    dim : int
        Vector dimension.
    m : int
        Bytes per code; must divide ``dim`` (8, 16, 32 or 64 for 128-d descriptors).
    """

    def __init__(self, dim: int, m: int):
        self._impl = _core.ProductQuantizer(int_scalar(dim, "dim"), int_scalar(m, "m"))

    dim = property(lambda self: self._impl.dim, doc="Vector dimension.")
    m = property(lambda self: self._impl.m, doc="Bytes per code.")
    is_trained = property(lambda self: self._impl.is_trained, doc="Whether the codebooks are learned.")
    codebooks = property(lambda self: self._impl.codebooks,
                         doc="float32 (m, 256, dim / m): centroid c of sub-space j is ``codebooks[j, c]``.")

    def train(self, x: np.ndarray, iterations: int = 16, seed: int = 0, max_points_per_centroid: int = 64) -> None:
        """Learns the codebooks by k-means in each sub-space from ``x``, float32 (n, dim), n >= 256
        (k-means samples at most ``256 * max_points_per_centroid`` rows)."""
        self._impl.train(x, int_scalar(iterations, "iterations"), int_scalar(seed, "seed"),
                         int_scalar(max_points_per_centroid, "max_points_per_centroid"))

    def encode(self, x: np.ndarray) -> np.ndarray:
        """uint8 (n, m) codes of ``x`` (float32 or uint8, (n, dim)): each sub-vector's nearest centroid."""
        return self._impl.encode(x)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """float32 (n, dim): the centroids ``codes`` (uint8 (n, m)) name."""
        return self._impl.decode(codes)

    def distance_tables(self, x: np.ndarray) -> np.ndarray:
        """float32 (n, m, 256): squared distances of each row's sub-vectors to every centroid, so
        that the squared distance from row i to a code c is ``tables[i, arange(m), c].sum()``."""
        return self._impl.distance_tables(x)


class CANNPQIndex:
    """Ranks database images for a query image's local features, over compressed features.

    Parameters
    ----------
    dim : int
        Descriptor dimension.
    m : int
        Bytes per feature code; must divide ``dim``. 32 for SIFT.
    by_residual : bool
        Encode each feature's difference to its list centroid (finer codes at the cost of a
        4-byte norm term per feature).
    nprobe : int
        Lists probed per query feature. May be changed between searches.
    kernel, p0, p1, sigma
        The score kernel, as in :class:`~pylocalize.index.cann.CANNIndex`.

    Notes
    -----
    Build: :meth:`train` on a sample, then :meth:`add` (the core encodes a chunk at a time, so
    ``add`` of a memory-mapped uint8 array never holds a float copy of it). :meth:`save`
    writes one container; :meth:`load` with ``mmap=True`` searches the file's codes in place.
    Searches may run concurrently with each other and with ``add``, which the index lock
    serializes; the GIL is released, and Ctrl-C stops a long call made from the main thread.
    """

    def __init__(self, dim: int, m: int = 32, by_residual: bool = False, nprobe: int = 16, kernel: str = "cann",
                 p0: float = 120.0, p1: float = 0.4592, sigma: float = 60.0, *,
                 _impl: Optional[_core.CannPqIndex] = None):
        if int_scalar(nprobe, "nprobe") < 1:
            raise ValueError(f"nprobe must be >= 1, got {nprobe}")
        self.nprobe = int(nprobe)
        self._kernel = _core.CannKernel(kernel, float(p0), float(p1), float(sigma))
        self._kernel_args = dict(kernel=kernel, p0=float(p0), p1=float(p1), sigma=float(sigma))
        if _impl is None:
            _impl = _core.CannPqIndex(int_scalar(dim, "dim"), int_scalar(m, "m"), bool(by_residual))
        self._impl = _impl
        self._stored_options: Optional[dict] = None

    dim = property(lambda self: self._impl.dim, doc="Descriptor dimension.")
    m = property(lambda self: self._impl.m, doc="Bytes per feature code.")
    by_residual = property(lambda self: self._impl.by_residual, doc="Whether codes hold residuals to the lists.")
    ntotal = property(lambda self: self._impl.ntotal, doc="Number of database features.")
    num_images = property(lambda self: self._impl.num_images, doc="Number of distinct images.")
    nlist = property(lambda self: self._impl.nlist, doc="Number of lists (0 before training).")
    is_trained = property(lambda self: self._impl.is_trained, doc="Whether lists and codebooks are learned.")
    memory_bytes = property(lambda self: self._impl.memory_bytes,
                            doc="Bytes held: codes, image indexes, norm terms, lists, centroids, codebooks.")
    quantization_error = property(lambda self: self._impl.quantization_error,
                                  doc="Mean squared quantization error, subtracted from every ADC distance.")
    centroids = property(lambda self: self._impl.centroids, doc="float32 (nlist, dim): the lists' centroids.")
    codebooks = property(lambda self: self._impl.codebooks, doc="float32 (m, 256, dim / m): the sub-quantizers.")

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        return (f"CANNPQIndex(dim={self.dim}, m={self.m}, by_residual={self.by_residual}, nlist={self.nlist}, "
                f"ntotal={self.ntotal}, num_images={self.num_images})")

    def train(self, x: np.ndarray, nlist: int, iterations: int = 8, seed: int = 0, max_points_per_list: int = 64,
              pq_iterations: int = 16, pq_max_points_per_centroid: int = 64,
              max_pq_training_rows: int = 65536) -> None:
        """Learns the lists and the product quantizer from a sample of descriptors (once).

        Parameters
        ----------
        x : float32 or uint8 (n, dim)
            A sample of the database's descriptors, ``n >= max(nlist, 256)``.
        nlist : int
            Number of lists; about ``4 sqrt(N)`` for N database features
            (:func:`~pylocalize.index.cann.default_nlist`).
        iterations, max_points_per_list : int
            Lloyd iterations and subsample per list of the coarse k-means.
        seed : int
        pq_iterations, pq_max_points_per_centroid : int
            k-means of each sub-quantizer.
        max_pq_training_rows : int
            Rows of ``x`` (their residuals with ``by_residual``) the sub-quantizers learn from.
        """
        self._impl.train(x, int_scalar(nlist, "nlist"), int_scalar(iterations, "iterations"),
                         int_scalar(seed, "seed"), int_scalar(max_points_per_list, "max_points_per_list"),
                         int_scalar(pq_iterations, "pq_iterations"),
                         int_scalar(pq_max_points_per_centroid, "pq_max_points_per_centroid"),
                         int_scalar(max_pq_training_rows, "max_pq_training_rows"))

    def add(self, descriptors: np.ndarray, image_ids) -> None:
        """Adds features: ``descriptors`` float32 or uint8 (n, dim) and their image ids (one int
        or int64 (n,), ``>= 0``). Needs :meth:`train`."""
        if np.isscalar(image_ids):
            image_ids = np.full(len(descriptors), int_scalar(image_ids, "image_ids"), dtype=np.int64)
        else:
            image_ids = np.asarray(image_ids)
            if image_ids.dtype.kind not in "iu":
                raise ValueError(f"image_ids must be integers, got dtype {image_ids.dtype}")
            image_ids = np.ascontiguousarray(image_ids, dtype=np.int64)
        self._impl.add(descriptors, image_ids)

    def search(self, query_descriptors: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """The ``k`` best database images for one query image by the quantized score.

        Returns ``(scores float32 (k,), image_ids int64 (k,))`` as
        :meth:`CANNIndex.search <pylocalize.index.cann.CANNIndex.search>`: descending,
        ties to the smaller id, padded with ``-inf`` and ``-1``.
        """
        return self._impl.search(query_descriptors, int_scalar(k, "k"), self._kernel, int_scalar(self.nprobe, "nprobe"))

    def search_reranked(self, query_descriptors: np.ndarray, k: int, database: Database,
                        rerank: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """:meth:`search` for ``rerank`` images, then each re-scored exactly; the best ``k`` of them.

        Parameters
        ----------
        query_descriptors : float32 or uint8 (nq, dim)
        k : int
        database : sequence, mapping or callable
            ``database[image_id]`` (or ``database(image_id)``): that image's full descriptors,
            uint8 or float32 (n, dim), e.g. a map's memory-mapped arrays; read only for the
            re-scored images.
        rerank : int, optional
            Images re-scored (default ``max(k, 20)``).

        Returns
        -------
        scores, image_ids
            As :meth:`search`, with exact CANN scores S(m).
        """
        k = int_scalar(k, "k")
        rerank = max(k, 20) if rerank is None else int_scalar(rerank, "rerank")
        if rerank < k:
            raise ValueError(f"rerank must be >= k = {k}, got {rerank}: only re-scored images are returned")
        _, ids = self.search(query_descriptors, rerank)
        ids = ids[ids >= 0]
        rows = [database(int(i)) if callable(database) else database[int(i)] for i in ids]
        exact = exact_scores(query_descriptors, rows, **self._kernel_args)
        order = sorted(range(len(ids)), key=lambda j: (-exact[j], ids[j]))[:k]
        scores = np.full(k, -np.inf, np.float32)
        out = np.full(k, -1, np.int64)
        scores[:len(order)] = exact[order]
        out[:len(order)] = ids[order]
        return scores, out

    @property
    def search_options(self) -> dict:
        """The options :meth:`save` stores: ``nprobe``, ``kernel``, ``p0``, ``p1``, ``sigma``."""
        return dict(nprobe=self.nprobe, **self._kernel_args)

    @property
    def stored_options(self) -> Optional[dict]:
        """The search options read from the file this index was loaded from, or None."""
        return self._stored_options

    def save(self, path: PathLike) -> None:
        """Writes the lists, codes and search options (pylocalize container, atomically)."""
        self._impl.set_search_options(int_scalar(self.nprobe, "nprobe"), self._kernel)
        self._impl.save(os.fspath(path))

    @classmethod
    def _from_impl(cls, impl: _core.CannPqIndex, options: dict) -> "CANNPQIndex":
        stored = impl.search_options
        index = cls(impl.dim, _impl=impl, **dict(stored or {}, **options))
        index._stored_options = stored
        return index

    @classmethod
    def load(cls, path: PathLike, mmap: bool = True, **options) -> "CANNPQIndex":
        """Reads an index written by :meth:`save`; with ``mmap`` the codes stay in the mapped
        file (zero copy). ``options`` (``nprobe``, the kernel) replace the stored ones."""
        return cls._from_impl(_core.CannPqIndex.load(os.fspath(path), bool(mmap)), options)

    def serialize(self) -> np.ndarray:
        """The index as bytes (``uint8`` array) in the container format."""
        self._impl.set_search_options(int_scalar(self.nprobe, "nprobe"), self._kernel)
        return self._impl.serialize()

    @classmethod
    def deserialize(cls, data: np.ndarray, **options) -> "CANNPQIndex":
        """Reads bytes from :meth:`serialize`; ``options`` as in :meth:`load`."""
        return cls._from_impl(_core.CannPqIndex.deserialize(np.ascontiguousarray(data, dtype=np.uint8)), options)

    def reconstruct(self) -> Tuple[np.ndarray, np.ndarray]:
        """The features as the search sees them: decoded float32 (ntotal, dim) and their image
        ids int64 (ntotal,), list by list."""
        return self._impl.reconstruct()

    def __reduce__(self):
        return (_rebuild, (self.serialize(), self.search_options))


def _rebuild(data, options):
    return CANNPQIndex.deserialize(data, **options)


def exact_scores(query_descriptors: np.ndarray, images: Sequence[np.ndarray], kernel: str = "cann",
                 p0: float = 120.0, p1: float = 0.4592, sigma: float = 60.0) -> np.ndarray:
    """The exact CANN score S(m) of the query against each of ``images`` (each one image's
    descriptors, (n_m, dim) of one dtype), float32 (len(images),), by the exact method of
    :class:`~pylocalize.index.cann.CANNIndex` over those images' features alone: S(m) depends
    on image m's features only."""
    scores = np.zeros(len(images), np.float32)
    nonempty = [j for j, rows in enumerate(images) if len(rows)]
    if not nonempty or not len(query_descriptors):
        return scores
    dim = np.asarray(images[nonempty[0]]).shape[1]
    index = CANNIndex(dim, method="exact", kernel=kernel, p0=p0, p1=p1, sigma=sigma)
    index.add(np.concatenate([np.asarray(images[j]) for j in nonempty]),
              np.concatenate([np.full(len(images[j]), j, np.int64) for j in nonempty]))
    s, ids = index.search(query_descriptors, len(nonempty))
    scores[ids] = s
    return scores
