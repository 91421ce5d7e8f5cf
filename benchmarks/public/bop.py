#!/usr/bin/env python3
"""BOP core datasets (lmo, tless, tudl, icbin, itodd, hb, ycbv): the results CSV the BOP toolkit scores.

The dataset is found by name in a folder of BOP datasets (``<folder>/<name>/models``, its test
split, ``test_targets_bop19.json``; see ``pylocalize.objects.bop``). Every object the targets
name is onboarded from ``models/obj_NNNNNN.ply`` (FoundPose pipeline, dense SIFT patches) unless
``--reps`` already holds its representation ``obj_NNNNNN.pyloc``; each target instance is then
estimated from the test image and a 2D input: the challenge's default detections
(``--detections``, the CNOS JSON of the unseen-object task; an instance starts from the
detection's mask) or, without them, the visible ground-truth boxes (an oracle: say so beside the
numbers). The estimates are written as a BOP19 CSV (``OUT``, named ``METHOD_DATASET-test.csv`` as
the toolkit wants), checked as the toolkit's ``check_results_bop19.py`` checks it, and summarised:
instances estimated and seconds per image; with ground-truth boxes also AR_MSSD and AR_MSPD
(the toolkit adds AR_VSD and the official AR: ``python scripts/eval_bop19_pose.py
--result_filenames OUT``). ``--depth`` runs the RGB-D track: each test image's depth
(``depth/``) picks the hypothesis it supports best and fits it.

    python benchmarks/public/bop.py data/bop lmo --reps outputs/bop/reps \
        --detections data/bop/default_detections/cnos-fastsam_lmo-test.json [--limit 20] [--depth]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def representations(dataset, obj_ids, extractor, args) -> dict:
    """``{obj_id: ObjectRepresentation}``, loaded from ``--reps`` or onboarded there."""
    from pylocalize.objects import ObjectRepresentation, onboard
    from pylocalize.objects.evaluate import check_millimetres
    from pylocalize.render import load_mesh

    folder = Path(args.reps)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for obj_id in obj_ids:
        path = folder / f"obj_{obj_id:06d}.pyloc"
        if path.is_file():
            rep = ObjectRepresentation.load(path)
        else:
            with _common.phase(_common.logger, f"onboard object {obj_id}"):
                rep = onboard(load_mesh(dataset.mesh_path(obj_id)), extractor, num_views=args.views,
                              num_inplane=args.inplane, num_words=args.words, size=args.size, mesh_units="mm",
                              progress=args.progress)
            rep.save(path)
        check_millimetres(rep)
        if rep.extractor_name != args.extractor:
            raise ValueError(f"{path} was onboarded with {rep.extractor_name}; give --extractor {rep.extractor_name}"
                             " (and --weights for dinov2) or another --reps folder")
        out[obj_id] = rep
    return out


def oracle_recalls(dataset, result, models_info) -> dict:
    """AR_MSSD and AR_MSPD of the estimates made from ground-truth boxes (each estimate is
    scored against the instance whose box it started from; a failure as missing)."""
    from pylocalize.objects import bop
    from pylocalize.objects.evaluate import metric_points, score_missing, score_pose
    from pylocalize.render import load_mesh

    points, symmetries, scenes = {}, {}, {}
    errors = {"mssd": [], "mspd": [], "add": [], "adds": [], "vsd": []}
    diameters, widths = [], []
    for target, gt_index, estimate in result["instances"]:
        if target.obj_id not in points:
            points[target.obj_id] = metric_points(load_mesh(dataset.mesh_path(target.obj_id)))
            symmetries[target.obj_id] = bop.symmetry_transformations(models_info[target.obj_id])
        if target.scene_id not in scenes:
            scenes[target.scene_id] = bop.read_scene(dataset.scene_folder(target.scene_id))
        entry = scenes[target.scene_id][target.im_id]
        if estimate.success:
            score_pose(errors, estimate.R, estimate.t, entry["gt"][gt_index], entry["K"], points[target.obj_id],
                       symmetries[target.obj_id])
        else:
            score_missing(errors)
        diameters.append(float(models_info[target.obj_id]["diameter"]))
        widths.append(float(_common.image_width(dataset.image_path(target.scene_id, target.im_id))))
    errors.pop("vsd")
    return bop.average_recalls(errors, np.array(diameters), np.array(widths))


def main(args) -> int:
    from pylocalize.objects import bop
    from pylocalize.objects.cli import _patch_extractor
    from pylocalize.objects.evaluate import estimate_targets

    dataset = bop.core_dataset(args.datasets, args.dataset)
    targets = bop.read_test_targets(args.targets or dataset.folder / bop.TEST_TARGETS)
    images = _common.evenly(sorted({(t.scene_id, t.im_id) for t in targets}), args.limit)
    targets = [t for t in targets if (t.scene_id, t.im_id) in set(images)]
    detections = bop.read_detections(args.detections) if args.detections else None
    extractor = _patch_extractor(args.extractor, args.weights)
    reps = representations(dataset, sorted({t.obj_id for t in targets}), extractor, args)
    meshes = None
    if args.depth:
        from pylocalize.render import load_mesh

        meshes = {obj_id: load_mesh(dataset.mesh_path(obj_id)) for obj_id in reps}
    with _common.phase(_common.logger, f"estimate {len(targets)} targets in {len(images)} images"):
        result = estimate_targets(reps, dataset, targets, detections, {obj_id: extractor for obj_id in reps},
                                  progress=args.progress, meshes=meshes)
    if not result["rows"]:
        raise ValueError("no instance could be estimated: nothing to write (the BOP toolkit refuses an empty file)")
    out = Path(args.out or f"outputs/bop/pylocalize_{dataset.name}-test.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    bop.write_results_csv(out, result["rows"], units="mm")
    written = bop.check_results_csv(out)
    times = {(r["scene_id"], r["im_id"]): r["time"] for r in result["rows"]}
    row = {"dataset": dataset.name, "modality": "RGB-D" if args.depth else "RGB",
           "input": "detections" if detections is not None else "ground-truth boxes",
           "images": result["images"], "instances": len(result["instances"]), "estimated": written,
           "seconds_per_image": float(np.mean(list(times.values())))}
    columns = [("dataset", "dataset", "s"), ("modality", "modality", "s"), ("input", "input", "s"),
               ("images", "images", "d"),
               ("instances", "instances", "d"), ("estimated", "estimated", "d"),
               ("seconds_per_image", "s / image", ".2f")]
    if detections is None:
        models_info = bop.read_models_info(dataset.models_folder / "models_info.json")
        row.update(oracle_recalls(dataset, result, models_info))
        columns += [("AR_MSSD", "AR_MSSD", ".3f"), ("AR_MSPD", "AR_MSPD", ".3f")]
    _common.print_table([row], columns)
    print(f"\n{written} estimates written to {out} (BOP19 format, checked)")
    _common.write_json(out.with_suffix(".json"), row)
    return 0


def parser():
    p = _common.make_parser(__doc__.splitlines()[0], main, limit="test images")
    p.add_argument("datasets", help="the folder of BOP datasets (or the dataset's own folder)")
    p.add_argument("dataset", help="core dataset name: lmo, tless, tudl, icbin, itodd, hb, ycbv")
    p.add_argument("--detections", help="default detections (COCO-style JSON); default: ground-truth boxes")
    p.add_argument("--targets", help="targets file (default: <dataset>/test_targets_bop19.json)")
    p.add_argument("--reps", default="outputs/bop/reps", help="folder of object representations (made when missing)")
    p.add_argument("--out", help="results CSV (default: outputs/bop/pylocalize_<dataset>-test.csv)")
    p.add_argument("--views", type=_common.at_least(1), default=57, help="onboarding: Fibonacci viewpoints")
    p.add_argument("--inplane", type=_common.at_least(1), default=14, help="onboarding: in-plane turns per view")
    p.add_argument("--words", type=_common.at_least(2), default=2048, help="onboarding: visual words")
    p.add_argument("--size", type=_common.at_least(14), default=420, help="onboarding: template side (x14)")
    p.add_argument("--extractor", choices=["dense-sift", "dinov2"], default="dense-sift",
                   help="patch descriptors (dinov2, FoundPose's, needs the torch extra and --weights)")
    p.add_argument("--weights", help="a local DINOv2 model directory, for --extractor dinov2")
    p.add_argument("--depth", action="store_true",
                   help="the RGB-D track: each image's depth picks the hypothesis and fits it (needs depth/)")
    return p


if __name__ == "__main__":
    sys.exit(_common.main_of(parser()))
