#!/usr/bin/env python3
"""The CUDA searches (device="cuda") side by side with FAISS GPU, and CANN exact on the GPU
against the CPU, in one run on one GPU machine.

1. Hamming k-NN: pylocalize BinaryIndex on the GPU against faiss GpuIndexBinaryFlat (same
   codes, queries and k); the distances must agree (ids may differ only inside ties, where
   pylocalize gives the smaller id), QPS side by side and their ratio.
2. Float L2 k-NN: pylocalize.assign(device="cuda") against faiss GpuIndexFlatL2.
3. CANN exact: CANNIndex on the GPU against the same index on every CPU core; images and
   scores must be identical.

Every phase logs its duration; timings are the best of --repeats runs after a warm-up (the
device copies are made in the warm-up and timed apart).

    python benchmarks/bench_cuda.py                      # the issue's sizes: 10M codes, 10k queries
    python benchmarks/bench_cuda.py --small              # a quick check of the script
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

import numpy as np

import pylocalize

log = logging.getLogger("bench_cuda")


def best_of(fn, repeats):
    fn()  # warm-up: device copies, kernels loaded
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def timed(what, fn):
    t0 = time.perf_counter()
    out = fn()
    log.info("%s: %.2f s", what, time.perf_counter() - t0)
    return out, time.perf_counter() - t0


def bench_hamming(args, rng, faiss, res):
    n, nq, k, nbits = args.n, args.nq, args.k, args.nbits
    xb = rng.integers(0, 256, (n, nbits // 8), dtype=np.uint8)
    xq = rng.integers(0, 256, (nq, nbits // 8), dtype=np.uint8)
    index = pylocalize.BinaryIndex(nbits)
    timed("pylocalize add", lambda: index.add(xb))
    index.to_gpu(args.device)
    _, copy_s = timed("pylocalize device copy", lambda: index.search(xq[:1], k))
    t_pl, (d_pl, i_pl) = best_of(lambda: index.search(xq, k), args.repeats)
    out = {"n": n, "nq": nq, "k": k, "nbits": nbits, "pylocalize_copy_s": copy_s, "pylocalize_qps": nq / t_pl}
    if faiss is not None:
        fi = faiss.GpuIndexBinaryFlat(res, nbits)
        timed("faiss add", lambda: fi.add(xb))
        t_fa, (d_fa, i_fa) = best_of(lambda: fi.search(xq, k), args.repeats)
        out.update(faiss_qps=nq / t_fa, ratio=t_fa / t_pl,
                   distances_equal=bool(np.array_equal(d_pl, d_fa.astype(np.int32))),
                   ids_equal_fraction=float(np.mean(i_pl == i_fa)))
    return out


def bench_float(args, rng, faiss, res):
    n, nq, k, dim = args.float_n, args.nq, args.k, args.dim
    xb = rng.normal(size=(n, dim)).astype(np.float32)
    xq = rng.normal(size=(nq, dim)).astype(np.float32)
    from pylocalize import _core
    from pylocalize.index._device import parse_device

    # assign() copies the rows to the device in every call; the rows kept on the device (as
    # FAISS keeps its index there) are what compares with GpuIndexFlatL2.
    t_call, _ = best_of(lambda: pylocalize.assign(xq, xb, k, device=args.device), 1)
    rows, _ = timed("pylocalize rows to the device", lambda: _core.GpuFloatRows(xb, parse_device(args.device)))
    t_pl, (i_pl, d_pl) = best_of(lambda: rows.search(xq, k, "l2", dim), args.repeats)
    out = {"n": n, "nq": nq, "k": k, "dim": dim, "pylocalize_qps": nq / t_pl, "assign_call_qps": nq / t_call}
    if faiss is not None:
        fi = faiss.GpuIndexFlatL2(res, dim)
        fi.add(xb)
        t_fa, (d_fa, i_fa) = best_of(lambda: fi.search(xq, k), args.repeats)
        out.update(faiss_qps=nq / t_fa, ratio=t_fa / t_pl, ids_equal_fraction=float(np.mean(i_pl == i_fa)),
                   max_abs_distance_diff=float(np.max(np.abs(d_pl - d_fa))))
    return out


def bench_cann(args, rng):
    per_image = 1000
    n_images = args.cann_n // per_image
    dim = 128
    words = rng.integers(0, 100, (50_000, dim)).astype(np.uint8)
    x = np.empty((n_images * per_image, dim), np.uint8)
    for i0 in range(0, n_images, 1000):  # in slices: a float copy of 10M features would not fit twice
        i1 = min(n_images, i0 + 1000)
        noisy = words[rng.integers(0, len(words), (i1 - i0) * per_image)].astype(np.int16)
        noisy += rng.integers(-4, 5, noisy.shape, dtype=np.int16)
        x[i0 * per_image:i1 * per_image] = np.clip(noisy, 0, 255)
    image_ids = np.repeat(np.arange(n_images, dtype=np.int64), per_image)
    index = pylocalize.CANNIndex(dim)
    timed("CANN add", lambda: index.add(x, image_ids))
    queries = [x[rng.integers(0, len(x), args.cann_query_features)] for _ in range(args.cann_queries)]
    pylocalize.set_num_threads(-1)
    (cpu_results, cpu_s) = timed("CANN exact on the CPU", lambda: [index.search(q, 50) for q in queries])
    index.to_gpu(args.device)
    _, copy_s = timed("CANN device copy", lambda: index.search(queries[0][:1], 1))
    t_gpu, gpu_results = best_of(lambda: [index.search(q, 50) for q in queries], args.repeats)
    same = all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(gpu_results, cpu_results))
    return {"features": len(x), "images": n_images, "query_images": len(queries),
            "query_features": args.cann_query_features, "cpu_threads": pylocalize.get_num_threads(),
            "cpu_s_per_query": cpu_s / len(queries), "gpu_s_per_query": t_gpu / len(queries),
            "gpu_copy_s": copy_s, "speedup": cpu_s / t_gpu, "identical": same}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000_000, help="binary codes")
    parser.add_argument("--nq", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--nbits", type=int, default=256)
    parser.add_argument("--float-n", type=int, default=1_000_000, help="float32 rows for the L2 comparison")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--cann-n", type=int, default=10_000_000, help="CANN features (1,000 per image)")
    parser.add_argument("--cann-queries", type=int, default=3)
    parser.add_argument("--cann-query-features", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--small", action="store_true", help="small sizes: checks the script, not a measurement")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: hamming,float,cann")
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.small:
        args.n, args.nq, args.float_n, args.cann_n, args.cann_query_features = 200_000, 1000, 50_000, 200_000, 300
    if not pylocalize.has_cuda():
        sys.exit("bench_cuda: no usable CUDA device, or a build without -DPYLOCALIZE_CUDA=ON (docs/BUILDING.md)")
    try:
        import faiss

        res = faiss.StandardGpuResources()
    except (ImportError, AttributeError):
        log.warning("faiss with GPU support (faiss-gpu-cu12) is not installed: pylocalize alone")
        faiss, res = None, None
    rng = np.random.default_rng(args.seed)
    skip = set(filter(None, args.skip.split(",")))
    results = {"pylocalize": pylocalize.__version__, "faiss": getattr(faiss, "__version__", None)}
    if "hamming" not in skip:
        results["hamming"] = bench_hamming(args, rng, faiss, res)
        print(json.dumps({"hamming": results["hamming"]}), flush=True)
    if "float" not in skip:
        results["float_l2"] = bench_float(args, rng, faiss, res)
        print(json.dumps({"float_l2": results["float_l2"]}), flush=True)
    if "cann" not in skip:
        results["cann_exact"] = bench_cann(args, rng)
        print(json.dumps({"cann_exact": results["cann_exact"]}), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
