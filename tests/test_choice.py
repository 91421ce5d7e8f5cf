"""The per-object choice of patch descriptor by a held-out check (pylocalize.objects.choice)."""

from __future__ import annotations

import dataclasses
import logging

import cv2
import numpy as np
import pytest

from pylocalize.datasets.synthetic import textured_box_object
from pylocalize.objects import ObjectPose, ObjectRepresentation, onboard
from pylocalize.objects.choice import camera_faults, held_out_frames, relight, score_candidates, split_backgrounds


@pytest.fixture(scope="module")
def box():
    mesh = textured_box_object(0)
    return mesh, onboard(mesh, num_views=20, num_inplane=8, size=224)


def test_held_out_frames_show_the_object_at_its_true_pose_over_the_photos_given():
    mesh = textured_box_object(1)
    green = np.zeros((300, 400, 3), np.uint8)
    green[..., 1] = 255
    frames = held_out_frames(mesh, [green], num_frames=5, seed=3)
    again = held_out_frames(mesh, [green], num_frames=5, seed=3)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(frames, again))  # seeded
    for frame in frames:
        assert frame.image.shape == (480, 640, 3) and frame.image.dtype == np.uint8
        # the visible box lies inside the true pose's projection of the mesh
        cam = mesh.vertices @ frame.R.T + frame.t
        uv = cam[:, :2] / cam[:, 2:] * [frame.K[0, 0], frame.K[1, 1]] + frame.K[:2, 2]
        x, y, w, h = frame.bbox
        assert w > 10 and h > 10
        assert uv[:, 0].min() - 2 <= x and x + w <= uv[:, 0].max() + 2
        assert uv[:, 1].min() - 2 <= y and y + h <= uv[:, 1].max() + 2
        # away from the object, the background is the green photo (lit, blurred and noisy)
        outside = np.ones(frame.image.shape[:2], bool)
        outside[max(0, y - 20):y + h + 20, max(0, x - 20):x + w + 20] = False
        corners = frame.image[outside].astype(float)
        assert np.median(corners[:, 1]) > 200 and np.median(corners[:, [0, 2]]) < 30


def test_relight_is_brightest_towards_a_light_in_front_and_ambient_away_from_it():
    # the normals of a hemisphere facing the camera, on a grey surface
    u, v = np.meshgrid(np.linspace(-1, 1, 101), np.linspace(-1, 1, 101))
    inside = u ** 2 + v ** 2 < 0.999
    normals = np.zeros((101, 101, 3), np.float32)
    normals[inside] = np.stack([u[inside], v[inside], -np.sqrt(1 - u[inside] ** 2 - v[inside] ** 2)], 1)
    albedo = np.where(inside[..., None], 100, 0).astype(np.uint8).repeat(3, 2)
    for seed in range(10):
        lit = relight(albedo, normals, np.random.default_rng(seed)).mean(2)
        assert lit.dtype == np.float32 and lit.shape == (101, 101)
        brightest = normals[np.unravel_index(np.argmax(np.where(inside, lit, -1)), lit.shape)]
        assert -brightest[2] > np.cos(np.deg2rad(61))  # the light is at most 60 degrees off the viewing axis
        # the rim turned away from the light gets the ambient light alone: 20-50 % of the diffuse peak
        ratio = np.percentile(lit[inside], 1) / np.percentile(lit[inside], 90)
        assert 0.1 < ratio < 0.7


def test_camera_faults_keep_the_exposure_roughly_and_add_noise():
    grey = np.full((120, 160, 3), 128.0, np.float32)
    for seed in range(5):
        shot = camera_faults(grey, np.random.default_rng(seed))
        assert shot.dtype == np.uint8 and shot.shape == grey.shape
        assert 255 * (128 / 255) ** 1.25 - 5 < shot.mean() < 255 * (128 / 255) ** 0.8 + 5
        assert shot.std() > 0.5


def test_split_backgrounds_holds_a_quarter_of_the_photos_out(tmp_path, caplog):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(8):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((20, 20, 3), i * 30, np.uint8))
    training, held = split_backgrounds(folder, np.random.default_rng(0))
    assert len(training) == 6 and len(held) == 2 and not set(training) & set(held)
    assert sorted(training + held) == sorted(folder.glob("*.png"))
    assert split_backgrounds(None, np.random.default_rng(0)) == (None, None)
    with caplog.at_level(logging.WARNING, logger="pylocalize.objects.choice"):
        one = split_backgrounds([folder / "0.png"], np.random.default_rng(0))
    assert one == ([folder / "0.png"], [folder / "0.png"]) and "same photo" in caplog.text
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        split_backgrounds(tmp_path / "empty", np.random.default_rng(0))
    with pytest.raises(ValueError, match="not a folder"):
        split_backgrounds(tmp_path / "nowhere", np.random.default_rng(0))


class Turned:
    """A representation whose every pose is turned 90 degrees about the object's x axis."""

    def __init__(self, rep: ObjectRepresentation):
        self.rep = rep

    def estimate(self, *args, **kwargs):
        result = self.rep.estimate(*args, **kwargs)
        if not result.success:
            return result
        turn = cv2.Rodrigues(np.array([np.pi / 2, 0, 0]))[0]
        return dataclasses.replace(result, R=result.R @ turn)


def test_the_candidate_with_the_right_poses_wins_whichever_comes_first(box):
    mesh, rep = box
    frames = held_out_frames(mesh, None, num_frames=6, seed=5)
    choice = score_candidates({"turned": (Turned(rep), None), "dense-sift": (rep, None)}, mesh, frames)
    assert choice.name == "dense-sift"
    assert choice.scores["dense-sift"] > 0.3  # the held-out frames can be posed
    assert choice.scores["turned"] < choice.scores["dense-sift"] - 0.2
    assert choice.errors["turned"]["mssd"].shape == (6,)
    # the same representation twice: a tie, which the first given wins
    assert score_candidates({"b": (rep, None), "a": (rep, None)}, mesh, frames).name == "b"
    with pytest.raises(ValueError, match="no candidate"):
        score_candidates({}, mesh, frames)
    with pytest.raises(ValueError, match="no held-out frames"):
        score_candidates({"a": (rep, None)}, mesh, [])


class Scripted:
    """A stand-in representation that poses the frames it is told to right, the rest turned."""

    def __init__(self, frames, right):
        self.truth = {id(f.image): (f.R, f.t, i in right) for i, f in enumerate(frames)}

    def estimate(self, image, K, **options):
        R, t, right = self.truth[id(image)]
        turn = np.eye(3) if right else cv2.Rodrigues(np.array([0, np.pi / 2, 0]))[0]
        return dataclasses.replace(ObjectPose(success=True), R=R @ turn, t=t)


def test_a_challenger_must_beat_the_default_by_more_than_the_noise_of_the_frames(box):
    mesh, _ = box
    frames = held_out_frames(mesh, None, num_frames=20, seed=2)
    default = Scripted(frames, range(10))
    # one frame more of 20: within the noise, the default stays
    near = score_candidates({"default": (default, None), "near": (Scripted(frames, range(11)), None)}, mesh, frames)
    assert near.scores["near"] > near.scores["default"] and near.name == "default"
    # every frame right: a sure gain
    sure = score_candidates({"default": (default, None), "sure": (Scripted(frames, range(20)), None)}, mesh, frames)
    assert sure.scores["sure"] == pytest.approx(1.0) and sure.name == "sure"
    # with no margin asked, the higher score wins
    assert score_candidates({"default": (default, None), "near": (Scripted(frames, range(11)), None)}, mesh, frames,
                            margin_z=0.0).name == "near"


def test_onboard_auto_keeps_the_winner_through_the_cli(tmp_path, capsys):
    pytest.importorskip("torch")
    import trimesh

    from pylocalize.cli import main
    from pylocalize.objects.learned import descriptor_path

    mesh = textured_box_object(2)
    trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).export(tmp_path / "box.ply")
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        cv2.imwrite(str(photos / f"{i}.png"), rng.integers(0, 256, (90, 120, 3), dtype=np.uint8))
    rep_path = tmp_path / "rep.pyloc"
    assert main(["objects", "onboard", "--mesh", str(tmp_path / "box.ply"), "--views", "12", "--inplane", "6",
                 "--size", "112", "--words", "64", "--out", str(rep_path), "--extractor", "auto",
                 "--backgrounds", str(photos), "--train-steps", "3", "--check-frames", "3"]) == 0
    line = next(s for s in capsys.readouterr().out.splitlines() if s.startswith("held-out check"))
    scores = dict(item.rsplit(" ", 1) for item in line.split("): ", 1)[1].split(" -> ")[0].split(", "))
    winner = line.rsplit(" -> ", 1)[1]
    assert set(scores) == {"dense-sift", "dense-sift+learned"}
    assert winner == "dense-sift" or float(scores[winner]) > float(scores["dense-sift"])
    rep = ObjectRepresentation.load(rep_path)
    assert rep.extractor_name == winner
    assert descriptor_path(rep_path).is_file() == (winner != "dense-sift")
