"""Binary feature layers of a map (issue 21): ORB extraction, Hamming matching on BinaryIndex
against a numpy brute force, an ORB layer triangulated on the generated scene, saved and
loaded (memory-mapped too), and localization with ``features="orb"`` at known poses."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import pylocalize
from pylocalize import _core
from pylocalize.datasets.synthetic import courtyard_scene
from pylocalize.features import OrbExtractor, match_descriptors
from pylocalize.features.orb import spread
from pylocalize.geometry import Camera
from pylocalize.localization import Map
from pylocalize.localization.layers import BinaryLayer


def pose_errors(est, gt):
    dR = est[:, :3].T @ gt[:, :3]
    angle = np.degrees(np.arccos(np.clip((np.trace(dR) - 1) / 2, -1, 1)))
    return float(np.linalg.norm(-est[:, :3].T @ est[:, 3] + gt[:, :3].T @ gt[:, 3])), float(angle)


@pytest.fixture(scope="module")
def scene_and_map():
    scene = courtyard_scene(num_views=16, seed=3, width=640, height=480)
    m = Map.from_views(scene.images, scene.K, scene.cam_from_world, scene.names, max_features=1500,
                       layers={"sift": {}, "orb": {"max_features": 1500}})
    return scene, m


# ----------------------------------------------------------------------------------- ORB extraction


def test_orb_is_deterministic_spread_and_sane(scene_and_map):
    scene, _ = scene_and_map
    image = scene.images[0]
    kp, desc = OrbExtractor(800)(image)
    again = OrbExtractor(800)(image)
    np.testing.assert_array_equal(kp, again[0])
    np.testing.assert_array_equal(desc, again[1])
    assert kp.dtype == np.float32 and desc.dtype == np.uint8 and desc.shape == (len(kp), 32)
    assert 600 < len(kp) <= 800 and (kp >= 0).all() and (kp < [640, 480]).all()
    # the grid spreads the corners: more cells of an 8x6 grid hold one than with OpenCV's best 800
    import cv2

    from pylocalize.features.sift import to_gray

    plain = np.array([p.pt for p in cv2.ORB_create(800, fastThreshold=12).detect(to_gray(image), None)])

    def cells(xy):
        return len(np.unique((xy[:, 0] * 8 // 640) * 6 + xy[:, 1] * 6 // 480))

    spread_out = OrbExtractor(800, oversample=3.0)(image)[0]
    assert cells(spread_out) > cells(plain) and cells(kp) == cells(plain)
    # descriptors describe the surface: a database view's ORB matches its neighbour's where the
    # known relative pose says (the points it sees project there, up to a few pixels)
    kp1, desc1 = OrbExtractor(800)(scene.images[1])
    pairs = match_descriptors(desc, desc1, 0.8, metric="hamming")
    depth = scene.depths[0][np.rint(kp[pairs[:, 0], 1]).astype(int), np.rint(kp[pairs[:, 0], 0]).astype(int)]
    rays = np.c_[kp[pairs[:, 0]], np.ones(len(pairs))] @ np.linalg.inv(scene.K).T
    P0, P1 = scene.cam_from_world[0], scene.cam_from_world[1]
    world = (rays * depth[:, None] - P0[:, 3]) @ P0[:, :3]
    cam1 = world @ P1[:, :3].T + P1[:, 3]
    proj = cam1[:, :2] / cam1[:, 2:] @ np.diag(scene.K[[0, 1], [0, 1]]) + scene.K[:2, 2]
    error = np.linalg.norm(proj - kp1[pairs[:, 1]], axis=1)
    assert len(pairs) > 100 and np.mean(error < 3.0) > 0.85
    with pytest.raises(ValueError, match="too small for ORB"):
        OrbExtractor()(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="max_features"):
        OrbExtractor(0)
    assert OrbExtractor(1)(np.zeros((64, 64), np.uint8))[1].shape == (0, 32)  # no corners: no features


def test_spread_keeps_each_cells_best_then_the_best_left():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, [100, 50], (400, 2)).astype(np.float32)
    xy[:200] *= 0.2  # half the corners crowd one corner of the image
    response = rng.permutation(400).astype(np.float32)
    keep = spread(xy, response, 100, 50, (4, 2), 40)
    # reference: per cell the best 5 (40 / 8 cells), then the best others up to 40
    cell = ((xy[:, 1] + 0.5) * 2 // 50).astype(int) * 4 + ((xy[:, 0] + 0.5) * 4 // 100).astype(int)  # pixel edges
    first = set()
    for c in range(8):
        members = np.flatnonzero(cell == c)
        first |= set(members[np.argsort(-response[members])][:5].tolist())
    rest = [i for i in np.argsort(-response) if i not in first][:40 - len(first)]
    assert keep.tolist() == sorted(first | set(rest)) and len(keep) == 40
    assert spread(xy[:10], response[:10], 100, 50, (4, 2), 40).tolist() == list(range(10))


# ----------------------------------------------------------------- Hamming matching vs brute force


def _hamming(a, b):
    """Brute-force Hamming distances (len(a), len(b)) of packed codes, by numpy."""
    return np.unpackbits(a[:, None, :] ^ b[None, :, :], axis=2).sum(2)


def _reference_matches(query, candidates, groups, ratio, mutual=True):
    """Group-aware ratio test and mutual check, by brute force (ties to the smaller index)."""
    d = _hamming(query, candidates)
    nearest = d.argmin(1)
    other = np.where(groups[None] != groups[nearest][:, None], d, np.inf).min(1)
    back = d.argmin(0)
    return [(i, int(nearest[i])) for i in range(len(query))
            if d[i, nearest[i]] < ratio * other[i] and (back[nearest[i]] == i or not mutual)]


def _binary_map(rng):
    """Three images of 60 ORB-like codes; each of 80 points is seen in up to three images
    (a few bits flipped per view), a third of the features observe none."""
    base = rng.integers(0, 256, (80, 32), dtype=np.uint8)
    descriptors, point_ids = [], []
    for _ in range(3):
        ids = rng.permutation(80)[:60]
        ids[rng.random(60) < 0.33] = -1
        flips = np.packbits(rng.random((60, 256)) < 0.06, axis=1)
        views = np.where(ids[:, None] >= 0, base[np.maximum(ids, 0)] ^ flips, rng.integers(0, 256, (60, 32)))
        descriptors.append(views.astype(np.uint8))
        point_ids.append(ids.astype(np.int64))
    keypoints = [rng.uniform(0, 100, (60, 2)).astype(np.float32) for _ in range(3)]
    camera = Camera.from_string("PINHOLE 100 100 80 80 50 50")
    poses = np.tile(np.hstack([np.eye(3), np.zeros((3, 1))]), (3, 1, 1))
    sift = [rng.integers(0, 256, (60, 128), dtype=np.uint8) for _ in range(3)]
    m = Map([f"db{i}.png" for i in range(3)], [camera] * 3, poses, keypoints, sift,
            [np.full(60, -1, np.int64)] * 3, np.zeros((0, 3)))
    m.layers["orb"] = BinaryLayer("orb", keypoints, descriptors, point_ids, rng.normal(size=(80, 3)))
    return m, base


def test_hamming_matching_equals_numpy_brute_force():
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (300, 32), dtype=np.uint8)
    b = np.concatenate([a[::3] ^ np.packbits(rng.random((100, 256)) < 0.08, axis=1),
                        rng.integers(0, 256, (200, 32), dtype=np.uint8)])
    groups = rng.integers(0, 120, len(b))
    index = pylocalize.BinaryIndex(256)
    index.add(b)
    for ratio in (0.7, 0.9):
        expected = _reference_matches(a, b, groups, ratio)
        got = match_descriptors(a, b, ratio, groups_b=groups, metric="hamming")
        assert [tuple(p) for p in got.tolist()] == expected and len(expected) > 30
        with_index = match_descriptors(a, b, ratio, groups_b=groups, metric="hamming", index_b=index)
        np.testing.assert_array_equal(with_index, got)
    plain = match_descriptors(a, b, 0.8, metric="hamming")  # no groups: the second nearest of all
    assert [tuple(p) for p in plain.tolist()] == _reference_matches(a, b, np.arange(len(b)), 0.8)
    with pytest.raises(ValueError, match="index_b"):
        match_descriptors(a, b, groups_b=groups, metric="hamming", index_b=pylocalize.BinaryIndex(256))
    with pytest.raises(ValueError, match="uint8"):
        match_descriptors(a.astype(np.float32), b, metric="hamming")


def test_binary_2d3d_matching_equals_numpy_brute_force():
    rng = np.random.default_rng(7)
    m, base = _binary_map(rng)
    layer = m.feature_layer("orb")
    assert m.feature_layers == ["sift", "orb"] and layer.metric == "hamming"
    query = np.concatenate([base[::2] ^ np.packbits(rng.random((40, 256)) < 0.1, axis=1),
                            rng.integers(0, 256, (30, 32), dtype=np.uint8)])
    for images in ([2, 0], [0, 1, 2]):  # a subset (a new index), every image (the layer's index)
        order = sorted(images)
        has = [layer.point_ids[i] >= 0 for i in order]
        candidates = np.concatenate([layer.descriptors[i][h] for i, h in zip(order, has)])
        groups = np.concatenate([layer.point_ids[i][h] for i, h in zip(order, has)])
        expected = [(i, int(groups[j])) for i, j in _reference_matches(query, candidates, groups, 0.8)]
        got = m.match_2d3d(query, images[::-1] + images, ratio=0.8, features="orb")
        assert list(zip(got.query_ids.tolist(), got.point3D_ids.tolist())) == expected and len(expected) >= 15
        assert m.num_observations(images, "orb") == len(candidates)
    # retrieval votes: the points matched in the whole layer that each image observes
    groups = layer_groups(layer)
    matched = {int(groups[j]) for _, j in _reference_matches(query, layer_codes(layer), groups, 0.8, mutual=False)}
    votes = [len(matched & set(p[p >= 0].tolist())) for p in layer.point_ids]
    images, scores = m.retrieve(query, 3, return_scores=True, features="orb")
    assert scores == sorted(scores, reverse=True) and [votes[i] for i in images] == scores
    with pytest.raises(ValueError, match=r"\(n, 32\)"):
        m.match_2d3d(rng.integers(0, 256, (5, 128), dtype=np.uint8), [0], features="orb")
    with pytest.raises(ValueError, match="image index 3 is outside"):
        m.match_2d3d(query, [0, 1, 3], features="orb")


def layer_codes(layer):
    return np.concatenate([d[p >= 0] for d, p in zip(layer.descriptors, layer.point_ids)])


def layer_groups(layer):
    return np.concatenate([p[p >= 0] for p in layer.point_ids])


# -------------------------------------------------------------- an ORB layer of the generated scene


def test_orb_points_lie_on_the_rendered_surfaces(scene_and_map):
    """Hamming matching under the known epipolar geometry and triangulation put each ORB
    point at the rendered depth where its images observed it."""
    scene, m = scene_and_map
    layer = m.feature_layer("orb")
    assert len(layer.points3D) > 2000 and layer.points3D is not m.points3D
    rel = []
    for i, ids in enumerate(layer.point_ids):
        seen = np.flatnonzero(ids >= 0)
        cam = layer.points3D[ids[seen]] @ scene.cam_from_world[i][:, :3].T + scene.cam_from_world[i][:, 3]
        u, v = np.rint(layer.keypoints[i][seen]).astype(int).T
        rel.append(np.abs(cam[:, 2] - scene.depths[i][v, u]) / scene.depths[i][v, u])
    rel = np.concatenate(rel)
    # ORB corners of coarser pyramid levels are placed less precisely than SIFT's (0.5 %)
    assert np.median(rel) < 0.01 and (rel < 0.03).mean() > 0.95


def test_localize_with_orb_recovers_known_poses(scene_and_map):
    scene, m = scene_and_map
    poses = scene.query_poses(3, seed=4)
    images, _ = scene.render(poses)
    points3D = m.feature_layer("orb").points3D
    for pose, result in zip(poses, m.localize_many(images, scene.K, features="orb", workers=2)):
        assert result.success and result.features == "orb", result.reason
        t_err, r_err = pose_errors(result.cam_from_world, pose)
        # ORB corners sit on whole pixels of their pyramid level (0.3-1 px off, SIFT's
        # sub-pixel); a pixel is 1-3 cm at the 5-15 m of the courtyard at 640x480
        assert t_err < 0.08 and r_err < 0.5 and result.num_inliers >= 100
        # the match ids are the ORB layer's points: they project near their keypoints under the true pose
        cam = points3D[result.point3D_ids] @ pose[:, :3].T + pose[:, 3]
        proj = cam[:, :2] / cam[:, 2:] @ np.diag(scene.K[[0, 1], [0, 1]]) + scene.K[:2, 2]
        assert np.median(np.linalg.norm(proj - result.points2D, axis=1)[result.inlier_mask]) < 1.0
    # the stages alone, and localize_features, give localize's matches
    kp, desc, camera = m.extract(images[0], scene.K, features="orb")
    retrieved = m.retrieve(desc, 10, features="orb")
    matches = m.match_2d3d(desc, retrieved, features="orb")
    from_features = m.localize_features(kp, desc, Camera.from_K(scene.K, 640, 480), features="orb")
    assert from_features.success and from_features.retrieved == [m.names[i] for i in retrieved]
    np.testing.assert_array_equal(from_features.point3D_ids, matches.point3D_ids)
    with pytest.raises(ValueError, match=r"\(n, 32\)"):
        m.localize_features(kp, np.zeros((len(kp), 128), np.uint8), camera, features="orb")


def test_orb_map_saves_loads_and_matches_identically(tmp_path, scene_and_map):
    scene, m = scene_and_map
    m.save(tmp_path / "map")
    pose = scene.query_poses(1, seed=11)[0]
    kp, desc, _ = m.extract(scene.render(pose)[0][0], scene.K, features="orb")
    expected = m.match_2d3d(desc, m.retrieve(desc, 5, features="orb"), features="orb")
    for mmap in (True, False):
        loaded = Map.load(tmp_path / "map", mmap=mmap)
        a, b = loaded.feature_layer("orb"), m.feature_layer("orb")
        assert loaded.feature_layers == ["sift", "orb"] and loaded.layers["orb"].options == m.layers["orb"].options
        np.testing.assert_array_equal(a.points3D, b.points3D)
        for x, y in zip(a.keypoints + a.descriptors + a.point_ids, b.keypoints + b.descriptors + b.point_ids):
            np.testing.assert_array_equal(x, y)
        assert len(loaded.layers["orb"].index) == len(layer_codes(b))
        retrieved = loaded.retrieve(desc, 5, features="orb")
        got = loaded.match_2d3d(desc, retrieved, features="orb")
        assert retrieved == m.retrieve(desc, 5, features="orb")
        np.testing.assert_array_equal(got.query_ids, expected.query_ids)
        np.testing.assert_array_equal(got.point3D_ids, expected.point3D_ids)
        whole = loaded.match_2d3d(desc, range(len(m.names)), features="orb")
        np.testing.assert_array_equal(whole.point3D_ids, m.match_2d3d(desc, range(16), features="orb").point3D_ids)


def _rewrite(src, dst, change):
    """Copies map folder ``src`` to ``dst`` with map.pyloc's sections and JSON info changed by
    ``change(sections, info)`` (checksums valid: a file pylocalize did not write)."""
    shutil.copytree(src, dst)
    tag, _, meta, sections = _core.read_container(str(src / "map.pyloc"), mmap=False)
    sections = {k: np.array(v) for k, v in sections.items()}
    info = json.loads(bytes(sections["info"]).decode())
    change(sections, info)
    sections["info"] = np.frombuffer(json.dumps(info).encode(), np.uint8).copy()
    _core.write_container(str(dst / "map.pyloc"), tag, meta, sections)
    return dst


def test_a_corrupt_or_mismatched_layer_is_a_clear_error(tmp_path, scene_and_map):
    _, m = scene_and_map
    m.save(tmp_path / "map")
    # a flipped byte inside the ORB descriptors: the section's checksum names it
    data = bytearray((tmp_path / "map" / "map.pyloc").read_bytes())
    section = bytes(m.layers["orb"].descriptors[3][:16])
    at = data.find(section)
    assert at > 0
    data[at + 5] ^= 0x10
    shutil.copytree(tmp_path / "map", tmp_path / "corrupt")
    (tmp_path / "corrupt" / "map.pyloc").write_bytes(bytes(data))
    with pytest.raises(pylocalize.FormatError, match="orb.descriptors.*corrupt"):
        Map.load(tmp_path / "corrupt")

    def fewer_counts(sections, info):
        sections["orb.counts"] = sections["orb.counts"][:-1]

    def point_out_of_range(sections, info):
        sections["orb.point_ids"][7] = len(sections["orb.points3D"])

    def missing(sections, info):
        del sections["orb.keypoints"]

    def unknown_kind(sections, info):
        info["layers"]["brisk"] = {}

    def bad_options(sections, info):
        info["layers"]["orb"]["max_features"] = -3

    for change, message in ((fewer_counts, "feature layer 'orb': orb.counts"),
                            (point_out_of_range, "feature layer 'orb', image 0: point ids"),
                            (missing, "section orb.keypoints is missing"),
                            (unknown_kind, "feature layer 'brisk'"), (bad_options, "max_features")):
        bad = _rewrite(tmp_path / "map", tmp_path / change.__name__, change)
        with pytest.raises(pylocalize.FormatError, match=message):
            Map.load(bad)


def test_older_maps_load_with_sift_alone_and_say_how_to_add_orb(scene_and_map):
    from pathlib import Path

    scene, _ = scene_and_map
    golden = Path(__file__).parent / "data" / "golden" / "2026-11-30-issue19-cann" / "map" / "map"
    old = Map.load(golden)
    assert old.feature_layers == ["sift"] and not old.layers
    with pytest.raises(ValueError, match="--features sift,orb"):
        old.localize(scene.images[0], scene.K, features="orb")
    with pytest.raises(ValueError, match="always holds SIFT"):
        Map.from_views(scene.images[:2], scene.K, scene.cam_from_world[:2], scene.names[:2], layers=["orb"])
    with pytest.raises(ValueError, match="unknown features 'surf'"):
        Map.from_views(scene.images[:2], scene.K, scene.cam_from_world[:2], scene.names[:2], layers=["sift", "surf"])


def test_cli_builds_a_map_with_orb_and_localizes_with_it(tmp_path, scene_and_map, capsys):
    from PIL import Image

    from pylocalize.cli import main
    from pylocalize.geometry import read_pose_file, write_pose_file

    scene, _ = scene_and_map
    (tmp_path / "db").mkdir()
    for name, image in zip(scene.names, scene.images):
        Image.fromarray(image).save(tmp_path / "db" / name.replace(".jpg", ".png"))
    write_pose_file(tmp_path / "poses.txt", [(n.replace(".jpg", ".png"), P)
                                             for n, P in zip(scene.names, scene.cam_from_world)])
    camera = Camera.from_K(scene.K, 640, 480).to_string()
    build = ["map", "build", "--poses", str(tmp_path / "poses.txt"), "--images", str(tmp_path / "db"),
             "--camera", camera, "--max-features", "800", "--orb-features", "800", "--out", str(tmp_path / "map")]
    assert main(build + ["--features", "orb"]) == 2
    assert "--features orb: give a comma-separated list" in capsys.readouterr().err
    assert main(build + ["--features", "sift,orb", "--patches"]) == 0
    assert "orb:" in capsys.readouterr().out
    assert [len(p) for p in Map.load(tmp_path / "map").patches["sift"]] == \
        [int((Map.load(tmp_path / "map").point_ids[i] >= 0).sum()) for i in range(len(scene.names))]
    pose = scene.query_poses(1, seed=8)[0]
    Image.fromarray(scene.render(pose)[0][0]).save(tmp_path / "q.png")
    localize = ["localize", "--map", str(tmp_path / "map"), "--images", str(tmp_path / "q.png"), "--camera", camera,
                "--out", str(tmp_path / "out.txt")]
    assert main(localize + ["--features", "orb"]) == 0
    t_err, r_err = pose_errors(read_pose_file(tmp_path / "out.txt")["q.png"], pose)
    assert t_err < 0.05 and r_err < 0.3
    # a short walk tracked on ORB of the stream's budget, every pose refined on the patches
    from pylocalize.datasets.camera_paths import render_path, walking_path
    from pylocalize.localization.trajectory import read_tum

    path = walking_path(8, seed=2)
    (tmp_path / "frames").mkdir()
    for k, frame in enumerate(render_path(scene, path)):
        Image.fromarray(frame).save(tmp_path / "frames" / f"{k:03d}.png")
    assert main(["track", "--map", str(tmp_path / "map"), "--images", str(tmp_path / "frames"), "--camera", camera,
                 "--features", "orb", "--max-features", "600", "--levels", "3", "--out",
                 str(tmp_path / "traj.txt")]) == 0
    from pylocalize.localization.triangulation import camera_centres

    _, poses = read_tum(tmp_path / "traj.txt")
    assert np.median(np.linalg.norm(camera_centres(poses) - camera_centres(path.cam_from_world), axis=1)) < 0.01
    rows = [r.split("\t") for r in (tmp_path / "traj.frames.tsv").read_text().splitlines()]
    assert rows[0][5] == "patch_inliers" and min(int(r[5]) for r in rows[1:]) >= 20
    assert Map.load(tmp_path / "map").layers["orb"].options["max_features"] == 800
    # a map without ORB: one line that says how to build one
    assert main(build[:-1] + [str(tmp_path / "sift_only")]) == 0
    capsys.readouterr()
    assert main(localize[:2] + [str(tmp_path / "sift_only")] + localize[3:] + ["--features", "orb"]) == 1
    assert "--features sift,orb" in capsys.readouterr().err
