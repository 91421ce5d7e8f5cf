"""Patch descriptors on a regular grid: one descriptor per ``patch_size`` x ``patch_size``
cell, the layout of a ViT's patch tokens (DINOv2: 14 px).

Extractors are callables ``rgb uint8 (H, W, 3) -> float32 (H // p, W // p, dim)`` with
``patch_size`` and ``dim`` attributes, so the object pipeline can use any of them.
``DenseSIFTExtractor`` needs no weights: it is the default where no DINOv2 weights exist
(CI and the benchmarks here).
"""

from __future__ import annotations

import numpy as np

from pylocalize.features.sift import to_gray


def patch_centres(grid_h: int, grid_w: int, patch_size: int) -> np.ndarray:
    """Pixel centres (x, y), OpenCV convention, of a ``grid_h x grid_w`` patch grid, row-major."""
    ys, xs = np.mgrid[0:grid_h, 0:grid_w]
    return np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64) * patch_size + (patch_size - 1) / 2.0


class DenseSIFTExtractor:
    """Upright SIFT-like descriptors at the centre of every patch (dense SIFT), RootSIFT-normalised.

    Computed for the whole grid at once, as fast dense SIFT implementations do: gradient
    magnitudes are split into 8 orientation channels (linear interpolation between bins),
    each channel is pooled over square cells with a separable triangular (bilinear) kernel,
    and the 4 x 4 cells around each patch centre form its 128-d descriptor, weighted by a
    Gaussian window, normalised, clipped at 0.2 and normalised again as in SIFT.
    No orientation is assigned: templates cover in-plane rotations.

    Parameters
    ----------
    patch_size : int
        Grid step in pixels (14 matches DINOv2's patches).
    support : float
        Descriptor window as a multiple of the patch size (4 cells of
        ``support * patch_size / 4`` pixels a side): a little context around the patch.
    """

    def __init__(self, patch_size: int = 14, support: float = 2.0):
        if patch_size < 4:
            raise ValueError(f"patch_size must be >= 4, got {patch_size}")
        if support <= 0:
            raise ValueError(f"support must be > 0, got {support}")
        self.patch_size, self.support, self.dim = int(patch_size), float(support), 128
        self.name = "dense-sift"

    def __repr__(self) -> str:
        return f"DenseSIFTExtractor(patch_size={self.patch_size}, support={self.support})"

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.feature_map(image, self.patch_size)

    @property
    def reach_px(self) -> int:
        """Pixels from a patch centre that its descriptor depends on: the cell centres (1.5
        cells), bilinear sampling (1), the pooling kernel (a cell), the gradient (1) and the
        blur (4). A crop that keeps this much around the patches, with nothing but the
        background beyond, gives the same descriptors as the whole image."""
        cell = self.support * self.patch_size / 4.0
        return int(np.ceil(1.5 * cell)) + 1 + max(1, int(round(cell))) + 1 + 4

    def feature_map(self, image: np.ndarray, stride: int) -> np.ndarray:
        """Descriptors on a grid of step ``stride`` (cell ``(i, j)`` centred at pixel
        ``(j * stride + (stride - 1) / 2, i * stride + (stride - 1) / 2)``): a denser map than
        the patch grid, for featuremetric refinement."""
        import cv2

        gray = to_gray(image).astype(np.float32) / 255.0
        stride = int(stride)
        gh, gw = gray.shape[0] // stride, gray.shape[1] // stride
        if gh == 0 or gw == 0:
            raise ValueError(f"image of {gray.shape[1]}x{gray.shape[0]} is smaller than one {stride}-px cell")
        gray = cv2.GaussianBlur(gray, (0, 0), 1.0)
        gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=1)
        gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=1)
        magnitude = np.sqrt(gx * gx + gy * gy)
        angle = (np.arctan2(gy, gx) % (2 * np.pi)) * (8 / (2 * np.pi))  # in bins, [0, 8)
        low = np.floor(angle)
        frac = angle - low
        low = low.astype(np.int64) % 8
        # the 8 orientation channels in one (h, w, 8) image: each pixel's magnitude split
        # between its two nearest bins, so one separable filter pools all of them
        channels = np.zeros(gray.shape + (8,), np.float32)
        np.put_along_axis(channels, low[..., None], (magnitude * (1 - frac))[..., None], axis=2)
        np.put_along_axis(channels, ((low + 1) % 8)[..., None], (magnitude * frac)[..., None], axis=2)
        cell = self.support * self.patch_size / 4.0
        radius = max(1, int(round(cell)))
        tri = (1.0 - np.abs(np.arange(-radius + 1, radius)) / radius).astype(np.float32)  # bilinear cell weighting
        pooled = cv2.sepFilter2D(channels, -1, tri, tri, borderType=cv2.BORDER_CONSTANT)
        centres = patch_centres(gh, gw, stride)
        offsets = (np.arange(4) - 1.5) * cell
        # sample positions of the 16 cells of every patch: (n, 4, 4) grids of x and y
        sx = centres[:, 0, None, None] + offsets[None, None, :]
        sy = centres[:, 1, None, None] + offsets[None, :, None]
        sx, sy = np.broadcast_to(sx, (len(centres), 4, 4)), np.broadcast_to(sy, (len(centres), 4, 4))
        map_x = np.ascontiguousarray(sx.reshape(-1, 16), dtype=np.float32)
        map_y = np.ascontiguousarray(sy.reshape(-1, 16), dtype=np.float32)
        desc = np.empty((len(centres), 4, 4, 8), np.float32)
        for b in range(8):  # remap interpolates at most 4 channels at a time exactly
            desc[..., b] = cv2.remap(np.ascontiguousarray(pooled[..., b]), map_x, map_y, cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_CONSTANT).reshape(-1, 4, 4)
        window = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * (2 * cell) ** 2)).astype(np.float32)
        d = np.maximum(desc * window[None, :, :, None], 0).reshape(len(centres), 128)  # filter2D may go -1e-9
        d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
        d = np.minimum(d, 0.2)
        d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
        d = np.sqrt(d / np.maximum(d.sum(1, keepdims=True), 1e-12))  # RootSIFT, unit L2 norm
        return d.reshape(gh, gw, self.dim)
