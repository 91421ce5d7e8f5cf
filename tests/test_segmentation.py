"""GrabCut segmentation of an object inside its box (pylocalize.objects.segmentation): rendered
objects over patterned backgrounds, whose true masks the renderer gives."""

from __future__ import annotations

import numpy as np
import pytest

from pylocalize.datasets.synthetic import textured_box_object
from pylocalize.geometry import look_at
from pylocalize.objects.segmentation import segment_in_box, silhouette_prior
from pylocalize.render import Renderer

cv2 = pytest.importorskip("cv2")

K = np.array([[600.0, 0, 319.5], [0, 600.0, 239.5], [0, 0, 1.0]])


def patterned_background(rng, height=480, width=640):
    """A tablecloth-like pattern: a two-colour check with stripes and pixel noise."""
    colours = rng.integers(0, 256, (2, 3))
    y, x = np.mgrid[:height, :width]
    check = ((x // rng.integers(12, 30)) + (y // rng.integers(12, 30))) % 2
    image = colours[check].astype(np.float64)
    image += 40 * np.sin(x / rng.uniform(3, 8))[..., None] + rng.normal(0, 12, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def cluttered_view(seed):
    rng = np.random.default_rng(seed)
    mesh = textured_box_object(seed % 4)
    d = rng.normal(size=3)
    d /= np.linalg.norm(d)
    pose = look_at(mesh.center + d * rng.uniform(2.5, 4.0) * mesh.extent, mesh.center, up=rng.normal(size=3))
    out = Renderer(640, 480, K, supersample=3).render(mesh, pose, outputs=("rgb", "mask"))
    mask = out.mask[0]
    image = np.where(mask[..., None], out.rgb[0], patterned_background(rng))
    ys, xs = np.nonzero(mask)
    box = (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
    return image, mask, box


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grabcut_finds_a_rendered_object_in_its_box(seed):
    image, truth, box = cluttered_view(seed)
    x, y, w, h = box
    in_box = np.zeros_like(truth)
    in_box[y:y + h, x:x + w] = True
    mask = segment_in_box(image, box)
    assert mask.dtype == bool and mask.shape == truth.shape and not (mask & ~in_box).any()
    # the box alone overlaps the object by ~0.6 (its corners are background)
    assert iou(mask, truth) > 0.85 and iou(mask, truth) > iou(in_box, truth) + 0.2
    np.testing.assert_array_equal(segment_in_box(image, box), mask)  # seeded: the same mask again
    # seeded by the true silhouette instead of the box
    assert iou(segment_in_box(image, box, prior=silhouette_prior(truth)), truth) > 0.85


def test_silhouette_prior_marks_a_band_around_the_outline():
    silhouette = np.zeros((40, 60), bool)
    silhouette[10:30, 20:40] = True
    labels = silhouette_prior(silhouette, band_px=3)
    near = np.zeros_like(silhouette)
    near[7:33, 17:43] = True  # the silhouette dilated by 3 px (square kernel)
    np.testing.assert_array_equal(labels == cv2.GC_PR_FGD, near)
    np.testing.assert_array_equal(labels == cv2.GC_PR_BGD, ~near)


def test_degenerate_boxes_and_bad_input():
    image, truth, box = cluttered_view(0)
    assert not segment_in_box(image, (100, 100, 0, 30)).any()  # an empty box holds nothing
    assert not segment_in_box(image, (700, 100, 30, 30)).any()  # a box off the image
    whole = segment_in_box(image, (0, 0, 640, 480))  # no background left to learn from: the whole box
    assert whole.all()
    with pytest.raises(ValueError, match="prior must be 480x640"):
        segment_in_box(image, box, prior=np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        segment_in_box(image.astype(np.float32), box)
