#!/usr/bin/env python3
"""2D-3D matching's nearest-neighbour search: a query image's descriptors against the
features of the database images CANN retrieved, as :meth:`Map.match_2d3d` runs it.

Descriptors are SIFT-like uint8 rows of a generated city (:mod:`pylocalize.datasets.city`):
the features of one simulated query (~2,000) against those of ``k`` database images that
observe a 3D point (~700-1,500 each), for several ``k``, so that the cost's growth with the
candidates shows. Per size, the ``m = 8`` nearest candidates of every query feature (what
the ratio test against another 3D point reads) by:

- pylocalize ``assign`` on uint8 rows (what matching runs) and on their float32 copies;
- FAISS ``IndexFlatL2`` (float32, BLAS) with the same ``m``;
- OpenCV ``BFMatcher(NORM_L2).knnMatch`` with ``k = 2`` (the usual ratio-test search; it
  cannot be asked for 8 in comparable time), for reference.

All on every core; best of ``--repeat`` runs. The labels of pylocalize's two paths must be
identical, and agree with FAISS's (up to ties).

    python benchmarks/bench_matching.py                  # ~1 min on 2 cores
    python benchmarks/bench_matching.py --images 5 10 20 40
"""

from __future__ import annotations

import argparse

import numpy as np
from _timing import best_of

M = 8  # candidates per query feature (match_descriptors' default)


def city_features(max_images: int, seed: int):
    """One query's descriptors and a list of database images' observed descriptors (uint8)."""
    from pylocalize.datasets.city import generate_city

    city = generate_city(blocks_x=2, blocks_y=2, seed=seed)
    query = city.queries(1, seed=seed + 1).descriptors[0]
    images = []
    for i in range(min(max_images, len(city))):
        image = city.image(i)
        images.append(image.descriptors[image.point_ids >= 0])
    return query, images


def run(query: np.ndarray, candidates: np.ndarray, repeat: int) -> dict:
    import pylocalize
    from pylocalize.index.knn import assign

    row = {"queries": len(query), "candidates": len(candidates)}
    row["uint8_s"], (labels8, _) = best_of(lambda: assign(query, candidates, M), repeat)
    q32, c32 = query.astype(np.float32), candidates.astype(np.float32)
    row["float32_s"], (labels32, _) = best_of(lambda: assign(q32, c32, M), repeat)
    if not np.array_equal(labels8, labels32):
        raise AssertionError("uint8 and float32 assignment disagree")
    try:
        import faiss
    except ImportError:
        faiss = None
    if faiss is not None:
        faiss.omp_set_num_threads(pylocalize.get_num_threads())
        flat = faiss.IndexFlatL2(c32.shape[1])
        flat.add(c32)
        row["faiss_s"], (_, faiss_labels) = best_of(lambda: flat.search(q32, M), repeat)
        row["faiss_top1_agree"] = float(np.mean(faiss_labels[:, 0] == labels8[:, 0]))
    try:
        import cv2
    except ImportError:
        cv2 = None
    if cv2 is not None:
        cv2.setNumThreads(pylocalize.get_num_threads())
        matcher = cv2.BFMatcher(cv2.NORM_L2)
        row["opencv_k2_s"], _ = best_of(lambda: matcher.knnMatch(q32, c32, k=2), repeat)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", nargs="+", type=int, default=[2, 5, 10, 20])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    query, images = city_features(max(args.images), args.seed)
    print(f"{'images':>6} {'queries':>7} {'candidates':>10} {'uint8 ms':>9} {'float32 ms':>10} {'FAISS ms':>9} "
          f"{'FAISS/uint8':>11} {'top1 agree':>10} {'OpenCV k=2 ms':>13}")
    rows = []
    for k in args.images:
        row = run(query, np.concatenate(images[:k]), args.repeat)
        rows.append(row)
        nan = float("nan")
        print(f"{k:>6} {row['queries']:>7} {row['candidates']:>10,} {1e3 * row['uint8_s']:>9.1f} "
              f"{1e3 * row['float32_s']:>10.1f} {1e3 * row.get('faiss_s', nan):>9.1f} "
              f"{row.get('faiss_s', nan) / row['uint8_s']:>10.2f}x {row.get('faiss_top1_agree', nan):>10.3f} "
              f"{1e3 * row.get('opencv_k2_s', nan):>13.1f}")
    if len(rows) >= 2:
        n = np.log([r["candidates"] for r in rows])
        b = np.polyfit(n, np.log([r["uint8_s"] for r in rows]), 1)[0]
        print(f"growth with the candidates (cost ~ n^b): uint8 b = {b:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
