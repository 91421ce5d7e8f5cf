"""Run an object representation over a BOP test scene and score it with the BOP metrics."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image

from pylocalize.objects import bop

# what an evaluation gives the estimator of each instance: its visible mask, or that mask's box
GIVEN = ("mask", "box")


def mask_box(mask: np.ndarray) -> tuple:
    """``(x, y, w, h)`` of a mask's pixels (an empty mask: an empty box)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return (0, 0, 0, 0)
    return (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))


def evaluate_scene(rep, mesh, scene_dir, obj_id: int, scene_id: int = 0, extractor=None, max_points: int = 5000,
                   symmetries=None, progress: bool = False, given: str = "mask", segment: str = "grabcut") -> dict:
    """Estimates every ground-truth instance of ``obj_id`` in a BOP scene folder from its RGB
    image and visible mask (``rgb/``, ``mask_visib/``; ``depth/`` when present, for VSD), or
    with ``given="box"`` from the visible mask's box alone (BOP's ``bbox_visib``), the object's
    pixels then found as ``segment`` says (:meth:`ObjectRepresentation.estimate`).

    The representation's mesh must be in millimetres, as BOP's ground truth and depth.

    Returns ``{"rows": BOP19 result rows, "coarse"/"refined": {metric: per-instance
    errors}, "times": seconds per instance, "stage_times": {stage: seconds per instance}}``
    (stages as in :attr:`ObjectPose.timings`); a failed estimate scores as missing.
    """
    from tqdm import tqdm

    from pylocalize.render import Renderer

    _check_millimetres(rep)
    if given not in GIVEN:
        raise ValueError(f"given must be one of {GIVEN}, got {given!r}")
    scene_dir = Path(scene_dir)
    scene = bop.read_scene(scene_dir)
    symmetries = symmetries if symmetries is not None else [np.eye(4)]
    points = np.asarray(mesh.vertices, np.float64)
    if len(points) > max_points:  # metrics on a vertex subsample, like the toolkit's eval models
        points = points[np.random.default_rng(0).choice(len(points), max_points, replace=False)]
    stages = {stage: {k: [] for k in ("mssd", "mspd", "add", "adds", "vsd")} for stage in ("coarse", "refined")}
    rows, times, widths, stage_times = [], [], [], {}
    every_depth = True  # VSD only when every image has a depth map, never over a silent subset
    for im_id in tqdm(sorted(scene), desc=f"scene {scene_dir.name}", disable=not progress, leave=False):
        entry = scene[im_id]
        image, test_depth = _read_test_image(scene_dir, im_id, entry["depth_scale"])
        height, width = image.shape[:2]
        every_depth &= test_depth is not None
        renderer = Renderer(width, height, entry["K"])
        for k, gt in enumerate(entry["gt"]):
            if gt["obj_id"] != obj_id:
                continue
            mask_path = scene_dir / "mask_visib" / f"{im_id:06d}_{k:06d}.png"
            with Image.open(mask_path) as im:
                mask = np.asarray(im.convert("L")) > 127
            region = {"mask": mask} if given == "mask" else {"bbox": mask_box(mask), "segment": segment}
            t0 = time.perf_counter()
            r = rep.estimate(image, entry["K"], extractor=extractor, **region)
            times.append(time.perf_counter() - t0)
            for stage, seconds in r.timings.items():
                stage_times.setdefault(stage, []).append(seconds)
            widths.append(width)
            gt_depth = renderer.render(mesh, np.c_[gt["R"], gt["t"]], outputs=("depth",)).depth[0] \
                if test_depth is not None else None
            for stage, (R, t) in (("coarse", (r.R_coarse, r.t_coarse)), ("refined", (r.R, r.t))):
                if not r.success:
                    _score_missing(stages[stage])
                    continue
                _score_pose(stages[stage], R, t, gt, entry["K"], points, symmetries)
                if test_depth is not None:
                    est_depth = renderer.render(mesh, np.c_[R, t], outputs=("depth",)).depth[0]
                    stages[stage]["vsd"].append(bop.vsd(est_depth, gt_depth, test_depth, float(mesh.extent)))
            if r.success:
                rows.append({"scene_id": scene_id, "im_id": im_id, "obj_id": obj_id, "score": r.score,
                             "R": r.R, "t": r.t, "time": times[-1]})
    out = {"rows": rows, "times": times, "widths": widths, "stage_times": stage_times}
    for stage, e in stages.items():
        out[stage] = {k: np.array(v) for k, v in e.items() if k != "vsd" or every_depth}
    return out


def _check_millimetres(rep) -> None:
    units = getattr(rep, "mesh_units", "mm")
    if units != "mm":
        raise ValueError(f"BOP ground truth and depth are in mm but the representation's mesh is in {units}: "
                         "onboard the dataset's model (models/obj_NNNNNN.ply, in mm)")


def _read_test_image(scene_dir: Path, im_id: int, depth_scale: float):
    """``(rgb uint8 (H, W, 3), depth in mm or None)`` of a BOP test image."""
    candidates = (scene_dir / "rgb" / f"{im_id:06d}.{e}" for e in ("png", "jpg"))
    rgb_path = next((p for p in candidates if p.is_file()), None)
    if rgb_path is None:
        raise ValueError(f"{scene_dir}/rgb has no image {im_id:06d}")
    with Image.open(rgb_path) as im:
        image = np.asarray(im.convert("RGB"))
    depth_path = scene_dir / "depth" / f"{im_id:06d}.png"
    if not depth_path.is_file():
        return image, None
    with Image.open(depth_path) as im:
        return image, np.asarray(im, np.float64) * depth_scale


def _score_pose(errors: dict, R, t, gt: dict, K, points, symmetries) -> None:
    """Appends one estimate's MSSD, MSPD, ADD and ADD-S against the ground truth ``gt``."""
    errors["mssd"].append(bop.mssd(R, t, gt["R"], gt["t"], points, symmetries))
    errors["mspd"].append(bop.mspd(R, t, gt["R"], gt["t"], K, points, symmetries))
    errors["add"].append(bop.add(R, t, gt["R"], gt["t"], points))
    errors["adds"].append(bop.adds(R, t, gt["R"], gt["t"], points))


def _score_missing(errors: dict) -> None:
    """A failed estimate scores as missing: infinite errors, VSD 1 at every threshold."""
    for key in ("mssd", "mspd", "add", "adds"):
        errors[key].append(np.inf)
    errors["vsd"].append(np.ones(len(bop.VSD_TAUS)))


def scene_folders(path, split: str = "test"):
    """BOP scene folders under ``path``: the folder itself when it is a scene, else the
    scenes of ``path/split`` (or of ``path`` when it holds scenes directly), sorted."""
    path = Path(path)
    if (path / "scene_gt.json").is_file():
        return [path]
    for root in (path / split, path):
        scenes = sorted(p for p in root.iterdir() if (p / "scene_gt.json").is_file()) if root.is_dir() else []
        if scenes:
            return scenes
    raise ValueError(f"{path}: no BOP scene (a folder with scene_gt.json) here or under {split}/")


def evaluate_dataset(rep, mesh, path, obj_id: int, split: str = "test", extractor=None, symmetries=None,
                     progress: bool = False, given: str = "mask", segment: str = "grabcut") -> dict:
    """:func:`evaluate_scene` over every scene of a BOP dataset (or one scene folder);
    per-instance errors are concatenated across scenes."""
    merged = None
    for scene_dir in scene_folders(path, split):
        scene_id = int(scene_dir.name) if scene_dir.name.isdigit() else 0
        result = evaluate_scene(rep, mesh, scene_dir, obj_id, scene_id=scene_id, extractor=extractor,
                                symmetries=symmetries, progress=progress, given=given, segment=segment)
        if merged is None:
            merged = result
            continue
        merged["rows"] += result["rows"]
        merged["times"] += result["times"]
        merged["widths"] += result["widths"]
        for stage, seconds in result["stage_times"].items():
            merged["stage_times"].setdefault(stage, []).extend(seconds)
        for stage in ("coarse", "refined"):
            for key, values in result[stage].items():
                if key in merged[stage]:
                    merged[stage][key] = np.concatenate([merged[stage][key], values])
            for key in set(merged[stage]) - set(result[stage]):
                merged[stage].pop(key)  # VSD only where every scene has depth
    return merged


def summarize(result: dict, diameter: float) -> dict:
    """Average recalls (coarse and refined) of :func:`evaluate_scene` output."""
    n = len(result["times"])
    if n == 0:
        raise ValueError("no instance of the object in the scene")
    return {stage: bop.average_recalls(result[stage], np.full(n, diameter), np.asarray(result["widths"], float))
            for stage in ("coarse", "refined")}
