"""Microsoft 7-Scenes (Shotton et al., CVPR 2013): the reader of a scene folder.

A scene folder (chess, fire, heads, office, pumpkin, redkitchen, stairs) holds
``seq-XX/frame-XXXXXX.color.png`` (640x480 RGB), ``frame-XXXXXX.depth.png`` and
``frame-XXXXXX.pose.txt``, and the split files ``TrainSplit.txt`` / ``TestSplit.txt`` that list
sequences as ``sequenceN`` (the folder ``seq-0N``).

A pose file is the 4x4 camera-to-world matrix of the frame (KinectFusion's tracking, camera
looking along +z with x right and y down), so ``cam_from_world`` is its inverse. Frames whose
pose is not finite (tracking lost: ``inf``, ``nan``, or MSVC's ``1.#QNAN``) are left out with a
warning.

The dataset publishes no RGB calibration: the RGB frames are taken as a pinhole camera with the
principal point at the image centre and a focal length of 525 px, the value DSAC* and ACE use
(the dataset's own 585 px is its depth camera's); give ``focal`` to use another.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import numpy as np

from pylocalize.geometry.camera import Camera
from pylocalize.io import image_size

logger = logging.getLogger(__name__)

TRAIN_SPLIT = "TrainSplit.txt"
TEST_SPLIT = "TestSplit.txt"
COLOR_SUFFIX = ".color.png"
POSE_SUFFIX = ".pose.txt"
RGB_FOCAL = 525.0


def _number(text: str) -> float:
    """A value of a pose file; MSVC's spellings of a lost pose (``1.#QNAN``, ``-1.#IND``,
    ``1.#INF``) read as NaN."""
    return float("nan") if "#" in text else float(text)


def read_seven_scenes_pose(path) -> np.ndarray:
    """``cam_from_world`` 3x4 of a ``frame-XXXXXX.pose.txt`` (a camera-to-world 4x4), or an
    array of NaN when the file holds a non-finite pose. Raises ``ValueError`` for a file that
    is not a 4x4 rigid transformation."""
    try:
        values = np.array([_number(v) for v in Path(path).read_text().split()])
    except ValueError:
        values = np.zeros(0)
    if values.size != 16:
        raise ValueError(f"{path}: not a 7-Scenes pose file (expected a 4x4 camera-to-world matrix)")
    world_from_cam = values.reshape(4, 4)
    if not np.isfinite(world_from_cam).all():
        return np.full((3, 4), np.nan)
    R, t = world_from_cam[:3, :3], world_from_cam[:3, 3]
    if abs(np.linalg.det(R) - 1) > 1e-3 or not np.allclose(world_from_cam[3], [0, 0, 0, 1], atol=1e-6):
        raise ValueError(f"{path}: the 4x4 matrix is not a rigid camera-to-world transformation")
    return np.hstack([R.T, (-R.T @ t)[:, None]])


def read_seven_scenes_split(path) -> List[str]:
    """The sequence folders (``seq-XX``) a split file lists as ``sequenceN`` lines."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; a 7-Scenes scene folder holds {TRAIN_SPLIT} and {TEST_SPLIT}")
    sequences = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        match = re.fullmatch(r"sequence(\d+)", line)
        if match is None:
            raise ValueError(f"{path}:{number}: expected a line 'sequenceN', got {line!r}")
        sequences.append(f"seq-{int(match.group(1)):02d}")
    if not sequences:
        raise ValueError(f"{path}: lists no sequence")
    return sequences


@dataclass
class SevenScenesScene:
    """The frames of a 7-Scenes scene with their poses and the shared camera.

    Attributes
    ----------
    folder : Path
        The scene folder; frame names (``seq-XX/frame-XXXXXX.color.png``) are relative to it.
    train, test : list of str
        Colour frames of the training and test sequences, sorted.
    cam_from_world : {name: float64 (3, 4)}
    camera : Camera
        PINHOLE of the frames' size (640x480) with the given focal length, principal point at the centre.
    skipped : list of str
        Frames without a finite pose.
    """

    folder: Path
    train: List[str]
    test: List[str]
    cam_from_world: Dict[str, np.ndarray]
    camera: Camera
    skipped: List[str]


def read_seven_scenes_scene(folder, focal: float = RGB_FOCAL) -> SevenScenesScene:
    """Reads a 7-Scenes scene folder: the splits, each listed sequence's frames and poses."""
    folder = Path(folder)
    if not focal > 0:
        raise ValueError(f"focal length must be positive, got {focal}")
    splits = {split: read_seven_scenes_split(folder / split) for split in (TRAIN_SPLIT, TEST_SPLIT)}
    both = sorted(set(splits[TRAIN_SPLIT]) & set(splits[TEST_SPLIT]))
    if both:
        raise ValueError(f"{folder}: {both[0]} is in both {TRAIN_SPLIT} and {TEST_SPLIT}")
    poses: Dict[str, np.ndarray] = {}
    names: Dict[str, List[str]] = {}
    skipped: List[str] = []
    for split, sequences in splits.items():
        names[split] = []
        for sequence in sequences:
            frames = sorted((folder / sequence).glob("frame-*" + COLOR_SUFFIX))
            if not frames:
                raise FileNotFoundError(f"{folder / sequence}: no frame-*{COLOR_SUFFIX}; unpack the sequence's zip "
                                        "inside the scene folder")
            for frame in frames:
                name = f"{sequence}/{frame.name}"
                pose_file = frame.with_name(frame.name[: -len(COLOR_SUFFIX)] + POSE_SUFFIX)
                if not pose_file.is_file():
                    raise FileNotFoundError(f"{pose_file}: missing, the pose of {name}")
                pose = read_seven_scenes_pose(pose_file)
                if not np.isfinite(pose).all():
                    skipped.append(name)
                    continue
                poses[name] = pose
                names[split].append(name)
    if skipped:
        logger.warning("%s: %d frames have no finite pose and are left out (e.g. %s)", folder, len(skipped),
                       skipped[0])
    first = next((n for split in (TRAIN_SPLIT, TEST_SPLIT) for n in names[split]), None)
    if first is None:
        raise ValueError(f"{folder}: no frame has a finite pose")
    width, height = image_size(folder / first)  # 640x480 in the dataset
    camera = Camera("PINHOLE", width, height, (focal, focal, width / 2, height / 2))
    return SevenScenesScene(folder, names[TRAIN_SPLIT], names[TEST_SPLIT], poses, camera, skipped)


__all__ = ["RGB_FOCAL", "SevenScenesScene", "read_seven_scenes_pose", "read_seven_scenes_scene",
           "read_seven_scenes_split"]
