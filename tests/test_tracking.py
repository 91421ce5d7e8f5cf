"""Tracking a camera stream against a map: each step against a hand-built case, then a short
rendered walk (teleport, dropped frames, an occluder) tracked end to end with ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from pylocalize.datasets.camera_paths import occlude, render_path, walking_path
from pylocalize.datasets.synthetic import courtyard_scene
from pylocalize.geometry import Camera, look_at, rotation_error_deg
from pylocalize.geometry.absolute_pose import refine_absolute_pose
from pylocalize.geometry.poses import compose_poses, invert_pose, motion_power
from pylocalize.localization import FeatureLayer, Map
from pylocalize.localization.tracking import (
    Tracker,
    TrackerOptions,
    guided_matches,
    pairs_within,
    predict_pose,
    project_points,
)
from pylocalize.localization.trajectory import absolute_trajectory_error, recovery_frames, sequence_summary
from pylocalize.localization.triangulation import camera_centres


def _rotation(axis, degrees):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    W = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = np.radians(degrees)
    return np.eye(3) + np.sin(a) * W + (1 - np.cos(a)) * W @ W


# ---------------------------------------------------------------- prediction


def test_motion_power_is_the_screw_motion_run_longer_or_shorter():
    motion = np.hstack([_rotation([0.2, 1.0, -0.3], 7.0), [[0.1], [-0.04], [0.3]]])
    assert np.allclose(motion_power(motion, 1.0), motion)
    assert np.allclose(motion_power(motion, 0.0), np.hstack([np.eye(3), np.zeros((3, 1))]))
    assert np.allclose(motion_power(motion, 2.0), compose_poses(motion, motion))
    assert np.allclose(motion_power(motion, 3.0), compose_poses(motion, compose_poses(motion, motion)))
    half = motion_power(motion, 0.5)
    assert np.allclose(compose_poses(half, half), motion)
    assert np.allclose(motion_power(motion, -1.0), invert_pose(motion))


def test_constant_velocity_prediction_follows_a_steady_screw_motion():
    """A camera turning and moving at constant rates: the pose k steps on, from the last two."""
    step = np.hstack([_rotation([0, 1, 0.1], 1.5), [[0.02], [0.0], [0.05]]])  # cam_next_from_cam
    poses = [look_at(np.array([1.0, 2.0, 1.6]), np.array([5.0, 2.0, 1.6]), up=(0, 0, 1))]
    for _ in range(25):
        poses.append(compose_poses(step, poses[-1]))
    velocity = compose_poses(poses[1], invert_pose(poses[0]))
    assert np.allclose(predict_pose(poses[1], velocity, 1 / 30, 1 / 30), poses[2])
    # 21 frame steps later (20 frames dropped), and with no velocity the last pose itself
    assert np.allclose(predict_pose(poses[1], velocity, 1 / 30, 21 / 30), poses[22])
    assert np.allclose(predict_pose(poses[1]), poses[1])
    # odometry replaces the velocity, applied as given
    odometry = np.hstack([_rotation([1, 0, 0], 3.0), [[0.0], [0.1], [0.0]]])
    assert np.allclose(predict_pose(poses[1], velocity, 1 / 30, 1 / 30, odometry), compose_poses(odometry, poses[1]))
    with pytest.raises(ValueError, match="odometry"):
        predict_pose(poses[1], odometry=np.eye(3))


# ---------------------------------------------------------------- projection


def test_projection_of_hand_placed_points():
    camera = Camera("PINHOLE", 640, 480, (500.0, 500.0, 320.0, 240.0))  # K centre at (319.5, 239.5)
    pose = np.hstack([np.eye(3), np.zeros((3, 1))])
    points = np.array([[0, 0, 2.0], [0.4, -0.2, 2.0], [0, 0, -1.0], [2.0, 0, 2.0], [1.302, 0, 2.0]])
    pixels, visible = project_points(points, pose, camera)
    assert np.allclose(pixels[0], [319.5, 239.5]) and np.allclose(pixels[1], [419.5, 189.5])
    assert np.isnan(pixels[2]).all()  # behind the camera
    assert visible.tolist() == [True, True, False, False, False]  # (3) far right, (4) 5.5 px past the edge
    assert project_points(points, pose, camera, margin_px=10)[1].tolist() == [True, True, False, False, True]
    # a moved camera: the world point seen at the centre is the one on its optical axis
    pose = look_at(np.array([1.0, 1.0, 1.0]), np.array([1.0, 4.0, 1.0]), up=(0, 0, 1))
    pixels, visible = project_points(np.array([[1.0, 3.0, 1.0]]), pose, camera)
    assert visible[0] and np.allclose(pixels[0], [319.5, 239.5])


# ---------------------------------------------------------------- guided matching


def test_pairs_within_a_radius_equal_brute_force():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 200, (300, 2)), rng.uniform(-20, 220, (500, 2))
    for radius in (3.0, 12.5, 40.0):
        i, j = pairs_within(a, b, radius)
        d = np.linalg.norm(a[:, None] - b[None], axis=2)
        assert set(zip(i.tolist(), j.tolist())) == set(zip(*map(list, np.nonzero(d <= radius))))
        assert len(i) == len(set(zip(i.tolist(), j.tolist())))  # no pair twice
    assert len(pairs_within(np.zeros((0, 2)), b, 5.0)[0]) == 0


def _reference_guided(kp, desc, proj, cdesc, groups, radius, metric, ratio, max_distance):
    """The rule of guided_matches, written as loops."""
    def distance(x, y):
        if metric == "l2":
            return float(np.linalg.norm(x.astype(float) - y.astype(float)))
        return float(np.unpackbits(np.bitwise_xor(x, y)).sum())

    chosen = {}
    for i in range(len(kp)):
        near = [j for j in range(len(proj)) if np.linalg.norm(kp[i] - proj[j]) <= radius]
        if not near:
            continue
        d = sorted((distance(desc[i], cdesc[j]), j) for j in near)
        best_d, best_j = d[0]
        others = [dd for dd, j in d if groups[j] != groups[best_j]]
        second = others[0] if others else np.inf
        if best_d <= max_distance and best_d < ratio * second:
            g = groups[best_j]
            if g not in chosen or (best_d, i) < chosen[g][0]:
                chosen[g] = ((best_d, i), best_j)
    pairs = sorted((i, j) for (_, i), j in chosen.values())
    return pairs


@pytest.mark.parametrize("metric", ["l2", "hamming"])
def test_guided_matching_equals_its_rule_written_as_loops(metric):
    rng = np.random.default_rng(1 if metric == "l2" else 2)
    n_points, width = 120, 32 if metric == "hamming" else 128
    groups = np.repeat(np.arange(n_points), 2)  # each point observed in two map images
    proj = np.repeat(rng.uniform(0, 300, (n_points, 2)), 2, axis=0) + rng.normal(0, 0.5, (2 * n_points, 2))
    cdesc = rng.integers(0, 256 if metric == "hamming" else 120, (2 * n_points, width)).astype(np.uint8)
    # frame features: noisy copies of 80 points' first observation near their projection, plus clutter
    seen = rng.choice(n_points, 80, replace=False)
    kp = np.vstack([proj[2 * seen] + rng.normal(0, 3, (80, 2)), rng.uniform(0, 300, (40, 2))])
    if metric == "l2":
        noisy = cdesc[2 * seen].astype(int) + rng.integers(-10, 11, (80, width))
        desc = np.vstack([np.clip(noisy, 0, 255), rng.integers(0, 120, (40, width))]).astype(np.uint8)
        max_distance = 300.0
    else:
        flips = np.packbits(rng.random((80, width * 8)) < 0.08, axis=1)
        desc = np.vstack([cdesc[2 * seen] ^ flips, rng.integers(0, 256, (40, width))]).astype(np.uint8)
        max_distance = 64.0
    for radius, ratio in ((10.0, 0.85), (30.0, 0.7), (60.0, 1.0)):
        fi, cj = guided_matches(kp, desc, proj, cdesc, groups, radius, metric, ratio, max_distance)
        expected = _reference_guided(kp, desc, proj, cdesc, groups, radius, metric, ratio, max_distance)
        assert list(zip(fi.tolist(), cj.tolist())) == expected
        if radius == 10.0:  # the planted features find their points
            truth = {i: seen[i] for i in range(80)}
            right = sum(groups[j] == truth.get(i, -1) for i, j in zip(fi, cj))
            assert right >= 70 and right == len(fi)


def test_guided_matching_keeps_only_what_lies_within_the_radius_and_one_feature_per_point():
    cdesc = np.array([[10] * 8, [200] * 8, [10] * 8], np.uint8)
    proj = np.array([[100.0, 100.0], [100.0, 100.0], [160.0, 100.0]])
    groups = np.array([0, 1, 2])
    desc = np.array([[11] * 8, [10] * 8, [10] * 8], np.uint8)
    kp = np.array([[104.0, 100.0], [102.0, 99.0], [300.0, 300.0]])  # the third is near nothing
    fi, cj = guided_matches(kp, desc, proj, cdesc, groups, 8.0, "l2", 0.8, 100.0)
    # both features 0 and 1 want point 0; the nearer descriptor (feature 1) keeps it
    assert fi.tolist() == [1] and cj.tolist() == [0]
    # point 2 has the same descriptor as point 0 but lies 60 px away: it never competes in 8 px
    fi, cj = guided_matches(kp, desc, proj, cdesc, groups, 70.0, "l2", 0.8, 100.0)
    assert fi.tolist() == []  # in 70 px, points 0 and 2 look alike: the ratio test refuses both
    with pytest.raises(ValueError, match="extractor"):
        guided_matches(kp, desc[:, :4], proj, cdesc, groups, 8.0)
    with pytest.raises(ValueError, match="metric"):
        guided_matches(kp, desc, proj, cdesc, groups, 8.0, metric="cosine")


# ---------------------------------------------------------------- pose from the prior


def test_refinement_from_a_prior_recovers_a_known_pose_despite_outliers():
    rng = np.random.default_rng(3)
    camera = Camera("PINHOLE", 640, 480, (500.0, 500.0, 320.0, 240.0))
    pose = look_at(np.array([0.5, -0.3, 1.5]), np.array([0.0, 6.0, 1.0]), up=(0, 0, 1))
    points = rng.uniform([-4, 4, 0], [4, 9, 4], (300, 3))
    pixels, visible = project_points(points, pose, camera)
    points, pixels = points[visible], pixels[visible] + rng.normal(0, 0.5, (visible.sum(), 2))
    outliers = rng.random(len(points)) < 0.25
    pixels[outliers] = rng.uniform([0, 0], [640, 480], (outliers.sum(), 2))
    prior = compose_poses(np.hstack([_rotation([0, 1, 0], 1.5), [[0.05], [0.0], [-0.08]]]), pose)
    result = refine_absolute_pose(pixels, points, camera, prior, loss_scale_px=2.0, max_error_px=3.0)
    assert rotation_error_deg(result.cam_from_world[:, :3], pose[:, :3]) < 0.05
    assert np.linalg.norm(camera_centres(result.cam_from_world[None]) - camera_centres(pose[None])) < 0.005
    assert (result.inlier_mask == ~outliers).mean() > 0.97
    assert refine_absolute_pose(pixels[:3], points[:3], camera, prior) is None


# ---------------------------------------------------------------- a rendered stream end to end


@pytest.fixture(scope="module")
def courtyard():
    scene = courtyard_scene(num_views=20, seed=3, width=320, height=240)
    m = Map.from_views(scene.images, scene.K, scene.cam_from_world, scene.names, max_features=1500)
    return scene, m


# 30 frames at 30 Hz: an occluder sweeps over frames 6-9, 20 frames are dropped before frame
# 14, the camera is teleported at frame 22
EVENTS = {"teleports": [22], "drops": [(14, 20)], "occlusions": [(6, 4)]}


@pytest.fixture(scope="module")
def stream(courtyard):
    scene, _ = courtyard
    path = walking_path(30, seed=5, **EVENTS)
    return path, list(render_path(scene, path))


def test_walking_path_moves_like_a_walker_and_holds_its_events(stream):
    path, frames = stream
    assert len(frames) == 30 and frames[0].shape == (240, 320, 3)
    steps = np.linalg.norm(np.diff(camera_centres(path.cam_from_world), axis=0), axis=1)
    dt = np.diff(path.timestamps)
    assert np.isclose(dt[13], 21 / 30) and np.allclose(np.delete(dt, 13), 1 / 30)
    normal = np.delete(np.arange(29), [13, 21])  # steps across the gap and the teleport
    assert 0.02 < np.median(steps[normal]) < 0.08 and steps[normal].max() < 0.1  # ~1.4 m/s at 30 Hz
    assert steps[21] > 3.0  # a third of the 4.5 m loop or more
    assert path.events == {14: "20 dropped frames", 22: "teleport"}
    assert set(path.occluded) == {6, 7, 8, 9}
    assert (frames[7] == np.array([70, 62, 58], np.uint8)).all(axis=2).mean() > 0.3
    image = np.zeros((4, 10, 3), np.uint8)
    assert (occlude(image, 0.5)[:, 5:] != 0).all() and (image[:, :5] == 0).all()


def _track(m, scene, path, frames, **tracker_args):
    tracker = Tracker(m, scene.camera, options=TrackerOptions(scale=1.0, max_features=600), **tracker_args)
    return [tracker.track(f, t) for f, t in zip(frames, path.timestamps)]


def test_tracker_localizes_every_frame_and_recovers_from_kidnapping_and_gaps(courtyard, stream):
    scene, m = courtyard
    path, frames = stream
    results = _track(m, scene, path, frames)
    statuses = [r.status for r in results]
    assert all(r.success for r in results), [(k, r) for k, r in enumerate(results) if not r.success]
    assert statuses[0] == "relocalized"  # nothing to predict from
    assert statuses.count("tracked") >= 24
    # recovered at the teleport and after the gap within 3 frames, tracked again right after
    assert all(v is not None and v <= 3 for v in recovery_frames(statuses, [14, 22]).values())
    assert statuses[25:] == ["tracked"] * 5
    ate = absolute_trajectory_error(np.array([r.cam_from_world for r in results]), path.cam_from_world, "none")
    assert ate["median"] < 0.03 and ate["max"] < 0.15  # metres, 320x240 frames
    rotation = rotation_error_deg(np.array([r.cam_from_world[:, :3] for r in results]), path.cam_from_world[:, :, :3])
    assert np.median(rotation) < 0.3
    tracked = [r for r in results if r.status == "tracked"]
    assert all(r.predicted is not None and r.num_inliers >= 20 for r in tracked)
    assert {"features", "local map", "matching", "pose", "total"} <= set(tracked[-1].timings)
    summary = sequence_summary(results, path.cam_from_world)
    assert summary["with_pose"] == 1.0 and summary["shares"]["tracked"] == statuses.count("tracked") / 30


def test_tracker_uses_odometry_and_rejects_bad_frames(courtyard, stream):
    scene, m = courtyard
    path, frames = stream
    tracker = Tracker(m, scene.camera, options=TrackerOptions(scale=1.0, max_features=600))
    first = tracker.track(frames[0], 0.0)
    assert first.status == "relocalized"
    # the true motion as odometry: the prediction is the true pose up to the first frame's error
    odometry = compose_poses(path.cam_from_world[1], invert_pose(path.cam_from_world[0]))
    second = tracker.track(frames[1], path.timestamps[1], odometry=odometry)
    assert second.status == "tracked"
    assert np.allclose(second.predicted, compose_poses(odometry, first.cam_from_world))
    with pytest.raises(ValueError, match="time order"):
        tracker.track(frames[2], 0.0)
    with pytest.raises(ValueError, match="camera's size"):
        tracker.track(frames[2][:100], 5.0)
    with pytest.raises(ValueError, match="no 'orb' features"):
        Tracker(m, scene.camera, features="orb")
    with pytest.raises(ValueError, match="extractor"):
        Tracker(m, scene.camera, features=m.feature_layer("sift")._replace(name="other"))
    with pytest.raises(ValueError, match="search_radius_px"):
        TrackerOptions(search_radius_px=0)


def _orb(image):
    import cv2

    orb = cv2.ORB_create(nfeatures=800, edgeThreshold=15, patchSize=15, fastThreshold=10)
    points, desc = orb.detectAndCompute(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), None)
    return np.array([p.pt for p in points], np.float32).reshape(-1, 2), desc


def _orb_layer(scene) -> FeatureLayer:
    """A binary layer made here, as an RGB-D map would be: ORB features of the map images,
    each tied to the 3D point its rendered depth puts under it (one point per feature)."""
    keypoints, descriptors, point_ids, points = [], [], [], []
    K_inv = np.linalg.inv(scene.K)
    for image, depth, pose in zip(scene.images, scene.depths, scene.cam_from_world):
        kp, desc = _orb(image)
        u, v = np.rint(kp).astype(int).T
        z = depth[v, u]
        kp, desc, z = kp[z > 0], desc[z > 0], z[z > 0]
        cam = (np.c_[kp, np.ones(len(kp))] @ K_inv.T) * z[:, None]
        start = sum(len(p) for p in points)
        points.append((cam - pose[:, 3]) @ pose[:, :3])  # R^T (x - t) for each row
        keypoints.append(kp)
        descriptors.append(desc)
        point_ids.append(np.arange(start, start + len(kp)))
    return FeatureLayer("orb", keypoints, descriptors, point_ids, np.concatenate(points), "hamming")


def test_tracker_on_a_binary_layer_matches_by_hamming_distance(courtyard, stream):
    scene, m = courtyard
    path, frames = stream
    layer = _orb_layer(scene)
    tracker = Tracker(m, scene.camera, features=layer, extractor=_orb)
    results = [tracker.track(f, t) for f, t in zip(frames[:12], path.timestamps[:12])]
    assert all(r.success for r in results)
    tracked = [r for r in results if r.status == "tracked"]
    assert len(tracked) >= 9
    truth = path.cam_from_world[:12][[r.status == "tracked" for r in results]]
    estimate = np.array([r.cam_from_world for r in tracked])
    errors = np.linalg.norm(camera_centres(estimate) - camera_centres(truth), axis=1)
    assert np.median(errors) < 0.05


# ---------------------------------------------------------------- sequence metrics on analytic trajectories


def _circle(n=40):
    """Cameras round a circle of radius 3 m looking at its centre."""
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    eyes = np.c_[3 * np.cos(angles), 3 * np.sin(angles), 1.5 + 0.2 * np.sin(3 * angles)]
    return np.array([look_at(e, np.array([0.0, 0.0, 1.0]), up=(0, 0, 1)) for e in eyes])


def _moved_world(poses, s, R, t):
    """The same cameras after the world is mapped by x -> s R x + t."""
    from pylocalize.geometry import transform_pose

    return np.array([transform_pose(p, s, R, t) for p in poses])


def test_ate_aligns_away_a_rigid_or_similar_world_and_measures_offsets():
    gt = _circle()
    R, t = _rotation([0.3, -0.2, 1.0], 40.0), np.array([5.0, -2.0, 0.7])
    rigid = _moved_world(gt, 1.0, R, t)
    assert absolute_trajectory_error(rigid, gt, "se3")["rmse"] < 1e-9
    assert absolute_trajectory_error(rigid, gt, "none")["rmse"] > 1.0
    scaled = _moved_world(gt, 2.5, R, t)
    assert absolute_trajectory_error(scaled, gt, "sim3")["rmse"] < 1e-9
    assert np.isclose(absolute_trajectory_error(scaled, gt, "sim3")["scale"], 1 / 2.5)
    assert absolute_trajectory_error(scaled, gt, "se3")["rmse"] > 0.5
    # without alignment, a centre moved by d is an error of |d| at that frame; NaN frames are skipped
    est = gt.copy()
    est[7, :, 3] -= est[7, :, :3] @ np.array([0.03, 0.0, 0.04])  # centre + (3, 0, 4) cm
    est[9] = np.nan
    ate = absolute_trajectory_error(est, gt, "none")
    assert ate["frames"] == 39 and np.isnan(ate["errors"][9])
    assert np.isclose(ate["max"], 0.05) and np.isclose(ate["rmse"], np.sqrt(0.05 ** 2 / 39))
    with pytest.raises(ValueError, match="one of each per frame"):
        absolute_trajectory_error(est[:5], gt)


def test_rpe_sees_steps_not_the_world_frame():
    from pylocalize.localization.trajectory import relative_pose_error

    gt = _circle()
    moved = _moved_world(gt, 1.0, _rotation([1, 1, 0], 25.0), np.array([1.0, 2.0, 3.0]))
    rpe = relative_pose_error(moved, gt)
    assert rpe["pairs"] == 39 and rpe["translation"]["max"] < 1e-9 and rpe["rotation"]["max"] < 1e-6
    # one centre moved by 5 cm: the two steps into and out of it are 5 cm wrong, no others
    est = gt.copy()
    est[10, :, 3] -= est[10, :, :3] @ np.array([0.0, 0.05, 0.0])
    errors = relative_pose_error(est, gt)["translation"]
    assert np.isclose(errors["max"], 0.05) and np.isclose(errors["rmse"], np.sqrt(2 * 0.05 ** 2 / 39))
    assert relative_pose_error(est, gt, delta=5)["pairs"] == 35


def test_latency_status_and_recovery_summaries():
    from pylocalize.localization.trajectory import latency_percentiles, status_shares

    lat = latency_percentiles(np.arange(1, 101) / 1000)
    assert np.isclose(lat["p50"], 50.5) and np.isclose(lat["p90"], 90.1) and np.isclose(lat["hz_median"], 1000 / 50.5)
    shares = status_shares(["tracked"] * 6 + ["relocalized"] * 3 + ["lost"])
    assert shares == {"tracked": 0.6, "relocalized": 0.3, "lost": 0.1}
    statuses = ["relocalized", "tracked", "lost", "lost", "relocalized", "tracked", "lost"]
    assert recovery_frames(statuses, [1, 2, 6]) == {1: 1, 2: 3, 6: None}
    with pytest.raises(ValueError, match="unknown statuses"):
        status_shares(["tracked", "drifting"])


def test_tum_trajectory_files_hold_world_from_cam_and_read_back(tmp_path):
    from pylocalize.localization.trajectory import read_tum, write_tum

    # a camera at (1, 2, 3) looking along world +x: TUM holds its centre and world_from_cam rotation
    pose = look_at(np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 3.0]), up=(0, 0, 1))
    poses = np.stack([pose, np.full((3, 4), np.nan), _circle()[3]])
    write_tum(tmp_path / "traj.txt", [0.5, 0.6, 0.7], poses, comments={1: "lost: no inliers"})
    lines = (tmp_path / "traj.txt").read_text().splitlines()
    assert lines[2] == "# 0.600000: lost: no inliers" and len([x for x in lines if not x.startswith("#")]) == 2
    values = np.array(lines[1].split(), float)
    assert np.allclose(values[:4], [0.5, 1.0, 2.0, 3.0])
    from pylocalize.geometry import matrix_from_quaternion

    qx, qy, qz, qw = values[4:]
    assert np.allclose(matrix_from_quaternion([qw, qx, qy, qz]), pose[:, :3].T, atol=1e-8)
    stamps, back = read_tum(tmp_path / "traj.txt")
    assert np.allclose(stamps, [0.5, 0.7]) and np.allclose(back, poses[[0, 2]], atol=1e-7)
    (tmp_path / "bad.txt").write_text("0.1 1 2 3 0 0 0\n")
    with pytest.raises(ValueError, match="bad.txt:1"):
        read_tum(tmp_path / "bad.txt")


# ---------------------------------------------------------------- the command line


def test_track_command_writes_the_trajectory_from_frames_or_a_video(tmp_path, courtyard, stream, capsys):
    import cv2
    from PIL import Image

    from pylocalize.cli import main
    from pylocalize.localization.trajectory import read_tum, write_tum

    scene, m = courtyard
    path, frames = stream
    m.save(tmp_path / "map")
    (tmp_path / "frames").mkdir()
    names = [f"{k:04d}.png" for k in range(12)]
    for name, frame in zip(names, frames):
        Image.fromarray(frame).save(tmp_path / "frames" / name)
    # TUM rgb.txt style, in another order than the frames: matched by name
    (tmp_path / "rgb.txt").write_text("# timestamp filename\n" + "".join(
        f"{path.timestamps[k] + 100:.6f} rgb/{names[k]}\n" for k in reversed(range(12))))
    write_tum(tmp_path / "gt.txt", path.timestamps[:12] + 100, path.cam_from_world[:12])
    common = ["--map", str(tmp_path / "map"), "--camera", scene.camera.to_string(), "--scale", "1", "--max-features",
              "600"]
    status = main(["-q", "track", "--images", str(tmp_path / "frames"), "--timestamps", str(tmp_path / "rgb.txt"),
                   "--gt", str(tmp_path / "gt.txt"), "--out", str(tmp_path / "traj.txt"),
                   "--figure", str(tmp_path / "traj.png")] + common)
    out = capsys.readouterr().out
    assert status == 0, out
    stamps, poses = read_tum(tmp_path / "traj.txt")
    assert np.allclose(stamps, path.timestamps[:12] + 100, atol=1e-6)
    assert np.median(np.linalg.norm(camera_centres(poses) - camera_centres(path.cam_from_world[:12]), axis=1)) < 0.03
    rows = (tmp_path / "traj.frames.tsv").read_text().splitlines()
    assert len(rows) == 13 and rows[1].split("\t")[1] == "relocalized" and rows[2].split("\t")[1] == "tracked"
    assert "ATE (map frame, no alignment) over 12 frames" in out and (tmp_path / "traj.png").stat().st_size > 10_000
    # the same frames as a video: its frame rate gives the timestamps
    writer = cv2.VideoWriter(str(tmp_path / "walk.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (320, 240))
    for frame in frames[:12]:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    status = main(["-q", "track", "--video", str(tmp_path / "walk.avi"), "--out", str(tmp_path / "video.txt")] + common)
    assert status == 0, capsys.readouterr()
    stamps, poses = read_tum(tmp_path / "video.txt")
    assert np.allclose(stamps, np.arange(12) / 30.0, atol=1e-6)
    assert np.median(np.linalg.norm(camera_centres(poses) - camera_centres(path.cam_from_world[:12]), axis=1)) < 0.03


def test_track_command_errors_say_the_fix(tmp_path, courtyard, capsys):
    from pylocalize.cli import main

    scene, m = courtyard
    camera = scene.camera.to_string()
    (tmp_path / "frames").mkdir()
    status = main(["track", "--map", str(tmp_path / "nowhere"), "--images", str(tmp_path / "frames"), "--camera",
                   camera, "--out", str(tmp_path / "t.txt")])
    assert status == 1 and "--map" in capsys.readouterr().err
    m.save(tmp_path / "map")
    status = main(["track", "--map", str(tmp_path / "map"), "--images", str(tmp_path / "frames"), "--camera", camera,
                   "--out", str(tmp_path / "t.txt")])
    assert status == 1 and "no image files there" in capsys.readouterr().err
    (tmp_path / "frames" / "a.png").write_bytes(b"")
    (tmp_path / "stamps.txt").write_text("0.1\nzero\n")
    status = main(["track", "--map", str(tmp_path / "map"), "--images", str(tmp_path / "frames"), "--camera", camera,
                   "--timestamps", str(tmp_path / "stamps.txt"), "--out", str(tmp_path / "t.txt")])
    assert status == 1 and "stamps.txt:2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["track", "--map", str(tmp_path / "map"), "--images", "x", "--video", "y", "--camera", camera,
              "--out", "t"])
    with pytest.raises(SystemExit):
        main(["track", "--map", str(tmp_path / "map"), "--images", "x", "--camera", camera, "--out", "t",
              "--fps", "0"])


def test_tracker_on_the_maps_own_orb_layer_takes_its_extractor_and_relocalization(courtyard, stream):
    scene, _ = courtyard
    path, frames = stream
    m = Map.from_views(scene.images, scene.K, scene.cam_from_world, scene.names, max_features=1500,
                       layers=("sift", "orb"))
    tracker = Tracker(m, scene.camera, features="orb")
    results = [tracker.track(f, t) for f, t in zip(frames[:8], path.timestamps[:8])]
    assert results[0].status == "relocalized" and results[0].method == "orb votes"
    assert all(r.success for r in results) and [r.status for r in results[1:]].count("tracked") >= 6
    errors = np.linalg.norm(camera_centres(np.array([r.cam_from_world for r in results]))
                            - camera_centres(path.cam_from_world[:8]), axis=1)
    assert np.median(errors) < 0.05
