#!/usr/bin/env python3
"""CANN image retrieval: pylocalize's exact and ivf methods against exact colored search on FAISS.

Synthetic local features: a vocabulary of "visual words" (uint8, SIFT-like scale), each
database image a random subset of words plus noise, each query a subset of one database
image's words (plus outliers). The reference is the exact CANN score computed from
`faiss.pairwise_distances` in chunks with per-image minima (numpy), the strongest exact
colored search FAISS offers; recall@50 is measured against the exact ranking.

    python benchmarks/bench_cann.py --scale 1m        # 1,000 images x 1,000 features (1M)
    python benchmarks/bench_cann.py --scale 5m        # 10,000 images x 500 features (5M)
    python benchmarks/bench_cann.py --scale small     # quick check
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from tqdm import tqdm

import pylocalize
from pylocalize.index.metrics import recall_at

SCALES = {"small": (200, 500), "1m": (1000, 1000), "5m": (10000, 500)}


def make_data(n_images, per_image, dim, n_queries, seed):
    rng = np.random.default_rng(seed)
    words = rng.integers(0, 100, (max(20000, n_images * per_image // 50), dim)).astype(np.float32)
    pick = rng.integers(0, len(words), (n_images, per_image))
    x = np.empty((n_images * per_image, dim), np.uint8)
    for i in tqdm(range(n_images), desc="data", leave=False, disable=None):
        noisy = words[pick[i]] + rng.normal(0, 4, (per_image, dim))
        x[i * per_image:(i + 1) * per_image] = np.clip(noisy, 0, 255)
    ids = np.repeat(np.arange(n_images, dtype=np.int64), per_image)
    queries = []
    for _ in range(n_queries):
        src = rng.integers(0, n_images)
        own = words[pick[src, rng.choice(per_image, per_image // 2, replace=False)]]
        outliers = words[rng.integers(0, len(words), per_image // 2)]
        q = np.concatenate([own, outliers]) + rng.normal(0, 4, (per_image, dim))
        queries.append(np.clip(q, 0, 255).astype(np.uint8))
    return x, ids, queries


def faiss_exact(x, ids, q, k, chunk=250_000):
    """Exact CANN scores from FAISS pairwise distances and numpy per-image minima."""
    import faiss

    order = np.argsort(ids, kind="stable")
    xs, ids_s = x[order], ids[order]
    images, starts = np.unique(ids_s, return_index=True)
    qf = q.astype(np.float32)
    best = np.full((len(q), len(images)), np.inf, np.float32)
    for c0 in range(0, len(xs), chunk):
        c1 = min(len(xs), c0 + chunk)
        d2 = faiss.pairwise_distances(qf, xs[c0:c1].astype(np.float32))
        first = np.searchsorted(starts, c0, side="right") - 1
        last = np.searchsorted(starts, c1 - 1, side="right") - 1
        local = np.maximum(starts[first:last + 1] - c0, 0)
        best[:, first:last + 1] = np.minimum(best[:, first:last + 1], np.minimum.reduceat(d2, local, axis=1))
    r = np.sqrt(np.maximum(best, 0))
    a = 0.4592 / (1 - 0.4592)
    s = np.where(r < 120, (1 - np.clip(r / 120, 0, 1) ** a) ** (1 / a), 0).mean(0)
    top = np.lexsort((images, -s))[:k]
    return s[top], images[top]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="1m")
    parser.add_argument("--queries", type=int, default=10)
    parser.add_argument("--faiss-queries", type=int, default=3, help="queries for the (slow) FAISS reference timing")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--nprobe", default="1,2,4,8,16")
    parser.add_argument("--grids", default="4,8,16", help="grids per radius for the grid method")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    n_images, per_image = SCALES[args.scale]
    dim, k = 128, 50
    pylocalize.set_num_threads(args.threads)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    print(f"pylocalize {pylocalize.__version__} ({pylocalize.simd_level()}) | faiss {faiss.__version__} | "
          f"{args.threads} threads | {n_images:,} images x {per_image:,} features x {dim}-d uint8")
    x, ids, queries = make_data(n_images, per_image, dim, args.queries, args.seed)
    index = pylocalize.CANNIndex(dim)
    t0 = time.perf_counter()
    index.add(x, ids)
    _ = index.num_images  # builds the exact layout
    t_add = time.perf_counter() - t0
    t0 = time.perf_counter()
    exact = index.search_batch(queries, k)
    t_exact = (time.perf_counter() - t0) / len(queries)
    print(f"\nexact (pylocalize): add+layout {t_add:.1f} s, {1e3 * t_exact:.0f} ms per query image")

    t0 = time.perf_counter()
    ref = [faiss_exact(x, ids, q, k) for q in queries[: args.faiss_queries]]
    t_faiss = (time.perf_counter() - t0) / len(ref)
    agree = recall_at(k, np.array([r[1] for r in ref]), exact[1][: len(ref)])
    print(f"exact (FAISS pairwise + numpy minima): {1e3 * t_faiss:.0f} ms per query image; "
          f"top-{k} agreement with pylocalize exact {agree:.3f}")

    t0 = time.perf_counter()
    index.train(seed=args.seed)
    approx = index
    approx.method, approx.nprobe = "ivf", 1
    approx.search(queries[0], k)  # builds the inverted lists
    t_build = time.perf_counter() - t0
    print(f"\nivf: nlist {index.nlist}, build (k-means + lists) {t_build:.1f} s, index memory "
          f"{index.memory_bytes / 2**20:.0f} MiB (features stored once in insertion order, once per layout)")
    print(f"{'nprobe':>6} | {'ms/query':>9} | {'recall@50':>9} | {'vs FAISS exact':>14} | {'vs pylocalize exact':>19}")
    for nprobe in [int(v) for v in args.nprobe.split(",")]:
        approx.nprobe = nprobe
        t0 = time.perf_counter()
        got = approx.search_batch(queries, k)
        t = (time.perf_counter() - t0) / len(queries)
        print(f"{nprobe:>6} | {1e3 * t:9.1f} | {recall_at(k, got[1], exact[1]):9.3f} | {t_faiss / t:13.1f}x | "
              f"{t_exact / t:18.1f}x")

    print("\ngrid (the paper's random grids, 4 radii, 8 hashed dims, cell = 0.5 radius):")
    print(f"{'grids':>6} | {'build s':>7} | {'MiB':>6} | {'ms/query':>9} | {'recall@50':>9} | {'vs FAISS exact':>14} | "
          f"{'vs pylocalize exact':>19}")
    for num_grids in [int(v) for v in args.grids.split(",")]:
        grid = pylocalize.CANNIndex(dim, method="grid", grid=dict(num_grids=num_grids))
        grid.add(x, ids)  # its own grids; the features are copied once more
        t0 = time.perf_counter()
        grid.search(queries[0], k)  # builds the grids
        t_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        got = grid.search_batch(queries, k)
        t = (time.perf_counter() - t0) / len(queries)
        mib = grid.memory_bytes / 2**20
        recall = recall_at(k, got[1], exact[1])
        print(f"{num_grids:>6} | {t_build:7.1f} | {mib:6.0f} | {1e3 * t:9.1f} | {recall:9.3f} | "
              f"{t_faiss / t:13.1f}x | {t_exact / t:18.1f}x")
        del grid
    return 0


if __name__ == "__main__":
    sys.exit(main())
