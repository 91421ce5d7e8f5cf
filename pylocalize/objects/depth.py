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
RGB method's hypotheses) by :func:`depth_agreement`. The benchmark also uses them to give the
real frame a pose reference fitted to its measured depth.

With an RGB-D camera: ``pose, agreement = estimate_with_depth(rep, mesh, image, K, depth,
bbox=box)`` (``pylocalize objects estimate --depth``).
"""

from __future__ import annotations

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
    extent = float(mesh.extent)
    threshold = 0.1 * extent if max_distance is None else float(max_distance)
    floor = 0.01 * extent if min_distance is None else float(min_distance)
    renderer = _renderer(depth, K)
    t = _along_the_ray_to_the_depth(renderer, mesh, depth, R, t)
    cloud = _measured_points(depth, K)
    run, share = 0, 0.0
    while run < iterations:
        model, camera, normals, pixels = _visible_surface(renderer, mesh, R, t)
        radius = int(np.clip(np.ceil(threshold * K[0, 0] / max(float(np.median(camera[:, 2])), 1e-9)), 1, 6)) \
            if len(camera) else 1
        measured, distance = _nearest_in_window(cloud, camera, pixels, radius)
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
        if moved < 1e-4 * extent:
            break
    return DepthFit(R, t, share, threshold, run)


def depth_agreement(mesh, K, depth, R, t, tolerance: float) -> float:
    """Share of the model's visible pixels at ``[R | t]`` that have a measured depth whose
    rendered depth lies within ``tolerance`` (mesh units) of it; 0 where none has one."""
    depth, K, R, t = _checked(depth, K, R, t)
    return _agreement(_renderer(depth, K), mesh, depth, R, t, tolerance)


def pose_from_depth(mesh, K, depth, starts, tolerance: Optional[float] = None, num_fits: int = 3,
                    iterations: int = 30) -> Optional[Tuple[DepthFit, float]]:
    """The pose among several starts (``(R, t)`` pairs: an RGB method's hypotheses) that the
    measured depth supports best: every start moved along its ray onto the depth and scored
    by :func:`depth_agreement` within ``tolerance`` (default: 5 % of the model's extent), the
    best ``num_fits`` refined (:func:`refine_with_depth`), and the fit that agrees best
    returned with its agreement; None when no start meets the measured depth. Cheap scoring
    first: a fit from a wrong start runs all its iterations."""
    tolerance = 0.05 * float(mesh.extent) if tolerance is None else float(tolerance)
    renderer, scored = None, []
    for R, t in starts:
        depth, K, R, t = _checked(depth, K, R, t)
        renderer = renderer or _renderer(depth, K)
        t = _along_the_ray_to_the_depth(renderer, mesh, depth, R, t)
        scored.append((_agreement(renderer, mesh, depth, R, t, tolerance), R, t))
    scored.sort(key=lambda s: -s[0])
    best = None
    for agreement, R, t in scored[:num_fits]:
        if agreement == 0.0:
            break
        fit = refine_with_depth(mesh, K, depth, R, t, iterations=iterations)
        fitted = _agreement(renderer, mesh, depth, fit.R, fit.t, tolerance)
        if best is None or fitted > best[1]:
            best = (fit, fitted)
    return best


# RGB-D estimation scores more PnP hypotheses than RGB alone: the depth, not the
# featuremetric cost, picks among them (the real LINEMOD frame's 17 warps: 13 within 15
# degrees and 30 px from 10 hypotheses, 12 from 5; benchmarks/README.md)
RGBD_TEMPLATES = 10


def estimate_with_depth(rep, mesh, image, K, depth, **estimate_options):
    """The object's pose in an RGB-D frame (``depth`` registered to ``image``, in the mesh's
    units): :meth:`ObjectRepresentation.estimate
    <pylocalize.objects.ObjectRepresentation.estimate>` on the colour image (with
    ``RGBD_TEMPLATES`` hypotheses unless ``num_templates`` is given), then the hypothesis the
    measured depth supports best, fitted to it (:func:`pose_from_depth`). Returns the
    estimate with ``R, t`` replaced by the fit, and the fit's depth agreement (None, and the
    RGB pose, where no hypothesis meets the depth)."""
    estimate_options.setdefault("num_templates", RGBD_TEMPLATES)
    result = rep.estimate(image, K, **estimate_options)
    if not result.success:
        return result, None
    best = pose_from_depth(mesh, K, depth, [(result.R, result.t)] + [(h.R, h.t) for h in result.hypotheses])
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


def _renderer(depth, K):
    from pylocalize.render import Renderer

    return Renderer(depth.shape[1], depth.shape[0], K, shading="unlit")


def _agreement(renderer, mesh, depth, R, t, tolerance: float) -> float:
    """:func:`depth_agreement` with a renderer made once for many poses."""
    out = renderer.render(mesh, np.c_[R, t], outputs=("mask", "depth"))
    seen = np.squeeze(out.mask, 0) & (depth > 0)
    if not seen.any():
        return 0.0
    return float((np.abs(np.squeeze(out.depth, 0)[seen] - depth[seen]) < tolerance).mean())


def _along_the_ray_to_the_depth(renderer, mesh, depth, R, t) -> np.ndarray:
    """``t`` moved along its viewing ray by the median gap between the measured and the
    rendered depth under the model: RGB poses err most in distance (a tenth of it is common),
    beyond the reach of nearest-point pairing; moving along the ray keeps the projection."""
    out = renderer.render(mesh, np.c_[R, t], outputs=("mask", "depth"))
    seen = np.squeeze(out.mask, 0) & (depth > 0)
    if not seen.any() or t[2] <= 0:
        return t
    gap = float(np.median(depth[seen] - np.squeeze(out.depth, 0)[seen]))
    return t * (1.0 + gap / t[2])


def _measured_points(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """The depth image back-projected: camera-frame points (H, W, 3) float64, NaN where the
    depth is unknown."""
    h, w = depth.shape
    v, u = np.mgrid[0:h, 0:w]
    z = np.where(depth > 0, depth, np.nan).astype(np.float64)
    return np.stack([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z], -1)


def _visible_surface(renderer, mesh, R, t, max_points: int = 1500):
    """The model's visible surface at ``[R | t]``: model points, the same in the camera
    frame, their camera-frame normals (float64) and their pixels (int, x then y); at most
    ``max_points``, evenly strided."""
    out = renderer.render(mesh, np.c_[R, t], outputs=("mask", "xyz", "normals"))
    v, u = np.nonzero(np.squeeze(out.mask, 0))
    step = max(1, len(v) // max_points)
    v, u = v[::step], u[::step]
    model = np.squeeze(out.xyz, 0)[v, u].astype(np.float64)
    normals = np.squeeze(out.normals, 0)[v, u].astype(np.float64)
    return model, model @ R.T + t, normals, np.c_[u, v]


def _nearest_in_window(cloud: np.ndarray, points: np.ndarray, pixels: np.ndarray, radius: int):
    """For each camera-frame point, the nearest measured point among the pixels within
    ``radius`` of its own (the depth image is a grid: a window stands in for a search tree)
    and the distance to it; inf where the window holds no measurement."""
    h, w = cloud.shape[:2]
    offsets = np.arange(-radius, radius + 1)
    du, dv = (a.ravel() for a in np.meshgrid(offsets, offsets))
    uu = np.clip(pixels[:, :1] + du, 0, w - 1)
    vv = np.clip(pixels[:, 1:] + dv, 0, h - 1)
    candidates = cloud[vv, uu]  # (n, window, 3)
    squared = np.sum((candidates - points[:, None, :]) ** 2, axis=-1)
    squared = np.where(np.isnan(squared), np.inf, squared)
    best = np.argmin(squared, axis=1) if len(points) else np.zeros(0, int)
    rows = np.arange(len(points))
    return np.nan_to_num(candidates[rows, best]), np.sqrt(squared[rows, best])


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
    # a motion the planes do not see (along the edge where two faces of a box meet) gets no
    # step: left to the cut-off, noise would move the pose metres along it
    step = np.linalg.lstsq(J * weight[:, None], -residual * weight, rcond=1e-6)[0]
    return step[:3], step[3:]


__all__ = ["DepthFit", "RGBD_TEMPLATES", "depth_agreement", "estimate_with_depth", "pose_from_depth",
           "refine_with_depth"]
