"""Pose overlays a person can judge: the posed model's silhouette contour over the image."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def pose_overlay(image: np.ndarray, mesh, K, R, t, colour=(0, 255, 0), thickness: int = 2) -> np.ndarray:
    """``image`` with the contour of ``mesh`` rendered at ``cam_from_model = [R | t]``."""
    import cv2

    from pylocalize.render import Renderer, load_mesh

    if not hasattr(mesh, "faces"):
        mesh = load_mesh(mesh)
    height, width = image.shape[:2]
    pose = np.c_[np.asarray(R, np.float64), np.asarray(t, np.float64).reshape(3)]
    mask = Renderer(width, height, K).render(mesh, pose, outputs=("mask",)).mask[0].astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = np.ascontiguousarray(image[..., :3].copy())
    cv2.drawContours(out, contours, -1, colour, thickness)
    return out


def save_pose_overlay(path, image, mesh, K, result) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pose_overlay(image, mesh, K, result.R, result.t)).save(path)
    return path
