"""Synthetic scenes: determinism, geometric consistency of poses and depth, export."""

from __future__ import annotations

import numpy as np
import pycolmap
import pytest

from pylocalize.datasets.synthetic import courtyard_scene
from pylocalize.geometry import read_pose_file


@pytest.fixture(scope="module")
def scene():
    return courtyard_scene(num_views=12, seed=3, width=256, height=192)


def unproject(scene, i, u, v):
    d = scene.depths[i][v, u].astype(np.float64)
    K = scene.K
    cam = np.stack([(u - K[0, 2]) / K[0, 0] * d, (v - K[1, 2]) / K[1, 1] * d, d], 1)
    R, t = scene.cam_from_world[i][:, :3], scene.cam_from_world[i][:, 3]
    return (cam - t) @ R  # R^T (x - t)


def test_deterministic_from_seed(scene):
    again = courtyard_scene(num_views=12, seed=3, width=256, height=192)
    np.testing.assert_array_equal(again.images, scene.images)
    np.testing.assert_array_equal(again.cam_from_world, scene.cam_from_world)
    other = courtyard_scene(num_views=6, seed=4, width=256, height=192, render=False)
    assert not np.array_equal(other.mesh.texture, scene.mesh.texture)


def test_depth_points_lie_on_the_scene_surfaces(scene):
    rng = np.random.default_rng(0)
    u, v = rng.integers(0, 256, 500), rng.integers(0, 192, 500)
    for i in range(len(scene.names)):
        hit = scene.depths[i][v, u] > 0
        x = unproject(scene, i, u[hit], v[hit])
        on_ground = np.abs(x[:, 2]) < 1e-3
        on_wall = np.abs(np.abs(x[:, :2]).max(1) - scene.half_size) < 1e-3
        # boxes: inside the courtyard, above ground, below the tallest box
        on_box = (~on_ground) & (~on_wall) & (x[:, 2] > 0) & (x[:, 2] <= 3.0 + 1e-3)
        assert (on_ground | on_wall | on_box).all()
        assert (np.abs(x[:, :2]) <= scene.half_size + 1e-3).all()


def test_views_agree_through_depth_and_poses(scene):
    """A surface point seen in view i projects into view j at a pixel of the same depth."""
    rng = np.random.default_rng(1)
    u, v = rng.integers(0, 256, 5000), rng.integers(0, 192, 5000)
    checked = 0
    for i, j in [(0, 1), (1, 2), (2, 3)]:
        x = unproject(scene, i, u, v)
        R, t = scene.cam_from_world[j][:, :3], scene.cam_from_world[j][:, 3]
        c = x @ R.T + t
        p = c @ scene.K.T
        uj, vj = p[:, 0] / p[:, 2], p[:, 1] / p[:, 2]
        ui, vi = np.rint(uj).astype(int), np.rint(vj).astype(int)
        near_centre = (np.abs(uj - ui) < 0.25) & (np.abs(vj - vi) < 0.25)
        inside = (c[:, 2] > 0.1) & (ui >= 1) & (ui < 255) & (vi >= 1) & (vi < 191) & near_centre
        dj = scene.depths[j][vi[inside], ui[inside]]
        visible = np.abs(dj - c[inside, 2]) < 0.02 * c[inside, 2]
        checked += inside.sum()
        # Points occluded in view j are nearer-surface hits there; most must agree.
        assert visible.mean() > 0.8
    assert checked > 200


def test_query_poses_are_new_and_near_the_loop(scene):
    q = scene.query_poses(10, seed=5)
    centers = -np.einsum("nji,nj->ni", q[:, :, :3], q[:, :, 3])
    r = np.linalg.norm(centers[:, :2], axis=1)
    assert (np.abs(r - scene.path_radius) <= 0.6 + 1e-9).all()
    db = -np.einsum("nji,nj->ni", scene.cam_from_world[:, :, :3], scene.cam_from_world[:, :, 3])
    assert np.min(np.linalg.norm(centers[:, None] - db[None], axis=2)) > 1e-3
    np.testing.assert_array_equal(q, scene.query_poses(10, seed=5))


def test_export_colmap_and_pose_file(scene, tmp_path):
    out = scene.export(tmp_path / "scene")
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(scene.names)
    rec = pycolmap.Reconstruction(str(out / "sparse"))
    assert rec.num_images() == len(scene.names)
    poses = read_pose_file(out / "poses.txt")
    for image in rec.images.values():
        i = scene.names.index(image.name)
        np.testing.assert_allclose(image.cam_from_world().matrix(), scene.cam_from_world[i], atol=1e-9)
        np.testing.assert_allclose(poses[image.name], scene.cam_from_world[i], atol=1e-8)
    cam = rec.cameras[1]
    # COLMAP puts pixel centres at +0.5, pylocalize (OpenCV) at integers
    np.testing.assert_allclose(cam.calibration_matrix(), scene.K + np.array([[0, 0, 0.5], [0, 0, 0.5], [0, 0, 0]]))
