"""Geo-registration: maps from GPS-tagged images come out in metres east-north-up, their SfM
model kept with them, and camera centres turn back into latitude and longitude."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pylocalize.datasets.synthetic import courtyard_scene
from pylocalize.geometry import ransac_similarity, similarity_from_points
from pylocalize.geometry.geodesy import enu_from_geodetic, geodetic_from_enu
from pylocalize.io import read_gps
from pylocalize.localization import Map
from pylocalize.localization.georegister import camera_centres, fit_georegistration

pycolmap = pytest.importorskip("pycolmap")

ORIGIN = np.array([55.6989, 13.1949, 35.0])  # (lat, lon, alt) the synthetic scene is placed at
YAW = np.radians(37.0)
ENU_FROM_WORLD = np.array([[np.cos(YAW), -np.sin(YAW), 0], [np.sin(YAW), np.cos(YAW), 0], [0, 0, 1]])
ENU_OFFSET = np.array([120.0, -45.0, 2.0])
GPS_NOISE = 0.15


def _true_enu(points_world):
    return np.asarray(points_world) @ ENU_FROM_WORLD.T + ENU_OFFSET


def _rotation(rng):
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def _write_gps_jpeg(path, pixels, lat, lon, alt):
    from PIL import Image

    def dms(value):
        value = abs(value)
        degrees, minutes = int(value), int((value % 1) * 60)
        return (float(degrees), float(minutes), round((value - degrees - minutes / 60) * 3600, 6))

    exif = Image.Exif()
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N" if lat >= 0 else "S", 2: dms(lat), 3: "E" if lon >= 0 else "W", 4: dms(lon),
                5: b"\x00" if alt >= 0 else b"\x01", 6: abs(alt)})
    Image.fromarray(pixels).save(path, quality=95, exif=exif)


def test_exif_gps_reading(tmp_path):
    pixels = np.zeros((16, 16, 3), np.uint8)
    _write_gps_jpeg(tmp_path / "a.jpg", pixels, -33.8567844, -151.213108, -12.5)
    lat, lon, alt = read_gps(tmp_path / "a.jpg")
    assert lat == pytest.approx(-33.8567844, abs=1e-8) and lon == pytest.approx(-151.213108, abs=1e-8)
    assert alt == pytest.approx(-12.5)
    from PIL import Image

    Image.fromarray(pixels).save(tmp_path / "b.jpg")
    assert read_gps(tmp_path / "b.jpg") is None
    with pytest.raises(ValueError, match="no such image"):
        read_gps(tmp_path / "missing.jpg")


def test_ransac_similarity_ignores_outliers():
    rng = np.random.default_rng(3)
    src = rng.normal(size=(40, 3))
    R = _rotation(rng)
    dst = 2.5 * src @ R.T + [10.0, -3.0, 1.0] + rng.normal(scale=0.01, size=src.shape)
    dst[:8] += rng.uniform(5, 10, (8, 3))  # 20 % gross outliers
    s, R_est, t, inliers = ransac_similarity(src, dst, max_error=0.1, seed=0)
    assert not inliers[:8].any() and inliers[8:].all()
    assert s == pytest.approx(2.5, rel=1e-2) and np.abs(R_est - R).max() < 1e-2
    s_ls, _, _ = similarity_from_points(src, dst)
    assert abs(s_ls - 2.5) > 10 * abs(s - 2.5)  # least squares alone is pulled off by the outliers
    with pytest.raises(ValueError, match="collinear"):
        line = np.outer(np.arange(10.0), [1.0, 2.0, 3.0])
        ransac_similarity(line, line, max_error=0.1)


def _synthetic_map_frame(rng, centres_enu):
    """Poses whose centres are ``centres_enu`` seen through an arbitrary similarity (the SfM
    frame), and that similarity's inverse parts."""
    s, R, t = 0.37, _rotation(rng), rng.normal(size=3)
    centres = (centres_enu - t) @ R / s  # map frame: enu = s R x + t
    poses = np.stack([np.hstack([np.eye(3), -c[:, None]]) for c in centres])
    return poses, (s, R, t)


def test_fit_recovers_a_known_frame_and_declines_what_gps_cannot_fix():
    rng = np.random.default_rng(4)
    enu = np.column_stack([rng.uniform(-60, 60, 30), rng.uniform(-40, 40, 30), rng.normal(0, 1, 30)])
    poses, (s, R, t) = _synthetic_map_frame(rng, enu)
    names = [f"{i:02d}.jpg" for i in range(30)]
    noisy = enu + rng.normal(scale=2.0, size=enu.shape)
    noisy[3] += [80, 0, 0]  # one fix far off
    gps = dict(zip(names, geodetic_from_enu(noisy, ORIGIN)))
    registration, message = fit_georegistration(names, poses, gps, gps_noise_m=2.0)
    assert registration is not None, message
    assert not registration.inliers[3] and registration.inliers.sum() >= 27
    assert registration.scale == pytest.approx(s, rel=0.02)
    # the registered centres sit at the true positions, up to GPS noise, in the fitted frame
    centres = camera_centres(poses) @ (registration.scale * registration.rotation).T + registration.translation
    truth = enu_from_geodetic(geodetic_from_enu(enu, ORIGIN), registration.origin)
    assert np.median(np.linalg.norm(centres - truth, axis=1)) < 2.0
    # too few, collinear, or too little spread: the map is left alone and the reason given
    few = {n: gps[n] for n in names[:2]}
    assert fit_georegistration(names, poses, few, gps_noise_m=2.0)[1].startswith("2 of 30 images carry")
    line = np.column_stack([np.linspace(-60, 60, 30), rng.normal(0, 0.5, 30), np.zeros(30)])
    line_poses, _ = _synthetic_map_frame(rng, line)
    registration, message = fit_georegistration(names, line_poses, dict(zip(names, geodetic_from_enu(line, ORIGIN))),
                                                gps_noise_m=2.0)
    assert registration is None and "two directions" in message
    small = enu / 100  # a room's worth of motion under 2 m GPS noise
    registration, message = fit_georegistration(names, poses, dict(zip(names, geodetic_from_enu(small, ORIGIN))),
                                                gps_noise_m=2.0)
    assert registration is None and "GPS noise" in message


@pytest.fixture(scope="module")
def geo_scene(tmp_path_factory):
    """A courtyard rendered at known ENU positions, its images tagged with noisy GPS, and a map
    built from the images alone by `pylocalize map build --images` (SfM, geo-registered)."""
    from pylocalize.cli import main

    scene = courtyard_scene(num_views=24, seed=3, width=640, height=480)
    root = tmp_path_factory.mktemp("geo")
    (root / "images").mkdir()
    rng = np.random.default_rng(5)
    enu = _true_enu(camera_centres(scene.cam_from_world))
    fixes = geodetic_from_enu(enu + rng.normal(scale=GPS_NOISE, size=enu.shape), ORIGIN)
    for name, pixels, (lat, lon, alt) in zip(scene.names, scene.images, fixes):
        _write_gps_jpeg(root / "images" / name, pixels, lat, lon, alt)
    assert main(["map", "build", "--images", str(root / "images"), "--camera", scene.camera.to_string(),
                 "--max-features", "3000", "--gps-noise", "0.5", "--out", str(root / "map")]) == 0
    return scene, root, Map.load(root / "map")


def test_map_from_gps_tagged_images_is_in_metres_east_north_up(geo_scene):
    scene, _, m = geo_scene
    assert m.geo_origin is not None and len(m.names) >= 18
    truth = dict(zip(scene.names, _true_enu(camera_centres(scene.cam_from_world))))
    true_enu = np.array([truth[n] for n in m.names])
    # latitude, longitude and altitude of the cameras, back in the frame the scene was placed in
    lla = m.camera_geodetic(m.cam_from_world)
    errors = np.linalg.norm(enu_from_geodetic(lla, ORIGIN) - true_enu, axis=1)
    # GPS noise and SfM's own error (about 1 % of the 9 m loop, more in an odd run) bound them;
    # a wrong scale, rotation or frame would put the cameras metres off
    assert np.median(errors) < 2 * GPS_NOISE and errors.max() < 1.0, errors
    metres_per_degree = np.array([111_300.0, 111_300.0 * np.cos(np.radians(ORIGIN[0]))])
    angle_errors = np.abs(lla[:, :2] - geodetic_from_enu(true_enu, ORIGIN)[:, :2]) * metres_per_degree
    assert np.median(angle_errors) < 2 * GPS_NOISE
    # the map is metric: distances between cameras are the true ones
    centres = camera_centres(m.cam_from_world)
    ratio = np.linalg.norm(centres[1:] - centres[0], axis=1) / np.linalg.norm(true_enu[1:] - true_enu[0], axis=1)
    assert np.median(np.abs(ratio - 1)) < 0.03
    # a query localized in the map comes out in metres, where it truly is
    pose = scene.query_poses(1, seed=8)[0]
    result = m.localize(scene.render(pose[None])[0][0], scene.camera)
    assert result.success, result.reason
    found = enu_from_geodetic(m.camera_geodetic(result.cam_from_world), ORIGIN)
    assert np.linalg.norm(found - _true_enu(camera_centres(pose))) < 1.0


def test_the_sfm_model_is_kept_in_the_map_frame_and_survives_saves(geo_scene, tmp_path, monkeypatch):
    import shutil

    from pylocalize import FormatError
    from pylocalize.localization import colmap_export

    _, root, m = geo_scene
    assert m.sfm_model_dir is not None and m.sfm_model_dir.parent == root / "map"
    assert m.sfm_model_dir.name.startswith("sfm-")
    rec = pycolmap.Reconstruction(str(m.sfm_model_dir))
    by_name = {im.name: im for im in rec.images.values() if im.has_pose}
    assert set(m.names) <= set(by_name) and rec.num_points3D() > 100
    # the kept model moved into ENU with the map
    np.testing.assert_allclose([by_name[n].projection_center() for n in m.names], camera_centres(m.cam_from_world),
                               atol=1e-6)
    # a save elsewhere copies the model; a save into the same folder keeps it
    m.save(tmp_path / "copy")
    copy = Map.load(tmp_path / "copy")
    assert copy.sfm_model_dir.parent == tmp_path / "copy"
    np.testing.assert_array_equal(copy.geo_origin, m.geo_origin)
    assert copy.sfm_model().num_points3D() == rec.num_points3D()
    first = copy.sfm_model_dir
    copy.save(tmp_path / "copy")
    assert Map.load(tmp_path / "copy").sfm_model_dir == first
    # a new model in memory: the save that dies before its commit leaves the old map whole
    copy.sfm_reconstruction = copy.sfm_model()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(colmap_export, "write_reconstruction", crash)
    with pytest.raises(OSError, match="disk full"):
        copy.save(tmp_path / "copy")
    monkeypatch.undo()
    assert Map.load(tmp_path / "copy").sfm_model_dir == first
    copy.save(tmp_path / "copy")  # commits a new model folder; the old one is removed
    models = sorted(p.name for p in (tmp_path / "copy").iterdir() if p.name.startswith(("sfm-", ".sfm-")))
    assert models == [Map.load(tmp_path / "copy").sfm_model_dir.name] and models != [first.name]
    # a damaged model file is refused before pycolmap reads it (pycolmap can hang on one)
    loaded = Map.load(tmp_path / "copy")
    points_file = loaded.sfm_model_dir / "points3D.bin"
    data = bytearray(points_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    points_file.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="points3D.bin is damaged"):
        loaded.sfm_model()
    (loaded.sfm_model_dir / "points3D.bin").unlink()
    with pytest.raises(FormatError, match="points3D.bin is missing"):
        loaded.sfm_model()
    shutil.rmtree(tmp_path / "copy" / models[0])  # a map naming a model that is gone is refused, not half-read
    with pytest.raises(FormatError, match="SfM model"):
        Map.load(tmp_path / "copy")
    # maps built from posed images have no SfM model and no geo origin
    plain = Map(m.names[:1], m.cameras[:1], m.cam_from_world[:1], m.keypoints[:1], m.descriptors[:1],
                [np.full(len(m.keypoints[0]), -1, np.int64)], np.zeros((0, 3)))
    plain.save(tmp_path / "plain")
    loaded = Map.load(tmp_path / "plain")
    assert loaded.sfm_model() is None and loaded.geo_origin is None
    with pytest.raises(ValueError, match="not geo-registered"):
        loaded.camera_geodetic(loaded.cam_from_world[0])


def test_cli_map_geo_turns_poses_into_latitude_longitude(geo_scene, tmp_path, capsys):
    from pylocalize.cli import main
    from pylocalize.geometry import write_pose_file

    _, root, m = geo_scene
    write_pose_file(tmp_path / "poses.txt", zip(m.names[:3], m.cam_from_world[:3]))
    assert main(["map", "geo", "--map", str(root / "map"), "--poses", str(tmp_path / "poses.txt"),
                 "--out", str(tmp_path / "geo.txt")]) == 0
    rows = [line.split() for line in (tmp_path / "geo.txt").read_text().splitlines() if not line.startswith("#")]
    assert [r[0] for r in rows] == m.names[:3]
    written, expected = np.array([r[1:] for r in rows], float), m.camera_geodetic(m.cam_from_world[:3])
    np.testing.assert_allclose(written[:, :2], expected[:, :2], atol=1e-9)  # 9 decimals of a degree
    np.testing.assert_allclose(written[:, 2], expected[:, 2], atol=1e-3)  # millimetres
    # a map without a geo origin: one line saying why, exit status 1
    plain = Map(m.names[:1], m.cameras[:1], m.cam_from_world[:1], m.keypoints[:1], m.descriptors[:1],
                [np.full(len(m.keypoints[0]), -1, np.int64)], np.zeros((0, 3)))
    plain.save(tmp_path / "plain")
    capsys.readouterr()
    assert main(["map", "geo", "--map", str(tmp_path / "plain"), "--poses", str(tmp_path / "poses.txt")]) == 1
    assert "not geo-registered" in capsys.readouterr().err
    # the COLMAP export of a geo-registered map holds its metric poses
    assert main(["map", "export", "--map", str(root / "map"), "--colmap", str(tmp_path / "model")]) == 0
    rec = pycolmap.Reconstruction(str(tmp_path / "model"))
    np.testing.assert_allclose(np.asarray(rec.images[1].cam_from_world().matrix())[:3], m.cam_from_world[0],
                               atol=1e-12)


@pytest.mark.skipif(not (Path(__file__).resolve().parents[2] / "shared/data/lund/images").is_dir(),
                    reason="needs ../shared/data")
def test_lund_photos_carry_gps():
    folder = Path(__file__).resolve().parents[2] / "shared/data/lund/images"
    fixes = [read_gps(p) for p in sorted(folder.glob("*.jpg"))]
    assert len(fixes) == 29 and all(f is not None for f in fixes)
    lla = np.array(fixes)
    assert np.abs(lla[:, 0] - 55.699).max() < 0.01 and np.abs(lla[:, 1] - 13.195).max() < 0.01  # Lund


def test_georegister_moves_poses_points_and_model_together(caplog):
    """Registration changes the frame, not the images: every point projects to the same pixel
    under the moved poses; the kept SfM model moves with the map; a map whose GPS cannot fix
    the frame is left untouched and the log says why."""
    import logging

    from pylocalize.geometry import Camera
    from pylocalize.localization.colmap_export import reconstruction_from_map
    from pylocalize.localization.georegister import georegister

    rng = np.random.default_rng(6)
    enu = np.column_stack([rng.uniform(-50, 50, 12), rng.uniform(-50, 50, 12), rng.normal(0, 1, 12)])
    centres = camera_centres(_synthetic_map_frame(rng, enu)[0])
    rotations = np.stack([_rotation(rng) for _ in range(12)])
    poses = np.concatenate([rotations, -np.einsum("nij,nj->ni", rotations, centres)[:, :, None]], axis=2)
    names = [f"{i:02d}.jpg" for i in range(12)]
    points = rng.normal(size=(40, 3)) * 100
    keypoints = [np.zeros((40, 2), np.float32) for _ in names]
    m = Map(names, [Camera.from_string("PINHOLE 640 480 500 500 320 240")] * 12, poses, keypoints,
            [np.zeros((40, 128), np.uint8)] * 12, [np.arange(40)] * 12, points)
    m.sfm_reconstruction = reconstruction_from_map(m)

    def projections(m):
        cam = np.einsum("nij,kj->nki", m.cam_from_world[:, :, :3], m.points3D) + m.cam_from_world[:, None, :, 3]
        return cam[..., :2] / cam[..., 2:]

    before = projections(m)
    gps = dict(zip(names, geodetic_from_enu(enu + rng.normal(scale=0.5, size=enu.shape), ORIGIN)))
    with caplog.at_level(logging.WARNING, logger="pylocalize.localization.georegister"):
        assert georegister(m, {n: gps[n] for n in names[:2]}, gps_noise_m=1.0) is None
    assert "not geo-registered" in caplog.text and "2 of 12 images" in caplog.text
    np.testing.assert_array_equal(projections(m), before)
    assert m.geo_origin is None
    registration = georegister(m, gps, gps_noise_m=1.0)
    assert registration is not None and m.geo_origin is not None
    np.testing.assert_allclose(projections(m), before, atol=1e-9)
    errors = np.linalg.norm(enu_from_geodetic(m.camera_geodetic(m.cam_from_world), ORIGIN) - enu, axis=1)
    assert np.median(errors) < 1.0
    model = m.sfm_model()
    np.testing.assert_allclose([model.images[i + 1].projection_center() for i in range(12)],
                               camera_centres(m.cam_from_world), atol=1e-9)
