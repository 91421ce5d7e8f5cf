#!/usr/bin/env python3
"""Hierarchical geo-localization: GeoDecoder head vs flat cell classification vs gallery retrieval.

Locations are real: the 100,000 photo GPS of ``../shared/data/geo/coordinates_100K.csv``
(GeoCLIP's gallery), shuffled (seeded) and split 90k train / 10k test. Image tokens are
synthetic, a known function of where and what: :func:`pylocalize.geo.synthetic.synthetic_tokens`
(a random embedding per cell at each granularity, scaled by how much the scene reveals,
plus a scene embedding, plus noise, several tokens per photo). No pretrained backbone
weights are available offline, so this measures the heads and the retrieval, not a backbone.

Methods, all on the same tokens and the same cell hierarchy built from the training GPS:

- GeoDecoder: hierarchy x scene queries, hierarchical product, scenes combined as
  ``--scene-mode`` says (default: the mixture weighted by the scene classifier), with the
  other scene modes and the paper's confidence rule as ablations from the same forward pass;
- flat: one query, the same decoder layers, one classifier over the finest cells;
- gallery: kNN of the mean token (a global embedding) among the 90k training photos, GPS by
  the kernel-weighted mode (float search, and binary sign codes);
- oracle: the true finest cell's mean GPS (what perfect cell classification would give).

Also: real photos (the EXIF GPS of ``../shared/data/lund``, leave-one-out gallery
localization with a "tiny image" embedding), and speed of S2 leaf ids, cell building and
GPS aggregation on 1M points (the 100K resampled with ~1 km jitter).

The scene mode is chosen on the validation rows: the 10 % of the training photos that both
heads hold out for early stopping (the same rows for both: same seed, same count); their
accuracies are printed before the test table, and the test split chooses nothing.

    python benchmarks/bench_geo.py [--data ../shared/data] [--epochs 10] [--json bench_geo.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from pylocalize.geo import CellHierarchy, GeoGallery, accuracy, plot_predictions, s2_leaf_ids
from pylocalize.geo.synthetic import synthetic_tokens

THRESHOLDS = (1, 25, 200, 750, 2500)


def row(name, acc, extra=""):
    cells = " ".join(f"{100 * acc[f'acc@{t}km']:6.1f}" for t in THRESHOLDS)
    return f"{name:32s} {cells} {acc['median_km']:10.1f}  {extra}"


def header():
    return f"{'method':32s} " + " ".join(f"{str(t) + 'km':>6s}" for t in THRESHOLDS) + f" {'median km':>10s}"


def read_coordinates(path: Path) -> np.ndarray:
    from pylocalize.geo.cli import read_latlon_csv

    if not path.is_file():
        raise SystemExit(f"no {path}: give --data, the folder holding geo/coordinates_100K.csv")
    return read_latlon_csv(path)


def synthetic_benchmark(args, latlon, results):
    import torch

    from pylocalize.geo.model import SCENE_MODES, FlatCellClassifier, GeoDecoder

    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(latlon))
    n_train = min(args.train, len(latlon) - args.test)
    train, test = latlon[order[:n_train]], latlon[order[n_train:n_train + args.test]]
    t0 = time.perf_counter()
    hierarchy = CellHierarchy.from_latlon(train, max_images=args.max_images, min_images=args.min_images)
    print(f"\n{len(train):,} train / {len(test):,} test photos; cells {hierarchy.num_cells} "
          f"(max {hierarchy.max_images}, min {hierarchy.min_images}) built in {time.perf_counter() - t0:.2f} s")
    labels_test = hierarchy.cell_of(test)
    print("test photos in a kept cell per granularity: "
          + ", ".join(f"{100 * np.mean(labels_test[:, h] >= 0):.1f} %" for h in range(hierarchy.num_hierarchies)))
    opts = dict(num_tokens=args.tokens, dim=args.dim, num_scenes=args.scenes, noise=args.noise,
                embedding_seed=args.seed)
    xt, st = synthetic_tokens(hierarchy, train, seed=args.seed + 1, **opts)
    xe, se = synthetic_tokens(hierarchy, test, seed=args.seed + 2, **opts)
    print(f"tokens: {args.tokens} x {args.dim}-d per photo, {args.scenes} scenes, noise {args.noise}")
    out = {"cells": hierarchy.num_cells, "train": len(train), "test": len(test), "methods": {}}
    print("\n" + header() + "  (accuracy %)")

    oracle = hierarchy.centers[-1][np.maximum(labels_test[:, -1], 0)]
    oracle[labels_test[:, -1] < 0] = test[labels_test[:, -1] < 0]  # no cell: count as exact (upper bound)
    acc = accuracy(oracle, test)
    out["methods"]["oracle fine cell"] = acc
    print(row("oracle (true fine cell)", acc, "upper bound of cell classification"))

    predictions, models = {}, {}
    torch.manual_seed(args.seed)
    fit = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.patience, seed=args.seed,
               progress=args.progress, num_threads=args.torch_threads)
    arch = dict(d_model=args.d_model, num_heads=args.heads, ffn_mult=2, dropout=0.0, seed=args.seed)
    for name in ("GeoDecoder", "flat"):
        if name == "GeoDecoder":
            model = GeoDecoder(hierarchy, args.dim, num_scenes=args.scenes, independent_layers=args.layers,
                               dependent_layers=1, scene_mode=args.scene_mode, **arch)
            t0 = time.perf_counter()
            model.fit(xt, train, st, **fit)
        else:
            model = FlatCellClassifier(hierarchy, args.dim, num_layers=args.layers + 1, **arch)
            t0 = time.perf_counter()
            model.fit(xt, train, **fit)
        models[name] = model
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        pred = model.predict(xe)
        pred_s = time.perf_counter() - t0
        acc = accuracy(pred, test)
        acc.update(train_s=train_s, predict_ms_per_photo=1e3 * pred_s / len(test), epochs=len(model.history))
        label = f"GeoDecoder ({args.scene_mode})" if name == "GeoDecoder" else name
        out["methods"][name] = acc
        predictions[name] = pred
        print(row(label, acc, f"{len(model.history)} epochs, train {train_s:.0f} s, "
                              f"{acc['predict_ms_per_photo']:.3f} ms/photo"), flush=True)
        if name == "GeoDecoder":
            # ablations from the same forward pass: the other scene modes, no hierarchical
            # product, and the true scene's queries
            scene_accuracy, ablations = decoder_ablations(model, xe, se, test, exclude=args.scene_mode)
            acc.update(scene_accuracy)
            for label, ablation in ablations.items():
                out["methods"]["GeoDecoder, " + label] = ablation
                print(row("  " + label, ablation), flush=True)

    gallery_x, query_x = xt.mean(1), xe.mean(1)
    for binary in (False, True):
        t0 = time.perf_counter()
        gallery = GeoGallery(gallery_x, train, binary=binary)
        build_s = time.perf_counter() - t0
        for k in (1, args.k):
            t0 = time.perf_counter()
            pred = gallery.predict(query_x, k=k, bandwidth_km=args.bandwidth_km)
            pred_s = time.perf_counter() - t0
            acc = accuracy(pred, test)
            acc.update(build_s=build_s, predict_ms_per_photo=1e3 * pred_s / len(test))
            name = f"gallery {'binary' if binary else 'float'} k={k}"
            out["methods"][name] = acc
            predictions[name] = pred
            print(row(name, acc, f"{acc['predict_ms_per_photo']:.3f} ms/photo"), flush=True)
    # the choice of scene mode, on rows held out from training (never the test split)
    val = models["GeoDecoder"].validation_indices
    if len(val) and np.array_equal(val, models["flat"].validation_indices):
        print(f"\nvalidation: {len(val):,} training photos held out for early stopping, where the scene mode "
              "is chosen")
        coarse = [f"acc@{t}km" for t in THRESHOLDS if t >= 200]
        validation = {"flat": accuracy(models["flat"].predict(xt[val]), train[val])}
        probs, scene_proba = models["GeoDecoder"].predict_scene_proba(xt[val])
        for mode in SCENE_MODES:
            fine = models["GeoDecoder"].combine_scenes(probs, scene_proba, mode)[-1]
            validation[f"GeoDecoder ({mode})"] = accuracy(hierarchy.centers[-1][fine.argmax(1)], train[val])
        for name, a in validation.items():
            print(row(name, a, f"mean {np.mean([100 * a[c] for c in coarse]):.2f} at 200-2500 km"))
        best = max(SCENE_MODES, key=lambda m: np.mean([validation[f"GeoDecoder ({m})"][c] for c in coarse]))
        print(f"best scene mode on validation (mean accuracy at 200-2500 km): {best}")
        out["validation"] = dict(rows=len(val), best_scene_mode=best, methods=validation)
    if "GeoDecoder" in out["methods"]:
        a = out["methods"]["GeoDecoder"]
        print(f"\nthe true scene of the test photos is the scene classifier's most probable one for "
              f"{100 * a['scene_classifier_is_true']:.1f} %, the most confident queries' for "
              f"{100 * a['scene_confidence_is_true']:.1f} % (scene 0 reveals the most)")
    if args.figure:
        fig = plot_predictions(predictions["GeoDecoder"][:2000], test[:2000], background=train[:30000],
                               title="GeoDecoder on synthetic tokens: 2,000 test photos (orange) vs truth (blue)")
        fig.savefig(args.figure)
        bars = Path(args.figure).with_name(Path(args.figure).stem + "_accuracy.png")
        accuracy_figure(out["methods"], bars)
        print(f"figures -> {args.figure}, {bars}")
    results["synthetic"] = out


def decoder_ablations(model, tokens, scenes, latlon, exclude):
    """How often each scene rule finds the true scene, and the accuracy of every scene mode
    but ``exclude``, of the mixture without the hierarchical product and of the true scene."""
    from pylocalize.geo.model import SCENE_MODES, GeoDecoder

    probs, scene_proba = model.predict_scene_proba(tokens)
    centres = model.hierarchy.centers[-1]
    scene_accuracy = dict(scene_classifier_is_true=float(np.mean(scene_proba.argmax(1) == scenes)),
                          scene_confidence_is_true=float(np.mean(GeoDecoder.confidence_scene(probs) == scenes)))
    names = {"mixture": "scene mixture", "classifier": "scene classifier's top scene",
             "confidence": "most confident scene (paper)"}
    out = {}
    for mode in SCENE_MODES:
        if mode != exclude:
            out[names[mode]] = accuracy(centres[model.combine_scenes(probs, scene_proba, mode)[-1].argmax(1)], latlon)
    no_product = np.einsum("ns,nsc->nc", scene_proba, probs[-1])
    out["scene mixture without product"] = accuracy(centres[no_product.argmax(1)], latlon)
    true_scene = np.eye(scene_proba.shape[1])[scenes]
    out["true scene"] = accuracy(centres[model.combine_scenes(probs, true_scene, "mixture")[-1].argmax(1)], latlon)
    return scene_accuracy, out


def accuracy_figure(methods, path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4.2), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    names = [n for n in methods if ", " not in n]  # ablations stay in the table only
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        ax.bar(np.arange(len(THRESHOLDS)) + i * width, [100 * methods[name][f"acc@{t}km"] for t in THRESHOLDS],
               width, label=name)
    ax.set_xticks(np.arange(len(THRESHOLDS)) + 0.4 - width / 2, [f"{t} km" for t in THRESHOLDS])
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def exif_latlon(path):
    """EXIF GPS (degrees) of a JPEG, or None."""
    from PIL import Image

    with Image.open(path) as im:
        gps = im.getexif().get_ifd(0x8825)
    if not gps or 2 not in gps or 4 not in gps:
        return None

    def degrees(dms, ref):
        d, m, s = (float(v) for v in dms)
        return (-1 if ref in ("S", "W") else 1) * (d + m / 60 + s / 3600)

    return degrees(gps[2], gps.get(1, "N")), degrees(gps[4], gps.get(3, "E"))


def tiny_image(path, size=16):
    """Torralba's 'tiny image': the photo shrunk to size x size colour pixels, zero-mean, unit norm."""
    from PIL import Image

    with Image.open(path) as im:
        x = np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR), np.float32).ravel()
    x -= x.mean()
    return x / (np.linalg.norm(x) + 1e-9)


def real_photos(args, results):
    from pylocalize.geo import great_circle_km

    paths = sorted((Path(args.data) / "lund" / "images").glob("*.jpg"))
    gps = [(p, exif_latlon(p)) for p in paths]
    gps = [(p, g) for p, g in gps if g is not None]
    if len(gps) < 3:
        print(f"\nreal photos: fewer than 3 geotagged JPEGs under {args.data}/lund/images; skipped")
        return
    latlon = np.array([g for _, g in gps])
    x = np.stack([tiny_image(p) for p, _ in gps])
    n = len(latlon)
    errors = {"nearest (k=1)": [], "kernel mode (k=5, 50 m)": [], "mean of the others": [], "random other": []}
    rng = np.random.default_rng(args.seed)
    for i in range(n):
        rest = np.r_[0:i, i + 1:n]
        gallery = GeoGallery(x[rest], latlon[rest])
        q = x[i:i + 1]
        errors["nearest (k=1)"].append(great_circle_km(gallery.predict(q, k=1), latlon[i:i + 1])[0])
        errors["kernel mode (k=5, 50 m)"].append(
            great_circle_km(gallery.predict(q, k=5, bandwidth_km=0.05), latlon[i:i + 1])[0])
        u = latlon[rest].mean(0)  # a few hundred metres: the plane mean is the spherical one here
        errors["mean of the others"].append(great_circle_km(u, latlon[i:i + 1])[0])
        errors["random other"].append(great_circle_km(latlon[rng.choice(rest)], latlon[i:i + 1])[0])
    spread = great_circle_km(latlon[:, None, :].repeat(n, 1).reshape(-1, 2), np.tile(latlon, (n, 1))).max()
    print(f"\nreal photos: {n} Lund JPEGs with EXIF GPS (largest pairwise distance {1e3 * spread:.0f} m); "
          f"leave-one-out, gallery of the other {n - 1}, 16x16 tiny-image embedding")
    print(f"{'method':32s} {'median m':>9s} {'mean m':>8s} {'<= 50 m':>8s}")
    out = {"photos": n, "max_pairwise_m": 1e3 * spread}
    for name, e in errors.items():
        e = 1e3 * np.asarray(e)
        out[name] = {"median_m": float(np.median(e)), "mean_m": float(np.mean(e)),
                     "within_50m": float(np.mean(e <= 50))}
        print(f"{name:32s} {np.median(e):9.1f} {np.mean(e):8.1f} {100 * np.mean(e <= 50):7.1f}%")
    results["real_lund"] = out


def speed(args, latlon, results):
    import s2sphere

    from pylocalize.geo.cells import latlon_to_xyz, xyz_to_latlon
    from pylocalize.geo.retrieval import kernel_mode

    rng = np.random.default_rng(args.seed)
    pts = latlon[rng.integers(0, len(latlon), args.million)] + rng.normal(0, 0.01, (args.million, 2))
    pts[:, 0] = np.clip(pts[:, 0], -90, 90)
    pts[:, 1] = (pts[:, 1] + 180) % 360 - 180
    n = len(pts)
    print(f"\nspeed on {n:,} points (the 100K resampled with 0.01 deg jitter), median of {args.repeat} runs")
    out = {"points": n}

    def timed(fn):
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            value = fn()
            times.append(time.perf_counter() - t0)
        return float(np.median(times)), value

    t, ids = timed(lambda: s2_leaf_ids(pts))
    m = 20000
    t0 = time.perf_counter()
    ref = np.array([s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(a, b)).id() for a, b in pts[:m]],
                   np.uint64)
    t_ref = (time.perf_counter() - t0) * n / m
    assert np.array_equal(ref, ids[:m]), "numpy S2 ids differ from s2sphere"
    out["leaf_ids_s"], out["leaf_ids_s2sphere_s_extrapolated"] = t, t_ref
    print(f"S2 leaf ids, numpy                {t:8.3f} s   ({n / t / 1e6:.1f} M points/s)")
    print(f"S2 leaf ids, s2sphere per point   {t_ref:8.3f} s   (extrapolated from {m:,}; equal ids) "
          f"-> {t_ref / t:.0f}x")
    t, hierarchy = timed(lambda: CellHierarchy.from_latlon(pts))
    out["build_s"], out["cells"] = t, hierarchy.num_cells
    print(f"CellHierarchy.from_latlon (5000/2000/1000, min 50) {t:6.3f} s -> cells {hierarchy.num_cells}")
    t, labels = timed(lambda: hierarchy.cell_of(pts))
    out["cell_of_s"] = t
    print(f"cell_of, 3 granularities          {t:8.3f} s")
    fine = labels[:, -1]
    inside = fine >= 0

    def mean_gps():
        xyz = latlon_to_xyz(pts[inside])
        sums = np.stack([np.bincount(fine[inside], xyz[:, c], hierarchy.num_cells[-1]) for c in range(3)], 1)
        return xyz_to_latlon(sums)

    t, centres = timed(mean_gps)
    out["mean_gps_s"] = t
    print(f"mean GPS of every fine cell       {t:8.3f} s")
    nq, k = 100_000, 10
    neighbours = pts[rng.integers(0, n, (nq, k))]
    sims = rng.uniform(0.5, 1, (nq, k))
    t, _ = timed(lambda: kernel_mode(neighbours, sims, np.ones((nq, k), bool)))
    out["kernel_mode_s_100k_k10"] = t
    print(f"kernel-weighted mode, {nq:,} queries x k={k}  {t:6.3f} s")
    results["speed"] = out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--train", type=int, default=90_000)
    parser.add_argument("--test", type=int, default=10_000)
    parser.add_argument("--max-images", type=int, nargs="+", default=[3000, 800, 250],
                        help="cell granularities for the 90k training photos (default: %(default)s)")
    parser.add_argument("--min-images", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=4)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--scenes", type=int, default=3)
    parser.add_argument("--noise", type=float, default=3.0)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=2, help="hierarchy-independent layers (flat: this + 1)")
    parser.add_argument("--scene-mode", default="mixture", choices=["mixture", "classifier", "confidence"],
                        help="how GeoDecoder combines its scenes (the others are printed as ablations)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--k", type=int, default=10, help="gallery neighbours for the kernel mode")
    parser.add_argument("--bandwidth-km", type=float, default=25.0)
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch threads for the heads (1: fastest for these small models on a shared machine)")
    parser.add_argument("--million", type=int, default=1_000_000, help="points for the speed section")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip", nargs="*", default=[], choices=["synthetic", "real", "speed"])
    parser.add_argument("--figure", default="bench_geo.png", help="world map of GeoDecoder predictions ('' for none)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import pylocalize

    latlon = read_coordinates(Path(args.data) / "geo" / "coordinates_100K.csv")
    print(f"pylocalize {pylocalize.__version__}, {pylocalize.get_num_threads()} core threads, "
          f"torch threads {args.torch_threads}, seed {args.seed}")
    results = {"args": vars(args)}
    t0 = time.perf_counter()
    if "synthetic" not in args.skip:
        from pylocalize.geo.model import torch_threads

        with torch_threads(args.torch_threads):
            synthetic_benchmark(args, latlon, results)
    if "real" not in args.skip:
        real_photos(args, results)
    if "speed" not in args.skip:
        speed(args, latlon, results)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
