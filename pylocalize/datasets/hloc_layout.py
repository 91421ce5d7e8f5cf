"""Aachen Day-Night v1.1 and the other datasets of visuallocalization.net in hloc's layout.

A dataset folder holds

- the images, in ``images/images_upright/`` (as the archive unpacks) or ``images_upright/``:
  database images under ``db/``, queries under ``query/...``;
- a COLMAP model of the database images (``cameras``, ``images``, ``points3D``, .bin or .txt),
  for Aachen v1.1 ``3D-models/aachen_v_1_1/``; its image names are relative to the image folder;
- the query lists ``queries/*_with_intrinsics.txt``, one ``name MODEL W H PARAMS...`` line per
  query (a COLMAP camera: pixel centres at +0.5), e.g. ``day_time_queries_with_intrinsics.txt``
  and ``night_time_queries_with_intrinsics.txt``; each file is a condition the benchmark scores
  apart.

The ground truth of the queries is withheld: the benchmark scores a pose file uploaded to
visuallocalization.net, one ``name qw qx qy qz tx ty tz`` line per query with the
``cam_from_world`` rotation as a unit quaternion (scalar first) and translation, where ``name``
is the query image's file name without its folders (hloc writes it so; RobotCar Seasons keeps the
camera folder, ``folders=1``).
:func:`write_submission` writes that file and :func:`check_submission` checks one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from pylocalize.geometry.camera import Camera, read_cameras_file
from pylocalize.geometry.poses import write_pose_file

IMAGE_FOLDERS = ("images/images_upright", "images_upright", "images")
MODEL_FOLDERS = ("3D-models/aachen_v_1_1", "3D-models", "sfm", "sparse")
QUERY_LISTS = "queries/*_with_intrinsics.txt"
# a submitted quaternion must be a unit one to this precision (files written with 6 digits pass)
UNIT_QUATERNION_TOLERANCE = 1e-4


def _is_model(folder: Path) -> bool:
    return any((folder / f"images.{ext}").is_file() for ext in ("bin", "txt"))


def find_image_folder(folder) -> Path:
    """The image folder of a dataset: the first of :data:`IMAGE_FOLDERS` that exists."""
    folder = Path(folder)
    for name in IMAGE_FOLDERS:
        if (folder / name).is_dir():
            return folder / name
    raise FileNotFoundError(f"{folder}: no image folder ({', '.join(IMAGE_FOLDERS)}); unzip "
                            "database_and_query_images.zip inside the dataset folder or give the folder")


def find_model_folder(folder) -> Path:
    """The COLMAP model of a dataset: the first of :data:`MODEL_FOLDERS` that holds one, else
    the one model folder found below ``3D-models/``."""
    folder = Path(folder)
    for name in MODEL_FOLDERS:
        if _is_model(folder / name):
            return folder / name
    found = sorted(p.parent for p in (folder / "3D-models").glob("**/images.*") if p.suffix in (".bin", ".txt"))
    if len(set(found)) == 1:
        return found[0]
    if found:
        raise ValueError(f"{folder}: several COLMAP models ({', '.join(str(p) for p in sorted(set(found)))}); "
                         "give the one to use")
    raise FileNotFoundError(f"{folder}: no COLMAP model (images.bin or images.txt) in {', '.join(MODEL_FOLDERS)}; "
                            "unzip the dataset's model archive (Aachen v1.1: aachen_v1_1.zip) inside the folder")


def read_query_lists(files: Iterable) -> Dict[str, Dict[str, Camera]]:
    """``{condition: {query name: Camera}}`` from query lists with intrinsics; the condition is
    the file name without ``_queries_with_intrinsics.txt`` (``day_time``, ``night_time``).
    Raises ``ValueError`` when a query is listed twice."""
    out: Dict[str, Dict[str, Camera]] = {}
    seen: Dict[str, str] = {}
    for file in map(Path, files):
        condition = file.name.replace("_queries_with_intrinsics.txt", "").replace("_with_intrinsics.txt", "")
        cameras = read_cameras_file(file)
        for name in cameras:
            if name in seen:
                raise ValueError(f"query {name} is listed in both {seen[name]} and {file}")
            seen[name] = str(file)
        out[condition] = cameras
    if not out:
        raise ValueError("no query lists given")
    return out


@dataclass
class HlocDataset:
    """A dataset in hloc's layout.

    Attributes
    ----------
    folder, image_folder, model_folder : Path
    queries : {condition: {query name: Camera}}
        Query names relative to ``image_folder``.
    """

    folder: Path
    image_folder: Path
    model_folder: Path
    queries: Dict[str, Dict[str, Camera]]

    @property
    def query_cameras(self) -> Dict[str, Camera]:
        """``{query name: Camera}`` over every condition."""
        return {name: camera for cameras in self.queries.values() for name, camera in cameras.items()}


def read_hloc_dataset(folder, model: Optional[str] = None, query_lists: Sequence = (),
                      images: Optional[str] = None) -> HlocDataset:
    """Finds the parts of a dataset folder; ``model``, ``query_lists`` and ``images`` override
    what is found. Raises ``FileNotFoundError`` naming the part that is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such dataset folder")
    image_folder = Path(images) if images else find_image_folder(folder)
    model_folder = Path(model) if model else find_model_folder(folder)
    if not _is_model(model_folder):
        raise FileNotFoundError(f"{model_folder}: not a COLMAP model folder (no images.bin or images.txt)")
    lists = [Path(f) for f in query_lists] or sorted(folder.glob(QUERY_LISTS))
    if not lists:
        raise FileNotFoundError(f"{folder}: no {QUERY_LISTS}; give the query lists with intrinsics")
    return HlocDataset(folder, image_folder, model_folder, read_query_lists(lists))


def submission_name(query: str, folders: int = 0) -> str:
    """The name visuallocalization.net expects for a query: its file name without folders (Aachen,
    CMU Seasons), or with its last ``folders`` folders (1 for RobotCar Seasons' ``rear/xxx.jpg``,
    hloc's ``prepend_camera_name``)."""
    parts = PurePosixPath(query).parts
    return "/".join(parts[max(0, len(parts) - 1 - int(folders)):])


def write_submission(path, poses: Mapping[str, np.ndarray], folders: int = 0) -> None:
    """Writes ``{query name: cam_from_world 3x4}`` as a visuallocalization.net pose file, names as
    :func:`submission_name` makes them.

    Raises ``ValueError`` when two queries share a name (the file could not tell them apart) or a
    pose is not a rotation and a finite translation."""
    by_name: Dict[str, str] = {}
    for query in poses:
        name = submission_name(query, folders)
        if name in by_name:
            raise ValueError(f"queries {by_name[name]} and {query} share the name {name}, which is all the "
                             "submission format keeps")
        by_name[name] = query
    write_pose_file(path, ((submission_name(q, folders), pose) for q, pose in poses.items()))


def check_submission(path, queries: Iterable[str], folders: int = 0) -> Tuple[int, List[str]]:
    """Checks a pose file against the submission format for these queries.

    Every line must be ``name qw qx qy qz tx ty tz`` with a finite unit quaternion and
    translation, ``name`` one query's :func:`submission_name`, each at most once.

    Returns
    -------
    (number of poses, the queries' names that have none)

    Raises
    ------
    ValueError
        Naming the first line that breaks the format.
    """
    expected = {submission_name(q, folders) for q in queries}
    seen = set()
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if line.startswith("#"):
            raise ValueError(f"{path}:{number}: a comment line; the submission holds pose lines only")
        try:
            values = np.array([float(v) for v in parts[1:]])
        except ValueError:
            values = np.zeros(0)
        if len(parts) != 8 or len(values) != 7 or not np.isfinite(values).all():
            raise ValueError(f"{path}:{number}: expected 'name qw qx qy qz tx ty tz', got {line!r}")
        if abs(np.linalg.norm(values[:4]) - 1) > UNIT_QUATERNION_TOLERANCE:
            raise ValueError(f"{path}:{number}: the quaternion is not a unit one (norm {np.linalg.norm(values[:4])})")
        if parts[0] not in expected:
            raise ValueError(f"{path}:{number}: {parts[0]} is not a query's name in the submission")
        if parts[0] in seen:
            raise ValueError(f"{path}:{number}: {parts[0]} has a second pose")
        seen.add(parts[0])
    return len(seen), sorted(expected - seen)


__all__ = ["HlocDataset", "check_submission", "find_image_folder", "find_model_folder", "read_hloc_dataset",
           "read_query_lists", "submission_name", "write_submission"]
