#!/usr/bin/env python3
"""The inverted file's coarse quantizer: how often the two-level assignment finds a row's
true nearest centroid, and what it costs against the exact (flat) one and FAISS.

Centroids are k-means centroids of generated-city SIFT-like descriptors
(:mod:`pylocalize.datasets.city`), as a city map's ``CANNIndex`` trains them; rows are
descriptors of simulated query images of the same city. Per number of lists: the share of
rows whose nearest centroid the two-level quantizer finds (top-1), the overlap of its 4
nearest with the true 4 (what a query with nprobe 4 probes), the mean squared distance
ratio, and the time of pylocalize flat, pylocalize two-level, FAISS ``IndexFlatL2`` and
FAISS ``IndexHNSWFlat`` (M 32, efSearch 64: FAISS's own approximate coarse quantizer) on the
same rows, all on every core.

    python benchmarks/bench_coarse_quantizer.py                  # ~3 min on 2 cores
    python benchmarks/bench_coarse_quantizer.py --lists 8192 --group-probes 4 8 16
"""

from __future__ import annotations

import argparse

import numpy as np
from _timing import best_of


def city_descriptors(seed: int):
    """Database and query descriptors (float32) of a generated city of 3 x 3 blocks."""
    from pylocalize.datasets.city import generate_city

    city = generate_city(blocks_x=3, blocks_y=3, seed=seed)
    db = city.database(workers=2)
    queries = city.queries(40, seed=seed + 1)
    return (np.concatenate(db.descriptors).astype(np.float32),
            np.concatenate(queries.descriptors).astype(np.float32))


def run(nlist: int, group_probe: int, x: np.ndarray, rows: np.ndarray, seed: int) -> dict:
    from pylocalize.index.knn import CoarseQuantizer, assign, kmeans

    rng = np.random.default_rng(seed)
    centroids, _ = kmeans(x[rng.choice(len(x), min(len(x), 32 * nlist), replace=False)], nlist, iterations=6,
                          seed=seed)
    quantizer = CoarseQuantizer(centroids, group_probe=group_probe)
    t_flat, (exact, exact_d) = best_of(lambda: assign(rows, centroids, 4), 2)
    t_two, (found, found_d) = best_of(lambda: quantizer.assign(rows, 4), 2)
    row = {"nlist": nlist, "group_probe": group_probe, "rows": len(rows), "two_level": quantizer.two_level,
           "top1": float(np.mean(found[:, 0] == exact[:, 0])),
           "top4_overlap": float(np.mean([len(set(a) & set(b)) / 4 for a, b in zip(found, exact)])),
           "d2_ratio": float(found_d[:, 0].mean() / exact_d[:, 0].mean()),
           "flat_s": t_flat, "two_level_s": t_two}
    try:
        import faiss
    except ImportError:
        return row
    flat = faiss.IndexFlatL2(centroids.shape[1])
    flat.add(centroids)
    row["faiss_flat_s"], _ = best_of(lambda: flat.search(rows, 4), 2)
    hnsw = faiss.IndexHNSWFlat(centroids.shape[1], 32)
    hnsw.add(centroids)
    hnsw.hnsw.efSearch = 64
    row["faiss_hnsw_s"], (_, h) = best_of(lambda: hnsw.search(rows, 4), 2)
    row["faiss_hnsw_top1"] = float(np.mean(h[:, 0] == exact[:, 0]))
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lists", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    parser.add_argument("--group-probes", type=int, nargs="+", default=[8], help="groups probed per row")
    parser.add_argument("--rows", type=int, default=50_000, help="query rows assigned per setting")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    x, q = city_descriptors(args.seed)
    rows = np.ascontiguousarray(q[:args.rows])
    print(f"{len(x):,} database descriptors, {len(rows):,} query rows")
    print(f"{'nlist':>6} {'groups':>6} {'top1':>6} {'top4':>6} {'d2 ratio':>8} {'flat s':>7} {'2-level s':>9} "
          f"{'speedup':>7} {'faiss flat s':>12} {'faiss hnsw s':>12} {'hnsw top1':>9}")
    for nlist, group_probe in [(n, g) for n in args.lists for g in args.group_probes]:
        r = run(nlist, group_probe, x, rows, args.seed)
        print(f"{r['nlist']:>6} {r['group_probe']:>6} {r['top1']:>6.3f} {r['top4_overlap']:>6.3f} "
              f"{r['d2_ratio']:>8.4f} {r['flat_s']:>7.3f} "
              f"{r['two_level_s']:>9.3f} {r['flat_s'] / r['two_level_s']:>6.1f}x "
              f"{r.get('faiss_flat_s', float('nan')):>12.3f} {r.get('faiss_hnsw_s', float('nan')):>12.3f} "
              f"{r.get('faiss_hnsw_top1', float('nan')):>9.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
