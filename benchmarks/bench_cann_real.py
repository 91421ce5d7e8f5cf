#!/usr/bin/env python3
"""CANN on real photos: Strecha (4 scenes, lidar poses) and Lund (29 street photos).

Every image is a query against all the others (leave-one-out) in one pooled database, so
images of other scenes are distractors. Features are pycolmap SIFT (RootSIFT, uint8).

Ground truth for "relevant database image" is co-visibility:
- Strecha: pairs whose verified SIFT matches agree with the ground-truth epipolar geometry
  (Sampson error under 2 px), with at least `--min-shared` such matches;
- Lund: pairs sharing at least `--min-shared` 3D points of a pycolmap incremental SfM model.

Methods compared: exact CANN, ivf CANN, and a global-descriptor baseline built on the
core's k-means (VLAD over RootSIFT, intra- and power-normalised, cosine ranking). Metrics:
recall@1/5/10 (a relevant image among the top k) and mAP, over queries that have at least
one relevant image.

    python benchmarks/bench_cann_real.py [--data ../shared/data] [--max-features 2000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import pylocalize

try:  # quiet COLMAP's per-image logging
    import pycolmap

    pycolmap.logging.minloglevel = 2
except Exception:
    pass


def strecha_camera(path: Path):
    values = [float(v) for v in path.read_text().split()]
    K = np.array(values[0:9]).reshape(3, 3)
    R = np.array(values[12:21]).reshape(3, 3)  # camera-to-world
    C = np.array(values[21:24])
    R_cw = R.T
    return K, R_cw, -R_cw @ C


def extract(image_dir: Path, work: Path, max_features: int, sfm: bool):
    import pycolmap

    db_path = work / "database.db"
    options = pycolmap.FeatureExtractionOptions()
    options.sift.max_num_features = max_features
    pycolmap.extract_features(db_path, image_dir, extraction_options=options)
    pycolmap.match_exhaustive(db_path)
    db = pycolmap.Database.open(db_path)
    images = {im.image_id: im.name for im in db.read_all_images()}
    feats = {}
    for i, name in images.items():
        desc = db.read_descriptors(i)
        desc = np.ascontiguousarray(np.asarray(desc.data if hasattr(desc, "data") else desc), dtype=np.uint8)
        feats[name] = (np.asarray(db.read_keypoints(i))[:, :2], desc)
    pairs = {}
    for pair_id, geometry in zip(*db.read_two_view_geometries()):
        i, j = pycolmap.pair_id_to_image_pair(pair_id)
        pairs[(images[i], images[j])] = geometry.inlier_matches
    db.close()
    model = None
    if sfm:
        # The ground-truth model gets its own, denser features (SfM on 2k features per
        # image registers few of these street photos); retrieval uses the features above.
        sfm_db = work / "sfm.db"
        dense = pycolmap.FeatureExtractionOptions()
        dense.sift.max_num_features = 8192
        pycolmap.extract_features(sfm_db, image_dir, extraction_options=dense)
        pycolmap.match_exhaustive(sfm_db)
        # The incremental mapper's initial pair is random: keep the best of a few seeds.
        for seed in range(4):
            out = work / f"sfm{seed}"
            out.mkdir()
            options = pycolmap.IncrementalPipelineOptions()
            options.random_seed = seed
            recs = pycolmap.incremental_mapping(sfm_db, image_dir, out, options=options)
            for rec in recs.values():
                if model is None or rec.num_reg_images() > model.num_reg_images():
                    model = rec
            if model is not None and model.num_reg_images() >= 0.6 * len(images):
                break
    return feats, pairs, model


def strecha_covisible(scene: Path, feats, pairs, min_shared):
    cams = {p.name.replace(".camera", ""): strecha_camera(p) for p in (scene / "gt_dense_cameras").glob("*.camera")}
    covis = set()
    for (a, b), matches in pairs.items():
        if len(matches) < min_shared or a not in cams or b not in cams:
            continue
        (Ka, Ra, ta), (Kb, Rb, tb) = cams[a], cams[b]
        R = Rb @ Ra.T
        t = tb - R @ ta
        tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
        F = np.linalg.inv(Kb).T @ tx @ R @ np.linalg.inv(Ka)
        xa = np.c_[feats[a][0][matches[:, 0]], np.ones(len(matches))]
        xb = np.c_[feats[b][0][matches[:, 1]], np.ones(len(matches))]
        Fx, Ftx = xa @ F.T, xb @ F
        err = (np.sum(xb * Fx, 1) ** 2) / (Fx[:, 0] ** 2 + Fx[:, 1] ** 2 + Ftx[:, 0] ** 2 + Ftx[:, 1] ** 2)
        if (err < 4.0).sum() >= min_shared:  # Sampson error below 2 px
            covis.add((a, b))
            covis.add((b, a))
    return covis


def sfm_covisible(model, min_shared):
    covis = set()
    if model is None:
        return covis
    points = {}
    for image in model.images.values():
        points[image.name] = {p.point3D_id for p in image.points2D if p.has_point3D()}
    names = sorted(points)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if len(points[a] & points[b]) >= min_shared:
                covis.add((a, b))
                covis.add((b, a))
    return covis


def vlad(descriptor_sets, k, seed):
    """VLAD vectors of every image, vocabulary from the same images."""
    from pylocalize.index.vlad import VLAD

    encoder = VLAD(k, seed).fit(descriptor_sets)
    return np.stack([encoder.encode(d) for d in descriptor_sets])


def evaluate(rankings, names, covis):
    r = {1: [], 5: [], 10: []}
    aps = []
    for qi, ranking in enumerate(rankings):
        q = names[qi]
        total = sum(1 for n in names if (q, n) in covis)
        if total == 0:
            continue
        hits = np.array([(q, names[j]) in covis for j in ranking])
        for k in r:
            r[k].append(hits[:k].any())
        precision = np.cumsum(hits) / (np.arange(len(hits)) + 1)
        aps.append((precision * hits).sum() / total)
    return {f"R@{k}": float(np.mean(v)) for k, v in r.items()} | {"mAP": float(np.mean(aps)), "queries": len(aps)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--max-features", type=int, default=2000)
    parser.add_argument("--min-shared", type=int, default=30)
    parser.add_argument("--p0", default="200,300,400")
    parser.add_argument("--methods", default="exact,ivf")
    parser.add_argument("--vlad-k", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kernel", default="cann", choices=["cann", "gaussian"],
                        help="score kernel; for gaussian the --p0 values are sigmas")
    parser.add_argument("--cache", help="npz file to keep features and ground truth between runs")
    args = parser.parse_args(argv)
    if args.cache and Path(args.cache).is_file():
        cached = np.load(args.cache, allow_pickle=False)
        names = [str(n) for n in cached["names"]]
        counts = cached["counts"]
        descs = np.split(cached["descriptors"], np.cumsum(counts)[:-1])
        covis = {(str(a), str(b)) for a, b in cached["covis"]}
        print(f"features and ground truth from {args.cache}; {len(names)} images pooled\n")
    else:
        data = Path(args.data)
        sets = [(p, False) for p in sorted((data / "strecha").iterdir()) if (p / "images").is_dir()]
        sets.append((data / "lund", True))
        names, descs, covis = [], [], set()
        t0 = time.perf_counter()
        for folder, is_sfm in sets:
            with tempfile.TemporaryDirectory() as tmp:
                feats, pairs, model = extract(folder / "images", Path(tmp), args.max_features, is_sfm)
            local = sfm_covisible(model, args.min_shared) if is_sfm else strecha_covisible(folder, feats, pairs, args.min_shared)
            prefix = folder.name + "/"
            for name in sorted(feats):
                names.append(prefix + name)
                descs.append(feats[name][1])
            covis |= {(prefix + a, prefix + b) for a, b in local}
            print(f"{folder.name}: {len(feats)} images, {sum(len(f[1]) for f in feats.values())} features, "
                  f"{len(local) // 2} co-visible pairs{' (SfM, ' + str(model.num_reg_images()) + ' registered)' if is_sfm and model else ''}")
        print(f"features and ground truth in {time.perf_counter() - t0:.0f} s; {len(names)} images pooled\n")

        if args.cache:
            np.savez(args.cache, names=np.array(names), counts=np.array([len(d) for d in descs]),
                     descriptors=np.concatenate(descs), covis=np.array(sorted(covis)))
    ids = np.concatenate([np.full(len(d), i, np.int64) for i, d in enumerate(descs)])
    all_desc = np.concatenate(descs)
    n = len(names)
    results = {}
    for p0 in [float(v) for v in args.p0.split(",")]:
        for method in args.methods.split(","):
            index = pylocalize.CANNIndex(128, method=method, kernel=args.kernel, p0=p0, sigma=p0, nprobe=8)
            index.add(all_desc, ids)
            if method == "ivf":
                index.train(seed=args.seed)
            t0 = time.perf_counter()
            _, ranked = index.search_batch(descs, n)
            t = (time.perf_counter() - t0) / n
            rankings = [[j for j in r if j != qi and j >= 0] for qi, r in enumerate(ranked)]
            label = "p0" if args.kernel == "cann" else "sigma"
            results[f"CANN {method} {label}={p0:g}"] = evaluate(rankings, names, covis) | {"ms": 1e3 * t}
    t0 = time.perf_counter()
    g = vlad(descs, args.vlad_k, args.seed)
    sims = g @ g.T
    rankings = [[j for j in np.argsort(-sims[qi], kind="stable") if j != qi] for qi in range(n)]
    results[f"VLAD k={args.vlad_k} (global)"] = evaluate(rankings, names, covis) | {"ms": 1e3 * (time.perf_counter() - t0) / n}
    print(f"{'method':28s} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'mAP':>6} {'ms/query':>9}")
    for name, r in results.items():
        print(f"{name:28s} {r['R@1']:6.3f} {r['R@5']:6.3f} {r['R@10']:6.3f} {r['mAP']:6.3f} {r['ms']:9.1f}")
    print(f"({next(iter(results.values()))['queries']} queries with at least one co-visible image)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
