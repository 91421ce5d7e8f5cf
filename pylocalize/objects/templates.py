"""Object templates: renders of a mesh from many viewpoints, each framed like a crop.

FoundPose compares a crop of the query around the object with crops of templates. A
template is rendered straight into its crop: its intrinsics map the object's projected
bounding square (enlarged by ``padding``) onto a ``size`` x ``size`` image, which equals
rendering a full view, cropping and resizing, without the resampling blur.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np


def crop_transform(centre, side: float, size: int) -> np.ndarray:
    """3x3 map from image pixels to the pixels of a ``size`` x ``size`` crop of the square
    of ``side`` pixels around ``centre`` (OpenCV convention: pixel i spans [i - 0.5, i + 0.5])."""
    s = size / float(side)
    cx, cy = float(centre[0]), float(centre[1])
    return np.array([[s, 0.0, (side / 2.0 - cx) * s - 0.5],
                     [0.0, s, (side / 2.0 - cy) * s - 0.5],
                     [0.0, 0.0, 1.0]])


def square_around(x0: float, y0: float, x1: float, y1: float, padding: float) -> Tuple[np.ndarray, float]:
    """Centre and side of the square around a box (inclusive pixel bounds), enlarged by ``padding``."""
    centre = np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0])
    side = max(x1 - x0 + 1.0, y1 - y0 + 1.0) * (1.0 + padding)
    return centre, side


def template_intrinsics(vertices: np.ndarray, cam_from_model: np.ndarray, size: int, padding: float) -> np.ndarray:
    """K that frames the projection of ``vertices`` in a ``size``-px square crop."""
    cam = vertices @ cam_from_model[:, :3].T + cam_from_model[:, 3]
    if (cam[:, 2] <= 0).any():
        raise ValueError("the object is not entirely in front of the template camera; increase the distance")
    uv = cam[:, :2] / cam[:, 2:]
    (u0, v0), (u1, v1) = uv.min(0), uv.max(0)
    side = max(u1 - u0, v1 - v0) * (1.0 + padding)
    f = size / side
    cu, cv = (u0 + u1) / 2.0, (v0 + v1) / 2.0
    return np.array([[f, 0.0, (size - 1) / 2.0 - f * cu], [0.0, f, (size - 1) / 2.0 - f * cv], [0.0, 0.0, 1.0]])
