"""Cambridge Landmarks (Kendall, Grimes and Cipolla, "PoseNet", ICCV 2015): the reader of a scene folder.

A scene folder (KingsCollege, OldHospital, ShopFacade, StMarysChurch, GreatCourt, Street) holds
the video frames ``seqN/frameNNNNN.png``, the splits ``dataset_train.txt`` and
``dataset_test.txt`` and the VisualSFM model ``reconstruction.nvm`` of all its frames.

- A split file has three header lines, then ``name X Y Z W P Q R`` per frame: the camera
  centre in the model's frame and the quaternion (scalar first) of the world-to-camera
  rotation, VisualSFM's convention. So ``cam_from_world = [R(q) | -R(q) C]``.
- ``reconstruction.nvm`` (``NVM_V3``): a camera count, then ``name f qw qx qy qz Cx Cy Cz k 0``
  per camera (focal length ``f`` in pixels of the frames on disk, principal point at the image
  centre, the same pose convention), then the points. Its names end in ``.jpg`` where the
  frames on disk and the split files have ``.png``.

The query cameras are the model's: its focal length and the image centre, as the papers use
them. The model's radial coefficient ``k`` (VisualSFM's, small on these frames) is read into
:attr:`CambridgeScene.radial` but not applied: the cameras are pinhole. Frames of a split
that the model does not hold have no camera and are left out, with a warning, as every
published protocol leaves them out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Dict, List, NamedTuple

import numpy as np

from pylocalize.geometry.camera import Camera
from pylocalize.geometry.poses import matrix_from_quaternion
from pylocalize.io import image_size

logger = logging.getLogger(__name__)

TRAIN_SPLIT = "dataset_train.txt"
TEST_SPLIT = "dataset_test.txt"
MODEL_FILE = "reconstruction.nvm"
# lines before the first frame of a split file: the dataset's title, the column names, a blank
SPLIT_HEADER_LINES = 3


def cam_from_world_of_centre(qvec, centre) -> np.ndarray:
    """``cam_from_world`` 3x4 from a world-to-camera quaternion (scalar first) and the camera
    centre, the pose convention of VisualSFM and of Cambridge Landmarks' split files."""
    R = matrix_from_quaternion(qvec)
    return np.hstack([R, (-R @ np.asarray(centre, np.float64))[:, None]])


def _floats(parts, path, number, what) -> np.ndarray:
    try:
        values = np.array([float(v) for v in parts], np.float64)
    except ValueError:
        values = np.array([np.nan])
    if not np.isfinite(values).all():
        raise ValueError(f"{path}:{number}: expected {what}, got {' '.join(parts)!r}")
    return values


def read_cambridge_split(path) -> Dict[str, np.ndarray]:
    """``{frame name: cam_from_world 3x4}`` of a split file (``dataset_train.txt`` or
    ``dataset_test.txt``), in the file's order. Raises ``ValueError`` naming the line that
    is not ``name X Y Z W P Q R``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; a Cambridge Landmarks scene folder holds {TRAIN_SPLIT} and "
                                f"{TEST_SPLIT}")
    poses: Dict[str, np.ndarray] = {}
    for number, line in enumerate(path.read_text().splitlines()[SPLIT_HEADER_LINES:], SPLIT_HEADER_LINES + 1):
        parts = line.split()
        if not parts:
            continue
        what = "'name X Y Z W P Q R' (camera centre, then world-to-camera quaternion)"
        if len(parts) != 8:
            raise ValueError(f"{path}:{number}: expected {what}, got {line.strip()!r}")
        values = _floats(parts[1:], path, number, what)
        if np.linalg.norm(values[3:7]) == 0:
            raise ValueError(f"{path}:{number}: the quaternion of {parts[0]} is zero")
        poses[parts[0]] = cam_from_world_of_centre(values[3:7], values[:3])
    if not poses:
        raise ValueError(f"{path}: no frames after its {SPLIT_HEADER_LINES} header lines")
    return poses


class NvmCamera(NamedTuple):
    """One camera of a VisualSFM model: focal length (pixels), pose, radial coefficient."""

    focal: float
    cam_from_world: np.ndarray
    radial: float


def read_nvm_cameras(path) -> Dict[str, NvmCamera]:
    """``{image name as the model spells it: NvmCamera}`` of an ``NVM_V3`` file (the first
    model of the file; its points are not read)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; a Cambridge Landmarks scene folder holds the model {MODEL_FILE}")
    with open(path) as lines:
        numbered = ((n, line.split()) for n, line in enumerate(lines, 1))
        numbered = ((n, parts) for n, parts in numbered if parts)
        number, header = next(numbered, (1, []))
        if not header or header[0] != "NVM_V3":
            raise ValueError(f"{path}:{number}: not an NVM_V3 model (the first line must be NVM_V3)")
        if len(header) > 1 and header[1] == "FixedK":
            raise ValueError(f"{path}:{number}: an NVM model with a fixed calibration (FixedK) is not supported")
        number, count = next(numbered, (number + 1, []))
        if len(count) != 1 or not count[0].isdigit():
            raise ValueError(f"{path}:{number}: expected the number of cameras, got {' '.join(count)!r}")
        cameras: Dict[str, NvmCamera] = {}
        what = "'name f qw qx qy qz Cx Cy Cz k 0'"
        for _ in range(int(count[0])):
            number, parts = next(numbered, (number + 1, []))
            if len(parts) != 11:
                raise ValueError(f"{path}:{number}: expected {what}, got {' '.join(parts)!r}")
            values = _floats(parts[1:10], path, number, what)
            focal, q, centre = values[0], values[1:5], values[5:8]
            if focal <= 0 or np.linalg.norm(q) == 0:
                raise ValueError(f"{path}:{number}: expected {what} with f > 0 and a non-zero quaternion")
            cameras[parts[0][2:] if parts[0].startswith("./") else parts[0]] = NvmCamera(
                float(focal), cam_from_world_of_centre(q, centre), float(values[8]))
    return cameras


@dataclass
class CambridgeScene:
    """The frames of a Cambridge Landmarks scene with their poses and cameras.

    Attributes
    ----------
    folder : Path
        The scene folder; frame names are relative to it.
    train, test : list of str
        Frame names of the two splits (those the model holds a camera for), in file order.
    cam_from_world : {name: float64 (3, 4)}
        Ground-truth poses of both splits, from the split files.
    cameras : {name: Camera}
        PINHOLE cameras from the model's focal length, principal point at the image centre.
    radial : {name: float}
        The model's radial coefficient of each frame (not applied).
    skipped : list of str
        Frames of the splits without a camera in the model.
    """

    folder: Path
    train: List[str]
    test: List[str]
    cam_from_world: Dict[str, np.ndarray]
    cameras: Dict[str, Camera]
    radial: Dict[str, float]
    skipped: List[str]


def _model_name(frame: str) -> str:
    """The name the model gives a frame (``.jpg`` where the frames on disk are ``.png``)."""
    return str(PurePosixPath(frame).with_suffix(".jpg"))


def read_cambridge_scene(folder) -> CambridgeScene:
    """Reads a Cambridge Landmarks scene folder (split files, model, the sizes of its frames).

    Raises ``FileNotFoundError`` for a missing split file, model or frame, ``ValueError`` for
    a malformed one, or when a frame is in both splits.
    """
    folder = Path(folder)
    train_poses = read_cambridge_split(folder / TRAIN_SPLIT)
    test_poses = read_cambridge_split(folder / TEST_SPLIT)
    both = sorted(set(train_poses) & set(test_poses))
    if both:
        raise ValueError(f"{folder}: {len(both)} frames are in both splits (e.g. {both[0]}): not a Cambridge "
                         "Landmarks scene")
    model = read_nvm_cameras(folder / MODEL_FILE)
    poses = {**train_poses, **test_poses}
    cameras, radial, skipped = {}, {}, []
    sizes: Dict[str, tuple] = {}  # frames of one sequence share a size: read one header per folder
    for name in poses:
        nvm = model.get(_model_name(name), model.get(name))
        if nvm is None:
            skipped.append(name)
            continue
        sequence = str(PurePosixPath(name).parent)
        if sequence not in sizes:
            sizes[sequence] = image_size(folder / name)
        width, height = sizes[sequence]
        # the model's principal point is the image centre: (W/2, H/2) in COLMAP's pixel convention
        cameras[name] = Camera("PINHOLE", width, height, (nvm.focal, nvm.focal, width / 2, height / 2))
        radial[name] = nvm.radial
    if skipped:
        logger.warning("%s: %d frames of the splits have no camera in %s and are left out (e.g. %s)", folder,
                       len(skipped), MODEL_FILE, skipped[0])
    train = [n for n in train_poses if n in cameras]
    test = [n for n in test_poses if n in cameras]
    if not train:
        raise ValueError(f"{folder}: no training frame has a camera in {MODEL_FILE}; the model's names must be the "
                         f"frames' with .jpg (e.g. {_model_name(next(iter(train_poses)))})")
    return CambridgeScene(folder, train, test, poses, cameras, radial, skipped)


__all__ = ["CambridgeScene", "NvmCamera", "cam_from_world_of_centre", "read_cambridge_scene",
           "read_cambridge_split", "read_nvm_cameras"]
