"""Image retrieval from local features by constrained nearest neighbours (CANN).

After Aiger, Araujo, Lynen, "Yes, we CANN: Constrained Approximate Nearest Neighbors for
local feature-based visual localization" (ICCV 2023). Each database feature has a
descriptor and the id of the image that saw it; a query image's features Q score image m as

    S(m) = (1 / |Q|) * sum_q s(d(q, m)),

with d(q, m) the L2 distance from q to the nearest feature of image m and s a decreasing
kernel: the paper's ``s(r) = max(0, 1 - (r/p0)^(p1/(1-p1)))^((1-p1)/p1)`` (p0 = 120,
p1 = 0.4592, for SIFT-scale descriptors) or a Gaussian. Images are ranked jointly by
appearance and by the constraint that matches come from one camera, with no global
descriptor.

Methods:

- ``"exact"`` computes every distance with the core's blocked SIMD kernels; it is the
  reference the approximate methods are measured against.
- ``"grid"`` (approximate, the paper's released approach): colored range search with
  random grids, for a geometric schedule of radii up to the kernel's cutoff; each
  (query feature, image) pair is scored at the first radius where the image is found.
- ``"ivf"`` (approximate, ours, faster at equal recall): an inverted file over the features.
  k-means lists hold their features grouped by image; each query feature probes its
  ``nprobe`` nearest lists, where distances are exact. Only pairs within the kernel's cutoff
  (p0 for the CANN kernel) can score, and those are near neighbours that fall in the nearest
  lists with high probability, so probing a few lists keeps nearly every scoring pair while
  computing a small fraction of the distances. The work per query scales with nprobe /
  nlist, the distance computations run on the same blocked kernels as the exact method
  (batched over all query features that probe a list), and no per-(query, image) state is
  kept beyond the candidate pairs. Grids instead hash into cells whose collision probability
  for a true neighbour decays with every hashed dimension, so they need many grids and radii
  and check their candidates one pair at a time.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from pylocalize import _core
from pylocalize.index._args import as_ids, int_scalar
from pylocalize.index._device import Device, OnDevice

PathLike = Union[str, "os.PathLike[str]"]
METHODS = ("exact", "ivf", "grid")
GRID_DEFAULTS = dict(num_grids=16, num_radii=4, dims=8, cell_factor=0.5, max_bin=256, seed=0)
# Bounds on the grid options, the same as the core's (cpp/pylocalize/cann/grid.h): memory
# and build time grow with num_grids * num_radii * ntotal and recall saturates well before.
# The core also refuses grids whose estimated size exceeds half of the machine's memory.
GRID_LIMITS = dict(num_grids=1024, num_radii=16, total_grids=4096, dims=64)


def default_nlist(n: int) -> int:
    """The number of inverted-file lists for ``n`` features: ``4 sqrt(n)``, at least 1.

    A query image's ~2,000 features probe 4 lists each, so with ``2 sqrt(n)`` lists a
    5-million-feature map has every list scanned by every query: the scan reads the whole
    map. Twice as many lists halves the lists' length and leaves a third of them untouched;
    on a 5.7M-feature city, search 72 -> 57 ms at the same recall@10 (0.883), and the
    two-level coarse quantizer keeps the extra lists cheap to probe.
    """
    return max(1, int(round(4 * np.sqrt(max(int(n), 1)))))


def _check_grid(grid: dict) -> None:
    """Refuses grid options out of bounds before any grid is built (a typo such as
    ``num_grids=10**6`` would otherwise fill memory at the first search)."""
    for name in ("num_grids", "num_radii", "dims", "max_bin", "seed"):
        value = grid[name]
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"grid {name} must be an int, got {value!r}")
    for name in ("num_grids", "num_radii", "dims"):
        if not 1 <= grid[name] <= GRID_LIMITS[name]:
            raise ValueError(f"grid {name} must be in 1..{GRID_LIMITS[name]}, got {grid[name]}; "
                             f"more adds memory and build time, not recall (try the default "
                             f"{GRID_DEFAULTS[name]} or method='ivf')")
    if grid["num_grids"] * grid["num_radii"] > GRID_LIMITS["total_grids"]:
        raise ValueError(f"grid num_grids * num_radii must be <= {GRID_LIMITS['total_grids']}, got "
                         f"{grid['num_grids']} * {grid['num_radii']}; lower one of them or use method='ivf'")
    if grid["max_bin"] < 1:
        raise ValueError(f"grid max_bin must be >= 1, got {grid['max_bin']}")
    if not (np.isfinite(grid["cell_factor"]) and grid["cell_factor"] > 0):
        raise ValueError(f"grid cell_factor must be > 0, got {grid['cell_factor']}")
    if not 0 <= grid["seed"] < 2**64:
        raise ValueError(f"grid seed must be in 0..2**64-1, got {grid['seed']}")


class CANNIndex(OnDevice):
    """Ranks database images for a query image's local features.

    Parameters
    ----------
    dim : int
        Descriptor dimension.
    metric : {"l2"}
        Distance between descriptors.
    method : {"exact", "ivf", "grid"}
        Search method; "ivf" needs :meth:`train`. The attributes ``method`` and ``nprobe``
        may be changed between searches: the methods share the stored features.
    nprobe : int
        Lists probed per query feature (method "ivf").
    grid : dict, optional
        Method "grid": ``num_grids`` (per radius, 16, at most 1024), ``num_radii`` (4,
        halving from the kernel cutoff, at most 16; ``num_grids * num_radii <= 4096``),
        ``dims`` (hashed projected dimensions, 8, at most 64), ``cell_factor`` (cell
        size / radius, 0.5), ``max_bin`` (features kept per cell, 256), ``seed`` (0).
        Out-of-bounds values raise ``ValueError``, and so does a first grid search whose
        grids would take more than half of the machine's memory.
    kernel : {"cann", "gaussian"}
        The score kernel s(r).
    p0, p1 : float
        Parameters of the CANN kernel (s = 0 beyond p0).
    sigma : float
        Width of the Gaussian kernel ``exp(-r^2 / (2 sigma^2))``.
    device : {"cpu", "cuda", "cuda:N"}
        Where searches run (see :meth:`to_gpu`): on a GPU, methods "exact" and "ivf" with
        the CPU's images and scores (descriptors of up to 3072 dimensions; for "ivf", the
        scores of a one-thread CPU search: with more threads the CPU sums its threads' parts
        in the order they finish, which can move a score's last bit). Method "grid" searches
        on the CPU only and raises ``ValueError`` on a GPU.

    Notes
    -----
    Thread safety: searches (``search``, ``search_batch``) may run concurrently from
    several threads with each other and with ``add``, ``remove_images``, ``reset``,
    ``train``, ``len``, ``ntotal`` and the grid configuration. Changes are serialized by
    the index lock: a search sees the index as it was before or after each change, never
    part of one. Every call releases the GIL while it waits for that lock, and Ctrl-C stops
    a long call (search, train, the grid build) made from the main thread. Changing the
    attributes ``method`` or ``nprobe`` while another thread searches is not synchronized.

    :meth:`save` and :meth:`serialize` store the search options (method, nprobe, kernel,
    p0, p1, sigma, grid) with the features, and :meth:`load` / :meth:`deserialize` apply
    them; files written before the options were stored load with the constructor defaults.
    """

    def __init__(self, dim: int, metric: str = "l2", method: str = "exact", kernel: str = "cann",
                 p0: float = 120.0, p1: float = 0.4592, sigma: float = 60.0, nprobe: int = 16,
                 grid: Optional[dict] = None, *, device: Device = "cpu", _impl: Optional[_core.CannIndex] = None):
        if metric != "l2":
            raise ValueError(f"metric must be 'l2', got {metric!r}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.metric, self.method = metric, method
        if int_scalar(nprobe, "nprobe") < 1:
            raise ValueError(f"nprobe must be >= 1, got {nprobe}")
        self.nprobe = int(nprobe)
        self._kernel = _core.CannKernel(kernel, float(p0), float(p1), float(sigma))
        self._kernel_args = dict(kernel=kernel, p0=float(p0), p1=float(p1), sigma=float(sigma))
        self._impl = _impl if _impl is not None else _core.CannIndex(int_scalar(dim, "dim"))
        self.grid = dict(GRID_DEFAULTS, **(grid or {}))
        unknown = set(self.grid) - set(GRID_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown grid options {sorted(unknown)}: use {sorted(GRID_DEFAULTS)}")
        _check_grid(self.grid)
        self._grid_configured = False
        self._stored_options: Optional[dict] = None
        self._set_device(device)

    def _make_device_copy(self, ordinal: int):
        return {}  # a copy per method, made on its first search

    def _method_copy(self):
        """The device copy of the current method's layout. Every change (add, remove, reset,
        train, a load's copy-on-write) replaces the layout: a copy of an older one is stale,
        whichever path changed the index."""
        copies = self._device_copy()
        copy = copies.get(self.method)
        if copy is None or not copy.is_current(self._impl):
            make = _core.GpuCannExact if self.method == "exact" else _core.GpuCannIvf
            copies.pop(self.method, None)  # free the stale copy's device memory first
            copy = copies[self.method] = make(self._impl, self._ordinal)
        return copy

    def _search_on_device(self, query_descriptors, k: int):
        if self.method not in ("exact", "ivf"):
            raise ValueError(f"method {self.method!r} searches on the CPU only: use method 'exact' or 'ivf' on "
                             "the GPU, or call to_cpu()")
        if self.method == "ivf" and not self.is_trained:
            raise ValueError("the ivf method needs train() first")
        q = np.asarray(query_descriptors)
        if q.dtype == np.uint8:  # the CPU widens uint8 query descriptors the same way
            q = q.astype(np.float32)
        copy = self._method_copy()
        if self.method == "exact":
            return copy.search(q, k, self._kernel, self.dim)
        return copy.search(q, k, self._kernel, int_scalar(self.nprobe, "nprobe"), self.dim)

    def _prepare(self) -> str:
        """Validates the current method (it may be changed between searches) and
        configures the grids once before the first grid search."""
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.method == "grid" and not self._grid_configured:
            self._configure_grid()
        return self.method

    def _configure_grid(self) -> None:
        g = self.grid
        self._impl.set_grid_params(int(g["num_grids"]), int(g["num_radii"]), int(min(g["dims"], self.dim)),
                                   float(g["cell_factor"]), int(g["max_bin"]), int(g["seed"]),
                                   float(self._kernel.cutoff))
        self._grid_configured = True

    dim = property(lambda self: self._impl.dim, doc="Descriptor dimension.")
    ntotal = property(lambda self: self._impl.ntotal, doc="Number of database features.")
    num_images = property(lambda self: self._impl.num_images, doc="Number of distinct images.")
    dtype = property(lambda self: self._impl.dtype,
                     doc="Descriptor dtype ('float32' or 'uint8'), fixed by the first add; None before.")

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        return (f"CANNIndex(dim={self.dim}, method={self.method!r}, kernel={self._kernel_args['kernel']!r}, "
                f"ntotal={self.ntotal}, num_images={self.num_images})")

    is_trained = property(lambda self: self._impl.is_trained, doc="Whether the ivf lists are trained.")
    memory_bytes = property(lambda self: self._impl.memory_bytes,
                            doc="Heap bytes held: features, ids and the search layouts built so far (not the "
                                "pages of a memory-mapped file: see ``mapped_bytes``).")
    mapped_bytes = property(lambda self: self._impl.mapped_bytes,
                            doc="Bytes of the memory-mapped file the index searches in place (0 when not "
                                "loaded with ``mmap=True``, or once a change copied the features out).")
    nlist = property(lambda self: self._impl.nlist, doc="Number of ivf lists (0 before training).")

    def train(self, nlist: Optional[int] = None, iterations: int = 8, seed: int = 0,
              max_points_per_list: int = 64) -> None:
        """Clusters the stored features into ``nlist`` lists for ``method="ivf"``.

        Parameters
        ----------
        nlist : int, optional
            Number of lists; default :func:`default_nlist` (``4 sqrt(ntotal)``).
        iterations : int
            Lloyd iterations of k-means.
        seed : int
        max_points_per_list : int
            k-means trains on at most this many features per list (a random subsample).
        """
        if nlist is None:
            nlist = default_nlist(self.ntotal)
        self._impl.train(int_scalar(nlist, "nlist"), int_scalar(iterations, "iterations"), int_scalar(seed, "seed"),
                         int_scalar(max_points_per_list, "max_points_per_list"))

    def kernel(self, r):
        """The score kernel s(r), for scalars or arrays."""
        return np.vectorize(self._kernel, otypes=[float])(r)

    def add(self, descriptors: np.ndarray, image_ids) -> None:
        """Adds features: descriptors ``float32 or uint8 (n, dim)`` and their image ids.

        ``image_ids`` may be one int (all features from one image) or ``int64 (n,)``. Features
        of an image may arrive over several calls. The first add fixes the dtype. Image ids are
        integers ``>= 0``: ``-1`` marks empty result slots.
        """
        if np.isscalar(image_ids):
            image_ids = np.full(len(descriptors), int_scalar(image_ids, "image_ids"), dtype=np.int64)
        else:
            image_ids = as_ids(image_ids, "image_ids")
        self._impl.add(descriptors, image_ids)

    def search(self, query_descriptors: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """The ``k`` best database images for one query image.

        Parameters
        ----------
        query_descriptors : numpy.ndarray, float32 or uint8, shape (nq, dim)
            The query image's features (nq may be 0: every score is then 0).
        k : int

        Returns
        -------
        scores : float32 (k,)
            S(m), descending; ``-inf`` where fewer than k images exist.
        image_ids : int64 (k,)
            Ties go to the smaller image id; ``-1`` in padded slots.
        """
        if self._ordinal is not None:
            return self._search_on_device(query_descriptors, int_scalar(k, "k"))
        return self._impl.search(query_descriptors, int_scalar(k, "k"), self._kernel, self._prepare(),
                                 int_scalar(self.nprobe, "nprobe"))

    def search_batch(self, query_sets: Sequence[np.ndarray], k: int) -> Tuple[np.ndarray, np.ndarray]:
        """:meth:`search` for many query images in parallel: ``(scores (n, k), image_ids (n, k))``."""
        if self._ordinal is not None:
            k = int_scalar(k, "k")
            results = [self._search_on_device(q, k) for q in query_sets]
            return (np.stack([r[0] for r in results]).reshape(-1, k).astype(np.float32, copy=False),
                    np.stack([r[1] for r in results]).reshape(-1, k).astype(np.int64, copy=False))
        return self._impl.search_batch(list(query_sets), int_scalar(k, "k"), self._kernel, self._prepare(),
                                       int_scalar(self.nprobe, "nprobe"))

    def remove_images(self, image_ids) -> int:
        """Removes every feature of these images; returns the number of features removed."""
        return self._impl.remove_images(as_ids(image_ids, "image_ids").reshape(-1))

    def reset(self) -> None:
        """Removes every feature."""
        self._impl.reset()

    def image_ids(self) -> np.ndarray:
        """The distinct database image ids, ascending."""
        return self._impl.image_ids()

    def image_feature_counts(self) -> np.ndarray:
        """``int64``: the features of each image of :meth:`image_ids`, in the same order."""
        return self._impl.image_feature_counts()

    @property
    def search_options(self) -> dict:
        """The options :meth:`save` stores: ``method``, ``nprobe``, ``kernel``, ``p0``, ``p1``,
        ``sigma`` and ``grid``, as the constructor takes them."""
        return dict(method=self.method, nprobe=self.nprobe, grid=dict(self.grid), **self._kernel_args)

    @property
    def stored_options(self) -> Optional[dict]:
        """The search options read from the file or bytes this index was loaded from (before
        any ``options`` given to :meth:`load`), or None: not loaded, or a file written before
        the options were stored (which then searches with the constructor defaults)."""
        return self._stored_options

    def _store_options(self) -> None:
        """Hands the current search options to the core, which writes them with the features."""
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        g = self.grid
        self._impl.set_search_options(self.method, int_scalar(self.nprobe, "nprobe"), self._kernel,
                                      int(g["num_grids"]), int(g["num_radii"]), int(g["dims"]),
                                      float(g["cell_factor"]), int(g["max_bin"]), int(g["seed"]))

    def save(self, path: PathLike) -> None:
        """Writes the features, trained lists and search options (pylocalize container,
        atomically). A trained index stores its ivf search layout in place of the features in
        insertion order (one copy of the descriptors), so that :meth:`load` searches at once."""
        self._store_options()
        self._impl.save(os.fspath(path))

    @classmethod
    def _from_impl(cls, impl: _core.CannIndex, options: dict) -> "CANNIndex":
        """The index over ``impl`` with its stored search options, ``options`` taking precedence."""
        stored = impl.search_options
        index = cls(impl.dim, _impl=impl, **dict(stored or {}, **options))
        index._stored_options = stored
        return index

    @classmethod
    def load(cls, path: PathLike, mmap: bool = True, **options) -> "CANNIndex":
        """Reads an index written by :meth:`save`, with the search options it stored;
        ``options`` (as in the constructor) replace stored ones.

        With ``mmap``, the ivf layout of a trained index is searched in place in the mapped
        file: nothing is copied or rebuilt, and the pages a search touches are read then. The
        file must then stay unchanged (saves replace it atomically, which is safe). Adding,
        removing, training, or searching by another method first copies the features out of
        the layout (in insertion order). Every section's checksum is verified either way:
        a damaged file raises :class:`pylocalize.FormatError`. Files of trained indexes
        written before the layout was stored (layout 1) load as before and build the layout
        at the first ivf search.
        """
        return cls._from_impl(_core.CannIndex.load(os.fspath(path), mmap=bool(mmap)), options)

    def serialize(self) -> np.ndarray:
        """The features and search options as bytes (``uint8`` array) in the container format."""
        self._store_options()
        return self._impl.serialize()

    @classmethod
    def deserialize(cls, data: np.ndarray, **options) -> "CANNIndex":
        """Reads bytes from :meth:`serialize`; ``options`` as in :meth:`load`."""
        return cls._from_impl(_core.CannIndex.deserialize(np.ascontiguousarray(data, dtype=np.uint8)), options)

    def __reduce__(self):
        return (_rebuild, (self.serialize(), dict(metric=self.metric, **self.search_options)))


def _rebuild(data, options):
    return CANNIndex.deserialize(data, **options)
