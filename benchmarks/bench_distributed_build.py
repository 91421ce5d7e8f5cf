#!/usr/bin/env python3
"""Map building and object onboarding over Ray against the local runs (issue 20).

- Feature extraction of a map build: ``--images`` (default the Strecha castle-P19 photos of
  ``../shared/data``, 19 x 1536x1024 JPEG; else the demo's courtyard exported as PNG files)
  by the builders' local thread pool (``_extract_all``) against
  :class:`~pylocalize.distributed.RayExtraction` (Ray Data, ``--cpus`` extractor actors,
  feature shards written and read back). The Ray time is end to end: actor pool start, shard
  files, reading them back. Images per second, and whether the features are the same.
- Onboarding: :func:`pylocalize.objects.onboard` of the generated textured box on
  ``--cpus`` threads against ``executor=RayExecutor()`` (Ray tasks); seconds, the templates'
  share of them, and whether the representations' arrays are the same.

Ray is started in this process with ``--cpus`` CPUs. Each path runs ``--repeats`` times, the
fastest counts. Prints the load average (the machine is shared).

    PYTHONPATH=. python benchmarks/bench_distributed_build.py [--images DIR] [--cpus 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
from _timing import best_of

STRECHA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "strecha" / "castle-P19" / "images"


def _image_files(folder, work: Path) -> list:
    from pylocalize.io import image_files

    if folder is None and STRECHA.is_dir():
        folder = STRECHA
    if folder is not None:
        return image_files(Path(folder))
    from pylocalize.datasets.synthetic import courtyard_scene

    scene = courtyard_scene(24, seed=0, width=800, height=600)
    scene.export(work / "courtyard", image_format="png")
    return [work / "courtyard" / "images" / name for name in scene.names]


def _same_features(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))


def _extraction(files, work: Path, args) -> None:
    from pylocalize.distributed import RayExtraction
    from pylocalize.localization.map import _extract_all

    t_local, local = best_of(lambda: _extract_all(files, args.max_features, "opencv", False), args.repeats)
    ray_run = RayExtraction(folder=work / "shards", actors=args.cpus)
    t_ray, remote = best_of(lambda: _extract_all(files, args.max_features, "opencv", False, extraction=ray_run),
                          args.repeats)
    n = len(files)
    features = sum(len(f[0]) for f in local)
    print(f"feature extraction: {n} images from {files[0].parent}, {features} features; the same features: "
          f"{_same_features(local, remote)}")
    print(f"  {'path':<44} {'seconds':>8} {'images/s':>9} {'vs local':>9}")
    print(f"  {'local thread pool (' + str(min(4, os.cpu_count() or 1)) + ' threads)':<44} {t_local:>8.2f} "
          f"{n / t_local:>9.2f} {1.0:>9.2f}")
    print(f"  {'Ray Data, ' + str(args.cpus) + ' actors, end to end':<44} {t_ray:>8.2f} {n / t_ray:>9.2f} "
          f"{t_local / t_ray:>9.2f}")


def _same_representation(a, b) -> bool:
    names = ("template_poses", "template_K", "patch_template", "patch_xy", "patch_xyz", "patch_desc",
             "template_counts")
    return all(np.array_equal(getattr(a, name), getattr(b, name)) for name in names)


def _onboarding(args) -> None:
    from pylocalize.datasets.synthetic import textured_box_object
    from pylocalize.distributed import RayExecutor
    from pylocalize.objects import onboard

    mesh = textured_box_object(0)
    options = {"num_views": args.views, "num_inplane": args.inplane, "size": 224, "num_words": 256,
               "mesh_units": "mm"}
    t_local, local = best_of(lambda: onboard(mesh, num_workers=args.cpus, **options), args.repeats)
    t_ray, remote = best_of(lambda: onboard(mesh, executor=RayExecutor(), **options), args.repeats)
    print(f"onboarding: {local}; the same representation: {_same_representation(local, remote)}")
    print(f"  {'path':<44} {'seconds':>8} {'templates s':>12} {'vs local':>9}")
    for name, rep, seconds in ((f"local, {args.cpus} threads", local, t_local),
                               (f"Ray tasks, {args.cpus} CPUs", remote, t_ray)):
        print(f"  {name:<44} {seconds:>8.2f} {rep.onboarding_seconds['templates']:>12.2f} "
              f"{t_local / seconds:>9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", help="image folder (default: Strecha castle-P19, else the demo's courtyard)")
    parser.add_argument("--max-features", type=int, default=4000)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster (one actor or task each)")
    parser.add_argument("--views", type=int, default=20, help="onboarding: Fibonacci viewpoints")
    parser.add_argument("--inplane", type=int, default=4, help="onboarding: in-plane rotations per viewpoint")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import ray

    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}, {os.cpu_count()} cores")
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            files = _image_files(args.images, Path(tmp))
            _extraction(files, Path(tmp), args)
        _onboarding(args)
    finally:
        ray.shutdown()
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
