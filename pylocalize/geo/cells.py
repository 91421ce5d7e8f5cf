"""Adaptive S2 cell hierarchies built from a training set's GPS (Clark et al., CVPR 2023).

Geo-localization as classification needs classes: cells of the S2 quadtree over the sphere,
split where photos are dense and dropped where they are rare. One *hierarchy* (granularity)
starts from the six cube faces and splits every cell holding more than ``max_images``
training photos into its four children, recursively; cells left with fewer than
``min_images`` photos are dropped (their photos get no class at that granularity, and none
at finer ones). Several granularities are built coarse to fine, each by refining the cells
kept at the previous one, so every finer cell lies inside exactly one coarser cell: the
parent map that lets coarse probabilities multiply into finer ones
(:meth:`CellHierarchy.hierarchical_probabilities`). A cell's GPS is the mean of its photos
on the sphere (the normalised mean of their unit vectors), the point a classifier predicts.

S2 cell ids follow the S2 geometry library exactly (quadratic projection, Hilbert curve
order, 64-bit ids) and are checked against ``s2sphere`` in the tests. The lat/lng to leaf
cell id transform is written here in numpy because ``s2sphere`` works one Python object
per point, far too slow for a million photos (``benchmarks/bench_geo.py`` measures both and
checks the ids agree; the figures are in ``benchmarks/README.md``). Everything
after the leaf ids is integer arithmetic on sorted ids: the ancestor of a leaf at level
``L`` is a bit mask, and a cell covers the contiguous leaf id range
``[id - lsb + 1, id + lsb - 1]`` with ``lsb = 4**(30 - L)``.

Limits: a cell is never split below S2 level 30 (about 1 cm), so more than ``max_images``
photos at one identical position stay in one oversized leaf cell.
"""

from __future__ import annotations

import json
import os
from typing import List, Sequence, Union

import numpy as np

from pylocalize import _core
from pylocalize._core import FormatError
from pylocalize.containers import LAYOUT_ERRORS, read_layout

FORMAT_TAG = "GeoCellHierarchy"
# Layout version of a saved hierarchy; bumped when sections or meta change.
HIERARCHY_VERSION = 1

MAX_LEVEL = 30
_SWAP, _INVERT = 1, 2
# Hilbert curve tables of the S2 library: position of child (i, j) in curve order for each
# of the four orientations, and how the orientation changes when descending into a child.
_IJ_TO_POS = np.array([[0, 1, 3, 2], [0, 3, 1, 2], [2, 3, 1, 0], [2, 1, 3, 0]], np.int64)
_POS_TO_ORIENTATION = np.array([_SWAP, 0, 0, _INVERT | _SWAP], np.int64)


def _lookup_tables():
    """Four levels at once: (orientation, 4 bits of i, 4 bits of j) -> (8 position bits,
    orientation after them), 1024 entries, so the 30 levels take 8 vectorised steps."""
    pos = np.zeros((4, 16, 16), np.int64)
    orientation = np.zeros((4, 16, 16), np.int64)
    for o in range(4):
        for i in range(16):
            for j in range(16):
                cur, p = o, 0
                for k in range(3, -1, -1):
                    child = _IJ_TO_POS[cur, (((i >> k) & 1) << 1) | ((j >> k) & 1)]
                    p = (p << 2) | int(child)
                    cur ^= int(_POS_TO_ORIENTATION[child])
                pos[o, i, j], orientation[o, i, j] = p, cur
    return pos, orientation


_LOOKUP_POS, _LOOKUP_ORIENTATION = _lookup_tables()


def check_latlon(latlon, name: str = "latlon") -> np.ndarray:
    """``latlon`` as float64 ``(n, 2)`` degrees, or a ``ValueError`` that says what to fix."""
    arr = np.asarray(latlon)
    if arr.ndim == 1 and arr.shape == (2,):
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must be (n, 2) latitude, longitude in degrees, got shape {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be numeric degrees, got {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    bad = ~np.isfinite(arr).all(1)
    if bad.any():
        raise ValueError(f"{name} has NaN or Inf in {int(bad.sum())} rows (first: row {int(np.flatnonzero(bad)[0])}); "
                         "drop those photos or fill in their coordinates")
    bad = (np.abs(arr[:, 0]) > 90) | (np.abs(arr[:, 1]) > 180)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name} row {r} is ({arr[r, 0]}, {arr[r, 1]}): latitude must be in [-90, 90] and longitude "
                         "in [-180, 180] degrees (columns lat, lon; wrap longitudes with ((lon + 180) % 360) - 180)")
    return arr


def latlon_to_xyz(latlon) -> np.ndarray:
    """Unit vectors ``float64 (n, 3)`` of ``(n, 2)`` latitude, longitude degrees."""
    ll = np.radians(check_latlon(latlon))
    cos_lat = np.cos(ll[:, 0])
    return np.stack([np.cos(ll[:, 1]) * cos_lat, np.sin(ll[:, 1]) * cos_lat, np.sin(ll[:, 0])], 1)


def xyz_to_latlon(xyz: np.ndarray) -> np.ndarray:
    """Latitude, longitude degrees ``(n, 2)`` of (not necessarily unit) vectors ``(n, 3)``."""
    xyz = np.asarray(xyz, np.float64)
    lat = np.degrees(np.arctan2(xyz[:, 2], np.hypot(xyz[:, 0], xyz[:, 1])))
    lon = np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0]))
    return np.stack([lat, lon], 1)


def s2_leaf_ids(latlon) -> np.ndarray:
    """S2 leaf (level 30) cell ids ``uint64 (n,)`` of ``(n, 2)`` latitude, longitude degrees,
    equal to ``s2sphere.CellId.from_lat_lng(LatLng.from_degrees(lat, lon)).id()``."""
    p = latlon_to_xyz(latlon)
    a = np.abs(p)
    # the largest component picks the cube face, ties as the S2 library breaks them
    face = np.where(a[:, 0] > a[:, 1], np.where(a[:, 0] > a[:, 2], 0, 2), np.where(a[:, 1] > a[:, 2], 1, 2))
    rows = np.arange(len(p))
    face = face + 3 * (p[rows, face] < 0)
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        faces = [face == f for f in range(5)]  # face 5 is the default
        u = np.select(faces, [y / x, -x / y, -x / z, z / x, z / y], -y / z)
        v = np.select(faces, [z / x, z / y, -y / z, y / x, -x / y], -x / z)
    ij = []
    for w in (u, v):
        # the quadratic projection of the S2 library, then the 2**30 grid of leaf cells
        s = np.where(w >= 0, 0.5 * np.sqrt(1 + 3 * np.maximum(w, 0)), 1 - 0.5 * np.sqrt(1 - 3 * np.minimum(w, 0)))
        ij.append(np.clip(np.floor(s * (1 << MAX_LEVEL)), 0, (1 << MAX_LEVEL) - 1).astype(np.int64))
    i, j = ij
    orientation = face & _SWAP
    pos = np.zeros(len(p), np.int64)
    for k in range(7, -1, -1):  # 4 levels a step; the top step holds 2 zero bits, which keep pos 0
        ii, jj = (i >> (4 * k)) & 15, (j >> (4 * k)) & 15
        pos = (pos << 8) | _LOOKUP_POS[orientation, ii, jj]
        orientation = _LOOKUP_ORIENTATION[orientation, ii, jj]
    return (face.astype(np.uint64) << np.uint64(61)) | (pos.astype(np.uint64) << np.uint64(1)) | np.uint64(1)


def _lsb(level) -> np.ndarray:
    return np.uint64(1) << (np.uint64(2) * (np.uint64(MAX_LEVEL) - np.asarray(level, np.uint64)))


def s2_parent(ids: np.ndarray, level) -> np.ndarray:
    """Ancestors ``uint64`` at S2 ``level`` (a scalar or one per id) of cell ids at that level or finer."""
    lsb = _lsb(level)
    return (np.asarray(ids, np.uint64) & ~(lsb - np.uint64(1))) | lsb


def s2_range(ids: np.ndarray, levels) -> tuple:
    """First and last leaf ids ``uint64`` covered by cells ``ids`` at S2 ``levels``."""
    lsb = _lsb(levels)
    ids = np.asarray(ids, np.uint64)
    return ids - (lsb - np.uint64(1)), ids + (lsb - np.uint64(1))


def _partition(sorted_leaf: np.ndarray, start_level: np.ndarray, alive: np.ndarray, max_images: int):
    """Splits S2 cells holding more than ``max_images`` of the ``alive`` points, never above a
    point's ``start_level``. Returns the cells' ids, levels and counts (Hilbert order)."""
    ids, levels, counts = [], [], []
    active = alive.copy()
    for level in range(MAX_LEVEL + 1):
        eligible = np.flatnonzero(active & (start_level <= level))
        if len(eligible) == 0:
            if not active.any():
                break
            continue
        cells = s2_parent(sorted_leaf[eligible], level)  # sorted, as the leaves are
        starts = np.flatnonzero(np.r_[True, cells[1:] != cells[:-1]])
        count = np.diff(np.r_[starts, len(cells)])
        final = count <= max_images if level < MAX_LEVEL else np.ones(len(count), bool)
        ids.append(cells[starts[final]])
        levels.append(np.full(int(final.sum()), level, np.int8))
        counts.append(count[final])
        active[eligible[np.repeat(final, count)]] = False
    ids = np.concatenate(ids) if ids else np.zeros(0, np.uint64)
    levels = np.concatenate(levels) if levels else np.zeros(0, np.int8)
    counts = np.concatenate(counts) if counts else np.zeros(0, np.int64)
    order = np.argsort(ids, kind="stable")
    return ids[order], levels[order], counts[order]


def _locate(leaf: np.ndarray, ids: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Index of the cell (disjoint, sorted by id) holding each leaf id, -1 where none does."""
    if len(ids) == 0:
        return np.full(len(leaf), -1, np.int64)
    lo, hi = s2_range(ids, levels)
    k = np.searchsorted(lo, leaf, side="right") - 1
    kc = np.maximum(k, 0)
    return np.where((k >= 0) & (leaf <= hi[kc]), kc, -1).astype(np.int64)


def _as_levels(value, num: int, name: str) -> List[int]:
    values = [int(v) for v in (value if isinstance(value, (list, tuple, np.ndarray)) else [value])]
    if len(values) == 1:
        values = values * num
    if len(values) != num:
        raise ValueError(f"{name} needs one value per granularity ({num}), got {len(values)}")
    return values


class CellHierarchy:
    """Adaptive S2 cells at several granularities, coarse to fine, with parent maps.

    Build with :meth:`from_latlon`. Attributes, one entry per granularity ``h``:

    Attributes
    ----------
    cell_ids : list of uint64 (num_cells[h],)
        S2 cell ids in Hilbert order; the class id of a cell is its index here.
    levels : list of int8 (num_cells[h],)
        S2 level of each cell (0 = cube face, 30 = leaf).
    counts : list of int64 (num_cells[h],)
        Training photos in each cell.
    centers : list of float64 (num_cells[h], 2)
        Mean GPS (latitude, longitude degrees) of each cell's photos, on the sphere.
    parents : list of int64 (num_cells[h],)
        Class id of the coarser cell (granularity ``h - 1``) holding each cell; all ``-1``
        at ``h = 0``.
    max_images, min_images : list of int
    """

    def __init__(self, cell_ids, levels, counts, centers, parents, max_images, min_images):
        self.cell_ids = [np.ascontiguousarray(a, np.uint64) for a in cell_ids]
        self.levels = [np.ascontiguousarray(a, np.int8) for a in levels]
        self.counts = [np.ascontiguousarray(a, np.int64) for a in counts]
        self.centers = [np.ascontiguousarray(a, np.float64).reshape(-1, 2) for a in centers]
        self.parents = [np.ascontiguousarray(a, np.int64) for a in parents]
        self.max_images = [int(v) for v in max_images]
        self.min_images = [int(v) for v in min_images]
        self._validate()

    def _validate(self) -> None:
        num = len(self.cell_ids)
        if num == 0:
            raise ValueError("a cell hierarchy needs at least one granularity")
        for name in ("levels", "counts", "centers", "parents", "max_images", "min_images"):
            if len(getattr(self, name)) != num:
                raise ValueError(f"{name} has {len(getattr(self, name))} granularities, cell_ids {num}")
        for h in range(num):
            n = len(self.cell_ids[h])
            for name in ("levels", "counts", "centers", "parents"):
                if len(getattr(self, name)[h]) != n:
                    raise ValueError(f"granularity {h}: {name} has {len(getattr(self, name)[h])} rows for {n} cells")
            if n and (self.levels[h].min() < 0 or self.levels[h].max() > MAX_LEVEL):
                raise ValueError(f"granularity {h}: S2 levels must be in 0..30")
            if np.any(self.cell_ids[h][1:] <= self.cell_ids[h][:-1]):
                raise ValueError(f"granularity {h}: cell ids must be strictly increasing (Hilbert order)")
            if h == 0:
                if np.any(self.parents[h] != -1):
                    raise ValueError("the coarsest granularity has no parents: parents[0] must be all -1")
            elif n and (self.parents[h].min() < 0 or self.parents[h].max() >= len(self.cell_ids[h - 1])):
                raise ValueError(f"granularity {h}: parent ids must index granularity {h - 1}'s cells")

    # ------------------------------------------------------------------ building

    @classmethod
    def from_latlon(cls, latlon, max_images: Union[int, Sequence[int]] = (5000, 2000, 1000),
                    min_images: Union[int, Sequence[int]] = 50) -> "CellHierarchy":
        """Builds the hierarchy from training GPS.

        Parameters
        ----------
        latlon : float (n, 2)
            Latitude, longitude of the training photos, degrees.
        max_images : int or sequence of int
            One granularity per value, coarse to fine (decreasing): a cell with more photos
            is split into its four S2 children. Default (5000, 2000, 1000), the scale of the
            paper's hierarchies; scale it with the training set's size.
        min_images : int or sequence of int
            Cells with fewer photos are dropped (one value, or one per granularity).
        """
        max_images = _as_levels(max_images, len(max_images) if isinstance(max_images, (list, tuple, np.ndarray))
                                else 1, "max_images")
        min_images = _as_levels(min_images, len(max_images), "min_images")
        if any(m < 1 for m in max_images) or any(b > a for a, b in zip(max_images, max_images[1:])):
            raise ValueError(f"max_images must be positive and non-increasing, coarse to fine; got {max_images}")
        if any(m < 0 for m in min_images) or any(lo > hi for lo, hi in zip(min_images, max_images)):
            raise ValueError(f"min_images {min_images} must be in 0..max_images {max_images} per granularity")
        leaf = s2_leaf_ids(latlon)
        if len(leaf) == 0:
            raise ValueError("no training coordinates: give at least one (lat, lon) row")
        order = np.argsort(leaf, kind="stable")
        sorted_leaf = leaf[order]
        xyz = latlon_to_xyz(latlon)[order]
        start_level = np.zeros(len(leaf), np.int64)
        alive = np.ones(len(leaf), bool)
        cell_ids, levels, counts, centers, parents = [], [], [], [], []
        for h, (hi, lo) in enumerate(zip(max_images, min_images)):
            ids, lv, cnt = _partition(sorted_leaf, start_level, alive, hi)
            keep = cnt >= lo
            ids, lv, cnt = ids[keep], lv[keep], cnt[keep]
            cell = _locate(sorted_leaf, ids, lv)
            inside = cell >= 0
            sums = np.stack([np.bincount(cell[inside], xyz[inside, c], len(ids)) for c in range(3)], 1)
            if h == 0:
                parent = np.full(len(ids), -1, np.int64)
            else:
                parent = _locate(s2_range(ids, lv)[0], cell_ids[-1], levels[-1])
            cell_ids.append(ids)
            levels.append(lv)
            counts.append(cnt)
            centers.append(xyz_to_latlon(sums))
            parents.append(parent)
            # finer granularities refine the cells kept here: never above their level, never
            # in a dropped cell
            alive = inside
            start_level = np.where(inside, lv[np.maximum(cell, 0)], 0).astype(np.int64)
        return cls(cell_ids, levels, counts, centers, parents, max_images, min_images)

    # ------------------------------------------------------------------ queries

    @property
    def num_hierarchies(self) -> int:
        """Number of granularities."""
        return len(self.cell_ids)

    @property
    def num_cells(self) -> List[int]:
        """Cells (classes) per granularity, coarse to fine."""
        return [len(c) for c in self.cell_ids]

    def __repr__(self) -> str:
        return f"CellHierarchy(num_cells={self.num_cells}, max_images={self.max_images}, min_images={self.min_images})"

    def cell_of(self, latlon) -> np.ndarray:
        """Class ids ``int64 (n, num_hierarchies)`` of ``(n, 2)`` latitude, longitude degrees;
        ``-1`` where the point is in no kept cell (a dropped sparse cell, or an area without
        training photos)."""
        leaf = s2_leaf_ids(latlon)
        return np.stack([_locate(leaf, ids, lv) for ids, lv in zip(self.cell_ids, self.levels)], 1) \
            if len(leaf) else np.zeros((0, self.num_hierarchies), np.int64)

    def ancestors(self) -> np.ndarray:
        """``int64 (num_cells[-1], num_hierarchies)``: each finest cell's class id at every granularity."""
        out = np.empty((self.num_cells[-1], self.num_hierarchies), np.int64)
        out[:, -1] = np.arange(self.num_cells[-1])
        for h in range(self.num_hierarchies - 1, 0, -1):
            out[:, h - 1] = self.parents[h][out[:, h]]
        return out

    def hierarchical_probabilities(self, probabilities: Sequence[np.ndarray]) -> List[np.ndarray]:
        """Multiplies coarse probabilities into finer ones through the parent maps.

        Parameters
        ----------
        probabilities : sequence of float (n, num_cells[h]), one per granularity
            Per-granularity class probabilities (softmax outputs).

        Returns
        -------
        list of float64 (n, num_cells[h])
            ``q[0] = p[0]``; ``q[h][c] = p[h][c] * q[h-1][parent(c)]``: the finest entry is the
            product of a cell's probabilities at every granularity.
        """
        if len(probabilities) != self.num_hierarchies:
            raise ValueError(f"give one probability array per granularity ({self.num_hierarchies}), "
                             f"got {len(probabilities)}")
        out = []
        for h, p in enumerate(probabilities):
            p = np.asarray(p, np.float64)
            if p.ndim != 2 or p.shape[1] != self.num_cells[h] or (out and len(p) != len(out[0])):
                raise ValueError(f"probabilities[{h}] must be (n, {self.num_cells[h]}), got shape {p.shape}")
            out.append(p if h == 0 else p * out[-1][:, self.parents[h]])
        return out

    # ------------------------------------------------------------------ files

    def _sections(self):
        info = {"kind": "S2 adaptive cells"}
        sections = {"info": np.frombuffer(json.dumps(info).encode("utf-8"), np.uint8).copy(),
                    "max_images": np.asarray(self.max_images, np.int64),
                    "min_images": np.asarray(self.min_images, np.int64)}
        for h in range(self.num_hierarchies):
            sections[f"cell_ids_{h}"] = self.cell_ids[h]
            sections[f"levels_{h}"] = self.levels[h].astype(np.uint8)  # the container has no int8
            sections[f"counts_{h}"] = self.counts[h]
            sections[f"centers_{h}"] = self.centers[h]
            sections[f"parents_{h}"] = self.parents[h]
        meta = {"hierarchy_version": HIERARCHY_VERSION, "num_hierarchies": self.num_hierarchies}
        return meta, sections

    def save(self, path) -> None:
        """Writes the hierarchy as one versioned pylocalize container, atomically."""
        meta, sections = self._sections()
        _core.write_container(os.fspath(path), FORMAT_TAG, meta, sections)

    def serialize(self) -> np.ndarray:
        """The container's bytes as ``uint8``, for embedding in another file."""
        meta, sections = self._sections()
        return _core.write_container(None, FORMAT_TAG, meta, sections)

    @classmethod
    def load(cls, source) -> "CellHierarchy":
        """Reads :meth:`save` output (a path) or :meth:`serialize` output (a ``uint8`` array);
        a corrupt file, another version or another kind of file raises
        :class:`pylocalize.FormatError`."""
        meta, sec = read_layout(source, FORMAT_TAG, "hierarchy_version", HIERARCHY_VERSION, "a cell hierarchy",
                                "build the cells again (pylocalize geo cells)")
        name = "data" if isinstance(source, np.ndarray) else source
        try:
            num = int(meta["num_hierarchies"])
            fields = [[sec[f"{key}_{h}"] for h in range(num)] for key in ("cell_ids", "levels", "counts", "centers",
                                                                        "parents")]
            return cls(*fields, sec["max_images"].tolist(), sec["min_images"].tolist())
        except LAYOUT_ERRORS as error:
            raise FormatError(f"{name}: not a valid {FORMAT_TAG} ({error})") from error


__all__ = ["CellHierarchy", "check_latlon", "latlon_to_xyz", "s2_leaf_ids", "s2_parent", "s2_range", "xyz_to_latlon"]
