"""Map building and object onboarding over Ray (``pylocalize.distributed.extract``,
``pylocalize.distributed.executor``, ``map build --ray``, ``objects onboard --ray``) against
the local runs: the same features image for image (and both against ``extract_sift`` of each
file), the same maps, unreadable images handled as locally, a missing or corrupt feature shard
named, the command lines, the same object representation, and Ray kept optional.

Ray runs in this process with 2 CPUs (the ``ray_local`` fixture of conftest.py).
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import python_child

import pylocalize
from pylocalize.cli import main
from pylocalize.features import extract_sift
from pylocalize.localization import Map
from pylocalize.localization.map import _extract_all

MAX_FEATURES = 1200


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """16 views of the demo's courtyard (480x360) exported as files, a pose file and a cameras
    file; each image's features by ``extract_sift`` of its file, the independent reference."""
    from pylocalize.datasets.synthetic import courtyard_scene

    folder = tmp_path_factory.mktemp("distributed_build")
    courtyard = courtyard_scene(num_views=16, seed=5, width=480, height=360)
    courtyard.export(folder, image_format="png")
    paths = [folder / "images" / name for name in courtyard.names]
    reference = [extract_sift(path, MAX_FEATURES) for path in paths]
    return SimpleNamespace(courtyard=courtyard, folder=folder, paths=paths, reference=reference)


def ray_extraction(tmp_path, **kwargs):
    from pylocalize.distributed import RayExtraction

    kwargs.setdefault("actors", 2)
    kwargs.setdefault("images_per_shard", 3)  # several shards per actor, one of them short
    return RayExtraction(folder=tmp_path / "shards", **kwargs)


def assert_same_features(got, want):
    assert len(got) == len(want)
    for (kp, desc), (kp_want, desc_want) in zip(got, want):
        assert kp.dtype == np.float32 and desc.dtype == np.uint8 and kp.shape[1] == 2 and desc.shape[1] == 128
        np.testing.assert_array_equal(kp, kp_want)
        np.testing.assert_array_equal(desc, desc_want)


def test_ray_data_extraction_gives_the_local_features_of_every_image(ray_local, scene, tmp_path):
    local = _extract_all(scene.paths, MAX_FEATURES, "opencv", False)
    distributed = _extract_all(scene.paths, MAX_FEATURES, "opencv", False, extraction=ray_extraction(tmp_path))
    assert all(len(kp) > 300 for kp, _ in local)
    assert_same_features(local, scene.reference)
    assert_same_features(distributed, scene.reference)
    assert list((tmp_path / "shards").iterdir()) == []  # the run's shard folder is gone once read back


def test_a_map_built_with_ray_equals_the_local_map(ray_local, scene, tmp_path):
    args = (scene.folder / "poses.txt", scene.folder / "intrinsics.txt", scene.folder / "images")
    local = Map.from_pose_file(*args, max_features=MAX_FEATURES)
    distributed = Map.from_pose_file(*args, max_features=MAX_FEATURES, extraction=ray_extraction(tmp_path))
    assert distributed.names == local.names == scene.courtyard.names
    assert_same_features(list(zip(distributed.keypoints, distributed.descriptors)),
                         list(zip(local.keypoints, local.descriptors)))
    assert len(local.points3D) > 200
    np.testing.assert_allclose(distributed.points3D, local.points3D, rtol=0, atol=1e-9)
    for got, want in zip(distributed.point_ids, local.point_ids):
        np.testing.assert_array_equal(got, want)


def test_a_map_from_images_alone_with_ray_is_the_local_map(ray_local, scene, tmp_path, caplog):
    """Structure-from-motion (deterministic) on the Ray features gives the local map point for
    point, and a photo that cannot be read is skipped with the local warning."""
    shutil.copytree(scene.folder / "images", tmp_path / "images")
    (tmp_path / "images" / "broken.png").write_bytes(b"not a png")
    maps, warnings = [], []
    for extraction in (None, ray_extraction(tmp_path)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="pylocalize.localization.map"):
            maps.append(Map.from_images(tmp_path / "images", camera=scene.courtyard.camera.to_string(),
                                        max_features=MAX_FEATURES, deterministic=True, extraction=extraction))
        warnings.append([r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()])
    local, distributed = maps
    assert warnings[0] == warnings[1] and len(warnings[0]) == 1
    assert "skipped 1 of 17 images that cannot be read: broken.png: not a readable image" in warnings[0][0]
    assert distributed.names == local.names and len(local.names) >= 12 and "broken.png" not in local.names
    assert len(local.points3D) > 200
    np.testing.assert_array_equal(distributed.points3D, local.points3D)
    np.testing.assert_array_equal(distributed.cam_from_world, local.cam_from_world)


def test_unreadable_images_are_handled_as_locally(ray_local, scene, tmp_path, monkeypatch, caplog):
    """A photo folder skips them with the local warning; posed images stop the build with the
    local error naming the file as it was given (here relative: the workers' folder differs)."""
    shutil.copytree(scene.folder / "images", tmp_path / "images")
    (tmp_path / "images" / "broken.png").write_bytes(b"not a png")
    monkeypatch.chdir(tmp_path)
    files = [Path("images") / p.name for p in scene.paths[:4]] + [Path("images/broken.png"), Path("images/gone.png")]
    outcomes, warnings = [], []
    for extraction in (None, ray_extraction(tmp_path)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="pylocalize.localization.map"):
            outcomes.append(_extract_all(files, MAX_FEATURES, "opencv", False, skip_unreadable=True,
                                         extraction=extraction))
        warnings.append([r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()])
    local, distributed = outcomes
    assert local[4:] == distributed[4:] == [None, None]
    assert_same_features(distributed[:4], scene.reference[:4])
    assert warnings[0] == warnings[1] and len(warnings[0]) == 1
    assert "skipped 2 of 6 images that cannot be read: broken.png: not a readable image" in warnings[0][0]
    assert "gone.png: no such image file" in warnings[0][0]
    errors = []
    for extraction in (None, ray_extraction(tmp_path)):
        with pytest.raises(ValueError, match="every posed image must be readable") as error:
            Map.from_views(files[3:], scene.courtyard.K, scene.courtyard.cam_from_world[:3], ["a", "b", "c"],
                           max_features=MAX_FEATURES, extraction=extraction)
        errors.append(str(error.value))
    assert errors[0] == errors[1] and errors[0].startswith(f"{Path('images/broken.png')}: not a readable image")
    # pixels the extractor refuses are no unreadable file: raised at their image, skipping or not
    from PIL import Image

    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "images" / "tiny.png")
    for extraction in (None, ray_extraction(tmp_path)):
        with pytest.raises(ValueError, match="^image of 10x10 pixels is too small for SIFT$"):
            _extract_all([files[0], Path("images/tiny.png"), files[4]], MAX_FEATURES, "opencv", False,
                         skip_unreadable=True, extraction=extraction)
    with pytest.raises(ValueError, match="image 0 is an array: the Ray extraction reads image files"):
        _extract_all(scene.courtyard.images[:2], MAX_FEATURES, "opencv", False, extraction=ray_extraction(tmp_path))


def test_a_missing_or_corrupt_shard_is_an_error_naming_it(ray_local, scene, tmp_path):
    from pylocalize.distributed.extract import read_feature_shards, write_feature_shards

    shards = write_feature_shards(scene.paths, tmp_path / "shards", MAX_FEATURES, actors=2, images_per_shard=4)
    n = len(shards)
    assert n >= 3 and max(len(s.indices) for s in shards) <= 4
    assert sorted(np.concatenate([s.indices for s in shards])) == list(range(len(scene.paths)))
    assert_same_features(list(read_feature_shards(shards, scene.paths)), scene.reference)
    second = shards[1].path
    named = f"feature shard 2 of {n} \\({re.escape(str(second))}\\)"
    good = second.read_bytes()
    data = bytearray(good)
    data[len(data) // 2] ^= 0x40
    second.write_bytes(bytes(data))
    with pytest.raises(pylocalize.FormatError, match=f"{named}: .*extract the features"):
        list(read_feature_shards(shards, scene.paths))
    second.write_bytes(shards[0].path.read_bytes())  # a sound shard, of other images
    with pytest.raises(pylocalize.FormatError, match=f"{named}: not the shard written for these images"):
        list(read_feature_shards(shards, scene.paths))
    second.unlink()
    with pytest.raises(FileNotFoundError, match=f"{named} is missing"):
        list(read_feature_shards(shards, scene.paths))
    second.write_bytes(good)
    assert_same_features(list(read_feature_shards(shards, scene.paths)), scene.reference)


def _build_command(scene, out, *extra):
    return ["map", "build", "--poses", str(scene.folder / "poses.txt"), "--cameras",
            str(scene.folder / "intrinsics.txt"), "--images", str(scene.folder / "images"),
            "--max-features", str(MAX_FEATURES), "--out", str(out), *extra]


def test_cli_map_build_ray_writes_a_map_that_localizes_as_the_local_one(ray_local, scene, tmp_path, capsys):
    assert main(_build_command(scene, tmp_path / "local")) == 0
    assert main(_build_command(scene, tmp_path / "ray", "--ray", "local")) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local", "ray"]  # no shard folder left beside --out
    local, distributed = Map.load(tmp_path / "local"), Map.load(tmp_path / "ray")
    assert distributed.names == local.names
    np.testing.assert_array_equal(distributed.points3D, local.points3D)
    for got, want in zip(distributed.descriptors, local.descriptors):
        np.testing.assert_array_equal(got, want)
    pose = scene.courtyard.query_poses(1, seed=11)[0]
    query = scene.courtyard.render(pose[None])[0][0]
    results = [m.localize(query, scene.courtyard.K) for m in (local, distributed)]
    assert all(r.success for r in results) and results[0].num_inliers == results[1].num_inliers
    np.testing.assert_array_equal(results[1].cam_from_world, results[0].cam_from_world)
    centre = -results[1].cam_from_world[:, :3].T @ results[1].cam_from_world[:, 3]
    assert np.linalg.norm(centre + pose[:, :3].T @ pose[:, 3]) < 0.02


@pytest.fixture(scope="module")
def box_file(tmp_path_factory):
    import trimesh

    from pylocalize.datasets.synthetic import textured_box_object

    path = tmp_path_factory.mktemp("distributed_onboard") / "box.ply"
    mesh = textured_box_object(3)
    trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).export(path)
    return path


def test_cli_objects_onboard_ray_gives_the_local_representation(ray_local, box_file, tmp_path):
    from pylocalize import _core

    args = ["objects", "onboard", "--mesh", str(box_file), "--views", "6", "--inplane", "2", "--size", "112",
            "--words", "16", "--mesh-units", "mm"]
    assert main(args + ["--out", str(tmp_path / "local.pyloc")]) == 0
    assert main(args + ["--out", str(tmp_path / "ray.pyloc"), "--ray", "local"]) == 0
    *_, local = _core.read_container(str(tmp_path / "local.pyloc"))
    *_, distributed = _core.read_container(str(tmp_path / "ray.pyloc"))
    assert sorted(distributed) == sorted(local) and {"patch_desc_uint8", "template_word_counts"} <= set(local)
    for name in local:
        np.testing.assert_array_equal(np.asarray(distributed[name]), np.asarray(local[name]), err_msg=name)
    counts = np.asarray(local["template_num_patches"])
    assert len(counts) == 12 and counts.min() > 0  # every template has patches to compare


def test_ray_executor_keeps_the_order_and_raises_the_functions_error(ray_local):
    from pylocalize.distributed import RayExecutor

    executor = RayExecutor(chunks_per_cpu=3)
    assert list(executor.map(np.square, range(23))) == [i * i for i in range(23)]
    assert list(executor.map(np.square, [])) == []
    with pytest.raises(ZeroDivisionError):
        list(executor.map(lambda x: 1 // (x - 5), range(8)))


MAPS_THAT_RAISE = r"""
import sys
import numpy as np
from pylocalize.distributed import RayExecutor
from pylocalize.distributed._runtime import connect

connect("local")
executor = RayExecutor(chunks_per_cpu=3)
for _ in range(int(sys.argv[1])):
    try:
        list(executor.map(lambda x: 1 // (x - 5), range(8)))
    except ZeroDivisionError:
        pass
    assert list(executor.map(np.square, range(23))) == [i * i for i in range(23)]
print("survived")
"""


def test_maps_that_raise_leave_the_driver_alive():
    """Repeated maps whose function raises, then a whole map each time, in a driver of its own.

    The executor once cancelled the tasks left after an error; in Ray 2.60 a cancel that
    crosses the task's reply aborts the driver (exit status 1, no Python error): 3 of 3 such
    children died within 30 rounds, and the test suite died with it, 1 run in 3. Tasks are
    no longer cancelled (``pylocalize.distributed.executor``)."""
    pytest.importorskip("ray")
    child = python_child(MAPS_THAT_RAISE, "30", capture_output=True, text=True, timeout=180)
    assert child.returncode == 0 and "survived" in child.stdout, child.stderr[-3000:]


@pytest.mark.parametrize("command", ["map", "objects"])
def test_ray_stays_optional(scene, box_file, tmp_path, command):
    """Without Ray, ``--ray`` is one line saying how to install it (a child interpreter where
    ``import ray`` fails), before any work."""
    code = ("import sys\nsys.modules['ray'] = None\nfrom pylocalize.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    argv = (_build_command(scene, tmp_path / "map", "--ray", "auto") if command == "map" else
            ["objects", "onboard", "--mesh", str(box_file), "--out", str(tmp_path / "rep.pyloc"), "--ray", "auto"])
    child = python_child(code, *argv, capture_output=True, text=True, timeout=120)
    assert child.returncode == 1, child.stderr
    assert "Traceback" not in child.stderr
    name = "map build" if command == "map" else "objects onboard"
    assert (f'pylocalize {name}: error: --ray: pylocalize.distributed runs on Ray, which is not installed: '
            'pip install "pylocalize[dist]"') in child.stderr
    assert not any(tmp_path.iterdir())


def test_dinov2_onboarding_as_ray_tasks_gives_the_local_representation(ray_local, tmp_path):
    """The extractor travels to the tasks with its torch model (a tiny random DINOv2 saved and
    loaded through the path real weights take; no download is possible here)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from pylocalize.datasets.synthetic import textured_box_object
    from pylocalize.distributed import RayExecutor
    from pylocalize.features.dinov2 import DINOv2Extractor
    from pylocalize.objects import onboard

    torch.manual_seed(0)
    config = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=64, patch_size=14, image_size=56)
    transformers.Dinov2Model(config).save_pretrained(tmp_path / "dinov2")
    extractor = DINOv2Extractor(tmp_path / "dinov2")
    mesh = textured_box_object(2)
    options = dict(num_views=6, num_inplane=2, size=112, num_words=16)
    local = onboard(mesh, extractor, **options)
    distributed = onboard(mesh, extractor, executor=RayExecutor(chunks_per_cpu=2), **options)
    assert distributed.extractor_name == local.extractor_name == "dinov2" and local.patch_desc.shape[1] == 32
    local.save(tmp_path / "local.pyloc")
    distributed.save(tmp_path / "ray.pyloc")
    *_, want = pylocalize._core.read_container(str(tmp_path / "local.pyloc"))
    *_, got = pylocalize._core.read_container(str(tmp_path / "ray.pyloc"))
    assert sorted(got) == sorted(want) and "patch_desc_uint8" in want
    for name in want:
        np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(want[name]), err_msg=name)
