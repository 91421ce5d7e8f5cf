"""Look-at poses and the template viewpoints of object onboarding.

Viewpoints are a Fibonacci lattice on the sphere (near-uniform, deterministic, any count)
times evenly spaced in-plane rotations about the optical axis, e.g. 57 x 14 = 798 as in
FoundPose.
"""

from __future__ import annotations

import numpy as np


def look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """``cam_from_world`` (3x4) of a camera at ``eye`` looking at ``target``.

    The image ``y`` axis (down) points away from ``up``. When the viewing direction is
    parallel to ``up`` another up vector is chosen, so every eye gets a valid pose.

    Parameters
    ----------
    eye, target, up : array_like of 3 floats
    """
    eye = np.asarray(eye, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    z = target - eye
    norm = np.linalg.norm(z)
    if norm == 0:
        raise ValueError("eye and target coincide: a camera needs a viewing direction")
    z /= norm
    up = np.asarray(up, dtype=np.float64)
    if np.linalg.norm(np.cross(z, up)) < 1e-6 * np.linalg.norm(up):
        up = np.array([0.0, 1.0, 0.0]) if abs(z[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    x = np.cross(z, up)  # image right: y (down) = z x x points away from up
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    return np.concatenate([R, (-R @ eye)[:, None]], axis=1)


def fibonacci_sphere(n: int) -> np.ndarray:
    """``n`` near-uniform unit vectors ``(n, 3)`` on a Fibonacci lattice."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    i = np.arange(n, dtype=np.float64) + 0.5
    z = 1.0 - 2.0 * i / n
    r = np.sqrt(np.maximum(0.0, 1.0 - z * z))
    phi = i * np.pi * (3.0 - np.sqrt(5.0))  # golden angle
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def viewpoint_poses(num_views: int = 57, num_inplane: int = 14, radius: float = 1.0,
                    center=(0.0, 0.0, 0.0)) -> np.ndarray:
    """``cam_from_model`` poses ``(num_views * num_inplane, 3, 4)`` looking at ``center``.

    Cameras sit on a sphere of ``radius`` around ``center`` at the Fibonacci directions;
    each direction gets ``num_inplane`` rotations about its optical axis, evenly spaced.
    """
    if num_inplane < 1:
        raise ValueError(f"num_inplane must be >= 1, got {num_inplane}")
    if not radius > 0:
        raise ValueError(f"radius must be > 0, got {radius}")
    center = np.asarray(center, dtype=np.float64)
    poses = []
    for d in fibonacci_sphere(num_views):
        base = look_at(center + radius * d, center)
        for k in range(num_inplane):
            a = 2.0 * np.pi * k / num_inplane
            c, s = np.cos(a), np.sin(a)
            roll = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
            poses.append(roll @ base)
    return np.stack(poses)
