"""Pose accuracy: load ground truth from the usual sources and score estimated poses.

Errors follow the localization benchmarks: rotation error is the angle of
``R_gt^T R_est`` in degrees, translation error the distance between camera centres.
A ground-truth image without an estimate counts as a failure (infinite error).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

# read_strecha_camera lived here before datasets/strecha.py: imported so its old path keeps working
from pylocalize.datasets.strecha import is_strecha_folder, read_strecha_camera, read_strecha_poses  # noqa: F401
from pylocalize.geometry import read_pose_file
from pylocalize.geometry.poses import rotation_error_deg

THRESHOLDS = ((0.25, 2.0), (0.5, 5.0), (5.0, 10.0))


def load_poses(source) -> Dict[str, np.ndarray]:
    """``{image name: cam_from_world 3x4}`` from a pose file, a COLMAP model folder
    (``cameras/images/points3D`` .bin or .txt) or a Strecha folder (``gt_dense_cameras/``)."""
    source = Path(source)
    if source.is_file():
        return read_pose_file(source)
    if is_strecha_folder(source):
        return read_strecha_poses(source)
    if any((source / f"images.{ext}").is_file() for ext in ("bin", "txt")):
        import pycolmap

        rec = pycolmap.Reconstruction(str(source))
        return {im.name: np.asarray(im.cam_from_world().matrix())[:3] for im in rec.images.values() if im.has_pose}
    raise ValueError(f"{source}: not a pose file, a COLMAP model folder or a Strecha folder")


def pose_error(est: np.ndarray, gt: np.ndarray) -> Tuple[float, float]:
    """(translation error of the camera centre, rotation error in degrees)."""
    angle = rotation_error_deg(np.asarray(gt)[:, :3], np.asarray(est)[:, :3])
    c_est = -np.asarray(est)[:, :3].T @ np.asarray(est)[:, 3]
    c_gt = -np.asarray(gt)[:, :3].T @ np.asarray(gt)[:, 3]
    return float(np.linalg.norm(c_est - c_gt)), float(angle)


def evaluate_poses(gt: Dict[str, np.ndarray], pred: Dict[str, np.ndarray],
                   thresholds: Sequence[Tuple[float, float]] = THRESHOLDS,
                   queries: Optional[Sequence[str]] = None) -> dict:
    """Median errors and recall at (metres, degrees) thresholds over the query images.

    Parameters
    ----------
    gt, pred : {image name: cam_from_world 3x4}
        Ground truth (it may hold the mapping images too) and estimates.
    queries : names, optional
        The images to score; a query without an estimate counts as a failure (infinite
        error) and is listed in ``"missing"``. Default: the estimated images, as the
        localization benchmarks score a submission (a ground truth that also holds the map's
        own images must not count them as failures).

    Returns
    -------
    dict with ``num_images`` (queries scored), ``num_estimated``, ``missing`` (queries without
    an estimate), ``median_translation_m``, ``median_rotation_deg``, ``per_image``
    ({name: (metres, degrees)}) and ``recall@(Tm,Rdeg)`` per threshold.

    Raises
    ------
    ValueError
        No ground truth, no query, or queries without a ground-truth pose (names that do not
        match: the message lists a few).
    """
    if not gt:
        raise ValueError("the ground truth holds no poses")
    names = list(pred) if queries is None else list(dict.fromkeys(queries))
    if not names:
        raise ValueError("no query images to evaluate: the estimates are empty (give --queries to count every "
                         "query as failed)")
    truth = _ground_truth_names(names, gt)
    unknown = [n for n in names if truth[n] is None]
    if unknown:
        raise ValueError(f"{len(unknown)} of {len(names)} query images have no ground-truth pose (e.g. "
                         f"{', '.join(unknown[:3])}): the names must match the ground truth's, e.g. "
                         f"{', '.join(list(gt)[:3])}")
    estimated = {g: pred[n] for n, g in _ground_truth_names(list(pred), gt).items() if g is not None}
    errors = {n: pose_error(estimated[truth[n]], gt[truth[n]]) if truth[n] in estimated else (np.inf, np.inf)
              for n in names}
    t = np.array([e[0] for e in errors.values()])
    r = np.array([e[1] for e in errors.values()])
    out = {"num_images": len(names), "num_estimated": int(sum(truth[n] in estimated for n in names)),
           "missing": [n for n in names if truth[n] not in estimated],
           "median_translation_m": float(np.median(t)), "median_rotation_deg": float(np.median(r)),
           "per_image": errors}
    for tm, rd in thresholds:
        out[f"recall@({tm:g}m,{rd:g}deg)"] = float(np.mean((t <= tm) & (r <= rd)))
    return out


def _ground_truth_names(names: Sequence[str], gt: Dict[str, np.ndarray]) -> Dict[str, Optional[str]]:
    """``{name: the ground-truth name it stands for, or None}``: the name itself, else the name
    without its leading folders (``pylocalize localize`` keys the images of a folder
    ``folder/name``; a Strecha or flat ground truth has ``name``).

    Raises ``ValueError`` when two names stand for one ground-truth image (``qa/0003.jpg`` and
    ``qb/0003.jpg`` against a ground truth keyed ``0003.jpg``)."""
    out: Dict[str, Optional[str]] = {}
    for name in names:
        parts = PurePosixPath(name).parts
        out[name] = next(("/".join(parts[i:]) for i in range(len(parts)) if "/".join(parts[i:]) in gt), None)
    seen: Dict[str, str] = {}
    for name, truth in out.items():
        if truth is not None and seen.setdefault(truth, name) != name:
            raise ValueError(f"{seen[truth]} and {name} both stand for the ground truth's {truth}: give a ground "
                             "truth whose names keep the folders (e.g. a pose file keyed folder/name)")
    return out
