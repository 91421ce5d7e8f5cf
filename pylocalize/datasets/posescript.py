"""PoseScript (Delmas et al., ECCV 2022; release v2 of 100k poses): captions, splits and pose ids.

The release folder holds

- ``posescript_human_6293.json``: ``{pose id: caption}``, the human-written captions
  (PoseScript-H), and ``posescript_auto_100k.json``: ``{pose id: [captions]}``, the automatic
  ones (PoseScript-A);
- ``train_ids_100k.json``, ``val_ids_100k.json``, ``test_ids_100k.json``: the pose ids of each split;
- ``ids_2_dataset_sequence_and_frame_index_100k.json``: where each pose comes from in AMASS.

The poses themselves are AMASS's and are not in the release: the user exports their SMPL joint
positions, either as a ``.npy`` array ``(100k, J, 3)`` whose row ``i`` is pose id ``i`` or as a
``.npz`` with ``joints`` ``(n, J, 3)`` and ``pose_ids`` ``(n,)`` (:func:`read_joints`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

CAPTION_FILES = {"human": "posescript_human_*.json", "auto": "posescript_auto_*.json"}
SPLIT_FILE = "{split}_ids_*.json"


def _one_file(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    if not found:
        raise FileNotFoundError(f"{folder}: no {pattern}; unzip the PoseScript release (posescript_release_v2.zip) "
                                "into this folder")
    if len(found) > 1:
        raise ValueError(f"{folder}: several files match {pattern} ({', '.join(p.name for p in found)}); keep one")
    return found[0]


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


def read_captions(path) -> Dict[int, List[str]]:
    """``{pose id: captions}`` of a caption file (one caption or a list per pose id)."""
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object {{pose id: caption or [captions]}}")
    out = {}
    for key, value in data.items():
        captions = [value] if isinstance(value, str) else value
        if not key.isdigit() or not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
            raise ValueError(f"{path}: entry {key!r} is not a pose id with a caption or a list of captions")
        out[int(key)] = captions
    return out


def read_split(path) -> List[int]:
    """The pose ids of a split file (a JSON list)."""
    data = _read_json(path)
    if not isinstance(data, list) or not all(isinstance(i, int) or (isinstance(i, str) and i.isdigit()) for i in data):
        raise ValueError(f"{path}: expected a JSON list of pose ids")
    return [int(i) for i in data]


@dataclass
class PoseScriptSplit:
    """The poses of a split that have a caption of the chosen kind, each with its first
    caption (the protocol of the retrieval tables: one caption per pose)."""

    pose_ids: List[int]
    captions: List[str]


def read_posescript(folder, split: str = "test", captions: str = "human") -> PoseScriptSplit:
    """The ``split`` (train, val, test) of a release folder with its ``captions`` (human or
    auto), in the split file's order."""
    if captions not in CAPTION_FILES:
        raise ValueError(f"captions must be one of {', '.join(CAPTION_FILES)}, got {captions!r}")
    folder = Path(folder)
    texts = read_captions(_one_file(folder, CAPTION_FILES[captions]))
    ids = [i for i in read_split(_one_file(folder, SPLIT_FILE.format(split=split))) if texts.get(i)]
    if not ids:
        raise ValueError(f"{folder}: no pose of the {split} split has a {captions} caption")
    return PoseScriptSplit(ids, [texts[i][0] for i in ids])


def read_joints(path, pose_ids: Sequence[int]) -> np.ndarray:
    """Joint positions ``(len(pose_ids), J, 3)`` of these pose ids from the user's export (see the
    module docstring). Raises ``ValueError`` naming a pose id the file does not hold."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            if "joints" not in data or "pose_ids" not in data:
                raise ValueError(f"{path}: a .npz of joints needs the arrays 'joints' (n, J, 3) and 'pose_ids' (n,)")
            joints, ids = data["joints"], data["pose_ids"]
        if len(ids) != len(joints):
            raise ValueError(f"{path}: {len(joints)} joint arrays but {len(ids)} pose ids")
        row_of = {int(i): r for r, i in enumerate(ids)}
    elif path.suffix == ".npy":
        joints = np.load(path, mmap_mode="r", allow_pickle=False)  # 100k poses: read only the split's rows
        row_of = None
    else:
        raise ValueError(f"{path}: expected a .npy (row = pose id) or .npz (joints, pose_ids) file")
    if joints.ndim != 3 or joints.shape[2] != 3:
        raise ValueError(f"{path}: expected joint positions (n, J, 3), got shape {joints.shape}")
    rows = []
    for pose_id in pose_ids:
        row = row_of.get(int(pose_id)) if row_of is not None else (int(pose_id) if 0 <= pose_id < len(joints) else None)
        if row is None:
            raise ValueError(f"{path}: no joints for pose id {pose_id}; export every pose of the split")
        rows.append(row)
    return np.asarray(joints[rows], np.float32)


__all__ = ["PoseScriptSplit", "read_captions", "read_joints", "read_posescript", "read_split"]
