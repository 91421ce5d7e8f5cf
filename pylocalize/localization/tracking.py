"""Tracking a camera stream against a localization map, frame by frame, using the last pose.

A robot's camera delivers frames tens of milliseconds apart; each moves little from the one
before. :class:`Tracker` localizes every frame against the map (so the trajectory never
drifts) but spends on it what tracking needs, not what a photo from nowhere needs:

1. *features*: fast ones (:class:`SiftFrameFeatures`: SIFT of the frame at a reduced
   resolution; any extractor of the map's feature layer, e.g. binary ORB);
2. *prediction* (:func:`predict_pose`): the last pose moved on by the last velocity (a
   constant-velocity model over the time since, through the SE(3) exponential), or by an
   odometry delta when one is given;
3. *local map*: the map images nearest the predicted camera (centre distance, viewing
   direction) and the 3D points they observe, projected into the predicted view
   (:func:`project_points`);
4. *guided matching* (:func:`guided_matches`): each frame feature against the projected
   observations within a search radius only, with a ratio test against other 3D points in
   that radius and one feature per 3D point;
5. *pose from the prior* (:func:`~pylocalize.geometry.absolute_pose.refine_absolute_pose`):
   Cauchy-robust refinement from the predicted pose; if it keeps too few inliers, matching
   again in a wider radius, then LO-RANSAC over those matches (a pose found so is matched
   again in the normal radius around it and refined);
6. *sub-pixel refinement* (:mod:`~pylocalize.localization.patches`), where the map holds
   image patches of its points (:meth:`Map.add_patches`): each point in view, its patch
   warped into the frame by the pose found and aligned there by Lucas-Kanade, then the pose
   refined on those positions, weighted by each alignment's information: precise where fast
   keypoints are not (benchmarks/README.md);
7. *relocalization*, when tracking is lost (first frame, a teleported "kidnapped" robot, a
   long gap): the full pipeline, CANN retrieval over the map (:meth:`Map.localize_features`
   on the frame's features, then :meth:`Map.localize` on the full frame).

Each :class:`TrackingResult` says whether the frame was ``"tracked"``, ``"relocalized"`` or
``"lost"`` (no pose), and how long each step took.

The tracker works on any feature layer of the map (:meth:`Map.feature_layer`): ``"l2"``
descriptors (SIFT) are compared by Euclidean distance, ``"hamming"`` ones (bits packed 8 a
byte) by popcount. Distances are computed only for the frame feature / candidate pairs
inside the search radius (a few per feature), found with a uniform grid: cheaper than a
kNN of every frame feature against every visible candidate (benchmarks/README.md).

Limits: one camera (no rig); relocalization runs CANN over the map's SIFT: a frame tracked
on a binary layer of the map relocalizes with the map's localization on that layer
(``Map.localize_features(..., features=name)``), then, failing that, from its pixels.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from pylocalize.geometry.absolute_pose import estimate_absolute_pose, refine_absolute_pose
from pylocalize.geometry.camera import Camera
from pylocalize.geometry.poses import compose_poses, invert_pose, motion_power
from pylocalize.localization.map import FeatureLayer, Map, QueryCamera
from pylocalize.localization.patches import align_patches_fitted, local_affines, prepare_image
from pylocalize.localization.triangulation import camera_centres

logger = logging.getLogger(__name__)

STATUSES = ("tracked", "relocalized", "lost")
METRICS = ("l2", "hamming")
# Descriptor distance above which no match is made, per metric: RootSIFT stored as uint8 has
# norm 512 (unrelated descriptors lie ~350-450 apart); ORB's 256 bits, the usual 64.
DEFAULT_MAX_DISTANCE = {"l2": 300.0, "hamming": 64.0}
# OpenCV's SIFT finds its first octave on the image upsampled twice (centre-aligned) but
# halves those coordinates as they are, so its keypoints sit a quarter of an input pixel
# right of and below the pixel-centre convention. A map and a query of one resolution share
# the shift; a frame extracted at another scale must be brought to the map's (the quarter
# pixel removed at the frame's scale, added back at the map's): left in, it turned the pose
# by ~0.03 deg at half resolution (benchmarks/README.md).
OPENCV_SIFT_SHIFT_PX = 0.25


def spread_evenly(pixels: np.ndarray, k: int, size: Tuple[int, int], cell_px: int = 32) -> np.ndarray:
    """Indices of at most ``k`` of ``pixels`` (n, 2) spread evenly over an image of ``size``
    (width, height): the cells of a ``cell_px`` grid take turns giving one point each, in
    the points' order within a cell; all of them, in order, when ``k >= n``."""
    n = len(pixels)
    if k >= n:
        return np.arange(n)
    columns = int(np.ceil(size[0] / cell_px))
    cells = (np.clip(pixels[:, 1] // cell_px, 0, None) * columns + np.clip(pixels[:, 0] // cell_px, 0, columns - 1))
    order = np.argsort(cells, kind="stable")
    sorted_cells = cells[order]
    starts = np.searchsorted(sorted_cells, sorted_cells, side="left")
    turn = np.arange(n) - starts  # rank of each point within its cell
    chosen = order[np.lexsort((sorted_cells, turn))[:k]]
    return np.sort(chosen)


def keypoint_shift_px(m: Map, features: str = "sift") -> float:
    """How far right of and below the true image position the keypoints of a map's layer
    sit (:data:`OPENCV_SIFT_SHIFT_PX` for OpenCV's SIFT, else 0)."""
    return OPENCV_SIFT_SHIFT_PX if features == "sift" and m.extractor == "opencv" else 0.0


class SiftFrameFeatures:
    """SIFT of a frame resized by ``scale`` first: about a quarter of the pixels at 0.5, so
    a fraction of the time, for keypoints still placed in the full frame's pixels.

    Descriptors are RootSIFT as uint8 (the map's ``"sift"`` layer). One instance serves one
    thread at a time.
    """

    def __init__(self, scale: float = 0.5, max_features: int = 1000, extractor: str = "opencv"):
        from pylocalize.features import SiftExtractor

        if not 0 < scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {scale}")
        self.scale = float(scale)
        self._sift = SiftExtractor(max_features, extractor)

    def __call__(self, image) -> Tuple[np.ndarray, np.ndarray]:
        """``(keypoints float32 (n, 2) in the full frame's OpenCV pixels, descriptors uint8 (n, 128))``."""
        import cv2

        from pylocalize.features.sift import to_gray

        gray = to_gray(image)
        if self.scale < 1:
            gray = cv2.resize(gray, None, fx=self.scale, fy=self.scale, interpolation=cv2.INTER_AREA)
        keypoints, descriptors = self._sift(gray)
        # pixel centres at integers in both images: x_full + 0.5 = (x_small + 0.5) / scale
        shift = OPENCV_SIFT_SHIFT_PX if self._sift.extractor == "opencv" else 0.0
        return ((keypoints - shift + 0.5) / self.scale - 0.5 + shift).astype(np.float32), descriptors


@dataclass
class TrackerOptions:
    """How a :class:`Tracker` tracks; distances in pixels of the full frame.

    Attributes
    ----------
    scale : float
        The frame is resized by it before SIFT (:class:`SiftFrameFeatures`).
    max_features : int
        Features per frame.
    nearby_images : int
        Map images whose 3D points make the local map of a frame.
    max_view_angle_deg : float
        A map image counts as nearby only if its viewing direction is within this angle of
        the predicted camera's.
    search_radius_px : float
        A frame feature is matched only to map points projected within this radius of it.
    wide_radius_factor : float
        When the prior pose keeps too few inliers, matching is repeated within
        ``wide_radius_factor`` x the radius (a fast turn, an odometry slip).
    ratio : float
        Ratio test among the candidates within the radius (best vs best of another point).
    max_distance : float or None
        Largest descriptor distance of a match (None: :data:`DEFAULT_MAX_DISTANCE` of the
        layer's metric).
    max_error_px : float
        Inlier threshold on the reprojection error.
    loss_scale_px : float
        Scale of the Cauchy loss of the refinement from the prior.
    min_inliers : int
        A tracked (or relocalized) pose needs at least this many inliers.
    min_inlier_ratio : float
        ... and this share of the guided matches as inliers (else the prior was wrong).
    relocalize_k : int
        Map images CANN retrieves when relocalizing.
    max_extrapolation_s : float
        The constant-velocity model predicts at most this far past the last pose; beyond,
        the last pose itself is the prediction.
    patches : str or None
        The feature layer whose point patches (:meth:`Map.add_patches`) refine every pose
        to a fraction of a pixel; None, or a map without them, skips the step.
    min_zncc : float
        An aligned patch counts only if its normalized cross-correlation with its warped
        reference reaches this.
    patch_error_px : float
        Inlier threshold of the refinement on aligned patches.
    max_patch_angle_deg : float
        A point's patch is used only if a map image saw it from within this angle of the
        frame's viewing direction (the nearest such view's patch is taken). Beyond, the warp
        of a plane facing that view misshapes the patch; within, the correlation gate and
        the information weights drop or discount the patches it still misshapes (45 degrees
        refines a walk's frames far from every map view and leaves the Strecha photos as
        20 did, benchmarks/README.md).
    min_patch_share : float
        The patches' pose replaces the features' only if at least this share of the
        features' inliers (at most ``max_patches`` of them; and ``min_inliers``) align as
        inliers.
    max_patches : int
        Patches aligned per frame at most, spread evenly over the image (a grid's cells take
        turns): the pose's error falls with their number, their cost grows with it (1,000
        patches: ~15 ms a frame; benchmarks/README.md).
    """

    scale: float = 0.5
    max_features: int = 1000
    nearby_images: int = 6
    max_view_angle_deg: float = 70.0
    search_radius_px: float = 15.0
    wide_radius_factor: float = 3.0
    ratio: float = 0.85
    max_distance: Optional[float] = None
    max_error_px: float = 4.0
    loss_scale_px: float = 1.0
    min_inliers: int = 20
    min_inlier_ratio: float = 0.4
    relocalize_k: int = 10
    max_extrapolation_s: float = 1.0
    patches: Optional[str] = "sift"
    min_zncc: float = 0.8
    patch_error_px: float = 1.0
    max_patch_angle_deg: float = 45.0
    min_patch_share: float = 0.5
    max_patches: int = 1000

    def __post_init__(self):
        positive = ("scale", "search_radius_px", "max_error_px", "loss_scale_px", "max_extrapolation_s",
                    "patch_error_px", "max_patch_angle_deg")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"TrackerOptions.{name} must be positive, got {getattr(self, name)}")
        if not self.scale <= 1:
            raise ValueError(f"TrackerOptions.scale must be in (0, 1], got {self.scale}")
        for name in ("max_features", "nearby_images", "min_inliers", "relocalize_k", "max_patches"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrackerOptions.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.ratio <= 1 or not 0 <= self.min_inlier_ratio <= 1:
            raise ValueError(f"TrackerOptions.ratio must be in (0, 1] and min_inlier_ratio in [0, 1], got "
                             f"{self.ratio}, {self.min_inlier_ratio}")
        if not self.wide_radius_factor >= 1 or not 0 < self.max_view_angle_deg <= 180:
            raise ValueError("TrackerOptions.wide_radius_factor must be >= 1 and max_view_angle_deg in (0, 180]")
        if not 0 <= self.min_patch_share:
            raise ValueError(f"TrackerOptions.min_patch_share must be >= 0, got {self.min_patch_share}")
        if not -1 <= self.min_zncc <= 1:
            raise ValueError(f"TrackerOptions.min_zncc must be in [-1, 1], got {self.min_zncc}")
        if self.max_distance is not None and not self.max_distance > 0:
            raise ValueError(f"TrackerOptions.max_distance must be positive or None, got {self.max_distance}")


@dataclass
class TrackingResult:
    """The outcome of one frame of :meth:`Tracker.track`.

    Attributes
    ----------
    status : ``"tracked"``, ``"relocalized"`` or ``"lost"``
        Tracked from the prior; localized from nothing (CANN); or no pose.
    cam_from_world : float64 (3, 4) or None
    timestamp : float
    method : str
        What gave the pose: ``"prior"`` (refinement from the prediction), ``"wide"`` (the
        same after matching in the wide radius), ``"ransac"`` (LO-RANSAC over guided
        matches), ``"cann"`` (relocalization on the frame's features), ``"cann full frame"``.
    num_inliers, num_matches : int
    predicted : float64 (3, 4) or None
        The prediction the frame was tracked from (None: nothing to predict from).
    timings : dict
        Seconds per step (``features``, ``local map``, ``matching``, ``pose``, ``patches``,
        ``relocalization``) and ``total``.
    reason : str
        Why tracking gave way to relocalization, or why the frame is lost.
    patch_inliers : int
        Aligned point patches the pose was refined on (0: not refined on patches).
    """

    status: str
    cam_from_world: Optional[np.ndarray]
    timestamp: float
    method: str = ""
    num_inliers: int = 0
    num_matches: int = 0
    predicted: Optional[np.ndarray] = None
    timings: Dict[str, float] = field(default_factory=dict)
    reason: str = ""
    patch_inliers: int = 0

    @property
    def success(self) -> bool:
        return self.cam_from_world is not None

    def __repr__(self) -> str:
        parts = [self.status, f"t={self.timestamp:.3f}"]
        if self.method:
            parts.append(f"by {self.method}")
        parts.append(f"{self.num_inliers}/{self.num_matches} inliers")
        if self.patch_inliers:
            parts.append(f"{self.patch_inliers} patches")
        parts.append(f"{1000 * self.timings.get('total', 0.0):.1f} ms")
        if self.reason:
            parts.append(f"reason: {self.reason}")
        return f"TrackingResult({'; '.join(parts)})"


# ---------------------------------------------------------------- the steps, each alone


def predict_pose(last: np.ndarray, velocity: Optional[np.ndarray] = None, velocity_dt: Optional[float] = None,
                 dt: Optional[float] = None, odometry: Optional[np.ndarray] = None) -> np.ndarray:
    """The predicted ``cam_from_world`` of a frame from the ``last`` pose.

    ``odometry`` (3x4, the motion ``cam_now_from_cam_last``), when given, is applied as it
    is. Otherwise ``velocity`` (``cam_last_from_cam_before``, observed over ``velocity_dt``
    seconds) runs on for ``dt`` seconds: the same screw motion, scaled by ``dt /
    velocity_dt`` (:func:`~pylocalize.geometry.poses.motion_power`); without a velocity the
    last pose is the prediction.
    """
    last = np.asarray(last, dtype=np.float64)
    if odometry is not None:
        odometry = np.asarray(odometry, dtype=np.float64)
        if odometry.shape != (3, 4) or not np.isfinite(odometry).all():
            raise ValueError(f"odometry must be a finite 3x4 cam_now_from_cam_last [R | t], got shape {odometry.shape}")
        return compose_poses(odometry, last)
    if velocity is None:
        return last.copy()
    steps = 1.0 if dt is None or not velocity_dt else float(dt) / float(velocity_dt)
    return compose_poses(motion_power(velocity, steps), last)


def project_points(points3D: np.ndarray, cam_from_world: np.ndarray, camera: Camera, margin_px: float = 0.0,
                   min_depth: float = 1e-3) -> Tuple[np.ndarray, np.ndarray]:
    """Pixels (OpenCV convention) of world points in a view, and which are visible: in front
    of the camera (depth above ``min_depth``) and inside the image grown by ``margin_px``.

    Returns ``(pixels float64 (n, 2), visible bool (n,))``; pixels of points not in front
    are NaN.
    """
    points3D = np.asarray(points3D, dtype=np.float64).reshape(-1, 3)
    points_cam = points3D @ cam_from_world[:, :3].T + cam_from_world[:, 3]
    pixels = np.full((len(points3D), 2), np.nan)
    front = points_cam[:, 2] > min_depth
    if front.any():
        pixels[front] = camera.project(points_cam[front])
    with np.errstate(invalid="ignore"):
        inside = ((pixels[:, 0] >= -0.5 - margin_px) & (pixels[:, 0] <= camera.width - 0.5 + margin_px)
                  & (pixels[:, 1] >= -0.5 - margin_px) & (pixels[:, 1] <= camera.height - 0.5 + margin_px))
    return pixels, front & inside


def pairs_within(a: np.ndarray, b: np.ndarray, radius: float) -> Tuple[np.ndarray, np.ndarray]:
    """Every pair ``(i, j)`` of 2D points with ``|a[i] - b[j]| <= radius``, found through a
    uniform grid of cells ``radius`` wide (each point of ``a`` looks in its cell and the
    eight around it). Returns ``(i int64, j int64)``, grouped by ``i`` in increasing order."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 2), np.asarray(b, dtype=np.float64).reshape(-1, 2)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    if not len(a) or not len(b):
        return empty
    origin = np.minimum(a.min(0), b.min(0))
    cell_a = np.floor((a - origin) / radius).astype(np.int64) + 1
    cell_b = np.floor((b - origin) / radius).astype(np.int64) + 1
    columns = int(max(cell_a[:, 0].max(), cell_b[:, 0].max())) + 2
    key_b = cell_b[:, 1] * columns + cell_b[:, 0]
    order = np.argsort(key_b, kind="stable")
    sorted_keys = key_b[order]
    # keys run along grid rows, so the three cells of a row around a point are one key range;
    # each row's pairs go straight to their place in the output, grouped by point of a
    lo, counts = [], []
    for dy in (-1, 0, 1):
        row = (cell_a[:, 1] + dy) * columns + cell_a[:, 0]
        lo.append(np.searchsorted(sorted_keys, row - 1, "left"))
        counts.append(np.searchsorted(sorted_keys, row + 1, "right") - lo[-1])
    per_point = counts[0] + counts[1] + counts[2]
    total = int(per_point.sum())
    if not total:
        return empty
    i = np.repeat(np.arange(len(a)), per_point)
    j = np.empty(total, np.int64)
    start = np.cumsum(per_point) - per_point  # where each point of a starts in the output
    for r in range(3):
        n = int(counts[r].sum())
        if n:
            within = np.arange(n) - np.repeat(np.cumsum(counts[r]) - counts[r], counts[r])
            j[np.repeat(start, counts[r]) + within] = order[np.repeat(lo[r], counts[r]) + within]
            start = start + counts[r]
    d = a[i] - b[j]
    keep = np.einsum("ij,ij->i", d, d) <= radius * radius
    return i[keep], j[keep]


def descriptor_distances(a: np.ndarray, b: np.ndarray, i: np.ndarray, j: np.ndarray, metric: str) -> np.ndarray:
    """Distances between descriptors ``a[i[k]]`` and ``b[j[k]]`` (uint8 rows): Euclidean for
    ``"l2"``, differing bits for ``"hamming"`` (bits packed 8 a byte). Returns float64 (n,)."""
    if metric == "l2":
        # squares of uint8 differences sum exactly in float32 (below 2^24 for 256 dimensions)
        diff = a.astype(np.float32)[i] - b.astype(np.float32)[j]
        return np.sqrt(np.einsum("ij,ij->i", diff, diff).astype(np.float64))
    if metric == "hamming":
        return np.bitwise_count(np.bitwise_xor(a[i], b[j])).sum(1, dtype=np.int64).astype(np.float64)
    raise ValueError(f"unknown descriptor metric {metric!r}; use one of {METRICS}")


def guided_matches(keypoints: np.ndarray, descriptors: np.ndarray, projections: np.ndarray,
                   candidate_descriptors: np.ndarray, groups: np.ndarray, radius_px: float, metric: str = "l2",
                   ratio: float = 0.85, max_distance: Optional[float] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Matches of frame features to candidates projected near them.

    Candidate ``j`` (a map observation of 3D point ``groups[j]``, projected at
    ``projections[j]`` with descriptor ``candidate_descriptors[j]``) may match frame
    feature ``i`` only if it lies within ``radius_px`` of ``keypoints[i]``. Feature ``i``
    takes its nearest candidate in descriptor space when that one is within
    ``max_distance`` and nearer than ``ratio`` x the nearest candidate of *another* point in
    the radius (a feature with no other point near passes); each point then keeps only
    its nearest feature.

    Returns ``(feature ids, candidate ids)``, int64, sorted by feature.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown descriptor metric {metric!r}; use one of {METRICS}")
    if not radius_px > 0:
        raise ValueError(f"radius_px must be positive, got {radius_px}")
    groups = np.asarray(groups)
    if not (len(projections) == len(candidate_descriptors) == len(groups)) or len(keypoints) != len(descriptors):
        raise ValueError(f"{len(keypoints)} keypoints, {len(descriptors)} descriptors, {len(projections)} "
                         f"projections, {len(candidate_descriptors)} candidate descriptors, {len(groups)} groups: "
                         "give one descriptor per keypoint and one descriptor and group per projection")
    if len(keypoints) and len(projections) and descriptors.shape[1] != candidate_descriptors.shape[1]:
        raise ValueError(f"frame descriptors are {descriptors.shape[1]} bytes, the map's "
                         f"{candidate_descriptors.shape[1]}: extract the frame with the layer's extractor")
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    i, j = pairs_within(keypoints, projections, radius_px)
    if not len(i):
        return empty
    dist = descriptor_distances(descriptors, candidate_descriptors, i, j, metric)
    # per feature (pairs come grouped by feature): the nearest candidate, ties to the smaller
    # id, and the nearest of another point, by reductions over each group, without sorting
    first = np.flatnonzero(np.r_[True, i[1:] != i[:-1]])
    counts = np.diff(np.r_[first, len(i)])
    best_d = np.minimum.reduceat(dist, first)
    big = np.iinfo(np.int64).max
    best_j = np.minimum.reduceat(np.where(dist == np.repeat(best_d, counts), j, big), first)
    other_point = groups[j] != np.repeat(groups[best_j], counts)
    second = np.minimum.reduceat(np.where(other_point, dist, np.inf), first)
    best_i = i[first]
    limit = DEFAULT_MAX_DISTANCE[metric] if max_distance is None else float(max_distance)
    keep = (best_d <= limit) & (best_d < ratio * second)
    best_i, best_j, best_d = best_i[keep], best_j[keep], best_d[keep]
    # one feature per 3D point: its nearest (ties: the smaller feature id)
    by_point = np.lexsort((best_i, best_d, groups[best_j]))
    point = groups[best_j][by_point]
    unique = by_point[np.r_[True, point[1:] != point[:-1]]] if len(point) else by_point
    unique = np.sort(unique)
    return best_i[unique].astype(np.int64), best_j[unique].astype(np.int64)


# ---------------------------------------------------------------- the tracker


def _layer_of(m: Map, features: Union[str, FeatureLayer]) -> FeatureLayer:
    layer = m.feature_layer(features) if isinstance(features, str) else features
    if not isinstance(layer, FeatureLayer):
        raise ValueError(f"features must be a layer name of the map ({m.feature_layers}) or a FeatureLayer")
    if layer.metric not in METRICS:
        raise ValueError(f"feature layer {layer.name!r} has metric {layer.metric!r}; the tracker knows {METRICS}")
    if len(layer.keypoints) != len(m.names):
        raise ValueError(f"feature layer {layer.name!r} has {len(layer.keypoints)} images, the map {len(m.names)}")
    return layer


class Tracker:
    """Localizes the frames of one camera stream against a map, in order (see the module).

    Parameters
    ----------
    m : Map
    camera : Camera or ``"MODEL W H PARAMS..."``
        The stream's camera, for frames of its size.
    features : str or FeatureLayer
        The map's feature layer to track with (:meth:`Map.feature_layer`).
    extractor : callable, optional
        ``image -> (keypoints float (n, 2) in the frame's OpenCV pixels, descriptors uint8
        (n, d))`` in the layer's descriptor space; default for ``"sift"``:
        :class:`SiftFrameFeatures` with the options' scale and feature budget; for a binary
        layer of the map (``Map.layers``), its own extractor. A :class:`FeatureLayer` made
        elsewhere needs its extractor given.
    options : TrackerOptions, optional

    Call :meth:`track` with each frame in order; :meth:`reset` forgets the past (a new
    stream).
    """

    def __init__(self, m: Map, camera: Union[Camera, str], features: Union[str, FeatureLayer] = "sift",
                 extractor: Optional[Callable] = None, options: Optional[TrackerOptions] = None):
        self.map = m
        self.camera = Camera.from_string(camera) if isinstance(camera, str) else camera
        if not isinstance(self.camera, Camera):
            raise ValueError("camera: give a Camera or a 'MODEL W H PARAMS...' string of the stream's frames")
        self.options = options or TrackerOptions()
        self.layer = _layer_of(m, features)
        # a binary layer the map holds (Map.add_layer) brings its extractor and its own relocalization
        self._map_layer = getattr(m, "layers", {}).get(self.layer.name) if isinstance(features, str) else None
        if extractor is None:
            if self.layer.name == "sift":
                extractor = SiftFrameFeatures(self.options.scale, self.options.max_features, m.extractor)
            elif self._map_layer is not None and callable(getattr(self._map_layer, "extractor", None)):
                extractor = self._map_layer.extractor()
            else:
                raise ValueError(f"layer {self.layer.name!r}: give the extractor of its features (extractor=...)")
        self.extractor = extractor
        # per map image: its observations of 3D points (point ids, descriptors), and where it looks from
        self._observed = []
        for ids, desc in zip(self.layer.point_ids, self.layer.descriptors):
            has = np.asarray(ids) >= 0
            self._observed.append((np.asarray(ids)[has].astype(np.int64), np.ascontiguousarray(desc[has])))
        # the point patches that refine each pose: per map image, the 3D point of each patch
        self._patch_layer = self.options.patches if self.options.patches in getattr(m, "patches", {}) else None
        if self._patch_layer is not None:
            ids = self.map.feature_layer(self._patch_layer).point_ids
            self._patch_points = [np.asarray(i)[np.asarray(i) >= 0].astype(np.int64) for i in ids]
            self._patch_shift = keypoint_shift_px(m, self._patch_layer)
        self._centres = camera_centres(m.cam_from_world) if len(m.names) else np.zeros((0, 3))
        self._axes = m.cam_from_world[:, 2, :3] if len(m.names) else np.zeros((0, 3))  # optical axes in the world
        self.reset()

    def reset(self) -> None:
        """Forgets the stream: the next frame is relocalized."""
        self._last: Optional[np.ndarray] = None
        self._last_time: Optional[float] = None
        self._velocity: Optional[np.ndarray] = None
        self._velocity_dt: Optional[float] = None
        self._time: Optional[float] = None  # the last frame's, posed or not
        self._frames = 0

    def continue_from(self, other: "Tracker") -> None:
        """Takes over the stream state (last pose, velocity, clock) of ``other``, a tracker of
        the same camera on another map: the next frame is predicted as ``other`` would have
        (a map swapped mid-stream, or each frame against its own leave-one-out map)."""
        self._last, self._last_time = other._last, other._last_time
        self._velocity, self._velocity_dt = other._velocity, other._velocity_dt
        self._time, self._frames = other._time, other._frames

    # -- local map

    def nearby_images(self, cam_from_world: np.ndarray) -> np.ndarray:
        """Indices of the map images nearest a camera, nearest first: of those looking within
        ``max_view_angle_deg`` of its direction, the ``nearby_images`` closest centres."""
        if not len(self._centres):
            return np.zeros(0, np.int64)
        centre = -cam_from_world[:, :3].T @ cam_from_world[:, 3]
        distance = np.linalg.norm(self._centres - centre, axis=1)
        aligned = self._axes @ cam_from_world[2, :3] >= np.cos(np.radians(self.options.max_view_angle_deg))
        candidates = np.flatnonzero(aligned)
        order = candidates[np.argsort(distance[candidates], kind="stable")]
        return order[:self.options.nearby_images]

    def local_map(self, cam_from_world: np.ndarray, margin_px: float = 0.0):
        """The observations of 3D points by the nearby map images that project into the view:
        ``(pixels (m, 2), descriptors (m, d), point ids (m,))``."""
        images = self.nearby_images(cam_from_world)
        if not len(images):
            d = self.layer.descriptors[0].shape[1] if len(self.layer.descriptors) else 0
            return np.zeros((0, 2)), np.zeros((0, d), np.uint8), np.zeros(0, np.int64)
        ids = np.concatenate([self._observed[i][0] for i in images])
        # one descriptor per 3D point, that of the nearest image observing it (images are in
        # order of distance): the view most like the frame's, and a third of the candidates
        ids, first = np.unique(ids, return_index=True)
        desc = np.concatenate([self._observed[i][1] for i in images])[first]
        pixels, visible = project_points(self.layer.points3D[ids], cam_from_world, self.camera, margin_px)
        return pixels[visible], desc[visible], ids[visible]

    # -- one frame

    def track(self, image, timestamp: Optional[float] = None, odometry: Optional[np.ndarray] = None) -> TrackingResult:
        """Localizes the next frame of the stream (uint8 ``(H, W[, 3])`` of the camera's
        size, or a file path).

        ``timestamp`` in seconds (default: the frame count, so that a stream without
        timestamps predicts one frame step at a time); ``odometry``, the motion
        ``cam_now_from_cam_last`` since the previous frame, replaces the constant-velocity
        prediction.
        """
        from pylocalize.io import load_pixels

        timings: Dict[str, float] = {}
        start = time.perf_counter()
        pixels = load_pixels(image)
        if pixels.shape[:2] != (self.camera.height, self.camera.width):
            raise ValueError(f"frame of {pixels.shape[1]}x{pixels.shape[0]} pixels, the camera is for "
                             f"{self.camera.width}x{self.camera.height}: give frames of the camera's size")
        keypoints, descriptors = self.extractor(pixels)
        timings["features"] = time.perf_counter() - start
        result = self.track_features(keypoints, descriptors, timestamp, odometry, image=pixels, _timings=timings)
        result.timings["total"] = time.perf_counter() - start
        return result

    def track_features(self, keypoints: np.ndarray, descriptors: np.ndarray, timestamp: Optional[float] = None,
                       odometry: Optional[np.ndarray] = None, image=None, _timings=None) -> TrackingResult:
        """:meth:`track` from the frame's features (in the layer's descriptor space);
        ``image``, when given, lets a frame that its features cannot relocalize be
        relocalized from its pixels."""
        timings = {} if _timings is None else _timings
        start = time.perf_counter()
        keypoints = np.asarray(keypoints, dtype=np.float64).reshape(-1, 2)
        descriptors = np.ascontiguousarray(descriptors)
        timestamp = float(self._frames if timestamp is None else timestamp)
        if self._time is not None and timestamp <= self._time:
            raise ValueError(f"timestamp {timestamp} does not follow the last frame's ({self._time}): give "
                             "frames in time order, or reset() the tracker for a new stream")
        self._frames += 1
        self._time = timestamp
        predicted, result = None, None
        if self._last is not None:
            dt = timestamp - self._last_time
            velocity = self._velocity if dt <= self.options.max_extrapolation_s else None
            predicted = predict_pose(self._last, velocity, self._velocity_dt, dt, odometry)
            result = self._track_from(predicted, keypoints, descriptors, timestamp, timings)
        if result is None or result.status != "tracked":
            reason = "no previous pose" if result is None else result.reason
            result = self._relocalize(keypoints, descriptors, image, timestamp, timings, reason)
            result.predicted = predicted
        if result.success and image is not None and self._patch_layer is not None:
            t0 = time.perf_counter()
            # the patches replace the features' pose only where they are as many as half its
            # inliers (or of the patches' cap, which a dense feature layer's inliers exceed):
            # a few patches (a photo far from every map view) pose worse than many features
            # (benchmarks/README.md, Strecha)
            o = self.options
            least = max(o.min_inliers, int(np.ceil(o.min_patch_share * min(result.num_inliers, o.max_patches))))
            result.cam_from_world, result.patch_inliers = self.refine_on_patches(result.cam_from_world, image, least)
            timings["patches"] = time.perf_counter() - t0
        self._update(result)
        result.timings = timings
        if _timings is None:
            timings["total"] = time.perf_counter() - start
        return result

    def _guided(self, pose, radius, keypoints, descriptors, timings):
        """Guided matches ``(feature ids, point ids)`` of the frame in the view of ``pose``."""
        o = self.options
        t0 = time.perf_counter()
        pixels, cand_desc, point_ids = self.local_map(pose, margin_px=radius)
        timings["local map"] = timings.get("local map", 0.0) + time.perf_counter() - t0
        t0 = time.perf_counter()
        feature_ids, cand_ids = guided_matches(keypoints, descriptors, pixels, cand_desc, point_ids, radius,
                                               self.layer.metric, o.ratio, o.max_distance)
        timings["matching"] = timings.get("matching", 0.0) + time.perf_counter() - t0
        return feature_ids, point_ids[cand_ids]

    def _refine(self, pose, matches, keypoints, timings):
        t0 = time.perf_counter()
        refined = refine_absolute_pose(keypoints[matches[0]], self.layer.points3D[matches[1]], self.camera, pose,
                                       self.options.loss_scale_px, self.options.max_error_px, iterations=1)
        timings["pose"] = timings.get("pose", 0.0) + time.perf_counter() - t0
        return refined

    def refine_on_patches(self, cam_from_world: np.ndarray, image,
                          min_patches: Optional[int] = None) -> Tuple[np.ndarray, int]:
        """The pose refined on the map's point patches aligned in ``image`` (the frame's
        pixels), and how many aligned patches it kept as inliers; the pose as given, and 0,
        when fewer than ``min_patches`` (default the options' ``min_inliers``) stay inliers.

        Each point the nearby map images observe that projects into the view is taken with
        the patch of the observing image that saw it from the direction nearest the frame's,
        if within ``max_patch_angle_deg`` (a patch warped across a wider angle, under the
        assumption of a plane facing its image, would pull the point off), warped by
        :func:`local_affines` and aligned near its projection (:func:`align_patches_fitted`); those
        aligning with enough correlation are the 2D points of a Cauchy-robust refinement from
        the pose, each weighted by its alignment's information (a corner counts in both
        directions, an edge across it only, a close match more than a poor one).
        """
        o = self.options
        min_patches = o.min_inliers if min_patches is None else int(min_patches)
        layer = self.map.feature_layer(self._patch_layer)
        images = self.nearby_images(cam_from_world)
        if not len(images):
            return cam_from_world, 0
        ids = np.concatenate([self._patch_points[i] for i in images])
        owner = np.concatenate([np.full(len(self._patch_points[i]), i) for i in images])
        row = np.concatenate([np.arange(len(self._patch_points[i])) for i in images])
        # per point, the observation whose viewing ray is nearest the frame's
        points3D = layer.points3D[ids]
        to_frame = -cam_from_world[:, :3].T @ cam_from_world[:, 3] - points3D
        to_image = self._centres[owner] - points3D
        cos = np.einsum("nk,nk->n", to_frame, to_image) / np.maximum(
            np.linalg.norm(to_frame, axis=1) * np.linalg.norm(to_image, axis=1), 1e-12)
        order = np.lexsort((-cos, ids))
        first = order[np.r_[True, ids[order][1:] != ids[order][:-1]]]
        first = first[cos[first] >= np.cos(np.radians(o.max_patch_angle_deg))]
        ids, owner, row = ids[first], owner[first], row[first]
        points3D = layer.points3D[ids]
        pixels, visible = project_points(points3D, cam_from_world, self.camera)
        keep = np.flatnonzero(visible)
        keep = keep[spread_evenly(pixels[keep], o.max_patches, (self.camera.width, self.camera.height))]
        points3D, pixels, owner, row = points3D[keep], pixels[keep], owner[keep], row[keep]
        if len(points3D) < min_patches:
            return cam_from_world, 0
        # the patches were cut at the points' true positions; the layer's keypoints (which the
        # points were triangulated from) sit shift_px off them
        start = pixels - self._patch_shift
        affines, valid = local_affines(points3D, start, cam_from_world, self.camera, self.map.cam_from_world[owner],
                                       [self.map.cameras[i] for i in owner])
        patches = self.map.patches[self._patch_layer]
        references = np.empty((len(owner),) + patches[owner[0]].shape[1:], np.uint8)
        for i in np.unique(owner):
            here = owner == i
            references[here] = patches[i][row[here]]
        xy, zncc, converged, information = align_patches_fitted(prepare_image(image), references, affines, start)
        good = valid & converged & (zncc >= o.min_zncc)
        if good.sum() < min_patches:
            return cam_from_world, 0
        refined = refine_absolute_pose(xy[good] + self._patch_shift, points3D[good], self.camera, cam_from_world,
                                       loss_scale_px=0.5 * o.patch_error_px, max_error_px=o.patch_error_px,
                                       iterations=2, information=information[good])
        if refined is None or refined.num_inliers < min_patches:
            return cam_from_world, 0
        return refined.cam_from_world, refined.num_inliers

    def _track_from(self, predicted, keypoints, descriptors, timestamp, timings) -> TrackingResult:
        o = self.options
        matches, pose, method = (np.zeros(0, np.int64),) * 2, None, ""
        for radius, attempt in ((o.search_radius_px, "prior"), (o.search_radius_px * o.wide_radius_factor, "wide")):
            method = attempt
            matches = self._guided(predicted, radius, keypoints, descriptors, timings)
            if len(matches[0]) < o.min_inliers:
                continue
            pose = self._refine(predicted, matches, keypoints, timings)
            if self._accepted(pose, len(matches[0])):
                break
            pose = None
        if pose is None and len(matches[0]) >= o.min_inliers:
            method = "ransac"
            t0 = time.perf_counter()
            pose = estimate_absolute_pose(keypoints[matches[0]], self.layer.points3D[matches[1]], self.camera,
                                          o.max_error_px, seed=0)
            timings["pose"] = timings.get("pose", 0.0) + time.perf_counter() - t0
            if not self._accepted(pose, len(matches[0])):
                pose = None
        if pose is None:
            return TrackingResult("lost", None, timestamp, num_matches=len(matches[0]), predicted=predicted,
                                  reason=f"tracking kept too few inliers of {len(matches[0])} guided matches")
        if method != "prior":
            # found from a poor prior (wide radius, RANSAC): match again within the normal radius
            # around the pose found, for the matches the wide radius lost to its ratio test
            again = self._guided(pose.cam_from_world, o.search_radius_px, keypoints, descriptors, timings)
            if len(again[0]) >= o.min_inliers:
                refined = self._refine(pose.cam_from_world, again, keypoints, timings)
                if self._accepted(refined, len(again[0])) and refined.num_inliers >= pose.num_inliers:
                    pose, matches = refined, again
        return TrackingResult("tracked", pose.cam_from_world, timestamp, method, pose.num_inliers, len(matches[0]),
                              predicted)

    def _accepted(self, pose, num_matches: int) -> bool:
        return (pose is not None and pose.num_inliers >= self.options.min_inliers
                and pose.num_inliers >= self.options.min_inlier_ratio * num_matches)

    def _relocalize(self, keypoints, descriptors, image, timestamp, timings, reason) -> TrackingResult:
        o = self.options
        t0 = time.perf_counter()
        query = QueryCamera(self.camera, "given", False)
        attempts = []
        if self.layer.name == "sift" and descriptors.ndim == 2 and descriptors.shape[1] == 128:
            attempts.append(("cann", lambda: self.map.localize_features(
                keypoints, descriptors, query, k=o.relocalize_k, max_error_px=o.max_error_px,
                min_inliers=o.min_inliers, covariance=False)))
        elif self._map_layer is not None:  # the map's own localization on a binary layer
            attempts.append((f"{self.layer.name} votes", lambda: self.map.localize_features(
                keypoints, descriptors, query, k=o.relocalize_k, max_error_px=o.max_error_px,
                min_inliers=o.min_inliers, covariance=False, features=self.layer.name)))
        if image is not None:
            attempts.append(("cann full frame", lambda: self.map.localize(
                image, query, k=o.relocalize_k, max_error_px=o.max_error_px, min_inliers=o.min_inliers,
                covariance=False)))
        result, method = None, ""
        for name, attempt in attempts:
            result, method = attempt(), name
            if result.success:
                break
        timings["relocalization"] = time.perf_counter() - t0
        if result is None or not result.success:
            why = "no features to relocalize with" if result is None else result.reason
            return TrackingResult("lost", None, timestamp, num_matches=0 if result is None else result.num_matches,
                                  reason=f"{reason}; relocalization failed: {why}")
        logger.debug("frame at %.3f s relocalized (%s): %s", timestamp, method, reason)
        return TrackingResult("relocalized", result.cam_from_world, timestamp, method, result.num_inliers,
                              result.num_matches, reason=reason)

    def _update(self, result: TrackingResult) -> None:
        """The motion model after a frame: the velocity is the motion since the last frame
        when both were tracked from one another; a relocalized frame starts from rest (the
        motion across a relocalization may be a teleport)."""
        if result.cam_from_world is None:
            return
        if result.status == "tracked" and self._last is not None:
            self._velocity = compose_poses(result.cam_from_world, invert_pose(self._last))
            self._velocity_dt = result.timestamp - self._last_time
        else:
            self._velocity, self._velocity_dt = None, None
        self._last, self._last_time = result.cam_from_world, result.timestamp


def track_stream(tracker: Tracker, frames, timestamps: Optional[Sequence[float]] = None, progress: bool = False):
    """:meth:`Tracker.track` of every frame of an iterable, in order; a list of results."""
    from tqdm import tqdm

    results = []
    for k, frame in enumerate(tqdm(frames, desc="track", disable=not progress, leave=False,
                                   total=None if timestamps is None else len(timestamps))):
        results.append(tracker.track(frame, None if timestamps is None else timestamps[k]))
    return results
