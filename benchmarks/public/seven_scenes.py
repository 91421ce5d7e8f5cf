#!/usr/bin/env python3
"""7-Scenes: median errors and the rate of test frames within 5 cm and 5 degrees, per scene.

For each scene folder given (chess, fire, heads, office, pumpkin, redkitchen, stairs; layout in
``pylocalize.datasets.seven_scenes``): a pylocalize map of the frames of the training sequences
(``TrainSplit.txt``) with their poses, the frames of the test sequences (``TestSplit.txt``)
localized, the poses written to ``OUT/<scene>_poses.txt`` (``seq-XX/frame-XXXXXX.color.png qw qx qy
qz tx ty tz``, cam_from_world), the errors printed; a frame that did not localize counts as an
infinite error. The sequences are 1000 frames of video each: ``--map-stride 10`` keeps a map of a
few hundred frames for a quick run.

    python benchmarks/public/seven_scenes.py data/7scenes/chess data/7scenes/fire --out outputs/7scenes \
        [--limit 200 --map-stride 10]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

# the threshold the 7-Scenes papers report
THRESHOLD = (0.05, 5.0)


def main(args) -> int:
    from pylocalize.datasets.seven_scenes import read_seven_scenes_scene
    from pylocalize.geometry import write_pose_file
    from pylocalize.localization import evaluate_poses

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, report = [], {}
    for folder in map(Path, args.scenes):
        scene = read_seven_scenes_scene(folder, focal=args.focal)
        train = scene.train[::args.map_stride]
        queries = _common.evenly(scene.test, args.limit)
        if not queries:
            raise ValueError(f"{folder}: the test sequences have no frame with a finite pose")
        m = _common.build_map(folder, train, [scene.camera] * len(train), scene.cam_from_world, args)
        poses = _common.localize(m, folder, queries, [scene.camera] * len(queries), args)
        write_pose_file(out / f"{folder.name}_poses.txt", poses.items())
        scores = evaluate_poses({n: scene.cam_from_world[n] for n in queries}, poses, thresholds=(THRESHOLD,),
                                queries=queries)
        row = {"scene": folder.name, "queries": len(queries), "localized": len(poses), "map_images": len(train),
               "median_cm": 100 * scores["median_translation_m"], "median_deg": scores["median_rotation_deg"],
               "recall_5cm_5deg": 100 * scores[f"recall@({THRESHOLD[0]:g}m,{THRESHOLD[1]:g}deg)"]}
        rows.append(row)
        report[folder.name] = row
    if len(rows) > 1:
        rows.append({key: float(np.mean([r[key] for r in rows])) for key in ("median_cm", "median_deg",
                                                                             "recall_5cm_5deg")}
                    | {"scene": "average"})
    _common.print_table(rows, [("scene", "scene", "s"), ("map_images", "map images", "d"),
                               ("queries", "queries", "d"), ("localized", "localized", "d"),
                               ("median_cm", "median error (cm)", ".1f"), ("median_deg", "median error (deg)", ".2f"),
                               ("recall_5cm_5deg", "(5 cm, 5 deg) %", ".1f")])
    _common.write_json(out / "metrics.json", report)
    return 0


def parser():
    p = _common.make_parser(__doc__.splitlines()[0], main)
    p.add_argument("scenes", nargs="+", help="7-Scenes scene folders (each with TrainSplit.txt, TestSplit.txt)")
    p.add_argument("--out", default="outputs/7scenes", help="folder for the pose files and metrics.json")
    p.add_argument("--focal", type=float, default=525.0,
                   help="focal length of the RGB frames in pixels (DSAC* and ACE use 525; 585 is the depth camera's)")
    _common.add_localization_options(p)
    return p


if __name__ == "__main__":
    sys.exit(_common.main_of(parser()))
