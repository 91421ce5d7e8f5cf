"""Where a query's intrinsics come from: the map's calibrated camera for the same device, EXIF,
or a guess whose focal length is estimated with the pose and flagged as such (issue 18)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pylocalize.datasets.synthetic import courtyard_scene
from pylocalize.geometry import Camera, read_pose_file
from pylocalize.geometry.absolute_pose import estimate_absolute_pose
from pylocalize.geometry.camera import FOCAL_GUESS_NOTE, CameraDevice
from pylocalize.geometry.poses import rotation_error_deg
from pylocalize.localization import Map
from pylocalize.localization.map import QueryCamera

GOLDEN = Path(__file__).parent / "data" / "golden"


def _centre(pose):
    return -pose[:, :3].T @ pose[:, 3]


def _save(path, pixels, make=None, model=None, size=None):
    """Writes an image, with EXIF make and model when given (no focal length: EXIF alone
    would leave the focal length a guess)."""
    image = Image.fromarray(pixels)
    if size is not None:
        image = image.resize(size)
    exif = Image.Exif()
    if make is not None:
        exif[0x010F], exif[0x0110] = make, model
    image.save(path, quality=95, exif=exif)
    return path


# ------------------------------------------------------------------ focal length estimated with the pose


@pytest.mark.parametrize("focal", [300.0, 700.0, 2500.0])  # fields of view of 120, 72 and 23 degrees
def test_absolute_pose_estimates_a_guessed_focal_length(focal):
    """Points seen by a camera of focal length ``focal``, solved from the guess of 1.2 x the
    larger side: the focal length comes out within 1 % and the pose close to the truth,
    where the guess kept fixed misplaces the camera."""
    rng = np.random.default_rng(7)
    width, height = 1024, 768
    truth = Camera("SIMPLE_RADIAL", width, height, (focal, width / 2, height / 2, 0.0))
    R = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    R *= np.linalg.det(R)
    pose = np.c_[R, rng.normal(size=3)]
    # points in the view frustum at 3 to 9 m, then into the world: a deep, non-planar scene
    pixels = rng.uniform([0, 0], [width, height], (400, 2))
    depth = rng.uniform(3, 9, 400)
    rays = np.c_[(pixels - truth.K[:2, 2]) / focal, np.ones(400)]
    points3D = (rays * depth[:, None] - pose[:, 3]) @ R
    points2D = truth.project(points3D @ R.T + pose[:, 3]) + rng.normal(scale=0.5, size=(400, 2))
    points2D[:100] = rng.uniform([0, 0], [width, height], (100, 2))  # a quarter of outliers
    guess = Camera("SIMPLE_RADIAL", width, height, (1.2 * width, width / 2, height / 2, 0.0))

    est = estimate_absolute_pose(points2D, points3D, guess, seed=0, estimate_focal=True)
    assert est.camera.params[0] == pytest.approx(focal, rel=0.01)
    assert est.camera.params[1:] == guess.params[1:]  # only the focal length moves
    assert rotation_error_deg(est.R, R) < 0.1
    assert np.linalg.norm(_centre(est.cam_from_world) - _centre(pose)) < 0.01 * 6  # 1 % of the depth
    assert est.inlier_mask[100:].mean() > 0.95 and est.inlier_mask[:100].mean() < 0.1
    fixed = estimate_absolute_pose(points2D, points3D, guess, seed=0)
    assert fixed is None or fixed.camera is None
    if fixed is not None:  # the guess kept fixed: far off, or fewer inliers
        off = np.linalg.norm(_centre(fixed.cam_from_world) - _centre(pose))
        assert off > 0.1 or fixed.num_inliers < 0.8 * est.num_inliers
    with pytest.raises(ValueError, match="does not take estimate_focal"):
        estimate_absolute_pose(points2D, points3D, Camera.from_K(guess.K, width, height), method="epnp",
                               estimate_focal=True)


# ------------------------------------------------------------------ a map whose images carry EXIF


@pytest.fixture(scope="module")
def exif_map(tmp_path_factory):
    """A map of images from one device ("Acme Phone 1", EXIF without focal length) with its
    calibrated camera, and queries: the same device, another device, no EXIF, the same device
    at half size."""
    folder = tmp_path_factory.mktemp("exif_map")
    scene = courtyard_scene(num_views=12, seed=2, width=640, height=480)
    (folder / "db").mkdir()
    paths = [_save(folder / "db" / name.replace(".png", ".jpg"), image, "Acme", "Phone 1")
             for name, image in zip(scene.names, scene.images)]
    fx = scene.K[0, 0]  # 0.8 x the width; the guess without EXIF focal length is 1.2 x
    camera = Camera("SIMPLE_RADIAL", 640, 480, (fx, scene.K[0, 2] + 0.5, scene.K[1, 2] + 0.5, 0.0))
    m = Map.from_views(paths, camera, scene.cam_from_world, [p.name for p in paths], max_features=2000)
    poses = scene.query_poses(2, seed=4)
    images, _ = scene.render(poses)
    queries = {"same": _save(folder / "same.jpg", images[0], "Acme", "Phone 1"),
               "other": _save(folder / "other.jpg", images[0], "Other", "Cam"),
               "plain": _save(folder / "plain.png", images[1]),
               "half": _save(folder / "half.jpg", images[0], "Acme", "Phone 1", size=(320, 240))}
    return m, camera, dict(zip(("same", "plain"), poses)), queries, folder


def test_map_images_keep_their_device(exif_map, tmp_path):
    m, camera, _, _, _ = exif_map
    assert m.devices == [CameraDevice("Acme", "Phone 1", 640, 480)] * len(m.names)
    m.save(tmp_path / "map")
    assert Map.load(tmp_path / "map").devices == m.devices
    m.devices = m.devices[:-1]
    with pytest.raises(ValueError, match="devices"):
        m.save(tmp_path / "bad")
    m.devices = Map.load(tmp_path / "map").devices


def test_maps_saved_before_devices_still_load():
    """A map of the layout before devices were stored (golden snapshot) loads with no devices,
    and its queries fall back to EXIF."""
    folder = GOLDEN / "2026-11-30-issue17" / "map" / "map"
    m = Map.load(folder)
    assert len(m.names) > 0 and m.devices == [None] * len(m.names)
    assert m.map_camera(CameraDevice("Acme", "Phone 1", 64, 48), 64, 48) is None


def test_a_query_from_the_map_device_gets_the_map_camera(exif_map, tmp_path):
    m, camera, _, queries, _ = exif_map
    same = m.query_camera(queries["same"])
    assert same == QueryCamera(camera, f"map camera of {m.names[0]}", False)
    half = m.query_camera(queries["half"])  # same aspect ratio: the camera scaled
    assert half.camera == camera.scaled(320, 240) and half.source.startswith(f"map camera of {m.names[0]}, scaled")
    other = m.query_camera(queries["other"])  # another device: its EXIF (no focal length: a guess)
    assert other.guessed and other.source.startswith(FOCAL_GUESS_NOTE) and other.camera.params[0] == 1.2 * 640
    assert m.query_camera(queries["plain"]).guessed
    # --camera map: a map of one camera gives it to any query
    assert m.query_camera(queries["other"], use_map=True).camera == camera
    portrait = _save(tmp_path / "portrait.jpg", np.zeros((640, 480, 3), np.uint8), "Acme", "Phone 1")
    assert m.query_camera(portrait).guessed  # another aspect ratio: not the map's camera
    with pytest.raises(ValueError, match="another aspect ratio"):
        m.query_camera(portrait, use_map=True)
    with pytest.raises(ValueError, match="has no EXIF"):
        m.query_camera(np.zeros((48, 64, 3), np.uint8))


def test_map_camera_with_several_cameras_needs_the_device():
    """Two devices, two cameras: the query's device picks one; without a device ``--camera
    map`` says it cannot choose."""
    cams = [Camera.from_string("SIMPLE_RADIAL 64 48 50 32 24 -0.1"), Camera.from_string("PINHOLE 64 48 70 70 32 24")]
    m = Map(["a.jpg", "b.jpg", "c.jpg"], [cams[0], cams[1], cams[0]], np.tile(np.eye(3, 4), (3, 1, 1)),
            [np.zeros((0, 2), np.float32)] * 3, [np.zeros((0, 128), np.uint8)] * 3, [np.zeros(0, np.int64)] * 3,
            np.zeros((0, 3)))
    a, b = CameraDevice("A", "1", 64, 48), CameraDevice("B", "2", 64, 48, focal_mm=4.0)
    m.devices = [a, b, a]
    assert m.map_camera(a, 64, 48, required=True) == QueryCamera(cams[0], "map camera of a.jpg", False)
    assert m.map_camera(b, 128, 96).camera == cams[1].scaled(128, 96)
    assert m.map_camera(CameraDevice("B", "2", 64, 48, focal_mm=8.0), 64, 48) is None  # zoomed: not that camera
    assert m.map_camera(None, 64, 48) is None
    with pytest.raises(ValueError, match="2 distinct cameras and the query's device .no EXIF make and model."):
        m.map_camera(None, 64, 48, required=True)
    # structure-from-motion refined a camera per image of device A: their per-parameter median
    m.cameras = [Camera.from_string(f"SIMPLE_RADIAL 64 48 {f} 32 24 {k}") for f, k in ((50, -0.1), (70, 0.3))] + [
        Camera.from_string("SIMPLE_RADIAL 64 48 54 32 24 0.02")]
    m.devices = [a, a, a]
    found = m.map_camera(a, 64, 48)
    assert found.camera == Camera.from_string("SIMPLE_RADIAL 64 48 54 32 24 0.02") and not found.guessed
    assert found.source == "map camera of 3 images (a.jpg, ...): the median of their 3 cameras"
    m.cameras[1] = Camera.from_string("PINHOLE 64 48 70 70 32 24")  # models differ: no median
    assert m.map_camera(a, 64, 48) is None


# ------------------------------------------------------------------ localization with each source


def test_a_guessed_query_is_flagged_and_its_focal_estimated(exif_map):
    m, camera, truth, queries, _ = exif_map
    result = m.localize(queries["plain"])  # no EXIF: 1.2 x the width, then estimated
    assert result.success and result.intrinsics_guessed and result.focal_estimated, result
    assert result.camera_source.startswith(FOCAL_GUESS_NOTE)
    # a few % of focal length and 2 % of the scene's 10 m (views of this courtyard measured 0.1-2 % and
    # 0.7-13 cm); the guess kept fixed is 3-4 m off
    assert result.camera.params[0] == pytest.approx(camera.params[0], rel=0.03)
    error = np.linalg.norm(_centre(result.cam_from_world) - _centre(truth["plain"]))
    assert error < 0.2 and rotation_error_deg(result.cam_from_world[:, :3], truth["plain"][:, :3]) < 1.0
    fixed = m.localize(queries["plain"], estimate_focal=False)  # the guess trusted: metres off
    assert fixed.intrinsics_guessed and not fixed.focal_estimated and fixed.camera.params[0] == 1.2 * 640
    assert not fixed.success or np.linalg.norm(_centre(fixed.cam_from_world) - _centre(truth["plain"])) > 1.0
    same = m.localize(queries["same"])  # the map's camera: calibrated, not flagged
    assert same.success and not same.intrinsics_guessed and not same.focal_estimated
    assert same.camera == camera and same.camera_source == f"map camera of {m.names[0]}"
    assert np.linalg.norm(_centre(same.cam_from_world) - _centre(truth["same"])) < 0.05
    batch = m.localize_many([queries["plain"], queries["same"]])  # no cameras: each query's own
    assert [(r.success, r.intrinsics_guessed, r.camera_source) for r in batch] == [
        (True, True, result.camera_source), (True, False, same.camera_source)]


def test_result_prints_in_one_short_line(exif_map):
    m, _, _, queries, _ = exif_map
    result = m.localize(queries["plain"])
    text = repr(result)
    assert str(result) == text and "\n" not in text and len(text) < 250
    assert text.startswith("LocalizationResult(success;") and f"{result.num_inliers}/{result.num_matches}" in text
    centre = _centre(result.cam_from_world)
    assert f"centre [{centre[0]:.4g}," in text and "guessed then estimated" in text
    failed = m.localize(np.zeros((48, 64, 3), np.uint8), camera="PINHOLE 64 48 50 50 32 24")
    assert repr(failed) == "LocalizationResult(failed; 0/0 inliers; camera: given, f=50.0 px; reason: only 0 features)"


def test_cli_marks_guessed_intrinsics_and_takes_camera_map(exif_map, tmp_path, capsys, caplog):
    from pylocalize.cli import main
    from pylocalize.localization import load_poses

    m, camera, _, queries, _ = exif_map
    m.save(tmp_path / "map")
    poses = tmp_path / "poses.txt"
    assert main(["localize", "--map", str(tmp_path / "map"), "--images", str(queries["plain"]), str(queries["same"]),
                 "--out", str(poses)]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"^same\.jpg: \d+ inliers, .* camera: map camera of {m.names[0]}$", out, re.M), out
    assert "1 of the localized queries had guessed intrinsics" in out and "2 localized, 0 failed" in out
    assert "plain.png: intrinsics guessed" in caplog.text and "plain.png: localized with GUESSED" in caplog.text
    text = poses.read_text()
    assert "# plain.png: intrinsics GUESSED (no EXIF focal length" in text
    assert f"# same.jpg: camera: map camera of {m.names[0]}" in text
    assert sorted(read_pose_file(poses)) == sorted(load_poses(poses)) == ["plain.png", "same.jpg"]  # comments skipped
    # --camera map: the map's one camera for a query of another device
    assert main(["localize", "--map", str(tmp_path / "map"), "--images", str(queries["other"]), "--camera", "map",
                 "--out", str(poses)]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"^other\.jpg: \d+ inliers, .* camera: map camera of {m.names[0]}$", out, re.M), out
    assert "1 localized, 0 failed" in out
    assert list(read_pose_file(poses)) == ["other.jpg"]


def test_cli_query_camera_order(exif_map):
    """--camera, --cameras, Strecha, then the map's camera of the device, then EXIF."""
    from pylocalize.localization.cli import query_camera

    m, camera, _, queries, _ = exif_map
    fixed = Camera.from_string("PINHOLE 640 480 500 500 320 240")
    assert query_camera(queries["same"], fixed, None, m) == (fixed, "--camera", False)
    assert query_camera(queries["same"], None, {"same.jpg": fixed}, m) == (fixed, "--cameras", False)
    assert query_camera(queries["same"], None, None, m).camera == camera
    assert query_camera(queries["same"]).guessed  # without the map: EXIF, which has no focal length
    assert query_camera(queries["other"], "map", None, m).camera == camera
    with pytest.raises(ValueError, match="needs the map"):
        query_camera(queries["other"], "map")


def test_an_implausible_estimated_focal_length_fails_the_query():
    """A focal length outside the plausible fields of view (a degenerate four-point solution)
    is a failure that says so, not a pose."""
    from pylocalize.geometry.absolute_pose import AbsolutePose
    from pylocalize.localization.map import PLAUSIBLE_FOCAL_FACTORS, _pose_result

    common = {"camera_source": "no EXIF focal length: assumed 1.2 x the larger side", "intrinsics_guessed": True}
    low, high = PLAUSIBLE_FOCAL_FACTORS
    for factor, success in ((low / 2, False), (0.8, True), (high * 2, False)):
        camera = Camera("SIMPLE_RADIAL", 100, 50, (factor * 100, 50, 25, 0.0))
        pose = AbsolutePose(np.eye(3, 4), np.ones(20, bool), camera=camera)
        result = _pose_result(pose, 12, dict(common))
        assert result.success == success and result.focal_estimated and result.camera == camera
        assert success or "is implausible: give the query's camera" in result.reason
