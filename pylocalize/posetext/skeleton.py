"""The SMPL body skeleton: 22 joints, their tree and left/right symmetry, pose normalisation.

Poses are joint positions ``float (n, 22, 3)`` in metres, y up, in the SMPL body joint order
(Loper et al., "SMPL", SIGGRAPH Asia 2015), the order PoseScript (Delmas et al., ECCV 2022)
describes. In the *body frame* that :func:`normalize_poses` gives, the pelvis is at the origin,
+y is up, +x points to the subject's left and +z to the subject's front (the SMPL rest
frame).

Hands are optional: with ``hands=True`` the skeleton functions also take the 52 joints of
SMPL-H (the 22 body joints, then 15 left-hand and 15 right-hand joints), keeping the hands
attached through normalisation and swapping them under mirroring. Posecodes and captions
describe the body joints only, as PoseScript's do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
)
NUM_JOINTS = len(JOINT_NAMES)
JOINT_INDEX = {name: i for i, name in enumerate(JOINT_NAMES)}

# parent of each joint in the kinematic tree (-1: the root)
PARENTS = np.array([-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19], dtype=np.int64)

# SMPL-H hand joints, after the body joints: per hand, three joints (base to tip) of each of
# index, middle, pinky, ring and thumb, each chain hanging from that side's wrist
_FINGERS = ("index", "middle", "pinky", "ring", "thumb")
HAND_JOINT_NAMES = tuple(f"{side}_{finger}{k}" for side in ("left", "right") for finger in _FINGERS for k in (1, 2, 3))
JOINT_NAMES_WITH_HANDS = JOINT_NAMES + HAND_JOINT_NAMES
NUM_JOINTS_WITH_HANDS = len(JOINT_NAMES_WITH_HANDS)  # 52
PARENTS_WITH_HANDS = np.concatenate([PARENTS, np.array(
    [JOINT_INDEX[f"{side}_wrist"] if k == 1 else NUM_JOINTS + 15 * s + 3 * f + k - 2
     for s, side in enumerate(("left", "right")) for f in range(5) for k in (1, 2, 3)], dtype=np.int64)])


def _mirror_name(name: str) -> str:
    if name.startswith("left_"):
        return "right_" + name[5:]
    if name.startswith("right_"):
        return "left_" + name[6:]
    return name


# MIRROR[i] is the joint that joint i becomes under a left/right reflection
MIRROR = np.array([JOINT_INDEX[_mirror_name(n)] for n in JOINT_NAMES], dtype=np.int64)
_INDEX_WITH_HANDS = {name: i for i, name in enumerate(JOINT_NAMES_WITH_HANDS)}
MIRROR_WITH_HANDS = np.array([_INDEX_WITH_HANDS[_mirror_name(n)] for n in JOINT_NAMES_WITH_HANDS], dtype=np.int64)


def check_poses(joints, name: str = "joints", hands: bool = False) -> np.ndarray:
    """``joints`` as ``float64 (n, 22, 3)``; a single pose ``(22, 3)`` gets a batch axis.
    With ``hands=True``, SMPL-H poses ``(n, 52, 3)`` are accepted as well.

    Raises
    ------
    ValueError
        Wrong shape, a non-numeric dtype, NaN or Inf, with the fix in the message.
    """
    x = np.asarray(joints)
    if x.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be numeric joint positions in metres, got dtype {x.dtype}")
    if x.ndim == 2:
        x = x[None]
    if hands and x.ndim == 3 and x.shape[1:] == (NUM_JOINTS_WITH_HANDS, 3):
        pass
    elif x.ndim != 3 or x.shape[1:] != (NUM_JOINTS, 3):
        hint = ""
        if x.ndim == 3 and x.shape[2] == 3 and x.shape[1] > NUM_JOINTS:
            hint = (f"; keep the 22 body joints with {name}[:, :22] (SMPL-H/X put hand joints after them)"
                    + ", or pass hands=True for SMPL-H's 52")
        elif np.ndim(joints) == 2 and np.shape(joints)[-1] == 3 * NUM_JOINTS:
            hint = f"; reshape flat poses with {name}.reshape(-1, 22, 3)"
        raise ValueError(f"{name} must be (n, 22, 3) or (22, 3) SMPL body joints, got shape {np.shape(joints)}{hint}")
    if not np.isfinite(x).all():
        bad = np.unique(np.nonzero(~np.isfinite(x))[0])
        raise ValueError(f"{name} contain NaN or Inf in poses {bad[:10].tolist()}{' ...' if len(bad) > 10 else ''}; "
                         f"drop or fill those poses first")
    return x.astype(np.float64, copy=False)


def mirror_poses(joints, hands: bool = False) -> np.ndarray:
    """Left/right reflection: x is negated and each left joint swaps with its right twin
    (with ``hands=True`` and 52 joints, the hands swap too)."""
    x = check_poses(joints, hands=hands)
    out = x[:, MIRROR if x.shape[1] == NUM_JOINTS else MIRROR_WITH_HANDS].copy()
    out[..., 0] *= -1
    return out


def root_yaw(joints) -> np.ndarray:
    """Heading of each body (radians): the turn about +y that takes a body facing +z to it.

    The left direction is the mean of the right-to-left hip and shoulder vectors, projected on
    the ground plane (hips alone swing with the legs; shoulders alone with a twisted torso)."""
    x = check_poses(joints)
    j = JOINT_INDEX
    left = (x[:, j["left_hip"]] - x[:, j["right_hip"]]) + (x[:, j["left_shoulder"]] - x[:, j["right_shoulder"]])
    return np.arctan2(-left[:, 2], left[:, 0])


def yaw_rotation(angle) -> np.ndarray:
    """Rotations ``(n, 3, 3)`` about +y by ``angle`` radians."""
    a = np.asarray(angle, dtype=np.float64).reshape(-1)
    c, s = np.cos(a), np.sin(a)
    R = np.zeros((len(a), 3, 3))
    R[:, 0, 0], R[:, 0, 2], R[:, 1, 1], R[:, 2, 0], R[:, 2, 2] = c, s, 1.0, -s, c
    return R


def normalize_poses(joints, hands: bool = False) -> np.ndarray:
    """Poses in the body frame: pelvis at the origin and the heading removed, so every body
    faces +z with its left towards +x. Pitch and roll are kept: a body bent forward or lying
    down stays so. Returns ``float32 (n, 22, 3)`` (``(n, 52, 3)`` for SMPL-H poses with
    ``hands=True``: the hands move rigidly with the body)."""
    x = check_poses(joints, hands=hands)
    x = x - x[:, :1]
    # a body with heading a has its left along (cos a, 0, -sin a); turning it by -a brings that onto +x
    R = yaw_rotation(-root_yaw(x[:, :NUM_JOINTS]))
    return np.einsum("nij,nkj->nki", R, x).astype(np.float32)


def load_joints(path, hands: bool = False) -> np.ndarray:
    """Joint positions from a ``.npy`` file of ``(frames, J, 3)`` with ``J >= 22``.

    SMPL-H / SMPL-X joint arrays (52, 55 or more joints) keep only their first 22, the body
    joints; hand and face joints are dropped. Returns ``float32 (frames, 22, 3)``. With
    ``hands=True`` the file must hold SMPL-H joints (52, or more with face joints after
    them) and the first 52 are kept: ``(frames, 52, 3)``."""
    path = Path(path)
    if path.suffix != ".npy":
        raise ValueError(f"{path}: expected a .npy file of (frames, 22, 3) joint positions; convert it with np.save")
    x = np.load(path, allow_pickle=False)
    if x.ndim == 2 and x.shape == (NUM_JOINTS, 3):
        x = x[None]
    if x.ndim != 3 or x.shape[2] != 3 or x.shape[1] < NUM_JOINTS:
        raise ValueError(f"{path}: expected (frames, 22, 3) joint positions (or more joints, the first 22 being the "
                         f"SMPL body joints), got shape {x.shape}")
    if hands:
        if x.shape[1] < NUM_JOINTS_WITH_HANDS:
            raise ValueError(f"{path}: hands=True needs SMPL-H joints (frames, 52, 3), got shape {x.shape}; "
                             f"load body joints with hands=False")
        return check_poses(x[:, :NUM_JOINTS_WITH_HANDS], name=str(path), hands=True).astype(np.float32)
    if x.shape[1] > NUM_JOINTS:
        import warnings

        warnings.warn(f"{path}: {x.shape[1]} joints per frame; keeping the first 22 (the SMPL body joints), "
                      f"dropping the hand/face joints after them", stacklevel=2)
    return check_poses(x[:, :NUM_JOINTS], name=str(path)).astype(np.float32)


__all__ = ["HAND_JOINT_NAMES", "JOINT_NAMES", "JOINT_NAMES_WITH_HANDS", "JOINT_INDEX", "MIRROR", "MIRROR_WITH_HANDS",
           "NUM_JOINTS", "NUM_JOINTS_WITH_HANDS", "PARENTS", "PARENTS_WITH_HANDS", "check_poses", "load_joints",
           "mirror_poses", "normalize_poses", "root_yaw", "yaw_rotation"]
