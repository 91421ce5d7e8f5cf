#!/usr/bin/env python3
"""Compressed city maps: CANN retrieval over 32-byte PQ codes (CANNPQIndex) against the map's
CANNIndex (ivf), at the same city size, in one run.

The city map is built, saved and loaded memory-mapped as in ``bench_city.py``; a CANNPQIndex
is trained on a sample of its descriptors, filled, saved and loaded memory-mapped. Per
retrieval variant: resident bytes per map feature (the index's ``memory_bytes``, and the
process's resident-memory growth from loading the index and retrieving with it, or for
CANNIndex the whole map), recall@10 against exact CANN
scores on sampled queries, retrieval latency alone, and localization success within
(0.25 m, 2 deg) with the median latency after features, the variant replacing the map's
retrieval (``Map.localize_features(retrieval=...)``). Re-ranking re-scores the best R images
exactly against the map's memory-mapped uint8 descriptors.

    python benchmarks/bench_city_compressed.py --size 1m     # ~10 min on 2 cores
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_city import RECALL_K, SIZES, _localize, _memory_mb, city_blocks  # noqa: E402


def build_pq(m, path: Path, by_residual: bool, nprobe: int, seed: int) -> float:
    """Builds a CANNPQIndex over the map's features and saves it to ``path``; returns the build time."""
    from pylocalize.index import CANNPQIndex
    from pylocalize.localization.map import RETRIEVAL_OPTIONS

    offsets = np.cumsum([0] + [len(d) for d in m.descriptors])
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(offsets[-1], min(offsets[-1], 200_000), replace=False))
    image = np.searchsorted(offsets, rows, side="right") - 1
    sample = np.stack([m.descriptors[i][r - offsets[i]] for i, r in zip(image, rows)])  # no copy of every row
    t0 = time.perf_counter()
    index = CANNPQIndex(128, by_residual=by_residual, nprobe=nprobe, **RETRIEVAL_OPTIONS)
    index.train(sample, nlist=m.index.nlist, seed=seed)
    for i, d in enumerate(m.descriptors):
        index.add(d, i)
    build_s = time.perf_counter() - t0
    index.save(path)
    return build_s


def retrieval_variant(search, m, queries, n_recall: int, rss0_mb: float) -> dict:
    """Retrieval latency, the resident memory growth since ``rss0_mb`` right after the retrieval
    alone (before localization pages in the map's descriptors), localization success and
    latency; ``found`` (the first ``n_recall`` queries' best 10) for the recall against exact CANN."""
    t0 = time.perf_counter()
    found = np.stack([search(d) for d in queries.descriptors[:n_recall]])
    row = {"retrieval_ms": 1000 * (time.perf_counter() - t0) / n_recall, "found": found,
           "rss_bytes_per_feature": (_memory_mb("VmRSS") - rss0_mb) * 2**20 / sum(len(d) for d in m.descriptors)}
    row["success"], row["latency_ms"], row["latency_p90_ms"] = _localize(
        m, queries, retrieval=lambda kp, d: [int(i) for i in search(d) if i >= 0])
    return row


def run(size: str, n_queries: int, n_recall: int, rerank: int, seed: int, workdir: Path) -> dict:
    from pylocalize.datasets.city import generate_city
    from pylocalize.index import CANNPQIndex
    from pylocalize.index.metrics import recall_at
    from pylocalize.localization import Map

    bx, by = city_blocks(SIZES[size])
    city = generate_city(blocks_x=bx, blocks_y=by, seed=seed)
    db = city.database(progress=False, workers=2)
    n = db.num_features
    out = {"size": size, "images": len(db), "features": n}
    Map(db.names, db.cameras, db.cam_from_world, db.keypoints, db.descriptors, db.point_ids,
        city.landmarks).save(workdir / "map")
    del db
    gc.collect()
    rss0 = _memory_mb("VmRSS")
    m = Map.load(workdir / "map")
    queries = city.queries(n_queries, seed=seed + 1)
    m.index.search(queries.descriptors[0], 1)  # builds the ivf layout: not a query's cost
    # the map as a whole (descriptors, points, index) in resident memory; its index alone in bytes
    rows = {"cann ivf": retrieval_variant(lambda d: m.index.search(d, RECALL_K)[1], m, queries, n_recall, rss0)}
    rows["cann ivf"]["bytes_per_feature"] = m.index.memory_bytes / n
    for by_residual in (False, True):
        name = "pq residual" if by_residual else "pq"
        build_s = build_pq(m, workdir / "pq.pyloc", by_residual, m.index.nprobe, seed)
        gc.collect()
        rss0 = _memory_mb("VmRSS")
        pq = CANNPQIndex.load(workdir / "pq.pyloc", mmap=True)
        rows[name] = retrieval_variant(lambda d: pq.search(d, RECALL_K)[1], m, queries, n_recall, rss0)
        rows[name + f" + rerank {rerank}"] = retrieval_variant(
            lambda d: pq.search_reranked(d, RECALL_K, m.descriptors, rerank=rerank)[1], m, queries, n_recall, rss0)
        for key in (name, name + f" + rerank {rerank}"):
            rows[key].update(build_s=build_s, bytes_per_feature=pq.memory_bytes / n)
        rows[name + f" + rerank {rerank}"]["rss_bytes_per_feature"] = rows[name]["rss_bytes_per_feature"]
        pq = None  # unmapped before the next variant
        gc.collect()
    m.index.method = "exact"
    truth = np.stack([m.index.search(d, RECALL_K)[1] for d in queries.descriptors[:n_recall]])
    for r in rows.values():
        r["recall@10"] = recall_at(RECALL_K, r.pop("found"), truth)
    out["rows"] = rows
    return out


def print_rows(result: dict) -> None:
    print(f"{result['size']}: {result['images']} images, {result['features']:,} features")
    print(f"{'retrieval':>22} {'bytes/feat':>10} {'RSS B/feat':>10} {'recall@10':>9} {'retr ms':>8} "
          f"{'success':>8} {'median ms':>9} {'p90 ms':>7}")
    for name, r in result["rows"].items():
        print(f"{name:>22} {r['bytes_per_feature']:>10.1f} {r['rss_bytes_per_feature']:>10.1f} "
              f"{r['recall@10']:>9.3f} {r['retrieval_ms']:>8.1f} {100 * r['success']:>7.1f}% "
              f"{r['latency_ms']:>9.1f} {r['latency_p90_ms']:>7.1f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=list(SIZES), default="1m")
    parser.add_argument("--queries", type=int, default=50, help="simulated queries localized")
    parser.add_argument("--recall-queries", type=int, default=10, help="queries scored against exact CANN")
    parser.add_argument("--rerank", type=int, default=20, help="images re-scored exactly")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="JSON file for the results")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.size, args.queries, args.recall_queries, args.rerank, args.seed, Path(tmp))
    print_rows(result)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
