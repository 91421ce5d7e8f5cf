"""Readers of the public visual-localization datasets (Cambridge Landmarks, 7-Scenes, Aachen in hloc's
layout) and the scripts of benchmarks/public, on miniature copies of each layout that the tests write:
rendered views of the built-in courtyard with known poses, in the dataset's folders, names, file
formats and pose conventions."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pylocalize.datasets.cambridge import read_cambridge_scene, read_cambridge_split, read_nvm_cameras
from pylocalize.datasets.hloc_layout import check_submission, read_hloc_dataset, submission_name, write_submission
from pylocalize.datasets.seven_scenes import read_seven_scenes_pose, read_seven_scenes_scene
from pylocalize.datasets.synthetic import courtyard_scene
from pylocalize.geometry import Camera, quaternion_from_matrix, read_pose_file
from pylocalize.localization import pose_error

PUBLIC = Path(__file__).resolve().parents[1] / "benchmarks" / "public"
NUM_QUERIES = 4


@pytest.fixture(scope="module")
def views():
    """The courtyard's database views and a few query views, rendered once for every layout."""
    scene = courtyard_scene(num_views=12, seed=3, width=400, height=300)
    query_poses = scene.query_poses(NUM_QUERIES, seed=1)
    query_images, query_depths = scene.render(query_poses)
    return scene, query_poses, query_images, query_depths


def _script(name):
    spec = importlib.util.spec_from_file_location(f"public_{name}", PUBLIC / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _centre(pose):
    return -pose[:, :3].T @ pose[:, 3]


def _reprojection_px(camera: Camera, cam_from_world, true_K, true_pose, depth) -> float:
    """Largest pixel distance between where the true camera saw surface points (pixels with
    their rendered depth, lifted to the world with the true pose) and where the read camera
    and pose project them: the pose convention and the principal point checked together."""
    rng = np.random.default_rng(0)
    h, w = depth.shape
    pixels = np.stack([rng.integers(0, w, 200), rng.integers(0, h, 200)], 1)
    z = depth[pixels[:, 1], pixels[:, 0]].astype(np.float64)
    pixels, z = pixels[z > 0], z[z > 0]
    rays = np.linalg.solve(true_K, np.vstack([pixels.T, np.ones(len(pixels))]))
    points_world = ((rays * z) - true_pose[:, 3:]).T @ true_pose[:, :3]  # R^T (x_cam - t)
    points_cam = points_world @ cam_from_world[:, :3].T + cam_from_world[:, 3]
    return float(np.abs(camera.project(points_cam) - pixels).max())


# ------------------------------------------------------------------ Cambridge Landmarks


def _write_cambridge(folder: Path, scene, query_poses, query_images):
    """A Cambridge scene folder: seq1 for training, seq2 for testing, png frames, split files
    (centre + world-to-camera quaternion), reconstruction.nvm (names in .jpg)."""
    frames = {}
    for i, (pose, image) in enumerate(zip(scene.cam_from_world, scene.images)):
        frames[f"seq1/frame{i + 1:05d}.png"] = (pose, image)
    for i, (pose, image) in enumerate(zip(query_poses, query_images)):
        frames[f"seq2/frame{i + 1:05d}.png"] = (pose, image)
    for name, (_, image) in frames.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / name, compress_level=1)

    def line(name, pose):
        q, c = quaternion_from_matrix(pose[:, :3]), _centre(pose)
        return name + " " + " ".join(f"{v:.17g}" for v in (*c, *q))

    header = "Visual Landmark Dataset V1\nImageFile, Camera Position [X Y Z W P Q R]\n\n"
    for split, seq in (("train", "seq1"), ("test", "seq2")):
        lines = [line(n, p) for n, (p, _) in frames.items() if n.startswith(seq)]
        (folder / f"dataset_{split}.txt").write_text(header + "\n".join(lines) + "\n")
    # the model holds every frame but the last test frame, which the reader must leave out
    cameras = [name for name in frames if name != f"seq2/frame{NUM_QUERIES:05d}.png"]
    focal = scene.K[0, 0]
    nvm = ["NVM_V3", "", str(len(cameras))]
    for name in cameras:
        pose = frames[name][0]
        q, c = quaternion_from_matrix(pose[:, :3]), _centre(pose)
        nvm.append(name.replace(".png", ".jpg") + " " + " ".join(f"{v:.17g}" for v in (focal, *q, *c)) + " -1e-8 0")
    nvm += ["", "0", "", "0", ""]
    (folder / "reconstruction.nvm").write_text("\n".join(nvm))
    return {n: p for n, (p, _) in frames.items()}


def test_cambridge_reader(tmp_path, views):
    scene, query_poses, query_images, query_depths = views
    folder = tmp_path / "ShopFacade"
    truth = _write_cambridge(folder, scene, query_poses, query_images)
    read = read_cambridge_scene(folder)
    assert read.train == [f"seq1/frame{i + 1:05d}.png" for i in range(len(scene.names))]
    assert read.test == [f"seq2/frame{i + 1:05d}.png" for i in range(NUM_QUERIES - 1)]  # the last has no camera
    assert read.skipped == [f"seq2/frame{NUM_QUERIES:05d}.png"]
    for name, pose in truth.items():
        np.testing.assert_allclose(read.cam_from_world[name], pose, atol=1e-9)
    for i, name in enumerate(read.test):
        camera = read.cameras[name]
        assert (camera.width, camera.height) == (scene.width, scene.height) and read.radial[name] == -1e-8
        np.testing.assert_allclose(camera.K, scene.K, atol=1e-9)
        error = _reprojection_px(camera, read.cam_from_world[name], scene.K, query_poses[i], query_depths[i])
        assert error < 1e-6
    nvm = read_nvm_cameras(folder / "reconstruction.nvm")
    assert "seq1/frame00001.jpg" in nvm and nvm["seq1/frame00001.jpg"].focal == scene.K[0, 0]
    # malformed files name their line
    bad = tmp_path / "bad.txt"
    bad.write_text("a\nb\n\nseq1/frame00001.png 1 2 3 1 0 0\n")
    with pytest.raises(ValueError, match=r"bad.txt:4: expected 'name X Y Z W P Q R'"):
        read_cambridge_split(bad)
    bad.write_text("NVM_V3\n\n1\nseq1/frame00001.jpg 500 1 0 0 0 0 0 0 0 0\n")  # identity at the origin: valid
    np.testing.assert_array_equal(read_nvm_cameras(bad)["seq1/frame00001.jpg"].cam_from_world, np.eye(3, 4))
    bad.write_text("a\nb\n\nseq1/frame00001.png 1 2 3 0 0 0 0\n")
    with pytest.raises(ValueError, match="bad.txt:4: the quaternion of seq1/frame00001.png is zero"):
        read_cambridge_split(bad)
    bad.write_text("NVM_V3\n\n1\nseq1/frame00001.jpg 500 1 0 0\n")
    with pytest.raises(ValueError, match=r"bad.txt:4: expected 'name f qw qx qy qz Cx Cy Cz k 0'"):
        read_nvm_cameras(bad)
    with pytest.raises(FileNotFoundError, match="dataset_train.txt"):
        read_cambridge_scene(tmp_path)


def test_cambridge_script_end_to_end(tmp_path, views, capsys):
    scene, query_poses, query_images, _ = views
    folder = tmp_path / "ShopFacade"
    truth = _write_cambridge(folder, scene, query_poses, query_images)
    script = _script("cambridge")
    out = tmp_path / "out"
    assert script._common.main_of(script.parser(), [str(folder), "--out", str(out), "--max-features", "1200",
                                                    "--limit", "2", "-q"]) == 0
    table = capsys.readouterr().out
    assert "| ShopFacade" in table and "median error (cm)" in table
    poses = read_pose_file(out / "ShopFacade_poses.txt")
    queries = ["seq2/frame00001.png", "seq2/frame00003.png"]  # --limit 2: the ends of the 3 test frames
    assert set(poses) <= set(queries)
    metrics = json.loads((out / "metrics.json").read_text())["ShopFacade"]
    errors = [pose_error(poses[n], truth[n]) if n in poses else (np.inf, np.inf) for n in queries]
    assert metrics["queries"] == 2 and metrics["localized"] == len(poses) == 2
    assert metrics["median_cm"] == pytest.approx(100 * np.median([e[0] for e in errors]))
    assert metrics["median_deg"] == pytest.approx(np.median([e[1] for e in errors]))
    assert metrics["median_cm"] < 5 and metrics["median_deg"] < 0.5


# --------------------------------------------------------------------------- 7-Scenes


def _write_seven_scenes(folder: Path, scene, query_poses, query_images):
    """A 7-Scenes scene: seq-01 and seq-03 for training (seq-03 with one lost pose), seq-02 for
    testing; camera-to-world 4x4 pose files."""
    sequences = {"seq-01": list(zip(scene.cam_from_world[::2], scene.images[::2])),
                 "seq-03": list(zip(scene.cam_from_world[1::2], scene.images[1::2])),
                 "seq-02": list(zip(query_poses, query_images))}
    truth = {}
    for sequence, frames in sequences.items():
        (folder / sequence).mkdir(parents=True)
        for i, (pose, image) in enumerate(frames):
            stem = folder / sequence / f"frame-{i:06d}"
            Image.fromarray(image).save(f"{stem}.color.png", compress_level=1)
            world_from_cam = np.eye(4)
            world_from_cam[:3, :3], world_from_cam[:3, 3] = pose[:, :3].T, _centre(pose)
            if sequence == "seq-03" and i == 0:
                world_from_cam[:] = -np.inf  # tracking lost: the dataset writes -inf
            else:
                truth[f"{sequence}/frame-{i:06d}.color.png"] = pose
            np.savetxt(f"{stem}.pose.txt", world_from_cam, fmt="%.17g", delimiter="\t")
    (folder / "TrainSplit.txt").write_text("sequence1\r\nsequence3\r\n")
    (folder / "TestSplit.txt").write_text("sequence2\n")
    return truth


def test_seven_scenes_reader(tmp_path, views):
    scene, query_poses, query_images, query_depths = views
    folder = tmp_path / "chess"
    truth = _write_seven_scenes(folder, scene, query_poses, query_images)
    read = read_seven_scenes_scene(folder, focal=scene.K[0, 0])
    assert read.test == [f"seq-02/frame-{i:06d}.color.png" for i in range(NUM_QUERIES)]
    assert read.skipped == ["seq-03/frame-000000.color.png"]
    assert len(read.train) == len(scene.names) - 1 and all(n.startswith(("seq-01/", "seq-03/")) for n in read.train)
    for name, pose in truth.items():
        np.testing.assert_allclose(read.cam_from_world[name], pose, atol=1e-9)
    np.testing.assert_allclose(read.camera.K, scene.K, atol=1e-9)
    for i, name in enumerate(read.test):
        assert _reprojection_px(read.camera, read.cam_from_world[name], scene.K, query_poses[i], query_depths[i]) < 1e-6
    assert read_seven_scenes_scene(folder).camera.params[0] == 525.0  # the RGB focal length DSAC* and ACE use
    (folder / "TestSplit.txt").write_text("sequence1\n")
    with pytest.raises(ValueError, match="seq-01 is in both"):
        read_seven_scenes_scene(folder)
    (folder / "TestSplit.txt").write_text("seq2\n")
    with pytest.raises(ValueError, match="TestSplit.txt:1: expected a line 'sequenceN'"):
        read_seven_scenes_scene(folder)
    bad = tmp_path / "frame-000000.pose.txt"
    bad.write_text("1.#QNAN -1.#IND 0 0\n" * 4)
    assert np.isnan(read_seven_scenes_pose(bad)).all()  # a lost pose, as MSVC writes NaN
    bad.write_text("1 0 0 0\n0 1 0 0\n0 0 1 0\n")
    with pytest.raises(ValueError, match="expected a 4x4 camera-to-world"):
        read_seven_scenes_pose(bad)


def test_seven_scenes_script_end_to_end(tmp_path, views, capsys):
    scene, query_poses, query_images, _ = views
    folder = tmp_path / "chess"
    truth = _write_seven_scenes(folder, scene, query_poses, query_images)
    script = _script("seven_scenes")
    out = tmp_path / "out"
    assert script._common.main_of(script.parser(), [str(folder), "--out", str(out), "--focal", str(scene.K[0, 0]),
                                                    "--max-features", "1200", "-q"]) == 0
    assert "(5 cm, 5 deg) %" in capsys.readouterr().out
    poses = read_pose_file(out / "chess_poses.txt")
    metrics = json.loads((out / "metrics.json").read_text())["chess"]
    queries = [f"seq-02/frame-{i:06d}.color.png" for i in range(NUM_QUERIES)]
    errors = [pose_error(poses[n], truth[n]) if n in poses else (np.inf, np.inf) for n in queries]
    within = np.mean([t <= 0.05 and r <= 5 for t, r in errors])
    assert metrics["queries"] == NUM_QUERIES and metrics["recall_5cm_5deg"] == pytest.approx(100 * within)
    assert metrics["map_images"] == len(scene.names) - 1 and within >= 0.75


# ---------------------------------------------------------------- Aachen / hloc layout


def _write_aachen(folder: Path, scene, query_poses, query_images):
    """images_upright/db + query/{day,night}/..., 3D-models/aachen_v_1_1 (COLMAP, binary) and the
    query lists with intrinsics (COLMAP convention: principal point at W/2, H/2)."""
    import pycolmap

    images = folder / "images_upright"
    rec = pycolmap.Reconstruction()
    camera = scene.camera.to_pycolmap()
    camera.camera_id = 1
    rec.add_camera_with_trivial_rig(camera)
    for i, (pose, image) in enumerate(zip(scene.cam_from_world, scene.images), 1):
        name = f"db/{i:04d}.jpg"
        (images / "db").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(images / name, quality=95)
        rigid = pycolmap.Rigid3d(pycolmap.Rotation3d(pose[:, :3]), pose[:, 3].copy())
        rec.add_image_with_trivial_frame(pycolmap.Image(name=name, camera_id=1, image_id=i), rigid)
    model = folder / "3D-models" / "aachen_v_1_1"
    model.mkdir(parents=True)
    rec.write(str(model))
    truth, lists = {}, {"day_time": [], "night_time": []}
    for i, (pose, image) in enumerate(zip(query_poses, query_images)):
        condition = "day" if i % 2 == 0 else "night"
        name = f"query/{condition}/nexus5x/IMG_{i:04d}.jpg"
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(images / name, quality=95)
        f = scene.K[0, 0]
        lists[f"{condition}_time"].append(f"{name} SIMPLE_RADIAL {scene.width} {scene.height} {f:.17g} "
                                          f"{scene.width / 2:g} {scene.height / 2:g} 0")
        truth[name] = pose
    (folder / "queries").mkdir()
    for condition, lines in lists.items():
        (folder / "queries" / f"{condition}_queries_with_intrinsics.txt").write_text("\n".join(lines) + "\n")
    return truth


def test_hloc_layout_reader_and_submission_format(tmp_path, views):
    scene, query_poses, query_images, _ = views
    truth = _write_aachen(tmp_path / "aachen", scene, query_poses, query_images)
    dataset = read_hloc_dataset(tmp_path / "aachen")
    assert dataset.image_folder == tmp_path / "aachen" / "images_upright"
    assert dataset.model_folder == tmp_path / "aachen" / "3D-models" / "aachen_v_1_1"
    assert sorted(dataset.queries) == ["day_time", "night_time"] and sorted(dataset.query_cameras) == sorted(truth)
    for camera in dataset.query_cameras.values():
        np.testing.assert_allclose(camera.K, scene.K, atol=1e-9)  # COLMAP's W/2 is OpenCV's (W-1)/2
    # the submission: file names without folders, cam_from_world as quaternion and translation
    path = tmp_path / "submission.txt"
    write_submission(path, truth)
    lines = path.read_text().split("\n")
    name, *values = lines[0].split()
    values = [float(v) for v in values]
    assert name == "IMG_0000.jpg" == submission_name("query/day/nexus5x/IMG_0000.jpg")
    np.testing.assert_allclose(values[:4], quaternion_from_matrix(query_poses[0][:, :3]), atol=1e-12)
    np.testing.assert_allclose(values[4:], query_poses[0][:, 3], atol=1e-12)
    assert check_submission(path, truth) == (NUM_QUERIES, [])
    assert check_submission(path, [*truth, "query/day/x/IMG_9.jpg"]) == (NUM_QUERIES, ["IMG_9.jpg"])
    assert submission_name("query/night/rear/1417.jpg", folders=1) == "rear/1417.jpg"
    assert submission_name("x.jpg", folders=2) == "x.jpg"
    with pytest.raises(ValueError, match="IMG_0000.jpg is not a query's name in the submission"):
        check_submission(path, list(truth)[1:])
    path.write_text(lines[0].replace(name, name + " 0") + "\n")
    with pytest.raises(ValueError, match="submission.txt:1: expected 'name qw qx qy qz tx ty tz'"):
        check_submission(path, truth)
    path.write_text("IMG_0000.jpg 1 1 0 0 0 0 0\n")
    with pytest.raises(ValueError, match="not a unit one"):
        check_submission(path, truth)
    with pytest.raises(ValueError, match="share the name IMG_0000.jpg"):
        write_submission(path, {"query/day/a/IMG_0000.jpg": query_poses[0],
                                "query/night/b/IMG_0000.jpg": query_poses[1]})
    (tmp_path / "empty" / "images_upright").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no COLMAP model"):
        read_hloc_dataset(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no image folder"):
        read_hloc_dataset(tmp_path / "aachen" / "queries")


def test_aachen_script_end_to_end(tmp_path, views, capsys):
    scene, query_poses, query_images, _ = views
    truth = _write_aachen(tmp_path / "aachen", scene, query_poses, query_images)
    gt = tmp_path / "gt.txt"
    write_submission(gt, truth)  # a ground truth keyed by file name, as a withheld one would be
    script = _script("aachen")
    out = tmp_path / "out" / "poses.txt"
    assert script._common.main_of(script.parser(), [str(tmp_path / "aachen"), "--out", str(out), "--ground-truth",
                                                    str(gt), "--max-features", "1200", "-q"]) == 0
    table = capsys.readouterr().out
    assert check_submission(out, truth)[1] == []  # every query has a pose in the benchmark's format
    poses = read_pose_file(out)
    for name, pose in truth.items():
        t, r = pose_error(poses[submission_name(name)], pose)
        assert t < 0.05 and r < 0.5
    for condition in ("day_time  ", "night_time"):
        assert f"| {condition} | 2       | 2         | 100.0" in table
