"""A map leaves pylocalize as a COLMAP model that pycolmap reads back exactly."""

from __future__ import annotations

import numpy as np
import pytest

from pylocalize.datasets.synthetic import courtyard_scene
from pylocalize.localization import Map

pycolmap = pytest.importorskip("pycolmap")


@pytest.fixture(scope="module")
def scene_and_map(tmp_path_factory):
    scene = courtyard_scene(num_views=10, seed=5, width=480, height=360)
    folder = scene.export(tmp_path_factory.mktemp("scene"))
    m = Map.from_colmap(folder / "sparse", folder / "images", max_features=1500)
    return scene, folder, m


def _check_model(rec, m, grey: bool):
    """Every camera, pose, 2D point, point position and track of ``rec`` against the map's
    arrays."""
    assert rec.num_images() == len(m.names) and rec.num_points3D() == len(m.points3D)
    for i, name in enumerate(m.names):
        image = rec.images[i + 1]
        assert image.name == name and image.has_pose
        camera = rec.cameras[image.camera_id]
        assert (camera.model.name, camera.width, camera.height) == (m.cameras[i].model, m.cameras[i].width,
                                                                    m.cameras[i].height)
        np.testing.assert_array_equal(camera.params, m.cameras[i].params)
        np.testing.assert_allclose(np.asarray(image.cam_from_world().matrix())[:3], m.cam_from_world[i], atol=1e-12)
        xy = np.array([p.xy for p in image.points2D]).reshape(-1, 2)
        np.testing.assert_array_equal((xy - 0.5).astype(np.float32), m.keypoints[i])  # COLMAP pixel centres
        observed = np.array([p.point3D_id - 1 if p.has_point3D() else -1 for p in image.points2D])
        np.testing.assert_array_equal(observed, m.point_ids[i])
    xyz = np.array([rec.points3D[k + 1].xyz for k in range(len(m.points3D))])
    np.testing.assert_array_equal(xyz, m.points3D)
    for k in range(0, len(m.points3D), 7):
        track = sorted((e.image_id - 1, e.point2D_idx) for e in rec.points3D[k + 1].track.elements)
        expected = sorted((i, int(j)) for i, ids in enumerate(m.point_ids) for j in np.flatnonzero(ids == k))
        assert track == expected
    # each point carries its mean reprojection error, as COLMAP's own models do
    assert 0 < rec.compute_mean_reprojection_error() < 3.0
    colors = np.array([rec.points3D[k + 1].color for k in range(len(m.points3D))])
    if grey:
        assert (colors == 128).all()
    else:
        assert len(np.unique(colors, axis=0)) > 10  # the textures' colours, not one grey


@pytest.mark.parametrize("binary", [True, False])
def test_export_reads_back_exactly_in_pycolmap(tmp_path, scene_and_map, binary):
    _, _, m = scene_and_map
    image_dir, m.image_dir = m.image_dir, None  # no images: grey points
    try:
        m.to_colmap(tmp_path / "model", binary=binary)
    finally:
        m.image_dir = image_dir
    ext = "bin" if binary else "txt"
    assert {p.name for p in (tmp_path / "model").iterdir()} >= {f"cameras.{ext}", f"images.{ext}",
                                                                  f"points3D.{ext}"}
    _check_model(pycolmap.Reconstruction(str(tmp_path / "model")), m, grey=True)


def test_export_colours_and_from_colmap_round_trip(tmp_path, scene_and_map):
    """Colours come from the map's images; Map.from_colmap reads the export back into a map
    with the same images, cameras and poses."""
    scene, folder, m = scene_and_map
    m.to_colmap(tmp_path / "model")
    rec = pycolmap.Reconstruction(str(tmp_path / "model"))
    _check_model(rec, m, grey=False)
    # a point seen once has the colour of its pixel
    from pylocalize.io import read_image

    i = 0
    j = int(np.flatnonzero(m.point_ids[i] >= 0)[0])
    k = m.point_ids[i][j]
    pixels = read_image(folder / "images" / m.names[i])
    x, y = np.rint(m.keypoints[i][j]).astype(int)
    seen = [(a, b) for a, ids in enumerate(m.point_ids) for b in np.flatnonzero(ids == k)]
    if len(seen) == 1:
        np.testing.assert_array_equal(rec.points3D[k + 1].color, pixels[y, x])
    back = Map.from_colmap(tmp_path / "model", folder / "images", max_features=1500)
    assert back.names == m.names
    np.testing.assert_allclose(back.cam_from_world, m.cam_from_world, atol=1e-12)
    assert [c.to_string() for c in back.cameras] == [c.to_string() for c in m.cameras]
    np.testing.assert_allclose(back.cam_from_world, scene.cam_from_world, atol=1e-8)


def test_export_is_all_or_nothing_and_refuses_foreign_folders(tmp_path, scene_and_map, monkeypatch):
    from pylocalize.localization import colmap_export

    _, _, m = scene_and_map
    m.to_colmap(tmp_path / "model", binary=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "model").iterdir()}

    def crash(rec, out):  # the writer dies half way: one file written
        (tmp_path / "crash").mkdir(exist_ok=True)
        open(f"{out}/cameras.bin", "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(pycolmap.Reconstruction, "write", crash)
    with pytest.raises(OSError, match="disk full"):
        m.to_colmap(tmp_path / "model")
    assert {p.name: p.read_bytes() for p in (tmp_path / "model").iterdir()} == before  # the old model, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crash", "model"]  # no temporary folder left
    monkeypatch.undo()
    m.to_colmap(tmp_path / "model")  # a COLMAP model is replaced
    assert sorted(p.name for p in (tmp_path / "model").iterdir() if p.suffix == ".txt") == []
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.md").write_text("mine")
    with pytest.raises(ValueError, match="not a COLMAP model"):
        m.to_colmap(tmp_path / "other")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        colmap_export.write_colmap_model(m, tmp_path / "file")


def test_cli_map_export(tmp_path, scene_and_map, capsys):
    from pylocalize.cli import main

    _, _, m = scene_and_map
    m.save(tmp_path / "map")
    assert main(["map", "export", "--map", str(tmp_path / "map"), "--colmap", str(tmp_path / "txt"), "--text"]) == 0
    assert main(["map", "export", "--map", str(tmp_path / "map"), "--colmap", str(tmp_path / "bin")]) == 0
    assert "COLMAP model (binary)" in capsys.readouterr().out
    assert (tmp_path / "txt" / "images.txt").is_file() and (tmp_path / "bin" / "images.bin").is_file()
    loaded = Map.load(tmp_path / "map")
    for folder in ("txt", "bin"):
        _check_model(pycolmap.Reconstruction(str(tmp_path / folder)), loaded, grey=False)
