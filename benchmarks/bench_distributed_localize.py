#!/usr/bin/env python3
"""Batch localization over Ray against the local ``Map.localize_many`` (issue 20).

The demo's courtyard (``pylocalize demo``: 24 views, 800x600, 3000 features a view) is built
into a saved map, and ``--queries`` held-out views are rendered to PNG files. The same queries,
with the scene's camera, are then localized

- locally: ``Map.localize_many`` of the loaded map on ``--workers`` threads;
- over Ray: ``localize_many_ray`` on a Ray cluster started in this process with ``--cpus``
  CPUs, one actor a CPU, each loading the saved map (memory-mapped).

Each path runs ``--repeats`` times; the fastest run counts. The Ray time is end to end (the
pool of actors starts with each batch: worker processes, imports, map loads); the start alone
is timed too, so that the steady rate of the pool shows. Prints queries per second, the ratio
Ray / local and the load average (the machine is shared); and how the Ray results compare
(outcomes, inliers, largest pose difference) with the local batch and with the local run of
each query on a thread of its own (RANSAC's random state is per thread; each actor query
starts from a fresh one).

    PYTHONPATH=. python benchmarks/bench_distributed_localize.py [--queries 24] [--cpus 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from _timing import best_of  # benchmarks/ is not a package: from the script's own folder


def _scene(work: Path, num_queries: int):
    """(map folder, query files, K) of the demo's courtyard."""
    from PIL import Image

    from pylocalize.datasets.synthetic import courtyard_scene
    from pylocalize.localization import Map

    scene = courtyard_scene(24, seed=0, width=800, height=600)
    Map.from_views(scene.images, scene.K, scene.cam_from_world, scene.names, max_features=3000).save(work / "map")
    images, _ = scene.render(scene.query_poses(num_queries, seed=1))
    files = []
    for i, image in enumerate(images):
        files.append(work / f"query_{i:03d}.png")
        Image.fromarray(image).save(files[-1])
    return work / "map", files, scene.K


def _compare(a, b) -> str:
    """Whether two runs' outcomes agree, and their largest pose difference."""
    outcomes = len(a) == len(b) and all(x.success == y.success for x, y in zip(a, b))
    both = [np.abs(x.cam_from_world - y.cam_from_world).max() for x, y in zip(a, b) if x.success and y.success]
    inliers = sum(x.num_inliers != y.num_inliers for x, y in zip(a, b))
    return (f"outcomes {'the same' if outcomes else 'DIFFER'}, largest pose difference {max(both, default=0):.1e}, "
            f"{inliers} inlier counts differ")


def _pool_start(ray, map_dir: Path, actors: int, repeats: int) -> float:
    """Fastest seconds to start ``actors`` actors with the map loaded, and end them."""
    from pylocalize.distributed.batch import _start_pool

    def start_and_end():
        pool = _start_pool(ray, map_dir.absolute(), actors, 1, 3, 3, 300.0, {})
        for actor in pool:
            ray.kill(actor, no_restart=True)
        while ray.available_resources().get("CPU", 0) < actors:  # freed before the next run
            time.sleep(0.01)

    return best_of(start_and_end, repeats)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=24)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster (one actor each)")
    parser.add_argument("--workers", type=int, default=2, help="threads of the local localize_many")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import ray

    from pylocalize.distributed.batch import localize_many_ray
    from pylocalize.localization import Map

    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        map_dir, files, K = _scene(Path(tmp), args.queries)
        m = Map.load(map_dir)
        t_local, local = best_of(lambda: m.localize_many(files, K, workers=args.workers), args.repeats)
        # RANSAC's random state is per thread: in a batch, a query's pose also depends on the
        # queries its thread ran before; each actor query starts from a fresh state
        alone = [m.localize_many([f], K)[0] for f in files]
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        try:
            t_ray, remote = best_of(lambda: localize_many_ray(map_dir, files, K, actors=args.cpus), args.repeats)
            t_start = _pool_start(ray, map_dir, args.cpus, args.repeats)
        finally:
            ray.shutdown()
    n = len(files)
    print(f"{m}; {n} queries, {sum(r.success for r in local)} localized")
    print(f"{'path':<44} {'seconds':>8} {'queries/s':>10} {'vs local':>9}")
    print(f"{'local localize_many, ' + str(args.workers) + ' threads':<44} {t_local:>8.2f} {n / t_local:>10.2f} "
          f"{1.0:>9.2f}")
    print(f"{'Ray, ' + str(args.cpus) + ' actors, end to end':<44} {t_ray:>8.2f} {n / t_ray:>10.2f} "
          f"{t_local / t_ray:>9.2f}")
    steady = t_ray - t_start
    print(f"{'Ray, without the pool start (' + format(t_start, '.2f') + ' s)':<44} {steady:>8.2f} "
          f"{n / steady:>10.2f} {t_local / steady:>9.2f}")
    print(f"Ray vs the local batch: {_compare(remote, local)}")
    print(f"Ray vs the local run of each query on a thread of its own: {_compare(remote, alone)}")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
