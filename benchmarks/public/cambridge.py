#!/usr/bin/env python3
"""Cambridge Landmarks: median position and orientation errors per scene, the table the papers report.

For each scene folder given (KingsCollege, OldHospital, ShopFacade, StMarysChurch, GreatCourt,
...; layout in ``pylocalize.datasets.cambridge``): a pylocalize map of the training frames with
their poses, cameras from the scene's ``reconstruction.nvm``; every test frame localized with
its camera; the poses written to ``OUT/<scene>_poses.txt`` (``name qw qx qy qz tx ty tz``,
cam_from_world); the median errors printed, a frame that did not localize counting as an
infinite error.

    python benchmarks/public/cambridge.py data/Cambridge/KingsCollege data/Cambridge/ShopFacade \
        --out outputs/cambridge [--limit 50 --map-stride 5]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def main(args) -> int:
    from pylocalize.datasets.cambridge import read_cambridge_scene
    from pylocalize.geometry import write_pose_file
    from pylocalize.localization import evaluate_poses

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, report = [], {}
    for folder in map(Path, args.scenes):
        scene = read_cambridge_scene(folder)
        train = scene.train[::args.map_stride]
        queries = _common.evenly(scene.test, args.limit)
        if not queries:
            raise ValueError(f"{folder}: the test split has no frame with a camera")
        m = _common.build_map(folder, train, [scene.cameras[n] for n in train], scene.cam_from_world, args)
        poses = _common.localize(m, folder, queries, [scene.cameras[n] for n in queries], args)
        write_pose_file(out / f"{folder.name}_poses.txt", poses.items())
        scores = evaluate_poses({n: scene.cam_from_world[n] for n in queries}, poses, thresholds=(),
                                queries=queries)
        row = {"scene": folder.name, "queries": len(queries), "localized": len(poses), "map_images": len(train),
               "median_cm": 100 * scores["median_translation_m"], "median_deg": scores["median_rotation_deg"]}
        rows.append(row)
        report[folder.name] = row
    if len(rows) > 1:
        rows.append({"scene": "average", "median_cm": float(np.mean([r["median_cm"] for r in rows])),
                     "median_deg": float(np.mean([r["median_deg"] for r in rows]))})
    _common.print_table(rows, [("scene", "scene", "s"), ("map_images", "map images", "d"),
                               ("queries", "queries", "d"), ("localized", "localized", "d"),
                               ("median_cm", "median error (cm)", ".1f"), ("median_deg", "median error (deg)", ".2f")])
    _common.write_json(out / "metrics.json", report)
    return 0


def parser():
    p = _common.make_parser(__doc__.splitlines()[0], main)
    p.add_argument("scenes", nargs="+", help="Cambridge Landmarks scene folders")
    p.add_argument("--out", default="outputs/cambridge", help="folder for the pose files and metrics.json")
    _common.add_localization_options(p)
    return p


if __name__ == "__main__":
    sys.exit(_common.main_of(parser()))
