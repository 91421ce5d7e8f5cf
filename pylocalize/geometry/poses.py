"""Rotations as quaternions, the angle between two rotations, and the localization pose-file format.

Pose files hold one image per line, ``name qw qx qy qz tx ty tz``, the ``cam_from_world``
rotation as a unit quaternion (scalar first, as COLMAP) and translation: the submission
format of the common localization benchmarks. Lines starting with ``#`` are comments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple

import numpy as np

from pylocalize.containers import write_bytes_atomic


def quaternion_from_matrix(R: np.ndarray) -> np.ndarray:
    """Unit quaternion ``(qw, qx, qy, qz)`` with ``qw >= 0`` of a rotation matrix."""
    R = np.asarray(R, dtype=np.float64)
    # Shepperd's method: pivot on the largest of the four squared components.
    m = np.array([1 + R[0, 0] + R[1, 1] + R[2, 2], 1 + R[0, 0] - R[1, 1] - R[2, 2],
                  1 - R[0, 0] + R[1, 1] - R[2, 2], 1 - R[0, 0] - R[1, 1] + R[2, 2]])
    i = int(np.argmax(m))
    s = 2.0 * np.sqrt(max(m[i], 1e-300))
    if i == 0:
        q = [s / 4, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    elif i == 1:
        q = [(R[2, 1] - R[1, 2]) / s, s / 4, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s]
    elif i == 2:
        q = [(R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, s / 4, (R[1, 2] + R[2, 1]) / s]
    else:
        q = [(R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, s / 4]
    q = np.array(q)
    q /= np.linalg.norm(q)
    return -q if q[0] < 0 else q


def matrix_from_quaternion(q) -> np.ndarray:
    """Rotation matrix of a quaternion ``(qw, qx, qy, qz)`` (normalised first)."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def rotation_error_deg(R_a, R_b):
    """The angle in degrees, in [0, 180], of the rotation ``R_a^T R_b`` taking ``R_a`` to ``R_b``
    (symmetric in its arguments); ``R_a`` and ``R_b`` are ``(3, 3)`` or stacks ``(..., 3, 3)``.

    The angle is the ``atan2`` of its sine (half the norm of the skew part) and its cosine
    (from the trace): ``arccos`` of the trace alone loses half the digits near 0 deg, where
    localization errors live, and ``arcsin`` of the skew part does near 180 deg. Matrices a
    little off orthonormal (estimates, float32 round trips) give no NaN.

    Returns a float for one pair, a float64 array of the stack's shape otherwise.
    """
    R_a, R_b = np.asarray(R_a, dtype=np.float64), np.asarray(R_b, dtype=np.float64)
    if R_a.shape[-2:] != (3, 3) or R_b.shape[-2:] != (3, 3):
        raise ValueError(f"rotations must be (..., 3, 3), got {R_a.shape} and {R_b.shape}")
    dR = np.swapaxes(R_a, -1, -2) @ R_b
    skew = np.stack([dR[..., 2, 1] - dR[..., 1, 2], dR[..., 0, 2] - dR[..., 2, 0], dR[..., 1, 0] - dR[..., 0, 1]], -1)
    sin = np.linalg.norm(skew, axis=-1) / 2
    cos = (np.trace(dR, axis1=-2, axis2=-1) - 1) / 2
    angle = np.degrees(np.arctan2(sin, cos))
    return float(angle) if angle.ndim == 0 else angle


def check_rotation(R: np.ndarray, what: str = "rotation", atol: float = 1e-6) -> np.ndarray:
    """``R`` as float64 (3, 3) if it is a rotation (orthonormal, determinant +1, finite);
    a ``ValueError`` naming ``what`` otherwise. A scaled or reflected matrix has no
    quaternion: writing it would silently read back as another pose."""
    R = np.asarray(R, dtype=np.float64)
    if R.shape != (3, 3) or not np.isfinite(R).all():
        raise ValueError(f"{what} must be a finite 3x3 matrix, got shape {R.shape}")
    error = np.abs(R.T @ R - np.eye(3)).max()
    if error > atol or np.linalg.det(R) < 0:
        raise ValueError(f"{what} is not a rotation (|R^T R - I| = {error:.3g}, det = {np.linalg.det(R):.3g}); "
                         "pass cam_from_world as [R | t] with R orthonormal and det(R) = +1 (remove any scale)")
    return R


def check_pose_name(name: str) -> str:
    """``name`` if one line of a pose file can hold it and read it back as itself."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"image name must be a non-empty string, got {name!r}")
    if any(c.isspace() for c in name):
        raise ValueError(f"image name {name!r} contains whitespace, which the format cannot hold; rename the image")
    if name.startswith("#"):
        raise ValueError(f"image name {name!r} starts with '#', which the format reads as a comment; rename the image")
    return name


def write_pose_file(path, poses: Iterable[Tuple[str, np.ndarray]], notes: Optional[Dict[str, str]] = None) -> None:
    """Writes ``(name, cam_from_world 3x4 or 4x4)`` pairs as ``name qw qx qy qz tx ty tz`` lines,
    all-or-nothing; ``notes[name]`` goes on a ``# name: note`` comment line above its pose
    (readers skip ``#`` lines).

    Raises
    ------
    ValueError
        For what the file could not read back as given: a name with whitespace or a
        leading ``#``, a repeated name, a matrix that is not a rotation, a non-finite value.
    """
    lines, seen = [], set()
    for name, pose in poses:
        check_pose_name(name)
        if name in seen:
            raise ValueError(f"image name {name!r} appears twice; a pose file holds one pose per image")
        seen.add(name)
        pose = np.asarray(pose, dtype=np.float64)
        if pose.shape not in ((3, 4), (4, 4)):
            raise ValueError(f"pose of {name!r} must be cam_from_world 3x4 (or 4x4), got shape {pose.shape}")
        R = check_rotation(pose[:3, :3], f"the rotation of {name!r}")
        t = pose[:3, 3]
        if not np.isfinite(t).all():
            raise ValueError(f"the translation of {name!r} is not finite: {t}")
        q = quaternion_from_matrix(R)
        if notes and name in notes:
            lines.append(f"# {name}: " + " ".join(str(notes[name]).split()))  # one line, whatever the note holds
        # 17 significant digits read back as the same float64 (10 lost ~1e-10 m per value).
        lines.append(name + " " + " ".join(f"{v:.17g}" for v in (*q, *t)))
    write_bytes_atomic(path, ("\n".join(lines) + "\n").encode("utf-8"))


def read_pose_file(path) -> Dict[str, np.ndarray]:
    """Reads a pose file into ``{name: cam_from_world 3x4}``.

    Raises
    ------
    ValueError
        Naming the line that is not ``name qw qx qy qz tx ty tz``, or a name given twice.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not a text pose file ({error})") from None
    poses: Dict[str, np.ndarray] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        try:
            if len(parts) != 8:
                raise ValueError
            values = np.array([float(v) for v in parts[1:]])
            if not np.isfinite(values).all() or np.linalg.norm(values[:4]) == 0:
                raise ValueError
        except ValueError:
            raise ValueError(f"{path}:{number}: expected 'name qw qx qy qz tx ty tz', got {line!r}") from None
        if parts[0] in poses:
            raise ValueError(f"{path}:{number}: image {parts[0]!r} appears twice; keep one pose per image")
        pose = np.zeros((3, 4))
        pose[:, :3] = matrix_from_quaternion(values[:4])
        pose[:, 3] = values[4:]
        poses[parts[0]] = pose
    return poses


def similarity_from_points(src: np.ndarray, dst: np.ndarray,
                           scale: bool = True) -> Tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity ``dst ~ s R src + t`` between corresponding 3D points
    (Umeyama's closed form); needs at least 3 points not on one line. ``scale=False`` fixes
    ``s = 1`` (the rigid motion of Horn's and Kabsch's method).

    Returns ``(s, R, t)``.
    """
    src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3 or len(src) < 3:
        raise ValueError(f"need matching (n >= 3, 3) point arrays, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    U, S, Vt = np.linalg.svd(b.T @ a / len(src))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U) * np.linalg.det(Vt)) or 1.0])
    R = U @ D @ Vt
    variance = (a ** 2).sum() / len(src)
    if variance < 1e-24:
        raise ValueError("the source points coincide: no similarity is defined")
    s = float(np.trace(np.diag(S) @ D) / variance) if scale else 1.0
    return s, R, mu_d - s * R @ mu_s


def ransac_similarity(src: np.ndarray, dst: np.ndarray, max_error: float, max_trials: int = 2000,
                       confidence: float = 0.9999, seed: int = 0) -> Tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Robust similarity ``dst ~ s R src + t``: :func:`similarity_from_points` on minimal
    samples of 3 correspondences inside RANSAC, then refitted on the inliers (points whose
    mapped ``src`` lies within ``max_error`` of ``dst``, in ``dst`` units) until the inlier
    set stops changing. COLMAP's model aligner does the same over camera centres.

    Returns ``(s, R, t, inliers)``, ``inliers`` a bool mask. Raises ``ValueError`` when no
    sample of 3 non-collinear points gives at least 3 inliers.
    """
    src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3 or len(src) < 3:
        raise ValueError(f"need matching (n >= 3, 3) point arrays, got {src.shape} and {dst.shape}")
    if not max_error > 0:
        raise ValueError(f"max_error must be positive, got {max_error}")
    rng = np.random.default_rng(seed)
    n, best, trials, trial = len(src), None, int(max_trials), 0

    def inliers_of(fit):
        s, R, t = fit
        return np.linalg.norm(src @ (s * R).T + t - dst, axis=1) < max_error

    while trial < trials:
        trial += 1
        sample = rng.choice(n, 3, replace=False)
        # a (nearly) collinear sample fixes no rotation about its line
        if min(_flatness(src[sample]), _flatness(dst[sample])) < 1e-6:
            continue
        mask = inliers_of(similarity_from_points(src[sample], dst[sample]))
        if best is None or mask.sum() > best.sum():
            best = mask
            fraction = mask.mean() ** 3  # chance that a sample is all inliers
            if fraction >= 1.0:
                break
            if fraction > 0:  # the trials that find an all-inlier sample with this confidence
                trials = min(trials, int(np.ceil(np.log(1 - confidence) / np.log(1 - fraction))))
    if best is None or best.sum() < 3:
        raise ValueError("no similarity: fewer than 3 correspondences agree on one (collinear or scattered points)")
    for _ in range(10):  # local optimisation: least squares on the inliers, repeated
        fit = similarity_from_points(src[best], dst[best])
        mask = inliers_of(fit)
        if mask.sum() < 3 or np.array_equal(mask, best):
            break
        best = mask
    s, R, t = similarity_from_points(src[best], dst[best])
    return s, R, t, best


def _flatness(points: np.ndarray) -> float:
    """Twice the area of a triangle over its longest side squared: 0 for collinear corners,
    whatever the units."""
    a, b = points[1] - points[0], points[2] - points[0]
    longest = max(float(a @ a), float(b @ b), float((b - a) @ (b - a)))
    return float(np.linalg.norm(np.cross(a, b))) / longest if longest > 0 else 0.0


def transform_pose(cam_from_world: np.ndarray, s: float, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The ``cam_from_world`` pose of the same camera after the world is mapped by
    ``x' = s R x + t`` (rotation unchanged relative to the scene, centre moved, metric scale)."""
    P = np.asarray(cam_from_world, dtype=np.float64)
    R_new = P[:, :3] @ R.T
    centre = s * R @ (-P[:, :3].T @ P[:, 3]) + t
    return np.hstack([R_new, (-R_new @ centre)[:, None]])


def _skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])


def so3_exp(w: np.ndarray) -> np.ndarray:
    """The rotation of the angle-axis vector ``w`` (Rodrigues' formula)."""
    theta = float(np.linalg.norm(w))
    W = _skew(w)
    if theta < 1e-8:
        return np.eye(3) + W
    return np.eye(3) + np.sin(theta) / theta * W + (1 - np.cos(theta)) / theta ** 2 * W @ W


def _so3_log(R: np.ndarray) -> np.ndarray:
    cos = np.clip((np.trace(R) - 1) / 2, -1.0, 1.0)
    skew = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]]) / 2
    theta = float(np.arctan2(np.linalg.norm(skew), cos))
    if theta < 1e-8:
        return skew
    if np.pi - theta < 1e-6:  # near 180 degrees the skew part vanishes: the axis from R + I
        column = R + np.eye(3)
        axis = column[:, int(np.argmax(np.linalg.norm(column, axis=0)))]
        return theta * axis / np.linalg.norm(axis)
    return theta / np.sin(theta) * skew


def _se3_left_jacobian(w: np.ndarray) -> np.ndarray:
    theta = float(np.linalg.norm(w))
    W = _skew(w)
    if theta < 1e-8:
        return np.eye(3) + W / 2
    return np.eye(3) + (1 - np.cos(theta)) / theta ** 2 * W + (theta - np.sin(theta)) / theta ** 3 * W @ W


def motion_power(motion: np.ndarray, a: float) -> np.ndarray:
    """The rigid motion ``motion`` (3x4 ``[R | t]``) applied ``a`` times, ``a`` any real:
    the same screw motion (constant angular and linear velocity) run for ``a`` times as long,
    through the SE(3) logarithm and exponential. ``a = 0`` is the identity, ``a = 1``
    ``motion`` itself, ``a = 2`` ``motion`` composed with itself; a constant-velocity model
    predicts a pose over any time step with it.
    """
    motion = np.asarray(motion, dtype=np.float64)
    if motion.shape != (3, 4) or not np.isfinite(motion).all():
        raise ValueError(f"motion must be a finite 3x4 [R | t], got shape {motion.shape}")
    w = _so3_log(motion[:, :3])
    u = np.linalg.solve(_se3_left_jacobian(w), motion[:, 3])
    w, u = a * w, a * u
    return np.hstack([so3_exp(w), (_se3_left_jacobian(w) @ u)[:, None]])


def compose_poses(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The 3x4 rigid motion ``a @ b`` (``b`` first, then ``a``) of two 3x4 ``[R | t]``."""
    return np.hstack([a[:, :3] @ b[:, :3], (a[:, :3] @ b[:, 3] + a[:, 3])[:, None]])


def invert_pose(pose: np.ndarray) -> np.ndarray:
    """The inverse of a 3x4 rigid motion ``[R | t]``: ``[R^T | -R^T t]``."""
    R = pose[:, :3]
    return np.hstack([R.T, (-R.T @ pose[:, 3])[:, None]])
