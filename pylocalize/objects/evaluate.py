"""Run an object representation over a BOP test scene and score it with the BOP metrics."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

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
                   symmetries=None, progress: bool = False, given: str = "mask", segment: str = "grabcut",
                   depth: bool = False, **estimate_options) -> dict:
    """Estimates every ground-truth instance of ``obj_id`` in a BOP scene folder from its RGB
    image and visible mask (``rgb/``, ``mask_visib/``; ``depth/`` when present, for VSD), or
    with ``given="box"`` from the visible mask's box alone (BOP's ``bbox_visib``), the object's
    pixels then found as ``segment`` says (:meth:`ObjectRepresentation.estimate`). With
    ``depth=True`` each estimate also uses the image's depth (RGB-D:
    :func:`~pylocalize.objects.depth.estimate_with_depth`, its fit scored as the refined
    stage); every image then needs one.

    The representation's mesh must be in millimetres, as BOP's ground truth and depth.
    ``estimate_options`` go to :meth:`ObjectRepresentation.estimate` (``retrieval=...``).

    Returns ``{"rows": BOP19 result rows, "coarse"/"refined": {metric: per-instance
    errors}, "times": seconds per instance, "stage_times": {stage: seconds per instance}}``
    (stages as in :attr:`ObjectPose.timings`); a failed estimate scores as missing.
    """
    from tqdm import tqdm

    from pylocalize.render import Renderer

    check_millimetres(rep)
    if given not in GIVEN:
        raise ValueError(f"given must be one of {GIVEN}, got {given!r}")
    scene_dir = Path(scene_dir)
    scene = bop.read_scene(scene_dir)
    symmetries = symmetries if symmetries is not None else [np.eye(4)]
    points = metric_points(mesh, max_points)
    stages = {stage: {k: [] for k in ("mssd", "mspd", "add", "adds", "vsd")} for stage in ("coarse", "refined")}
    rows, times, widths, stage_times = [], [], [], {}
    every_depth = True  # VSD only when every image has a depth map, never over a silent subset
    for im_id in tqdm(sorted(scene), desc=f"scene {scene_dir.name}", disable=not progress, leave=False):
        entry = scene[im_id]
        image, test_depth = _read_test_image(scene_dir, im_id, entry["depth_scale"])
        if depth and test_depth is None:
            raise ValueError(f"{scene_dir}/depth has no image {im_id:06d}: an RGB-D evaluation needs the depth of "
                             "every image (or evaluate on RGB alone)")
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
            r = _estimate(rep, mesh, image, entry["K"], test_depth if depth else None, extractor=extractor,
                          **region, **estimate_options)
            times.append(time.perf_counter() - t0)
            for stage, seconds in r.timings.items():
                stage_times.setdefault(stage, []).append(seconds)
            widths.append(width)
            gt_depth = renderer.render(mesh, np.c_[gt["R"], gt["t"]], outputs=("depth",)).depth[0] \
                if test_depth is not None else None
            for stage, (R, t) in (("coarse", (r.R_coarse, r.t_coarse)), ("refined", (r.R, r.t))):
                if not r.success:
                    score_missing(stages[stage])
                    continue
                score_pose(stages[stage], R, t, gt, entry["K"], points, symmetries)
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


def _estimate(rep, mesh, image, K, depth: Optional[np.ndarray], **options):
    """The instance's pose from the colour image, or where ``depth`` (mm) is given, from the
    RGB-D frame."""
    if depth is None:
        return rep.estimate(image, K, **options)
    from pylocalize.objects.depth import estimate_with_depth

    return estimate_with_depth(rep, mesh, image, K, depth.astype(np.float32), **options)[0]


def metric_points(mesh, max_points: int = 5000) -> np.ndarray:
    """The model points the metrics use: the mesh's vertices, a seeded subsample of
    ``max_points`` when there are more (as the toolkit scores on its eval models)."""
    points = np.asarray(mesh.vertices, np.float64)
    if len(points) > max_points:
        points = points[np.random.default_rng(0).choice(len(points), max_points, replace=False)]
    return points


def check_millimetres(rep) -> None:
    units = getattr(rep, "mesh_units", "mm")
    if units != "mm":
        raise ValueError(f"BOP ground truth and depth are in mm but the representation's mesh is in {units}: "
                         "onboard the dataset's model (models/obj_NNNNNN.ply, in mm)")


def _read_depth(path: Path, depth_scale: float) -> np.ndarray:
    """A BOP depth image in mm (float64), or ``ValueError`` naming a file that is not one."""
    try:
        with Image.open(path) as im:
            depth = np.asarray(im, np.float64) * depth_scale
    except OSError as error:
        raise ValueError(f"{path}: cannot read it as a depth image ({error})") from None
    if depth.ndim != 2:
        raise ValueError(f"{path}: a depth image has one channel, this one has shape {depth.shape}")
    return depth


def _read_test_image(scene_dir: Path, im_id: int, depth_scale: float):
    """``(rgb uint8 (H, W, 3), depth in mm or None)`` of a BOP test image."""
    candidates = (scene_dir / "rgb" / f"{im_id:06d}.{e}" for e in ("png", "jpg"))
    rgb_path = next((p for p in candidates if p.is_file()), None)
    if rgb_path is None:
        raise ValueError(f"{scene_dir}/rgb has no image {im_id:06d}")
    with Image.open(rgb_path) as im:
        image = np.asarray(im.convert("RGB"))
    depth_path = scene_dir / "depth" / f"{im_id:06d}.png"
    return image, _read_depth(depth_path, depth_scale) if depth_path.is_file() else None


def score_pose(errors: dict, R, t, gt: dict, K, points, symmetries) -> None:
    """Appends one estimate's MSSD, MSPD, ADD and ADD-S against the ground truth ``gt``."""
    errors["mssd"].append(bop.mssd(R, t, gt["R"], gt["t"], points, symmetries))
    errors["mspd"].append(bop.mspd(R, t, gt["R"], gt["t"], K, points, symmetries))
    errors["add"].append(bop.add(R, t, gt["R"], gt["t"], points))
    errors["adds"].append(bop.adds(R, t, gt["R"], gt["t"], points))


def score_missing(errors: dict) -> None:
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
                     progress: bool = False, given: str = "mask", segment: str = "grabcut",
                     depth: bool = False) -> dict:
    """:func:`evaluate_scene` over every scene of a BOP dataset (or one scene folder);
    per-instance errors are concatenated across scenes."""
    merged = None
    for scene_dir in scene_folders(path, split):
        scene_id = int(scene_dir.name) if scene_dir.name.isdigit() else 0
        result = evaluate_scene(rep, mesh, scene_dir, obj_id, scene_id=scene_id, extractor=extractor,
                                symmetries=symmetries, progress=progress, given=given, segment=segment, depth=depth)
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


# BOP19 targets only instances of which at least this fraction is visible
MIN_VISIBLE_FRACTION = 0.1


def _target_inputs(target, scene_entry: dict, detections) -> List[Tuple[Optional[int], dict]]:
    """``(ground-truth instance index or None, estimate keyword arguments)`` for each instance of a
    target: its ``inst_count`` best detections of the object (mask when the detection has one,
    else box), or, without detections, the visible boxes of its ground-truth instances that BOP19
    targets (visible fraction at least 10 %)."""
    if detections is not None:
        found = [d for d in detections.get((target.scene_id, target.im_id), []) if d.obj_id == target.obj_id]
        return [(None, {"mask": d.mask} if d.mask is not None and d.mask.any() else {"bbox": d.bbox})
                for d in found[:target.inst_count]]
    inputs = []
    for k, gt in enumerate(scene_entry["gt"]):
        if gt["obj_id"] != target.obj_id:
            continue
        info = scene_entry["gt_info"][k] if k < len(scene_entry["gt_info"]) else {}
        if info.get("visib_fract", 1.0) < MIN_VISIBLE_FRACTION:
            continue  # not a target instance of the BOP19 protocol
        box = info.get("bbox_visib", info.get("bbox_obj"))
        if box is None:
            raise ValueError(f"scene {target.scene_id} image {target.im_id}: scene_gt_info.json has no bbox_visib for "
                             f"instance {k}; give detections instead")
        if box[2] > 0 and box[3] > 0:  # a fully hidden instance has an empty box and no input
            inputs.append((k, {"bbox": [float(v) for v in box]}))
    return inputs


def estimate_targets(representations: Dict[int, object], dataset: "bop.BopDataset", targets: Sequence,
                     detections: Optional[dict] = None, extractors: Optional[Dict[int, object]] = None,
                     progress: bool = False, meshes: Optional[Dict[int, object]] = None) -> dict:
    """Estimates the instances of BOP targets (:func:`bop.read_test_targets`) of a core dataset.

    Each target's instances start from ``detections`` (:func:`bop.read_detections`; the
    object's ``inst_count`` best) or, when None, from the visible boxes of the ground truth.
    An image's time is the sum of its estimates' and the detector's time, as BOP counts it.
    With ``meshes`` (``{obj_id: Mesh}``, in mm) the estimates are RGB-D: each image's depth
    (:meth:`bop.BopDataset.depth_path`) picks and fits the pose
    (:func:`~pylocalize.objects.depth.estimate_with_depth`).

    Returns ``{"rows": BOP19 result rows (t in mesh units), "instances": [(target, ground-truth
    index or None, ObjectPose)], "images": number of images}``.
    """
    from tqdm import tqdm

    from pylocalize.io import read_image

    missing = sorted({t.obj_id for t in targets} - set(representations))
    if missing:
        raise ValueError(f"no representation for objects {missing}; onboard them first")
    if meshes is not None and sorted({t.obj_id for t in targets} - set(meshes)):
        raise ValueError(f"no mesh for objects {sorted({t.obj_id for t in targets} - set(meshes))}: RGB-D estimation "
                         "fits each object's mesh to the depth")
    scenes: Dict[int, dict] = {}
    rows_of_image: Dict[Tuple[int, int], List[dict]] = {}
    seconds: Dict[Tuple[int, int], float] = {}
    instances = []
    image, last_key = None, None
    for target in tqdm(sorted(targets), desc=f"{dataset.name} targets", disable=not progress, leave=False):
        if target.scene_id not in scenes:
            scenes[target.scene_id] = bop.read_scene(dataset.scene_folder(target.scene_id))
        entry = scenes[target.scene_id].get(target.im_id)
        if entry is None:
            raise ValueError(f"{dataset.scene_folder(target.scene_id)}: no image {target.im_id} in scene_camera.json, "
                             "which the targets list")
        key = (target.scene_id, target.im_id)
        if key not in seconds:
            found = detections.get(key, []) if detections is not None else []
            seconds[key] = max([0.0] + [d.time for d in found[:1]])  # the detector's time, once per image
        if key != last_key:  # targets are sorted by image: each image is read once
            image, last_key = read_image(dataset.image_path(*key)), key
            depth = _read_depth(dataset.depth_path(*key), entry["depth_scale"]) if meshes is not None else None
        rep = representations[target.obj_id]
        extractor = (extractors or {}).get(target.obj_id)
        for gt_index, region in _target_inputs(target, entry, detections):
            t0 = time.perf_counter()
            result = _estimate(rep, (meshes or {}).get(target.obj_id), image, entry["K"], depth, extractor=extractor,
                               **region)
            seconds[key] += time.perf_counter() - t0
            instances.append((target, gt_index, result))
            if result.success:
                rows_of_image.setdefault(key, []).append({"scene_id": target.scene_id, "im_id": target.im_id,
                                                          "obj_id": target.obj_id, "score": result.score,
                                                          "R": result.R, "t": result.t})
    rows = [dict(row, time=seconds[key]) for key, image_rows in rows_of_image.items() for row in image_rows]
    return {"rows": rows, "instances": instances, "images": len(seconds)}
