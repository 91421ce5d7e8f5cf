#!/usr/bin/env python3
"""City-scale maps side by side with the classic peer: direct 2D-3D matching through FAISS.

On the same generated city as ``bench_city.py`` (same sizes, maps, simulated queries), each
query is localized three ways, all finishing with pylocalize's one PnP
(:func:`~pylocalize.geometry.absolute_pose.estimate_absolute_pose`, LO-RANSAC, 4 px, at least
12 inliers):

- pylocalize: :meth:`Map.localize_features` (CANN retrieval of 10 images, then 2D-3D matching
  against their features with the ratio test and mutual check);
- FAISS ``IndexIVFPQ`` direct matching (no image retrieval; Sattler et al.'s setting): every
  query feature searched among all map features that observe a 3D point, held as 32-byte
  product-quantisation codes (M = 32, 8 bits), ``nlist = 4 sqrt(N)`` lists trained on a
  sample; Lowe's ratio test (0.8) between the nearest feature and the nearest feature of
  another 3D point among the ``k`` nearest (features of one point look alike), at two
  ``nprobe`` values;
- FAISS ``IndexFlatL2`` (exact, float32) with the same ratio test, while it fits
  (``--exact-max-gb``) and on fewer queries (it scans every feature per query feature).

Per method: success within (0.25 m, 2 deg), median and 90th-percentile latency after
features (search + matching + PnP), memory of the search structure, build time. Memory of
FAISS: codes + 8-byte ids per feature + coarse centroids + PQ codebooks (+ a 4-byte point
id per feature for our look-up); of pylocalize: the CANN index (``memory_bytes``) plus the
map's descriptors and point ids that matching reads. Each size runs in its own process.

    python benchmarks/bench_city_peers.py --sizes 250k 1m --out city_peers.json
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_city  # noqa: E402  (benchmarks/ is not a package)

RATIO = 0.8
MIN_INLIERS = 12
CHUNK = 1 << 18  # features converted to float32 at a time when adding to FAISS


def import_faiss():
    """The faiss module, or None when it is not installed (the benchmark then says so)."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def observed_features(db):
    """Descriptors uint8 (n, 128) and 3D point ids int32 (n,) of every database feature with a point."""
    ids = np.concatenate(db.point_ids)
    keep = ids >= 0
    return np.concatenate(db.descriptors)[keep], ids[keep].astype(np.int32)


def _add_in_chunks(index, descriptors) -> None:
    for start in range(0, len(descriptors), CHUNK):
        index.add(np.ascontiguousarray(descriptors[start:start + CHUNK], dtype=np.float32))


def build_ivfpq(faiss, descriptors, seed: int):
    """An ``IndexIVFPQ`` (M = 32 bytes, 8 bits, nlist = 4 sqrt(N)) of ``descriptors``: the
    index, its build seconds (training + adding) and its resident bytes."""
    n, dim = descriptors.shape
    nlist = max(1, int(round(4 * math.sqrt(n))))
    index = faiss.IndexIVFPQ(faiss.IndexFlatL2(dim), dim, nlist, 32, 8)
    index.cp.seed = index.pq.cp.seed = seed
    sample = np.sort(np.random.default_rng(seed).choice(n, min(n, 64 * nlist), replace=False))
    t0 = time.perf_counter()
    index.train(np.ascontiguousarray(descriptors[sample], dtype=np.float32))
    _add_in_chunks(index, descriptors)
    seconds = time.perf_counter() - t0
    ids_bytes = 8  # faiss keeps an int64 id per stored code
    memory = n * (index.code_size + ids_bytes + 4) + 4 * (nlist * dim + index.pq.centroids.size())
    return index, seconds, memory


def build_flat(faiss, descriptors):
    """An exact ``IndexFlatL2`` (float32) of ``descriptors``, its build seconds and bytes."""
    t0 = time.perf_counter()
    index = faiss.IndexFlatL2(descriptors.shape[1])
    _add_in_chunks(index, descriptors)
    return index, time.perf_counter() - t0, descriptors.shape[0] * (4 * descriptors.shape[1] + 4)


def ratio_matches(distances, rows, point_ids, ratio: float = RATIO):
    """Query features that pass the ratio test, and their 3D point ids.

    ``distances`` and ``rows`` are FAISS's (n, k) answers (squared L2, -1 for none). The
    second neighbour is the nearest of *another* 3D point; when all k neighbours observe the
    same point, the k-th distance (a lower bound of that one) stands in, which can only
    reject more.
    """
    found = rows[:, 0] >= 0
    pid = np.where(rows >= 0, point_ids[np.maximum(rows, 0)], -1)
    other = (pid != pid[:, :1]) & (rows >= 0)
    second = np.where(other.any(1), distances[np.arange(len(rows)), other.argmax(1)], distances[:, -1])
    keep = found & (distances[:, 0] < ratio * ratio * second)
    return np.flatnonzero(keep), pid[keep, 0]


def localize_direct(index, point_ids, points3D, queries, n: int, k: int) -> dict:
    """Direct 2D-3D matching of the first ``n`` queries through ``index``, then PnP."""
    from pylocalize.geometry.absolute_pose import estimate_absolute_pose

    ok, latency, matches = [], [], []
    for i in range(min(n, len(queries))):
        t0 = time.perf_counter()
        distances, rows = index.search(np.ascontiguousarray(queries.descriptors[i], dtype=np.float32), k)
        query_ids, pids = ratio_matches(distances, rows, point_ids)
        pose = None
        if len(query_ids) >= MIN_INLIERS:
            pose = estimate_absolute_pose(queries.keypoints[i][query_ids].astype(np.float64), points3D[pids],
                                          queries.camera, 4.0, seed=i)
        latency.append(time.perf_counter() - t0)
        matches.append(len(query_ids))
        ok.append(pose is not None and pose.num_inliers >= MIN_INLIERS
                  and bench_city.pose_within(pose.cam_from_world, queries.cam_from_world[i]))
    return {"queries": len(ok), "success": float(np.mean(ok)), "latency_ms": 1000 * float(np.median(latency)),
            "latency_p90_ms": 1000 * float(np.percentile(latency, 90)), "matches": float(np.median(matches))}


def _pylocalize_row(city, db, queries) -> dict:
    t0 = time.perf_counter()
    m = bench_city.city_map(city, db)
    build = time.perf_counter() - t0
    success, median, p90 = bench_city._localize(m, queries)
    held = sum(d.nbytes for d in m.descriptors) + sum(p.nbytes for p in m.point_ids)
    return {"method": f"pylocalize CANN {m.index.method} top 10", "indexed": len(m.index), "build_s": build,
            "memory_bytes": m.index.memory_bytes + held, "index_bytes": m.index.memory_bytes,
            "queries": len(queries), "success": success, "latency_ms": median, "latency_p90_ms": p90}


def run_size(name: str, args) -> dict:
    """Every method's row for one city size, in this process."""
    import pylocalize

    faiss = import_faiss()
    pylocalize.set_num_threads(args.threads)
    city, db, size_row = bench_city.generate(name, args.seed)
    queries = city.queries(args.queries, seed=args.seed + 1)
    rows = [_pylocalize_row(city, db, queries)]
    if faiss is None:
        print("faiss is not installed (pip install faiss-cpu): FAISS rows skipped", file=sys.stderr)
        return {**size_row, "rows": rows, "faiss": None}
    faiss.omp_set_num_threads(args.threads)
    descriptors, point_ids = observed_features(db)
    del db
    index, build, memory = build_ivfpq(faiss, descriptors, args.seed)
    for nprobe in args.nprobe:
        index.nprobe = nprobe
        result = localize_direct(index, point_ids, city.landmarks, queries, len(queries), args.k)
        rows.append({"method": f"FAISS IVFPQ32 nlist {index.nlist} nprobe {nprobe}", "indexed": index.ntotal,
                     "build_s": build, "memory_bytes": memory, **result})
    del index
    if descriptors.shape[0] * 516 <= args.exact_max_gb * 1e9:
        index, build, memory = build_flat(faiss, descriptors)
        result = localize_direct(index, point_ids, city.landmarks, queries, args.exact_queries, args.k)
        rows.append({"method": "FAISS flat (exact)", "indexed": index.ntotal, "build_s": build,
                     "memory_bytes": memory, **result})
    return {**size_row, "rows": rows, "faiss": faiss.__version__}


def print_rows(result) -> None:
    print(f"\n{result['size']}: {result['images']} images, {result['features']:,} map features")
    print(f"{'method':<42} {'indexed':>10} {'B/feat':>7} {'MB':>7} {'build s':>8} {'queries':>7} {'success':>8} "
          f"{'median ms':>9} {'p90 ms':>7}")
    for r in result["rows"]:
        print(f"{r['method']:<42} {r['indexed']:>10,} {r['memory_bytes'] / r['indexed']:>7.0f} "
              f"{r['memory_bytes'] / 1e6:>7.0f} {r['build_s']:>8.1f} {r['queries']:>7} {100 * r['success']:>7.1f}% "
              f"{r['latency_ms']:>9.1f} {r['latency_p90_ms']:>7.1f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", choices=list(bench_city.SIZES), default=["250k", "1m"])
    parser.add_argument("--queries", type=int, default=100, help="simulated queries per size")
    parser.add_argument("--exact-queries", type=int, default=20, help="queries of the exact FAISS search")
    parser.add_argument("--exact-max-gb", type=float, default=4.0, help="largest exact FAISS index built")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--k", type=int, default=8, help="neighbours searched per query feature")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads of pylocalize and of FAISS (OpenMP, which spins badly on shared cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="JSON file for the rows")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # run one size here, print its rows as JSON
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_size(args.one, args)))
        return 0
    if import_faiss() is None:
        print("faiss is not installed (pip install faiss-cpu): only pylocalize's rows will be measured")
    results = []
    for size in args.sizes:
        forwarded = list(argv if argv is not None else sys.argv[1:])
        done = subprocess.run([sys.executable, __file__, *forwarded, "--one", size], stdout=subprocess.PIPE,
                              text=True, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print_rows(results[-1])
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
