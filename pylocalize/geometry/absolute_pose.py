"""Absolute camera pose from 2D-3D correspondences: the one PnP of the project.

Both cameras in a map (localization) and objects in front of a camera (object pose) are
posed here, with one convention: 2D points in OpenCV pixels (centres at integer
coordinates), 3D points in the world (or model) frame, the result ``cam_from_world``
as a 3x4 ``[R | t]``. The solver is pycolmap's LO-RANSAC over P3P minimal samples followed
by a robust non-linear refinement, a well-kept implementation that handles every COLMAP
camera model (distortion included); only the pixel convention is translated here
(COLMAP puts pixel centres at ``+0.5``). Refinement from a prior alone
(:func:`refine_absolute_pose`, a tracker's every frame) is our own Gauss-Newton: the same
robust cost, at a tenth of pycolmap's fixed cost per call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

from pylocalize.geometry.camera import Camera
from pylocalize.geometry.poses import so3_exp


@dataclass
class AbsolutePose:
    """A pose that LO-RANSAC found.

    Attributes
    ----------
    cam_from_world : float64 (3, 4)
        ``x_cam = R @ x_world + t``.
    inlier_mask : bool (n,)
        Which correspondences agree with the pose within the error threshold.
    covariance : float64 (6, 6) or None
        Pose covariance (rotation then translation, pycolmap's order), when asked for.
    camera : Camera or None
        The camera with its estimated focal length, when the focal length was estimated.
    """

    cam_from_world: np.ndarray
    inlier_mask: np.ndarray
    covariance: Optional[np.ndarray] = None
    camera: Optional[Camera] = None

    @property
    def num_inliers(self) -> int:
        return int(self.inlier_mask.sum())

    @property
    def R(self) -> np.ndarray:
        return self.cam_from_world[:, :3]

    @property
    def t(self) -> np.ndarray:
        return self.cam_from_world[:, 3]


def _as_points(points, dim: int, name: str) -> np.ndarray:
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != dim:
        raise ValueError(f"{name} must have shape (n, {dim}), got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or Inf: drop those correspondences first")
    return np.ascontiguousarray(array)


def _check_trials_and_confidence(max_trials, confidence) -> None:
    if max_trials is not None and int(max_trials) < 1:
        raise ValueError(f"max_trials must be >= 1, got {max_trials}")
    if confidence is not None and not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _ransac_options(options, max_trials, min_trials, confidence, min_inlier_ratio, seed) -> None:
    """Sets the RANSAC options that were given on pycolmap's ``RANSACOptions``, checked."""
    _check_trials_and_confidence(max_trials, confidence)
    if max_trials is not None:
        options.max_num_trials = int(max_trials)
    if min_trials is not None:
        if int(min_trials) < 0:
            raise ValueError(f"min_trials must be >= 0, got {min_trials}")
        options.min_num_trials = int(min_trials)
    if options.min_num_trials > options.max_num_trials:
        # pycolmap would run max_trials anyway; a caller who caps the trials means the cap
        options.min_num_trials = options.max_num_trials
    if confidence is not None:
        options.confidence = float(confidence)
    if min_inlier_ratio is not None:
        if not 0 < min_inlier_ratio <= 1:
            raise ValueError(f"min_inlier_ratio must be in (0, 1], got {min_inlier_ratio}")
        options.min_inlier_ratio = float(min_inlier_ratio)
    if seed is not None:
        if int(seed) < 0:
            raise ValueError(f"seed must be >= 0 (None: a random seed per call), got {seed}")
        options.random_seed = int(seed)


METHODS = ("lo-ransac", "epnp")


def estimate_absolute_pose(points2D, points3D, camera: Union[Camera, np.ndarray],
                           max_error_px: float = 4.0, *, image_size=None, covariance: bool = False,
                           max_trials: Optional[int] = None, min_trials: Optional[int] = None,
                           confidence: Optional[float] = None, min_inlier_ratio: Optional[float] = None,
                           seed: Optional[int] = None, loss_scale_px: Optional[float] = None,
                           method: str = "lo-ransac", estimate_focal: bool = False) -> Optional[AbsolutePose]:
    """The ``cam_from_world`` pose that best explains ``points2D`` as images of ``points3D``.

    Parameters
    ----------
    points2D : float (n, 2)
        Image points in OpenCV pixels (centres at integers).
    points3D : float (n, 3)
        The matching 3D points.
    camera : Camera, or a 3x3 K in the OpenCV convention
        A K needs ``image_size`` ``(width, height)``.
    max_error_px : float
        RANSAC inlier threshold on the reprojection error, in pixels.
    covariance : bool
        Also estimate the pose covariance.
    max_trials, min_trials, confidence, min_inlier_ratio : optional
        RANSAC bounds (default: pycolmap's). RANSAC stops once ``confidence`` that no
        better sample exists is reached, after at least ``min_trials`` and at most
        ``max_trials`` samples; ``min_inlier_ratio`` is the lowest inlier ratio the trial
        count plans for (pycolmap caps the trials at what that ratio needs), so matches
        with fewer inliers need it lowered.
    seed : int, optional
        RANSAC's random seed, for repeatable results; default a random seed per call.
    loss_scale_px : float, optional
        Scale of the Cauchy loss of the refinement that follows RANSAC, in pixels: inliers
        whose error is well above it count little. pycolmap's default, 1 px, suits keypoint
        matches; 2D points that are coarser by construction (patch centres) need their
        own noise level here.
    method : ``"lo-ransac"`` or ``"epnp"``
        ``"lo-ransac"``: pycolmap's LO-RANSAC over P3P and a Cauchy-robust refinement, for
        keypoint matches (about a pixel of noise), any camera model. ``"epnp"``: OpenCV's
        RANSAC over EPnP and a Levenberg-Marquardt refinement of the inliers, for pinhole
        cameras; correspondences of several pixels of noise (object patch centres) keep
        their information in its plain least squares, where the 1 px robust loss of
        ``"lo-ransac"`` discounts it (object pose on a real photo was lost with it:
        benchmarks/README.md). ``"epnp"`` takes ``max_trials`` (default 100) and
        ``confidence`` (default 0.99); OpenCV draws its samples from its own generator.
    estimate_focal : bool
        Estimate the focal length too (``"lo-ransac"`` only), for a camera whose focal
        length is a guess: RANSAC over pycolmap's minimal solver with unknown focal length,
        then a refinement of pose and focal length together. The camera's
        other parameters (principal point, distortion) stay as given; the estimated camera
        is :attr:`AbsolutePose.camera`. Needs well-spread, non-planar points: the focal
        length of a view of a plane is ambiguous.

    Returns
    -------
    AbsolutePose, or None when fewer than 4 correspondences are given or no pose is found.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    points2D = _as_points(points2D, 2, "points2D")
    points3D = _as_points(points3D, 3, "points3D")
    if len(points2D) != len(points3D):
        raise ValueError(f"{len(points2D)} points2D but {len(points3D)} points3D: give one 3D point per 2D point")
    if not max_error_px > 0:
        raise ValueError(f"max_error_px must be positive, got {max_error_px}")
    camera, K_given = _as_camera(camera, image_size)
    if method == "epnp":
        unsupported = {"covariance": covariance or None, "min_trials": min_trials, "seed": seed,
                       "estimate_focal": estimate_focal or None,
                       "min_inlier_ratio": min_inlier_ratio, "loss_scale_px": loss_scale_px}
        given = sorted(name for name, value in unsupported.items() if value is not None)
        if given:
            raise ValueError(f"method='epnp' does not take {', '.join(given)}: use method='lo-ransac' for them")
        return _epnp_ransac(points2D, points3D, camera, K_given, max_error_px, max_trials, confidence)
    ransac = dict(max_trials=max_trials, min_trials=min_trials, confidence=confidence,
                  min_inlier_ratio=min_inlier_ratio, seed=seed)
    return _lo_ransac(points2D, points3D, camera, max_error_px, ransac, loss_scale_px, covariance, estimate_focal)


def _as_camera(camera, image_size):
    """``(Camera, the caller's K or None)``: a K needs the image size to become a camera."""
    if isinstance(camera, Camera):
        return camera, None
    if image_size is None:
        raise ValueError("a camera given as K needs image_size=(width, height)")
    K = np.asarray(camera, dtype=np.float64)
    return Camera.from_K(K, int(image_size[0]), int(image_size[1])), K


def _lo_ransac(points2D, points3D, camera: Camera, max_error_px: float, ransac: dict, loss_scale_px,
               covariance: bool, estimate_focal: bool = False):
    """pycolmap's LO-RANSAC over P3P (or its four-point solver with unknown focal length),
    then its Cauchy-robust refinement (COLMAP pixels)."""
    import pycolmap

    options = pycolmap.AbsolutePoseEstimationOptions()
    options.ransac.max_error = float(max_error_px)
    _ransac_options(options.ransac, **ransac)
    refinement = pycolmap.AbsolutePoseRefinementOptions()
    # RANSAC's focal length alone is a minimal sample's: refining it with the pose over all
    # inliers takes it from about 1 % to about 0.1 % on noisy points (tests/test_absolute_pose.py)
    options.estimate_focal_length = refinement.refine_focal_length = bool(estimate_focal)
    if loss_scale_px is not None:
        if not loss_scale_px > 0:
            raise ValueError(f"loss_scale_px must be positive, got {loss_scale_px}")
        refinement.loss_function_scale = float(loss_scale_px)
    if len(points2D) < 4:
        return None
    colmap_camera = camera.to_pycolmap()  # pycolmap writes the estimated focal length into it
    result = pycolmap.estimate_and_refine_absolute_pose(
        points2D + 0.5, points3D, colmap_camera, options, refinement, return_covariance=covariance)
    if result is None:
        return None
    estimated = None
    if estimate_focal:
        try:
            estimated = Camera.from_pycolmap(colmap_camera)
        except ValueError:  # a degenerate sample gave a negative or infinite focal length
            return None
    cov = result.get("covariance") if covariance else None
    return AbsolutePose(
        cam_from_world=np.asarray(result["cam_from_world"].matrix(), dtype=np.float64)[:3],
        inlier_mask=np.asarray(result["inlier_mask"], dtype=bool),
        covariance=None if cov is None else np.asarray(cov, dtype=np.float64), camera=estimated)


def refine_absolute_pose(points2D, points3D, camera: Camera, cam_from_world: np.ndarray,
                         loss_scale_px: float = 2.0, max_error_px: float = 4.0,
                         iterations: int = 2, information: Optional[np.ndarray] = None) -> Optional[AbsolutePose]:
    """The pose that best explains ``points2D`` as images of ``points3D``, by non-linear
    refinement from a prior ``cam_from_world`` (no RANSAC): a tracker's step, where the
    prior is a frame's predicted pose and most correspondences are right.

    Gauss-Newton minimises a Cauchy-robust reprojection error (``loss_scale_px``) over the
    correspondences (:func:`_gauss_newton_pose`); the inliers are then those within
    ``max_error_px`` of the refined pose, and the refinement runs again on them alone,
    ``iterations`` times in all, so that outliers far from the prior stop pulling once they
    are known. Returns None when fewer than 4 correspondences are given, fewer than 4 stay
    inliers, or the refinement fails.

    ``information``: optional ``(n, 2, 2)`` inverse covariances of the 2D points (symmetric,
    positive semi-definite; a patch alignment's, :func:`~pylocalize.localization.patches.
    align_patches`). Each residual is then whitened by it, so a precise point pulls harder
    and an edge-like one only across its edge. Only their relative size matters: they are
    scaled to a median trace of 2, which keeps ``loss_scale_px`` in pixels for a point of
    median precision; the inliers are still those within ``max_error_px`` pixels.
    """
    points2D = _as_points(points2D, 2, "points2D")
    points3D = _as_points(points3D, 3, "points3D")
    if len(points2D) != len(points3D):
        raise ValueError(f"{len(points2D)} points2D but {len(points3D)} points3D: give one 3D point per 2D point")
    if not (loss_scale_px > 0 and max_error_px > 0):
        raise ValueError(f"loss_scale_px and max_error_px must be positive, got {loss_scale_px}, {max_error_px}")
    pose = np.asarray(cam_from_world, dtype=np.float64)
    if pose.shape != (3, 4) or not np.isfinite(pose).all():
        raise ValueError(f"cam_from_world must be a finite 3x4 [R | t], got shape {pose.shape}")
    whiten = None if information is None else _whitening(information, len(points2D))
    if len(points2D) < 4:
        return None
    # distortion is taken out of the 2D points once; the error is then that of the ideal
    # pinhole camera with the model's K, within a fraction of a pixel of the model's own
    # near the image (what COLMAP's refinement would minimise)
    ideal = camera.undistort(points2D)
    K = camera.K
    inliers = np.ones(len(points2D), bool)
    for _ in range(max(1, int(iterations))):
        pose = _gauss_newton_pose(ideal[inliers], points3D[inliers], K, pose, float(loss_scale_px),
                                  whiten=None if whiten is None else whiten[inliers])
        if pose is None:
            return None
        inliers = reprojection_errors(points2D, points3D, camera, pose) < max_error_px
        if inliers.sum() < 4:
            return None
    return AbsolutePose(cam_from_world=pose, inlier_mask=inliers)


def _whitening(information, n: int) -> np.ndarray:
    """``(n, 2, 2)`` symmetric matrices W with W^T W the given information scaled to a median
    trace of 2 (:func:`refine_absolute_pose`)."""
    info = np.asarray(information, dtype=np.float64)
    if info.shape != (n, 2, 2) or not np.isfinite(info).all():
        raise ValueError(f"information must be finite, (n, 2, 2) for the {n} points, got shape {info.shape}")
    info = 0.5 * (info + info.transpose(0, 2, 1))
    if not n:
        return info
    scale = 0.5 * np.median(info[:, 0, 0] + info[:, 1, 1])
    if not scale > 0:
        raise ValueError("information must be positive semi-definite matrices with a positive median trace")
    # symmetric square root by eigen-decomposition, W = V sqrt(L) V^T (rounding's negative
    # eigenvalues clipped)
    values, vectors = np.linalg.eigh(info / scale)
    return np.einsum("nij,nj,nkj->nik", vectors, np.sqrt(np.maximum(values, 0.0)), vectors)


def _gauss_newton_pose(points2D: np.ndarray, points3D: np.ndarray, K: np.ndarray, pose: np.ndarray,
                       loss_scale: float, max_iterations: int = 10, tolerance: float = 1e-6,
                       whiten: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
    """Iteratively reweighted Gauss-Newton (Levenberg-Marquardt damped) on the pinhole
    reprojection error under a Cauchy loss of scale ``loss_scale`` pixels, from ``pose``;
    updates ``exp(omega) @ [R | t] + [0 | v]`` in the camera frame. None if a point ends
    behind the camera or the system is degenerate. ``whiten`` (n, 2, 2): each residual and
    its Jacobian rows are multiplied by its matrix first (:func:`_whitening`).

    Written out rather than pycolmap's refinement: that one costs ~10 ms a call whatever
    the problem (solver set-up), this one ~1 ms for a frame's few hundred points, and a
    tracker calls it on every frame.
    """
    R, t = pose[:, :3].copy(), pose[:, 3].copy()
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    damping = 1e-6

    def residuals(R, t):
        p = points3D @ R.T + t
        if not (p[:, 2] > 1e-9).all():
            return None, None
        r = np.stack([fx * p[:, 0] / p[:, 2] + cx, fy * p[:, 1] / p[:, 2] + cy], axis=1) - points2D
        return p, (r if whiten is None else np.einsum("nij,nj->ni", whiten, r))

    def cost(r):
        return float(np.log1p((r * r).sum(1) / loss_scale ** 2).sum())

    p, r = residuals(R, t)
    if p is None:
        return None
    current = cost(r)
    for _ in range(max_iterations):
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        inv_z = 1.0 / z
        # d(pixel)/d(p_cam), then d(p_cam)/d(omega, v) = [-[p]x, I]
        # rows d(u)/d(omega, v) and d(v)/d(omega, v): d(pixel)/d(p) times [-[p]x, I]
        a, b = fx * inv_z, fy * inv_z
        ju = np.stack([-a * x * y * inv_z, a * (z + x * x * inv_z), -a * y, a, np.zeros_like(z), -a * x * inv_z], 1)
        jv = np.stack([-b * (z + y * y * inv_z), b * x * y * inv_z, b * x, np.zeros_like(z), b, -b * y * inv_z], 1)
        if whiten is not None:
            ju, jv = (whiten[:, 0, 0, None] * ju + whiten[:, 0, 1, None] * jv,
                      whiten[:, 1, 0, None] * ju + whiten[:, 1, 1, None] * jv)
        weight = 1.0 / (1.0 + (r * r).sum(1) / loss_scale ** 2)  # IRLS weight of the Cauchy loss
        H = (ju * weight[:, None]).T @ ju + (jv * weight[:, None]).T @ jv
        g = (ju * (weight * r[:, 0])[:, None]).sum(0) + (jv * (weight * r[:, 1])[:, None]).sum(0)
        while True:
            try:
                step = -np.linalg.solve(H + damping * np.diag(np.diag(H) + 1e-12), g)
            except np.linalg.LinAlgError:
                return None
            if np.abs(step).max() < tolerance:
                # converged: a step this small moves nothing (and at the minimum, rounding can
                # make it raise the cost, which would only raise the damping step after step)
                return np.c_[R, t]
            rotation = so3_exp(step[:3])
            R_new, t_new = rotation @ R, rotation @ t + step[3:]
            p_new, r_new = residuals(R_new, t_new)
            new_cost = cost(r_new) if p_new is not None else np.inf
            if new_cost <= current:
                break
            damping *= 10.0
            if damping > 1e6:
                return np.c_[R, t]  # no step lowers the cost: at the minimum
        R, t, p, r, damping = R_new, t_new, p_new, r_new, max(damping / 10.0, 1e-9)
        previous, current = current, new_cost
        if previous - current < 1e-5 * previous:
            break
    return np.c_[R, t]


def reprojection_errors(points2D, points3D, camera: Camera, cam_from_world: np.ndarray) -> np.ndarray:
    """Pixel distance of each 2D point to the projection of its 3D point under the pose
    (inf for points behind the camera)."""
    points_cam = np.asarray(points3D, dtype=np.float64) @ cam_from_world[:, :3].T + cam_from_world[:, 3]
    errors = np.full(len(points_cam), np.inf)
    front = points_cam[:, 2] > 1e-9
    if front.any():
        errors[front] = np.linalg.norm(camera.project(points_cam[front]) - np.asarray(points2D)[front], axis=1)
    return errors


def _epnp_ransac(points2D, points3D, camera: Camera, K, max_error_px: float, max_trials, confidence):
    """OpenCV's RANSAC over EPnP, then Levenberg-Marquardt on the inliers (``K``: the
    caller's matrix when given as one, used as it is)."""
    import cv2

    if not camera.is_pinhole:
        raise ValueError(f"method='epnp' needs a pinhole camera, got {camera.model}: undistort the points first "
                         "(Camera.undistort) or use method='lo-ransac'")
    _check_trials_and_confidence(max_trials, confidence)
    if len(points2D) < 4:
        return None
    K = camera.K if K is None else K
    ok, rvec, tvec, inliers = cv2.solvePnPRansac(
        points3D, points2D, K, None, iterationsCount=int(max_trials or 100), reprojectionError=float(max_error_px),
        confidence=float(confidence or 0.99), flags=cv2.SOLVEPNP_EPNP)
    if not ok or inliers is None or len(inliers) < 4:
        return None
    inliers = inliers.ravel()
    rvec, tvec = cv2.solvePnPRefineLM(points3D[inliers], points2D[inliers], K, None, rvec, tvec)
    mask = np.zeros(len(points2D), dtype=bool)
    mask[inliers] = True
    pose = np.c_[cv2.Rodrigues(rvec)[0], np.asarray(tvec, np.float64).ravel()]
    return AbsolutePose(cam_from_world=pose, inlier_mask=mask)
