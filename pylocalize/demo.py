"""``pylocalize demo``: binary retrieval on generated descriptors.

Until the localization pipeline lands this demo exercises the retrieval core end to end:
generated descriptor-like vectors, exact float ground truth, then sign codes (Hamming),
a 256-bit random-projection hash (Hamming), multi-bit SDC codes and SDC + exact
re-ranking. It prints recall@10 and queries per second for each and saves a figure,
the results as JSON and one index file in the output folder.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

import pylocalize
from pylocalize.datasets import clustered_queries, clustered_vectors


def _recall_at_10(ids: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(a, b)) / 10.0 for a, b in zip(ids, truth)]))


def _timed(fn):
    fn()  # warm-up: first touch of pages and caches
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run_demo(out_dir: str | Path = "pylocalize_demo", nb: int = 200_000, nq: int = 1000,
             dim: int = 128, seed: int = 0) -> dict:
    """Runs the demo and returns its results (also written to ``out_dir/results.json``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    steps = tqdm(total=7, desc="demo", unit="step")
    xb = clustered_vectors(nb, dim, seed=seed)
    xq = clustered_queries(nq, dim, seed=seed)
    steps.update()
    truth = np.empty((nq, 10), dtype=np.int64)
    for s in range(0, nq, 100):  # exact inner-product top-10, in slices to bound memory
        sims = xq[s:s + 100] @ xb.T
        top = np.argpartition(-sims, 10, axis=1)[:, :10]
        order = np.argsort(-np.take_along_axis(sims, top, 1), axis=1, kind="stable")
        truth[s:s + 100] = np.take_along_axis(top, order, 1)
    steps.update()

    results = []

    def record(name, bits, ids, seconds):
        results.append({"method": name, "bits": bits, "recall@10": _recall_at_10(ids, truth),
                        "qps": nq / seconds})

    sign = pylocalize.BinaryIndex(dim)
    sign.add(pylocalize.binarize(xb, 1))
    (_, ids), t = _timed(lambda: sign.search(pylocalize.binarize(xq, 1), 10))
    record("sign codes, Hamming", dim, ids, t)
    steps.update()

    rng = np.random.default_rng(seed)
    projection = rng.standard_normal((dim, 2 * dim)).astype(np.float32)
    lsh = pylocalize.BinaryIndex(2 * dim)
    lsh.add(pylocalize.pack_bits(xb @ projection > 0))
    (_, ids), t = _timed(lambda: lsh.search(pylocalize.pack_bits(xq @ projection > 0), 10))
    record("random-projection hash, Hamming", 2 * dim, ids, t)
    steps.update()

    for bits_per_dim in (2, 4):
        index = pylocalize.MultiBitIndex(dim, bits_per_dim)
        index.add(pylocalize.binarize(xb, bits_per_dim), vectors=xb if bits_per_dim == 2 else None)
        qcodes = pylocalize.binarize(xq, bits_per_dim)
        (_, ids), t = _timed(lambda: index.search(qcodes, 10))
        record(f"SDC {bits_per_dim} bits/dim", bits_per_dim * dim, ids, t)
        if bits_per_dim == 2:
            (_, ids), t = _timed(lambda: index.search(qcodes, 10, query_vectors=xq, rerank=100))
            record("SDC 2 bits/dim + exact re-rank of 100", 2 * dim, ids, t)
            index.save(out / "sdc2.pyloc")
        steps.update()
    steps.close()

    summary = {"pylocalize": pylocalize.__version__, "simd": pylocalize.simd_level(),
               "threads": pylocalize.get_num_threads(), "nb": nb, "nq": nq, "dim": dim,
               "results": results}
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    _plot(results, out / "recall_qps.png", nb, dim)
    return summary


def _plot(results, path: Path, nb: int, dim: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        ax.scatter(r["qps"], r["recall@10"], s=40)
        ax.annotate(f"{r['method']} ({r['bits']} b)", (r["qps"], r["recall@10"]), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("queries per second")
    ax.set_ylabel("recall@10 vs exact inner product")
    ax.set_title(f"pylocalize binary retrieval, {nb:,} x {dim}-d ({pylocalize.simd_level()})")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
