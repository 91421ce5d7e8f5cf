"""SIFT keypoints and descriptors through pycolmap (its CPU or GPU SIFT).

pycolmap is the maintained SIFT of the COLMAP ecosystem the maps interoperate with, so
descriptors match what COLMAP databases hold: RootSIFT, stored as uint8
(``round(512 * d)``, clipped). Keypoints are returned in the OpenCV pixel convention used
across pylocalize (pixel centres at integers); COLMAP's are shifted by +0.5.
"""

from __future__ import annotations

import warnings
from typing import Tuple

import numpy as np


def extract_sift(image: np.ndarray, max_features: int = 4000) -> Tuple[np.ndarray, np.ndarray]:
    """SIFT features of one image.

    Parameters
    ----------
    image : uint8 (H, W, 3) or (H, W), or float32 in [0, 1]
    max_features : int

    Returns
    -------
    keypoints : float32 (n, 2)
        x, y in pixels, OpenCV convention.
    descriptors : uint8 (n, 128)
    """
    import pycolmap

    img = np.asarray(image)
    if img.ndim == 3:
        img = img[..., :3].astype(np.float32).mean(-1)
    elif img.ndim != 2:
        raise ValueError(f"image must be (H, W) or (H, W, 3), got shape {img.shape}")
    gray = img.astype(np.float32)
    if np.asarray(image).dtype == np.uint8:
        gray /= 255.0
    options = pycolmap.FeatureExtractionOptions()
    options.sift.max_num_features = int(max_features)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        sift = pycolmap.Sift(options, device=pycolmap.Device.auto)
    keypoints, descriptors = sift.extract(gray)
    keypoints = np.asarray(keypoints, dtype=np.float32)[:, :2] - 0.5
    descriptors = np.clip(np.rint(np.asarray(descriptors, dtype=np.float32) * 512.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(keypoints), np.ascontiguousarray(descriptors)
