"""Feature layers of a map: one kind of local feature of its database images with the 3D
points they observe.

A :class:`~pylocalize.localization.map.Map` always holds SIFT (its ``"sift"`` layer: the
map's own arrays, retrieved by CANN). It may also hold binary layers (``"orb"``:
:class:`~pylocalize.features.orb.OrbExtractor`), the fast features for frames of a stream:
extracted from the same database images, matched and triangulated under the same known
poses (:func:`~pylocalize.localization.triangulation.triangulate` with Hamming matching),
searched by Hamming distance on the core's :class:`~pylocalize.index.binary.BinaryIndex`.

A binary layer has its own 3D points. ORB corners and SIFT blobs are different image
locations, so their tracks seldom coincide; sharing one point array would mean merging
tracks across kinds by position for no gain in matching, and a pose from either layer is in
the map's one world frame anyway.

In ``map.pyloc`` a binary layer ``NAME`` is the sections ``NAME.counts`` (features per
image), ``NAME.keypoints``, ``NAME.descriptors``, ``NAME.point_ids`` and ``NAME.points3D``,
and its extractor's options under ``layers`` in the JSON info; the index is rebuilt from the
observed descriptors at load (32 bytes a feature, milliseconds), not stored twice.
"""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from pylocalize.features import OrbExtractor, match_descriptors
from pylocalize.features.orb import DESCRIPTOR_BYTES
from pylocalize.index.binary import BinaryIndex

# binary layers a map can hold besides SIFT: name -> (extractor, descriptor bytes)
BINARY_EXTRACTORS = {"orb": (OrbExtractor, DESCRIPTOR_BYTES)}
FEATURE_KINDS = ("sift",) + tuple(BINARY_EXTRACTORS)
LAYER_SECTIONS = ("counts", "keypoints", "descriptors", "point_ids", "points3D")
# Query features whose matches vote for database images (evenly spaced among the query's): the
# vote scans the whole layer, so it costs this many features' search, not the query's 2000;
# a few hundred matches pick the co-visible images as well as all of them
VOTE_FEATURES = 500


class FeatureLayer(NamedTuple):
    """One kind of local feature of a map's database images with the 3D points they observe:
    what 2D-3D matching reads, per frame (:meth:`Map.localize`) or along a stream (tracking).

    ``metric`` says how descriptors compare: ``"l2"`` for RootSIFT stored as uint8 (n, 128),
    ``"hamming"`` for binary descriptors packed 8 bits a byte, uint8 (n, bytes).
    """

    name: str
    keypoints: List[np.ndarray]  # per image, float32 (n, 2), OpenCV pixels
    descriptors: List[np.ndarray]  # per image, uint8 (n, d)
    point_ids: List[np.ndarray]  # per image, int (n,): index into points3D, -1 for none
    points3D: np.ndarray  # float64 (m, 3), world frame
    metric: str


def check_kind(name: str) -> str:
    """``name`` if it names a kind of feature a map can hold, else a ``ValueError`` listing them."""
    if name not in FEATURE_KINDS:
        raise ValueError(f"unknown features {name!r}; a map holds {', '.join(FEATURE_KINDS)}")
    return name


def binary_extractor(name: str, options: Optional[dict] = None):
    """A new extractor of binary layer ``name`` with ``options`` (its constructor's
    arguments); ``ValueError`` for another name or options the extractor refuses."""
    if name not in BINARY_EXTRACTORS:
        raise ValueError(f"{name!r} is not a binary feature layer; binary layers: {', '.join(BINARY_EXTRACTORS)}")
    return BINARY_EXTRACTORS[name][0](**(options or {}))


class BinaryLayer:
    """A binary feature layer and the :class:`BinaryIndex` over its observed descriptors
    (those with a 3D point), in image order: what its 2D-3D matching and image votes search.

    Raises ``ValueError`` naming the layer when the arrays disagree (one array of each per
    image, one descriptor of the kind's width and one point id per keypoint, point ids in
    range, finite geometry) or the extractor options are not the kind's.
    """

    def __init__(self, name: str, keypoints: Sequence[np.ndarray], descriptors: Sequence[np.ndarray],
                 point_ids: Sequence[np.ndarray], points3D: np.ndarray, options: Optional[dict] = None,
                 num_images: Optional[int] = None):
        self.name, self.options = name, binary_extractor(name, options).options()
        width = BINARY_EXTRACTORS[name][1]
        self.keypoints, self.descriptors, self.point_ids = list(keypoints), list(descriptors), list(point_ids)
        self.points3D = np.asarray(points3D)
        n = len(self.keypoints) if num_images is None else num_images
        if not len(self.keypoints) == len(self.descriptors) == len(self.point_ids) == n:
            raise ValueError(f"feature layer {name!r}: needs one keypoint, descriptor and point-id array per image "
                             f"({n}), got {len(self.keypoints)}, {len(self.descriptors)} and {len(self.point_ids)}")
        if self.points3D.dtype != np.float64 or self.points3D.ndim != 2 or self.points3D.shape[1] != 3 or \
                not np.isfinite(self.points3D).all():
            raise ValueError(f"feature layer {name!r}: points3D must be finite float64 (m, 3), got "
                             f"{self.points3D.dtype} {self.points3D.shape}")
        for i, (k, d, p) in enumerate(zip(self.keypoints, self.descriptors, self.point_ids)):
            if k.dtype != np.float32 or k.ndim != 2 or k.shape[1] != 2 or not np.isfinite(k).all():
                raise ValueError(f"feature layer {name!r}, image {i}: keypoints must be finite float32 (n, 2)")
            if d.dtype != np.uint8 or d.shape != (len(k), width):
                raise ValueError(f"feature layer {name!r}, image {i}: descriptors must be uint8 ({len(k)}, {width}), "
                                 f"got {d.dtype} {d.shape}")
            if p.dtype != np.int64 or p.shape != (len(k),) or (len(p) and (p.min() < -1 or p.max() >= len(points3D))):
                raise ValueError(f"feature layer {name!r}, image {i}: point ids must be int64, one per keypoint, "
                                 f"-1 or an index into its {len(points3D)} points")
        observed = [p >= 0 for p in self.point_ids]
        self._offsets = np.concatenate([[0], np.cumsum([int(o.sum()) for o in observed])]).astype(np.int64)
        self._codes = np.concatenate([d[o] for d, o in zip(self.descriptors, observed)]) if n else \
            np.zeros((0, width), np.uint8)
        self._point_of_row = np.concatenate([p[o] for p, o in zip(self.point_ids, observed)]) if n else \
            np.zeros(0, np.int64)
        self._image_of_row = np.repeat(np.arange(n, dtype=np.int64), np.diff(self._offsets))
        self.index = BinaryIndex(8 * width)
        if len(self._codes):
            self.index.add(np.ascontiguousarray(self._codes))

    @property
    def layer(self) -> FeatureLayer:
        return FeatureLayer(self.name, self.keypoints, self.descriptors, self.point_ids, self.points3D, "hamming")

    @property
    def descriptor_bytes(self) -> int:
        return BINARY_EXTRACTORS[self.name][1]

    def extractor(self):
        """A new extractor of this layer's kind and options (one per thread)."""
        return binary_extractor(self.name, self.options)

    def _images(self, images: Sequence[int]) -> List[int]:
        """Database image indices, sorted and once each; ``ValueError`` for one outside the map."""
        order = sorted(set(int(i) for i in images))
        if order and (order[0] < 0 or order[-1] >= len(self.keypoints)):
            raise ValueError(f"image index {order[0] if order[0] < 0 else order[-1]} is outside the map's "
                             f"{len(self.keypoints)} images")
        return order

    def num_observations(self, images: Sequence[int]) -> int:
        return sum(int(self._offsets[i + 1] - self._offsets[i]) for i in self._images(images))

    def match_2d3d(self, descriptors: np.ndarray, images: Sequence[int], ratio: float) -> Tuple[np.ndarray, np.ndarray]:
        """``(query_ids, point3D_ids)``: the group-aware, mutual ratio test of
        :meth:`Map.match_2d3d` by Hamming distance, against the observed features of
        ``images``; every image searches the layer's index as it is, a subset a new index
        of its rows."""
        order = self._images(images)
        if not order:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        if len(order) == len(self.keypoints):
            pairs = match_descriptors(descriptors, self._codes, ratio, groups_b=self._point_of_row,
                                      metric="hamming", index_b=self.index)
            return pairs[:, 0], self._point_of_row[pairs[:, 1]]
        rows = np.concatenate([np.arange(self._offsets[i], self._offsets[i + 1]) for i in order])
        pairs = match_descriptors(descriptors, self._codes[rows], ratio, groups_b=self._point_of_row[rows],
                                  metric="hamming")
        return pairs[:, 0], self._point_of_row[rows[pairs[:, 1]]]

    def vote(self, descriptors: np.ndarray, ratio: float) -> np.ndarray:
        """Votes ``int64 (num_images,)``: the 3D points the query's descriptors (at most
        :data:`VOTE_FEATURES` of them, evenly spaced) match in the whole layer (group-aware
        ratio test on the layer's index, no mutual check) that each image observes. The
        retrieval of a binary layer: a query given as binary features has nothing CANN could
        search."""
        votes = np.zeros(len(self.keypoints), np.int64)
        if len(self._codes) < 2 or len(descriptors) == 0:
            return votes
        if len(descriptors) > VOTE_FEATURES:
            descriptors = descriptors[np.linspace(0, len(descriptors) - 1, VOTE_FEATURES).astype(np.int64)]
        pairs = match_descriptors(descriptors, self._codes, ratio, mutual=False, groups_b=self._point_of_row,
                                  metric="hamming", index_b=self.index)
        seen = np.isin(self._point_of_row, self._point_of_row[pairs[:, 1]])
        return votes + np.bincount(self._image_of_row[seen], minlength=len(votes))

    # ------------------------------------------------------------------ files

    def sections(self) -> Dict[str, object]:
        """The layer's sections of ``map.pyloc`` (per-image arrays as lists of pieces: written
        in turn, never joined)."""
        def pieces(arrays, empty):
            return [np.ascontiguousarray(a) for a in arrays] if arrays else empty

        return {f"{self.name}.counts": np.array([len(k) for k in self.keypoints], np.int64),
                f"{self.name}.keypoints": pieces(self.keypoints, np.zeros((0, 2), np.float32)),
                f"{self.name}.descriptors": pieces(self.descriptors, np.zeros((0, self.descriptor_bytes), np.uint8)),
                f"{self.name}.point_ids": pieces(self.point_ids, np.zeros(0, np.int64)),
                f"{self.name}.points3D": np.ascontiguousarray(self.points3D)}

    @classmethod
    def from_sections(cls, name: str, options, sections: dict, num_images: int) -> "BinaryLayer":
        """The layer ``name`` of a map file's sections; ``ValueError`` naming the layer when a
        section is missing or does not fit the others (the caller makes it a FormatError)."""
        if name not in BINARY_EXTRACTORS:
            raise ValueError(f"feature layer {name!r}: not a kind this pylocalize reads ({', '.join(FEATURE_KINDS)})")
        if not isinstance(options, dict):
            raise ValueError(f"feature layer {name!r}: its extractor options are not a JSON object")
        missing = [s for s in LAYER_SECTIONS if f"{name}.{s}" not in sections]
        if missing:
            raise ValueError(f"feature layer {name!r}: section {name}.{missing[0]} is missing")
        counts = np.asarray(sections[f"{name}.counts"])
        if counts.dtype != np.int64 or counts.shape != (num_images,) or (counts < 0).any():
            raise ValueError(f"feature layer {name!r}: {name}.counts is {counts.dtype} {counts.shape}, expected "
                             f"non-negative int64 ({num_images},)")
        arrays = [sections[f"{name}.{s}"] for s in ("keypoints", "descriptors", "point_ids")]
        if any(len(a) != counts.sum() for a in arrays):
            raise ValueError(f"feature layer {name!r}: its sections hold {[len(a) for a in arrays]} features, its "
                             f"counts {int(counts.sum())}")
        split = np.cumsum(counts)[:-1]
        return cls(name, *(np.split(a, split) if num_images else [] for a in arrays), sections[f"{name}.points3D"],
                   options, num_images)
