"""Rotations as quaternions and the localization pose-file format.

Pose files hold one image per line, ``name qw qx qy qz tx ty tz``, the ``cam_from_world``
rotation as a unit quaternion (scalar first, as COLMAP) and translation: the submission
format of the common localization benchmarks. Lines starting with ``#`` are comments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, Tuple

import numpy as np


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


def write_pose_file(path, poses: Iterable[Tuple[str, np.ndarray]]) -> None:
    """Writes ``(name, cam_from_world 3x4)`` pairs as ``name qw qx qy qz tx ty tz`` lines."""
    lines = []
    for name, pose in poses:
        if any(c.isspace() for c in name):
            raise ValueError(f"image name {name!r} contains whitespace, which the format cannot hold")
        pose = np.asarray(pose, dtype=np.float64)
        q = quaternion_from_matrix(pose[:3, :3])
        t = pose[:3, 3]
        lines.append(name + " " + " ".join(f"{v:.10g}" for v in (*q, *t)))
    from pylocalize.containers import write_bytes_atomic

    write_bytes_atomic(path, ("\n".join(lines) + "\n").encode("utf-8"))


def read_pose_file(path) -> Dict[str, np.ndarray]:
    """Reads a pose file into ``{name: cam_from_world 3x4}``.

    Raises
    ------
    ValueError
        Naming the line that is not ``name qw qx qy qz tx ty tz``.
    """
    poses: Dict[str, np.ndarray] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
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
        pose = np.zeros((3, 4))
        pose[:, :3] = matrix_from_quaternion(values[:4])
        pose[:, 3] = values[4:]
        poses[parts[0]] = pose
    return poses


def similarity_from_points(src: np.ndarray, dst: np.ndarray) -> Tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity ``dst ~ s R src + t`` between corresponding 3D points
    (Umeyama's closed form); needs at least 3 points not on one line.

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
    s = float(np.trace(np.diag(S) @ D) / variance)
    return s, R, mu_d - s * R @ mu_s


def transform_pose(cam_from_world: np.ndarray, s: float, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The ``cam_from_world`` pose of the same camera after the world is mapped by
    ``x' = s R x + t`` (rotation unchanged relative to the scene, centre moved, metric scale)."""
    P = np.asarray(cam_from_world, dtype=np.float64)
    R_new = P[:, :3] @ R.T
    centre = s * R @ (-P[:, :3].T @ P[:, 3]) + t
    return np.hstack([R_new, (-R_new @ centre)[:, None]])
