"""Poses: rotation error, quaternions, pose files, similarity alignment."""

from __future__ import annotations

import numpy as np
import pytest

from pylocalize.geometry import (
    look_at,
    matrix_from_quaternion,
    quaternion_from_matrix,
    read_pose_file,
    similarity_from_points,
    transform_pose,
    write_pose_file,
)
from pylocalize.geometry.poses import rotation_error_deg


def _axis_angle(axis, degrees) -> np.ndarray:
    """Rodrigues' rotation matrix, written out independently of the function under test."""
    k = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    a = np.radians(degrees)
    return np.eye(3) + np.sin(a) * K + (1 - np.cos(a)) * K @ K


@pytest.mark.parametrize("degrees", [0.0, 1e-7, 1e-3, 0.5, 37.0, 90.0, 150.0, 179.999, 180.0])
def test_rotation_error_is_the_angle_of_the_relative_rotation(degrees):
    rng = np.random.default_rng(int(degrees * 1000) % 2**32)
    R_a = _axis_angle(rng.normal(size=3), rng.uniform(0, 180))
    R_b = R_a @ _axis_angle(rng.normal(size=3), degrees)
    # absolute accuracy near 0 deg (where arccos of the trace keeps ~1e-6 deg) and 180 deg
    assert rotation_error_deg(R_a, R_b) == pytest.approx(degrees, abs=1e-9)
    assert rotation_error_deg(R_b, R_a) == pytest.approx(degrees, abs=1e-9)
    assert isinstance(rotation_error_deg(R_a, R_b), float)


def test_rotation_error_on_stacks_and_bad_input():
    rng = np.random.default_rng(0)
    angles = rng.uniform(0, 180, 5)
    R_a = np.stack([_axis_angle(rng.normal(size=3), rng.uniform(0, 180)) for _ in angles])
    R_b = np.stack([a @ _axis_angle(rng.normal(size=3), d) for a, d in zip(R_a, angles)])
    np.testing.assert_allclose(rotation_error_deg(R_a, R_b), angles, atol=1e-9)
    # a slightly scaled "rotation" (an estimate, a float32 round trip) gives a number, not NaN
    assert rotation_error_deg(np.eye(3), 1.000001 * np.eye(3)) == pytest.approx(0.0, abs=1e-9)
    assert rotation_error_deg(np.eye(3), -np.diag([1.0, 1.0, -1.0]) * 1.000001) == pytest.approx(180.0)
    with pytest.raises(ValueError, match="3, 3"):
        rotation_error_deg(np.eye(3), np.eye(4))


def test_similarity_alignment_recovers_a_known_transform():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(30, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    dst = 3.0 * src @ q.T + [1.0, -2.0, 0.5] + rng.normal(scale=1e-4, size=src.shape)
    s, R, t = similarity_from_points(src, dst)
    assert s == pytest.approx(3.0, rel=1e-4) and np.abs(R - q).max() < 1e-4
    P = look_at([1.0, 0.0, 1.0], [0.0, 0.0, 0.0])
    X = np.array([0.1, 0.2, 0.3])
    moved = transform_pose(P, s, R, t)
    a, b = P[:, :3] @ X + P[:, 3], moved[:, :3] @ (s * R @ X + t) + moved[:, 3]
    np.testing.assert_allclose(a[:2] / a[2], b[:2] / b[2], atol=1e-9)  # the same image point
    with pytest.raises(ValueError, match="n >= 3"):
        similarity_from_points(src[:2], dst[:2])


def test_quaternions_and_pose_file_errors(tmp_path):
    rng = np.random.default_rng(2)
    for _ in range(50):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        q = q if q[0] >= 0 else -q
        R = matrix_from_quaternion(q)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(quaternion_from_matrix(R), q, atol=1e-12)
    for R in (np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1])):  # 180 degrees
        np.testing.assert_allclose(matrix_from_quaternion(quaternion_from_matrix(R)), R, atol=1e-12)
    path = tmp_path / "p.txt"
    write_pose_file(path, [("a.jpg", np.hstack([np.eye(3), np.ones((3, 1))]))])
    np.testing.assert_allclose(read_pose_file(path)["a.jpg"][:, 3], 1.0)
    path.write_text("# comment\nb.jpg 1 0 0 0 1 2\n")
    with pytest.raises(ValueError, match=":2: expected"):
        read_pose_file(path)
    with pytest.raises(ValueError, match="whitespace"):
        write_pose_file(path, [("a b.jpg", np.zeros((3, 4)))])


def test_pose_file_round_trip_or_refusal(tmp_path):
    """Reproducer repro_pose_file_roundtrip.py: what is written reads back as itself (random
    rotations to 1e-12, translations exactly), and what cannot is refused on write: a name
    starting with '#' (read as a comment), a scaled or reflected or zero rotation (no
    quaternion: it came back as the identity), a repeated name, a non-finite value."""
    rng = np.random.default_rng(15)
    poses = []
    for i in range(40):
        q = rng.normal(size=4)
        poses.append((f"img/{i:03d}.jpg", np.hstack([matrix_from_quaternion(q), rng.normal(size=(3, 1)) * 100])))
    path = tmp_path / "p.txt"
    write_pose_file(path, poses)
    read = read_pose_file(path)
    assert list(read) == [n for n, _ in poses]
    for name, pose in poses:
        np.testing.assert_allclose(read[name][:, :3], pose[:, :3], atol=1e-12)
        np.testing.assert_array_equal(read[name][:, 3], pose[:, 3])
    good = np.c_[np.eye(3), [1, 2, 3]]
    bad = [([("#a", good)], "comment"), ([("b", np.c_[2 * np.eye(3), [1, 2, 3]])], "not a rotation"),
           ([("c", np.zeros((3, 4)))], "not a rotation"),
           ([("d", np.c_[np.diag([1.0, 1, -1]), [0, 0, 0]])], "not a rotation"),
           ([("e", good), ("e", good)], "twice"), ([("f", np.c_[np.eye(3), [np.nan, 0, 0]])], "not finite"),
           ([("", good)], "non-empty"), ([("g", np.eye(3))], "3x4")]
    for entries, message in bad:
        with pytest.raises(ValueError, match=message):
            write_pose_file(path, entries)
    assert read_pose_file(path).keys() == read.keys()  # a refused write leaves the file as it was
    path.write_text("a 1 0 0 0 1 2 3\na 1 0 0 0 4 5 6\n")
    with pytest.raises(ValueError, match="twice"):
        read_pose_file(path)
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="not a text pose file"):
        read_pose_file(path)


def test_pose_file_notes_are_comments_readers_skip(tmp_path):
    """A note goes on a comment line above its pose, on one line whatever it holds; the file
    reads back to the same poses (pylocalize's reader and evaluate's loader)."""
    from pylocalize.localization import load_poses

    rng = np.random.default_rng(3)
    poses = [(f"q{i}.jpg", np.c_[matrix_from_quaternion(rng.normal(size=4)), rng.normal(size=3)]) for i in range(3)]
    path = tmp_path / "poses.txt"
    write_pose_file(path, poses, notes={"q1.jpg": "intrinsics GUESSED\nsecond line", "other.jpg": "not written"})
    lines = path.read_text().splitlines()
    assert lines[1] == "# q1.jpg: intrinsics GUESSED second line" and lines[2].startswith("q1.jpg ")
    assert len(lines) == 4 and "other.jpg" not in path.read_text()
    for read in (read_pose_file, load_poses):
        back = read(path)
        assert list(back) == [name for name, _ in poses]
        for name, pose in poses:
            np.testing.assert_allclose(back[name], pose, atol=1e-12)
