"""Pose refinement on a measured depth image (RGB-D cameras): ICP of the model's visible
surface onto the measured points.

Where a depth image comes with the photo, the depth pins the object's distance and attitude
far better than the RGB path's patch matches can: a PnP pose that is right in rotation can
still be 10 % too near (benchmarks/README.md, the real LINEMOD frame). :func:`refine_with_depth`
renders the model at the current pose (so only its visible surface takes part), pairs each
visible model point with the nearest measured point in a window around its pixel (the depth
image is a grid, so no search tree is needed), drops pairs farther apart than a threshold
that shrinks as the fit converges (occluders, background, holes), and moves the pose by the
point-to-plane least-squares step. :func:`pose_from_depth` picks among several starts (an
RGB method's hypotheses) by :func:`depth_agreement` after a coarse fit of each, inside the
object's region (:func:`object_region`: a face of a box fits any wall or table behind it),
ties going to the start given first. The benchmark also uses them to give the real frame a
pose reference fitted to its measured depth.

Speed (0.3 s for 10 starts on 2 cores): each step renders only the window of the depth
image around the object, the mesh simplified to about ``FIT_TRIANGLES`` triangles (a
scanned model's 50,000 would make rendering most of the time), and solves its 6x6 normal
equations without BLAS.

With an RGB-D camera: ``pose, agreement = estimate_with_depth(rep, mesh, image, K, depth,
bbox=box)`` (``pylocalize objects estimate --depth``).
"""

from __future__ import annotations

import time
from typing import NamedTuple, Optional, Tuple

import numpy as np

from pylocalize.objects.refine import _rotation


class DepthFit(NamedTuple):
    """Outcome of :func:`refine_with_depth`.

    R, t : the refined ``cam_from_model``, translation in the mesh's units.
    inlier_share : share of the model's visible surface points whose nearest measured point
        lies within ``threshold``, at the last pairing.
    threshold : the final pairing threshold, in the mesh's units.
    iterations : ICP iterations run.
    """

    R: np.ndarray
    t: np.ndarray
    inlier_share: float
    threshold: float
    iterations: int


def refine_with_depth(mesh, K, depth, R, t, iterations: int = 30, max_distance: Optional[float] = None,
                      min_distance: Optional[float] = None) -> DepthFit:
    """Refines ``cam_from_model = [R | t]`` so that the rendered model meets ``depth``.

    Parameters
    ----------
    mesh : pylocalize.render.Mesh
    K : float (3, 3), OpenCV convention
    depth : (H, W) measured depth along the optical axis in the mesh's units, 0 where unknown
    R, t : the starting pose; it must overlap the object (ICP converges locally).
    max_distance : float, optional
        Pairs farther apart are dropped at the start (default: a tenth of the model's
        extent). The threshold then follows three times the median distance of the kept
        pairs, never below ``min_distance`` (default: a hundredth of the extent).

    Raises ``ValueError`` for a depth image that is not 2D, a pose of the wrong shape, or a
    start where the rendered model meets no measured depth."""
    depth, K, R, t = _checked(depth, K, R, t)
    return _fit(_shape_of(mesh), float(mesh.extent), depth, K, R, t, iterations, max_distance, min_distance)


def _fit(mesh, extent: float, depth, K, R, t, iterations: int, max_distance: Optional[float],
         min_distance: Optional[float], max_points: int = 1500) -> DepthFit:
    """:func:`refine_with_depth` on checked inputs and the shape the fit renders; ``extent``
    is the full model's."""
    threshold = 0.1 * extent if max_distance is None else float(max_distance)
    floor = 0.01 * extent if min_distance is None else float(min_distance)
    t = _along_the_ray_to_the_depth(mesh, depth, K, R, t)
    run, share = 0, 0.0
    while run < iterations:
        window = _Window.around(mesh, depth, K, R, t, pad=MAX_RADIUS + 1)
        model, camera, normals, pixels = _visible_surface(window, mesh, R, t, max_points)
        radius = int(np.clip(np.ceil(threshold * K[0, 0] / max(float(np.median(camera[:, 2])), 1e-9)), 1,
                             MAX_RADIUS)) if len(camera) else 1
        measured, distance = _nearest_in_window(_measured_points(window.depth, window.K), camera, pixels, radius)
        if not np.isfinite(distance).any():
            if run == 0:
                raise ValueError("the model at the starting pose meets no measured depth: start from a pose that "
                                 "overlaps the object in the depth image")
            break  # a fit from a poor start that drifted off the measurements: its last pose
        keep = distance < threshold
        share = float(keep.mean())
        if keep.sum() < 3:
            break
        run += 1
        centre = camera[keep].mean(0)
        omega, tau = _point_to_plane_step(camera[keep] - centre, normals[keep], measured[keep] - centre,
                                          threshold / 3)
        dR = _rotation(omega)  # about the surface's centre: far better conditioned than about the camera
        R, t = dR @ R, dR @ (t - centre) + centre + tau
        moved = np.linalg.norm(omega) * extent + np.linalg.norm(tau)
        threshold = min(threshold, max(floor, 3.0 * float(np.median(distance[keep]))))
        if moved < 1e-3 * extent:
            break
    return DepthFit(R, t, share, threshold, run)


def depth_agreement(mesh, K, depth, R, t, tolerance: float, region: Optional[np.ndarray] = None) -> float:
    """Share of the model's visible pixels at ``[R | t]`` that have a measured depth whose
    rendered depth lies within ``tolerance`` (mesh units) of it; 0 where none has one. A
    measure: the full mesh, where the fits rank their poses on its simplified shape.

    ``region`` (bool (H, W), optional): where the object can be (:func:`object_region`);
    the model's pixels outside it count as disagreeing, whatever the depth there."""
    depth, K, R, t = _checked(depth, K, R, t)
    return _agreement(mesh, depth, K, R, t, tolerance, _checked_region(region, depth))


def object_region(shape, mask: Optional[np.ndarray] = None, bbox=None, margin: float = 0.1) -> Optional[np.ndarray]:
    """Where an object given by its 2D ``mask`` or ``bbox`` (x, y, w, h) can be in an image
    of ``shape`` (H, W): its box grown by ``margin`` of its size and 2 px on every side
    (the box of the mask, so that the parts an occluder hides stay in); None when neither
    is given. A measured depth alone cannot tell the object from the scene: a face of a
    box fits any wall or table, and without the region a fit slides there."""
    if mask is not None:
        from pylocalize.objects.evaluate import mask_box

        box = mask_box(np.asarray(mask))
        bbox = box if box[2] > 0 else None
    if bbox is None:
        return None
    x, y, w, h = (float(v) for v in bbox)
    grow_x, grow_y = margin * w + 2, margin * h + 2
    region = np.zeros(shape[:2], bool)
    region[max(0, int(np.floor(y - grow_y))):max(0, int(np.ceil(y + h + grow_y))),
           max(0, int(np.floor(x - grow_x))):max(0, int(np.ceil(x + w + grow_x)))] = True
    return region


def _checked_region(region, depth: np.ndarray) -> Optional[np.ndarray]:
    if region is None:
        return None
    region = np.asarray(region, bool)
    if region.shape != depth.shape:
        raise ValueError(f"region must be a mask of the depth image's shape {depth.shape}, got {region.shape}")
    return region


# pose_from_depth's stages: (iterations, surface points) of the coarse fit every scored
# start gets, and how many of the best coarse fits are fitted in full. A start's own
# agreement ranks poorly (the right view can start 10 % off in distance and a few degrees
# off in rotation); six steps on 400 points bring it near enough to rank, at a twentieth
# of a full fit's cost (the real LINEMOD frame's 17 warps: 16 right from 8 coarse fits and
# 2 full ones in 0.29 s, 14 from 3 full fits in 0.27 s; benchmarks/README.md).
COARSE_FIT = (6, 400)
FULL_FITS = 2
# agreements closer than this are a tie, which goes to the start given first (the RGB
# method's own choice): where an occluder hides what tells a can from its turned self, both
# poses agree with the depth on the same pixels, and the colour image had a reason
TIE = 0.01


def pose_from_depth(mesh, K, depth, starts, tolerance: Optional[float] = None, num_fits: int = 8,
                    iterations: int = 30, region: Optional[np.ndarray] = None) -> Optional[Tuple[DepthFit, float]]:
    """The pose among several starts (``(R, t)`` pairs: an RGB method's hypotheses) that the
    measured depth supports best. Every start is moved along its ray onto the depth and
    scored by :func:`depth_agreement` within ``tolerance`` (default: 5 % of the model's
    extent); the best ``num_fits`` get a coarse fit (``COARSE_FIT``), the ``FULL_FITS``
    that then agree best a full one (:func:`refine_with_depth`), and the full fit that
    agrees best is returned with its agreement; None when no start meets the measured
    depth. With a ``region`` (:func:`object_region`) the fits pair only measurements inside
    it and the agreements count the model's pixels outside it as disagreeing."""
    full, extent = mesh, float(mesh.extent)
    tolerance = 0.05 * extent if tolerance is None else float(tolerance)
    mesh = _shape_of(full)
    depth, K = _checked(depth, K, np.eye(3), np.zeros(3))[:2]
    region = _checked_region(region, depth)
    measured = depth if region is None else np.where(region, depth, 0.0).astype(np.float32)  # what the fits pair
    scored = []
    for order, (R, t) in enumerate(starts):
        R, t = _checked(depth, K, R, t)[2:]
        t = _along_the_ray_to_the_depth(mesh, measured, K, R, t)
        scored.append((_agreement(mesh, depth, K, R, t, tolerance, region), order, DepthFit(R, t, 0.0, 0.0, 0)))
    coarse = []
    for agreement, order, start in _ranked(scored)[:num_fits]:
        if agreement == 0.0:
            break
        fit = _fit(mesh, extent, measured, K, start.R, start.t, COARSE_FIT[0], None, None, COARSE_FIT[1])
        coarse.append((_agreement(mesh, depth, K, fit.R, fit.t, tolerance, region), order, fit))
    full_fits = []
    for _, order, start in _ranked(coarse)[:FULL_FITS]:
        fit = _fit(mesh, extent, measured, K, start.R, start.t, iterations, None, None)
        full_fits.append((_agreement(mesh, depth, K, fit.R, fit.t, tolerance, region), order, fit))
    if not full_fits:
        return None
    agreement, _, best = _ranked(full_fits)[0]
    if mesh is not full:
        agreement = _agreement(full, depth, K, best.R, best.t, tolerance, region)  # measured on the full mesh
    return best, agreement


def _ranked(candidates) -> list:
    """``(agreement, order, fit)`` candidates best first: by agreement, except that the
    earliest start among those within ``TIE`` of the best comes first."""
    by_agreement = sorted(candidates, key=lambda c: (-c[0], c[1]))
    if not by_agreement:
        return []
    first = min((c for c in by_agreement if c[0] >= by_agreement[0][0] - TIE), key=lambda c: c[1])
    return [first] + [c for c in by_agreement if c is not first]


# RGB-D estimation scores more PnP hypotheses than RGB alone: the depth, not the
# featuremetric cost, picks among them (the real LINEMOD frame's 17 warps: 16 within 15
# degrees and 30 px from 10 hypotheses, as from 15; benchmarks/README.md)
RGBD_TEMPLATES = 10


def estimate_with_depth(rep, mesh, image, K, depth, **estimate_options):
    """The object's pose in an RGB-D frame (``depth`` registered to ``image``, in the mesh's
    units): :meth:`ObjectRepresentation.estimate
    <pylocalize.objects.ObjectRepresentation.estimate>` on the colour image (with
    ``RGBD_TEMPLATES`` hypotheses unless ``num_templates`` is given, and no featuremetric
    refinement unless ``refine=True``), then the hypothesis the
    measured depth supports best within the object's region (the given mask's or box's,
    :func:`object_region`), fitted to it (:func:`pose_from_depth`). Returns the estimate
    with ``R, t`` replaced by the fit, and the fit's depth agreement (None, and the RGB
    pose, where no hypothesis meets the depth)."""
    estimate_options.setdefault("num_templates", RGBD_TEMPLATES)
    # the featuremetric refinement would only move the first start, which the depth fit moves anyway
    estimate_options.setdefault("refine", False)
    result = rep.estimate(image, K, **estimate_options)
    if not result.success:
        return result, None
    start = time.perf_counter()
    region = object_region(np.shape(depth), estimate_options.get("mask"), estimate_options.get("bbox"))
    best = pose_from_depth(mesh, K, depth, [(result.R, result.t)] + [(h.R, h.t) for h in result.hypotheses],
                           region=region)
    result.timings["depth_fit"] = time.perf_counter() - start
    if best is None:
        return result, None
    fit, agreement = best
    result.R, result.t = fit.R, fit.t
    return result, agreement


def _checked(depth, K, R, t):
    """The inputs as float32 depth and float64 K, R, t, or ``ValueError`` naming the one
    whose shape is wrong."""
    depth = np.asarray(depth, np.float32)
    if depth.ndim != 2:
        raise ValueError(f"depth must be an (H, W) image, got shape {depth.shape}")
    K = np.asarray(K, np.float64)
    R, t = np.asarray(R, np.float64), np.asarray(t, np.float64).reshape(-1)
    if K.shape != (3, 3) or R.shape != (3, 3) or t.shape != (3,):
        raise ValueError(f"K and R must be 3x3 and t of length 3, got {K.shape}, {R.shape}, {t.shape}")
    return depth, K, R, t


# triangles kept for the fits: rendering costs time per triangle (about 65 ns here), and a
# scanned model's 50,000 would make rendering most of a fit's time
FIT_TRIANGLES = 10_000


def _shape_of(mesh):
    """``mesh`` with at most about ``FIT_TRIANGLES`` triangles (:meth:`Mesh.simplified
    <pylocalize.render.Mesh.simplified>` on a grid sized from its area), kept on the mesh
    for the next call while its vertices and faces stay the same arrays."""
    if len(mesh.faces) <= FIT_TRIANGLES:
        return mesh
    cached = mesh.__dict__.get("_fit_shape")
    if cached is not None and cached[0] is mesh.vertices and cached[1] is mesh.faces:
        return cached[2]
    v = mesh.vertices.astype(np.float64)[mesh.faces]
    area = 0.5 * np.linalg.norm(np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]), axis=1).sum()
    if not area > 0:
        return mesh  # no surface to simplify (every triangle degenerate): rendered as it is
    # a clustering grid of cell c leaves about 2 area / c^2 triangles on a surface
    shape = mesh.simplified(float(np.sqrt(2.0 * area / FIT_TRIANGLES)))
    mesh.__dict__["_fit_shape"] = (mesh.vertices, mesh.faces, shape)
    return shape


def _box_corners(mesh) -> np.ndarray:
    """The 8 corners of the mesh's bounding box (float64 (8, 3)), kept on the mesh as
    :func:`_shape_of` keeps its shape: every step of every fit asks for them."""
    cached = mesh.__dict__.get("_box_corners")
    if cached is not None and cached[0] is mesh.vertices:
        return cached[1]
    lo, hi = mesh.vertices.min(0).astype(np.float64), mesh.vertices.max(0).astype(np.float64)
    corners = np.stack(np.meshgrid(*zip(lo, hi), indexing="ij"), -1).reshape(-1, 3)
    mesh.__dict__["_box_corners"] = (mesh.vertices, corners)
    return corners


# the widest window (pixels each side) searched for a model point's nearest measurement
MAX_RADIUS = 6


class _Window(NamedTuple):
    """The part of the depth image around the model at one pose, where a step of a fit
    looks: the crop, the intrinsics that map into it, and a renderer of its size. A VGA
    frame is mostly background: rendering and pairing the object's box alone makes a fit
    several times faster and changes nothing inside it."""

    depth: np.ndarray
    K: np.ndarray
    renderer: object
    rows: slice
    columns: slice

    @classmethod
    def around(cls, mesh, depth, K, R, t, pad: int = 0) -> "_Window":
        """The window over the model's bounding box projected at ``[R | t]``, grown by
        ``pad`` pixels on every side and clipped to the image; the whole image where a
        corner of the box lies behind the camera or the box misses the image."""
        from pylocalize.render import Renderer

        h, w = depth.shape
        corners = _box_corners(mesh) @ R.T + t
        x0, y0, x1, y1 = 0, 0, w, h
        if (corners[:, 2] > 0).all():
            pixels = corners @ K.T
            pixels = pixels[:, :2] / pixels[:, 2:]
            (u0, v0), (u1, v1) = np.floor(pixels.min(0)) - pad, np.ceil(pixels.max(0)) + pad + 1
            box = int(np.clip(u0, 0, w)), int(np.clip(v0, 0, h)), int(np.clip(u1, 0, w)), int(np.clip(v1, 0, h))
            if box[2] > box[0] and box[3] > box[1]:
                x0, y0, x1, y1 = box
        K = K.copy()
        K[0, 2] -= x0
        K[1, 2] -= y0
        rows, columns = slice(y0, y1), slice(x0, x1)
        return cls(depth[rows, columns], K, Renderer(x1 - x0, y1 - y0, K, shading="unlit"), rows, columns)


def _depths_under_the_model(mesh, depth, K, R, t, region: Optional[np.ndarray] = None):
    """The rendered and the measured depth at the model's pixels at ``[R | t]`` that have a
    measurement and lie in ``region`` (two 1-D arrays, empty where none has one), and how
    many of the model's pixels lie outside ``region`` (0 without one)."""
    window = _Window.around(mesh, depth, K, R, t)
    out = window.renderer.render(mesh, np.c_[R, t], outputs=("mask", "depth"))
    model = np.squeeze(out.mask, 0)
    outside = 0
    if region is not None:
        inside = region[window.rows, window.columns]
        outside = int((model & ~inside).sum())
        model = model & inside
    seen = model & (window.depth > 0)
    return np.squeeze(out.depth, 0)[seen], window.depth[seen], outside


def _agreement(mesh, depth, K, R, t, tolerance: float, region: Optional[np.ndarray] = None) -> float:
    """:func:`depth_agreement` on checked inputs."""
    rendered, measured, outside = _depths_under_the_model(mesh, depth, K, R, t, region)
    counted = len(rendered) + outside
    return float((np.abs(rendered - measured) < tolerance).sum() / counted) if counted else 0.0


def _along_the_ray_to_the_depth(mesh, depth, K, R, t) -> np.ndarray:
    """``t`` moved along its viewing ray by the median gap between the measured and the
    rendered depth under the model: RGB poses err most in distance (a tenth of it is common),
    beyond the reach of nearest-point pairing; moving along the ray keeps the projection."""
    rendered, measured, _ = _depths_under_the_model(mesh, depth, K, R, t)
    if not len(rendered) or t[2] <= 0:
        return t
    return t * (1.0 + float(np.median(measured - rendered)) / t[2])


def _measured_points(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """The depth image back-projected: camera-frame points (H, W, 3) float32, inf where the
    depth is unknown (so that no distance to them is ever the nearest)."""
    h, w = depth.shape
    v, u = np.mgrid[0:h, 0:w]
    z = depth.astype(np.float64)
    points = np.stack([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z], -1).astype(np.float32)
    points[~(depth > 0)] = np.inf
    return points


def _visible_surface(window: _Window, mesh, R, t, max_points: int = 1500):
    """The model's visible surface at ``[R | t]`` in ``window``: model points, the same in
    the camera frame, their camera-frame normals (float64) and their pixels in the window
    (int, x then y); at most ``max_points``, evenly strided."""
    out = window.renderer.render(mesh, np.c_[R, t], outputs=("mask", "xyz", "normals"))
    v, u = np.nonzero(np.squeeze(out.mask, 0))
    step = max(1, len(v) // max_points)
    v, u = v[::step], u[::step]
    model = np.squeeze(out.xyz, 0)[v, u].astype(np.float64)
    normals = np.squeeze(out.normals, 0)[v, u].astype(np.float64)
    return model, model @ R.T + t, normals, np.c_[u, v]


def _nearest_in_window(cloud: np.ndarray, points: np.ndarray, pixels: np.ndarray, radius: int):
    """For each camera-frame point, the nearest measured point among the pixels within
    ``radius`` of its own (the depth image is a grid: a window stands in for a search tree)
    and the distance to it; inf where the window holds no measurement. Wide windows are
    searched on every second pixel: they serve the first steps, when the pairs are coarse
    anyway, and cost a quarter as much."""
    h, w = cloud.shape[:2]
    offsets = np.arange(-radius, radius + 1, 1 + radius // 4)
    du, dv = (a.ravel() for a in np.meshgrid(offsets, offsets))
    uu = np.clip(pixels[:, :1] + du, 0, w - 1)
    vv = np.clip(pixels[:, 1:] + dv, 0, h - 1)
    candidates = cloud[vv, uu]  # (n, window, 3)
    gap = candidates - points[:, None, :].astype(cloud.dtype)
    squared = np.einsum("ijk,ijk->ij", gap, gap)  # inf where unmeasured (the cloud holds inf there)
    best = np.argmin(squared, axis=1) if len(points) else np.zeros(0, int)
    rows = np.arange(len(points))
    distance = np.sqrt(squared[rows, best]).astype(np.float64)
    return np.where(np.isfinite(distance)[:, None], candidates[rows, best], 0.0), distance


def _point_to_plane_step(points: np.ndarray, normals: np.ndarray, targets: np.ndarray, scale: float):
    """The small motion ``(omega, tau)`` (a rotation vector about the points' origin, which the
    caller puts at their centre, and a translation, in the camera frame) that best moves each
    surface point along its normal onto the
    plane through its paired measurement: point-to-plane, which lets flat faces slide into
    place where point-to-point pairs hold them back. Residuals are weighted by the Cauchy
    loss of ``scale``: pairs with an occluder or the background, still inside the pairing
    threshold early on, then pull far less than the object's own surface."""
    p = points.astype(np.float64)
    residual = np.einsum("ij,ij->i", normals, p - targets)
    weight = np.sqrt(1.0 / (1.0 + (residual / scale) ** 2))
    J = np.c_[np.cross(p, normals), normals]
    # The 6x6 normal equations by einsum, not lstsq on the n x 6 system: BLAS threads left
    # spinning after a call slow the renderer's own threads between steps 4x on 2 cores.
    Jw = J * weight[:, None]
    A = np.einsum("ni,nj->ij", Jw, Jw)
    b = -np.einsum("ni,n->i", Jw, residual * weight)
    # a motion the planes do not see (along the edge where two faces of a box meet) gets no
    # step: left to the cut-off, noise would move the pose metres along it (the
    # pseudo-inverse of lstsq's rcond=1e-6, in squared singular values)
    values, vectors = np.linalg.eigh(A)
    seen = values > 1e-12 * max(float(values[-1]), 0.0)
    step = vectors[:, seen] @ ((vectors[:, seen].T @ b) / values[seen])
    return step[:3], step[3:]


__all__ = ["DepthFit", "RGBD_TEMPLATES", "depth_agreement", "estimate_with_depth", "object_region", "pose_from_depth",
           "refine_with_depth"]
