"""Cameras (COLMAP models, EXIF), similarity alignment and descriptor matching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pylocalize.geometry import Camera, read_cameras_file, similarity_from_points, transform_pose

LUND = Path(__file__).resolve().parents[2] / "shared" / "data" / "lund" / "images"


def test_camera_strings_round_trip_and_errors():
    camera = Camera.from_string("SIMPLE_RADIAL 640 480 500 320 240 0.1")
    assert Camera.from_string(camera.to_string()) == camera
    np.testing.assert_allclose(camera.K, [[500, 0, 319.5], [0, 500, 239.5], [0, 0, 1]])
    assert Camera.from_K(camera.K, 640, 480).params == (500, 500, 320, 240)
    for text, message in [("PINHOLE 640", "MODEL W H"), ("FOO 640 480 1 2 3", "unknown camera model"),
                          ("PINHOLE 640 480 500 500", "takes 4 parameters"), ("PINHOLE 0 480 1 1 1 1", "positive"),
                          ("PINHOLE 640 480 -5 500 320 240", "focal"), ("PINHOLE 640 480 nan 5 3 3", "finite")]:
        with pytest.raises(ValueError, match=message):
            Camera.from_string(text)


def test_undistort_inverts_the_distortion_model():
    """Points projected through a distorting model by pycolmap come back to the ideal
    pinhole projection K (x / z)."""
    rng = np.random.default_rng(0)
    points = np.c_[rng.uniform(-0.5, 0.5, (200, 2)), np.ones(200)] * rng.uniform(2, 9, (200, 1))
    for text in ["SIMPLE_RADIAL 800 600 700 400 300 -0.08", "OPENCV 800 600 700 690 401 299 -0.1 0.02 0.001 -0.002",
                 "PINHOLE 800 600 700 690 401 299"]:
        camera = Camera.from_string(text)
        distorted = camera.project(points)
        ideal = points[:, :2] / points[:, 2:] * camera.K[[0, 1], [0, 1]] + camera.K[:2, 2]
        np.testing.assert_allclose(camera.undistort(distorted), ideal, atol=1e-6)
    half = Camera.from_string("SIMPLE_RADIAL 800 600 700 400 300 -0.08").scaled(400, 300)
    assert half.params == (350, 200, 150, -0.08)


def test_cameras_from_exif_and_files(tmp_path):
    from PIL import Image

    plain = tmp_path / "plain.jpg"
    Image.new("RGB", (640, 480)).save(plain)
    camera, note = Camera.from_exif(plain)
    assert camera.params[0] == pytest.approx(1.2 * 640) and "assumed 1.2" in note
    exif = Image.Exif()
    exif.get_ifd(0x8769).update({0x920A: 4.0, 0xA20E: 1000.0, 0xA210: 4, 0xA002: 1280})  # 4 mm, 1000 px/mm
    Image.new("RGB", (640, 480)).save(tmp_path / "exif.jpg", exif=exif)
    camera, note = Camera.from_exif(tmp_path / "exif.jpg")
    assert camera.params[0] == pytest.approx(4.0 * 1000 * 640 / 1280) and "focal-plane" in note
    if LUND.is_dir():  # real phone photos: 35 mm-equivalent focal length 35 mm, 1024 px wide
        camera, note = Camera.from_exif(LUND / "01.jpg")
        assert camera.params[0] == pytest.approx(35 / 36 * 1024) and "35 mm" in note
    (tmp_path / "cams.txt").write_text("# name MODEL W H PARAMS\na.jpg PINHOLE 640 480 500 500 320 240\n\n"
                                       "b.jpg SIMPLE_PINHOLE 320 240 250 160 120\n")
    cameras = read_cameras_file(tmp_path / "cams.txt")
    assert sorted(cameras) == ["a.jpg", "b.jpg"] and cameras["b.jpg"].model == "SIMPLE_PINHOLE"
    (tmp_path / "bad.txt").write_text("a.jpg PINHOLE 640 480 500\n")
    with pytest.raises(ValueError, match="bad.txt:1"):
        read_cameras_file(tmp_path / "bad.txt")


def test_similarity_alignment_recovers_a_known_transform():
    from pylocalize.geometry import look_at

    rng = np.random.default_rng(1)
    src = rng.normal(size=(30, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    dst = 3.0 * src @ q.T + [1.0, -2.0, 0.5] + rng.normal(scale=1e-4, size=src.shape)
    s, R, t = similarity_from_points(src, dst)
    assert s == pytest.approx(3.0, rel=1e-4) and np.abs(R - q).max() < 1e-4
    P = look_at([1.0, 0.0, 1.0], [0.0, 0.0, 0.0])
    X = np.array([0.1, 0.2, 0.3])
    moved = transform_pose(P, s, R, t)
    a, b = P[:, :3] @ X + P[:, 3], moved[:, :3] @ (s * R @ X + t) + moved[:, 3]
    np.testing.assert_allclose(a[:2] / a[2], b[:2] / b[2], atol=1e-9)  # the same image point
    with pytest.raises(ValueError, match="n >= 3"):
        similarity_from_points(src[:2], dst[:2])


def test_match_descriptors_against_brute_force():
    from pylocalize.features import match_descriptors

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
