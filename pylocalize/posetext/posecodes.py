"""Posecodes: categorical, human-readable facts about a 3D body pose (PoseScript).

Following Delmas et al., "PoseScript: Linking 3D Human Poses and Natural Language" (ECCV
2022), a pose is described by *posecodes*, each a measurement on a few joints binned into
named categories:

=============  ===========================================  ==========================================
kind           measurement                                  categories (thresholds)
=============  ===========================================  ==========================================
angle          angle at the middle joint (degrees)          completely bent < 45 <= almost completely
                                                            bent < 75 <= bent at right angle < 105 <=
                                                            partially bent < 135 <= slightly bent
                                                            < 160 <= straight
distance       distance between two joints (m)              close < 0.20 <= shoulder width < 0.40 <=
                                                            spread < 0.80 <= wide
position_x     x(a) - x(b), +x = the subject's left (m)     right of < -0.15 <= ignored < 0.15 <= left of
position_y     y(a) - y(b), up (m)                          below < -0.15 <= ignored < 0.15 <= above
position_z     z(a) - z(b), +z = the subject's front (m)    behind < -0.15 <= ignored < 0.15 <= in front
orientation    angle of a body part to the vertical (deg)   vertical < 15 <= ignored < 75 <= horizontal
ground         height above the lowest joint (m)            on the ground < 0.10 <= ignored
super          a rule over other posecodes                  ignored / yes
=============  ===========================================  ==========================================

The kinds and category names follow the paper; the threshold values are ours, chosen in
its spirit (they have not been checked against the released PoseScript code). Measurements are taken in the
body frame of :func:`~pylocalize.posetext.skeleton.normalize_poses`, so the heading does not
matter. *Virtual joints* extend the skeleton: hands are the wrists, the torso is the mean of
the three spine joints, and the body parts of orientation codes are joint-to-joint segments.
*Super-posecodes* (kneeling, squatting, sitting, body bent forward/backward, leaning left/right,
arms out to the sides, crossed arms or legs) are rules over elementary posecodes and
measurements.

Each posecode lists the categories a caption may mention (``eligible``): an "ignored" middle
band is never described, and for some pairs only the telling category is (a hand *close* to a
knee is worth saying; a hand at 60 cm from it is not).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pylocalize.posetext.skeleton import JOINT_INDEX, normalize_poses

ANGLE_CATEGORIES = ("completely bent", "almost completely bent", "bent at right angle", "partially bent",
                    "slightly bent", "straight")
ANGLE_THRESHOLDS = (45.0, 75.0, 105.0, 135.0, 160.0)
DISTANCE_CATEGORIES = ("close", "shoulder width", "spread", "wide")
DISTANCE_THRESHOLDS = (0.20, 0.40, 0.80)
POSITION_CATEGORIES = {"position_x": ("right of", "ignored", "left of"),
                       "position_y": ("below", "ignored", "above"),
                       "position_z": ("behind", "ignored", "in front of")}
POSITION_THRESHOLDS = (-0.15, 0.15)
ORIENTATION_CATEGORIES = ("vertical", "ignored", "horizontal")
ORIENTATION_THRESHOLDS = (15.0, 75.0)
GROUND_CATEGORIES = ("on the ground", "ignored")
GROUND_THRESHOLDS = (0.10,)

# virtual joints: name -> the joints they average
VIRTUAL_JOINTS = {
    "left_hand": ("left_wrist",),
    "right_hand": ("right_wrist",),
    "torso": ("spine1", "spine2", "spine3"),
    "mid_hips": ("left_hip", "right_hip"),
    "mid_shoulders": ("left_shoulder", "right_shoulder"),
}
# body parts of orientation codes: name -> (from joint, to joint)
BODY_PARTS = {
    "left_upper_arm": ("left_shoulder", "left_elbow"), "right_upper_arm": ("right_shoulder", "right_elbow"),
    "left_forearm": ("left_elbow", "left_wrist"), "right_forearm": ("right_elbow", "right_wrist"),
    "left_thigh": ("left_hip", "left_knee"), "right_thigh": ("right_hip", "right_knee"),
    "left_shin": ("left_knee", "left_ankle"), "right_shin": ("right_knee", "right_ankle"),
    "back": ("mid_hips", "neck"),
}


@dataclass(frozen=True)
class Posecode:
    """One posecode: what it measures and how its values are named.

    Attributes
    ----------
    name : str
        ``kind/joint[/joint]``, e.g. ``"distance/left_hand/right_hand"``.
    kind : str
        angle, distance, position_x, position_y, position_z, orientation, ground or super.
    joints : tuple of str
        Joints, virtual joints or body parts it is about.
    categories : tuple of str
        The value names, in increasing order of the measurement.
    eligible : tuple of bool
        Which categories a caption may describe.
    """

    name: str
    kind: str
    joints: tuple
    categories: tuple
    eligible: tuple


def _code(kind, joints, categories, eligible=None):
    if eligible is None:
        eligible = tuple(c != "ignored" for c in categories)
    else:
        eligible = tuple(c in eligible for c in categories)
    return Posecode("/".join((kind,) + tuple(joints)), kind, tuple(joints), tuple(categories), eligible)


def _sides(template):
    """Both sides of a left-side template (tuple of names with ``L``/``R`` placeholders)."""
    out = []
    for a, b in (("left", "right"), ("right", "left")):
        out.append(tuple(t.replace("L_", a + "_").replace("R_", b + "_") for t in template))
    return out


def _build_posecodes():
    codes = []
    for joint in ("left_knee", "right_knee", "left_elbow", "right_elbow"):
        codes.append(_code("angle", (joint,), ANGLE_CATEGORIES))
    for pair in (("left_elbow", "right_elbow"), ("left_hand", "right_hand"), ("left_knee", "right_knee"),
                 ("left_foot", "right_foot")):
        codes.append(_code("distance", pair, DISTANCE_CATEGORIES))
    for template in (("L_hand", "L_shoulder"), ("L_hand", "R_shoulder"), ("L_hand", "R_elbow"), ("L_hand", "L_knee"),
                     ("L_hand", "R_knee"), ("L_hand", "L_foot"), ("L_hand", "R_foot"), ("L_hand", "head")):
        for pair in _sides(template):
            codes.append(_code("distance", pair, DISTANCE_CATEGORIES, eligible=("close",)))
    x, y, z = (POSITION_CATEGORIES[k] for k in ("position_x", "position_y", "position_z"))
    # left-right pairs: the usual order (left at the left) goes without saying
    for pair in (("left_hand", "right_hand"), ("left_foot", "right_foot")):
        codes.append(_code("position_x", pair, x, eligible=("right of",)))
    for template in (("L_hand", "L_shoulder"),):
        for pair in _sides(template):
            codes.append(_code("position_x", pair, x))
    for pair in (("left_hand", "right_hand"), ("left_foot", "right_foot"), ("left_knee", "right_knee")):
        codes.append(_code("position_y", pair, y))
    # a raised limb is worth saying; a hand below the head or a knee below the hip is the default
    for template in (("L_hand", "head"), ("L_hand", "L_shoulder"), ("L_elbow", "L_shoulder"), ("L_foot", "L_knee"),
                     ("L_knee", "L_hip"), ("L_hand", "L_hip")):
        for pair in _sides(template):
            codes.append(_code("position_y", pair, y, eligible=("above",)))
    for pair in (("left_hand", "right_hand"), ("left_foot", "right_foot")):
        codes.append(_code("position_z", pair, z))
    for template in (("L_hand", "torso"), ("L_foot", "torso")):
        for pair in _sides(template):
            codes.append(_code("position_z", pair, z))
    for part in BODY_PARTS:
        eligible = ("horizontal",) if part == "back" else None
        codes.append(_code("orientation", (part,), ORIENTATION_CATEGORIES, eligible=eligible))
    for joint in ("left_knee", "right_knee", "left_foot", "right_foot", "left_hand", "right_hand"):
        codes.append(_code("ground", (joint,), GROUND_CATEGORIES, eligible=("on the ground",)))
    for name in SUPER_POSECODES:
        codes.append(Posecode("super/" + name, "super", (name,), ("ignored", "yes"), (False, True)))
    return tuple(codes)


SUPER_POSECODES = ("kneeling", "kneeling_on_left_knee", "kneeling_on_right_knee", "squatting", "sitting",
                   "bent_forward", "bent_backward", "leaning_left", "leaning_right", "arms_out", "arms_crossed",
                   "legs_crossed")
POSECODES = _build_posecodes()
POSECODE_INDEX = {p.name: i for i, p in enumerate(POSECODES)}


def _joint(x, name):
    if name in JOINT_INDEX:
        return x[:, JOINT_INDEX[name]]
    return np.mean([x[:, JOINT_INDEX[j]] for j in VIRTUAL_JOINTS[name]], axis=0)


def _angle_at(x, joint):
    """Interior angle (degrees) at a knee or elbow."""
    side, kind = joint.split("_")
    a, b = {"knee": ("hip", "ankle"), "elbow": ("shoulder", "wrist")}[kind]
    u = _joint(x, f"{side}_{a}") - _joint(x, joint)
    v = _joint(x, f"{side}_{b}") - _joint(x, joint)
    cos = np.sum(u * v, -1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1) + 1e-12)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def _segment(x, part):
    a, b = BODY_PARTS[part]
    return _joint(x, b) - _joint(x, a)


def measure(joints, normalize: bool = True) -> dict:
    """The raw measurement behind every elementary posecode, ``{name: float array (n,)}``.

    Parameters
    ----------
    joints : array (n, 22, 3) or (22, 3)
        SMPL body joints in metres, y up.
    normalize : bool
        Bring the poses to the body frame first (pass False if they already are).
    """
    x = normalize_poses(joints).astype(np.float64) if normalize else np.asarray(joints, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    lowest = x[..., 1].min(1)
    out = {}
    for code in POSECODES:
        j = code.joints
        if code.kind == "angle":
            v = _angle_at(x, j[0])
        elif code.kind == "distance":
            v = np.linalg.norm(_joint(x, j[0]) - _joint(x, j[1]), axis=-1)
        elif code.kind.startswith("position_"):
            axis = "xyz".index(code.kind[-1])
            v = _joint(x, j[0])[:, axis] - _joint(x, j[1])[:, axis]
        elif code.kind == "orientation":
            s = _segment(x, j[0])
            # folded to 0..90 degrees: a part pointing up or down is vertical alike
            v = np.degrees(np.arccos(np.clip(np.abs(s[:, 1]) / (np.linalg.norm(s, axis=-1) + 1e-12), 0.0, 1.0)))
        elif code.kind == "ground":
            v = _joint(x, j[0])[:, 1] - lowest
        else:
            continue
        out[code.name] = v
    back = _segment(x, "back")
    # torso tilt: forward (towards +z) and sideways (towards +x, the subject's left), degrees
    out["tilt/forward"] = np.degrees(np.arctan2(back[:, 2], back[:, 1]))
    out["tilt/left"] = np.degrees(np.arctan2(back[:, 0], back[:, 1]))
    return out


_THRESHOLDS = {"angle": ANGLE_THRESHOLDS, "distance": DISTANCE_THRESHOLDS, "position_x": POSITION_THRESHOLDS,
               "position_y": POSITION_THRESHOLDS, "position_z": POSITION_THRESHOLDS,
               "orientation": ORIENTATION_THRESHOLDS, "ground": GROUND_THRESHOLDS}

# super-posecode thresholds on the torso tilt (degrees)
BENT_FORWARD_DEG, BENT_BACKWARD_DEG, LEANING_DEG = 30.0, 12.0, 12.0


def compute_posecodes(joints, normalize: bool = True) -> dict:
    """Posecodes of a batch of poses: ``{posecode name: int8 array (n,)}`` of category
    indices into ``POSECODES[POSECODE_INDEX[name]].categories``.

    Parameters
    ----------
    joints : array (n, 22, 3) or (22, 3)
        SMPL body joints in metres, y up, any heading.
    normalize : bool
        Bring the poses to the body frame first (pass False if they already are).

    Examples
    --------
    >>> codes = compute_posecodes(poses)
    >>> category_name("angle/left_knee", codes["angle/left_knee"][0])
    'straight'
    """
    m = measure(joints, normalize=normalize)
    codes = {}
    for code in POSECODES:
        if code.kind != "super":
            codes[code.name] = np.digitize(m[code.name], _THRESHOLDS[code.kind]).astype(np.int8)

    def c(name, category):
        p = POSECODES[POSECODE_INDEX[name]]
        return codes[name] == p.categories.index(category)

    def angle_below(joint, degrees):
        return m[f"angle/{joint}"] < degrees

    knee_down = {s: c(f"ground/{s}_knee", "on the ground") for s in ("left", "right")}
    foot_down = {s: c(f"ground/{s}_foot", "on the ground") for s in ("left", "right")}
    knee_bent = {s: angle_below(f"{s}_knee", ANGLE_THRESHOLDS[3]) for s in ("left", "right")}
    kneeling = knee_down["left"] & knee_down["right"] & knee_bent["left"] & knee_bent["right"]
    one_knee = {s: knee_down[s] & knee_bent[s] & ~knee_down[o] & foot_down[o]
                for s, o in (("left", "right"), ("right", "left"))}
    squatting = (angle_below("left_knee", ANGLE_THRESHOLDS[1]) & angle_below("right_knee", ANGLE_THRESHOLDS[1])
                 & ~knee_down["left"] & ~knee_down["right"])
    sitting = (c("orientation/left_thigh", "horizontal") & c("orientation/right_thigh", "horizontal")
               & ~angle_below("left_knee", ANGLE_THRESHOLDS[1]) & ~angle_below("right_knee", ANGLE_THRESHOLDS[1])
               & angle_below("left_knee", ANGLE_THRESHOLDS[3]) & angle_below("right_knee", ANGLE_THRESHOLDS[3])
               & ~knee_down["left"] & ~knee_down["right"])
    arms_out = np.ones(len(m["tilt/left"]), bool)
    for s in ("left", "right"):
        arms_out &= (c(f"orientation/{s}_upper_arm", "horizontal") & c(f"orientation/{s}_forearm", "horizontal")
                     & c(f"angle/{s}_elbow", "straight"))
    arms_out &= c("distance/left_hand/right_hand", "wide")
    values = {
        "kneeling": kneeling,
        "kneeling_on_left_knee": one_knee["left"],
        "kneeling_on_right_knee": one_knee["right"],
        "squatting": squatting,
        "sitting": sitting,
        "bent_forward": m["tilt/forward"] > BENT_FORWARD_DEG,
        "bent_backward": m["tilt/forward"] < -BENT_BACKWARD_DEG,
        "leaning_left": m["tilt/left"] > LEANING_DEG,
        "leaning_right": m["tilt/left"] < -LEANING_DEG,
        "arms_out": arms_out,
        "arms_crossed": c("position_x/left_hand/right_hand", "right of"),
        "legs_crossed": c("position_x/left_foot/right_foot", "right of"),
    }
    for name in SUPER_POSECODES:
        codes["super/" + name] = values[name].astype(np.int8)
    return codes


def category_name(name: str, value: int) -> str:
    """The category name of a posecode value."""
    return POSECODES[POSECODE_INDEX[name]].categories[int(value)]


def _swap_sides(word: str) -> str:
    parts = word.split("_")
    return "_".join({"left": "right", "right": "left"}.get(p, p) for p in parts)


def _mirror_table():
    """For each posecode, the posecode it reads on the mirrored pose and whether the category
    order flips."""
    table = {}
    for code in POSECODES:
        joints = tuple(_swap_sides(j) for j in code.joints)
        flip = code.kind == "position_x"
        name = "/".join((code.kind,) + joints)
        if name not in POSECODE_INDEX and len(joints) == 2:
            name = "/".join((code.kind, joints[1], joints[0]))
            if code.kind.startswith("position_"):  # a - b = -(b - a)
                flip = not flip
        if name not in POSECODE_INDEX:
            raise AssertionError(f"posecode {code.name} has no mirror")
        table[code.name] = (name, flip)
    return table


_MIRROR_TABLE = _mirror_table()


def mirror_posecodes(codes: dict) -> dict:
    """The posecodes of the mirrored poses, from the posecodes of the poses: left and right
    swap, and left-of / right-of swap (so ``compute_posecodes(mirror_poses(x))`` equals
    ``mirror_posecodes(compute_posecodes(x))``, up to values on a threshold)."""
    out = {}
    for name, (source, flip) in _MIRROR_TABLE.items():
        v = np.asarray(codes[source])
        out[name] = (len(POSECODES[POSECODE_INDEX[name]].categories) - 1 - v).astype(np.int8) if flip else v.copy()
    return out


__all__ = ["ANGLE_CATEGORIES", "BODY_PARTS", "DISTANCE_CATEGORIES", "POSECODES", "POSECODE_INDEX", "Posecode",
           "SUPER_POSECODES", "VIRTUAL_JOINTS", "category_name", "compute_posecodes", "measure", "mirror_posecodes"]
