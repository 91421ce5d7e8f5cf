#!/usr/bin/env python3
"""City-scale maps: how build, memory, load, retrieval and localization costs grow with the map.

Each size is a generated street-grid city (:mod:`pylocalize.datasets.city`) with about that
many map features, streamed to files and memory-mapped back (as features come from a store);
the map is built straight from those features and the true 3D points (no triangulation: the
cost measured is pylocalize's, not the generator's), saved, loaded memory-mapped, and queried
with simulated queries through :meth:`Map.localize_features`. Each size runs in a subprocess
of its own, so that its peak memory is its own.

Per size: index build time (CANN add + inverted-file training), peak resident memory (with
the pages of mapped files) and peak heap while building and saving (what the map itself
holds), loaded resident memory, save and load times, CANN recall@10 of the map's search method against exact CANN
scores on sampled queries, localization success within (0.25 m, 2 deg) and the median and
90th-percentile latency after features. Across sizes: the exponent b of each cost ~ N^b
(least squares in log-log), N the number of map features.

    python benchmarks/bench_city.py --sizes 1m 5m            # ~10 min on 2 cores
    python benchmarks/bench_city.py --sizes 1m 5m 20m 50m    # the issue's table (hours)
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

SIZES = {"250k": 250e3, "1m": 1e6, "5m": 5e6, "20m": 20e6, "50m": 50e6}
# Map features per block of the default city (16.8M features over 14 x 14 blocks, measured)
FEATURES_PER_BLOCK = 85_700
RECALL_K = 10


def _memory_mb(field: str) -> float:
    """``VmRSS`` (resident now), ``RssAnon`` (its heap part) or ``VmHWM`` (peak) of this process, MB
    (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def city_blocks(n_features: float):
    """``(blocks_x, blocks_y)`` of a city with about ``n_features`` map features."""
    blocks = max(1.0, n_features / FEATURES_PER_BLOCK)
    bx = max(1, round(math.sqrt(blocks)))
    return bx, max(1, math.ceil(blocks / bx))


def _centre(pose):
    return -pose[:, :3].T @ pose[:, 3]


def pose_within(cam_from_world, true, max_m: float = 0.25, max_deg: float = 2.0) -> bool:
    """Whether an estimated pose is within (``max_m``, ``max_deg``) of the true one."""
    from pylocalize.geometry.poses import rotation_error_deg

    return bool(np.linalg.norm(_centre(cam_from_world) - _centre(true)) < max_m
                and rotation_error_deg(cam_from_world[:, :3], true[:, :3]) < max_deg)


def _localize(m, queries, retrieval=None, stages=None):
    """Success within (0.25 m, 2 deg) and median and p90 latency (ms) after features;
    ``retrieval`` replaces the map's CANN search (as in :meth:`Map.localize_features`).
    ``stages``, a dict, receives the median ms of each stage (retrieval, matching, pose)."""
    ok, latency, per_stage = [], [], {}
    for i in range(len(queries)):
        result = m.localize_features(queries.keypoints[i], queries.descriptors[i], queries.camera, covariance=False,
                                     retrieval=retrieval)
        latency.append(sum(result.timings.values()))
        for stage, seconds in result.timings.items():
            per_stage.setdefault(stage, []).append(seconds)
        ok.append(result.success and pose_within(result.cam_from_world, queries.cam_from_world[i]))
    if stages is not None:
        stages.update({f"{stage}_ms": 1000 * float(np.median(v)) for stage, v in per_stage.items()})
    return float(np.mean(ok)), 1000 * float(np.median(latency)), 1000 * float(np.percentile(latency, 90))


def _retrieval_recall(m, queries, n: int) -> float:
    """Recall@10 of the map's search method against exact CANN on ``n`` queries."""
    from pylocalize.index.metrics import recall_at

    method = m.index.method
    sample = [queries.descriptors[i] for i in range(min(n, len(queries)))]
    found = np.stack([m.index.search(d, RECALL_K)[1] for d in sample])
    m.index.method = "exact"
    try:
        truth = np.stack([m.index.search(d, RECALL_K)[1] for d in sample])
    finally:
        m.index.method = method
    return recall_at(RECALL_K, found, truth)


class PeakHeap:
    """The largest ``RssAnon`` (heap: memory the kernel cannot drop, unlike the pages of
    mapped files) seen while it runs, sampled every ``period`` seconds on a thread; the
    kernel keeps only the peak of the whole resident set (``VmHWM``)."""

    def __init__(self, period: float = 0.2):
        import threading

        self.peak_mb, self._stop = _memory_mb("RssAnon"), threading.Event()
        self._thread = threading.Thread(target=self._run, args=(period,), daemon=True)
        self._thread.start()

    def _run(self, period):
        while not self._stop.wait(period):
            self.peak_mb = max(self.peak_mb, _memory_mb("RssAnon"))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak_mb, _memory_mb("RssAnon"))


def database_on_disk(city, folder: Path):
    """The city's database images streamed to files in ``folder`` and memory-mapped back,
    per image, as :class:`~pylocalize.datasets.city.FeatureImages`: the map is built from
    features on disk, as a real one is from a feature store, so that the memory measured is
    the map's and not the generated city's (20 GB of features at 50M would not fit beside
    the map on 24 GB)."""
    from pylocalize.datasets.city import FeatureImages

    fields = {"keypoints": (np.float32, (2,)), "descriptors": (np.uint8, (128,)), "point_ids": (np.int64, ())}
    counts = []
    files = {f: open(folder / f"{f}.bin", "wb") for f in fields}
    try:
        for image in city.iter_images(progress=True, workers=2):
            counts.append(len(image.point_ids))
            for f, (dtype, _) in fields.items():
                files[f].write(np.ascontiguousarray(getattr(image, f), dtype=dtype).tobytes())
    finally:
        for file in files.values():
            file.close()
    split = np.cumsum(counts)[:-1]
    per_image = {}
    for f, (dtype, tail) in fields.items():
        total = int(sum(counts))
        data = np.memmap(folder / f"{f}.bin", dtype=dtype, mode="r", shape=(total,) + tail) if total else \
            np.zeros((0,) + tail, dtype)
        per_image[f] = np.split(data, split)
    return FeatureImages(list(city.names), city.camera, city.cam_from_world.copy(), per_image["keypoints"],
                         per_image["descriptors"], per_image["point_ids"])


def generate(name: str, seed: int, folder: Optional[Path] = None):
    """The city of size ``name``, its database images (on disk in ``folder``, else in
    memory), and the first fields of its row."""
    from pylocalize.datasets.city import generate_city

    bx, by = city_blocks(SIZES[name])
    city = generate_city(blocks_x=bx, blocks_y=by, seed=seed)
    t0 = time.perf_counter()
    db = database_on_disk(city, folder) if folder is not None else city.database(progress=True, workers=2)
    row = {"size": name, "blocks": [bx, by], "images": len(db), "features": db.num_features,
           "generate_s": time.perf_counter() - t0}
    return city, db, row


def city_map(city, db):
    """The map of a city's database images, built straight from their features and true 3D points."""
    from pylocalize.localization import Map

    return Map(db.names, db.cameras, db.cam_from_world, db.keypoints, db.descriptors, db.point_ids, city.landmarks)


def run_size(name: str, n_queries: int, n_recall: int, seed: int, workdir: Path) -> dict:
    """One row of the table, in this process."""
    from pylocalize.localization import Map

    city, db, row = generate(name, seed, workdir)
    heap = PeakHeap()
    t0 = time.perf_counter()
    m = city_map(city, db)
    row["build_s"] = time.perf_counter() - t0
    row["method"] = m.index.method
    del db
    t0 = time.perf_counter()
    m.save(workdir / "map")
    row["save_s"] = time.perf_counter() - t0
    del m
    gc.collect()
    row["peak_heap_mb"] = heap.stop()  # of building and saving the map
    rss_before, anon_before = _memory_mb("VmRSS"), _memory_mb("RssAnon")
    t0 = time.perf_counter()
    m = Map.load(workdir / "map")
    row["load_s"] = time.perf_counter() - t0
    queries = city.queries(n_queries, seed=seed + 1)
    stages = {}
    row["success"], row["latency_ms"], row["latency_p90_ms"] = _localize(m, queries, stages=stages)
    row["stages"] = stages
    row["loaded_rss_mb"] = _memory_mb("VmRSS") - rss_before  # what the map costs once queried
    # of which heap (anonymous) memory: the rest is pages of mapped files, which the kernel
    # can drop and read again (the map's descriptors, the index's mapped layout)
    row["loaded_anon_mb"] = _memory_mb("RssAnon") - anon_before
    row["recall@10"] = _retrieval_recall(m, queries, n_recall)
    row["peak_rss_mb"] = _memory_mb("VmHWM")
    row["map_bytes"] = sum(f.stat().st_size for f in (workdir / "map").iterdir() if f.is_file())
    return row


def growth_exponents(rows) -> dict:
    """b of cost ~ N^b per column, by least squares on log-log (two sizes or more)."""
    n = np.log([r["features"] for r in rows])
    out = {}
    for key in ("build_s", "load_s", "peak_rss_mb", "peak_heap_mb", "latency_ms", "map_bytes"):
        values = np.array([r[key] for r in rows], dtype=float)
        if len(rows) >= 2 and (values > 0).all():
            out[key] = float(np.polyfit(n, np.log(values), 1)[0])
    return out


def print_table(rows, exponents) -> None:
    print(f"{'size':>5} {'images':>7} {'features':>11} {'build s':>8} {'save s':>7} {'load s':>7} "
          f"{'peak MB':>8} {'heap MB':>8} {'map MB':>8} {'recall@10':>9} {'success':>8} {'median ms':>9} {'p90 ms':>7}")
    for r in rows:
        print(f"{r['size']:>5} {r['images']:>7} {r['features']:>11,} {r['build_s']:>8.1f} {r['save_s']:>7.1f} "
              f"{r['load_s']:>7.2f} {r['peak_rss_mb']:>8.0f} {r.get('peak_heap_mb', float('nan')):>8.0f} "
              f"{r['map_bytes'] / 1e6:>8.0f} {r['recall@10']:>9.3f} "
              f"{100 * r['success']:>7.1f}% {r['latency_ms']:>9.1f} {r['latency_p90_ms']:>7.1f}")
    for r in rows:  # where the latency goes
        print(f"{r['size']:>5} median ms per stage: " + ", ".join(f"{k[:-3]} {v:.1f}" for k, v in r["stages"].items()))
    if exponents:
        print("growth exponents (cost ~ N^b): " + ", ".join(f"{k} {v:.2f}" for k, v in exponents.items()))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=["250k", "1m"])
    parser.add_argument("--queries", type=int, default=100, help="simulated queries per size")
    parser.add_argument("--recall-queries", type=int, default=20, help="queries scored against exact CANN")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="JSON file for the rows")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # run one size here, print its row as JSON
    args = parser.parse_args(argv)
    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(run_size(args.one, args.queries, args.recall_queries, args.seed, Path(tmp))))
        return 0
    rows = []
    for size in args.sizes:
        done = subprocess.run([sys.executable, __file__, "--one", size, "--queries", str(args.queries),
                               "--recall-queries", str(args.recall_queries), "--seed", str(args.seed)],
                              stdout=subprocess.PIPE, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print_table(rows[-1:], {})
    exponents = growth_exponents(rows)
    print()
    print_table(rows, exponents)
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "exponents": exponents}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
