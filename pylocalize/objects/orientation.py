"""Gradient-orientation templates: shape-aware template matching after LINE-2D.

Hinterstoisser et al. ("Gradient Response Maps for Real-Time Detection of Texture-Less
Objects", TPAMI 2012) match an object by the orientations of its image gradients, not
their magnitudes: the silhouette and the strong inner edges of a render decide the view
and the in-plane rotation where texture (the patch bag of words) cannot. The steps, each
a function here:

- :func:`quantized_orientations`: the gradient of the colour channel of largest magnitude,
  its orientation modulo 180 degrees quantised to 8 bins, kept where the magnitude passes a
  threshold and where at least ``min_votes`` of the 3x3 neighbours share the bin (the
  majority rule discards noise and corners);
- :func:`template_features`: a template's sparse features, ``num_features`` well spread
  points of the rendered silhouette (the mask's gradient) and of strong inner edges;
- :func:`spread`: every pixel's orientations within a ``T`` x ``T`` neighbourhood, as a bit
  set (OR of ``1 << bin``), so a feature that lies up to ``T / 2`` px off still matches;
- :func:`response_maps`: per feature orientation, the best ``|cos|`` similarity to any
  orientation spread to the pixel (a 256-entry lookup per orientation);
- :func:`score_templates`: every template's mean similarity at a grid of offsets (steps of
  ``T``, as LINE-2D evaluates its linearised memories) and scales, vectorised.

The query crop is already centred and scaled like the templates (the square around the
object's box, :meth:`~pylocalize.objects.representation.ObjectRepresentation.crop_query`),
so only a small window of translations and scales is searched, not the whole image.
Orientations modulo 180 degrees ignore the contrast's sign: the silhouette matches on any
background. Limits: no pyramid and no occlusion reasoning beyond the mean similarity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

NUM_BINS = 8  # orientations over [0, 180) degrees, 22.5 degrees each
NO_ORIENTATION = 255  # a pixel or feature slot without an orientation
# |cos| similarity stored in 0..SIMILARITY_SCALE, so responses gather and sum as bytes
SIMILARITY_SCALE = 100
# Spread of the query's responses, as a share of the crop's side (8 px of the default 420),
# and the search window in steps of it: templates lie up to half their spacing (about 13
# degrees of view or in-plane rotation) from the query, which moves the silhouette of an
# object that fills the crop by tens of pixels (benchmarks/README.md)
SPREAD_SHARE = 8 / 420
SEARCH_STEPS = 3
SEARCH_SCALES = (1.0,)
MASK_MARGIN_PX = 5  # the query mask's dilation: its own silhouette must vote


@dataclass
class OrientationTemplates:
    """Sparse orientation features of every template.

    Attributes
    ----------
    xy : int16 (templates, n, 2)
        Feature pixels (column, row) in the template crop; unused slots hold 0.
    bins : uint8 (templates, n)
        Quantised orientation of each feature, :data:`NO_ORIENTATION` in unused slots.
    """

    xy: np.ndarray
    bins: np.ndarray

    def __post_init__(self):
        self.xy, self.bins = np.asarray(self.xy, np.int16), np.asarray(self.bins, np.uint8)
        if self.xy.ndim != 3 or self.xy.shape[2] != 2 or self.bins.shape != self.xy.shape[:2]:
            raise ValueError(f"orientation features: expected xy (templates, n, 2) and bins (templates, n), got "
                             f"{self.xy.shape} and {self.bins.shape}")
        valid = self.bins != NO_ORIENTATION
        if (self.bins[valid] >= NUM_BINS).any():
            raise ValueError(f"orientation bins must be below {NUM_BINS} or {NO_ORIENTATION} (no feature)")

    @classmethod
    def stack(cls, features: Sequence[Tuple[np.ndarray, np.ndarray]], num_features: int) -> "OrientationTemplates":
        """One array of every template's ``(xy, bins)`` (:func:`template_features`), padded."""
        xy = np.zeros((len(features), num_features, 2), np.int16)
        bins = np.full((len(features), num_features), NO_ORIENTATION, np.uint8)
        for i, (points, orientations) in enumerate(features):
            xy[i, :len(points)], bins[i, :len(points)] = points[:num_features], orientations[:num_features]
        return cls(xy, bins)

    @property
    def counts(self) -> np.ndarray:
        return (self.bins != NO_ORIENTATION).sum(1)


def image_gradients(image: np.ndarray, blur_sigma: float = 1.0) -> Tuple[np.ndarray, np.ndarray]:
    """Sobel gradients ``(gx, gy)`` (int32, H x W) of the channel of largest gradient
    magnitude at each pixel (LINE-2D's colour rule: an edge visible in any channel counts),
    after a Gaussian blur of ``blur_sigma`` px; in 8-bit and 16-bit arithmetic, exact."""
    import cv2

    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"image must be (H, W) or (H, W, 3), got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}: convert with np.clip(x, 0, 255).astype(np.uint8)")
    x = np.ascontiguousarray(image)
    if blur_sigma > 0:
        x = cv2.GaussianBlur(x, (0, 0), blur_sigma)
    shape = x.shape if x.ndim == 3 else x.shape + (1,)
    gx = cv2.Sobel(x, cv2.CV_16S, 1, 0, ksize=3).reshape(shape).astype(np.int32)
    gy = cv2.Sobel(x, cv2.CV_16S, 0, 1, ksize=3).reshape(shape).astype(np.int32)
    if shape[2] == 1:
        return gx[..., 0], gy[..., 0]
    channel = (gx * gx + gy * gy).argmax(2)[..., None]
    return np.take_along_axis(gx, channel, 2)[..., 0], np.take_along_axis(gy, channel, 2)[..., 0]


def orientation_bins(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Orientation modulo 180 degrees of gradients, in :data:`NUM_BINS` bins of 22.5 degrees
    starting at 0 (a horizontal gradient, i.e. a vertical edge)."""
    angle = np.mod(np.degrees(np.arctan2(gy, gx)), 180.0)
    return (np.floor(angle / (180.0 / NUM_BINS)).astype(np.int64) % NUM_BINS).astype(np.uint8)


def quantized_orientations(image: np.ndarray, min_magnitude: float = 40.0, min_votes: int = 5,
                           mask: Optional[np.ndarray] = None, blur_sigma: float = 1.0) -> Tuple[np.ndarray, np.ndarray]:
    """Quantised gradient orientations of a uint8 image and their magnitudes.

    A pixel keeps the bin that most of its 3x3 neighbourhood (itself included) has among
    the pixels whose magnitude passes ``min_magnitude``, if at least ``min_votes`` of the 9
    have it and its own magnitude passes; elsewhere (and outside ``mask`` when given) it
    gets :data:`NO_ORIENTATION`. Returns ``(bins uint8 (H, W), magnitude float32 (H, W))``.
    """
    import cv2

    gx, gy = image_gradients(image, blur_sigma)
    squared = gx * gx + gy * gy
    strong = squared >= min_magnitude ** 2
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != squared.shape:
            raise ValueError(f"mask must be {squared.shape[0]}x{squared.shape[1]}, got shape {mask.shape}")
        strong &= mask
    raw = np.full(squared.shape, NO_ORIENTATION, np.uint8)
    raw[strong] = orientation_bins(gx[strong], gy[strong])  # the angle only where it can count
    # each bin's count over the 3x3 neighbourhood, all bins at once as 8 channels
    indicator = (raw[..., None] == np.arange(NUM_BINS, dtype=np.uint8)).astype(np.uint8)
    votes = cv2.boxFilter(indicator, -1, (3, 3), normalize=False, borderType=cv2.BORDER_CONSTANT)
    best = votes.argmax(2)
    keep = strong & (np.take_along_axis(votes, best[..., None], 2)[..., 0] >= min_votes)
    return np.where(keep, best, NO_ORIENTATION).astype(np.uint8), np.sqrt(squared.astype(np.float32))


def spread_points(xy: np.ndarray, strength: np.ndarray, count: int) -> np.ndarray:
    """Indices of at most ``count`` points of ``xy`` (n, 2), spread over the image: the
    strongest point of each cell of the coarsest square grid that still has ``count``
    occupied cells, then the strongest ``count`` of those. LINE-2D's scattered selection,
    without its quadratic greedy loop."""
    xy, strength = np.asarray(xy), np.asarray(strength)
    if len(xy) <= count:
        return np.argsort(-strength, kind="stable")
    rel = (xy - xy.min(0)).astype(np.int64)
    extent = int(rel.max()) + 1
    order = np.argsort(-strength, kind="stable")

    def cell_winners(cell: int) -> np.ndarray:  # the strongest point of each cell (order is by strength)
        _, first = np.unique((rel[order, 1] // cell) * (extent // cell + 1) + rel[order, 0] // cell,
                             return_index=True)
        return order[np.sort(first)]

    # the coarsest cell that still leaves ``count`` occupied cells, by bisection (cells
    # occupied grow, roughly, as the cell shrinks)
    lo, hi = 1, max(1, extent)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(cell_winners(mid)) >= count:
            lo = mid
        else:
            hi = mid - 1
    return cell_winners(lo)[:count]


def template_features(rgb: np.ndarray, mask: np.ndarray, num_features: int = 96, contour_share: float = 0.5,
                      min_magnitude: float = 40.0) -> Tuple[np.ndarray, np.ndarray]:
    """Sparse orientation features of one template rendered on a black background.

    Silhouette features take the orientation of the mask's own gradient (the contour of an
    object against any background); inner-edge features that of the render's colours,
    inside the mask shrunk by 3 px so that the silhouette is not counted twice. About
    ``contour_share`` of the ``num_features`` go to the silhouette, the rest to the
    strongest inner edges (more silhouette where the object has few inner edges), each
    set spread over the template (:func:`spread_points`). Returns ``(xy int16 (n, 2),
    bins uint8 (n,))``, ``n <= num_features``.
    """
    import cv2

    mask = np.asarray(mask, bool)
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return np.zeros((0, 2), np.int16), np.zeros(0, np.uint8)
    # the object's box and a margin for the blur and the silhouette's outer side: the rest
    # of the render is black
    margin = 6
    x0, y0 = max(0, xs.min() - margin), max(0, ys.min() - margin)
    x1, y1 = min(mask.shape[1], xs.max() + margin + 1), min(mask.shape[0], ys.max() + margin + 1)
    mask, rgb = mask[y0:y1, x0:x1], np.asarray(rgb)[y0:y1, x0:x1]
    silhouette = (mask * 255).astype(np.uint8)
    # the silhouette's orientation from the mask's own gradient: clean, so no majority vote
    gx, gy = image_gradients(silhouette)
    contour_magnitude = np.sqrt((gx * gx + gy * gy).astype(np.float32))
    edge = (contour_magnitude >= min_magnitude) & (silhouette != cv2.erode(silhouette, np.ones((3, 3), np.uint8)))
    contour_bins = np.full(mask.shape, NO_ORIENTATION, np.uint8)
    contour_bins[edge] = orientation_bins(gx[edge], gy[edge])
    inner = cv2.erode(silhouette, np.ones((7, 7), np.uint8)) > 0
    inner_bins, inner_magnitude = quantized_orientations(rgb, min_magnitude=min_magnitude, mask=inner)
    picked_xy, picked_bins = [], []
    inner_ys, inner_xs = np.nonzero(inner_bins != NO_ORIENTATION)
    num_inner = min(len(inner_xs), num_features - int(round(contour_share * num_features)))
    contour_ys, contour_xs = np.nonzero(contour_bins != NO_ORIENTATION)
    for xs, ys, bins, magnitude, count in ((contour_xs, contour_ys, contour_bins, contour_magnitude,
                                            num_features - num_inner),
                                           (inner_xs, inner_ys, inner_bins, inner_magnitude, num_inner)):
        if count <= 0 or len(xs) == 0:
            continue
        xy = np.stack([xs, ys], 1)
        keep = spread_points(xy, magnitude[ys, xs], count)
        picked_xy.append(xy[keep] + [x0, y0])
        picked_bins.append(bins[ys[keep], xs[keep]])
    if not picked_xy:
        return np.zeros((0, 2), np.int16), np.zeros(0, np.uint8)
    return np.concatenate(picked_xy).astype(np.int16), np.concatenate(picked_bins).astype(np.uint8)


def spread(bins: np.ndarray, T: int) -> np.ndarray:
    """Bit sets (uint8, H x W): bit ``b`` of a pixel is set when a pixel within the ``T`` x
    ``T`` window around it (offsets ``-(T // 2)`` to ``T - 1 - T // 2``) has orientation
    ``b``. Separable: OR along rows, then along columns."""
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    bins = np.asarray(bins)
    bits = np.where(bins == NO_ORIENTATION, 0, np.left_shift(1, np.minimum(bins, NUM_BINS - 1))).astype(np.uint8)
    lo = -(T // 2)
    out = bits
    for axis in (1, 0):
        acc = np.zeros_like(out)
        for d in range(lo, lo + T):
            acc |= _shifted(out, d, axis)
        out = acc
    return out


def _shifted(a: np.ndarray, d: int, axis: int) -> np.ndarray:
    """``a`` read at offset ``d`` along ``axis`` (``out[i] = a[i + d]``), zero beyond the edge."""
    out = np.zeros_like(a)
    n = a.shape[axis]
    if abs(d) >= n:
        return out
    src = [slice(None)] * 2
    dst = [slice(None)] * 2
    src[axis] = slice(max(d, 0), n + min(d, 0))
    dst[axis] = slice(max(-d, 0), n - max(d, 0))
    out[tuple(dst)] = a[tuple(src)]
    return out


def similarity_lookup() -> np.ndarray:
    """``lut[o, bits]`` (uint8, NUM_BINS x 256): the largest ``|cos|`` between orientation
    ``o`` and an orientation in the bit set ``bits``, times :data:`SIMILARITY_SCALE`."""
    step = np.pi / NUM_BINS
    cosine = np.abs(np.cos((np.arange(NUM_BINS)[:, None] - np.arange(NUM_BINS)[None]) * step))
    bits = (np.arange(256)[:, None] >> np.arange(NUM_BINS)[None]) & 1  # (256, NUM_BINS)
    best = (cosine[:, None, :] * bits[None]).max(2)  # (NUM_BINS, 256); the empty set gives 0
    return np.rint(best * SIMILARITY_SCALE).astype(np.uint8)


_LOOKUP = similarity_lookup()


def response_maps(spread_bits: np.ndarray) -> np.ndarray:
    """Per orientation ``o``, each pixel's similarity of ``o`` to what is spread there
    (uint8, NUM_BINS x H x W, in 0..SIMILARITY_SCALE)."""
    return _LOOKUP[:, np.asarray(spread_bits, np.uint8)]


def search_offsets(T: int, steps: int) -> np.ndarray:
    """Translations (n, 2) of ``-steps * T`` to ``steps * T`` px in steps of ``T``: with the
    responses spread over ``T`` px, the grid misses no position in between."""
    r = np.arange(-steps, steps + 1) * T
    return np.stack(np.meshgrid(r, r), -1).reshape(-1, 2)


def score_templates(responses: np.ndarray, templates: OrientationTemplates, centre: float,
                    offsets: np.ndarray, scales: Sequence[float] = (1.0,),
                    subset: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each template's best mean similarity over ``offsets`` (n, 2) and ``scales``.

    A template's features are scaled about the crop's centre pixel ``centre`` and moved by
    each offset; features that fall off the crop count as 0. Returns ``(scores float32
    (templates,) in [0, 1], best offset (templates, 2), best scale (templates,))``, for
    the templates ``subset`` (default: all).
    """
    num_bins, height, width = responses.shape
    xy, orientations = templates.xy, templates.bins
    if subset is not None:
        xy, orientations = xy[subset], orientations[subset]
    valid = orientations != NO_ORIENTATION
    offsets = np.asarray(offsets, np.int64).reshape(-1, 2)
    # a zero border wide enough for every scaled and moved feature, so the gather needs no
    # bounds check (the index of a feature at an offset is its own index plus the offset's),
    # and one more plane of zeros where unused slots and stray features read
    shift_px = int(np.abs(offsets).max(initial=0))
    reach = shift_px + int(np.ceil(max(abs(s - 1.0) for s in scales) * max(height, width))) + 1
    padded = np.zeros((num_bins + 1, height + 2 * reach, width + 2 * reach), np.uint8)
    padded[:num_bins, reach:reach + height, reach:reach + width] = responses
    flat = padded.reshape(-1)
    stride_y, stride_b = padded.shape[2], padded.shape[1] * padded.shape[2]
    shift = (offsets[:, 1] * stride_y + offsets[:, 0]).astype(np.int32)
    sink = num_bins * stride_b + reach * stride_y + reach
    best = np.full(len(xy), -1.0, np.float32)
    best_offset = np.zeros((len(xy), 2), np.int64)
    best_scale = np.ones(len(xy), np.float32)
    counts = np.maximum(valid.sum(1), 1).astype(np.float32) * SIMILARITY_SCALE
    for scale in scales:
        points = np.rint((xy.astype(np.float32) - centre) * scale + centre).astype(np.int64) + reach
        # a feature whose moves could leave the padded maps (coordinates beyond the crop) reads zeros
        usable = valid & (points >= shift_px).all(-1) & (points[..., 0] < padded.shape[2] - shift_px) & \
            (points[..., 1] < padded.shape[1] - shift_px)
        index = np.where(usable, orientations.astype(np.int64) * stride_b + points[..., 1] * stride_y + points[..., 0],
                         sink).astype(np.int32)
        sums = np.zeros((len(xy), len(shift)), np.int32)
        for k, d in enumerate(shift):  # one gather of every template's features per offset
            sums[:, k] = flat[index + d].sum(1, dtype=np.int32)
        k = sums.argmax(1)
        score = sums[np.arange(len(sums)), k] / counts
        better = score > best
        best[better], best_offset[better], best_scale[better] = score[better], offsets[k[better]], scale
    return best, best_offset, best_scale


def query_responses(crop: np.ndarray, mask: Optional[np.ndarray], T: int, min_magnitude: float = 40.0) -> np.ndarray:
    """Response maps of a query crop (:func:`quantized_orientations`, :func:`spread`,
    :func:`response_maps`), from the gradients inside ``mask`` only when given: background
    texture must not vote. With a mask, only its box (and the blur's margin) is quantised."""
    if mask is None:
        bins, _ = quantized_orientations(crop, min_magnitude=min_magnitude)
        return response_maps(spread(bins, T))
    mask = np.asarray(mask, bool)
    bins = np.full(mask.shape, NO_ORIENTATION, np.uint8)
    ys, xs = np.nonzero(mask)
    if len(xs):
        margin = 4  # the blur's and the Sobel's reach, so the box's pixels get their full-crop values
        y0, x0 = max(0, ys.min() - margin), max(0, xs.min() - margin)
        y1, x1 = min(mask.shape[0], ys.max() + margin + 1), min(mask.shape[1], xs.max() + margin + 1)
        bins[y0:y1, x0:x1], _ = quantized_orientations(np.ascontiguousarray(crop[y0:y1, x0:x1]),
                                                       min_magnitude=min_magnitude, mask=mask[y0:y1, x0:x1])
    return response_maps(spread(bins, T))


@dataclass
class ShapeMatches:
    """Every template's gradient-orientation score on one query crop.

    Attributes
    ----------
    scores : float32 (templates,)
        Mean ``|cos|`` similarity of the template's features, at its best offset and scale.
    offsets : int64 (templates, 2)
        The best translation (crop pixels) of the template's features.
    scales : float32 (templates,)
        The best scale of the template's features about the crop's centre.
    """

    scores: np.ndarray
    offsets: np.ndarray
    scales: np.ndarray

    def ranking(self, k: int) -> np.ndarray:
        """The ``k`` best templates, best first (ties: the lower index)."""
        return np.argsort(-self.scores, kind="stable")[:k]


def voting_region(crop_mask: Optional[np.ndarray], margin_px: int = MASK_MARGIN_PX) -> Optional[np.ndarray]:
    """The query pixels whose gradients vote: the object's mask dilated by ``margin_px``, so
    that its silhouette (on the mask's edge) counts; all (None) without a mask."""
    import cv2

    if crop_mask is None:
        return None
    side = 2 * margin_px + 1
    return cv2.dilate(np.asarray(crop_mask, np.uint8), np.ones((side, side), np.uint8)) > 0


def match_shapes(templates: OrientationTemplates, crop: np.ndarray, crop_mask: Optional[np.ndarray],
                 T: Optional[int] = None, steps: int = SEARCH_STEPS, scales: Sequence[float] = SEARCH_SCALES,
                 mask_margin_px: int = MASK_MARGIN_PX, subset: Optional[Sequence[int]] = None) -> ShapeMatches:
    """Scores the templates on a query crop framed like them (:func:`score_templates` over
    ``steps`` steps of ``T`` px, default :data:`SPREAD_SHARE` of the crop, and ``scales``),
    from the gradients inside the crop's object mask dilated by ``mask_margin_px`` (so that
    its silhouette counts) when given. Only the templates ``subset`` when given: the others
    score -1, offset 0, scale 1."""
    T = T or max(2, int(round(SPREAD_SHARE * crop.shape[1])))
    responses = query_responses(crop, voting_region(crop_mask, mask_margin_px), T)
    centre = (crop.shape[1] - 1) / 2.0
    if subset is None:
        return ShapeMatches(*score_templates(responses, templates, centre, search_offsets(T, steps), scales))
    subset = np.asarray(subset, np.int64)
    found = score_templates(responses, templates, centre, search_offsets(T, steps), scales, subset=subset)
    num_templates = len(templates.bins)
    scores = np.full(num_templates, -1.0, np.float32)
    offsets, best_scales = np.zeros((num_templates, 2), np.int64), np.ones(num_templates, np.float32)
    scores[subset], offsets[subset], best_scales[subset] = found
    return ShapeMatches(scores, offsets, best_scales)
