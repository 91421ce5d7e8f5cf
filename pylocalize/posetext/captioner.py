"""Automatic pose captions from posecodes, after the PoseScript captioning pipeline.

The steps follow Delmas et al. (ECCV 2022), with our own rules and templates:

1. **Posecodes** (:mod:`~pylocalize.posetext.posecodes`), vectorised over the batch.
2. **Eligibility**: only the categories a posecode marks eligible become facts.
3. **Super-posecodes first**: a super-posecode that holds (kneeling, arms out, ...) replaces
   the elementary facts it stands for.
4. **Random skipping**: each elementary fact is dropped with ``skip_probability``, so that
   captions, like people, leave things out (at least one fact stays).
5. **Aggregation**: *entity* (the elbow and the hand of one side in the same relation become
   the arm; knee and foot the leg; upper arm and forearm the arm), *symmetry* (the same
   relation on both sides becomes "both knees ..."), *transitive ripple* (``A above B`` and
   ``B above C`` become one chain, and the implied ``A above C`` is dropped).
6. **Ordering**: whole-body facts first, then the facts grouped by body region (torso, legs,
   arms) in a random region order.
7. **Templates**: each fact is written with varied words (determiners, verbs, synonyms for
   the categories), facts are paired into sentences with varied transitions.

Captions are deterministic for a seed, and the captions of a pose do not depend on the
other poses in the batch (each pose draws from its own seeded stream).

Limits: English only; the templates are ours, so their vocabulary is narrower than people's.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import numpy as np

from pylocalize.posetext.posecodes import POSECODES, compute_posecodes

_CATEGORY_WORDS = {
    "completely bent": ("completely bent", "fully bent", "bent all the way"),
    "almost completely bent": ("almost completely bent", "sharply bent", "nearly fully bent"),
    "bent at right angle": ("bent at a right angle", "bent at ninety degrees", "bent in an L shape"),
    "partially bent": ("partially bent", "half bent", "bent"),
    "slightly bent": ("slightly bent", "a little bent", "barely bent"),
    "straight": ("straight", "extended", "unbent"),
    "left of": ("to the left of", "on the left of", "left of"),
    "right of": ("to the right of", "on the right of", "right of"),
    "above": ("above", "higher than", "raised above"),
    "below": ("below", "lower than", "beneath"),
    "in front of": ("in front of", "ahead of", "forward of"),
    "behind": ("behind", "at the back of", "further back than"),
    "vertical": ("vertical", "upright", "perpendicular to the ground"),
    "horizontal": ("horizontal", "parallel to the ground", "level"),
}
_DISTANCE_PAIR_WORDS = {
    "close": ("close to each other", "together", "near each other"),
    "shoulder width": ("shoulder width apart", "about shoulder width apart", "a shoulder width apart"),
    "spread": ("spread apart", "apart", "spread"),
    "wide": ("wide apart", "far apart", "spread wide"),
}
_CLOSE_WORDS = ("close to", "near", "next to")
_GROUND_WORDS = ("on the ground", "touching the ground", "resting on the floor")
_SUPER_SENTENCES = {
    "kneeling": ("{who} is kneeling", "{who} kneels on both knees", "{who} is on their knees"),
    "kneeling_on_left_knee": ("{who} is kneeling on the left knee", "{who} kneels on their left knee",
                              "{who} is down on the left knee"),
    "kneeling_on_right_knee": ("{who} is kneeling on the right knee", "{who} kneels on their right knee",
                               "{who} is down on the right knee"),
    "squatting": ("{who} is squatting", "{who} is crouching down", "{who} squats"),
    "sitting": ("{who} is in a sitting position", "{who} is seated", "{who} sits"),
    "bent_forward": ("{who} is bent forward", "{who} leans forward", "{who} bends the upper body forward"),
    "bent_backward": ("{who} is bent backward", "{who} leans back", "{who} arches backward"),
    "leaning_left": ("{who} leans to the left", "{who} is bent to the left side", "{who} tilts the torso left"),
    "leaning_right": ("{who} leans to the right", "{who} is bent to the right side", "{who} tilts the torso right"),
    "arms_out": ("{who} has the arms stretched out to the sides", "{who} holds the arms out in a T shape",
                 "{who} spreads the arms sideways"),
    "arms_crossed": ("{who} has the arms crossed", "{who} crosses the arms", "{who} has crossed arms"),
    "legs_crossed": ("{who} has the legs crossed", "{who} crosses the legs", "{who} has crossed legs"),
}
_WHO = ("The person", "Someone", "This person", "The figure", "They")
_TRANSITIONS = (", and ", " while ", ", with ", " and ", "; ")
_PLURAL_WORDS = {"hand": "hands", "foot": "feet", "knee": "knees", "elbow": "elbows", "shoulder": "shoulders",
                 "arm": "arms", "leg": "legs", "upper_arm": "upper arms", "forearm": "forearms", "thigh": "thighs",
                 "shin": "shins", "hip": "hips"}
# which elementary facts a super-posecode makes redundant
_REPLACES = {
    "kneeling": ("ground/left_knee", "ground/right_knee", "angle/left_knee", "angle/right_knee", "ground/left_foot",
                 "ground/right_foot"),
    "kneeling_on_left_knee": ("ground/left_knee", "angle/left_knee"),
    "kneeling_on_right_knee": ("ground/right_knee", "angle/right_knee"),
    "squatting": ("angle/left_knee", "angle/right_knee"),
    "sitting": ("orientation/left_thigh", "orientation/right_thigh"),
    "bent_forward": ("orientation/back",),
    "bent_backward": ("orientation/back",),
    "arms_out": ("orientation/left_upper_arm", "orientation/right_upper_arm", "orientation/left_forearm",
                 "orientation/right_forearm", "angle/left_elbow", "angle/right_elbow", "distance/left_hand/right_hand"),
    "arms_crossed": ("position_x/left_hand/right_hand",),
    "legs_crossed": ("position_x/left_foot/right_foot",),
}
_REGION_OF_PART = {"hand": "arms", "elbow": "arms", "shoulder": "arms", "arm": "arms", "upper_arm": "arms",
                   "forearm": "arms", "knee": "legs", "foot": "legs", "thigh": "legs", "shin": "legs", "leg": "legs",
                   "hip": "legs", "back": "torso", "torso": "torso", "head": "torso"}
_REGIONS = ("torso", "legs", "arms")


@dataclass
class _Fact:
    kind: str  # posecode kind, or "super"
    category: str
    subject: str  # joint / part name, "both:<part>" after symmetry, "<side>_arm" after entity aggregation
    object: str | None  # the other joint of a pair, or None
    chain: tuple = ()  # further objects of a transitive chain


def _split_side(name):
    for side in ("left", "right"):
        if name.startswith(side + "_"):
            return side, name[len(side) + 1:]
    return None, name


def _noun(name: str, rng: random.Random, possessive: bool = True) -> str:
    """'the left hand' / 'their left hand' / 'both knees' / 'the hands'."""
    det = rng.choice(("the", "the", "their")) if possessive else "the"
    if name.startswith("both:"):
        part = _PLURAL_WORDS[name[5:]]
        return rng.choice(("both " + part, det + " " + part, "both " + part))
    if name.startswith("pair:"):
        return det + " " + _PLURAL_WORDS[name[5:]]
    return det + " " + name.replace("_", " ")


def _is_plural(name):
    return name.startswith("both:") or name.startswith("pair:")


@dataclass
class Captioner:
    """Writes captions of poses from their posecodes.

    Parameters
    ----------
    skip_probability : float
        Chance that each elementary fact is left out of a caption.
    max_facts : int or None
        At most this many facts per caption (whole-body facts are kept first).
    """

    skip_probability: float = 0.15
    max_facts: int | None = None

    def __post_init__(self):
        if not 0.0 <= self.skip_probability < 1.0:
            raise ValueError(f"skip_probability must be in [0, 1), got {self.skip_probability}")
        if self.max_facts is not None and self.max_facts < 1:
            raise ValueError(f"max_facts must be >= 1 or None, got {self.max_facts}")

    def caption(self, joints, num_captions: int = 1, seed: int = 0, normalize: bool = True) -> list:
        """Captions of each pose: a list (one entry per pose) of ``num_captions`` strings.

        Parameters
        ----------
        joints : array (n, 22, 3) or (22, 3)
            SMPL body joints in metres, y up, any heading.
        num_captions : int
            Captions per pose; each is drawn independently (skipping, order, words).
        seed : int
            Same seed, same captions. Pose ``i`` draws from the stream ``(seed, i)``.
        normalize : bool
            Bring the poses to the body frame first (pass False if they already are).
        """
        if num_captions < 1:
            raise ValueError(f"num_captions must be >= 1, got {num_captions}")
        codes = compute_posecodes(joints, normalize=normalize)
        names = [p.name for p in POSECODES]
        values = np.stack([codes[n] for n in names], 1).astype(np.int64)  # (n, P)
        width = max(len(p.categories) for p in POSECODES)
        eligible = np.zeros((len(POSECODES), width), bool)
        for i, p in enumerate(POSECODES):
            eligible[i, : len(p.categories)] = p.eligible
        mask = eligible[np.arange(len(POSECODES))[None], values]  # (n, P)
        out = []
        for i in range(len(values)):
            facts = [(POSECODES[j], POSECODES[j].categories[values[i, j]]) for j in np.nonzero(mask[i])[0]]
            rng = random.Random(f"{seed}:{i}")
            out.append([self._caption_one(facts, rng) for _ in range(num_captions)])
        return out

    def _caption_one(self, facts, rng: random.Random) -> str:
        supers = [p.joints[0] for p, _ in facts if p.kind == "super"]
        replaced = {name for s in supers for name in _REPLACES.get(s, ())}
        elementary = []
        for p, category in facts:
            if p.kind == "super" or p.name in replaced:
                continue
            if rng.random() < self.skip_probability:
                continue
            elementary.append(_Fact(p.kind, category, p.joints[0], p.joints[1] if len(p.joints) > 1 else None))
        elementary = _aggregate(elementary)
        rng.shuffle(supers)
        if not supers and not elementary:  # every fact skipped or none eligible: say the first one
            p, category = next(((p, c) for p, c in facts if p.kind != "super"), (None, None))
            if p is None:
                return "The person stands in a neutral pose."
            elementary = [_Fact(p.kind, category, p.joints[0], p.joints[1] if len(p.joints) > 1 else None)]
        # regions in a random order; facts inside a region in a random order
        regions = list(_REGIONS)
        rng.shuffle(regions)
        rng.shuffle(elementary)
        elementary.sort(key=lambda f: regions.index(_region(f.subject)))
        if self.max_facts is not None:
            supers = supers[: self.max_facts]
            elementary = elementary[: max(0, self.max_facts - len(supers))]
        who = rng.choice(_WHO)
        clauses = [_whole_body(s, who if k == 0 else None, rng) for k, s in enumerate(supers)]
        clauses += [_write(f, rng) for f in elementary]
        sentences, k = [], 0
        while k < len(clauses):
            if k + 1 < len(clauses) and rng.random() < 0.6:
                second = clauses[k + 1]
                transition = rng.choice(_TRANSITIONS)
                if transition == ", with ":  # "with the left knee bent" reads better than "with the left knee is bent"
                    second = re.sub(r"^(\S+(?: \S+)*?) (?:is|are) ", r"\1 ", second, count=1)
                sentences.append(clauses[k] + transition + second[0].lower() + second[1:])
                k += 2
            else:
                sentences.append(clauses[k])
                k += 1
        return " ".join(s[0].upper() + s[1:] + "." for s in sentences)


_PLURAL_VERBS = {"is": "are", "has": "have", "kneels": "kneel", "leans": "lean", "squats": "squat", "sits": "sit",
                 "bends": "bend", "arches": "arch", "tilts": "tilt", "holds": "hold", "spreads": "spread",
                 "crosses": "cross"}


def _whole_body(name: str, who, rng: random.Random) -> str:
    """A super-posecode's clause, its verb agreeing with the subject ("They are", "Someone is");
    ``who=None`` picks a subject that refers back ("They", "The person")."""
    template = rng.choice(_SUPER_SENTENCES[name])
    who = rng.choice(("They", "The person")) if who is None else who
    text = template.format(who=who)
    if who == "They":
        words = text.split(" ")
        words[1] = _PLURAL_VERBS.get(words[1], words[1])
        text = " ".join(words)
    return text


def _region(subject: str) -> str:
    name = subject.split(":", 1)[-1]
    _, part = _split_side(name)
    return _REGION_OF_PART.get(part, "torso")


def _aggregate(facts: list) -> list:
    """Entity, symmetry and transitive aggregation of elementary facts."""
    # entity: elbow + hand -> arm, knee + foot -> leg, upper arm + forearm -> arm, same relation
    entities = {("elbow", "hand"): "arm", ("knee", "foot"): "leg", ("upper_arm", "forearm"): "arm"}
    by_key = {}
    for f in facts:
        by_key.setdefault((f.kind, f.category, f.object), []).append(f)
    out = []
    for key, group in by_key.items():
        parts = {}
        for f in group:
            side, part = _split_side(f.subject)
            parts[(side, part)] = f
        used = set()
        for (a, b), whole in entities.items():
            for side in ("left", "right"):
                if (side, a) in parts and (side, b) in parts and key[0] != "ground":
                    obj = key[2]
                    # an arm cannot be "above its own shoulder" through its elbow and hand alike
                    if obj is not None and _split_side(obj)[1] in (a, b, "shoulder") and _split_side(obj)[0] == side:
                        continue
                    used |= {(side, a), (side, b)}
                    out.append(_Fact(key[0], key[1], f"{side}_{whole}", obj))
        out += [f for k, f in parts.items() if k not in used]
    # symmetry: the same relation on both sides, to the same object
    by_key = {}
    for f in out:
        side, part = _split_side(f.subject)
        by_key.setdefault((f.kind, f.category, f.object, part), []).append((side, f))
    merged = []
    for (kind, category, obj, part), group in by_key.items():
        sides = {s for s, _ in group}
        if sides == {"left", "right"} and part in _PLURAL_WORDS and (obj is None or _split_side(obj)[0] is None):
            merged.append(_Fact(kind, category, "both:" + part, obj))
        else:
            merged += [f for _, f in group]
    # transitive ripple along one axis: A rel B and B rel C -> A rel B rel C, drop A rel C
    positional = [f for f in merged if f.kind.startswith("position_") and f.object is not None]
    chained = set()
    result = [f for f in merged if f not in positional]
    for f in positional:
        if id(f) in chained:
            continue
        nxt = next((g for g in positional if g is not f and id(g) not in chained and g.kind == f.kind
                    and g.category == f.category and g.subject == f.object), None)
        if nxt is not None:
            chained |= {id(f), id(nxt)}
            for g in positional:  # the implied A rel C says nothing new
                if g.kind == f.kind and g.category == f.category and g.subject == f.subject and g.object == nxt.object:
                    chained.add(id(g))
            result.append(_Fact(f.kind, f.category, f.subject, f.object, chain=(nxt.object,)))
    result += [f for f in positional if id(f) not in chained]
    return result


def _write(f: _Fact, rng: random.Random) -> str:
    subject = _noun(f.subject, rng)
    verb = "are" if _is_plural(f.subject) else "is"
    if f.kind == "angle":
        return f"{subject} {verb} {rng.choice(_CATEGORY_WORDS[f.category])}"
    if f.kind == "orientation":
        return f"{subject} {verb} {rng.choice(_CATEGORY_WORDS[f.category])}"
    if f.kind == "ground":
        return f"{subject} {verb} {rng.choice(_GROUND_WORDS)}"
    obj = _noun(f.object, rng) if f.object else ""
    if f.kind == "distance":
        side_a, part_a = _split_side(f.subject)
        side_b, part_b = _split_side(f.object or "")
        if f.object and side_a and side_b and side_a != side_b and part_a == part_b:  # left X and right X
            return f"{_noun('pair:' + part_a, rng)} are {rng.choice(_DISTANCE_PAIR_WORDS[f.category])}"
        return f"{subject} {verb} {rng.choice(_CLOSE_WORDS)} {obj}"
    words = _CATEGORY_WORDS[f.category]
    text = f"{subject} {verb} {rng.choice(words)} {obj}"
    for extra in f.chain:
        text += f", which is {rng.choice(words)} {_noun(extra, rng)}"
    return text


_DEFAULT = Captioner()


def caption_poses(joints, num_captions: int = 1, seed: int = 0, skip_probability: float = 0.15) -> list:
    """Captions of each pose with a :class:`Captioner`: a list of ``num_captions`` strings per pose."""
    captioner = _DEFAULT if skip_probability == _DEFAULT.skip_probability else Captioner(skip_probability)
    return captioner.caption(joints, num_captions=num_captions, seed=seed)


_SIDE_WORD = re.compile(r"\b(left|right|Left|Right)\b")


def swap_left_right(text: str) -> str:
    """The caption of the mirrored pose: every left becomes right and back (case kept)."""
    swap = {"left": "right", "right": "left", "Left": "Right", "Right": "Left"}
    return _SIDE_WORD.sub(lambda m: swap[m.group(1)], text)


# clause boundaries: sentence ends and the transitions the captioner (and people) join facts with
_CLAUSE_BREAK = re.compile(r"[.;!?]+\s*|,?\s+(?:and|while|whereas|but|with)\s+|,\s+(?=(?:the|their|both|his|her)\b)",
                           re.IGNORECASE)


def split_clauses(text: str) -> list:
    """The clauses of a caption, lower case, without punctuation: the units the text encoder
    embeds (and caches). "which is" chains stay with their clause."""
    parts = [" ".join(p.lower().split()).strip(" ,") for p in _CLAUSE_BREAK.split(text)]
    parts = [p for p in parts if p]
    return parts or [" ".join(text.lower().split())]


__all__ = ["Captioner", "caption_poses", "split_clauses", "swap_left_right"]
