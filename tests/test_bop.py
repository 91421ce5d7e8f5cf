"""BOP format and pose-error metrics against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from pylocalize.objects import bop


def rot_z(deg):
    a = np.radians(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])


# a 100 x 60 x 20 mm box's corners (diameter = its diagonal)
BOX = np.array([[x, y, z] for x in (-50, 50) for y in (-30, 30) for z in (-10, 10)], np.float64)
DIAMETER = float(np.linalg.norm([100, 60, 20]))


def test_surface_and_average_distances():
    R, t = np.eye(3), np.array([0, 0, 500.0])
    identity = [np.eye(4)]
    assert bop.mssd(R, t, R, t, BOX, identity) == 0 and bop.add(R, t, R, t, BOX) == 0
    shifted = t + [3.0, 4.0, 0]  # every point moves by 5 mm
    assert bop.mssd(R, shifted, R, t, BOX, identity) == pytest.approx(5)
    assert bop.add(R, shifted, R, t, BOX) == pytest.approx(5)
    # the box turned by 180 degrees about z: corners swap, the farthest moves by the xy diagonal
    turned = rot_z(180)
    assert bop.mssd(turned, t, R, t, BOX, identity) == pytest.approx(2 * np.hypot(50, 30))
    assert bop.adds(turned, t, R, t, BOX) == pytest.approx(0, abs=1e-6)  # same point set
    flip = np.eye(4)
    flip[:3, :3] = rot_z(180)
    assert bop.mssd(turned, t, R, t, BOX, [np.eye(4), flip]) == pytest.approx(0, abs=1e-9)


def test_projection_distance_and_symmetries():
    K = np.array([[600.0, 0, 320], [0, 600, 240], [0, 0, 1]])
    R, t = np.eye(3), np.array([0, 0, 600.0])
    # 6 mm sideways at 600 mm with f = 600 px: 6 px in the image for every point at depth 600
    e = bop.mspd(R, t + [6.0, 0, 0], R, t, K, BOX, [np.eye(4)])
    assert e == pytest.approx(600 * 6 / 590)  # the nearest corners (z = 590) move most
    info = {"diameter": DIAMETER, "symmetries_continuous": [{"axis": [0, 0, 1], "offset": [0, 0, 0]}]}
    symmetries = bop.symmetry_transformations(info)
    assert len(symmetries) > 100 and np.allclose(symmetries[0], np.eye(4))
    # any rotation about the axis of a continuous symmetry costs (nearly) nothing
    assert bop.mssd(rot_z(37), t, R, t, BOX, symmetries) < 0.01 * DIAMETER


def test_vsd_and_average_recall():
    depth = np.zeros((10, 10))
    depth[2:8, 2:8] = 500.0
    test_depth = depth.copy()
    assert np.all(bop.vsd(depth, depth, test_depth, DIAMETER) == 0)
    far = np.where(depth > 0, 800.0, 0)  # behind the true surface: invisible in the test depth
    assert np.all(bop.vsd(far, depth, test_depth, DIAMETER) == 1)
    half = depth.copy()
    half[2:8, 2:5] = 0  # half the surface missing in the estimate
    errors = bop.vsd(half, depth, test_depth, DIAMETER)
    assert np.allclose(errors, 0.5)
    ar = bop.average_recalls({"mssd": np.array([0.0, np.inf]), "mspd": np.array([0.0, np.inf]),
                              "vsd": np.array([np.zeros(10), np.ones(10)]), "add": np.array([0.0, 1e9]),
                              "adds": np.array([0.0, 1e9])},
                             np.array([DIAMETER, DIAMETER]), np.array([640, 640]))
    assert ar["AR"] == pytest.approx(0.5) and ar["AR_MSPD"] == 0.5 and ar["ADD@0.1d"] == 0.5
    assert ar["ADD-S@0.1d"] == 0.5


def test_format_round_trip(tmp_path):
    images = {3: {"K": np.eye(3), "depth_scale": 0.1, "gt": [{"obj_id": 5, "R": rot_z(10), "t": [1.0, 2, 3]}],
                  "gt_info": [{"visib_fract": 0.8}]}}
    bop.write_scene(tmp_path / "000001", images)
    scene = bop.read_scene(tmp_path / "000001")
    np.testing.assert_allclose(scene[3]["gt"][0]["R"], rot_z(10))
    assert scene[3]["gt"][0]["obj_id"] == 5 and scene[3]["depth_scale"] == 0.1
    rows = [{"scene_id": 1, "im_id": 3, "obj_id": 5, "score": 0.7, "R": rot_z(10), "t": [1.0, 2, 3], "time": 0.5}]
    bop.write_results_csv(tmp_path / "r.csv", rows)
    back = bop.read_results_csv(tmp_path / "r.csv")
    np.testing.assert_allclose(back[0]["R"], rot_z(10), atol=1e-8)
    assert back[0]["time"] == 0.5
    (tmp_path / "bad.csv").write_text("scene_id,im_id,obj_id,score,R,t,time\n1,2,3,0.5,1 2,3,1\n")
    with pytest.raises(ValueError, match="bad.csv:2"):
        bop.read_results_csv(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="missing"):
        bop.read_scene(tmp_path)


def test_results_translation_in_millimetres(tmp_path):
    """BOP results hold t in mm: a pose in metres comes back x 1000, one in mm unchanged."""
    rng = np.random.default_rng(3)
    t_m = rng.uniform(-0.5, 0.5, 3) + [0, 0, 1.2]
    row = {"scene_id": 1, "im_id": 2, "obj_id": 5, "score": 0.9, "R": rot_z(30), "t": t_m, "time": 0.1}
    bop.write_results_csv(tmp_path / "m.csv", [row], units="m")
    np.testing.assert_allclose(bop.read_results_csv(tmp_path / "m.csv")[0]["t"], t_m * 1000.0, rtol=1e-8)
    bop.write_results_csv(tmp_path / "cm.csv", [row], units="cm")
    np.testing.assert_allclose(bop.read_results_csv(tmp_path / "cm.csv")[0]["t"], t_m * 10.0, rtol=1e-8)
    row_mm = dict(row, t=t_m * 1000.0)
    bop.write_results_csv(tmp_path / "mm.csv", [row_mm])
    back = bop.read_results_csv(tmp_path / "mm.csv")[0]
    np.testing.assert_allclose(back["t"], t_m * 1000.0, rtol=1e-8)
    np.testing.assert_allclose(back["R"], rot_z(30), atol=1e-8)  # rotations are unit-free
    with pytest.raises(ValueError, match="mesh units must be one of mm, cm, m"):
        bop.write_results_csv(tmp_path / "x.csv", [row], units="inch")
    assert not (tmp_path / "x.csv").exists()


def test_mesh_units_from_size():
    assert bop.mesh_units_from_size(DIAMETER) == "mm"  # the 119 mm box
    assert bop.mesh_units_from_size(DIAMETER / 1000.0) == "m"
    assert bop.millimetres_per_unit("m") == 1000.0 and bop.millimetres_per_unit("mm") == 1.0
