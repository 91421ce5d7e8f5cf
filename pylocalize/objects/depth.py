"""Pose refinement on a measured depth image (RGB-D cameras): ICP of the model's visible
surface onto the measured points.

Where a depth image comes with the photo, the depth pins the object's distance and attitude
far better than the RGB path's patch matches can: a PnP pose that is right in rotation can
still be 10 % too near (benchmarks/README.md, the real LINEMOD frame). :func:`refine_with_depth`
renders the model at the current pose (so only its visible surface takes part), pairs each
visible model point with the nearest measured point around the object (the core's exact
kNN), drops pairs farther apart than a threshold that shrinks as the fit converges
(occluders, background, holes), and moves the pose by the point-to-plane least-squares
step. The benchmark also uses it to give the real frame a pose reference fitted to its
measured depth.

With an RGB-D camera, after the RGB estimate (``pylocalize objects estimate --depth`` does
this)::

    pose = rep.estimate(image, K, bbox=box)
    starts = [(pose.R, pose.t)] + [(h.R, h.t) for h in pose.hypotheses]
    fit, agreement = pose_from_depth(mesh, K, depth_mm, starts)
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import numpy as np

from pylocalize.index.knn import assign
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
    run, share = 0, 0.0
    while run < iterations:
        model, camera, normals, measured = _surface_and_measurements(renderer, mesh, K, depth, R, t)
        if len(model) == 0 or len(measured) == 0:
            if run == 0:
                raise ValueError("the model at the starting pose meets no measured depth: start from a pose that "
                                 "overlaps the object in the depth image")
            break  # a fit from a poor start that drifted off the measurements: its last pose
        nearest, squared = assign(camera, measured, 1)
        distance = np.sqrt(squared)
        keep = distance < threshold
        share = float(keep.mean())
        if keep.sum() < 3:
            break
        run += 1
        centre = camera[keep].mean(0).astype(np.float64)
        omega, tau = _point_to_plane_step(camera[keep] - centre, normals[keep], measured[nearest[keep]] - centre,
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


def _surface_and_measurements(renderer, mesh, K, depth, R, t, max_points: int = 4000):
    """The model's visible surface at ``[R | t]`` (model points float64, the same in the
    camera frame float32, and their camera-frame normals; at most ``max_points``, evenly
    strided) and the measured 3D points (camera frame, float32) in the rendered box grown by
    half its size on each side."""
    out = renderer.render(mesh, np.c_[R, t], outputs=("mask", "xyz", "normals"))
    v, u = np.nonzero(np.squeeze(out.mask, 0))
    if len(v) == 0:
        empty = np.zeros((0, 3), np.float32)
        return empty, empty, empty, empty
    step = max(1, len(v) // max_points)
    model = np.squeeze(out.xyz, 0)[v[::step], u[::step]].astype(np.float64)
    camera = (model @ R.T + t).astype(np.float32)
    normals = np.squeeze(out.normals, 0)[v[::step], u[::step]].astype(np.float64)
    h, w = depth.shape
    grow_u, grow_v = (u.max() - u.min()) // 2 + 1, (v.max() - v.min()) // 2 + 1
    u0, u1 = max(0, u.min() - grow_u), min(w, u.max() + grow_u + 1)
    v0, v1 = max(0, v.min() - grow_v), min(h, v.max() + grow_v + 1)
    mv, mu = np.nonzero(depth[v0:v1, u0:u1] > 0)
    mv, mu = mv + v0, mu + u0
    z = depth[mv, mu].astype(np.float64)
    measured = np.c_[(mu - K[0, 2]) * z / K[0, 0], (mv - K[1, 2]) * z / K[1, 1], z].astype(np.float32)
    return model, camera, normals, measured


def _point_to_plane_step(points: np.ndarray, normals: np.ndarray, targets: np.ndarray, scale: float):
    """The small motion ``(omega, tau)`` (a rotation vector and a translation, applied on the
    left in the camera frame) that best moves each surface point along its normal onto the
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


__all__ = ["DepthFit", "depth_agreement", "pose_from_depth", "refine_with_depth"]
