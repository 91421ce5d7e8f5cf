"""ORB keypoints and binary descriptors (OpenCV), spread over the image for tracking.

ORB (Rublee et al., ICCV 2011: oriented FAST corners, rotated BRIEF) gives 256-bit
descriptors, compared by Hamming distance on the core's popcount kernels
(:class:`~pylocalize.index.binary.BinaryIndex`), at a fraction of SIFT's cost: the fast
feature of a map (:meth:`pylocalize.localization.Map.add_layer`) for localizing frames of a
stream.

OpenCV's ORB shares the budget among pyramid levels and keeps the corners with the best
Harris scores, which gather on the most textured parts of an image. With ``oversample > 1``
:class:`OrbExtractor` detects that many times the budget, then keeps the best corners of
each cell of a ``grid`` (an even share per cell, the rest to the best corners left anywhere)
and describes only those. On the generated courtyard at 640x480 the grid found fewer correct
2D-3D matches than OpenCV's own choice, at a higher cost (``benchmarks/README.md``,
``bench_binary_features.py --sweep``): it is off by default (``oversample=1``), for scenes
whose texture crowds one part of the frame.

Keypoints use the OpenCV pixel convention of pylocalize (pixel centres at integers), in the
image's own pixels whatever pyramid level found them. Descriptors are uint8 (n, 32), OpenCV's
byte order (Hamming distances do not depend on the order of bits).
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

from pylocalize.features.sift import to_gray
from pylocalize.io import load_pixels

DESCRIPTOR_BYTES = 32  # ORB's 256 bits


class OrbExtractor:
    """ORB of one feature budget and detector setting, made once and applied to many
    images (a tracker's frames).

    Parameters
    ----------
    max_features : int
        Features kept per image.
    fast_threshold : int
        FAST corner threshold (grey levels): lower finds corners in weaker texture.
    num_levels, scale_factor : int, float
        Image pyramid: levels and the scale between them (scale changes up to
        ``scale_factor ** (num_levels - 1)`` still match).
    grid : (int, int)
        Cells across and down among which the kept features are shared.
    oversample : float
        Corners detected per feature kept, for the grid to choose from; 1 (default): no
        grid, OpenCV's best ``max_features``.

    One instance serves one thread at a time (OpenCV's detector keeps state between
    calls); threads make one each.
    """

    def __init__(self, max_features: int = 2000, fast_threshold: int = 12, num_levels: int = 8,
                 scale_factor: float = 1.2, grid: Tuple[int, int] = (8, 6), oversample: float = 1.0):
        import cv2

        if isinstance(max_features, bool) or int(max_features) != max_features or max_features < 1:
            raise ValueError(f"max_features must be a positive integer, got {max_features!r}")
        if not 1 <= int(fast_threshold) <= 255:
            raise ValueError(f"fast_threshold must be in 1..255 grey levels, got {fast_threshold!r}")
        if int(num_levels) < 1 or not float(scale_factor) > 1.0:
            raise ValueError(f"need num_levels >= 1 and scale_factor > 1, got {num_levels!r} and {scale_factor!r}")
        grid = tuple(int(g) for g in grid)
        if len(grid) != 2 or min(grid) < 1:
            raise ValueError(f"grid must be two positive cell counts (across, down), got {grid!r}")
        if not float(oversample) >= 1.0:
            raise ValueError(f"oversample must be >= 1 (corners detected per feature kept), got {oversample!r}")
        self.max_features, self.fast_threshold = int(max_features), int(fast_threshold)
        self.num_levels, self.scale_factor = int(num_levels), float(scale_factor)
        self.grid, self.oversample = grid, float(oversample)
        self._orb = cv2.ORB_create(nfeatures=int(np.ceil(self.max_features * self.oversample)),
                                   scaleFactor=self.scale_factor, nlevels=self.num_levels,
                                   fastThreshold=self.fast_threshold)

    def options(self) -> dict:
        """The constructor's arguments: what a map stores so that queries extract alike."""
        return {"max_features": self.max_features, "fast_threshold": self.fast_threshold,
                "num_levels": self.num_levels, "scale_factor": self.scale_factor, "grid": list(self.grid),
                "oversample": self.oversample}

    def __repr__(self) -> str:
        return "OrbExtractor(" + ", ".join(f"{k}={v!r}" for k, v in self.options().items()) + ")"

    def __call__(self, image) -> Tuple[np.ndarray, np.ndarray]:
        """``(keypoints float32 (n, 2), descriptors uint8 (n, 32))`` of one image (uint8 or
        [0, 1] float pixels, grey or RGB, or an image file), ``n <= max_features``."""
        gray = to_gray(load_pixels(image), "ORB")
        if self.oversample == 1.0:  # no choice to make: one pass builds the pyramid once
            corners, raw = self._orb.detectAndCompute(gray, None)
        else:
            corners = self._orb.detect(gray, None)
            if not corners:
                return np.zeros((0, 2), np.float32), np.zeros((0, DESCRIPTOR_BYTES), np.uint8)
            xy = np.array([c.pt for c in corners], dtype=np.float32)
            response = np.array([c.response for c in corners], dtype=np.float32)
            keep = spread(xy, response, gray.shape[1], gray.shape[0], self.grid, self.max_features)
            corners, raw = self._orb.compute(gray, [corners[i] for i in keep])
        if raw is None or not corners:
            return np.zeros((0, 2), np.float32), np.zeros((0, DESCRIPTOR_BYTES), np.uint8)
        keypoints = np.array([c.pt for c in corners], dtype=np.float32).reshape(-1, 2)
        return keypoints, np.ascontiguousarray(raw, dtype=np.uint8)


def spread(xy: np.ndarray, response: np.ndarray, width: int, height: int, grid: Tuple[int, int],
           budget: int) -> np.ndarray:
    """Indices of at most ``budget`` keypoints, spread over a ``grid`` of cells: each cell's
    best ``ceil(budget / cells)`` by ``response``, then the best of the rest anywhere while
    the budget lasts (cells of weak texture leave their share to others). Sorted by index;
    ties go to the smaller index, so the choice is deterministic."""
    n = len(xy)
    if n <= budget:
        return np.arange(n)
    cols, rows = grid
    cx = np.clip((xy[:, 0] + 0.5) * cols / width, 0, cols - 1).astype(np.int64)
    cy = np.clip((xy[:, 1] + 0.5) * rows / height, 0, rows - 1).astype(np.int64)
    cell = cy * cols + cx
    order = np.lexsort((np.arange(n), -response, cell))  # by cell, best first, then index
    starts = np.searchsorted(cell[order], np.arange(cols * rows))
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n) - starts[cell[order]]
    share = -(-budget // (cols * rows))
    first = np.flatnonzero(rank < share)
    if len(first) >= budget:  # more than the budget when every cell fills its share
        first = first[np.lexsort((first, -response[first]))[:budget]]
        return np.sort(first)
    rest = np.flatnonzero(rank >= share)
    rest = rest[np.lexsort((rest, -response[rest]))[:budget - len(first)]]
    return np.sort(np.concatenate([first, rest]))
