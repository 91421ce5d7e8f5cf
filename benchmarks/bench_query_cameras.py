#!/usr/bin/env python3
"""Where a query's intrinsics come from, and what it costs in pose accuracy (issue 18, items 2-3).

Strecha (lidar poses, 1536x1024, true focal length 1380 px): held-out images copied away from
their ``.camera`` files (so without calibration and without EXIF) are localized with the guess
of 1.2 x the larger side kept fixed, with that guess's focal length estimated with the pose
(the default for a guessed camera), and with the true camera.

Lund (29 iPhone photos, EXIF 35 mm-equivalent focal length 35 mm = 996 px): an SfM map of 27,
the other two localized with the map's calibrated camera (picked by the EXIF device), with the
EXIF focal length, and with the EXIF focal length estimated with the pose. No ground truth:
inliers, and the distance between camera centres in % of the map's extent.

    python benchmarks/bench_query_cameras.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

from pylocalize.geometry import Camera
from pylocalize.localization import Map, load_poses, pose_error, read_strecha_camera
from pylocalize.localization.map import QueryCamera

STRECHA = {"entry-P10": ["0004.jpg", "0007.jpg"], "fountain-P11": ["0003.jpg", "0008.jpg"],
           "castle-P19": ["0005.jpg", "0012.jpg"]}
LUND_HELD_OUT = ["10.jpg", "20.jpg"]


def _centre(pose):
    return -pose[:, :3].T @ pose[:, 3]


def strecha(data: Path, work: Path) -> None:
    print(f"{'query':<24} {'camera':<22} {'inliers':>9} {'centre m':>9} {'rot deg':>8} {'focal px':>9}")
    for scene, queries in STRECHA.items():
        m = Map.from_strecha(data / "strecha" / scene, exclude=queries, max_features=4000)
        truth = load_poses(data / "strecha" / scene)
        for name in queries:
            query = work / f"{scene}-{name}"  # away from gt_dense_cameras/: no calibration, no EXIF
            shutil.copy(data / "strecha" / scene / "images" / name, query)
            K = read_strecha_camera(data / "strecha" / scene / "gt_dense_cameras" / f"{name}.camera")[0]
            runs = {"guess, kept fixed": dict(estimate_focal=False), "guess, focal estimated": {},
                    "true camera": dict(camera=Camera.from_K(K, 1536, 1024))}
            for label, options in runs.items():
                r = m.localize(query, **options)
                if not r.success:
                    print(f"{scene + '/' + name:<24} {label:<22} failed: {r.reason}")
                    continue
                t, a = pose_error(r.cam_from_world, truth[name])
                print(f"{scene + '/' + name:<24} {label:<22} {r.num_inliers:>4}/{r.num_matches:<4} {t:>9.4f} "
                      f"{a:>8.3f} {r.camera.K[0, 0]:>9.1f}")


def lund(data: Path, work: Path) -> None:
    images = work / "lund"
    images.mkdir()
    for path in sorted((data / "lund" / "images").glob("*.jpg")):
        if path.name not in LUND_HELD_OUT:
            shutil.copy(path, images / path.name)
    m = Map.from_images(images, max_features=4000)
    extent = np.ptp(np.array([_centre(P) for P in m.cam_from_world]), axis=0).max()
    print(f"\nLund: {m}, {len(set(m.cameras))} distinct cameras, devices {set(m.devices)}")
    for name in LUND_HELD_OUT:
        path = data / "lund" / "images" / name
        exif, note = Camera.from_exif(path)
        runs = {"map camera": {}, "EXIF focal": dict(camera=QueryCamera(exif, note, False)),
                "EXIF focal, estimated": dict(camera=QueryCamera(exif, note, False), estimate_focal=True)}
        reference = None
        for label, options in runs.items():
            r = m.localize(path, **options)
            if not r.success:
                print(f"{name} {label:<22} failed: {r.reason}")
                continue
            reference = _centre(r.cam_from_world) if reference is None else reference
            off = np.linalg.norm(_centre(r.cam_from_world) - reference) / extent
            print(f"{name} {label:<22} {r.num_inliers:>4}/{r.num_matches:<4} inliers, f {r.camera.K[0, 0]:6.1f} px, "
                  f"centre {100 * off:5.1f} % of the map extent from the map-camera pose ({r.camera_source})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        strecha(args.data, Path(work))
        lund(args.data, Path(work))


if __name__ == "__main__":
    main()
