"""SIFT keypoints and RootSIFT descriptors, from OpenCV or pycolmap.

Two extractors give the same output so maps and queries can use either, as long as both
use the same one (a map records its extractor):

- ``"opencv"`` (default): OpenCV's SIFT, about 0.3 s for a 1536x1024 image on two cores,
  which is what makes sub-second localization possible on a CPU;
- ``"colmap"``: pycolmap's SIFT (its GPU path when present), the descriptors COLMAP
  databases hold; about 2-3 s for the same image on a CPU.

Descriptors are RootSIFT (L1-normalise, square root), stored as uint8 ``round(512 * d)``
clipped, COLMAP's storage. Keypoints use the OpenCV pixel convention of pylocalize (pixel
centres at integers); COLMAP's are shifted by +0.5 at its boundary.
"""

from __future__ import annotations

import warnings
from typing import Tuple

import numpy as np

from pylocalize.io import load_pixels

EXTRACTORS = ("opencv", "colmap")


def to_gray(image: np.ndarray, extractor: str = "SIFT") -> np.ndarray:
    """uint8 (H, W) from uint8 or [0, 1] float images, grey or RGB(A); ``extractor`` names
    what the image is for in the error an image under 16 pixels gets."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] in (3, 4):
        if img.dtype == np.uint8:
            # (r + g + b) // 3 channel by channel: a reduction over the last axis of three
            # costs 15x as much (a tracker pays it on every frame)
            total = img[..., 0].astype(np.uint16)
            total += img[..., 1]
            total += img[..., 2]
            total //= 3
            img = total.astype(np.uint8)
        else:
            img = img[..., :3].astype(np.float32).mean(-1)
    elif img.ndim != 2:
        raise ValueError(f"image must be (H, W), (H, W, 3) or (H, W, 4), got shape {img.shape}")
    if img.dtype != np.uint8:
        scale = 255.0 if np.asarray(image).dtype.kind == "f" else 1.0
        img = np.clip(np.rint(img.astype(np.float32) * scale), 0, 255).astype(np.uint8)
    if min(img.shape) < 16:
        raise ValueError(f"image of {img.shape[1]}x{img.shape[0]} pixels is too small for {extractor}")
    return np.ascontiguousarray(img)


def root_sift_u8(descriptors: np.ndarray) -> np.ndarray:
    """RootSIFT of raw SIFT histograms, as uint8 ``round(512 * d)`` clipped."""
    d = np.asarray(descriptors, dtype=np.float32)
    d = np.sqrt(d / np.maximum(d.sum(1, keepdims=True), 1e-12))
    return np.clip(np.rint(d * 512.0), 0, 255).astype(np.uint8)


def check_extractor(extractor: str) -> str:
    """``extractor`` if it names one of :data:`EXTRACTORS`, else a ``ValueError`` that lists them."""
    if extractor not in EXTRACTORS:
        raise ValueError(f"unknown extractor {extractor!r}; use one of {EXTRACTORS}")
    return extractor


class SiftExtractor:
    """SIFT of one extractor and feature budget, made once and applied to many images
    (:func:`extract_sift` of each): a worker that extracts a stream of images creates its
    detector once.

    One instance serves one thread at a time (OpenCV's and pycolmap's detectors keep state
    between calls); threads make one each.
    """

    def __init__(self, max_features: int = 4000, extractor: str = "opencv"):
        self.max_features, self.extractor = int(max_features), check_extractor(extractor)
        if extractor == "opencv":
            import cv2

            # contrast threshold 0.02 / 3 layers per octave = COLMAP's default peak threshold,
            # so both extractors keep the same low-contrast features
            self._sift = cv2.SIFT_create(nfeatures=self.max_features, contrastThreshold=0.02)
        else:
            import pycolmap

            options = pycolmap.FeatureExtractionOptions()
            options.sift.max_num_features = self.max_features
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                self._sift = pycolmap.Sift(options, device=pycolmap.Device.auto)

    def __call__(self, image) -> Tuple[np.ndarray, np.ndarray]:
        """``(keypoints, descriptors)`` of one image, as :func:`extract_sift` returns them."""
        gray = to_gray(load_pixels(image))
        if self.extractor == "opencv":
            points, raw = self._sift.detectAndCompute(gray, None)
            if raw is None or not points:
                return np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8)
            keypoints = np.array([p.pt for p in points], dtype=np.float32)
            return keypoints, root_sift_u8(raw)
        keypoints, descriptors = self._sift.extract(gray.astype(np.float32) / 255.0)
        keypoints = np.asarray(keypoints, dtype=np.float32)[:, :2] - 0.5
        # pycolmap already returns L2-normalised RootSIFT
        descriptors = np.clip(np.rint(np.asarray(descriptors, dtype=np.float32) * 512.0), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(keypoints), np.ascontiguousarray(descriptors)


def extract_sift(image, max_features: int = 4000,
                 extractor: str = "opencv") -> Tuple[np.ndarray, np.ndarray]:
    """SIFT features of one image.

    Parameters
    ----------
    image : uint8 (H, W, 3) or (H, W), float in [0, 1], or an image file path (str or Path)
    max_features : int
        Strongest features kept.
    extractor : {"opencv", "colmap"}

    Returns
    -------
    keypoints : float32 (n, 2)
        x, y in pixels, OpenCV convention.
    descriptors : uint8 (n, 128)
        RootSIFT.
    """
    check_extractor(extractor)
    return SiftExtractor(max_features, extractor)(image)
