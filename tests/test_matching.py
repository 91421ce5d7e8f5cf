"""Descriptor matching: Lowe's ratio test, the mutual check and group-aware ratios, against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from pylocalize.features import match_descriptors


def test_match_descriptors_against_brute_force():
    rng = np.random.default_rng(2)
    b = rng.integers(0, 256, (300, 128)).astype(np.float32)
    a = np.concatenate([b[:100] + rng.normal(scale=8, size=(100, 128)), rng.integers(0, 256, (50, 128))])
    d = np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))
    order = np.argsort(d, 1)
    nearest, second = order[:, 0], d[np.arange(len(a)), order[:, 1]]
    back = np.argmin(d, 0)
    expected = [(i, nearest[i]) for i in range(len(a))
                if d[i, nearest[i]] < 0.8 * second[i] and back[nearest[i]] == i]
    got = match_descriptors(a, b, 0.8)
    assert [tuple(x) for x in got] == expected and len(expected) >= 95
    # two copies of each feature under one group label: the ratio test looks past the copy
    groups = np.r_[np.arange(300), np.arange(300)]
    doubled = match_descriptors(a[:100], np.concatenate([b, b + 0.5]), 0.8, mutual=False, groups_b=groups)
    assert len(doubled) >= 95 and (groups[doubled[:, 1]] == doubled[:, 0]).all()
    assert len(match_descriptors(a[:100], np.concatenate([b, b + 0.5]), 0.8, mutual=False)) == 0


def test_extract_sift_reads_a_path_as_its_pixels(tmp_path):
    from PIL import Image

    from pylocalize.features import extract_sift

    rng = np.random.default_rng(3)
    image = (rng.random((120, 160)) * 255).astype(np.uint8)
    image = np.kron(image[::4, ::4], np.ones((4, 4), np.uint8))  # blocks: corners SIFT keeps
    Image.fromarray(image).save(tmp_path / "blocks.png")
    from_path = extract_sift(tmp_path / "blocks.png", 500)
    from_str = extract_sift(str(tmp_path / "blocks.png"), 500)
    from_pixels = extract_sift(np.stack([image] * 3, -1), 500)  # the file decodes to RGB
    assert len(from_pixels[0]) > 20
    for a, b in zip(from_path + from_str, from_pixels + from_pixels):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="no such image file"):
        extract_sift(tmp_path / "missing.jpg")


def test_to_gray_is_the_channel_mean_rounded_down_for_every_layout():
    """The grey image SIFT and ORB see, against numpy's mean of the three channels."""
    from pylocalize.features.sift import to_gray

    rng = np.random.default_rng(11)
    rgb = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    expected = (rgb.astype(np.int64).sum(-1) // 3).astype(np.uint8)
    assert np.array_equal(to_gray(rgb), expected)
    rgba = np.concatenate([rgb, np.full((40, 50, 1), 7, np.uint8)], axis=2)
    assert np.array_equal(to_gray(rgba), expected)
    assert np.array_equal(to_gray(rgb[..., 0]), rgb[..., 0])
    assert np.array_equal(to_gray(rgb.astype(np.float32) / 255), np.rint(rgb.mean(-1)).astype(np.uint8))
    with pytest.raises(ValueError, match="too small"):
        to_gray(rgb[:8])
