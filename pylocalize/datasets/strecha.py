"""The Strecha multi-view benchmark (fountain-P11, Herz-Jesus-P8, entry-P10, castle-P19...).

A scene folder holds ``images/<name>`` and, for each image, ``gt_dense_cameras/<name>.camera``:
a text file of the 3x3 K (OpenCV convention), a ``0 0 0`` line, the camera-to-world rotation,
the camera centre and the image size. This module is the one reader of that layout: map
building, ground-truth loading and the command line's query cameras all go through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

IMAGE_FOLDER = "images"
CAMERA_FOLDER = "gt_dense_cameras"
CAMERA_SUFFIX = ".camera"


def read_strecha_camera(path) -> Tuple[np.ndarray, np.ndarray]:
    """K (3x3) and cam_from_world (3x4) from a Strecha ``.camera`` file
    (K, a ``0 0 0`` line, camera-to-world R, centre C, image size)."""
    values = [float(v) for v in Path(path).read_text().split()]
    if len(values) < 24:
        raise ValueError(f"{path}: not a Strecha camera file (expected K, 0 0 0, R, C, W H)")
    K = np.array(values[0:9]).reshape(3, 3)
    R_wc = np.array(values[12:21]).reshape(3, 3)
    C = np.array(values[21:24])
    R = R_wc.T
    return K, np.hstack([R, (-R @ C)[:, None]])


def is_strecha_folder(folder) -> bool:
    """Whether ``folder`` has the ``gt_dense_cameras/`` of a Strecha scene."""
    return (Path(folder) / CAMERA_FOLDER).is_dir()


def _camera_files(folder) -> Dict[str, Path]:
    """``{image name: .camera file}`` of a scene, sorted by name."""
    files = sorted((Path(folder) / CAMERA_FOLDER).glob("*" + CAMERA_SUFFIX))
    return {p.name[: -len(CAMERA_SUFFIX)]: p for p in files}


def read_strecha_poses(folder) -> Dict[str, np.ndarray]:
    """``{image name: cam_from_world 3x4}`` of every camera file of a scene (empty if none)."""
    return {name: read_strecha_camera(p)[1] for name, p in _camera_files(folder).items()}


@dataclass
class StrechaScene:
    """The posed images of a scene folder, sorted by name.

    Attributes
    ----------
    names : list of str
        Image names (relative to ``image_dir``).
    K : float64 (n, 3, 3)
        Intrinsics, OpenCV convention.
    cam_from_world : float64 (n, 3, 4)
    image_dir : Path
    """

    names: List[str]
    K: np.ndarray
    cam_from_world: np.ndarray
    image_dir: Path


def read_strecha_scene(folder, exclude: Sequence[str] = ()) -> StrechaScene:
    """The images of a Strecha folder and their cameras, leaving out the names in ``exclude``
    (e.g. held-out queries). Raises ``ValueError`` if the folder has no camera files."""
    folder = Path(folder)
    files = _camera_files(folder)
    if not files:
        raise ValueError(f"{folder} has no {CAMERA_FOLDER}/*{CAMERA_SUFFIX}: not a Strecha folder")
    names, Ks, poses = [], [], []
    for name, path in files.items():
        if name not in exclude:
            K, pose = read_strecha_camera(path)
            names.append(name)
            Ks.append(K)
            poses.append(pose)
    if not names:
        raise ValueError(f"{folder}: every image is excluded; leave at least one for the map")
    return StrechaScene(names, np.array(Ks).reshape(-1, 3, 3), np.array(poses).reshape(-1, 3, 4),
                        folder / IMAGE_FOLDER)


def camera_file_of_image(image) -> Optional[Path]:
    """The ``.camera`` file of an image inside a Strecha scene's ``images/`` folder, or None
    when there is none (the image is not part of a Strecha scene)."""
    image = Path(image)
    path = image.parent.parent / CAMERA_FOLDER / (image.name + CAMERA_SUFFIX)
    return path if path.is_file() else None


__all__ = ["CAMERA_FOLDER", "IMAGE_FOLDER", "StrechaScene", "camera_file_of_image", "is_strecha_folder",
           "read_strecha_camera", "read_strecha_poses", "read_strecha_scene"]
