"""Cameras: COLMAP models, EXIF, camera files, undistortion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pylocalize.geometry import Camera, read_cameras_file

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
