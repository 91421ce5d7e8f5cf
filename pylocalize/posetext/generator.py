"""Procedural human poses: forward kinematics of the SMPL skeleton under joint limits.

Real pose data (AMASS, as PoseScript uses) cannot be shipped, so training poses are drawn
here: each body gets its own proportions (height and limb-length factors within adult
ranges), each joint a local rotation from per-joint Euler limits, and forward kinematics
places the 22 joints. A pose *family* (standing, arm raise, sitting, squatting, kneeling,
one-knee kneeling, lunging, bending forward/backward/sideways, free) narrows the ranges of
some joints, so that everyday postures are common rather than left to chance. Everything
is numpy, vectorised over the batch and seeded.

Limits: no self-collision test, no hands, no lying poses; rest offsets are a rounded SMPL
neutral body, not a fitted shape model.
"""

from __future__ import annotations

import numpy as np

from pylocalize.posetext.skeleton import JOINT_INDEX, JOINT_NAMES, MIRROR, NUM_JOINTS, PARENTS

# Offset of each joint from its parent in the rest T-pose (metres, body frame: +x left, +y up,
# +z front), rounded from the SMPL neutral body; right joints mirror the left ones.
_LEFT_OFFSETS = {
    "pelvis": (0.0, 0.0, 0.0),
    "left_hip": (0.06, -0.09, 0.0),
    "spine1": (0.0, 0.11, -0.01),
    "left_knee": (0.0, -0.38, 0.0),
    "spine2": (0.0, 0.13, 0.0),
    "left_ankle": (0.0, -0.40, -0.03),
    "spine3": (0.0, 0.05, 0.02),
    "left_foot": (0.0, -0.05, 0.12),
    "neck": (0.0, 0.21, -0.03),
    "left_collar": (0.07, 0.12, -0.01),
    "head": (0.0, 0.09, 0.05),
    "left_shoulder": (0.12, 0.04, -0.01),
    "left_elbow": (0.26, 0.0, 0.0),
    "left_wrist": (0.25, 0.0, 0.0),
}


def _rest_offsets() -> np.ndarray:
    out = np.zeros((NUM_JOINTS, 3))
    for i, name in enumerate(JOINT_NAMES):
        if name in _LEFT_OFFSETS:
            out[i] = _LEFT_OFFSETS[name]
        else:
            out[i] = _LEFT_OFFSETS[JOINT_NAMES[MIRROR[i]]] * np.array([-1.0, 1.0, 1.0])
    return out


REST_OFFSETS = _rest_offsets()

# Per-joint Euler limits in degrees, (x, y, z) applied in that order (R = Rx @ Ry @ Rz), for
# the left side; the right side mirrors them (y and z negated). Signs in the body frame:
#   hips: x < 0 swings the leg forward, z > 0 out to the side; knees: x > 0 flexes;
#   spine: x > 0 bends forward, z > 0 leans right; shoulders (arm along +x at rest): z < 0
#   lowers the arm, z > 0 raises it, y < 0 swings it forward, x twists it; elbows: y < 0 flexes.
JOINT_LIMITS = {
    "left_hip": ((-125, 30), (-35, 45), (-25, 60)),
    "left_knee": ((0, 150), (0, 0), (0, 0)),
    "left_ankle": ((-25, 40), (-10, 10), (-10, 10)),
    "left_foot": ((0, 0), (0, 0), (0, 0)),
    "spine1": ((-20, 50), (-25, 25), (-20, 20)),
    "spine2": ((-10, 20), (-15, 15), (-10, 10)),
    "spine3": ((-10, 20), (-15, 15), (-10, 10)),
    "neck": ((-30, 40), (-40, 40), (-20, 20)),
    "head": ((-20, 20), (-20, 20), (-10, 10)),
    "left_collar": ((-5, 5), (-10, 10), (-10, 15)),
    "left_shoulder": ((-80, 80), (-110, 45), (-95, 170)),
    "left_elbow": ((0, 0), (-150, 0), (0, 0)),
    "left_wrist": ((0, 0), (0, 0), (0, 0)),
}

FAMILIES = ("standing", "arm_raise", "sitting", "squatting", "kneeling", "one_knee", "lunge", "bent_forward",
            "bent_backward", "bent_sideways", "free")
# how often each family is drawn
FAMILY_WEIGHTS = np.array([3, 2, 2, 1, 1, 1, 1, 1.5, 0.5, 1, 2.5])


def _limits_array() -> np.ndarray:
    """(22, 3, 2) limits in radians for every joint, right side mirrored from the left."""
    out = np.zeros((NUM_JOINTS, 3, 2))
    for i, name in enumerate(JOINT_NAMES):
        if name in JOINT_LIMITS:
            out[i] = np.radians(JOINT_LIMITS[name])
        elif name.startswith("right_"):
            lim = np.radians(JOINT_LIMITS[JOINT_NAMES[MIRROR[i]]])
            out[i, 0] = lim[0]
            out[i, 1:] = -lim[1:, ::-1]
    return out


LIMITS = _limits_array()


def euler_to_matrix(angles) -> np.ndarray:
    """``R = Rx @ Ry @ Rz`` for angles ``(..., 3)`` in radians, as ``(..., 3, 3)``."""
    a = np.asarray(angles, dtype=np.float64)
    cx, cy, cz = np.cos(a[..., 0]), np.cos(a[..., 1]), np.cos(a[..., 2])
    sx, sy, sz = np.sin(a[..., 0]), np.sin(a[..., 1]), np.sin(a[..., 2])
    one, zero = np.ones_like(cx), np.zeros_like(cx)
    Rx = np.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], -1).reshape(a.shape[:-1] + (3, 3))
    Ry = np.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(a.shape[:-1] + (3, 3))
    Rz = np.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], -1).reshape(a.shape[:-1] + (3, 3))
    return Rx @ Ry @ Rz


def forward_kinematics(local_rotations, offsets=None, root_rotation=None) -> np.ndarray:
    """Joint positions ``(n, 22, 3)`` from local rotations ``(n, 22, 3, 3)``.

    Each joint sits at its parent's position plus the parent's global rotation applied to
    its rest offset; ``offsets`` are ``(22, 3)`` or per body ``(n, 22, 3)`` (default: the rest
    body); ``root_rotation (n, 3, 3)`` turns the whole body about the pelvis."""
    local = np.asarray(local_rotations, dtype=np.float64)
    n = len(local)
    offsets = REST_OFFSETS if offsets is None else np.asarray(offsets, dtype=np.float64)
    offsets = np.broadcast_to(offsets, (n, NUM_JOINTS, 3))
    glob = np.zeros((n, NUM_JOINTS, 3, 3))
    pos = np.zeros((n, NUM_JOINTS, 3))
    root = np.broadcast_to(np.eye(3), (n, 3, 3)) if root_rotation is None else np.asarray(root_rotation)
    glob[:, 0] = root @ local[:, 0]
    for j in range(1, NUM_JOINTS):  # parents come before children in the SMPL order
        p = PARENTS[j]
        pos[:, j] = pos[:, p] + np.einsum("nij,nj->ni", glob[:, p], offsets[:, j])
        glob[:, j] = glob[:, p] @ local[:, j]
    return pos


def random_body_offsets(n: int, rng: np.random.Generator) -> np.ndarray:
    """Rest offsets ``(n, 22, 3)`` of ``n`` random bodies: overall scale 0.85–1.15 (about
    1.50–2.05 m tall), limb and trunk segments each scaled a further 0.92–1.08, left and right
    alike."""
    scale = rng.uniform(0.85, 1.15, (n, 1, 1))
    groups = {"leg": ("hip", "knee", "ankle", "foot"), "trunk": ("spine", "neck", "head"),
              "arm": ("collar", "shoulder", "elbow", "wrist")}
    factor = np.ones((n, NUM_JOINTS, 1))
    for words in groups.values():
        f = rng.uniform(0.92, 1.08, n)
        for i, name in enumerate(JOINT_NAMES):
            if any(w in name for w in words):
                factor[:, i, 0] = f
    return REST_OFFSETS[None] * scale * factor


def _family_ranges(family: str) -> dict:
    """Ranges (degrees) that a family imposes, as ``{joint: {axis: (lo, hi)}}`` on the left
    side; ``"both_"`` entries apply to both sides, mirrored."""
    if family == "standing":
        return {"both_hip": {0: (-15, 10), 2: (-5, 20)}, "both_knee": {0: (0, 20)}, "spine1": {0: (-5, 15)}}
    if family == "arm_raise":
        return {"both_hip": {0: (-10, 5), 2: (-5, 15)}, "both_knee": {0: (0, 15)},
                "both_shoulder": {2: (30, 170)}}
    if family == "sitting":
        return {"both_hip": {0: (-105, -70), 2: (-5, 30)}, "both_knee": {0: (60, 110)}, "spine1": {0: (-10, 25)}}
    if family == "squatting":
        return {"both_hip": {0: (-125, -90), 2: (5, 35)}, "both_knee": {0: (110, 150)}, "spine1": {0: (0, 35)}}
    # kneeling: the ankle is stretched beyond its standing range so that the foot lies flat behind
    if family == "kneeling":
        return {"both_hip": {0: (-20, 10), 2: (-5, 15)}, "both_knee": {0: (80, 100)}, "both_ankle": {0: (50, 70)},
                "spine1": {0: (-10, 20)}}
    if family == "one_knee":  # left knee down, right foot planted in front; mirrored half the time
        return {"left_hip": {0: (-15, 10), 2: (-5, 10)}, "left_knee": {0: (80, 100)}, "left_ankle": {0: (50, 70)},
                "right_hip": {0: (-100, -80), 2: (-10, 10)}, "right_knee": {0: (80, 100)}, "spine1": {0: (-10, 15)}}
    if family == "lunge":
        return {"left_hip": {0: (-95, -55), 2: (-5, 15)}, "left_knee": {0: (60, 110)},
                "right_hip": {0: (10, 30), 2: (-5, 15)}, "right_knee": {0: (0, 40)}, "spine1": {0: (-10, 15)}}
    if family == "bent_forward":
        return {"both_hip": {0: (-10, 10), 2: (-5, 15)}, "both_knee": {0: (0, 30)}, "spine1": {0: (20, 50)},
                "spine2": {0: (5, 20)}}
    if family == "bent_backward":
        return {"both_hip": {0: (-10, 15), 2: (-5, 15)}, "both_knee": {0: (0, 20)}, "spine1": {0: (-20, -10)},
                "spine2": {0: (-10, -5)}, "spine3": {0: (-10, -5)}}
    if family == "bent_sideways":
        return {"both_hip": {0: (-10, 10), 2: (-5, 15)}, "both_knee": {0: (0, 20)}, "spine1": {2: (12, 20)},
                "spine2": {2: (5, 10)}, "spine3": {2: (5, 10)}}
    return {}


def _root_pitch(family: str):
    """Extra forward tilt of the whole body (degrees): bending at the hips tilts the pelvis."""
    return {"bent_forward": (20, 70), "sitting": (-10, 15), "squatting": (10, 35)}.get(family, (-5, 5))


def generate_poses(n: int, seed: int = 0, families=None, return_families: bool = False):
    """``n`` random plausible poses ``float32 (n, 22, 3)`` in metres, pelvis at the origin,
    random heading (use :func:`~pylocalize.posetext.normalize_poses` to remove it).

    Parameters
    ----------
    n : int
        Number of poses.
    seed : int
        The same seed gives the same poses.
    families : sequence of str, optional
        Pose families to draw from (default: all of :data:`FAMILIES`, weighted).
    return_families : bool
        Also return the family name of each pose.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    families = FAMILIES if families is None else tuple(families)
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown pose families {unknown}; choose among {list(FAMILIES)}")
    rng = np.random.default_rng(seed)
    weights = np.array([FAMILY_WEIGHTS[FAMILIES.index(f)] for f in families])
    which = rng.choice(len(families), n, p=weights / weights.sum())
    lo = np.broadcast_to(LIMITS[..., 0], (n, NUM_JOINTS, 3)).copy()
    hi = np.broadcast_to(LIMITS[..., 1], (n, NUM_JOINTS, 3)).copy()
    pitch = np.zeros(n)
    for k, family in enumerate(families):
        rows = np.nonzero(which == k)[0]
        if len(rows) == 0:
            continue
        for joint, axes in _family_ranges(family).items():
            if joint.startswith("both_"):
                sides = [JOINT_INDEX["left_" + joint[5:]], JOINT_INDEX["right_" + joint[5:]]]
            else:
                sides = [JOINT_INDEX[joint]]
            for j in sides:
                right = JOINT_NAMES[j].startswith("right_")
                for axis, (a, b) in axes.items():
                    a, b = np.radians(a), np.radians(b)
                    if right and axis > 0:  # mirrored: y and z rotations change sign
                        a, b = -b, -a
                    lo[rows, j, axis], hi[rows, j, axis] = a, b
        pitch[rows] = np.radians(rng.uniform(*_root_pitch(family), len(rows)))
    angles = rng.uniform(lo, hi)
    # arms hang rather than sit at random outside the arm families: lower the shoulder rotation
    # towards the body half the time
    relaxed = rng.random(n) < 0.5
    left_s, right_s = JOINT_INDEX["left_shoulder"], JOINT_INDEX["right_shoulder"]
    angles[relaxed, left_s, 2] = np.radians(rng.uniform(-90, -40, relaxed.sum()))
    angles[relaxed, right_s, 2] = -np.radians(rng.uniform(-90, -40, relaxed.sum()))
    keep = np.isin(which, [families.index(f) for f in ("arm_raise",) if f in families])
    angles[keep & relaxed] = rng.uniform(lo, hi)[keep & relaxed]
    # the pelvis tilt is undone at the hips so that the legs keep their family's posture
    angles[:, JOINT_INDEX["left_hip"], 0] -= pitch
    angles[:, JOINT_INDEX["right_hip"], 0] -= pitch
    local = euler_to_matrix(angles)
    yaw = rng.uniform(-np.pi, np.pi, n)
    root = euler_to_matrix(np.stack([np.zeros(n), yaw, np.zeros(n)], 1)) @ euler_to_matrix(
        np.stack([pitch, np.zeros(n), np.zeros(n)], 1))
    offsets = random_body_offsets(n, rng)
    poses = forward_kinematics(local, offsets, root)
    # mirror half of the one-sided families so that both sides are equally likely
    one_sided = np.isin(which, [families.index(f) for f in ("one_knee", "lunge", "bent_sideways") if f in families])
    flip = one_sided & (rng.random(n) < 0.5)
    poses[flip] = poses[flip][:, MIRROR] * np.array([-1.0, 1.0, 1.0])
    poses = poses.astype(np.float32)
    if return_families:
        return poses, np.array(families)[which]
    return poses


__all__ = ["FAMILIES", "JOINT_LIMITS", "REST_OFFSETS", "euler_to_matrix", "forward_kinematics", "generate_poses",
           "random_body_offsets"]
