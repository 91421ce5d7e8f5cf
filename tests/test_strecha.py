"""The Strecha scene reader (pylocalize.datasets.strecha) and the cameras of queries inside a scene."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pylocalize.datasets.strecha import (
    camera_file_of_image,
    read_strecha_camera,
    read_strecha_poses,
    read_strecha_scene,
)
from pylocalize.geometry import Camera, look_at

STRECHA = Path(__file__).resolve().parents[2] / "shared" / "data" / "strecha" / "fountain-P11"


def _write_scene(folder: Path, num_images: int = 3):
    """A Strecha folder of small images; returns {name: (K, cam_from_world)}."""
    (folder / "images").mkdir(parents=True)
    (folder / "gt_dense_cameras").mkdir()
    truth = {}
    for i in range(num_images):
        name = f"{i:04d}.jpg"
        K = np.array([[100.0 + i, 0, 31.5], [0, 101.0 + i, 23.5], [0, 0, 1]])
        pose = look_at([np.cos(i), np.sin(i), 2.0], [0, 0, 0])
        R_wc, centre = pose[:, :3].T, -pose[:, :3].T @ pose[:, 3]  # the file holds camera-to-world R and centre
        rows = [*K, [0, 0, 0], *R_wc, centre, [64, 48]]
        text = "".join(" ".join(f"{v:.17g}" for v in row) + "\n" for row in rows)
        (folder / "gt_dense_cameras" / (name + ".camera")).write_text(text)
        Image.new("RGB", (64, 48)).save(folder / "images" / name)
        truth[name] = (K, pose)
    return truth


def test_scene_cameras_and_poses(tmp_path):
    from pylocalize.localization import load_poses
    from pylocalize.localization import read_strecha_camera as old_path

    truth = _write_scene(tmp_path / "scene")
    assert old_path is read_strecha_camera  # the reader's old import path still works
    for name, (K, pose) in truth.items():
        got_K, got_pose = read_strecha_camera(tmp_path / "scene" / "gt_dense_cameras" / (name + ".camera"))
        np.testing.assert_allclose(got_K, K)
        np.testing.assert_allclose(got_pose, pose, atol=1e-12)
    poses = read_strecha_poses(tmp_path / "scene")
    assert list(poses) == sorted(truth) and list(load_poses(tmp_path / "scene")) == sorted(truth)
    scene = read_strecha_scene(tmp_path / "scene", exclude=["0001.jpg"])
    assert scene.names == ["0000.jpg", "0002.jpg"] and scene.image_dir == tmp_path / "scene" / "images"
    np.testing.assert_allclose(scene.K[1], truth["0002.jpg"][0])
    np.testing.assert_allclose(scene.cam_from_world[1], truth["0002.jpg"][1], atol=1e-12)
    with pytest.raises(ValueError, match="every image is excluded"):
        read_strecha_scene(tmp_path / "scene", exclude=list(truth))
    with pytest.raises(ValueError, match="not a Strecha folder"):
        read_strecha_scene(tmp_path / "scene" / "images")
    (tmp_path / "short.camera").write_text("1 0 0\n0 1 0\n0 0 1\n")
    with pytest.raises(ValueError, match="not a Strecha camera file"):
        read_strecha_camera(tmp_path / "short.camera")
    if STRECHA.is_dir():
        real = read_strecha_scene(STRECHA)
        assert len(real.names) == 11 and np.allclose(real.K[:, 2], [0, 0, 1])


def test_query_cameras_come_from_the_scene_or_the_options(tmp_path):
    from pylocalize.localization.cli import query_camera

    truth = _write_scene(tmp_path / "scene")
    image = tmp_path / "scene" / "images" / "0001.jpg"
    assert camera_file_of_image(image) == tmp_path / "scene" / "gt_dense_cameras" / "0001.jpg.camera"
    camera, source, guessed = query_camera(image)
    assert source == "Strecha .camera file" and (camera.width, camera.height) == (64, 48) and not guessed
    np.testing.assert_allclose(camera.K, truth["0001.jpg"][0])
    fixed = Camera.from_string("PINHOLE 64 48 90 90 32 24")
    assert query_camera(image, fixed=fixed) == (fixed, "--camera", False)  # the options come first
    assert query_camera(image, per_name={"0001.jpg": fixed}) == (fixed, "--cameras", False)
    with pytest.raises(ValueError, match="no camera for 0001.jpg in --cameras"):
        query_camera(image, per_name={})
    outside = tmp_path / "photo.jpg"
    Image.new("RGB", (64, 48)).save(outside)
    assert camera_file_of_image(outside) is None
    camera, source, guessed = query_camera(outside)  # neither: EXIF, or 1.2 x the larger side without it
    assert "assumed 1.2" in source and guessed and camera.params[0] == pytest.approx(1.2 * 64)
