"""pylocalize.posetext: skeleton, posecodes, captions, generator, pose/text retrieval."""

from __future__ import annotations

import re

import numpy as np
import pytest

from pylocalize.posetext import (
    JOINT_NAMES,
    PARENTS,
    compute_posecodes,
    generate_poses,
    load_joints,
    mirror_posecodes,
    mirror_poses,
    normalize_poses,
)
from pylocalize.posetext.captioner import Captioner, caption_poses, split_clauses, swap_left_right
from pylocalize.posetext.generator import euler_to_matrix, forward_kinematics, random_body_offsets
from pylocalize.posetext.posecodes import category_name, measure
from pylocalize.posetext.skeleton import root_yaw, yaw_rotation

J = {name: i for i, name in enumerate(JOINT_NAMES)}


def t_pose() -> np.ndarray:
    """A T-pose written out joint by joint (metres, facing +z, the subject's left at +x)."""
    p = {
        "pelvis": (0, 0, 0), "left_hip": (0.06, -0.09, 0), "right_hip": (-0.06, -0.09, 0),
        "spine1": (0, 0.11, -0.01), "left_knee": (0.06, -0.47, 0), "right_knee": (-0.06, -0.47, 0),
        "spine2": (0, 0.24, -0.01), "left_ankle": (0.06, -0.87, -0.03), "right_ankle": (-0.06, -0.87, -0.03),
        "spine3": (0, 0.29, 0.01), "left_foot": (0.06, -0.92, 0.09), "right_foot": (-0.06, -0.92, 0.09),
        "neck": (0, 0.50, -0.02), "left_collar": (0.07, 0.41, 0), "right_collar": (-0.07, 0.41, 0),
        "head": (0, 0.59, 0.03), "left_shoulder": (0.19, 0.45, -0.01), "right_shoulder": (-0.19, 0.45, -0.01),
        "left_elbow": (0.45, 0.45, -0.01), "right_elbow": (-0.45, 0.45, -0.01),
        "left_wrist": (0.70, 0.45, -0.01), "right_wrist": (-0.70, 0.45, -0.01),
    }
    return np.array([p[n] for n in JOINT_NAMES], np.float64)


def arms_up() -> np.ndarray:
    x = t_pose()
    for side, s in (("left", 1), ("right", -1)):
        x[J[f"{side}_elbow"]] = (s * 0.19, 0.71, -0.01)
        x[J[f"{side}_wrist"]] = (s * 0.19, 0.96, -0.01)
    return x


def left_hand_up() -> np.ndarray:
    x = arms_up()
    x[J["right_elbow"]] = (-0.19, 0.19, -0.01)
    x[J["right_wrist"]] = (-0.19, -0.06, -0.01)
    return x


def squat() -> np.ndarray:
    x = t_pose()
    for side, s in (("left", 1), ("right", -1)):
        x[J[f"{side}_knee"]] = (s * 0.11, -0.19, 0.37)
        x[J[f"{side}_ankle"]] = (s * 0.11, -0.52, 0.10)
        x[J[f"{side}_foot"]] = (s * 0.11, -0.57, 0.22)
    return x


def kneeling() -> np.ndarray:
    x = t_pose()
    for side, s in (("left", 1), ("right", -1)):
        x[J[f"{side}_ankle"]] = (s * 0.06, -0.49, -0.40)
        x[J[f"{side}_foot"]] = (s * 0.06, -0.50, -0.52)
    return x


def named(codes, i=0):
    return {k: category_name(k, v[i]) for k, v in codes.items()}


# -- skeleton ---------------------------------------------------------------------------

def test_skeleton_tables():
    assert len(JOINT_NAMES) == 22 and JOINT_NAMES[0] == "pelvis" and JOINT_NAMES[21] == "right_wrist"
    assert all(PARENTS[j] < j for j in range(1, 22))
    assert JOINT_NAMES[PARENTS[J["left_wrist"]]] == "left_elbow"


def test_normalize_removes_heading():
    x = generate_poses(20, seed=3)
    yaw = np.random.default_rng(0).uniform(-np.pi, np.pi, 20)
    turned = np.einsum("nij,nkj->nki", yaw_rotation(yaw), x) + np.array([1.0, 0.2, -3.0])
    a, b = normalize_poses(x), normalize_poses(turned)
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(a[:, 0], 0, atol=1e-6)
    np.testing.assert_allclose(root_yaw(a), 0, atol=1e-5)
    # the hand-built T-pose already faces +z with its left at +x
    np.testing.assert_allclose(normalize_poses(t_pose())[0], t_pose(), atol=1e-6)


def test_mirror_is_an_involution():
    x = generate_poses(10, seed=1)
    np.testing.assert_allclose(mirror_poses(mirror_poses(x)), x, atol=1e-6)
    m = mirror_poses(t_pose())[0]
    np.testing.assert_allclose(m, t_pose(), atol=1e-12)  # the T-pose is symmetric


@pytest.mark.parametrize("bad, words", [
    (np.zeros((4, 21, 3)), "(n, 22, 3)"),
    (np.zeros((4, 22)), "(n, 22, 3)"),
    (np.zeros((4, 66)), "reshape"),
    (np.zeros((2, 52, 3)), "[:, :22]"),
    (np.array([["a"] * 3] * 22), "numeric"),
])
def test_bad_shapes_raise(bad, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        compute_posecodes(bad)


def test_nan_joints_raise():
    x = generate_poses(3, seed=0)
    x[1, 5, 2] = np.nan
    for call in (compute_posecodes, normalize_poses, mirror_poses, caption_poses):
        with pytest.raises(ValueError, match="NaN"):
            call(x)


def test_load_joints(tmp_path):
    x = generate_poses(4, seed=2)
    smplh = np.concatenate([x, np.ones((4, 30, 3), np.float32)], 1)  # 52 joints: hands after the body
    np.save(tmp_path / "a.npy", smplh)
    with pytest.warns(UserWarning, match="keeping the first 22"):
        np.testing.assert_array_equal(load_joints(tmp_path / "a.npy"), x)
    np.save(tmp_path / "b.npy", x[:, :20])
    with pytest.raises(ValueError, match="22"):
        load_joints(tmp_path / "b.npy")
    x[0, 0, 0] = np.inf
    np.save(tmp_path / "c.npy", x)
    with pytest.raises(ValueError, match="NaN or Inf"):
        load_joints(tmp_path / "c.npy")
    with pytest.raises(ValueError, match=".npy"):
        load_joints(tmp_path / "c.txt")


# -- posecodes ---------------------------------------------------------------------------

def test_t_pose_codes():
    c = named(compute_posecodes(t_pose()))
    for side in ("left", "right"):
        assert c[f"angle/{side}_elbow"] == "straight"
        assert c[f"angle/{side}_knee"] == "straight"
        assert c[f"orientation/{side}_upper_arm"] == "horizontal"
        assert c[f"orientation/{side}_forearm"] == "horizontal"
        assert c[f"orientation/{side}_thigh"] == "vertical"
        assert c[f"ground/{side}_foot"] == "on the ground"
        assert c[f"ground/{side}_knee"] == "ignored"
        assert c[f"position_x/{side}_hand/{side}_shoulder"] == ("left of" if side == "left" else "right of")
    assert c["distance/left_hand/right_hand"] == "wide"
    assert c["distance/left_foot/right_foot"] == "close"
    assert c["super/arms_out"] == "yes"
    assert c["super/kneeling"] == c["super/squatting"] == c["super/bent_forward"] == "ignored"


def test_arms_up_codes():
    c = named(compute_posecodes(arms_up()))
    for side in ("left", "right"):
        assert c[f"position_y/{side}_hand/head"] == "above"
        assert c[f"position_y/{side}_elbow/{side}_shoulder"] == "above"
        assert c[f"orientation/{side}_upper_arm"] == "vertical"
        assert c[f"angle/{side}_elbow"] == "straight"
    assert c["distance/left_hand/right_hand"] == "shoulder width"
    assert c["super/arms_out"] == "ignored"


def test_squat_codes():
    m = measure(squat())
    c = named(compute_posecodes(squat()))
    for side in ("left", "right"):
        # interior angle between thigh and shin, by hand: about 66 degrees
        u = squat()[J[f"{side}_hip"]] - squat()[J[f"{side}_knee"]]
        v = squat()[J[f"{side}_ankle"]] - squat()[J[f"{side}_knee"]]
        expected = np.degrees(np.arccos(u @ v / np.linalg.norm(u) / np.linalg.norm(v)))
        assert m[f"angle/{side}_knee"][0] == pytest.approx(expected, abs=1e-4)
        assert c[f"angle/{side}_knee"] == "almost completely bent"
        assert c[f"orientation/{side}_thigh"] == "horizontal"
        assert c[f"ground/{side}_knee"] == "ignored"
    assert c["super/squatting"] == "yes" and c["super/kneeling"] == "ignored"


def test_kneeling_codes():
    c = named(compute_posecodes(kneeling()))
    for side in ("left", "right"):
        assert c[f"ground/{side}_knee"] == "on the ground"
        assert c[f"angle/{side}_knee"] == "bent at right angle"
        assert c[f"orientation/{side}_shin"] == "horizontal"
    assert c["super/kneeling"] == "yes"
    assert c["super/kneeling_on_left_knee"] == c["super/squatting"] == "ignored"


def test_bent_forward_code():
    # the upper body turned 45 degrees forward about the pelvis
    x = t_pose()
    upper = [J[n] for n in JOINT_NAMES if not any(w in n for w in ("hip", "knee", "ankle", "foot", "pelvis"))]
    R = euler_to_matrix(np.radians([45.0, 0, 0]))
    x[upper] = x[upper] @ R.T
    c = named(compute_posecodes(x))
    assert c["super/bent_forward"] == "yes" and c["super/bent_backward"] == "ignored"
    back = x[J["neck"]] - (x[J["left_hip"]] + x[J["right_hip"]]) / 2
    assert measure(x)["tilt/forward"][0] == pytest.approx(np.degrees(np.arctan2(back[2], back[1])), abs=1e-6)


def test_mirrored_poses_give_mirrored_codes():
    x = generate_poses(500, seed=5)
    a = compute_posecodes(mirror_poses(x))
    b = mirror_posecodes(compute_posecodes(x))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    one = named(compute_posecodes(left_hand_up()))
    other = named(compute_posecodes(mirror_poses(left_hand_up())))
    assert one["position_y/left_hand/head"] == other["position_y/right_hand/head"] == "above"
    assert one["position_y/right_hand/head"] == other["position_y/left_hand/head"] == "below"


def test_posecodes_do_not_depend_on_heading():
    x = generate_poses(50, seed=8)
    turned = np.einsum("nij,nkj->nki", yaw_rotation(np.full(50, 2.0)), x)
    a, b = compute_posecodes(x), compute_posecodes(turned)
    assert all(np.array_equal(a[k], b[k]) for k in a)


# -- captions ----------------------------------------------------------------------------

def test_captions_mention_the_right_body_parts():
    captioner = Captioner(skip_probability=0.0)
    up, squat_caps, knee_caps, t_caps, one = captioner.caption(
        np.stack([arms_up(), squat(), kneeling(), t_pose(), left_hand_up()]), num_captions=5, seed=0)
    for text in up:
        lower = text.lower()
        assert "hands" in lower and "above" in lower and "head" in lower, text
    for text in squat_caps:
        assert "squat" in text.lower() or "crouch" in text.lower(), text
    for text in knee_caps:
        assert "kneel" in text.lower() or "knees" in text.lower(), text
    for text in t_caps:
        assert "arms" in text.lower(), text
    for text in one:  # only the left hand is up
        said = re.compile(r"(left|right) hand (is )?(above|higher than|raised above) (the|their) head")
        assert [m.group(1) for m in said.finditer(text.lower())] == ["left"], text


def test_captions_are_deterministic_per_seed():
    x = generate_poses(30, seed=4)
    a = caption_poses(x, num_captions=3, seed=11)
    assert a == caption_poses(x, num_captions=3, seed=11)
    assert a != caption_poses(x, num_captions=3, seed=12)
    assert caption_poses(x[:7], num_captions=3, seed=11) == a[:7]  # each pose has its own stream
    assert all(len(c) == 3 and len(set(c)) > 1 for c in a)  # several, different captions per pose


def test_caption_of_mirrored_pose_swaps_sides():
    x = left_hand_up()
    text = Captioner(skip_probability=0.0).caption(mirror_poses(x), seed=0)[0][0].lower()
    assert "right hand" in text and "above" in text
    assert swap_left_right("The Left hand is left of the right knee.") == "The Right hand is right of the left knee."


def test_split_clauses():
    assert split_clauses("The left knee is bent, and the hands are apart. Both feet are on the ground; "
                         "the head is up while they kneel") == [
        "the left knee is bent", "the hands are apart", "both feet are on the ground", "the head is up",
        "they kneel"]


# -- generator ---------------------------------------------------------------------------

def test_forward_kinematics_keeps_bone_lengths():
    rng = np.random.default_rng(0)
    offsets = random_body_offsets(64, rng)
    local = euler_to_matrix(rng.uniform(-np.pi, np.pi, (64, 22, 3)))
    root = euler_to_matrix(rng.uniform(-np.pi, np.pi, (64, 3)))
    x = forward_kinematics(local, offsets, root)
    bones = np.linalg.norm(x[:, 1:] - x[:, PARENTS[1:]], axis=-1)
    np.testing.assert_allclose(bones, np.linalg.norm(offsets[:, 1:], axis=-1), rtol=1e-10)
    # rest pose: joints at the summed offsets
    rest = forward_kinematics(np.broadcast_to(np.eye(3), (1, 22, 3, 3)))[0]
    np.testing.assert_allclose(rest[J["left_wrist"]], [0.07 + 0.12 + 0.26 + 0.25, 0.11 + 0.13 + 0.05 + 0.12 + 0.04,
                                                      -0.01 + 0.02 - 0.01 - 0.01], atol=1e-12)


def test_generated_poses_are_valid_and_seeded():
    x, families = generate_poses(2000, seed=9, return_families=True)
    assert x.shape == (2000, 22, 3) and x.dtype == np.float32 and np.isfinite(x).all()
    np.testing.assert_array_equal(x, generate_poses(2000, seed=9))
    assert not np.array_equal(x, generate_poses(2000, seed=10))
    bones = np.linalg.norm(x[:, 1:] - x[:, PARENTS[1:]], axis=-1)
    left = [j - 1 for j in range(1, 22) if JOINT_NAMES[j].startswith("left_")]
    right = [j - 1 for j in range(1, 22) if JOINT_NAMES[j].startswith("right_")]
    np.testing.assert_allclose(bones[:, left], bones[:, right], rtol=1e-5)  # one body, two equal sides
    height = x[:, J["head"], 1] - x[:, J["left_ankle"], 1]
    standing = families == "standing"
    assert 1.0 < height[standing].min() and height[standing].max() < 2.0
    m = measure(x)
    # flexion <= 150 degrees (the rest shin leans back 4 degrees)
    assert m["angle/left_knee"].min() > 25.0 and m["angle/left_elbow"].min() > 29.0
    codes = compute_posecodes(x)
    for family, code in (("kneeling", "super/kneeling"), ("squatting", "super/squatting"),
                         ("bent_forward", "super/bent_forward")):
        assert codes[code][families == family].mean() > 0.5, family
        assert codes[code][families == "standing"].mean() < 0.05, family


def test_numpy_parts_do_not_import_torch(tmp_path):
    import subprocess
    import sys

    code = ("import sys; from pylocalize.posetext import generate_poses, caption_poses; "
            "caption_poses(generate_poses(3, seed=0)); assert 'torch' not in sys.modules, 'torch imported'")
    # cwd away from the checkout, so the installed package is imported, not the sources
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, timeout=300)


def test_optional_smplh_hands(tmp_path):
    from pylocalize.posetext.skeleton import (
        JOINT_NAMES_WITH_HANDS,
        PARENTS_WITH_HANDS,
        check_poses,
        load_joints,
        mirror_poses,
        normalize_poses,
    )

    rng = np.random.default_rng(7)
    body = generate_poses(6, seed=2).astype(np.float64)
    # hand joints: chains of short random bones hanging from each wrist, as SMPL-H lays them out
    poses = np.concatenate([body, np.zeros((6, 30, 3))], axis=1)
    for j in range(22, 52):
        poses[:, j] = poses[:, PARENTS_WITH_HANDS[j]] + rng.normal(scale=0.02, size=(6, 3))
    index = {n: i for i, n in enumerate(JOINT_NAMES_WITH_HANDS)}
    assert PARENTS_WITH_HANDS[index["left_thumb1"]] == index["left_wrist"]
    assert PARENTS_WITH_HANDS[index["right_pinky3"]] == index["right_pinky2"]

    mirrored = mirror_poses(poses, hands=True)
    np.testing.assert_allclose(mirror_poses(mirrored, hands=True), poses)
    np.testing.assert_allclose(mirrored[:, index["right_index3"]], poses[:, index["left_index3"]] * [-1, 1, 1])
    np.testing.assert_allclose(mirrored[:, :22], mirror_poses(body))  # the body part is unchanged by the option

    normalized = normalize_poses(poses, hands=True)
    assert normalized.shape == (6, 52, 3)
    np.testing.assert_allclose(normalized[:, :22], normalize_poses(body), atol=1e-6)
    bones = lambda x: np.linalg.norm(x[:, 22:] - x[:, PARENTS_WITH_HANDS[22:]], axis=-1)  # noqa: E731
    np.testing.assert_allclose(bones(normalized), bones(poses), atol=1e-6)  # hands move rigidly

    np.save(tmp_path / "smplh.npy", poses.astype(np.float32))
    assert load_joints(tmp_path / "smplh.npy", hands=True).shape == (6, 52, 3)
    np.save(tmp_path / "body.npy", body.astype(np.float32))
    with pytest.raises(ValueError, match="hands=True needs SMPL-H"):
        load_joints(tmp_path / "body.npy", hands=True)
    with pytest.raises(ValueError, match="hands=True"):
        check_poses(poses)  # 52 joints without the option: the message names it
