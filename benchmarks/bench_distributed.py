#!/usr/bin/env python3
"""Sharded indexes on Ray against one local index, on a one-machine Ray cluster, and a
deployment model on paper from the measured figures.

Per workload (Hamming kNN over 256-bit codes; CANN ivf retrieval over SIFT-like features):

- one local index using every core of the machine;
- the same index in ``--shards`` shards (one Ray actor each, the cores split between them);
- one shard's own work: a local index of one shard's size, on one shard's threads. The
  sharded latency minus this is the cost of the sharded path (object store, fan-out, merge).

Latency is per query batch (median of ``--repeat``), QPS = queries / latency; the load
average of the machine is printed with each figure (the cores may be shared). Results of the
sharded Hamming search are checked equal to the local ones; CANN ivf is approximate per
shard, so the agreement of the top-10 images is printed.

    python benchmarks/bench_distributed.py --codes 1000000 --features 1000000 --shards 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_cann_load import prototype_features


def _median_seconds(fn, repeat: int):
    """(median seconds, last result) of ``repeat`` calls after one warm-up call."""
    out, times = fn(), []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


def _row(name: str, nq: int, seconds: float) -> None:
    print(f"  {name:<38} {seconds * 1e3:9.1f} ms per batch of {nq:>5}  {nq / seconds:10.1f} QPS   {_load()}")


def bench_codes(args, folder: Path, cores: int) -> dict:
    import ray

    import pylocalize
    from pylocalize.distributed import ShardedBinaryIndex

    rng = np.random.default_rng(args.seed)
    codes = rng.integers(0, 256, (args.codes, 32), dtype=np.uint8)
    queries = rng.integers(0, 256, (args.nq, 32), dtype=np.uint8)
    print(f"Hamming kNN, {args.codes:,} codes of 256 bits, k = {args.k}, {args.shards} shards, {cores} cores")
    local = pylocalize.BinaryIndex(256)
    local.add(codes)
    shard = pylocalize.BinaryIndex(256)
    shard.add(codes[:args.codes // args.shards])
    per_shard = max(1, cores // args.shards)
    figures = {}
    with ShardedBinaryIndex.from_index(local, args.shards, folder / "codes.json", threads=per_shard,
                                       batch_size=args.nq) as sharded:
        for nq in (args.nq, 1):
            q = queries[:nq]
            pylocalize.set_num_threads(cores)
            t_local, expected = _median_seconds(lambda: local.search(q, args.k), args.repeat)
            pylocalize.set_num_threads(per_shard)
            t_shard, _ = _median_seconds(lambda: shard.search(q, args.k), args.repeat)
            t_sharded, got = _median_seconds(lambda: sharded.search(q, args.k), args.repeat)
            assert all(np.array_equal(a, b) for a, b in zip(got, expected)), "sharded results differ"
            _row(f"local index, {cores} threads", nq, t_local)
            _row(f"one shard's work, {per_shard} thread(s)", nq, t_shard)
            _row(f"sharded, {args.shards} actors", nq, t_sharded)
            print(f"    QPS ratio sharded / local {t_local / t_sharded:.2f}; sharded minus one shard's work "
                  f"{(t_sharded - t_shard) * 1e3:.1f} ms per batch (path + contention); results identical")
            figures[nq] = dict(local=t_local, shard=t_shard, sharded=t_sharded)
        floor = _path_cost(args, folder, queries)
        # a killed shard: Ray restarts its actor, which maps its file again, and the search is retried
        t0 = time.perf_counter()
        ray.kill(sharded.shard_actors()[0], no_restart=False)
        got = sharded.search(queries[:1], args.k)
        print(f"  shard 0 killed: the next single-query search answered in {time.perf_counter() - t0:.2f} s "
              f"(actor restarted, {sharded.shard_counts()[0]:,} codes mapped again)   {_load()}")
    pylocalize.set_num_threads(cores)
    return dict(figures, rate=args.nq * args.codes / (figures[args.nq]["local"] * cores),
                rate_single=args.codes / (figures[1]["local"] * cores),
                overhead_batch=floor[args.nq], overhead_single=floor[1])


def _path_cost(args, folder: Path, queries: np.ndarray) -> dict:
    """The sharded path's own cost per batch (object store, fan-out, answers, merge): the same
    batches against shards of 100 codes each, where the search itself is next to nothing."""
    import pylocalize
    from pylocalize.distributed import ShardedBinaryIndex

    tiny = pylocalize.BinaryIndex(256)
    tiny.add(queries[:100 * args.shards])
    floor = {}
    with ShardedBinaryIndex.from_index(tiny, args.shards, folder / "tiny.json", threads=1,
                                       batch_size=args.nq) as sharded:
        for nq in (args.nq, 1):
            floor[nq], _ = _median_seconds(lambda: sharded.search(queries[:nq], args.k), args.repeat * 3)
            _row(f"sharded path alone ({args.shards} x 100 codes)", nq, floor[nq])
    return floor


def bench_cann(args, folder: Path, cores: int) -> dict:
    import pylocalize
    from pylocalize.distributed import ShardedCANNIndex

    x, ids, protos, _ = prototype_features(args.features, 128, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    queries = [np.clip(protos[rng.integers(0, len(protos), args.query_features)]
                       + rng.normal(0, 12, (args.query_features, 128)), 0, 255).astype(np.uint8)
               for _ in range(args.query_images)]
    local = pylocalize.CANNIndex(128, method="ivf", nprobe=4, p0=200.0)
    local.add(x, ids)
    t0 = time.perf_counter()
    local.train(seed=0)
    print(f"\nCANN ivf retrieval, {args.features:,} features of {ids[-1] + 1} images, nprobe 4, {local.nlist} lists "
          f"(trained in {time.perf_counter() - t0:.0f} s), {args.query_images} query images of "
          f"{args.query_features} features, k = 10, {args.shards} shards, {cores} cores")
    per_shard = max(1, cores // args.shards)
    local.save(folder / "cann.pyloc")
    with ShardedCANNIndex.from_index(folder / "cann.pyloc", args.shards, folder / "cann.json", threads=per_shard,
                                     batch_size=args.query_images) as sharded:
        shard = pylocalize.CANNIndex.load(folder / sharded.shard_paths()[0], mmap=True)
        pylocalize.set_num_threads(cores)
        t_local, expected = _median_seconds(lambda: local.search_batch(queries, 10), args.repeat)
        pylocalize.set_num_threads(per_shard)
        t_shard, _ = _median_seconds(lambda: shard.search_batch(queries, 10), args.repeat)
        t_sharded, got = _median_seconds(lambda: sharded.search_batch(queries, 10), args.repeat)
        file_bytes = sum(os.path.getsize(p) for p in sharded.shard_paths())
    nq = args.query_images
    _row(f"local index, {cores} threads", nq, t_local)
    _row(f"one shard's work ({shard.ntotal:,} features)", nq, t_shard)
    _row(f"sharded, {args.shards} actors", nq, t_sharded)
    agree = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got[1], expected[1])])
    print(f"    QPS ratio sharded / local {t_local / t_sharded:.2f}; sharded minus one shard's work "
          f"{(t_sharded - t_shard) * 1e3:.1f} ms per batch (path + contention); top-10 agreement with the local "
          f"index {agree:.3f}")
    pylocalize.set_num_threads(cores)
    return dict(local=t_local, shard=t_shard, sharded=t_sharded, shard_features=shard.ntotal,
                bytes_per_feature=file_bytes / args.features)


def deployment_model(args, codes: dict, cann: dict) -> None:
    """Billion-code and 100-million-feature deployments, from the measured figures."""
    node_cores, k = args.node_cores, args.k
    print(f"\nOn paper (nodes of {node_cores} cores; inputs: the figures measured above)")
    rate, rate_single = codes["rate"], codes["rate_single"]  # code comparisons per second per core
    total = 1e9
    print(f"1e9 codes of 256 bits: {rate / 1e9:.2f} G code comparisons / s / core measured in batches, "
          f"{rate_single / 1e9:.2f} G for single queries (memory bound); 40 bytes per code "
          f"(code + id); batch of {args.nq} queries; the sharded path's own cost {codes['overhead_batch'] * 1e3:.0f} "
          f"ms per batch, {codes['overhead_single'] * 1e3:.1f} ms per single query")
    print(f"  {'nodes':>5} {'GB RAM/node':>11} {'bytes moved/query':>17} {'batch latency':>13} {'QPS':>8} "
          f"{'1-query latency':>15}")
    for nodes in args.nodes:
        per_node = total / nodes
        batch = args.nq * per_node / (rate * node_cores) + codes["overhead_batch"]
        single = per_node / (rate_single * node_cores) + codes["overhead_single"]
        moved = nodes * (32 + k * 12)  # the query to each node, k (distance, id) pairs back
        print(f"  {nodes:>5} {per_node * 40 / 1e9:>11.1f} {moved:>17,} {batch:>12.2f}s {args.nq / batch:>8.0f} "
              f"{single * 1e3:>13.0f}ms")
    # CANN ivf: nlist = 4 sqrt(n) lists and fixed nprobe, so a query scans ~ sqrt(n) features per shard
    features, query_bytes = 1e8, args.query_features * 128
    t_image = cann["shard"] / args.query_images * max(1, args.cores // args.shards)  # core-seconds per image
    print(f"1e8 features (SIFT, uint8): {cann['bytes_per_feature']:.0f} bytes per feature in the shard files; "
          f"one shard of {cann['shard_features']:,} features takes {t_image * 1e3:.0f} core-ms per query image; "
          f"a shard of n features ~ sqrt(n) of that (ivf, 4 sqrt(n) lists, nprobe fixed); plus the "
          f"sharded path's cost (above) and moving the query features")
    print(f"  {'nodes':>5} {'GB RAM/node':>11} {'bytes moved/query':>17} {'core-ms/image':>13} {'images/s':>8}")
    for nodes in args.nodes:
        per_node = features / nodes
        core_s = t_image * np.sqrt(per_node / cann["shard_features"])  # per node, per query image
        qps = node_cores / core_s  # every node scans its shard for every query image
        moved = nodes * (query_bytes + 10 * 12)
        print(f"  {nodes:>5} {per_node * cann['bytes_per_feature'] / 1e9:>11.1f} {moved:>17,} {core_s * 1e3:>13.0f} "
              f"{qps:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--codes", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--nq", type=int, default=1000, help="queries per Hamming batch")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--query-images", type=int, default=8)
    parser.add_argument("--query-features", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    parser.add_argument("--node-cores", type=int, default=32, help="the model's cores per node")
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 4, 16, 64], help="the model's node counts")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import ray

    ray.init(num_cpus=args.cores, include_dashboard=False, log_to_driver=False, configure_logging=False)
    with tempfile.TemporaryDirectory() as tmp:
        codes = bench_codes(args, Path(tmp), args.cores)
        cann = bench_cann(args, Path(tmp), args.cores)
    deployment_model(args, codes, cann)
    ray.shutdown()


if __name__ == "__main__":
    main()
