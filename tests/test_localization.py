"""Localization end to end on a synthetic scene with exact poses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pycolmap")

from pylocalize.datasets.synthetic import courtyard_scene  # noqa: E402
from pylocalize.localization import Map  # noqa: E402


def pose_errors(est, gt):
    dR = est[:, :3].T @ gt[:, :3]
    angle = np.degrees(np.arccos(np.clip((np.trace(dR) - 1) / 2, -1, 1)))
    c_est = -est[:, :3].T @ est[:, 3]
    c_gt = -gt[:, :3].T @ gt[:, 3]
    return float(np.linalg.norm(c_est - c_gt)), float(angle)


@pytest.fixture(scope="module")
def scene_and_map():
    scene = courtyard_scene(num_views=12, seed=2, width=480, height=360)
    return scene, Map.from_views(scene.images, scene.K, scene.cam_from_world, scene.names, max_features=1500)


def test_map_points_lie_on_the_rendered_surfaces(scene_and_map):
    """Each triangulated point sits at the rendered depth where its image observed it."""
    scene, m = scene_and_map
    assert len(m.points3D) > 500
    rel = []
    for i, ids in enumerate(m.point_ids):
        seen = np.flatnonzero(ids >= 0)
        cam = m.points3D[ids[seen]] @ scene.cam_from_world[i][:, :3].T + scene.cam_from_world[i][:, 3]
        u, v = np.rint(m.keypoints[i][seen]).astype(int).T
        rendered = scene.depths[i][np.clip(v, 0, 359), np.clip(u, 0, 479)]
        rel.append(np.abs(cam[:, 2] - rendered) / rendered)
    rel = np.concatenate(rel)
    assert np.median(rel) < 0.005 and (rel < 0.03).mean() > 0.95


def test_queries_localize_to_centimetres(scene_and_map):
    scene, m = scene_and_map
    poses = scene.query_poses(3, seed=4)
    images, _ = scene.render(poses)
    for pose, image in zip(poses, images):
        result = m.localize(image, scene.K)
        assert result.success, result.reason
        t_err, r_err = pose_errors(result.cam_from_world, pose)
        assert t_err < 0.05 and r_err < 0.5  # 480x360 images, points up to 15 m away
        assert result.num_inliers >= 50 and result.inlier_mask.sum() == result.num_inliers
        assert result.retrieved and set(result.timings) >= {"features", "retrieval", "matching", "pose"}


def test_unlocalizable_queries_report_why(scene_and_map):
    scene, m = scene_and_map
    blank = np.full((360, 480, 3), 128, np.uint8)
    result = m.localize(blank, scene.K)
    assert not result.success and result.reason and result.cam_from_world is None
    noise = np.random.default_rng(0).integers(0, 256, (360, 480, 3), dtype=np.uint8)
    result = m.localize(noise, scene.K)
    assert not result.success and result.reason


def test_evaluate_poses_and_sources(tmp_path, capsys):
    from pylocalize.cli import main
    from pylocalize.geometry import look_at, write_pose_file
    from pylocalize.localization import evaluate_poses, load_poses, pose_error

    gt = {f"im{i}.jpg": look_at([np.cos(i), np.sin(i), 1.0], [0, 0, 0]) for i in range(4)}
    pred = dict(gt)
    shifted = gt["im1.jpg"].copy()
    shifted[:, 3] -= shifted[:, :3] @ np.array([0.3, 0.0, 0.0])  # centre moved by 0.3 m
    pred["im1.jpg"] = shifted
    del pred["im3.jpg"]  # missing: a failure
    assert pose_error(shifted, gt["im1.jpg"]) == pytest.approx((0.3, 0.0), abs=1e-9)
    result = evaluate_poses(gt, pred)
    assert result["num_estimated"] == 3
    assert result["recall@(0.25m,2deg)"] == 0.5 and result["recall@(0.5m,5deg)"] == 0.75
    write_pose_file(tmp_path / "gt.txt", gt.items())
    write_pose_file(tmp_path / "pred.txt", pred.items())
    assert main(["evaluate", "--gt", str(tmp_path / "gt.txt"), "--pred", str(tmp_path / "pred.txt")]) == 0
    assert "3/4 images estimated" in capsys.readouterr().out
    with pytest.raises(ValueError, match="not a pose file"):
        load_poses(tmp_path)


def test_ground_truth_loaders(tmp_path, scene_and_map):
    from pathlib import Path

    from pylocalize.localization import load_poses

    scene, _ = scene_and_map
    scene.export(tmp_path / "scene")
    from_model = load_poses(tmp_path / "scene" / "sparse")
    from_file = load_poses(tmp_path / "scene" / "poses.txt")
    for name, pose in zip(scene.names, scene.cam_from_world):
        np.testing.assert_allclose(from_model[name], pose, atol=1e-9)
        np.testing.assert_allclose(from_file[name], pose, atol=1e-8)
    strecha = Path(__file__).resolve().parents[2] / "shared" / "data" / "strecha" / "fountain-P11"
    if strecha.is_dir():
        poses = load_poses(strecha)
        assert len(poses) == 11 and "0000.jpg" in poses
        R = poses["0000.jpg"][:, :3]
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-5)


def test_map_save_load_round_trip(tmp_path, scene_and_map):
    import pylocalize
    from pylocalize.localization import Map

    scene, m = scene_and_map
    m.save(tmp_path / "map.pyloc")
    loaded = Map.load(tmp_path / "map.pyloc")
    assert loaded.names == m.names and len(loaded.points3D) == len(m.points3D)
    np.testing.assert_array_equal(loaded.points3D, m.points3D)
    for a, b in zip(loaded.point_ids, m.point_ids):
        np.testing.assert_array_equal(a, b)
    pose = scene.query_poses(1, seed=9)[0]
    image = scene.render(pose)[0][0]
    r1, r2 = m.localize(image, scene.K), loaded.localize(image, scene.K)
    assert r1.success and r2.success
    np.testing.assert_allclose(r1.cam_from_world, r2.cam_from_world, atol=1e-6)
    index_file = tmp_path / "index.pyloc"
    pylocalize.BinaryIndex(64).save(index_file)
    with pytest.raises(pylocalize.FormatError, match="not a LocalizationMap"):
        Map.load(index_file)
    data = bytearray((tmp_path / "map.pyloc").read_bytes())
    data[-10] ^= 0xFF
    (tmp_path / "bad.pyloc").write_bytes(bytes(data))
    with pytest.raises(pylocalize.FormatError):
        Map.load(tmp_path / "bad.pyloc")


@pytest.mark.skipif(not (Path(__file__).resolve().parents[2] / "shared/data/strecha/entry-P10").is_dir(),
                    reason="needs ../shared/data")
def test_cli_build_localize_evaluate_on_strecha(tmp_path, capsys):
    from pylocalize.cli import main, parse_camera

    scene = Path(__file__).resolve().parents[2] / "shared/data/strecha/entry-P10"
    assert main(["map", "build", "--strecha", str(scene), "--exclude", "0004.jpg,0007.jpg",
                 "--max-features", "1500", "--out", str(tmp_path / "map.pyloc")]) == 0
    queries = [str(scene / "images" / n) for n in ("0004.jpg", "0007.jpg")] + [str(tmp_path / "missing.jpg")]
    assert main(["localize", "--map", str(tmp_path / "map.pyloc"), "--images", *queries,
                 "--out", str(tmp_path / "poses.txt")]) == 0
    out = capsys.readouterr().out
    assert "missing.jpg: failed" in out and "2 localized, 1 failed" in out
    assert main(["evaluate", "--gt", str(scene), "--pred", str(tmp_path / "poses.txt")]) == 0
    from pylocalize.localization import evaluate_poses, load_poses

    gt = {k: v for k, v in load_poses(scene).items() if k in ("0004.jpg", "0007.jpg")}
    result = evaluate_poses(gt, load_poses(tmp_path / "poses.txt"))
    assert result["recall@(0.25m,2deg)"] == 1.0 and result["median_translation_m"] < 0.05
    K, size = parse_camera("PINHOLE 640 480 500 500 320.5 240.5")
    assert size == (640, 480) and K[0, 2] == 320.0
    with pytest.raises(ValueError, match="MODEL W H"):
        parse_camera("PINHOLE 640")


def test_half_the_query_from_another_scene_still_localizes(scene_and_map):
    scene, m = scene_and_map
    other = courtyard_scene(num_views=1, seed=77, width=480, height=360)
    pose = scene.query_poses(1, seed=13)[0]
    image = scene.render(pose)[0][0].copy()
    image[:, 240:] = other.images[0][:, 240:]  # half the features are outliers
    result = m.localize(image, scene.K)
    assert result.success, result.reason
    t_err, r_err = pose_errors(result.cam_from_world, pose)
    assert t_err < 0.1 and r_err < 1.0


def test_empty_map_fails_cleanly(scene_and_map):
    scene, _ = scene_and_map
    empty = Map([], np.zeros((0, 3, 3)), np.zeros((0, 3, 4)), [], [], [], np.zeros((0, 3)))
    result = empty.localize(scene.images[0], scene.K)
    assert not result.success and "3D points" in result.reason
