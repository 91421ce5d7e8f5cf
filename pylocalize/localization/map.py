"""Localization maps, and query localization: CANN retrieval, 2D-3D matching, PnP.

A :class:`Map` holds posed database images (names, COLMAP cameras, ``cam_from_world``),
their SIFT keypoints and descriptors with the 3D point each observes, the 3D points, and
a :class:`CANNIndex` over every database feature (or, after :meth:`Map.compress`, a
:class:`~pylocalize.index.cann_pq.CANNPQIndex` of 32-byte codes). It is built from

- images with known poses (:meth:`Map.from_views`, :meth:`Map.from_strecha`,
  :meth:`Map.from_pose_file`, :meth:`Map.from_colmap` for a COLMAP model's cameras and
  poses): features, matching and triangulation under the fixed poses
  (:mod:`~pylocalize.localization.triangulation`);
- images only (:meth:`Map.from_images`): incremental SfM with pycolmap on our features.

A map may also hold binary feature layers beside SIFT (:meth:`Map.add_layer`, ``layers=("sift",
"orb")`` of the builders; :mod:`~pylocalize.localization.layers`): ORB of the same images with
their own 3D points, matched by Hamming distance on the core's :class:`BinaryIndex`, the fast
features for frames of a stream (``localize(..., features="orb")``).

A query is localized (:meth:`Map.localize`) in four stages, each a method of its own:
:meth:`Map.extract` (its SIFT features), :meth:`Map.retrieve` (database images by CANN),
:meth:`Map.match_2d3d` (its features against those of the retrieved images that observe 3D
points: ratio test against other points, mutual check) and :meth:`Map.estimate_pose`
(pycolmap's LO-RANSAC and non-linear refinement). A query that cannot be localized gives
``success=False`` and the reason, never an exception; :meth:`Map.localize_many` runs a batch
in parallel.

A query's camera is given, or found for its file (:meth:`Map.query_camera`): the map's own
calibrated camera when the query comes from the device (EXIF make, model, focal length) that
took the map's images, else its EXIF focal length, else a guess whose focal length is then
estimated with the pose; the result says which (``camera_source``, ``intrinsics_guessed``).

Conventions: OpenCV pixels (centres at integers) and ``cam_from_world`` 3x4; pycolmap's
pixel convention (+0.5) is handled at its boundary.
"""

from __future__ import annotations

import logging
import os
import re
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Union

import numpy as np

from pylocalize import _core
from pylocalize._core import FormatError
from pylocalize._folders import FolderLock, remove_unreferenced, unique_name
from pylocalize._log import phase, quiet_colmap
from pylocalize.containers import LAYOUT_ERRORS, read_layout
from pylocalize.datasets.strecha import read_strecha_scene
from pylocalize.features import SiftExtractor, extract_sift, match_descriptors
from pylocalize.features.sift import check_extractor
from pylocalize.geometry import read_pose_file
from pylocalize.geometry.absolute_pose import AbsolutePose, estimate_absolute_pose
from pylocalize.geometry.camera import Camera, CameraDevice, is_focal_guess, read_cameras_file
from pylocalize.index.cann import CANNIndex, default_nlist
from pylocalize.index.cann_pq import CANNPQIndex
from pylocalize.io import image_files, image_size, load_pixels, read_image  # noqa: F401 (read_image's old path)
from pylocalize.localization.georegister import DEFAULT_GPS_NOISE_M, camera_geodetic, gps_of_images
from pylocalize.localization.georegister import georegister as georegister_map
from pylocalize.localization.layers import BINARY_EXTRACTORS, BinaryLayer, FeatureLayer, binary_extractor, check_kind
from pylocalize.localization.sfm import reconstruct
from pylocalize.localization.triangulation import select_pairs, triangulate

# Version of the map layout inside the container; bumped when sections or meta change.
# 1: one file, PINHOLE K per image. 2: a directory, COLMAP cameras, extractor, CANN index
# in cann.pyloc. 3: the index file has a unique name per save, recorded in map.pyloc (the
# commit point of a save) with its size and feature count. Layout 2 is still read.
# Optional JSON keys added since need no new layout: "devices" (the EXIF device of each image,
# for queries to reuse the map's calibrated cameras) is absent from older maps, which load
# without it. Nor do optional sections: binary feature layers (layers.py; "orb.keypoints" ...
# and "layers" in the JSON, the extractor options of each) are absent from older maps, which
# load with SIFT alone, and a reader from before them loads a map holding them as SIFT alone.
# The index file carries its own layout version (CANNIndex meta "layout"; 2: a trained index
# stores its ivf search layout, mapped at load), which CANNIndex.load reads: the map's
# sections do not change with it.
MAP_VERSION = 3
MAP_FILE = "map.pyloc"
INDEX_FILE = "cann.pyloc"  # the index of a layout-2 map
LOCK_FILE = "map.lock"  # flock'ed by a save, so that two saves into one folder take turns
# The index files a save writes ("cann-<16 hex>.pyloc"): a strict pattern, so that a map file
# can never name a path outside its folder
_INDEX_NAME = re.compile(r"^cann-[0-9a-f]{16}\.pyloc$")
# The kept structure-from-motion model of a map built from images: a COLMAP model folder with
# a unique name per save ("sfm-<16 hex>"), named by map.pyloc like the index file; and the
# temporary and set-aside folders a killed save may leave (colmap_export.write_reconstruction)
_SFM_NAME = re.compile(r"^sfm-[0-9a-f]{16}$")
_SFM_LEFTOVER = re.compile(r"^\.sfm-[0-9a-f]{16}\.(tmp|old)-[0-9a-f]{16}$")

logger = logging.getLogger(__name__)

CameraLike = Union[Camera, str, np.ndarray]

# CANN search options of the index a map builds (stored with it on save; also applied to the
# indexes of maps saved before indexes stored their options): the kernel cutoff p0 suits
# RootSIFT stored as uint8 (512 x unit vectors).
RETRIEVAL_OPTIONS = {"p0": 200.0}
# Maps with more features than this search an inverted file (trained at build, stored with
# the index) instead of every feature: exact CANN costs as much as matching against every
# database image once a map has tens of thousands of features.
IVF_MIN_FEATURES = 20_000
IVF_NPROBE = 4


# A compressed map (Map.compress) re-scores this many retrieved images exactly against its
# memory-mapped descriptors, so that quantized distances only choose the candidates.
COMPRESSED_RERANK = 20
# Descriptors the product quantizer of a compressed map learns from.
COMPRESS_SAMPLE = 200_000


def _configure_retrieval(index: CANNIndex) -> CANNIndex:
    if index.is_trained:
        index.method, index.nprobe = "ivf", IVF_NPROBE
    return index


@dataclass
class LocalizationResult:
    """Outcome of :meth:`Map.localize`.

    Attributes
    ----------
    success : bool
    cam_from_world : float64 (3, 4) or None
    num_inliers, num_matches : int
    inlier_mask : bool (num_matches,) or None
    points2D : float64 (num_matches, 2) or None
        Query keypoints of the 2D-3D matches (OpenCV convention).
    point3D_ids : int64 (num_matches,) or None
        The map point of each match: an index into the points of the features matched
        (``Map.feature_layer(features).points3D``; ``Map.points3D`` for SIFT).
    covariance : float64 (6, 6) or None
        Covariance of the pose (rotation as axis-angle, then translation), from the
        refinement's Jacobian at the solution.
    retrieved : list of str
        Database images returned by retrieval, best first.
    reason : str
        Why localization failed (empty on success).
    timings : dict
        Seconds per stage.
    camera : Camera or None
        The query's camera the pose is for: the estimated one when ``focal_estimated``.
    camera_source : str
        Where the query's intrinsics came from (``"given"``, ``"--camera"``, ``"map camera of
        <image>"``, an EXIF note, or the guess of a camera without EXIF focal length).
    intrinsics_guessed : bool
        The focal length given was a guess (no calibration, no EXIF focal length); such a pose
        is less trustworthy than one of a known camera even when ``success``.
    focal_estimated : bool
        The focal length was estimated with the pose (see ``estimate_focal`` of :meth:`Map.localize`).
    features : str
        The map's feature layer the query was matched against (``"sift"``, ``"orb"``).
    """

    success: bool
    cam_from_world: Optional[np.ndarray] = None
    num_inliers: int = 0
    num_matches: int = 0
    inlier_mask: Optional[np.ndarray] = None
    points2D: Optional[np.ndarray] = None
    point3D_ids: Optional[np.ndarray] = None
    covariance: Optional[np.ndarray] = None
    retrieved: List[str] = field(default_factory=list)
    reason: str = ""
    timings: Dict[str, float] = field(default_factory=dict)
    camera: Optional[Camera] = None
    camera_source: str = ""
    intrinsics_guessed: bool = False
    focal_estimated: bool = False
    features: str = "sift"

    def __repr__(self) -> str:
        """One line: outcome, inliers of matches, camera centre, camera source, reason (the
        arrays would print hundreds of lines)."""
        parts = ["success" if self.success else "failed", f"{self.num_inliers}/{self.num_matches} inliers"]
        if self.cam_from_world is not None:
            R, t = self.cam_from_world[:, :3], self.cam_from_world[:, 3]
            parts.append("centre [" + ", ".join(f"{v:.4g}" for v in -R.T @ t) + "]")
        if self.camera_source:
            guess = ", guessed" + (" then estimated" if self.focal_estimated else "") if self.intrinsics_guessed else ""
            focal = f", f={self.camera.K[0, 0]:.1f} px" if self.camera is not None else ""
            parts.append(f"camera: {self.camera_source}{focal}{guess}")
        if self.reason:
            parts.append(f"reason: {self.reason}")
        return f"LocalizationResult({'; '.join(parts)})"


class QueryCamera(NamedTuple):
    """A query's camera and where it came from, as :meth:`Map.query_camera` finds it; a
    ``camera`` argument of :meth:`Map.localize` may be one."""

    camera: Camera
    source: str  # e.g. "map camera of 03.jpg", "EXIF 35 mm-equivalent focal length 35 mm"
    guessed: bool  # the focal length is a guess, not a calibration or EXIF value


class QueryFeatures(NamedTuple):
    """Output of :meth:`Map.extract`."""

    keypoints: np.ndarray  # float32 (n, 2), OpenCV pixels
    descriptors: np.ndarray  # uint8 (n, 128) RootSIFT, or a binary layer's (n, bytes)
    camera: Camera  # the query's camera, checked against the image size


class Matches2D3D(NamedTuple):
    """Output of :meth:`Map.match_2d3d`: match ``j`` ties query keypoint ``query_ids[j]`` to
    map point ``point3D_ids[j]``; sorted by query keypoint."""

    query_ids: np.ndarray  # int64 (m,), indices into the query's keypoints
    point3D_ids: np.ndarray  # int64 (m,), indices into the layer's points3D (Map.points3D for SIFT)


@contextmanager
def _timed(timings: Dict[str, float], stage: str):
    """Records the seconds a stage took in ``timings[stage]``; a stage that raises records
    nothing, as the result of a query that failed there carries no time for it."""
    t0 = time.perf_counter()
    yield
    timings[stage] = time.perf_counter() - t0


def check_image_name(name, error=ValueError) -> str:
    """``name`` if it is a database image name: a non-empty relative path that stays inside
    the image folder (no absolute path, no ``..`` component, no NUL or line break);
    otherwise raises ``error`` (ValueError when building or saving a map, FormatError when
    loading one)."""
    if not isinstance(name, str) or not name:
        raise error(f"image name {name!r}: must be a non-empty string")
    if "\0" in name or "\n" in name or "\r" in name:
        raise error(f"image name {name!r}: contains a NUL or line break")
    # ".." anywhere is rare: only then split the path (maps hold tens of thousands of names)
    if os.path.isabs(name) or name.startswith(("/", "\\")) or \
            (".." in name and ".." in PurePosixPath(name.replace("\\", "/")).parts):
        raise error(f"image name {name!r}: must be a path relative to the image folder, without '..'")
    return name


# dtype and trailing shape of each section of map.pyloc (None: any length along that axis)
_MAP_SECTIONS = {
    "names": (np.uint8, (None,)), "info": (np.uint8, (None,)), "counts": (np.int64, (None,)),
    "cam_from_world": (np.float64, (None, 3, 4)), "keypoints": (np.float32, (None, 2)),
    "descriptors": (np.uint8, (None, 128)), "point_ids": (np.int64, (None,)), "points3D": (np.float64, (None, 3)),
}


def _check_sections(sections: dict) -> None:
    """ValueError unless map.pyloc's sections have the dtypes and shapes save writes, with
    non-negative counts and finite geometry: a file that passes its checksums but not this
    was not written by pylocalize."""
    for key, (dtype, shape) in _MAP_SECTIONS.items():
        a = sections[key]
        if a.dtype != dtype or a.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, a.shape)):
            raise ValueError(f"section {key} is {a.dtype} {a.shape}, expected {np.dtype(dtype)} {shape}")
    if (sections["counts"] < 0).any():
        raise ValueError("negative feature counts")
    for key in ("cam_from_world", "keypoints", "points3D"):
        if not np.isfinite(sections[key]).all():
            raise ValueError(f"section {key} holds NaN or Inf")


def image_path(image_dir, name) -> Path:
    """The file of database image ``name`` in ``image_dir``: the one place that joins them.

    Raises ``ValueError`` unless ``name`` passes :func:`check_image_name`, so no name a map
    file holds can make pylocalize read a file outside the folder. The check is on the
    name, not on where links lead: a symbolic link that the user put in the image folder
    (datasets are often folders of links) is followed as the user meant.
    """
    check_image_name(name)
    return Path(image_dir) / name


def as_camera(camera: CameraLike, width: int, height: int) -> Camera:
    """A :class:`Camera` from a Camera, a ``"MODEL W H PARAMS..."`` string or a 3x3 K
    (OpenCV convention) for an image of ``width`` x ``height``."""
    if isinstance(camera, Camera):
        result = camera
    elif isinstance(camera, str):
        result = Camera.from_string(camera)
    else:
        result = Camera.from_K(camera, width, height)
    if (result.width, result.height) != (width, height):
        raise ValueError(f"camera is for {result.width}x{result.height} images, the image is {width}x{height}; "
                         "give the camera of this image size (Camera.scaled)")
    return result


def _per_item(cameras, n: int, what: str) -> list:
    """One camera per item from one shared camera (Camera, string or 3x3 K) or a sequence."""
    shared = (cameras is None or isinstance(cameras, (Camera, str, QueryCamera))
              or (isinstance(cameras, np.ndarray) and cameras.shape == (3, 3)))
    per_item = [cameras] * n if shared else list(cameras)
    if len(per_item) != n:
        raise ValueError(f"{n} {what} but {len(per_item)} cameras")
    return per_item


def image_features(image, sift: Callable):
    """``(keypoints, descriptors)`` of one image (an array or a file) by ``sift`` (an
    extractor: :class:`SiftExtractor`, :class:`~pylocalize.features.OrbExtractor`), or the
    ``ValueError`` reading its file raised, returned for the caller to skip or raise (a map
    build's extraction, local or distributed, decides the same way: :func:`_extract_all`)."""
    try:
        pixels = load_pixels(image)
    except ValueError as error:
        return error
    return sift(pixels)


def _on_threads(images, make_extractor: Callable, progress, desc):
    """:func:`image_features` of each image in order, on a local thread pool (the extractors
    release the GIL); one extractor per image (``make_extractor()``), as threads must not
    share one."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        yield from tqdm(pool.map(lambda image: image_features(image, make_extractor()), images),
                        total=len(images), desc=desc, disable=not progress, leave=False)


def _extract_on_threads(images, max_features, extractor, progress, desc):
    """SIFT of each image in order, on a local thread pool (:func:`_on_threads`)."""
    return _on_threads(images, lambda: SiftExtractor(max_features, extractor), progress, desc)


def _extract_all(images, max_features, extractor, progress, desc="map: features", skip_unreadable=False,
                 extraction=None, make_extractor: Optional[Callable] = None):
    """Features of many images, on a local thread pool or by ``extraction``.

    SIFT of ``extractor`` and ``max_features``; or, given ``make_extractor`` (a callable
    making an extractor, such as a binary layer's :class:`~pylocalize.features.OrbExtractor`),
    those features on the local thread pool (``extraction`` must then be None).

    An image file that cannot be read stops the build with a ``ValueError`` naming it; with
    ``skip_unreadable`` its features are ``None`` instead and one warning counts the skipped
    images and says why each was.

    ``extraction``, when given, runs in place of the thread pool: a callable taking
    ``(images, max_features, extractor, progress, desc)`` and returning an iterable of each
    image's :func:`image_features` in image order, raising an image's extraction error at its
    place (:class:`pylocalize.distributed.RayExtraction` runs it on Ray Data).
    """
    if make_extractor is not None:
        if extraction is not None:
            raise ValueError("a distributed extraction extracts SIFT only: extract other features locally")
        def run(images, max_features, extractor, progress, desc):
            return _on_threads(images, make_extractor, progress, desc)
    else:
        check_extractor(extractor)
        run = extraction or _extract_on_threads
    feats = []
    # pycolmap's SIFT logs each extractor it creates
    with phase(logger, f"{desc} of {len(images)} images"), quiet_colmap() if extractor == "colmap" else nullcontext():
        for f in run(images, max_features, extractor, progress, desc):
            if isinstance(f, ValueError) and not skip_unreadable:
                raise ValueError(f"{f}; every posed image must be readable: replace the file, or leave the image out "
                                 "of the poses")
            feats.append(f)
    if len(feats) != len(images):
        raise RuntimeError(f"{desc}: the extraction returned features of {len(feats)} of {len(images)} images")
    skipped = [(image, f) for image, f in zip(images, feats) if isinstance(f, ValueError)]
    if skipped:
        why = "; ".join(str(error).replace(str(image), Path(image).name, 1) for image, error in skipped)
        logger.warning("skipped %d of %d images that cannot be read: %s", len(skipped), len(images), why)
    return [None if isinstance(f, ValueError) else f for f in feats]


def _image_sizes(images) -> List[tuple]:
    """``(width, height)`` of each image, an array or a file (read from its header)."""
    return [(int(np.asarray(im).shape[1]), int(np.asarray(im).shape[0])) if not isinstance(im, (str, os.PathLike))
            else image_size(im) for im in images]


def _patch_sections(m: "Map", features: str, patches: List[np.ndarray]) -> Dict[str, object]:
    """The sections of ``map.pyloc`` holding the point patches of layer ``features``."""
    layer = m.feature_layer(features)
    observed = [int((np.asarray(ids) >= 0).sum()) for ids in layer.point_ids]
    if [len(p) for p in patches] != observed:
        raise ValueError(f"the {features!r} point patches do not fit the layer's observations: add them again "
                         f"(Map.add_patches({features!r})) after changing its features")
    empty = np.zeros((0, 0, 0), np.uint8)
    return {f"patches.{features}.counts": np.array(observed, np.int64),
            f"patches.{features}.data": [np.ascontiguousarray(p, np.uint8) for p in patches] if patches else empty}


def _read_patches(m: "Map", features: str, size, sections: dict) -> List[np.ndarray]:
    """The point patches of layer ``features`` from a map file's sections; ``ValueError``
    naming them when a section is missing or does not fit the layer."""
    layer = m.feature_layer(features)
    what = f"point patches of {features!r}"
    for part in ("counts", "data"):
        if f"patches.{features}.{part}" not in sections:
            raise ValueError(f"{what}: section patches.{features}.{part} is missing")
    counts = np.asarray(sections[f"patches.{features}.counts"])
    data = sections[f"patches.{features}.data"]
    observed = np.array([int((np.asarray(ids) >= 0).sum()) for ids in layer.point_ids], np.int64)
    if counts.dtype != np.int64 or counts.shape != observed.shape or (counts != observed).any():
        raise ValueError(f"{what}: their counts do not fit the layer's observations")
    if (isinstance(size, bool) or not isinstance(size, int) or data.dtype != np.uint8 or data.ndim != 3
            or len(data) != counts.sum() or (len(data) and data.shape[1:] != (size, size))):
        raise ValueError(f"{what}: section patches.{features}.data is {data.dtype} {data.shape}, expected uint8 "
                         f"({int(counts.sum())}, {size}, {size})")
    return np.split(data, np.cumsum(counts)[:-1]) if len(counts) else []


def _check_layers(layers) -> Dict[str, dict]:
    """``{name: extractor options}`` of a map build's ``layers`` argument (names, or names
    with each binary layer's extractor options), or ``ValueError`` saying what is wrong."""
    if isinstance(layers, str):
        layers = [layers]
    named = dict(layers) if isinstance(layers, dict) else {name: {} for name in layers}
    for name, options in named.items():
        check_kind(name)
        if not isinstance(options, dict):
            raise ValueError(f"layers: the options of {name!r} must be a dict of its extractor's arguments")
    if "sift" not in named:
        raise ValueError(f"layers {list(named)}: a map always holds SIFT (its retrieval and its own 3D points); add "
                         "'sift', e.g. layers=('sift', 'orb')")
    if named["sift"]:
        raise ValueError("layers: SIFT's options are the builder's max_features and extractor")
    return named


def _add_in_chunks(index: CANNIndex, descriptors: Sequence[np.ndarray], chunk: int = 1 << 20) -> None:
    """Adds each image's descriptors to ``index`` under its image index, about ``chunk``
    features at a time: joining a city-scale map's descriptors at once would hold them
    twice more (the joined copy and the index's)."""
    start = 0
    while start < len(descriptors):
        stop, size = start, 0
        while stop < len(descriptors) and (size == 0 or size + len(descriptors[stop]) <= chunk):
            size += len(descriptors[stop])
            stop += 1
        if size:
            index.add(np.concatenate(descriptors[start:stop]),
                      np.concatenate([np.full(len(descriptors[i]), i, np.int64) for i in range(start, stop)]))
        start = stop
    if len(descriptors) and not len(index):  # no features: the first add still fixes the dtype
        index.add(np.concatenate(descriptors), np.zeros(0, np.int64))


class Map:
    """A localization map: posed database images, their features and 3D points."""

    def __init__(self, names: Sequence[str], cameras: Sequence[Camera], cam_from_world, keypoints, descriptors,
                 point_ids, points3D, extractor: str = "opencv", max_features: int = 4000,
                 index: Optional[Union[CANNIndex, CANNPQIndex]] = None):
        n = len(names)
        self.names = [check_image_name(name) for name in names]
        self.cameras = list(cameras)
        self.cam_from_world = np.asarray(cam_from_world, dtype=np.float64).reshape(n, 3, 4)
        self.keypoints, self.descriptors, self.point_ids = list(keypoints), list(descriptors), list(point_ids)
        self.points3D = np.asarray(points3D, dtype=np.float64).reshape(-1, 3)
        self.extractor, self.max_features = check_extractor(extractor), int(max_features)
        if not (len(self.cameras) == len(self.keypoints) == len(self.descriptors) == len(self.point_ids) == n):
            raise ValueError("need one camera, pose, keypoint, descriptor and point-id array per image")
        for i, (k, d, p) in enumerate(zip(self.keypoints, self.descriptors, self.point_ids)):
            # -1 marks a feature without a 3D point; any other id must name a point
            if not (len(k) == len(d) == len(p)) or (len(p) and (p.max() >= len(self.points3D) or p.min() < -1)):
                raise ValueError(f"image {self.names[i]}: keypoints, descriptors and point ids disagree")
        self.image_dir: Optional[str] = None  # where the database images are, for figures
        # the EXIF device of each image (None: unknown), so queries reuse the calibrated cameras
        self.devices: List[Optional[CameraDevice]] = [None] * n
        # the structure-from-motion model of a map built from images: in memory until saved
        # (sfm_reconstruction), then the model folder inside the saved map (sfm_model_dir)
        self.sfm_reconstruction = None
        self.sfm_model_dir: Optional[Path] = None
        self.sfm_model_files: Optional[dict] = None  # {file: [size, CRC-32]} of the saved model
        # (lat, lon, alt) of the east-north-up frame the map lives in, if geo-registered
        self.geo_origin: Optional[np.ndarray] = None
        # binary feature layers beside SIFT, by name (add_layer; layers.py)
        self.layers: Dict[str, BinaryLayer] = {}
        # per feature layer, per image: uint8 (n, s, s) patches of its observed features
        # (add_patches; patches.py), for sub-pixel tracking
        self.patches: Dict[str, List[np.ndarray]] = {}
        if index is None:
            index = CANNIndex(128, **RETRIEVAL_OPTIONS)
            _add_in_chunks(index, self.descriptors)
            if len(index) >= IVF_MIN_FEATURES:
                index.train(seed=0)
            index = _configure_retrieval(index)
        self.index = index
        self.rerank = COMPRESSED_RERANK  # images a compressed index re-scores exactly (compress)

    def __repr__(self) -> str:
        extra = "".join(f", {layer.name}: {len(layer.points3D)} points" for layer in self.layers.values())
        return f"Map({len(self.names)} images, {len(self.points3D)} points, {self.extractor} SIFT{extra})"

    def sfm_model(self):
        """The ``pycolmap.Reconstruction`` structure-from-motion made this map from (in the
        map's frame), or None for maps built from posed images. Raises ``FileNotFoundError``
        if the saved map's model folder has gone (a later save into the map's folder)."""
        if self.sfm_reconstruction is not None:
            return self.sfm_reconstruction
        if self.sfm_model_dir is None:
            return None
        import pycolmap

        from pylocalize.localization.colmap_export import check_model_checksums

        if not Path(self.sfm_model_dir).is_dir():
            raise FileNotFoundError(f"{self.sfm_model_dir}: the map's SfM model is gone (the map was saved again "
                                    "since it was loaded); load the map again")
        if self.sfm_model_files is not None:
            check_model_checksums(self.sfm_model_dir, self.sfm_model_files)
        return pycolmap.Reconstruction(str(self.sfm_model_dir))

    def to_colmap(self, out_dir, binary: bool = True, image_dir=None) -> Path:
        """Writes the map as a COLMAP model (cameras, posed images with their 2D points, 3D
        points with tracks; :func:`~pylocalize.localization.colmap_export.write_colmap_model`)
        into folder ``out_dir``, all-or-nothing; ``binary=False`` writes text."""
        from pylocalize.localization.colmap_export import write_colmap_model

        return write_colmap_model(self, out_dir, binary=binary, image_dir=image_dir)

    def camera_geodetic(self, cam_from_world: np.ndarray) -> np.ndarray:
        """``(lat, lon, alt)`` of the camera centre of a ``cam_from_world`` pose (3x4, or
        ``(n, 3, 4)``) in this map; ``ValueError`` unless the map is geo-registered."""
        if self.geo_origin is None:
            raise ValueError("the map is not geo-registered: build it with `pylocalize map build --images` from "
                             "images that carry GPS positions")
        return camera_geodetic(cam_from_world, self.geo_origin)

    @property
    def K(self) -> np.ndarray:
        """(n, 3, 3) pinhole intrinsics of the database images, OpenCV convention."""
        return np.stack([c.K for c in self.cameras]) if self.cameras else np.zeros((0, 3, 3))

    # ----------------------------------------------------------------- building

    @classmethod
    def from_features(cls, names, cameras: Sequence[Camera], cam_from_world, keypoints, descriptors,
                      extractor: str = "opencv", max_features: int = 4000, neighbours: int = 8,
                      retrieval_pairs: int = 5, ratio: float = 0.8, max_epipolar_px: float = 2.0,
                      max_reprojection_px: float = 3.0, min_angle_deg: float = 1.5,
                      progress: bool = False) -> "Map":
        """A map from features of images with known cameras and poses.

        Each image is matched with its ``neighbours`` nearest cameras and its
        ``retrieval_pairs`` best CANN retrieval results among the other images.
        """
        poses = np.asarray(cam_from_world, dtype=np.float64)
        n = len(names)
        if poses.shape != (n, 3, 4) or len(cameras) != n:
            raise ValueError("need one camera and one cam_from_world (3x4) per image")
        empty = [np.full(len(k), -1, np.int64) for k in keypoints]
        m = cls(names, cameras, poses, keypoints, descriptors, empty, np.zeros((0, 3)), extractor, max_features)
        pairs = m._image_pairs(neighbours, retrieval_pairs)
        point_ids, points = triangulate(cameras, poses, keypoints, descriptors, pairs, ratio=ratio,
                                        max_epipolar_px=max_epipolar_px, max_reprojection_px=max_reprojection_px,
                                        min_angle_deg=min_angle_deg, progress=progress)
        m.point_ids, m.points3D = point_ids, points
        return m

    def _image_pairs(self, neighbours: int, retrieval_pairs: int) -> List[tuple]:
        """The database image pairs a map build matches (:func:`select_pairs`): each image with
        its ``neighbours`` nearest cameras and its ``retrieval_pairs`` best CANN retrieval
        results (by SIFT) among the other images."""
        n = len(self.names)
        retrieved = []
        if retrieval_pairs > 0 and n > 1:
            k = min(retrieval_pairs + 1, n)
            retrieved = [self.index.search(d, k)[1] if len(d) else [] for d in self.descriptors]
        return select_pairs(self.cam_from_world, neighbours, retrieved)

    def add_layer(self, name: str, images: Optional[Sequence] = None, neighbours: int = 8,
                  retrieval_pairs: int = 5, ratio: float = 0.8, max_epipolar_px: float = 2.0,
                  max_reprojection_px: float = 3.0, min_angle_deg: float = 1.5, progress: bool = False,
                  **extractor_options) -> BinaryLayer:
        """Adds (or replaces) the binary feature layer ``name`` (``"orb"``): its features of the
        database images, matched by Hamming distance between the image pairs SIFT's map build
        matches (:meth:`_image_pairs`), kept where they agree with the known epipolar
        geometry, and triangulated under the known poses (:func:`triangulate`), with its own
        3D points (:mod:`~pylocalize.localization.layers` says why).

        ``images``: the database images in map order (uint8 arrays or files); default the
        map's image files in :attr:`image_dir`. ``extractor_options`` go to the layer's
        extractor (:class:`~pylocalize.features.OrbExtractor`: ``max_features``,
        ``fast_threshold``, ...) and are saved with the map, so queries extract alike.
        The other options are :meth:`from_features`'s.
        """
        if name not in BINARY_EXTRACTORS:
            raise ValueError(f"{name!r}: a map adds binary feature layers ({', '.join(BINARY_EXTRACTORS)}); its SIFT "
                             "comes with it")
        binary_extractor(name, extractor_options)  # refuses bad options before any work

        def make():
            return binary_extractor(name, extractor_options)
        images = self._database_images(images)
        feats = _extract_all(images, 0, None, progress, desc=f"map: {name} features", make_extractor=make)
        keypoints, descriptors = [f[0] for f in feats], [f[1] for f in feats]
        pairs = self._image_pairs(neighbours, retrieval_pairs)
        point_ids, points = triangulate(self.cameras, self.cam_from_world, keypoints, descriptors, pairs, ratio=ratio,
                                        max_epipolar_px=max_epipolar_px, max_reprojection_px=max_reprojection_px,
                                        min_angle_deg=min_angle_deg, progress=progress, metric="hamming")
        self.layers[name] = BinaryLayer(name, keypoints, descriptors, point_ids, points, extractor_options,
                                        len(self.names))
        return self.layers[name]

    @classmethod
    def from_views(cls, images: Sequence, cameras, cam_from_world, names: Sequence[str],
                   max_features: int = 4000, extractor: str = "opencv", progress: bool = False,
                   extraction: Optional[Callable] = None, layers: Union[Sequence[str], Dict[str, dict]] = ("sift",),
                   **options) -> "Map":
        """A map from images (uint8 arrays or file paths) with known cameras and poses.

        ``cameras`` is one camera for all images or one per image, each a :class:`Camera`,
        a camera string or a 3x3 K (OpenCV convention). ``extraction`` extracts the
        features instead of a local thread pool, with the same result (e.g.
        :class:`pylocalize.distributed.RayExtraction`: on a Ray cluster). ``layers``: the
        kinds of features the map holds, ``"sift"`` always and binary layers beside it
        (``("sift", "orb")``; or ``{"sift": {}, "orb": {"max_features": 1000}}`` with each
        binary layer's extractor options: :meth:`add_layer`). Further ``options`` go to
        :meth:`from_features`.
        """
        n = len(images)
        if len(names) != n:
            raise ValueError(f"{n} images but {len(names)} names")
        layers = _check_layers(layers)
        feats = _extract_all(images, max_features, extractor, progress, extraction=extraction)
        cams = [as_camera(c, w, h) for c, (w, h) in zip(_per_item(cameras, n, "images"), _image_sizes(images))]
        m = cls.from_features(names, cams, cam_from_world, [f[0] for f in feats], [f[1] for f in feats],
                              extractor=extractor, max_features=max_features, progress=progress, **options)
        m.devices = [CameraDevice.from_image(im) if isinstance(im, (str, os.PathLike)) else None for im in images]
        m._add_layers(layers, images, progress, options)
        return m

    def _database_images(self, images: Optional[Sequence]) -> Sequence:
        """The database images in map order (uint8 arrays or files; default the files in
        :attr:`image_dir`), checked one per map image, each of its camera's size."""
        if images is None:
            if self.image_dir is None:
                raise ValueError("the map does not know its image folder: give the database images")
            images = [image_path(self.image_dir, n) for n in self.names]
        if len(images) != len(self.names):
            raise ValueError(f"{len(images)} images for a map of {len(self.names)}: give the database images in map "
                             "order")
        for (width, height), camera in zip(_image_sizes(images), self.cameras):
            if (width, height) != (camera.width, camera.height):
                raise ValueError(f"an image of {width}x{height} for a map camera of {camera.width}x{camera.height}: "
                                 "give the database images in map order, at the size the map was built from")
        return images

    def add_patches(self, features: str = "sift", images: Optional[Sequence] = None,
                    progress: bool = False) -> List[np.ndarray]:
        """Adds (or replaces) the image patches of the 3D points of layer ``features``: one
        per observation, cut from the database image around its keypoint
        (:mod:`~pylocalize.localization.patches`). A :class:`~pylocalize.localization.tracking.Tracker`
        aligns them in each frame to refine its pose to a fraction of a pixel.

        ``images``: the database images in map order (uint8 arrays or files); default the
        map's image files in :attr:`image_dir`. About 256 bytes per observation.
        """
        from pylocalize.localization.patches import observation_patches
        from pylocalize.localization.tracking import keypoint_shift_px

        layer = self.feature_layer(features)
        images = self._database_images(images)
        self.patches[features] = observation_patches(images, layer.keypoints, layer.point_ids,
                                                     keypoint_shift_px(self, features), progress=progress)
        return self.patches[features]

    def _add_layers(self, layers: Dict[str, dict], images, progress: bool, options: dict) -> None:
        """The binary ``layers`` (name -> extractor options) of a map build, with the build's
        triangulation ``options``."""
        for name, extractor_options in layers.items():
            if name != "sift":
                self.add_layer(name, images, progress=progress, **options, **extractor_options)

    @classmethod
    def from_strecha(cls, folder, exclude: Sequence[str] = (), **options) -> "Map":
        """A map from a Strecha folder (``images/*.jpg`` + ``gt_dense_cameras/*.camera``),
        leaving out the image names in ``exclude`` (e.g. held-out queries)."""
        scene = read_strecha_scene(folder, exclude)
        m = cls.from_views([image_path(scene.image_dir, n) for n in scene.names], list(scene.K), scene.cam_from_world,
                           scene.names, **options)
        m.image_dir = str(scene.image_dir.resolve())
        return m

    @classmethod
    def from_pose_file(cls, poses, cameras, image_dir, **options) -> "Map":
        """A map from a pose file (``name qw qx qy qz tx ty tz``, cam_from_world), cameras
        (a cameras file of ``name MODEL W H PARAMS...`` lines, or one camera for all) and
        the folder holding the images."""
        pose_of = read_pose_file(poses)
        names = sorted(pose_of)
        if isinstance(cameras, (Camera, str)) and not Path(str(cameras)).is_file():
            per_image = [cameras] * len(names)
        else:
            camera_of = read_cameras_file(cameras)
            missing = [n for n in names if n not in camera_of]
            if missing:
                raise ValueError(f"{cameras}: no camera for {len(missing)} posed images, e.g. {missing[0]}")
            per_image = [camera_of[n] for n in names]
        m = cls.from_views([image_path(image_dir, n) for n in names], per_image,
                           np.stack([pose_of[n] for n in names]), names, **options)
        m.image_dir = str(Path(image_dir).resolve())
        return m

    @classmethod
    def from_colmap(cls, model_dir, image_dir, **options) -> "Map":
        """A map from the cameras and poses of a COLMAP model (``cameras/images/points3D``
        .bin or .txt) and its image folder. The model's own points are not used: points
        are triangulated from the map's features under the model's poses, so that every
        3D point is observed by the descriptors localization matches against."""
        import pycolmap

        model_dir = Path(model_dir)
        if not any((model_dir / f"images.{ext}").is_file() for ext in ("bin", "txt")):
            raise ValueError(f"{model_dir}: not a COLMAP model folder (no images.bin or images.txt)")
        rec = pycolmap.Reconstruction(str(model_dir))
        images = sorted((im for im in rec.images.values() if im.has_pose), key=lambda im: im.name)
        if not images:
            raise ValueError(f"{model_dir}: the model has no posed images")
        names = [im.name for im in images]
        cams = []
        for im in images:
            camera = Camera.from_pycolmap(rec.cameras[im.camera_id])
            w, h = image_size(image_path(image_dir, im.name))
            cams.append(camera if (camera.width, camera.height) == (w, h) else camera.scaled(w, h))
        poses = np.stack([np.asarray(im.cam_from_world().matrix())[:3] for im in images])
        m = cls.from_views([image_path(image_dir, n) for n in names], cams, poses, names, **options)
        m.image_dir = str(Path(image_dir).resolve())
        return m

    @classmethod
    def from_images(cls, image_dir, camera: Optional[CameraLike] = None, max_features: int = 4000,
                    extractor: str = "opencv", seed: int = 0, sfm: str = "incremental",
                    retriangulate: bool = True, progress: bool = False, georegister: bool = True,
                    gps_noise_m: float = DEFAULT_GPS_NOISE_M, deterministic: bool = False,
                    extraction: Optional[Callable] = None,
                    layers: Union[Sequence[str], Dict[str, dict]] = ("sift",)) -> "Map":
        """A map from images alone, by structure-from-motion with pycolmap (``sfm``:
        "incremental" or "global", the mapper tried first; see :mod:`~pylocalize.localization.sfm`).

        Poses come out in an arbitrary similarity frame (no metric scale). Images that
        structure-from-motion cannot register are left out of the map, and so are image
        files that cannot be read (a photo copied halfway, a format PIL does not know): a
        folder of photos is taken as it is, with a warning that counts and names them. (The
        builders from posed images stop instead: a posed image that cannot be read is an
        error in the data they were given.) With ``retriangulate``, the points are
        triangulated again from the SfM cameras and poses as in :meth:`from_features`;
        otherwise the map keeps SfM's own points.

        The reconstruction is kept with the map (:meth:`sfm_model`, saved as a COLMAP model
        folder inside the map). With ``georegister``, a map whose images carry EXIF GPS
        positions spread beyond ``gps_noise_m`` (metres) in two directions is moved into
        metres east-north-up (:mod:`~pylocalize.localization.georegister`); otherwise it
        stays in SfM's frame and the log says why.

        Reproducibility: with ``deterministic``, COLMAP runs single-threaded with seeded
        random numbers, so the same folder and ``seed`` give the same map, point for point
        (same machine and pycolmap build). Without it, SfM is multi-threaded and two runs
        differ slightly (a few points more or fewer, poses within their accuracy).

        ``extraction`` extracts the features instead of a local thread pool, with the same
        result (e.g. :class:`pylocalize.distributed.RayExtraction`: on a Ray cluster).
        ``layers``: binary feature layers beside SIFT, as in :meth:`from_views`, built
        under the reconstructed poses (before geo-registration moves the map).
        """
        layers = _check_layers(layers)
        image_dir = Path(image_dir)
        files = image_files(image_dir)
        if len(files) < 3:
            raise ValueError(f"{image_dir}: structure-from-motion needs at least 3 images, found {len(files)}")
        feats = _extract_all(files, max_features, extractor, progress, skip_unreadable=True, extraction=extraction)
        names = [p.name for p, f in zip(files, feats) if f is not None]
        feats = [f for f in feats if f is not None]
        if len(names) < 3:
            raise ValueError(f"{image_dir}: structure-from-motion needs at least 3 readable images, found "
                             f"{len(names)} of {len(files)}")
        if isinstance(camera, str):
            camera = Camera.from_string(camera)
        elif camera is not None and not isinstance(camera, Camera):
            camera = Camera.from_K(camera, *image_size(image_path(image_dir, names[0])))
        rec = reconstruct(image_dir, names, [f[0] for f in feats], [f[1] for f in feats], camera=camera, seed=seed,
                          method=sfm, deterministic=deterministic, progress=progress)
        m = cls.from_reconstruction(rec, dict(zip(names, feats)), extractor, max_features)
        if retriangulate:
            # SfM keeps only points seen in 3+ views under tight thresholds (global SfM: a few
            # dozen per image); the posed-image pipeline adds the well-conditioned two-view
            # points too, so queries find several times more 2D-3D matches
            m = cls.from_features(m.names, m.cameras, m.cam_from_world, m.keypoints, m.descriptors,
                                  extractor=extractor, max_features=max_features, progress=progress)
        m.image_dir = str(image_dir.resolve())
        m.devices = [CameraDevice.from_image(image_path(image_dir, name)) for name in m.names]
        m._add_layers(layers, None, progress, {})
        m.sfm_reconstruction = rec
        if georegister:
            gps = gps_of_images({name: image_path(image_dir, name) for name in m.names})
            georegister_map(m, gps, gps_noise_m=gps_noise_m, seed=seed)
        return m

    @classmethod
    def from_reconstruction(cls, rec, features: Dict[str, tuple], extractor: str = "opencv",
                            max_features: int = 4000) -> "Map":
        """A map from a pycolmap reconstruction whose images' 2D points are exactly the
        given ``{name: (keypoints, descriptors)}`` (as :mod:`~pylocalize.localization.sfm`
        writes them)."""
        images = sorted((im for im in rec.images.values() if im.has_pose), key=lambda im: im.name)
        point_index = {pid: i for i, pid in enumerate(sorted(rec.points3D))}
        points = np.array([rec.points3D[pid].xyz for pid in sorted(rec.points3D)]).reshape(-1, 3)
        names, cams, poses, kps, descs, ids = [], [], [], [], [], []
        for im in images:
            kp, desc = features[im.name]
            if im.num_points2D() != len(kp):
                raise ValueError(f"{im.name}: the reconstruction has {im.num_points2D()} 2D points, "
                                 f"the features {len(kp)}")
            pid = np.full(len(kp), -1, np.int64)
            for j, p in enumerate(im.points2D):
                if p.has_point3D():
                    pid[j] = point_index[p.point3D_id]
            names.append(im.name)
            cams.append(Camera.from_pycolmap(rec.cameras[im.camera_id]))
            poses.append(np.asarray(im.cam_from_world().matrix())[:3])
            kps.append(kp)
            descs.append(desc)
            ids.append(pid)
        return cls(names, cams, np.array(poses).reshape(-1, 3, 4), kps, descs, ids, points, extractor, max_features)

    # -------------------------------------------------------------- persistence

    FORMAT_TAG = "LocalizationMap"

    def save(self, path) -> None:
        """Writes the map to directory ``path``: ``map.pyloc`` (images, cameras, poses,
        features, 3D points) and ``cann-<random hex>.pyloc`` (the retrieval index), each a
        versioned pylocalize container written atomically.

        ``map.pyloc`` is written last and names the index file: it is the commit point. The
        index goes to a new file on every save and the files the committed map no longer
        names are removed afterwards, so a crash at any moment leaves the old map or the new
        one loadable, and a process that loaded (memory-mapped) the old map keeps working.
        Two saves into one folder take turns (a lock on ``map.lock``).
        """
        import json

        path = Path(path)
        if path.is_file():
            raise ValueError(f"{path} is a file; a map is saved to a directory")
        for name in self.names:  # names may have been changed since construction
            check_image_name(name)
        image_dir = self.image_dir or ""
        if not isinstance(image_dir, str) or "\0" in image_dir or "\n" in image_dir:
            raise ValueError(f"image_dir {image_dir!r}: must be a folder path")
        if len(self.devices) != len(self.names):
            raise ValueError(f"{len(self.names)} images but {len(self.devices)} devices: keep Map.devices in step "
                             "with Map.names")
        path.mkdir(parents=True, exist_ok=True)
        counts = np.array([len(k) for k in self.keypoints], np.int64)

        def pieces(arrays, empty):
            # the per-image arrays are written in turn, never joined: a city-scale map's
            # features would otherwise be held twice while it is saved
            parts = [np.ascontiguousarray(a, dtype=empty.dtype).reshape((-1,) + empty.shape[1:]) for a in arrays]
            return parts if parts else empty

        sections = {
            "names": np.frombuffer("\n".join(self.names).encode("utf-8"), np.uint8).copy(),
            "cam_from_world": np.ascontiguousarray(self.cam_from_world),
            "counts": counts,
            "keypoints": pieces(self.keypoints, np.zeros((0, 2), np.float32)),
            "descriptors": pieces(self.descriptors, np.zeros((0, 128), np.uint8)),
            "point_ids": pieces(self.point_ids, np.zeros(0, np.int64)),
            "points3D": np.ascontiguousarray(self.points3D),
        }
        for layer in self.layers.values():
            if len(layer.keypoints) != len(self.names):
                raise ValueError(f"feature layer {layer.name!r} holds {len(layer.keypoints)} images, the map "
                                 f"{len(self.names)}: add the layer again (add_layer) after changing the images")
            sections.update(layer.sections())
        for features, patches in self.patches.items():
            sections.update(_patch_sections(self, features, patches))
        with FolderLock(path, LOCK_FILE, wait=True):
            index_file = unique_name("cann", ".pyloc")
            self.index.save(path / index_file)
            sfm_model = self._save_sfm_model(path)
            # container meta holds integers; the strings go into a JSON section
            info = {"extractor": self.extractor, "cameras": [c.to_string() for c in self.cameras],
                    "image_dir": image_dir, "index_file": index_file,
                    "devices": [None if d is None else d.to_json() for d in self.devices]}
            if sfm_model is not None:
                info["sfm_model"], info["sfm_files"] = sfm_model
            if self.geo_origin is not None:
                info["geo_origin"] = [float(v) for v in self.geo_origin]
            if self.layers:
                info["layers"] = {name: layer.options for name, layer in self.layers.items()}
            if self.patches:
                info["patches"] = {name: int(p[0].shape[1]) if p else 0 for name, p in self.patches.items()}
            if isinstance(self.index, CANNPQIndex):  # older readers refuse its file (another container tag)
                info["index_kind"], info["rerank"] = "cann-pq", self.rerank
            sections["info"] = np.frombuffer(json.dumps(info).encode("utf-8"), np.uint8).copy()
            meta = {"map_version": MAP_VERSION, "num_images": len(self.names), "max_features": self.max_features,
                    "index_bytes": (path / index_file).stat().st_size, "index_features": len(self.index)}
            _core.write_container(os.fspath(path / MAP_FILE), self.FORMAT_TAG, meta, sections)  # the commit
            remove_unreferenced(path, _INDEX_NAME, keep=[index_file], legacy=[INDEX_FILE])
            _remove_unreferenced_models(path, keep=sfm_model[0] if sfm_model else None)
            if sfm_model is not None:
                self.sfm_reconstruction, self.sfm_model_dir, self.sfm_model_files = None, path / sfm_model[0], \
                    sfm_model[1]

    def _save_sfm_model(self, path: Path) -> Optional[tuple]:
        """Writes the kept SfM model into map folder ``path`` under a new unique name (or
        keeps the one already there) before the commit; returns its name and its files'
        sizes and CRC-32s, None if no model. The folder is renamed into place complete, so
        the name map.pyloc commits always names a whole model."""
        from pylocalize.localization.colmap_export import model_checksums, write_reconstruction

        if self.sfm_reconstruction is None and self.sfm_model_dir is None:
            return None
        current = Path(self.sfm_model_dir) if self.sfm_model_dir is not None else None
        if (self.sfm_reconstruction is None and self.sfm_model_files is not None and current.is_dir()
                and current.parent.resolve() == path.resolve()):
            return current.name, self.sfm_model_files  # already in this map's folder: never rewritten
        name = unique_name("sfm", "")
        write_reconstruction(self.sfm_model(), path / name)
        return name, model_checksums(path / name)

    @classmethod
    def load(cls, path, mmap: bool = True) -> "Map":
        """Reads a map written by :meth:`save` (or by pylocalize before index files had
        unique names: layout 2, ``cann.pyloc``); with ``mmap``, descriptors stay memory-mapped and
        so does the retrieval index's ivf layout (searched in place: :meth:`CANNIndex.load`).

        Raises
        ------
        pylocalize.FormatError
            If a file is corrupt, from another format version, or not a map, or if it names
            an image outside the image folder.
        """
        path = Path(path)
        file = path / MAP_FILE if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"{path}: no map here (expected a directory with {MAP_FILE})")
        folder = file.parent
        # a save into this folder may commit between our reading map.pyloc and opening the
        # index it names (and then remove that index): read the newly committed map again
        for attempt in range(3):
            identity = _file_identity(file)
            meta, sec = _read_map_file(file, mmap)
            try:
                return cls._from_sections(folder, meta, sec, mmap)
            except _IndexMissing as missing:
                if attempt == 2 or _file_identity(file) == identity:
                    what = "SfM model" if str(missing).startswith("sfm-") else "retrieval index"
                    raise FormatError(f"{path}: the map's {what} {missing} is missing; rebuild the map with "
                                      "`pylocalize map build`") from None

    @classmethod
    def _from_sections(cls, folder: Path, meta: dict, sec: dict, mmap: bool = True) -> "Map":
        import json

        try:
            _check_sections(sec)
            names = bytes(sec["names"]).decode("utf-8").split("\n") if meta["num_images"] else []
            counts = np.asarray(sec["counts"])
            split = np.cumsum(counts)[:-1]
            if len(names) != meta["num_images"] or len(counts) != len(names) or counts.sum() != len(sec["keypoints"]):
                raise ValueError("section sizes disagree")
            for name in names:
                check_image_name(name, lambda message: FormatError(f"{folder}: {message}"))
            info = json.loads(bytes(sec["info"]).decode("utf-8"))
            image_dir = info.get("image_dir") or None
            if image_dir is not None and (not isinstance(image_dir, str) or "\0" in image_dir or "\n" in image_dir
                                          or not os.path.isabs(image_dir)):
                raise FormatError(f"{folder}: image_dir {image_dir!r}: not an absolute folder path")
            # a city map holds thousands of images of a few cameras: parse each camera once
            # (Camera is frozen, so the images can share it)
            parsed = {text: Camera.from_string(text) for text in set(info["cameras"])}
            cameras = [parsed[text] for text in info["cameras"]]
            if meta["map_version"] == 2:
                index_file = INDEX_FILE
            else:
                index_file = info["index_file"]
                if not isinstance(index_file, str) or not _INDEX_NAME.match(index_file):
                    raise FormatError(f"{folder}: index file name {index_file!r}: not one a map save writes")
            if not (folder / index_file).is_file():
                raise _IndexMissing(index_file)
            if meta["map_version"] != 2 and (folder / index_file).stat().st_size != meta["index_bytes"]:
                raise ValueError(f"{index_file} has {(folder / index_file).stat().st_size} bytes, the map recorded "
                                 f"{meta['index_bytes']}: not the index this map was saved with")
            compressed = info.get("index_kind") == "cann-pq"
            index = (CANNPQIndex.load(folder / index_file, mmap=mmap) if compressed
                     else CANNIndex.load(folder / index_file, mmap=mmap))
            if not compressed and index.stored_options is None:  # saved before indexes stored their options
                index = _configure_retrieval(CANNIndex.load(folder / index_file, mmap=mmap, **RETRIEVAL_OPTIONS))
            if not compressed and index.method == "ivf" and not index.is_trained:  # a save trains before ivf
                raise ValueError("the retrieval index searches by method 'ivf' but has no trained lists")
            if len(index) != counts.sum() or len(index) != meta.get("index_features", len(index)):
                raise ValueError(f"the retrieval index holds {len(index)} features, the map {counts.sum()}")
            m = cls(names, cameras, sec["cam_from_world"], np.split(sec["keypoints"], split),
                    np.split(sec["descriptors"], split), np.split(sec["point_ids"], split), sec["points3D"],
                    info["extractor"], meta["max_features"], index=index)
            m.image_dir = image_dir
            if compressed:
                m.rerank = info["rerank"]
                if isinstance(m.rerank, bool) or not isinstance(m.rerank, int) or m.rerank < 1:
                    raise FormatError(f"{folder}: rerank {m.rerank!r}: not a count of images")
            m.devices = _read_devices(info, len(names))
            m.sfm_model_dir, m.sfm_model_files, m.geo_origin = _read_sfm_and_geo(folder, info)
            layers = info.get("layers", {})  # absent from maps saved before binary layers
            if not isinstance(layers, dict):
                raise ValueError("its feature layers are not a JSON object")
            m.layers = {name: BinaryLayer.from_sections(name, options, sec, len(names))
                        for name, options in layers.items()}
            patches = info.get("patches", {})  # absent from maps saved before point patches
            if not isinstance(patches, dict):
                raise ValueError("its point patches are not a JSON object")
            m.patches = {name: _read_patches(m, name, size, sec) for name, size in patches.items()}
            return m
        except (FormatError, _IndexMissing):
            raise
        except LAYOUT_ERRORS as error:
            raise FormatError(f"{folder}: not a valid {cls.FORMAT_TAG} ({error})") from error

    # ------------------------------------------------------------ query cameras

    def _device_camera(self, images: Sequence[int]):
        """``(camera, "map camera of ...")`` for the database ``images`` (indices) of one
        device, or None. Their one camera; or, where structure-from-motion refined a camera
        per image (photos whose EXIF lacks make and model, such as the Lund sample), the
        per-parameter median of their cameras when these share model and size."""
        distinct = {}
        for i in images:
            distinct.setdefault(self.cameras[i], self.names[i])
        if len(distinct) == 1:
            (camera, name), = distinct.items()
            return camera, f"map camera of {name}"
        if len({(c.model, c.width, c.height) for c in distinct}) != 1:
            return None
        first = self.cameras[images[0]]
        median = np.median([self.cameras[i].params for i in images], axis=0)
        return (Camera(first.model, first.width, first.height, tuple(median)),
                f"map camera of {len(images)} images ({self.names[images[0]]}, ...): the median of their "
                f"{len(distinct)} cameras")

    def map_camera(self, device: Optional[CameraDevice], width: int, height: int,
                   required: bool = False) -> Optional[QueryCamera]:
        """The map's calibrated camera (SfM-refined intrinsics, distortion included) for a
        query of ``width`` x ``height`` taken with ``device``: the camera of the map's images
        from that device (:meth:`CameraDevice.same_device`; the median of theirs when each
        has its own), scaled to the query's size when it has the same aspect ratio. None when
        no camera fits.

        With ``required`` (``--camera map``), a map with one camera gives it whatever the
        query's device, and a query no camera fits raises ``ValueError`` saying why.
        """
        same = [i for i, d in enumerate(self.devices) if device is not None and device.same_device(d)]
        found = self._device_camera(same) if same else None
        if required and found is None:
            distinct = set(self.cameras)
            if len(distinct) != 1:
                what = device.describe() if device is not None else "no EXIF make and model"
                raise ValueError(f"the map has {len(distinct)} distinct cameras and the query's device ({what}) does "
                                 "not pick one: give the query's camera with --camera 'MODEL W H PARAMS...' or "
                                 "--cameras FILE")
            found = self.cameras[0], f"map camera of {self.names[0]}"
        if found is None:
            return None
        camera, source = found
        if (camera.width, camera.height) == (width, height):
            return QueryCamera(camera, source, False)
        if abs(camera.width * height - camera.height * width) > 0.01 * camera.width * height:
            if required:
                raise ValueError(f"the {source} is for {camera.width}x{camera.height} images, the query is "
                                 f"{width}x{height} (another aspect ratio): give the query's camera with --camera")
            return None
        return QueryCamera(camera.scaled(width, height), f"{source}, scaled from {camera.width}x{camera.height}",
                           False)

    def query_camera(self, image, use_map: bool = False) -> QueryCamera:
        """The camera of the query image file ``image``: the map's calibrated camera for its
        device and size (:meth:`map_camera`; always with ``use_map``), else its EXIF focal
        length, else the guess of :meth:`Camera.from_exif` (``guessed``).

        Raises ``ValueError`` for an image given as pixels (it has no EXIF: give its camera),
        an unreadable file, or with ``use_map`` a query no map camera fits.
        """
        if not isinstance(image, (str, os.PathLike)):
            raise ValueError("a query given as pixels has no EXIF: give its camera")
        width, height = image_size(image)
        found = self.map_camera(CameraDevice.from_image(image), width, height, required=use_map)
        if found is not None:
            return found
        camera, source = Camera.from_exif(image)
        return QueryCamera(camera, source, is_focal_guess(source))

    # ------------------------------------------------------------- localization
    # localize() runs four stages, each a method a caller (or a test) can run alone:
    # extract -> retrieve -> match_2d3d -> estimate_pose.

    def extract(self, image, camera: CameraLike, features: str = "sift") -> QueryFeatures:
        """Stage 1: the query's features of kind ``features`` (SIFT: this map's extractor and
        feature budget; a binary layer: its extractor and options) and its camera, checked
        against the image size.

        ``image`` is uint8 (H, W, 3) or (H, W), or a file path; ``camera`` a Camera, a
        ``"MODEL W H PARAMS..."`` string or a 3x3 K (OpenCV convention). Raises
        ``ValueError`` for an unreadable image, a bad camera, an image too small for the
        extractor or features the map does not hold.
        """
        layer = self._binary_layer(features)
        pixels = load_pixels(image)
        height, width = pixels.shape[:2]
        cam = as_camera(camera, width, height)
        if layer is not None:
            keypoints, descriptors = layer.extractor()(pixels)
        else:
            keypoints, descriptors = extract_sift(pixels, self.max_features, self.extractor)
        return QueryFeatures(keypoints, descriptors, cam)

    def compress(self, m: int = 32, rerank: int = COMPRESSED_RERANK, seed: int = 0) -> None:
        """Holds the retrieval index as ``m``-byte product-quantizer codes (:class:`CANNPQIndex`)
        instead of every descriptor: about 36 bytes a feature in memory instead of 128+.

        :meth:`retrieve` then takes the ``rerank`` images the codes score best and ranks them
        by their exact CANN scores against the map's descriptors (memory-mapped in a loaded
        map), so only those images' descriptors are read. The lists and the probed count are
        the current index's when it has an inverted file (else :func:`default_nlist` lists, nprobe
        ``IVF_NPROBE``); the quantizer learns from at most ``COMPRESS_SAMPLE`` descriptors.
        :meth:`save` keeps the compressed index.
        """
        counts = np.array([len(d) for d in self.descriptors], np.int64)
        total = int(counts.sum())
        if total < 256:
            raise ValueError(f"compress needs at least 256 map features to learn codes, the map has {total}")
        if isinstance(rerank, (bool, np.bool_)) or not isinstance(rerank, (int, np.integer)) or rerank < 1:
            raise ValueError(f"rerank must be an int >= 1, got {rerank!r}")
        if isinstance(self.index, CANNIndex) and self.index.is_trained:
            nlist, nprobe = self.index.nlist, self.index.nprobe
        else:
            nlist, nprobe = min(total, default_nlist(total)), IVF_NPROBE
        offsets = np.concatenate([[0], np.cumsum(counts)])
        rows = np.sort(np.random.default_rng(seed).choice(total, min(total, COMPRESS_SAMPLE), replace=False))
        image = np.searchsorted(offsets, rows, side="right") - 1
        sample = np.concatenate([self.descriptors[i][rows[image == i] - offsets[i]] for i in np.unique(image)])
        index = CANNPQIndex(128, m=m, nprobe=nprobe, **RETRIEVAL_OPTIONS)
        index.train(sample, nlist=nlist, seed=seed)
        for i, d in enumerate(self.descriptors):  # an image at a time: no copy of every descriptor
            if len(d):
                index.add(d, i)
        self.index, self.rerank = index, int(rerank)

    def retrieve(self, descriptors: np.ndarray, k: Optional[int], return_scores: bool = False,
                 features: str = "sift", ratio: float = 0.8):
        """Stage 2: the ``k`` database images CANN ranks best for a query's descriptors, as
        indices into :attr:`names`, best first (every image, in index order, when ``k`` is
        None: exhaustive matching).

        With ``return_scores``, returns ``(images, scores)``: the CANN score S(m) of each
        image (higher is more similar; the scores of all images when ``k`` is None).

        For a binary layer (``features="orb"``), the images are ranked by votes instead
        (:meth:`BinaryLayer.vote <pylocalize.localization.layers.BinaryLayer.vote>`: the
        layer's 3D points the descriptors match on its :class:`BinaryIndex`, with ``ratio``,
        that each image observes; ties to the smaller index; images without votes are not
        returned): CANN scores SIFT, and a query given as binary features has none.
        """
        layer = self._binary_layer(features)
        n = len(self.names)
        if n == 0:
            return ([], []) if return_scores else []
        if k is None and not return_scores:
            return list(range(n))
        kk = n if k is None else min(int(k), n)
        if layer is not None:
            votes = layer.vote(_check_query_descriptors(descriptors, layer.descriptor_bytes), ratio)
            if k is None:
                return list(range(n)), [float(v) for v in votes]
            images = [int(i) for i in np.lexsort((np.arange(n), -votes))[:kk] if votes[i] > 0]
            return (images, [float(votes[i]) for i in images]) if return_scores else images
        if isinstance(self.index, CANNPQIndex):  # codes choose the candidates, exact scores rank them
            scores, ids = self.index.search_reranked(descriptors, kk, self.descriptors, rerank=max(kk, self.rerank))
        else:
            scores, ids = self.index.search(descriptors, kk)
        if k is None:  # back to image order, each image's own score
            by_image = dict(zip(ids.tolist(), scores.tolist()))
            return list(range(n)), [float(by_image.get(i, 0.0)) for i in range(n)]
        keep = ids >= 0
        images = [int(i) for i in ids[keep]]
        return (images, [float(s) for s in scores[keep]]) if return_scores else images

    @property
    def feature_layers(self) -> List[str]:
        """Names of the kinds of local features this map holds (:meth:`feature_layer`)."""
        return ["sift", *self.layers]

    def feature_layer(self, name: str = "sift") -> FeatureLayer:
        """The map's features of one kind (:attr:`feature_layers`), sharing its arrays."""
        if name == "sift":
            return FeatureLayer("sift", self.keypoints, self.descriptors, self.point_ids, self.points3D, "l2")
        if name in self.layers:
            return self.layers[name].layer
        how = (f"; build the map with `pylocalize map build --features sift,{name}` (layers=('sift', {name!r})) or "
               f"add the layer with Map.add_layer({name!r})") if name in BINARY_EXTRACTORS else ""
        raise ValueError(f"this map holds no {name!r} features; it holds {self.feature_layers}{how}")

    def _binary_layer(self, features: str) -> Optional[BinaryLayer]:
        """The binary layer ``features`` names, None for SIFT; ``ValueError`` if the map has no such layer."""
        if features == "sift":
            return None
        if features not in self.layers:
            self.feature_layer(features)  # raises, saying how to add it
        return self.layers[features]

    def num_observations(self, images: Sequence[int], features: str = "sift") -> int:
        """Features of the database ``images`` (indices, repeats counted once) that observe a
        3D point: the candidates :meth:`match_2d3d` matches against."""
        layer = self._binary_layer(features)
        if layer is not None:
            return layer.num_observations(images)
        return sum(int((self.point_ids[i] >= 0).sum()) for i in set(images))

    def match_2d3d(self, descriptors: np.ndarray, images: Sequence[int], ratio: float = 0.8,
                   features: str = "sift") -> Matches2D3D:
        """Stage 3: 2D-3D matches of a query's descriptors against the features of the
        database ``images`` (indices) that observe a 3D point.

        A query feature is matched to its nearest candidate when that one is closer than
        ``ratio`` x the nearest candidate of *another* 3D point (the observations of one
        point in several images look alike and must not fail the ratio test), and when the
        query feature is also the candidate's nearest query feature (mutual check); see
        :func:`~pylocalize.features.match_descriptors` with ``groups_b``.

        ``features``: the layer matched; a binary one (``"orb"``) by Hamming distance on the
        core's :class:`BinaryIndex` (the layer's own index when ``images`` are all of them),
        its point ids into that layer's ``points3D``.
        """
        layer = self._binary_layer(features)
        if layer is not None:
            return Matches2D3D(*layer.match_2d3d(_check_query_descriptors(descriptors, layer.descriptor_bytes),
                                                 images, ratio))
        # candidates in image-index order: matches must not depend on near-tied retrieval ranks
        order = sorted(set(images))
        if not order:
            return Matches2D3D(np.zeros(0, np.int64), np.zeros(0, np.int64))
        observed = [self.point_ids[i] >= 0 for i in order]
        candidates = np.concatenate([self.descriptors[i][has] for i, has in zip(order, observed)])
        point3D_ids = np.concatenate([self.point_ids[i][has] for i, has in zip(order, observed)])
        pairs = match_descriptors(descriptors, candidates, ratio, groups_b=point3D_ids)
        return Matches2D3D(pairs[:, 0], point3D_ids[pairs[:, 1]])

    def estimate_pose(self, points2D: np.ndarray, point3D_ids: np.ndarray, camera: Camera,
                      max_error_px: float = 4.0, covariance: bool = True,
                      estimate_focal: bool = False, seed: Optional[int] = 0,
                      features: str = "sift") -> Optional[AbsolutePose]:
        """Stage 4: the query's ``cam_from_world`` from 2D-3D matches (``points2D`` float
        (m, 2) in OpenCV pixels, ``point3D_ids`` int (m,) into the ``points3D`` of layer
        ``features``: :attr:`points3D` for SIFT), by
        LO-RANSAC and refinement (:func:`~pylocalize.geometry.absolute_pose.estimate_absolute_pose`);
        with ``estimate_focal`` the focal length too (the estimated camera is the result's
        ``camera``). None when no pose is found (or fewer than 4 matches are given).
        ``seed``: RANSAC's, so that a query gets the same pose on any thread, in any batch and
        on any worker of a cluster (pycolmap's own random state is per thread); None draws one."""
        points3D = self.feature_layer(features).points3D[np.asarray(point3D_ids, dtype=np.int64)]
        return estimate_absolute_pose(points2D, points3D, camera, max_error_px, covariance=covariance,
                                      estimate_focal=estimate_focal, seed=seed)

    def localize(self, image, camera: Union[CameraLike, QueryCamera, None] = None, k: Optional[int] = 10,
                 ratio: float = 0.8, max_error_px: float = 4.0, min_inliers: int = 12,
                 retrieval: Optional[Callable[[np.ndarray, np.ndarray], Sequence[int]]] = None,
                 covariance: bool = True, estimate_focal: Optional[bool] = None,
                 features: str = "sift") -> LocalizationResult:
        """Estimates the ``cam_from_world`` pose of a query image: :meth:`extract`,
        :meth:`retrieve`, :meth:`match_2d3d`, :meth:`estimate_pose`, each timed.

        A query stops at the first stage that leaves fewer than ``min_inliers`` features,
        candidate 3D-point observations, matches or inliers; the result says which.

        Parameters
        ----------
        image : uint8 (H, W, 3) or (H, W), or a file path
        camera : Camera, ``"MODEL W H PARAMS..."`` string, 3x3 K (OpenCV convention), QueryCamera or None
            None: the camera :meth:`query_camera` finds for the image file (the map's camera
            of the same device, else EXIF, else a guessed focal length).
        k : int or None
            Database images retrieved by CANN; None matches against every image.
        retrieval : callable, optional
            ``(keypoints, descriptors) -> database image indices`` replacing CANN (e.g. a
            global-descriptor baseline).
        covariance : bool
            Also return the pose covariance.
        estimate_focal : bool, optional
            Estimate the focal length with the pose; default: when the focal length is a guess
            (a :class:`QueryCamera` with ``guessed``), as a guessed focal length misplaces the
            camera by metres. The result says where the intrinsics came from either way.
        features : str
            The map's features to localize with (:attr:`feature_layers`): ``"sift"``, or a
            binary layer such as ``"orb"`` (faster features, Hamming matching; retrieval by
            the votes of :meth:`retrieve`). ``ValueError`` if the map does not hold them.
        """
        self._binary_layer(features)  # a map without the layer is the caller's mistake, not a failed query
        timings: Dict[str, float] = {}
        try:
            with _timed(timings, "features"):
                query = self._query_camera_of(image, camera)
                kp, desc, cam = self.extract(image, query.camera, features)
        except Exception as error:  # a broken image or camera must not stop a batch
            return LocalizationResult(False, reason=f"bad query: {error}", features=features)
        return self._localize_features(kp, desc, QueryCamera(cam, query.source, query.guessed), timings, k, ratio,
                                       max_error_px, min_inliers, retrieval, covariance, estimate_focal, features)

    def localize_features(self, keypoints: np.ndarray, descriptors: np.ndarray,
                          camera: Union[Camera, str, QueryCamera], k: Optional[int] = 10, ratio: float = 0.8,
                          max_error_px: float = 4.0, min_inliers: int = 12,
                          retrieval: Optional[Callable[[np.ndarray, np.ndarray], Sequence[int]]] = None,
                          covariance: bool = True, estimate_focal: Optional[bool] = None,
                          features: str = "sift") -> LocalizationResult:
        """:meth:`localize` from a query's features instead of its image: :meth:`retrieve`,
        :meth:`match_2d3d` and :meth:`estimate_pose`, for simulated queries, other feature
        extractors, or features computed elsewhere (e.g. on the robot).

        ``keypoints`` float (n, 2) in OpenCV pixels and ``descriptors`` uint8 (n, 128) in the
        map's descriptor space (RootSIFT as uint8 ``512 * d``), or, with ``features`` naming
        a binary layer, that layer's descriptors (ORB: uint8 (n, 32)); ``camera`` a
        :class:`Camera`, a camera string or a :class:`QueryCamera` (a bare K cannot say the
        image size). Other parameters as in :meth:`localize`. Raises ``ValueError`` for arrays
        of the wrong shape or type; a query that cannot be localized gives ``success=False``
        and the reason.
        """
        layer = self._binary_layer(features)
        keypoints, descriptors = _check_query_features(keypoints, descriptors,
                                                       128 if layer is None else layer.descriptor_bytes)
        query = camera if isinstance(camera, QueryCamera) else QueryCamera(camera, "given", False)
        if isinstance(query.camera, str):
            query = query._replace(camera=Camera.from_string(query.camera))
        if not isinstance(query.camera, Camera):
            raise ValueError("camera: give a Camera or a 'MODEL W H PARAMS...' string (features alone do not tell "
                             "the image size a K needs)")
        return self._localize_features(keypoints, descriptors, query, {}, k, ratio, max_error_px, min_inliers,
                                       retrieval, covariance, estimate_focal, features)

    def _localize_features(self, kp, desc, query: QueryCamera, timings: Dict[str, float], k, ratio, max_error_px,
                           min_inliers, retrieval, covariance, estimate_focal, features="sift") -> LocalizationResult:
        """Stages 2-4 of :meth:`localize` (``timings`` may already hold the features')."""
        cam = query.camera
        estimate_focal = query.guessed if estimate_focal is None else bool(estimate_focal)
        common = {"timings": timings, "camera": cam, "camera_source": query.source,
                  "intrinsics_guessed": query.guessed, "features": features}
        if len(kp) < min_inliers:
            return LocalizationResult(False, reason=f"only {len(kp)} features", **common)
        with _timed(timings, "retrieval"):
            retrieved = list(retrieval(kp, desc)) if retrieval is not None else \
                self.retrieve(desc, k, features=features, ratio=ratio)
        common["retrieved"] = [self.names[i] for i in retrieved]
        if not retrieved or self.num_observations(retrieved, features) < min_inliers:
            return LocalizationResult(False, reason="retrieved images observe too few 3D points", **common)
        with _timed(timings, "matching"):
            query_ids, point3D_ids = self.match_2d3d(desc, retrieved, ratio, features)
        common["num_matches"] = len(query_ids)
        if len(query_ids) < min_inliers:
            return LocalizationResult(False, reason=f"only {len(query_ids)} 2D-3D matches", **common)
        points2D = kp[query_ids].astype(np.float64)
        common.update(points2D=points2D, point3D_ids=point3D_ids)
        with _timed(timings, "pose"):
            pose = self.estimate_pose(points2D, point3D_ids, cam, max_error_px, covariance, estimate_focal,
                                      features=features)
        return _pose_result(pose, min_inliers, common)

    def _query_camera_of(self, image, camera) -> QueryCamera:
        """The :class:`QueryCamera` of a ``camera`` argument of :meth:`localize`."""
        if camera is None:
            return self.query_camera(image)
        if isinstance(camera, QueryCamera):
            return camera
        return QueryCamera(camera, "given", False)

    def localize_many(self, images: Sequence, cameras=None, workers: Optional[int] = None, progress: bool = False,
                      **options) -> List[LocalizationResult]:
        """Localizes a batch of queries in parallel; a query that fails gets its own
        ``success=False`` result and the others go on.

        ``cameras`` is one camera for all queries or one per query (see :meth:`localize`; None:
        each query's :meth:`query_camera`).
        Queries run on a thread pool: feature extraction, matching and pose estimation
        release the GIL.
        """
        from concurrent.futures import ThreadPoolExecutor

        from tqdm import tqdm

        per_query = _per_item(cameras, len(images), "queries")

        def run(args):
            image, camera = args
            try:
                return self.localize(image, camera, **options)
            except Exception as error:  # never let one query end the batch
                return LocalizationResult(False, reason=f"{type(error).__name__}: {error}")

        workers = workers or max(1, min(4, os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(tqdm(pool.map(run, zip(images, per_query)), total=len(images), desc="localize",
                             disable=not progress, leave=False))


# Focal lengths an estimate may take, as multiples of the larger image side: fields of view
# across the larger side from about 5 to 135 degrees. Outside, the estimate is a degenerate solution (points nearly
# on a plane or a line), not a lens.
PLAUSIBLE_FOCAL_FACTORS = (0.2, 12.0)


def _check_query_features(keypoints, descriptors, width: int = 128):
    """``(keypoints float64 (n, 2), descriptors uint8 (n, width))`` of a query given as
    features, or ``ValueError`` saying what is wrong."""
    kp = np.asarray(keypoints)
    if kp.ndim != 2 or kp.shape[1] != 2 or kp.dtype.kind not in "fiu" or not np.isfinite(kp).all():
        raise ValueError(f"keypoints must be finite numbers of shape (n, 2), got {kp.dtype} {kp.shape}")
    desc = _check_query_descriptors(descriptors, width)
    if len(kp) != len(desc):
        raise ValueError(f"{len(kp)} keypoints but {len(desc)} descriptors: give one descriptor per keypoint")
    return kp.astype(np.float64), desc


def _check_query_descriptors(descriptors, width: int) -> np.ndarray:
    """A query's descriptors as uint8 (n, width) rows (RootSIFT as ``512 * d`` for 128,
    packed binary descriptors otherwise), or ``ValueError`` saying what they should be."""
    desc = np.asarray(descriptors)
    if desc.ndim != 2 or desc.shape[1] != width or desc.dtype != np.uint8:
        what = "RootSIFT as 512 * d, clipped" if width == 128 else f"{8 * width}-bit binary descriptors, packed"
        raise ValueError(f"descriptors must be uint8 of shape (n, {width}) ({what}), got {desc.dtype} {desc.shape}")
    return np.ascontiguousarray(desc)


def _pose_result(pose: Optional[AbsolutePose], min_inliers: int, common: dict) -> LocalizationResult:
    """The result of :meth:`Map.localize` from its pose stage (``common``: the fields of the
    earlier stages)."""
    if pose is None or pose.num_inliers < min_inliers:
        found = 0 if pose is None else pose.num_inliers
        return LocalizationResult(False, num_inliers=found, reason=f"pose estimation found {found} inliers", **common)
    if pose.camera is not None:
        camera = pose.camera
        factor = camera.K[0, 0] / max(camera.width, camera.height)
        common.update(camera=camera, focal_estimated=True)
        low, high = PLAUSIBLE_FOCAL_FACTORS
        if not low <= factor <= high:
            return LocalizationResult(False, num_inliers=pose.num_inliers,
                                      reason=f"the estimated focal length ({camera.K[0, 0]:.0f} px, {factor:.2f} x the "
                                             "larger side) is implausible: give the query's camera", **common)
    return LocalizationResult(True, cam_from_world=pose.cam_from_world, num_inliers=pose.num_inliers,
                              inlier_mask=pose.inlier_mask, covariance=pose.covariance, **common)


def _read_devices(info: dict, n: int) -> List[Optional[CameraDevice]]:
    """The image devices of a map's JSON info; a map saved before devices were stored has none."""
    devices = info.get("devices")
    if devices is None:
        return [None] * n
    if not isinstance(devices, list) or len(devices) != n:
        raise ValueError(f"devices: expected a list of {n}")
    return [None if d is None else CameraDevice.from_json(d) for d in devices]


class _IndexMissing(Exception):
    """The index file (or SfM model folder) a map names is not there (a concurrent save may
    have replaced it)."""


def _read_sfm_and_geo(folder: Path, info: dict):
    """``(sfm model folder, its files' sizes and CRC-32s, geo origin)`` from map.pyloc's info,
    each None when absent: optional keys (maps saved before them have neither)."""
    from pylocalize.localization.colmap_export import MODEL_FILES

    sfm_model, files = info.get("sfm_model"), None
    if sfm_model is not None:
        if not isinstance(sfm_model, str) or not _SFM_NAME.match(sfm_model):
            raise FormatError(f"{folder}: SfM model folder name {sfm_model!r}: not one a map save writes")
        files = info["sfm_files"]
        def size_and_crc(v):
            return isinstance(v, list) and len(v) == 2 and all(type(x) is int and x >= 0 for x in v)

        if not isinstance(files, dict) or not set(files) <= MODEL_FILES or not all(map(size_and_crc, files.values())):
            raise FormatError(f"{folder}: the SfM model's file list is not one a map save writes")
        if not (folder / sfm_model).is_dir():
            raise _IndexMissing(sfm_model)
    origin = info.get("geo_origin")
    if origin is not None:
        origin = np.asarray(origin, dtype=np.float64)
        if origin.shape != (3,) or not np.isfinite(origin).all() or abs(origin[0]) > 90 or abs(origin[1]) > 180:
            raise FormatError(f"{folder}: geo_origin {info['geo_origin']!r}: not a (lat, lon, alt)")
    return (folder / sfm_model if sfm_model is not None else None), files, origin


def _remove_unreferenced_models(folder: Path, keep: Optional[str]) -> None:
    """After a commit (under the folder lock): removes the SfM model folders the map no
    longer names, and those a killed save left half-written or set aside."""
    import shutil

    for name in os.listdir(folder):
        if (_SFM_NAME.match(name) and name != keep) or _SFM_LEFTOVER.match(name):
            shutil.rmtree(folder / name, ignore_errors=True)


def _file_identity(file: Path):
    try:
        st = file.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _read_map_file(file: Path, mmap: bool):
    """``(meta, sections)`` of ``map.pyloc`` of the current layout or layout 2."""
    return read_layout(file, Map.FORMAT_TAG, "map_version", (2, MAP_VERSION), "a map",
                       "rebuild the map with `pylocalize map build`", mmap=mmap, missing_version=1)

