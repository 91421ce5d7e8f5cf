"""A seeded street-grid city at the feature level: cheap maps of 10,000+ posed images.

Nothing is rendered. The city is a grid of blocks between streets; each block holds one
building, an axis-aligned box of its own height, whose four sides are facades facing the
streets. Landmarks (the 3D points of a map) lie on the facades. A camera *observes* the
landmarks in its frustum within ``max_range`` whose projected size reaches
``min_feature_px`` (a detector finds small details only near the camera) and whose own
facade is the first surface its ray meets (occlusion by nearer buildings, a vectorised
slab test of the ray against every building box in range). Each observation gets a
keypoint (the exact projection plus Gaussian noise) and a descriptor (the landmark's base
descriptor plus noise that grows with the viewing angle to the facade normal and with
distance). Clutter features (no 3D point, id ``-1``) with random keypoints and descriptors
are added to every image. Landmark density is per square metre of facade, so a close view
across a street sees fewer landmarks than a view down it; ``max_features`` caps the latter
at the largest projected details, as a detector's budget keeps its strongest responses.

Descriptors are uint8 ``(m, 128)`` with the statistics of the RootSIFT that
:func:`~pylocalize.features.extract_sift` stores: non-negative, L2 norm about 512. Random
ones are ``sqrt`` of Gamma(0.5) draws (RootSIFT is the square root of a sparse histogram),
so two unrelated descriptors lie about 440 apart, as unrelated RootSIFT does. A share
``repeated_share`` of the landmarks takes its base descriptor from a small set of
*prototypes* (windows, signs): each building uses a few of them, so they repeat within a
building and across buildings, and the landmarks of one prototype differ only by
``landmark_perturbation``, often less than the viewpoint noise: the hard case of real
cities. The other landmarks have descriptors of their own.

Why boxes and not rendered facades: at 10,000 images of ~2,000 features, rendering and
SIFT would take hours; observation here is a few vectorised numpy passes per image, and
each image draws its noise from its own seeded generator, so any image can be made alone
(:meth:`City.image`) or streamed (:meth:`City.iter_images`) with the same result.

The real-descriptor distractor mode (:func:`real_sift_distractors`) makes images whose
descriptors are real SIFT from photos, recombined at random, to pool real maps with
thousands of images that must not be retrieved.

Conventions: world frame in metres, z up, ground at z = 0, the city in x, y >= 0.
Cameras are OpenCV cameras (x right, y down, z forward) with poses ``cam_from_world`` 3x4
``[R | t]``, ``x_cam = R @ x_world + t``; keypoints in OpenCV pixels (centres at integers).
The arrays per image are those :class:`pylocalize.localization.Map` takes, so a map can be
built directly from a city with its true 3D points (:attr:`City.landmarks`).
"""

from __future__ import annotations

import itertools
import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from pylocalize.features import extract_sift
from pylocalize.geometry.camera import Camera

logger = logging.getLogger(__name__)

DESCRIPTOR_DIM = 128
DESCRIPTOR_NORM = 512.0  # L2 norm of the uint8 RootSIFT pylocalize stores
_NEAR = 0.3  # metres: nothing nearer the camera than this is observed
# Cameras keep this far (metres) from the building line on either side of a street
_KERB = 1.5
_CHUNK = 65536  # landmarks whose base descriptors are made at once


@dataclass
class CityOptions:
    """Parameters of a generated city; validated on creation.

    The streets are ``((blocks_y + 1) blocks_x + (blocks_x + 1) blocks_y) x (block_size +
    street_width)`` metres long, so the database has about ``cameras_per_metre`` times that
    many images: 10,920 for 14 x 14 blocks of the defaults.

    Attributes
    ----------
    blocks_x, blocks_y : int
        Blocks (one building each) along x and y; streets run around every block.
    block_size, street_width : float
        Side of a square block and width of a street, metres.
    building_height_range : (float, float)
        Building heights are uniform in this range, metres.
    landmark_density : float
        Landmarks per square metre of facade.
    landmark_size_range : (float, float)
        Physical size of a landmark's detail, metres, log-uniform in this range.
    min_feature_px : float
        A landmark is detected only where its size projects to at least this many pixels.
    num_prototypes : int
        Repeated descriptor prototypes in the whole city (windows, signs).
    prototypes_per_building : int
        How many of them each building uses.
    repeated_share : float
        Share of landmarks whose base descriptor is a repeated prototype.
    landmark_perturbation : float
        Noise that sets a repeated landmark apart from its prototype (its L2 norm, relative
        to the descriptor's).
    clutter_per_image : float
        Mean number of clutter features (no 3D point) per image (Poisson).
    max_features : int
        Features per image at most, as a detector's budget: clutter first, then the
        landmarks of largest projected size (a stand-in for the detector's response).
    image_size : (int, int)
        Width and height in pixels.
    focal : float
        Focal length in pixels (PINHOLE, principal point at the image centre).
    camera_height_range : (float, float)
        Camera heights above the ground, metres.
    cameras_per_metre : float
        Database cameras per metre of street.
    max_range : float
        Landmarks farther than this from a camera are not observed, metres.
    keypoint_noise_px : float
        Standard deviation of keypoint noise per axis, pixels (0: exact projections).
    descriptor_noise : float
        Descriptor noise (L2 norm relative to the descriptor's) of a frontal view at
        distance 0; it grows to
        ``x (1 + 1.5 (1 - cos angle)) x (1 + distance / max_range)``.
    seed : int
    """

    blocks_x: int = 4
    blocks_y: int = 4
    block_size: float = 40.0
    street_width: float = 12.0
    building_height_range: Tuple[float, float] = (8.0, 30.0)
    landmark_density: float = 5.0
    landmark_size_range: Tuple[float, float] = (0.05, 1.0)
    min_feature_px: float = 4.0
    num_prototypes: int = 256
    prototypes_per_building: int = 4
    repeated_share: float = 0.3
    landmark_perturbation: float = 0.08
    clutter_per_image: float = 300.0
    max_features: int = 2000
    image_size: Tuple[int, int] = (1024, 768)
    focal: float = 800.0
    camera_height_range: Tuple[float, float] = (1.4, 2.2)
    cameras_per_metre: float = 0.5
    max_range: float = 60.0
    keypoint_noise_px: float = 0.5
    descriptor_noise: float = 0.12
    seed: int = 0

    def __post_init__(self):
        for name in ("blocks_x", "blocks_y", "num_prototypes", "prototypes_per_building", "max_features"):
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) < 1:
                raise ValueError(f"CityOptions.{name} must be an integer >= 1, got {getattr(self, name)!r}")
        for name in ("block_size", "landmark_density", "focal", "cameras_per_metre", "max_range"):
            if not np.isfinite(getattr(self, name)) or getattr(self, name) <= 0:
                raise ValueError(f"CityOptions.{name} must be a positive number, got {getattr(self, name)!r}")
        for name in ("min_feature_px", "landmark_perturbation", "clutter_per_image", "keypoint_noise_px",
                     "descriptor_noise"):
            if not np.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"CityOptions.{name} must be a number >= 0, got {getattr(self, name)!r}")
        for name in ("building_height_range", "landmark_size_range", "camera_height_range"):
            if len(getattr(self, name)) != 2:
                raise ValueError(f"CityOptions.{name} must be (low, high), got {getattr(self, name)!r}")
            lo, hi = getattr(self, name)
            if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo <= hi):
                raise ValueError(f"CityOptions.{name} must be (low, high) with 0 < low <= high, got {(lo, hi)!r}")
        if not 0 <= self.repeated_share <= 1:
            raise ValueError(f"CityOptions.repeated_share must be in [0, 1], got {self.repeated_share!r}")
        if not np.isfinite(self.street_width) or self.street_width <= 2 * _KERB:
            raise ValueError(f"CityOptions.street_width must exceed {2 * _KERB} m (cameras keep {_KERB} m from "
                             f"the buildings), got {self.street_width!r}")
        if int(self.seed) != self.seed or self.seed < 0:
            raise ValueError(f"CityOptions.seed must be an integer >= 0, got {self.seed!r}")
        if len(self.image_size) != 2:
            raise ValueError(f"CityOptions.image_size must be (width, height), got {self.image_size!r}")
        width, height = self.image_size
        if int(width) != width or int(height) != height or width < 16 or height < 16:
            raise ValueError(f"CityOptions.image_size must be two integers >= 16, got {self.image_size!r}")
        if self.camera_height_range[1] >= self.building_height_range[0]:
            raise ValueError("CityOptions.camera_height_range must lie below the lowest building "
                             f"({self.building_height_range[0]} m): cameras are in the streets, not over roofs")


class CityImage(NamedTuple):
    """One generated image: its features and its true pose."""

    name: str
    cam_from_world: Optional[np.ndarray]  # float64 (3, 4); None for a distractor, which has no pose
    keypoints: np.ndarray  # float32 (m, 2), OpenCV pixels
    descriptors: np.ndarray  # uint8 (m, 128)
    point_ids: np.ndarray  # int64 (m,), index into City.landmarks, -1 for clutter


class VisibleLandmarks(NamedTuple):
    """The landmarks one camera observes (:meth:`City.visible_landmarks`)."""

    ids: np.ndarray  # int64 (m,), ascending
    pixels: np.ndarray  # float64 (m, 2), exact projections, OpenCV pixels
    distance: np.ndarray  # float64 (m,), metres from the camera centre
    cosine: np.ndarray  # float64 (m,), of the angle between the ray to the camera and the facade normal
    scale: np.ndarray  # float64 (m,), projected size of the landmark's detail, pixels


@dataclass
class FeatureImages:
    """Features of many images sharing one camera, in the per-image lists that
    :class:`pylocalize.localization.Map` takes.

    ``cam_from_world`` is float64 (n, 3, 4), the true poses, or None for images without a
    pose (the distractors of :func:`real_sift_distractors`).
    """

    names: List[str]
    camera: Camera
    cam_from_world: Optional[np.ndarray]
    keypoints: List[np.ndarray]
    descriptors: List[np.ndarray]
    point_ids: List[np.ndarray]

    def __len__(self) -> int:
        return len(self.names)

    @property
    def cameras(self) -> List[Camera]:
        """The camera of every image (one shared camera)."""
        return [self.camera] * len(self.names)

    @property
    def num_features(self) -> int:
        return sum(len(k) for k in self.keypoints)


class City:
    """A generated city (:func:`generate_city`): buildings, facades, landmarks with base
    descriptors, and database camera poses; images are made on demand.

    Attributes
    ----------
    options : CityOptions
    camera : Camera
        The PINHOLE camera of every image.
    buildings : float64 (b, 2, 3)
        Each building's box as (min corner, max corner).
    facade_building, facade_axis : int64 (f,)
        A facade's building and the axis (0: x, 1: y) of its outward normal.
    facade_normal : float64 (f, 3)
    facade_start : int64 (f + 1,)
        Landmarks of facade ``i`` are ``facade_start[i]:facade_start[i + 1]``.
    landmarks : float64 (n, 3)
        The 3D points, grouped by facade.
    landmark_facade : int64 (n,)
    landmark_size : float64 (n,)
        Size of each landmark's detail, metres.
    landmark_prototype : int64 (n,)
        The repeated prototype of each landmark, -1 for a descriptor of its own.
    base_descriptors : uint8 (n, 128)
        Each landmark's descriptor without viewpoint noise.
    names : list of str
        Database image names.
    cam_from_world : float64 (num_images, 3, 4)
        Database poses.
    """

    def __init__(self, options: CityOptions):
        self.options = options
        width, height = (int(s) for s in options.image_size)
        self.camera = Camera("PINHOLE", width, height, (options.focal, options.focal, width / 2, height / 2))
        self._K = self.camera.K
        rng = np.random.default_rng([options.seed, 0])
        self.buildings = _buildings(options, rng)
        self.facade_building, self.facade_axis, self.facade_normal, self._facade_box = _facades(self.buildings)
        self.landmarks, self.landmark_facade, self.landmark_size = _landmarks(options, self._facade_box, rng)
        self.facade_start = np.searchsorted(self.landmark_facade, np.arange(len(self.facade_building) + 1))
        self.base_descriptors, self.landmark_prototype = _base_descriptors(
            options, self.facade_building[self.landmark_facade], len(self.buildings), rng)
        self.cam_from_world = _database_poses(options, rng)
        self.names = [f"city/db_{i:06d}" for i in range(len(self.cam_from_world))]
        logger.info("city: %d buildings, %d landmarks, %d database images", len(self.buildings),
                    len(self.landmarks), len(self.names))

    def __repr__(self) -> str:
        return f"City({len(self.buildings)} buildings, {len(self.landmarks)} landmarks, {len(self.names)} images)"

    def __len__(self) -> int:
        return len(self.names)

    # ------------------------------------------------------------------ images

    def image(self, i: int) -> CityImage:
        """Database image ``i``: always the same features for the same city."""
        if not 0 <= i < len(self.names):
            raise IndexError(f"database image {i} of {len(self.names)}")
        rng = np.random.default_rng([self.options.seed, 1, i])
        return CityImage(self.names[i], self.cam_from_world[i], *self.observe(self.cam_from_world[i], rng))

    def iter_images(self, progress: bool = False, workers: int = 1) -> Iterator[CityImage]:
        """The database images one at a time, in order, for streaming large cities to disk.

        ``workers`` threads make images ahead (numpy releases the GIL in the heavy passes);
        at most ``2 x workers`` wait, so memory holds a handful of images however slow the
        consumer. The images are the same for any ``workers``.
        """
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        from tqdm import tqdm

        if int(workers) != workers or workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        indices = iter(tqdm(range(len(self.names)), desc="city: images", disable=not progress, leave=False))
        if workers == 1:
            yield from (self.image(i) for i in indices)
            return
        with ThreadPoolExecutor(max_workers=int(workers)) as pool:
            pending = deque(pool.submit(self.image, i) for _, i in zip(range(2 * int(workers)), indices))
            while pending:
                image = pending.popleft().result()
                pending.extend(pool.submit(self.image, i) for i in itertools.islice(indices, 1))
                yield image

    def database(self, progress: bool = False, workers: int = 1) -> FeatureImages:
        """Every database image's features (Map's per-image lists) with its true pose."""
        images = list(self.iter_images(progress, workers))
        return FeatureImages(list(self.names), self.camera, self.cam_from_world.copy(),
                             [im.keypoints for im in images], [im.descriptors for im in images],
                             [im.point_ids for im in images])

    def queries(self, n: int, seed: int = 0, min_landmarks: int = 20, progress: bool = False) -> FeatureImages:
        """``n`` query images at new poses (anywhere along the streets, headings turned up
        to 30 degrees from the street axes, heights across the camera range), with their
        true poses. Queries of one ``seed`` are always the same.

        A pose that observes fewer than ``min_landmarks`` landmarks (one turned out of the
        city) is drawn again: nothing could localize it, and a benchmark would count a
        flaw of the generator as a failure of the localizer.
        """
        for name, value in (("number of queries", n), ("seed", seed), ("min_landmarks", min_landmarks)):
            if int(value) != value or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        from tqdm import tqdm

        poses = self._query_poses(int(n), seed, min_landmarks)
        features = [self.observe(pose, np.random.default_rng([self.options.seed, 3, seed, i]))
                    for i, pose in enumerate(tqdm(poses, desc="city: queries", disable=not progress, leave=False))]
        return FeatureImages([f"city/query_{seed}_{i:05d}" for i in range(len(poses))], self.camera, poses,
                             [f[0] for f in features], [f[1] for f in features], [f[2] for f in features])

    def _query_poses(self, n: int, seed: int, min_landmarks: int) -> np.ndarray:
        """``n`` query poses that observe ``min_landmarks`` landmarks, drawn in rounds."""
        if n == 0:
            return np.zeros((0, 3, 4))
        rng = np.random.default_rng([self.options.seed, 2, seed])
        kept: List[np.ndarray] = []
        for _ in range(100):
            drawn = _query_poses(self.options, n - len(kept), rng)
            kept += [pose for pose in drawn if len(self.visible_landmarks(pose).ids) >= min_landmarks]
            if len(kept) >= n:
                return np.stack(kept[:n])
        raise ValueError(f"too few poses observe {min_landmarks} landmarks in this city: lower min_landmarks or "
                         "raise landmark_density")

    def observe(self, cam_from_world: np.ndarray, rng: np.random.Generator):
        """Features a camera at ``cam_from_world`` (3x4) sees: ``(keypoints float32 (m, 2),
        descriptors uint8 (m, 128), point_ids int64 (m,))`` in random order, clutter with
        id -1; noise drawn from ``rng``.

        The landmarks are :meth:`visible_landmarks` within the ``max_features`` budget whose
        noisy keypoint stays in the image; with ``keypoint_noise_px=0`` the keypoints are
        the exact projections.
        """
        pose = _check_pose(cam_from_world)
        o = self.options
        clutter = min(int(rng.poisson(o.clutter_per_image)), o.max_features)
        ids, pixels, distance, cosine, scale = self.visible_landmarks(pose)
        if len(ids) > o.max_features - clutter:
            strongest = np.sort(np.argsort(-scale, kind="stable")[:o.max_features - clutter])
            ids, pixels, distance, cosine = ids[strongest], pixels[strongest], distance[strongest], cosine[strongest]
        # float32 first: rounding must not carry a keypoint onto the image border
        keypoints = (pixels + o.keypoint_noise_px * rng.standard_normal(pixels.shape)).astype(np.float32)
        width, height = self.camera.width, self.camera.height
        inside = ((keypoints >= -0.5) & (keypoints < (width - 0.5, height - 0.5))).all(1)
        ids, keypoints, distance, cosine = ids[inside], keypoints[inside], distance[inside], cosine[inside]
        sigma = o.descriptor_noise * (1 + 1.5 * (1 - cosine)) * (1 + distance / o.max_range)
        noisy = self.base_descriptors[ids].astype(np.float32) / np.float32(DESCRIPTOR_NORM)
        noisy += (sigma / np.sqrt(DESCRIPTOR_DIM)).astype(np.float32)[:, None] * rng.standard_normal(
            noisy.shape, dtype=np.float32)
        clutter_keypoints = _random_keypoints(rng, clutter, width, height)
        descriptors = _sift_u8(np.concatenate([noisy, _random_descriptors(rng, clutter)]))
        keypoints = np.concatenate([keypoints, clutter_keypoints])
        point_ids = np.concatenate([ids, np.full(clutter, -1, np.int64)])
        order = rng.permutation(len(point_ids))
        return keypoints[order], descriptors[order], point_ids[order]

    def visible_landmarks(self, cam_from_world: np.ndarray) -> "VisibleLandmarks":
        """The landmarks a camera observes, before noise and before the ``max_features``
        budget, ids ascending.

        A landmark is observed when it lies on a facade facing the camera, within
        ``max_range``, in front of the camera and inside the image, its size projects to at
        least ``min_feature_px``, and no other building cuts the segment from the camera
        centre to it.
        """
        cam_from_world = _check_pose(cam_from_world)
        R, t = cam_from_world[:, :3], cam_from_world[:, 3]
        centre = -R.T @ t
        o = self.options
        facades = np.flatnonzero(_facing_in_range(self._facade_box, self.facade_normal, centre, o.max_range))
        facades = facades[_in_frustum(self._facade_box[facades], cam_from_world, self._K, self.camera.width,
                                      self.camera.height)]
        starts, ends = self.facade_start[facades], self.facade_start[facades + 1]
        ids = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)] or [np.zeros(0, np.int64)])
        points = self.landmarks[ids]
        cam = points @ R.T + t
        depth = cam[:, 2]
        distance = np.linalg.norm(points - centre, axis=1)
        keep = (depth > _NEAR) & (distance <= o.max_range)
        scale = o.focal * self.landmark_size[ids] / np.where(depth > _NEAR, depth, np.inf)
        keep &= scale >= o.min_feature_px
        ids, cam, distance, scale = ids[keep], cam[keep], distance[keep], scale[keep]
        pixels = cam[:, :2] / cam[:, 2:] * self._K[[0, 1], [0, 1]] + self._K[:2, 2]
        width, height = self.camera.width, self.camera.height
        inside = ((pixels >= -0.5) & (pixels < (width - 0.5, height - 0.5))).all(1)
        ids, pixels, distance, scale = ids[inside], pixels[inside], distance[inside], scale[inside]
        near_buildings = np.flatnonzero(_box_distance(self.buildings, centre) <= o.max_range)
        own = self.facade_building[self.landmark_facade[ids]]
        hidden = _segments_blocked(centre, self.landmarks[ids], self.buildings[near_buildings],
                                   near_buildings, own)
        ids, pixels, distance, scale = ids[~hidden], pixels[~hidden], distance[~hidden], scale[~hidden]
        normals = self.facade_normal[self.landmark_facade[ids]]
        cosine = np.einsum("ij,ij->i", centre - self.landmarks[ids], normals) / np.maximum(distance, 1e-12)
        return VisibleLandmarks(ids, pixels, distance, cosine, scale)


def generate_city(options: Optional[CityOptions] = None, **overrides) -> City:
    """A city from ``options`` (defaults: :class:`CityOptions`), with any field replaced by
    a keyword, e.g. ``generate_city(blocks_x=2, seed=3)``."""
    options = options or CityOptions()
    if overrides:
        known = {f.name for f in fields(CityOptions)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown city options {unknown}; use fields of CityOptions: {sorted(known)}")
        options = CityOptions(**{**{f.name: getattr(options, f.name) for f in fields(CityOptions)}, **overrides})
    return City(options)


# ---------------------------------------------------------------- geometry


def _buildings(o: CityOptions, rng) -> np.ndarray:
    """(b, 2, 3) boxes: block (i, j) spans [W + i P, W + i P + B] in x (P = B + W)."""
    pitch = o.block_size + o.street_width
    i, j = np.meshgrid(np.arange(o.blocks_x), np.arange(o.blocks_y), indexing="ij")
    x0 = o.street_width + i.ravel() * pitch
    y0 = o.street_width + j.ravel() * pitch
    heights = rng.uniform(*o.building_height_range, len(x0))
    lo = np.stack([x0, y0, np.zeros_like(x0)], 1)
    hi = np.stack([x0 + o.block_size, y0 + o.block_size, heights], 1)
    return np.stack([lo, hi], 1)


def _facades(buildings: np.ndarray):
    """The four sides of every box: building, normal axis, outward normal and the flat box
    (b * 4, 2, 3) each facade spans (min = max along the normal axis)."""
    building, axis, normal, box = [], [], [], []
    for b, (lo, hi) in enumerate(buildings):
        for ax in (0, 1):
            for sign, coordinate in ((-1.0, lo[ax]), (1.0, hi[ax])):
                flat = np.stack([lo, hi]).copy()
                flat[:, ax] = coordinate
                n = np.zeros(3)
                n[ax] = sign
                building.append(b), axis.append(ax), normal.append(n), box.append(flat)
    return (np.array(building, np.int64), np.array(axis, np.int64), np.array(normal), np.array(box))


def _landmarks(o: CityOptions, facade_box: np.ndarray, rng):
    """Landmarks uniform on each facade (Poisson count from the density), grouped by facade."""
    extent = facade_box[:, 1] - facade_box[:, 0]
    area = np.prod(np.where(extent > 0, extent, 1.0), axis=1)
    counts = rng.poisson(o.landmark_density * area)
    facade = np.repeat(np.arange(len(facade_box)), counts)
    u = rng.random((len(facade), 3))
    points = facade_box[facade, 0] + u * extent[facade]
    lo, hi = np.log(o.landmark_size_range[0]), np.log(o.landmark_size_range[1])
    size = np.exp(rng.uniform(lo, hi, len(facade)))
    return points, facade, size


def _check_pose(cam_from_world) -> np.ndarray:
    pose = np.asarray(cam_from_world, dtype=np.float64)
    if pose.shape != (3, 4) or not np.isfinite(pose).all():
        raise ValueError(f"cam_from_world must be a finite 3x4 matrix [R | t], got shape {pose.shape}")
    return pose


def _box_distance(boxes: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Euclidean distance from ``point`` to each box (b, 2, 3); 0 inside."""
    gap = np.maximum(np.maximum(boxes[:, 0] - point, point - boxes[:, 1]), 0)
    return np.linalg.norm(gap, axis=1)


def _facing_in_range(facade_box, facade_normal, centre, max_range) -> np.ndarray:
    """Facades whose front faces ``centre`` and that come within ``max_range`` of it."""
    front = np.einsum("ij,ij->i", centre - facade_box[:, 0], facade_normal) > 0
    return front & (_box_distance(facade_box, centre) <= max_range)


def _in_frustum(boxes: np.ndarray, cam_from_world: np.ndarray, K: np.ndarray, width: int, height: int):
    """Whether each box (b, 2, 3) may reach into the camera's view: False only when all its
    corners lie outside one plane of the frustum (the near plane or an image side)."""
    corners = np.stack([boxes[:, [i, j, k], [0, 1, 2]] for i in (0, 1) for j in (0, 1) for k in (0, 1)], 1)
    cam = corners @ cam_from_world[:, :3].T + cam_from_world[:, 3]
    x, y, z = cam[..., 0], cam[..., 1], cam[..., 2]
    (fx, _, cx), (_, fy, cy) = K[0], K[1]
    inside_planes = (z - _NEAR, fx * x + (cx + 0.5) * z, -fx * x + (width - 0.5 - cx) * z,
                     fy * y + (cy + 0.5) * z, -fy * y + (height - 0.5 - cy) * z)
    return ~np.any([(plane < 0).all(1) for plane in inside_planes], axis=0)


def _segments_blocked(origin, points, boxes, box_ids, own) -> np.ndarray:
    """Whether the segment from ``origin`` to each point passes through a box other than
    the point's own (``own[i]``, compared with ``box_ids``): the slab test, all segments
    against all boxes at once."""
    if len(points) == 0 or len(boxes) == 0:
        return np.zeros(len(points), bool)
    direction = points - origin
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse = 1.0 / direction  # +-inf along an axis the segment does not move on
        t0 = (boxes[None, :, 0] - origin) * inverse[:, None]
        t1 = (boxes[None, :, 1] - origin) * inverse[:, None]
    enter = np.minimum(t0, t1).max(axis=2)
    leave = np.maximum(t0, t1).min(axis=2)
    # a box blocks where the segment (t in [0, 1]) overlaps the box's interval of t
    crosses = (enter < leave) & (leave > 0) & (enter < 1)
    crosses &= box_ids[None, :] != own[:, None]
    return crosses.any(axis=1)


def _rotations(heading, pitch, roll) -> np.ndarray:
    """(n, 3, 3) ``R`` of cam_from_world for OpenCV cameras looking along ``heading`` (radians
    from +x towards +y), raised by ``pitch`` and turned by ``roll`` about the optical axis;
    world z is up, so image y (down) points away from it."""
    forward = np.stack([np.cos(heading) * np.cos(pitch), np.sin(heading) * np.cos(pitch), np.sin(pitch)], 1)
    right = np.stack([np.sin(heading), -np.cos(heading), np.zeros_like(heading)], 1)
    down = np.cross(forward, right)
    c, s = np.cos(roll)[:, None], np.sin(roll)[:, None]
    return np.stack([c * right + s * down, c * down - s * right, forward], 1)


def _poses(centres, heading, pitch, roll) -> np.ndarray:
    R = _rotations(heading, pitch, roll)
    return np.concatenate([R, -np.einsum("nij,nj->ni", R, centres)[:, :, None]], axis=2)


def _streets(o: CityOptions) -> np.ndarray:
    """Street centre lines ``(s, 2, 2)`` (start, end in xy), x streets first, each running
    between the outermost cross streets' centre lines."""
    pitch = o.block_size + o.street_width
    half = o.street_width / 2
    x_end, y_end = o.blocks_x * pitch + half, o.blocks_y * pitch + half
    along_x = [((half, j * pitch + half), (x_end, j * pitch + half)) for j in range(o.blocks_y + 1)]
    along_y = [((i * pitch + half, half), (i * pitch + half, y_end)) for i in range(o.blocks_x + 1)]
    return np.array(along_x + along_y, dtype=np.float64)


def _street_cameras(o: CityOptions, street: np.ndarray, s: np.ndarray, rng, turn: float) -> np.ndarray:
    """Poses at arc lengths ``s`` along ``street``: one of four headings (along either way, or
    across, at the far side of the street, as people photograph it; never out of the city),
    turned by up to ``turn`` degrees, a random side offset and height, pitch -5..10 degrees
    (looking up at the buildings) and a roll of about 2 degrees."""
    n = len(s)
    along = (street[1] - street[0]) / np.linalg.norm(street[1] - street[0])
    side = np.array([-along[1], along[0]])
    on_line = street[0] + s[:, None] * along
    heading = np.arctan2(along[1], along[0]) + rng.integers(0, 4, n) * (np.pi / 2)
    # a camera facing out of the city (outer streets, street ends) would see few buildings or
    # none: turn it round unless half a block of the city lies ahead of it
    direction = np.rint(np.column_stack([np.cos(heading), np.sin(heading)]))  # an axis, +-1
    axis = np.abs(direction).argmax(1)
    reach = o.street_width + o.block_size / 2
    ahead = on_line[np.arange(n), axis] + reach * direction[np.arange(n), axis]
    city_end = np.array([o.blocks_x, o.blocks_y])[axis] * (o.block_size + o.street_width)
    outward = (ahead < o.street_width) | (ahead > city_end)
    heading += np.pi * outward
    direction[outward] *= -1
    offset = rng.uniform(-(o.street_width / 2 - _KERB), o.street_width / 2 - _KERB, n)
    across = direction @ side  # +-1 when looking across the street, 0 along it
    offset = np.where(across != 0, -across * np.abs(offset), offset)
    centres = np.column_stack([on_line + offset[:, None] * side, rng.uniform(*o.camera_height_range, n)])
    heading += np.radians(rng.uniform(-turn, turn, n))
    pitch = np.radians(rng.uniform(-5.0, 10.0, n))
    roll = np.radians(np.clip(rng.normal(0.0, 2.0, n), -5.0, 5.0))
    return _poses(centres, heading, pitch, roll)


def _database_poses(o: CityOptions, rng) -> np.ndarray:
    """Database cameras every ``1 / cameras_per_metre`` metres along every street (spacing
    jittered by a quarter), headings within 10 degrees of the street axes."""
    poses = []
    for street in _streets(o):
        length = np.linalg.norm(street[1] - street[0])
        n = max(1, int(round(length * o.cameras_per_metre)))
        s = (np.arange(n) + 0.5 + rng.uniform(-0.25, 0.25, n)) * (length / n)
        poses.append(_street_cameras(o, street, s, rng, turn=10.0))
    return np.concatenate(poses)


def _query_poses(o: CityOptions, n: int, rng) -> np.ndarray:
    """``n`` poses anywhere along the streets (street chosen by length), turned up to 30 degrees."""
    streets = _streets(o)
    lengths = np.linalg.norm(streets[:, 1] - streets[:, 0], axis=1)
    which = rng.choice(len(streets), n, p=lengths / lengths.sum())
    poses = np.zeros((n, 3, 4))
    for k in np.unique(which):
        chosen = np.flatnonzero(which == k)
        poses[chosen] = _street_cameras(o, streets[k], rng.uniform(0, lengths[k], len(chosen)), rng, turn=30.0)
    return poses


# ------------------------------------------------------------- descriptors


def _random_keypoints(rng, n: int, width: int, height: int) -> np.ndarray:
    """float32 (n, 2) keypoints uniform over the image (OpenCV pixels, [-0.5, size - 0.5))."""
    # a millipixel short of the far border, so that rounding to float32 stays inside it
    return rng.uniform((-0.5, -0.5), (width - 0.501, height - 0.501), (n, 2)).astype(np.float32)


def _random_descriptors(rng, n: int) -> np.ndarray:
    """float32 (n, 128) unit vectors like RootSIFT: square roots of sparse Gamma(1/2) draws."""
    # sqrt(Gamma(1/2)) is |N(0, 1)| / sqrt(2); the normal is drawn far faster than the gamma
    x = rng.standard_normal((n, DESCRIPTOR_DIM), dtype=np.float32)
    np.abs(x, out=x)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


def _sift_u8(x: np.ndarray) -> np.ndarray:
    """uint8 descriptors from float32 rows, as RootSIFT is stored: negatives cut to 0, L2
    scaled to 512, clipped to 255 and rounded. Works in place: ``x`` is used up."""
    np.maximum(x, 0, out=x)
    x *= np.float32(DESCRIPTOR_NORM) / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    np.minimum(x, 255, out=x)
    return np.rint(x, out=x).astype(np.uint8)


def _base_descriptors(o: CityOptions, landmark_building: np.ndarray, num_buildings: int, rng):
    """Base descriptors and prototype ids: a ``repeated_share`` of landmarks take one of
    their building's ``prototypes_per_building`` prototypes (drawn from the city's
    ``num_prototypes``) perturbed by ``landmark_perturbation``; the others a random one."""
    n = len(landmark_building)
    prototypes = _random_descriptors(rng, o.num_prototypes)
    styles = rng.integers(0, o.num_prototypes, (num_buildings, o.prototypes_per_building))
    repeated = rng.random(n) < o.repeated_share
    prototype = np.full(n, -1, np.int64)
    prototype[repeated] = styles[landmark_building[repeated], rng.integers(0, o.prototypes_per_building,
                                                                           int(repeated.sum()))]
    base = np.empty((n, DESCRIPTOR_DIM), np.uint8)
    for start in range(0, n, _CHUNK):  # in chunks: the float copies of millions of rows would not fit
        chunk = slice(start, min(start + _CHUNK, n))
        rows = _random_descriptors(rng, chunk.stop - start)
        mine = repeated[chunk]
        noise = rng.standard_normal((int(mine.sum()), DESCRIPTOR_DIM), dtype=np.float32)
        rows[mine] = prototypes[prototype[chunk][mine]] + (o.landmark_perturbation / np.sqrt(DESCRIPTOR_DIM)) * noise
        base[chunk] = _sift_u8(rows)
    return base, prototype


# --------------------------------------------------- real-SIFT distractors

_POOLS: dict = {}  # descriptor pools by sources and extraction settings, extracted once


def sift_descriptor_pool(source_images: Sequence, max_features: int = 4000, extractor: str = "opencv",
                         progress: bool = False) -> np.ndarray:
    """Real RootSIFT descriptors (uint8 (n, 128), read-only) of every source image, stacked.

    Extracted once per process for the same files (path, size and modification time) and
    settings, on a thread per core, then served from memory.
    """
    paths = [Path(p) for p in source_images]
    if not paths:
        raise ValueError("no source images: give photo paths, e.g. ../shared/data/lund/images/*.jpg")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"source images not found: {missing[:3]}")
    key = (tuple((os.fspath(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths),
           int(max_features), extractor)
    if key not in _POOLS:
        from concurrent.futures import ThreadPoolExecutor

        from tqdm import tqdm

        # the extractors release the GIL: one thread per core
        with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as threads:
            parts = list(tqdm(threads.map(lambda p: extract_sift(p, max_features, extractor)[1], paths),
                              total=len(paths), desc="distractors: SIFT", disable=not progress, leave=False))
        pool = np.ascontiguousarray(np.concatenate(parts))
        pool.setflags(write=False)  # shared by every caller: nobody may change it
        _POOLS[key] = pool
        logger.info("distractors: %d SIFT descriptors from %d images", len(pool), len(paths))
    return _POOLS[key]


def _check_counts(n_images, features_per_image, seed) -> None:
    for name, value in (("n_images", n_images), ("features_per_image", features_per_image), ("seed", seed)):
        if int(value) != value or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")


def iter_sift_distractors(n_images: int, features_per_image: int, source_images: Sequence, seed: int = 0,
                          image_size: Tuple[int, int] = (1024, 768), max_features: int = 4000,
                          extractor: str = "opencv", progress: bool = False) -> Iterator[CityImage]:
    """The images of :func:`real_sift_distractors` one at a time (``cam_from_world`` None),
    for streaming thousands of them to disk; image ``i`` draws from its own generator, so
    it is the same whichever way the images are made."""
    _check_counts(n_images, features_per_image, seed)  # before a long extraction
    pool = sift_descriptor_pool(source_images, max_features, extractor, progress)
    return iter_pool_distractors(n_images, features_per_image, pool, seed, image_size, progress)


def iter_pool_distractors(n_images: int, features_per_image: int, pool: np.ndarray, seed: int = 0,
                          image_size: Tuple[int, int] = (1024, 768), progress: bool = False) -> Iterator[CityImage]:
    """:func:`iter_sift_distractors` from a descriptor ``pool`` (uint8 (n, 128)) already at
    hand, e.g. the stacked features of photos a caller has extracted anyway: the same pool
    gives the same images."""
    _check_counts(n_images, features_per_image, seed)
    pool = np.asarray(pool)
    if pool.ndim != 2 or pool.shape[1] != DESCRIPTOR_DIM or pool.dtype != np.uint8:
        raise ValueError(f"pool must be uint8 (n, {DESCRIPTOR_DIM}) descriptors, got {pool.dtype} {pool.shape}")
    if features_per_image > len(pool):
        raise ValueError(f"features_per_image={features_per_image} exceeds the {len(pool)} descriptors of the "
                         "source images: give more images or ask for fewer features")
    return _pool_images(int(n_images), int(features_per_image), pool, seed, image_size, progress)


def _pool_images(n_images: int, features_per_image: int, pool: np.ndarray, seed: int, image_size,
                 progress: bool) -> Iterator[CityImage]:
    from tqdm import tqdm

    width, height = (int(s) for s in image_size)
    for i in tqdm(range(n_images), desc="distractors", disable=not progress, leave=False):
        rng = np.random.default_rng([seed, 4, i])
        rows = rng.choice(len(pool), features_per_image, replace=False)
        keypoints = _random_keypoints(rng, len(rows), width, height)
        yield CityImage(f"distractor/{i:06d}", None, keypoints, pool[rows], np.full(len(rows), -1, np.int64))


def real_sift_distractors(n_images: int, features_per_image: int, source_images: Sequence, seed: int = 0,
                          image_size: Tuple[int, int] = (1024, 768), max_features: int = 4000,
                          extractor: str = "opencv", progress: bool = False) -> FeatureImages:
    """``n_images`` distractor images of real SIFT descriptors recombined at random.

    Each image takes ``features_per_image`` distinct descriptors drawn at random from the
    pool of every source image's SIFT (:func:`sift_descriptor_pool`, extracted once) with
    random keypoints in an image of ``image_size``, so it looks like a real image to
    retrieval but shows no real place. The images have no pose (``cam_from_world`` is
    None) and no 3D points (ids -1); names ``distractor/NNNNNN``; the camera is a PINHOLE
    of focal 1.2 x the larger side.
    """
    images = list(iter_sift_distractors(n_images, features_per_image, source_images, seed, image_size,
                                        max_features, extractor, progress))
    width, height = (int(s) for s in image_size)
    camera = Camera("PINHOLE", width, height, (1.2 * max(width, height),) * 2 + (width / 2, height / 2))
    return FeatureImages([im.name for im in images], camera, None, [im.keypoints for im in images],
                         [im.descriptors for im in images], [im.point_ids for im in images])
