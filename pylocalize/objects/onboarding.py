"""Onboarding: an object's representation from its mesh alone (FoundPose's templates).

:func:`onboard` renders templates from Fibonacci viewpoints x in-plane rotations, extracts
patch descriptors on the patch grid, keeps the foreground patches with the 3D model point
each one sees, reduces descriptors by PCA and builds a k-means vocabulary with one tf-idf
bag of words per template (:class:`~pylocalize.objects.representation.BagOfWords`).

Templates are rendered and described on a pool of threads: the core's rasterizer and
OpenCV release the GIL, so the two overlap on the cores; or by an executor the caller gives
(:class:`pylocalize.distributed.RayExecutor`: as Ray tasks on a cluster), with the same
result. Each stage's time is logged (logger ``pylocalize.objects.onboarding``, level INFO)
and kept in ``ObjectRepresentation.onboarding_seconds``.
"""

from __future__ import annotations

import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Dict, Optional

import numpy as np

from pylocalize.features.patches import DenseSIFTExtractor, patch_centres
from pylocalize.objects import bop
from pylocalize.objects.orientation import OrientationTemplates, template_features
from pylocalize.objects.representation import (
    BagOfWords,
    ObjectRepresentation,
    dequantize_descriptors,
    quantize_descriptors,
)
from pylocalize.objects.templates import template_intrinsics

logger = logging.getLogger(__name__)
# The vocabulary's k-means: the tf-idf shortlist (then re-ranked by cyclic matches) needs
# words that split the descriptor space evenly, which 10 Lloyd iterations on 64 descriptors
# per word give as well as 15 on all of them, in a fifth of the time (benchmarks/README.md)
VOCABULARY_ITERATIONS = 10
VOCABULARY_POINTS_PER_WORD = 64


def onboard(mesh, extractor=None, num_views: int = 57, num_inplane: int = 14, size: int = 420,
            padding: float = 0.2, distance: Optional[float] = None, pca_dim: int = 96, num_words: int = 2048,
            num_assign: int = 3, erode_px: int = 3, seed: int = 0, progress: bool = False,
            mesh_units: Optional[str] = None, num_workers: Optional[int] = None,
            supersample: int = 3, executor=None, num_orientation_features: int = 96) -> ObjectRepresentation:
    """Builds the representation of an object from its mesh.

    Parameters
    ----------
    mesh : pylocalize.render.Mesh or path
    extractor : patch extractor, default :class:`DenseSIFTExtractor`
    num_views, num_inplane : int
        Fibonacci viewpoints and in-plane rotations per viewpoint (templates: their product).
    size, padding : int, float
        Templates are ``size`` x ``size`` crops of the object's bounding square enlarged by
        ``padding``.
    distance : float, optional
        Camera distance in mesh units; default 2.5 x the object's diameter (the crop
        intrinsics frame the object whatever the distance; it sets the perspective).
    pca_dim, num_words, num_assign : int
        Descriptor dimension after PCA, vocabulary size, words per patch. Reduced
        descriptors are kept at the 8-bit precision saved.
    erode_px : int
        Mask erosion before patches are kept, so that patches on the silhouette (half
        background) are not used.
    mesh_units : {"mm", "cm", "m"}, optional
        The mesh's length unit, recorded so that BOP results can be written in millimetres;
        poses stay in the mesh's units. Default: guessed from the mesh's size
        (:func:`~pylocalize.objects.bop.mesh_units_from_size`: metres under 10 units across,
        else millimetres), with a log line saying so.
    num_workers : int, optional
        Threads rendering and describing templates (default: ``pylocalize.get_num_threads()``).
    supersample : {1, 3, 5, 7}
        Anti-aliasing samples per template pixel side (:class:`~pylocalize.render.Renderer`).
    executor : optional
        Renders and describes the templates instead of the pool of ``num_workers`` threads: an
        object whose ``map(function, poses)`` gives each pose's result in order, as a
        ``concurrent.futures.Executor`` does (:class:`pylocalize.distributed.RayExecutor`: Ray
        tasks). The representation is the same.
    num_orientation_features : int
        Gradient-orientation features per template (LINE-2D,
        :func:`~pylocalize.objects.orientation.template_features`): silhouette and inner-edge
        points whose orientations score the templates by shape; 0 for none.
    """
    from pylocalize.geometry import viewpoint_poses
    from pylocalize.render import load_mesh

    if not hasattr(mesh, "faces"):
        mesh = load_mesh(mesh)
    if len(mesh.faces) == 0:
        raise ValueError("the mesh has no faces: nothing to render")
    extractor = extractor or DenseSIFTExtractor()
    if size % extractor.patch_size:
        raise ValueError(f"template size {size} must be a multiple of the patch size {extractor.patch_size}")
    diameter = float(mesh.extent)
    mesh_units = _mesh_units(mesh_units, diameter)
    poses = viewpoint_poses(num_views, num_inplane, radius=distance or 2.5 * diameter, center=mesh.center)
    seconds: Dict[str, float] = {}
    start = time.perf_counter()
    renderer = {"size": size, "padding": padding, "supersample": supersample, "erode_px": erode_px}
    renderer["num_orientation_features"] = num_orientation_features
    Ks, groups, xys, xyzs, descriptors, orientation = _render_templates(mesh, poses, renderer, extractor, num_workers,
                                                                        progress, seconds, executor)
    bow, reduced, counts = _vocabulary_and_bags(descriptors, groups, len(poses), pca_dim, num_words, num_assign, seed,
                                                seconds)
    rep = ObjectRepresentation(poses, Ks, groups, xys, xyzs, reduced, bow, counts, size, padding,
                               extractor.patch_size, extractor.name, diameter, mesh_units, orientation=orientation)
    seconds["total"] = time.perf_counter() - start
    rep.onboarding_seconds = seconds
    logger.info("onboarded %s in %s", rep, format_stage_seconds(seconds))
    return rep


def _vocabulary_and_bags(descriptors, groups, num_templates, pca_dim, num_words, num_assign, seed, seconds):
    """PCA and vocabulary, the reduced descriptors at the 8-bit precision saved, and
    each template's word counts of them, as the pose stages will read them."""
    bow = BagOfWords.fit_vocabulary(descriptors, pca_dim, num_words, num_assign, seed,
                                    iterations=VOCABULARY_ITERATIONS, points_per_word=VOCABULARY_POINTS_PER_WORD,
                                    seconds=seconds)
    clock = time.perf_counter()
    reduced = dequantize_descriptors(*quantize_descriptors(bow.reduce(descriptors)))
    counts = bow.histograms(reduced, groups, num_templates)
    bow.idf = bow.inverse_document_frequency(counts)
    seconds["bags of words"] = time.perf_counter() - clock
    return bow, reduced, counts


def format_stage_seconds(seconds: Dict[str, float]) -> str:
    """One line from :func:`onboard`'s ``onboarding_seconds``: ``"41.2 s: templates 30.1 s
    on 2 threads (rendering 40.2 s, patch features 18.0 s of thread time), PCA 1.0 s, ..."``."""
    parts = []
    for name, value in seconds.items():
        if name == "templates":
            rendering, features = seconds.get("rendering", 0.0), seconds.get("patch features", 0.0)
            parts.append(f"templates {value:.1f} s on {seconds.get('threads', 1):.0f} threads (rendering "
                         f"{rendering:.1f} s, patch features {features:.1f} s of thread time)")
        elif name not in ("total", "threads", "rendering", "patch features"):
            parts.append(f"{name} {value:.1f} s")
    return f"{seconds.get('total', 0.0):.1f} s: " + ", ".join(parts)


def _mesh_units(mesh_units: Optional[str], diameter: float) -> str:
    """The given units, checked, or the ones the mesh's size suggests, logged."""
    if mesh_units is not None:
        bop.millimetres_per_unit(mesh_units)
        return mesh_units
    guess = bop.mesh_units_from_size(diameter)
    logger.info("mesh units: %s, guessed from the mesh's diameter %.4g (pass mesh_units / --mesh-units "
                "mm|cm|m if wrong); BOP results are written in mm", guess, diameter)
    return guess


def _render_templates(mesh, poses, renderer: dict, extractor, num_workers, progress, seconds, executor=None):
    """Every template's crop K, and its foreground patches: template ids, crop positions,
    model points and descriptors, concatenated in template order; on a local thread pool,
    or by ``executor``."""
    from tqdm import tqdm

    from pylocalize.runtime import get_num_threads

    side = renderer["size"] // extractor.patch_size
    centres = patch_centres(side, side, extractor.patch_size)
    # one picklable function of the pose, so that an executor may run it in other processes
    render = functools.partial(_render_template, mesh=mesh, extractor=extractor, centres=centres, **renderer)
    start = time.perf_counter()
    workers = max(1, int(num_workers or get_num_threads()))
    if executor is not None:  # the workers it spreads over, for the log (a concurrent.futures pool keeps its count)
        workers = getattr(executor, "num_workers", None) or getattr(executor, "_max_workers", 1)
    pool = ThreadPoolExecutor(workers, thread_name_prefix="onboard") if executor is None else nullcontext(executor)
    with pool as runner:
        templates = list(tqdm(runner.map(render, poses), total=len(poses), desc="onboarding: templates",
                              disable=not progress, leave=False))
    seconds["templates"], seconds["threads"] = time.perf_counter() - start, workers
    for name, index in (("rendering", 4), ("patch features", 5)):  # thread time, summed over the workers
        seconds[name] = float(sum(t[index] for t in templates))
    groups = np.concatenate([np.full(len(t[1]), i, np.int64) for i, t in enumerate(templates)])
    if len(groups) == 0:
        raise ValueError("no template has foreground patches: is the mesh degenerate?")
    count = renderer["num_orientation_features"]
    orientation = OrientationTemplates.stack([t[6] for t in templates], count) if count > 0 else None
    return (np.stack([t[0] for t in templates]), groups, np.concatenate([t[1] for t in templates]),
            np.concatenate([t[2] for t in templates]), np.concatenate([t[3] for t in templates]).astype(np.float32),
            orientation)


def _render_template(pose: np.ndarray, mesh, extractor, centres: np.ndarray, size: int, padding: float,
                     supersample: int, erode_px: int, num_orientation_features: int = 0):
    """One template: its crop intrinsics; the crop positions ``(n, 2)``, model points
    ``(n, 3)`` and descriptors ``(n, dim)`` of its patches on the object; the seconds
    spent rendering and describing; and its orientation features ``(xy, bins)`` (none
    when ``num_orientation_features`` is 0). The mask is eroded first so that patches on the
    silhouette (half background) are not kept."""
    import cv2

    from pylocalize.render import Renderer

    start = time.perf_counter()
    K = template_intrinsics(mesh.vertices, pose, size, padding)
    out = Renderer(size, size, K, supersample=supersample).render(mesh, pose, outputs=("rgb", "mask", "xyz"))
    mask = out.mask[0].astype(np.uint8)
    if erode_px > 0:
        mask = cv2.erode(mask, np.ones((2 * erode_px + 1, 2 * erode_px + 1), np.uint8))
    rendered = time.perf_counter()
    pixels = np.rint(centres).astype(int)
    keep = mask[pixels[:, 1], pixels[:, 0]] > 0
    features = patch_features(extractor, out.rgb[0], out.mask[0], keep)
    orientation = (template_features(out.rgb[0], out.mask[0], num_orientation_features)
                   if num_orientation_features > 0 else None)
    return (K, centres[keep], out.xyz[0][pixels[keep, 1], pixels[keep, 0]], features,
            rendered - start, time.perf_counter() - rendered, orientation)


def patch_features(extractor, rgb: np.ndarray, mask: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Descriptors (n, dim) of the patches ``keep`` (bool over the row-major patch grid) of
    a template rendered on a black background, the object's pixels ``mask``.

    An extractor whose descriptors see only ``reach_px`` around their patch (dense SIFT)
    runs on the object's box grown by that reach, on the patch grid: beyond it the template
    is background, so the descriptors are those of the whole image, for less work. Others
    (DINOv2 attends over the whole image) run on the whole template."""
    p = extractor.patch_size
    reach = getattr(extractor, "reach_px", None)
    if reach is None or not keep.any():
        return extractor(rgb).reshape(-1, extractor.dim)[keep]
    side_y, side_x = rgb.shape[0] // p, rgb.shape[1] // p
    ys, xs = np.nonzero(mask)
    # 2 px more for anti-aliased edge pixels, whose centre sample (the mask's) missed the object
    lo_y, lo_x = (max(0, (v - reach - 2) // p) for v in (ys.min(), xs.min()))
    hi_y = min(side_y, -(-(ys.max() + reach + 3) // p))
    hi_x = min(side_x, -(-(xs.max() + reach + 3) // p))
    window = keep.reshape(side_y, side_x)[lo_y:hi_y, lo_x:hi_x]
    if window.sum() != keep.sum():  # a kept patch off the object's box: no shortcut
        return extractor(rgb).reshape(-1, extractor.dim)[keep]
    features = extractor(np.ascontiguousarray(rgb[lo_y * p:hi_y * p, lo_x * p:hi_x * p]))
    return features[window]
