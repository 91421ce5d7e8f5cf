#!/usr/bin/env python3
"""Aachen Day-Night v1.1 and other datasets in hloc's layout: the pose file visuallocalization.net scores.

The dataset folder (layout in ``pylocalize.datasets.hloc_layout``) gives the database images, a
COLMAP model of them and the query lists ``queries/*_with_intrinsics.txt``. A pylocalize map is
built from the model's cameras and poses (points triangulated from pylocalize's own features);
every query is localized with its camera from the list; the poses are written in the format of
the benchmark's submission page (``name qw qx qy qz tx ty tz``, name without folders,
cam_from_world), checked against it, and the count of localized queries printed per condition
(day, night). The ground truth is withheld: upload OUT to https://www.visuallocalization.net for
the (0.25 m, 2 deg) / (0.5 m, 5 deg) / (5 m, 10 deg) rates. With ``--ground-truth`` (a pose file of
the queries, e.g. of a dataset whose ground truth is public), they are printed here as well.

    python benchmarks/public/aachen.py data/aachen_v1.1 --out outputs/aachen_v1.1_pylocalize.txt [--limit 100]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

# visuallocalization.net's thresholds for Aachen Day-Night (metres, degrees)
THRESHOLDS = ((0.25, 2.0), (0.5, 5.0), (5.0, 10.0))


def main(args) -> int:
    from pylocalize.datasets.hloc_layout import check_submission, read_hloc_dataset, write_submission
    from pylocalize.localization import Map, evaluate_poses
    from pylocalize.localization.evaluate import load_poses

    dataset = read_hloc_dataset(args.dataset, model=args.model, query_lists=args.queries or ())
    queries = {condition: _common.evenly(sorted(cameras), args.limit) for condition, cameras in dataset.queries.items()}
    cameras = dataset.query_cameras
    with _common.phase(_common.logger, f"map of the model {dataset.model_folder}") as done, _common.quiet_colmap():
        m = Map.from_colmap(dataset.model_folder, dataset.image_folder, max_features=args.max_features,
                            progress=args.progress)
        done.outcome = f"{len(m.names)} images, {len(m.points3D)} points"
    names = [n for condition in queries.values() for n in condition]
    poses = _common.localize(m, dataset.image_folder, names, [cameras[n] for n in names], args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_submission(out, poses, folders=args.name_folders)
    written, _ = check_submission(out, names, folders=args.name_folders)
    truth = load_poses(args.ground_truth) if args.ground_truth else None
    rows = []
    for condition, names in queries.items():
        row = {"condition": condition, "queries": len(names), "localized": sum(n in poses for n in names)}
        if truth is not None:
            scores = evaluate_poses(truth, {n: poses[n] for n in names if n in poses}, THRESHOLDS, queries=names)
            for tm, rd in THRESHOLDS:
                row[f"{tm:g}m,{rd:g}deg"] = 100 * scores[f"recall@({tm:g}m,{rd:g}deg)"]
        rows.append(row)
    columns = [("condition", "condition", "s"), ("queries", "queries", "d"), ("localized", "localized", "d")]
    if truth is not None:
        columns += [(f"{tm:g}m,{rd:g}deg", f"({tm:g} m, {rd:g} deg) %", ".1f") for tm, rd in THRESHOLDS]
    _common.print_table(rows, columns)
    print(f"\n{written} poses written to {out} in the visuallocalization.net format")
    return 0


def parser():
    p = _common.make_parser(__doc__.splitlines()[0], main, limit="queries per condition")
    p.add_argument("dataset", help="the dataset folder (images_upright/, 3D-models/, queries/)")
    p.add_argument("--out", default="outputs/aachen_v1.1_pylocalize.txt", help="the pose file to submit")
    p.add_argument("--model", help="the COLMAP model of the database images (default: found in the folder)")
    p.add_argument("--queries", nargs="+", help="query lists with intrinsics (default: queries/*_with_intrinsics.txt)")
    p.add_argument("--ground-truth", help="a pose file of the queries, to score them here")
    p.add_argument("--name-folders", type=_common.at_least(0), default=0,
                   help="folders kept in the submitted names (0: the file name, as Aachen; 1: RobotCar's rear/x.jpg)")
    _common.add_localization_options(p, map_stride=False)
    return p


if __name__ == "__main__":
    sys.exit(_common.main_of(parser()))
