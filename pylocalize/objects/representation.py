"""Unseen-object 6D pose from one RGB image, after FoundPose (Ornek et al., ECCV 2024).

Onboarding (:func:`pylocalize.objects.onboarding.onboard`) renders templates of the
object's mesh from Fibonacci viewpoints x in-plane rotations, extracts patch descriptors on
the 14-px grid, keeps the foreground patches with the 3D model point each one sees, reduces
descriptors by PCA (kept as 8-bit codes), and builds a
visual vocabulary (the core's k-means) with one tf-idf bag of words per template.

Pose estimation (:meth:`ObjectRepresentation.estimate`) crops the query around the
object's mask or box, extracts its patch descriptors, retrieves the templates with the
most similar bags of words (:class:`~pylocalize.index.bow.InvertedFile`), matches query
patches to each template's patches by cyclic nearest neighbours (core kNN), and solves
PnP-RANSAC on the 2D-3D matches of each with the package's one PnP
(:func:`~pylocalize.geometry.absolute_pose.estimate_absolute_pose`); one hypothesis wins
and is refined featuremetrically. Poses are ``cam_from_model`` in the mesh's units.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from pylocalize import _core
from pylocalize._core import FormatError
from pylocalize.features.patches import DenseSIFTExtractor, patch_centres
from pylocalize.geometry.absolute_pose import estimate_absolute_pose
from pylocalize.index.bow import InvertedFile
from pylocalize.index.knn import assign, kmeans
from pylocalize.objects import orientation as shapes
from pylocalize.objects.orientation import OrientationTemplates
from pylocalize.objects.refine import refine_featuremetric
from pylocalize.objects.segmentation import SEGMENTATIONS, segment_in_box
from pylocalize.objects.templates import crop_transform, square_around

logger = logging.getLogger(__name__)

# Layout version of a saved representation; bumped when sections or meta change.
# 2: descriptors as float16, patch positions as grid cells, patches counted per template,
#    template bags of words as word counts, the mesh's units.
# 3: model points as int16 offsets in a frame.
# 4: descriptors as 8-bit codes, per-dimension affine (quantize_descriptors).
# 8-bit codes (0.8 % relative error) were once rejected because the one real LINEMOD frame
# lost its pose; 17 warped versions of that frame showed the pose there flips under 0.1 %
# of noise on the descriptors, so that frame could not tell the two apart, and the
# generated set scores them alike (benchmarks/README.md).
REPRESENTATION_VERSION = 4
FORMAT_TAG = "ObjectRepresentation"
SELECTION_RULES = ("featuremetric", "inliers")
# Template retrieval: tf-idf bags of words of patch descriptors ("bow"), gradient-orientation
# shape matching ("line2d", :mod:`~pylocalize.objects.orientation`), both, or the shortlists
# of both taken in turn ("union"; with depth it gained one generated can instance and lost one
# HOPE instance, so the default stays "bow+line2d": benchmarks/README.md).
RETRIEVALS = ("bow", "line2d", "bow+line2d", "union")
# Object PnP: patch centres carry several pixels of noise, which EPnP + least squares keep
# and LO-RANSAC's 1 px robust refinement discounts (measured: benchmarks/README.md).
PNP_RANSAC = {"method": "epnp", "max_trials": 300, "confidence": 0.999}


@dataclass
class PoseHypothesis:
    """One retrieved template's PnP pose of the object.

    Attributes
    ----------
    template : int
        The template whose patches gave the 3D points.
    R : float64 (3, 3)
    t : float64 (3,)
        ``cam_from_model`` in the query camera, translation in the mesh's units.
    num_inliers, num_matches : int
        PnP inliers among the template's correspondences.
    featuremetric_cost : float or None
        Mean featuremetric cost of the template's points at the pose, once scored by
        :meth:`ObjectRepresentation.select_hypothesis`.
    """

    template: int
    R: np.ndarray
    t: np.ndarray
    num_inliers: int
    num_matches: int
    featuremetric_cost: Optional[float] = None

    @property
    def inlier_ratio(self) -> float:
        return self.num_inliers / self.num_matches


@dataclass
class ObjectPose:
    """Outcome of :meth:`ObjectRepresentation.estimate`.

    Attributes
    ----------
    success : bool
    R : float64 (3, 3) or None
    t : float64 (3,) or None
        ``cam_from_model``, translation in the mesh's units.
    score : float
        Inliers of the winning hypothesis over its matches.
    num_inliers, num_matches : int
    templates : list of int
        Retrieved templates, best first.
    template : int
        The template of the winning hypothesis (-1 when none).
    R_coarse, t_coarse : the PnP pose before featuremetric refinement.
    reason : str
    timings : dict
    hypotheses : list of PoseHypothesis
        Every template's PnP pose, in retrieval order.
    """

    success: bool
    R: Optional[np.ndarray] = None
    t: Optional[np.ndarray] = None
    score: float = 0.0
    num_inliers: int = 0
    num_matches: int = 0
    templates: List[int] = field(default_factory=list)
    template: int = -1
    R_coarse: Optional[np.ndarray] = None
    t_coarse: Optional[np.ndarray] = None
    reason: str = ""
    timings: Dict[str, float] = field(default_factory=dict)
    hypotheses: List[PoseHypothesis] = field(default_factory=list)


@dataclass
class QueryPatches:
    """The query as the stages of :meth:`ObjectRepresentation.estimate` see it.

    Attributes
    ----------
    crop : uint8 (size, size, 3)
        The square around the object at the templates' size.
    K : float64 (3, 3)
        The crop's intrinsics (the crop transform times the image's K).
    features : float32 (gh, gw, d)
        The extractor's patch grid on the whole crop.
    descriptors : float32 (n, pca_dim)
        Reduced descriptors of the ``n`` patches on the object.
    xy : float64 (n, 2)
        Their patch centres in crop pixels (OpenCV convention).
    feature_map, stride :
        Reduced features on a grid of step ``stride`` for the featuremetric cost and
        refinement, once computed (:meth:`ObjectRepresentation.query_feature_map`).
    mask : bool (size, size) or None
        The object's pixels in the crop (uneroded), when a mask was given or segmented.
    """

    crop: np.ndarray
    K: np.ndarray
    features: np.ndarray
    descriptors: np.ndarray
    xy: np.ndarray
    feature_map: Optional[np.ndarray] = None
    stride: int = 0
    mask: Optional[np.ndarray] = None


@dataclass
class CyclicMatches:
    """Query patches matched to one template's patches.

    Attributes
    ----------
    template : int
    nearest : int64 (n,)
        For each query patch, its nearest template patch (index within the template).
    distance : float32 (n,)
        Squared descriptor distance to it.
    cycle_px : float64 (n,)
        Crop pixels between the query patch and the nearest query patch of its nearest
        template patch: 0 when the match is mutual.
    """

    template: int
    nearest: np.ndarray
    distance: np.ndarray
    cycle_px: np.ndarray

    def num_consistent(self, radius_px: float) -> int:
        """Matches whose cycle comes back within ``radius_px``."""
        return int((self.cycle_px <= radius_px).sum())


def _checked_query(image, K, mask):
    """``K`` as float64, ``image`` as an array and ``mask`` as bool, shapes checked."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"K must be 3x3, got shape {K.shape}")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got shape {image.shape}")
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != image.shape[:2]:
            raise ValueError(f"mask must be {image.shape[0]}x{image.shape[1]}, got shape {mask.shape}")
    return K, image, mask


def _object_box(mask: Optional[np.ndarray], bbox):
    """The object's box as inclusive ``(x0, y0, x1, y1)`` from its mask or ``(x, y, w, h)``
    box, with ``""``; or ``None`` with the reason when there is no object to crop."""
    if mask is not None:
        ys, xs = np.nonzero(mask)
        if len(xs) == 0:
            return None, "the mask has no foreground pixels"
        return (xs.min(), ys.min(), xs.max(), ys.max()), ""
    if bbox is None:
        raise ValueError("give the object's mask or bbox")
    x, y, w, h = [float(v) for v in bbox]
    if w <= 0 or h <= 0:
        return None, f"empty box {tuple(bbox)}"
    return (x, y, x + w - 1, y + h - 1), ""


class _Stopwatch:
    """Seconds since the previous lap, for the stage timings of an estimate."""

    def __init__(self):
        self.last = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        elapsed, self.last = now - self.last, now
        return elapsed


class BagOfWords:
    """PCA, a k-means vocabulary and tf-idf bags of words with soft assignment to the
    ``num_assign`` nearest words."""

    def __init__(self, mean, components, words, idf, num_assign: int = 3):
        self.mean, self.components = np.asarray(mean, np.float32), np.asarray(components, np.float32)
        self.words, self.idf = np.asarray(words, np.float32), np.asarray(idf, np.float32)
        self.num_assign = int(num_assign)

    @classmethod
    def fit(cls, descriptors: np.ndarray, groups: np.ndarray, num_groups: int, pca_dim: int, num_words: int,
            num_assign: int = 3, seed: int = 0, max_train: int = 200_000, iterations: int = 15) -> "BagOfWords":
        """PCA, vocabulary (:meth:`fit_vocabulary`) and the idf of ``num_groups`` documents
        whose descriptors (n, dim) belong to ``groups`` (n,)."""
        bow = cls.fit_vocabulary(descriptors, pca_dim, num_words, num_assign, seed, max_train, iterations)
        bow.idf = bow.inverse_document_frequency(bow.histograms(bow.reduce(descriptors), groups, num_groups))
        return bow

    @classmethod
    def fit_vocabulary(cls, descriptors: np.ndarray, pca_dim: int, num_words: int, num_assign: int = 3, seed: int = 0,
                       max_train: int = 200_000, iterations: int = 15, points_per_word: int = 256,
                       seconds: Optional[Dict[str, float]] = None) -> "BagOfWords":
        """PCA of ``descriptors`` (n, dim) to ``pca_dim`` and a k-means vocabulary of
        ``num_words`` in the reduced space, trained on at most ``points_per_word`` descriptors
        per word (idf: all ones until set); ``seconds`` gets each stage's time when given."""
        seconds = {} if seconds is None else seconds
        clock = _Stopwatch()
        rng = np.random.default_rng(seed)
        train = descriptors if len(descriptors) <= max_train else descriptors[rng.choice(len(descriptors), max_train,
                                                                                          replace=False)]
        mean = train.mean(0)
        dim = min(pca_dim, descriptors.shape[1])
        bow = cls(mean, principal_axes(train, mean, dim), np.zeros((1, dim)), np.ones(1), num_assign)
        reduced = bow.reduce(descriptors)
        seconds["PCA"] = clock.lap()
        bow.words, _ = kmeans(reduced, min(num_words, len(reduced)), iterations=iterations, seed=seed,
                              max_points_per_centroid=points_per_word)
        bow.idf = np.ones(len(bow.words), np.float32)
        seconds["vocabulary"] = clock.lap()
        return bow

    @staticmethod
    def inverse_document_frequency(counts: np.ndarray) -> np.ndarray:
        """log(documents / documents with the word) of word counts (documents, words)."""
        document_frequency = (counts > 0).sum(0)
        return np.log(len(counts) / np.maximum(document_frequency, 1)).astype(np.float32)

    def reduce(self, descriptors: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray((np.asarray(descriptors, np.float32) - self.mean) @ self.components.T)

    def histograms(self, reduced: np.ndarray, groups: np.ndarray, num_groups: int) -> np.ndarray:
        """Word counts (num_groups, num_words) of reduced descriptors grouped by ``groups``."""
        m = min(self.num_assign, len(self.words))
        labels, _ = assign(reduced, self.words, m)
        labels = labels.reshape(len(reduced), -1)
        counts = np.zeros((num_groups, len(self.words)), np.float32)
        np.add.at(counts, (np.repeat(groups, labels.shape[1]), labels.ravel()), 1.0)
        return counts

    def tfidf(self, counts: np.ndarray) -> np.ndarray:
        v = counts / np.maximum(counts.sum(-1, keepdims=True), 1e-12) * self.idf
        return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def principal_axes(x: np.ndarray, mean: np.ndarray, dim: int) -> np.ndarray:
    """The ``dim`` leading principal axes (dim, d) of rows ``x`` (n, d) about ``mean``, from
    the d x d covariance (accumulated in float32 by BLAS, decomposed in float64): the SVD's
    subspace at a fraction of its time on 200,000 x 128 descriptors. Each axis's sign is
    fixed (its largest entry positive), so the axes do not depend on the LAPACK build."""
    centred = np.asarray(x, np.float32) - np.asarray(mean, np.float32)
    values, vectors = np.linalg.eigh((centred.T @ centred).astype(np.float64))
    axes = vectors[:, np.argsort(values)[::-1][:dim]].T
    signs = np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(1)])
    return (axes * np.where(signs == 0, 1.0, signs)[:, None]).astype(np.float32)


class ObjectRepresentation:
    """Templates of one object: poses, crop intrinsics, foreground patches (reduced
    descriptors, 2D crop positions, 3D model points) and their bags of words."""

    def __init__(self, template_poses, template_K, patch_template, patch_xy, patch_xyz, patch_desc,
                 bow: BagOfWords, template_counts, size: int, padding: float, patch_size: int,
                 extractor_name: str, diameter: float, mesh_units: str = "mm", xyz_frame=None, desc_frame=None,
                 orientation: Optional[OrientationTemplates] = None):
        """``patch_xyz``: model points (n, 3), kept at the 16-bit precision saved
        (:func:`quantize_points`), or the saved int16 offsets when their ``xyz_frame`` is
        given; ``patch_desc``: reduced descriptors (n, pca_dim), kept at the 8-bit precision
        saved (:func:`quantize_descriptors`), or the saved codes when their ``desc_frame`` is
        given; ``template_counts``: word counts (templates, words) of each template's
        patches, whose tf-idf vectors retrieval compares; ``orientation``: the templates'
        gradient-orientation features (:mod:`~pylocalize.objects.orientation`), optional."""
        from pylocalize.objects.bop import millimetres_per_unit

        self.template_poses = np.asarray(template_poses, np.float64)
        self.template_K = np.asarray(template_K, np.float64)
        self.patch_template = np.asarray(patch_template, np.int64)
        self.patch_xy = np.asarray(patch_xy, np.float32)
        # the saved offsets are kept, so that saving again writes the same points
        self._xyz_offsets, self._xyz_frame = (quantize_points(patch_xyz) if xyz_frame is None else
                                              (np.asarray(patch_xyz), np.asarray(xyz_frame, np.float64)))
        self.patch_xyz = dequantize_points(self._xyz_offsets, self._xyz_frame)
        self._desc_codes, self._desc_frame = (quantize_descriptors(patch_desc) if desc_frame is None else
                                              (np.asarray(patch_desc), np.asarray(desc_frame, np.float32)))
        self.patch_desc = dequantize_descriptors(self._desc_codes, self._desc_frame)
        if not len(self.patch_template) == len(self.patch_xy) == len(self.patch_xyz) == len(self.patch_desc):
            raise ValueError("patch templates, positions, model points and descriptors must count the same patches")
        self.bow, self.template_counts = bow, np.asarray(template_counts, np.float32)
        self.template_bow = bow.tfidf(self.template_counts)
        self.size, self.padding, self.patch_size = int(size), float(padding), int(patch_size)
        self.extractor_name, self.diameter = extractor_name, float(diameter)
        millimetres_per_unit(mesh_units)
        self.mesh_units = mesh_units
        self.onboarding_seconds: Dict[str, float] = {}
        order = np.argsort(self.patch_template, kind="stable")
        if not np.array_equal(order, np.arange(len(order))):
            raise ValueError("patches must be sorted by template")
        self._starts = np.searchsorted(self.patch_template, np.arange(len(self.template_poses) + 1))
        # tf-idf retrieval visits only the posting lists of the query's words
        self.inverted_file = InvertedFile(self.template_bow.shape[1])
        self.inverted_file.add(self.template_bow)
        if orientation is not None and len(orientation.bins) != len(self.template_poses):
            raise ValueError(f"{len(orientation.bins)} templates of orientation features for "
                             f"{len(self.template_poses)} templates")
        self.orientation = orientation

    def __repr__(self) -> str:
        return (f"ObjectRepresentation({len(self.template_poses)} templates, {len(self.patch_xyz)} patches, "
                f"{len(self.bow.words)} words, {self.extractor_name})")

    def template_patches(self, template: int) -> slice:
        """The rows of ``patch_*`` that belong to ``template``."""
        return slice(int(self._starts[template]), int(self._starts[template + 1]))

    def num_template_patches(self, template: int) -> int:
        return int(self._starts[template + 1] - self._starts[template])

    def default_extractor(self):
        if self.extractor_name != "dense-sift":
            raise ValueError(f"this representation was onboarded with {self.extractor_name!r}: pass that extractor")
        return DenseSIFTExtractor(self.patch_size)

    # ---------------------------------------------------------------- estimation

    def estimate(self, image: np.ndarray, K, mask: Optional[np.ndarray] = None, bbox: Optional[Sequence[float]] = None,
                 extractor=None, num_templates: int = 5, num_candidates: int = 50, max_matches: int = 300,
                 max_error_patches: float = 1.0, min_inliers: int = 6, erode_px: int = 3,
                 refine: bool = True, select: str = "featuremetric", segment: str = "grabcut",
                 retrieval: Optional[str] = None) -> ObjectPose:
        """The object's pose in a query image.

        The stages, each a method: :meth:`crop_query` (crop and patch features),
        :meth:`retrieve_templates` (bag of words, then cyclic matches),
        :meth:`pose_hypotheses` (correspondences and PnP per template),
        :meth:`select_hypothesis` and :meth:`refine_pose`.

        Parameters
        ----------
        image : uint8 (H, W, 3)
        K : float (3, 3), OpenCV convention
        mask : bool (H, W), optional
            The object's pixels (modal mask); or give ``bbox``.
        bbox : (x, y, w, h), optional
            The object's box in pixels.
        extractor : patch extractor, optional
            The one used at onboarding (default: the DenseSIFT it names).
        num_templates : int
            Templates that each give one PnP hypothesis: the best by cyclic matches among
            the ``num_candidates`` best by bag of words.
        max_matches : int
            Cyclic matches kept per template, best cycle distance first.
        max_error_patches : float
            PnP-RANSAC inlier threshold, in patches of the crop (so in crop pixels, times
            the patch size, whatever the object's size in the image).
        refine : bool
            Featuremetric refinement of the PnP pose (:mod:`~pylocalize.objects.refine`).
        select : {"featuremetric", "inliers"}
            Which PnP hypothesis wins: the lowest mean featuremetric cost of its template's
            points at the PnP pose (default), or the most inliers (see :meth:`select_hypothesis`).
        segment : {"grabcut", "box"}
            With a ``bbox`` and no ``mask``: the object's pixels found in the box by GrabCut
            (:func:`~pylocalize.objects.segmentation.segment_in_box`; default), or every
            patch of the box (background included).
        retrieval : {"bow", "line2d", "bow+line2d", "union"}, optional
            How templates are found (:meth:`retrieve_templates`). Default:
            ``"bow+line2d"`` where the representation has orientation features (+0.07 to
            +0.12 AR on the generated HOPE and LINEMOD sets, benchmarks/README.md), ``"bow"``
            for files saved before them.
        """
        K, image, mask = _checked_query(image, K, mask)
        retrieval, extractor = self._checked_estimate_options(retrieval, select, segment, extractor)
        box, reason = _object_box(mask, bbox)
        if box is None:
            return ObjectPose(False, reason=reason)
        timings = {}
        clock = _Stopwatch()
        if mask is None and segment == "grabcut":
            mask = segment_in_box(image, bbox)
            timings["segmentation"] = clock.lap()
        query = self.crop_query(image, K, box, mask, extractor, erode_px)
        if len(query.xy) < min_inliers:
            return ObjectPose(False, reason=f"only {len(query.xy)} patches on the object", timings=timings)
        timings["features"] = clock.lap()
        matches = self.retrieve_templates(query, num_templates, num_candidates, min_patches=min_inliers,
                                          retrieval=retrieval)
        ranked = [m.template for m in matches]
        timings["retrieval"] = clock.lap()
        hypotheses = self.pose_hypotheses(query, matches, max_matches, max_error_patches, min_inliers)
        if not hypotheses:
            timings["matching_pnp"] = clock.lap()
            return ObjectPose(False, templates=ranked, reason="no template gave a PnP solution", timings=timings)
        if refine or (select == "featuremetric" and len(hypotheses) > 1):
            query.feature_map, query.stride = self.query_feature_map(query, extractor)
        best = self.select_hypothesis(query, hypotheses, select)
        timings["matching_pnp"] = clock.lap()
        R, t = best.R, best.t
        if refine:
            R, t = self.refine_pose(query, best)
            timings["refinement"] = clock.lap()
        return ObjectPose(True, R=R, t=t, score=best.inlier_ratio, num_inliers=best.num_inliers,
                          num_matches=best.num_matches, templates=ranked, template=best.template, R_coarse=best.R,
                          t_coarse=best.t, timings=timings, hypotheses=hypotheses)

    def _checked_estimate_options(self, retrieval: Optional[str], select: str, segment: str, extractor):
        """The retrieval and the extractor :meth:`estimate` runs (their defaults where None),
        once the options are checked against their choices and this representation."""
        if retrieval is None:
            retrieval = "bow+line2d" if self.orientation is not None else "bow"
        if retrieval not in RETRIEVALS:
            raise ValueError(f"retrieval must be one of {RETRIEVALS}, got {retrieval!r}")
        if retrieval != "bow" and self.orientation is None:
            raise ValueError(f"retrieval={retrieval!r} needs orientation features, which this representation "
                             "(saved before them) lacks: onboard the object again, or use retrieval='bow'")
        if select not in SELECTION_RULES:
            raise ValueError(f"select must be 'featuremetric' or 'inliers', got {select!r}")
        if segment not in SEGMENTATIONS:
            raise ValueError(f"segment must be one of {SEGMENTATIONS}, got {segment!r}")
        extractor = extractor or self.default_extractor()
        if extractor.patch_size != self.patch_size:
            raise ValueError(f"extractor patch size {extractor.patch_size} != onboarding {self.patch_size}")
        return retrieval, extractor

    def crop_query(self, image: np.ndarray, K: np.ndarray, box, mask: Optional[np.ndarray], extractor,
                   erode_px: int = 3) -> QueryPatches:
        """Stage 1: the square crop around ``box`` (inclusive ``x0, y0, x1, y1``) at the
        templates' size, its patch features, and the patches on the object: under the
        eroded mask (as for templates, no patch that is half background), or in the box."""
        import cv2

        centre, side = square_around(*box, self.padding)
        crop_from_image = crop_transform(centre, side, self.size)
        crop = cv2.warpAffine(np.ascontiguousarray(image), crop_from_image[:2], (self.size, self.size),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        features = extractor(crop)
        centres = patch_centres(features.shape[0], features.shape[1], self.patch_size)
        if mask is not None:
            crop_mask = cv2.warpAffine(mask.astype(np.uint8), crop_from_image[:2], (self.size, self.size),
                                       flags=cv2.INTER_NEAREST)
            object_pixels = crop_mask > 0
            if erode_px > 0:
                crop_mask = cv2.erode(crop_mask, np.ones((2 * erode_px + 1, 2 * erode_px + 1), np.uint8))
            on_object = crop_mask[np.rint(centres[:, 1]).astype(int), np.rint(centres[:, 0]).astype(int)] > 0
        else:
            object_pixels = None
            corners = crop_from_image @ np.array([[box[0], box[1], 1.0], [box[2], box[3], 1.0]]).T
            on_object = ((centres[:, 0] >= corners[0, 0]) & (centres[:, 0] <= corners[0, 1])
                         & (centres[:, 1] >= corners[1, 0]) & (centres[:, 1] <= corners[1, 1]))
        descriptors = self.bow.reduce(features.reshape(-1, features.shape[-1])[on_object])
        return QueryPatches(crop=crop, K=crop_from_image @ K, features=features, descriptors=descriptors,
                            xy=centres[on_object], mask=object_pixels)

    def retrieve_templates(self, query: QueryPatches, num_templates: int = 5, num_candidates: int = 50,
                           min_patches: int = 6, retrieval: str = "bow") -> List[CyclicMatches]:
        """Stage 2: the ``num_candidates`` templates nearest by tf-idf bag of words, re-ranked
        by cyclic matches; the best ``num_templates`` with their matches, best first.

        Bags of words alone confuse views that share textures; a cyclic match (a query
        patch whose nearest template patch leads back to within one patch of it) counts only
        geometrically consistent agreement. Templates with fewer than ``min_patches``
        patches cannot give a pose and are skipped. Ties keep the shortlist's order.

        ``retrieval="bow+line2d"`` re-ranks by cyclic matches times the template's
        gradient-orientation score (:meth:`match_shapes`, in [0, 1]): views whose patches
        match about as well (the texture cannot tell them apart) are then told apart by
        silhouette and edges; ``"line2d"`` also shortlists by that score. ``"union"`` takes
        the re-ranked bag-of-words and shape shortlists in turn (the best of each, then the
        second of each, ...): each finds right views the other misses (on the real LINEMOD
        frame's warps, the right view was among the first 50 of either in 17 of 18, of the
        bag of words alone in 12).
        """
        if retrieval not in RETRIEVALS:
            raise ValueError(f"retrieval must be one of {RETRIEVALS}, got {retrieval!r}")
        k = max(num_candidates, num_templates)
        shape = self.match_shapes(query) if retrieval in ("line2d", "union") else None
        shortlists = []
        if retrieval != "line2d":
            shortlists.append(self.bow_shortlist(query.descriptors, k))
        if shape is not None:
            shortlists.append([int(i) for i in shape.ranking(k)])
        matches = {t: self.cyclic_matches(query, t) for t in dict.fromkeys(t for s in shortlists for t in s)
                   if self.num_template_patches(t) >= min_patches}
        if retrieval == "bow":
            score = {t: m.num_consistent(self.patch_size) for t, m in matches.items()}
        else:
            # only the shortlist's shape scores count: the bag of words' 50 are scored alone
            shape = shape or self.match_shapes(query, list(matches))
            score = {t: m.num_consistent(self.patch_size) * shape.scores[t] for t, m in matches.items()}
        # stable sorts: ties stay in shortlist order
        ranked = [sorted((t for t in s if t in matches), key=lambda t: -score[t]) for s in shortlists]
        in_turn = dict.fromkeys(t for tier in itertools.zip_longest(*ranked) for t in tier if t is not None)
        return [matches[t] for t in in_turn][:num_templates]

    def match_shapes(self, query: QueryPatches, templates: Optional[Sequence[int]] = None) -> "shapes.ShapeMatches":
        """The templates' gradient-orientation scores on the query crop (LINE-2D,
        :func:`~pylocalize.objects.orientation.match_shapes`), from the gradients on the
        object's mask when there is one; of ``templates`` only when given (the others -1)."""
        if self.orientation is None:
            raise ValueError("this representation has no orientation features (saved before them): onboard the "
                             "object again, or use retrieval='bow'")
        return shapes.match_shapes(self.orientation, query.crop, query.mask, subset=templates)

    def bow_shortlist(self, descriptors: np.ndarray, k: int) -> List[int]:
        """The ``k`` templates whose tf-idf bags of words are nearest (cosine) to those of
        the reduced query descriptors ``(n, pca_dim)``, best first."""
        bag = self.bow.tfidf(self.bow.histograms(descriptors, np.zeros(len(descriptors), np.int64), 1))
        _, ids = self.inverted_file.search(bag, min(k, len(self.template_poses)))
        return [int(i) for i in ids[0] if i >= 0]

    def cyclic_matches(self, query: QueryPatches, template: int) -> CyclicMatches:
        """Nearest template patch of every query patch (core kNN on reduced descriptors),
        and how far the nearest query patch of that template patch lies from it."""
        descriptors = self.patch_desc[self.template_patches(template)]
        nearest, distance = assign(query.descriptors, descriptors, 1)
        back, _ = assign(descriptors, query.descriptors, 1)
        cycle_px = np.linalg.norm(query.xy[back[nearest]] - query.xy, axis=1)
        return CyclicMatches(template, nearest, distance, cycle_px)

    def correspondences(self, query: QueryPatches, matches: CyclicMatches,
                        max_matches: int = 300) -> Tuple[np.ndarray, np.ndarray]:
        """2D crop points ``(n, 2)`` and 3D model points ``(n, 3)`` (float64) of the best
        ``max_matches`` cyclic matches, shortest cycle first (then descriptor distance); a
        cycle that strays more than two patches is no match."""
        order = np.lexsort((matches.distance, matches.cycle_px))[:max_matches]
        order = order[matches.cycle_px[order] <= 2.0 * self.patch_size]
        points3D = self.patch_xyz[self.template_patches(matches.template)][matches.nearest[order]]
        return query.xy[order].astype(np.float64), points3D.astype(np.float64)

    def pose_hypotheses(self, query: QueryPatches, matches: Sequence[CyclicMatches], max_matches: int = 300,
                        max_error_patches: float = 1.0, min_inliers: int = 6) -> List[PoseHypothesis]:
        """Stage 3: one PnP pose per template from its correspondences, kept when at least
        ``min_inliers`` agree within ``max_error_patches`` patches of the crop."""
        hypotheses = []
        for template_matches in matches:
            points2D, points3D = self.correspondences(query, template_matches, max_matches)
            if len(points2D) < min_inliers:
                continue
            # the one PnP of the package; the threshold scale is the crop's pixels, as the
            # patch grid's
            pose = estimate_absolute_pose(points2D, points3D, query.K, max_error_patches * self.patch_size,
                                          image_size=(self.size, self.size), **PNP_RANSAC)
            if pose is None or pose.num_inliers < min_inliers:
                continue
            hypotheses.append(PoseHypothesis(template_matches.template, pose.R.copy(), pose.t.copy(),
                                             pose.num_inliers, len(points2D)))
        return hypotheses

    def query_feature_map(self, query: QueryPatches, extractor) -> Tuple[np.ndarray, int]:
        """Reduced query features on a grid for the featuremetric cost, and its stride: half
        a patch where the extractor can give a denser map than the patch grid (dense SIFT)."""
        stride = self.patch_size // 2 if hasattr(extractor, "feature_map") else self.patch_size
        dense = extractor.feature_map(query.crop, stride) if stride != self.patch_size else query.features
        return self.bow.reduce(dense.reshape(-1, dense.shape[-1])).reshape(*dense.shape[:2], -1), stride

    def featuremetric_cost(self, query: QueryPatches, hypothesis: PoseHypothesis) -> float:
        """Mean robust featuremetric cost of the hypothesis template's points at its pose
        (needs ``query.feature_map``, see :meth:`query_feature_map`)."""
        patches = self.template_patches(hypothesis.template)
        _, _, cost, _ = refine_featuremetric(query.feature_map, query.stride, query.K, hypothesis.R, hypothesis.t,
                                             self.patch_xyz[patches], self.patch_desc[patches], iterations=0)
        return cost / (patches.stop - patches.start)

    def select_hypothesis(self, query: QueryPatches, hypotheses: Sequence[PoseHypothesis],
                          rule: str = "featuremetric") -> PoseHypothesis:
        """Stage 4: the winning hypothesis by ``rule``, ``"featuremetric"`` (the lowest
        :meth:`featuremetric_cost`, stored on each hypothesis) or ``"inliers"`` (the most PnP
        inliers); the first wins ties.

        On poorly textured objects a wrong view at a wrong distance can gather the most
        inliers under the loose patch-sized threshold while its template's features do not
        line up; the featuremetric cost looks at every template point (benchmarks/README.md:
        the real LINEMOD frame).
        """
        if rule == "featuremetric" and len(hypotheses) > 1:
            for hypothesis in hypotheses:
                hypothesis.featuremetric_cost = self.featuremetric_cost(query, hypothesis)
            return min(hypotheses, key=lambda h: h.featuremetric_cost)
        return max(hypotheses, key=lambda h: h.num_inliers)

    def refine_pose(self, query: QueryPatches, hypothesis: PoseHypothesis) -> Tuple[np.ndarray, np.ndarray]:
        """Stage 5: featuremetric refinement of the hypothesis pose on its template's points."""
        patches = self.template_patches(hypothesis.template)
        R, t, _, _ = refine_featuremetric(query.feature_map, query.stride, query.K, hypothesis.R, hypothesis.t,
                                          self.patch_xyz[patches], self.patch_desc[patches])
        return R, t

    # --------------------------------------------------------------- persistence

    def save(self, path) -> None:
        """Writes the representation as one versioned pylocalize container, atomically.

        What the pose stages read, compactly: descriptors as 8-bit codes
        (:func:`quantize_descriptors`: 1/255 of each dimension's range), patch positions as
        grid cells, model points as 16-bit offsets (:func:`quantize_points`: within
        1/65534 of the object's extent), patches counted per template, template bags of
        words as word counts (tf-idf is recomputed on load, exactly)."""
        import json
        import os

        info = {"extractor": self.extractor_name, "padding": self.padding, "diameter": self.diameter,
                "mesh_units": self.mesh_units}
        sections = {
            "info": np.frombuffer(json.dumps(info).encode("utf-8"), np.uint8).copy(),
            "template_poses": self.template_poses, "template_K": self.template_K,
            "template_num_patches": np.diff(self._starts).astype(np.int32),
            "patch_grid": _grid_cells(self.patch_xy, self.size, self.patch_size),
            "patch_xyz_int16": np.ascontiguousarray(self._xyz_offsets).view(np.uint8),
            "patch_xyz_frame": self._xyz_frame,
            "patch_desc_uint8": self._desc_codes, "patch_desc_frame": self._desc_frame,
            "pca_mean": self.bow.mean, "pca_components": self.bow.components,
            "words": self.bow.words, "idf": self.bow.idf,
            "template_word_counts": _compact_counts(self.template_counts),
        }
        if self.orientation is not None:  # optional: files without them load, with retrieval "bow" only
            sections["orientation_xy_int16"] = np.ascontiguousarray(self.orientation.xy).view(np.uint8)
            sections["orientation_bins"] = self.orientation.bins
        meta = {"representation_version": REPRESENTATION_VERSION, "size": self.size, "patch_size": self.patch_size,
                "num_assign": self.bow.num_assign}
        _core.write_container(os.fspath(path), FORMAT_TAG, meta,
                              {k: np.ascontiguousarray(v) for k, v in sections.items()})

    @classmethod
    def load(cls, path) -> "ObjectRepresentation":
        """Reads :meth:`save` output; a corrupt file, another version (older files: onboard
        the object again) or another kind of file raises :class:`pylocalize.FormatError`."""
        import json

        from pylocalize.containers import LAYOUT_ERRORS, read_layout

        meta, sec = read_layout(path, FORMAT_TAG, "representation_version", REPRESENTATION_VERSION,
                                "an object representation", "onboard the object again ('pylocalize objects onboard')")
        try:
            info = json.loads(bytes(sec["info"]).decode("utf-8"))
            bow = BagOfWords(sec["pca_mean"], sec["pca_components"], sec["words"], sec["idf"], meta["num_assign"])
            counts, codes = np.asarray(sec["template_num_patches"], np.int64), sec["patch_desc_uint8"]
            if counts.min(initial=0) < 0 or counts.sum() != len(codes):  # before allocating by the counts
                raise ValueError(f"patch counts per template sum to {counts.sum()}, not the {len(codes)} patches")
            patch_template = np.repeat(np.arange(len(sec["template_poses"])), counts)
            offsets = np.ascontiguousarray(sec["patch_xyz_int16"]).view(np.int16)
            orientation = (OrientationTemplates(np.ascontiguousarray(sec["orientation_xy_int16"]).view(np.int16),
                                                sec["orientation_bins"]) if "orientation_bins" in sec else None)
            return cls(sec["template_poses"], sec["template_K"], patch_template,
                       _cell_centres(sec["patch_grid"], meta["patch_size"]),
                       offsets, codes, bow, sec["template_word_counts"], meta["size"],
                       info["padding"], meta["patch_size"], info["extractor"], info["diameter"], info["mesh_units"],
                       xyz_frame=sec["patch_xyz_frame"], desc_frame=sec["patch_desc_frame"], orientation=orientation)
        except LAYOUT_ERRORS as error:
            raise FormatError(f"{path}: not a valid {FORMAT_TAG} ({error})") from error


def _grid_cells(xy: np.ndarray, size: int, patch_size: int) -> np.ndarray:
    """Column and row (n, 2) in the ``size // patch_size`` patch grid of the centres ``xy``
    (n, 2): uint8 while the grid has at most 256 columns."""
    side = size // patch_size
    cells = np.rint((np.asarray(xy, np.float64) - (patch_size - 1) / 2.0) / patch_size).astype(np.int64)
    if len(xy) and (cells.min() < 0 or cells.max() >= side or
                    not np.allclose(_cell_centres(cells, patch_size), xy, atol=1e-3)):
        raise ValueError("patch positions must be the centres of the template's patch grid")
    return cells.astype(np.uint8 if side <= 256 else np.int32)


def _cell_centres(cells: np.ndarray, patch_size: int) -> np.ndarray:
    """Pixel centres (n, 2) of grid cells (column, row) (n, 2), as :func:`patch_centres`."""
    return np.asarray(cells, np.float64).reshape(-1, 2) * patch_size + (patch_size - 1) / 2.0


def quantize_points(points: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Points (n, 3) as int16 offsets (n, 3) and their frame ``(x0, y0, z0, step)``
    (float64): the point is ``origin + step * offset``, the origin the centre of the points'
    box and the step its largest half-side over 32767, so the rounding error is at most
    half a step (0.002 mm on a 200 mm object)."""
    points = np.asarray(points, np.float64).reshape(-1, 3)
    if not np.isfinite(points).all():
        raise ValueError("model points must be finite")
    if len(points) == 0:
        return np.zeros((0, 3), np.int16), np.array([0.0, 0.0, 0.0, 1.0])
    origin = (points.min(0) + points.max(0)) / 2.0
    step = max(float(np.abs(points - origin).max()), 1e-12) / 32767.0
    return np.rint((points - origin) / step).astype(np.int16), np.append(origin, step)


def dequantize_points(offsets: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """The float32 points (n, 3) of :func:`quantize_points`' offsets and frame."""
    frame = np.asarray(frame, np.float64).reshape(-1)
    offsets = np.asarray(offsets)
    if frame.shape != (4,) or offsets.dtype != np.int16 or not (np.isfinite(frame).all() and frame[3] > 0):
        raise ValueError("model points: expected int16 offsets and a frame (x0, y0, z0, step > 0)")
    return (frame[:3] + frame[3] * offsets.reshape(-1, 3).astype(np.float64)).astype(np.float32)


def quantize_descriptors(descriptors: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Descriptors (n, dim) as uint8 codes (n, dim) and their frame (2, dim) float32: the
    lowest value and the step of each dimension, its range over 255, so the rounding error
    is at most half a step. Per dimension because PCA dimensions differ in range by an
    order of magnitude: one scale for all would spend the codes on the first few."""
    descriptors = np.asarray(descriptors, np.float32)
    if descriptors.ndim != 2:
        raise ValueError(f"descriptors must be (n, dim), got shape {descriptors.shape}")
    if not np.isfinite(descriptors).all():
        raise ValueError("descriptors must be finite")
    if len(descriptors) == 0:
        return np.zeros(descriptors.shape, np.uint8), np.stack([np.zeros(descriptors.shape[1], np.float32),
                                                                 np.ones(descriptors.shape[1], np.float32)])
    low = descriptors.min(0)
    step = np.maximum((descriptors.max(0) - low) / 255.0, np.float32(1e-12)).astype(np.float32)
    codes = np.clip(np.rint((descriptors - low) / step), 0, 255).astype(np.uint8)
    return codes, np.stack([low, step])


def dequantize_descriptors(codes: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """The float32 descriptors (n, dim) of :func:`quantize_descriptors`' codes and frame."""
    codes, frame = np.asarray(codes), np.asarray(frame, np.float32)
    if (codes.dtype != np.uint8 or codes.ndim != 2 or frame.shape != (2, codes.shape[1]) or
            not (np.isfinite(frame).all() and (frame[1] > 0).all())):
        raise ValueError("descriptors: expected uint8 codes (n, dim) and a frame (2, dim) of lows and steps > 0")
    return frame[0] + frame[1] * codes.astype(np.float32)


def _compact_counts(counts: np.ndarray) -> np.ndarray:
    """Whole word counts in the smallest container type: uint8 up to 255, else int32."""
    if not np.array_equal(counts, np.rint(counts)) or counts.min(initial=0) < 0:
        raise ValueError("template word counts must be whole numbers")
    return counts.astype(np.uint8 if counts.max(initial=0) <= 255 else np.int32)
