#!/usr/bin/env python3
"""CANN on real photos: Strecha (4 scenes, lidar poses) and Lund (29 street photos).

Every image is a query against all the others (leave-one-out) in one pooled database, so
images of other scenes are distractors. Features are pycolmap SIFT (RootSIFT, uint8).

Ground truth for "relevant database image" is co-visibility:
- Strecha: pairs whose verified SIFT matches agree with the ground-truth epipolar geometry
  (Sampson error under 2 px), with at least `--min-shared` such matches. All Strecha
  images are matched together, not scene by scene: castle-P19 and entry-P10 were taken at
  one place, in one lidar frame, and many of their images see the same walls. Pairs of
  scenes in different frames fail the epipolar test and never count;
- Lund (no poses): pairs with at least `--min-shared` geometrically verified matches among
  8k SIFT features per image (`--lund-truth verified`, the default), or pairs sharing that
  many 3D points of a pycolmap incremental SfM model (`--lund-truth sfm`). The mapper
  registers only part of this forward-moving sequence, so the SfM truth leaves real
  overlaps of unregistered images unlabelled.

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
        dense_db = pycolmap.Database.open(sfm_db)
        dense_names = {im.image_id: im.name for im in dense_db.read_all_images()}
        verified = {}
        for pair_id, geometry in zip(*dense_db.read_two_view_geometries()):
            i, j = pycolmap.pair_id_to_image_pair(pair_id)
            verified[(dense_names[i], dense_names[j])] = len(geometry.inlier_matches)
        dense_db.close()
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
        return feats, pairs, model, verified
    return feats, pairs, model, None


def strecha_images(scenes, work: Path) -> Path:
    """One image folder over all scenes, ``<scene>/<image>`` (file links: COLMAP reads
    linked files but does not follow linked folders)."""
    root = work / "images"
    for scene in scenes:
        (root / scene.name).mkdir(parents=True)
        for image in sorted((scene / "images").iterdir()):
            (root / scene.name / image.name).symlink_to(image.resolve())
    return root


def strecha_covisible(scenes, feats, pairs, min_shared):
    cams = {f"{scene.name}/{p.name.replace('.camera', '')}": strecha_camera(p)
            for scene in scenes for p in (scene / "gt_dense_cameras").glob("*.camera")}
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


def verified_covisible(verified, min_shared):
    """Pairs with at least ``min_shared`` geometrically verified matches (both orders)."""
    covis = set()
    for (a, b), inliers in verified.items():
        if inliers >= min_shared:
            covis |= {(a, b), (b, a)}
    return covis


def vlad(descriptor_sets, k, seed):
    """VLAD vectors of every image, vocabulary from the same images."""
    from pylocalize.index.vlad import VLAD

    encoder = VLAD(k, seed).fit(descriptor_sets)
    return np.stack([encoder.encode(d) for d in descriptor_sets])


def evaluate(rankings, names, covis):
    """R@1/5/10 and mAP over the queries with a co-visible image; ``aps`` holds each
    query's AP (for paired comparisons) and ``mAP <set>`` the mean per dataset."""
    r = {1: [], 5: [], 10: []}
    aps, sets = [], []
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
        sets.append(q.split("/")[0])
    aps, sets = np.array(aps), np.array(sets)
    return ({f"R@{k}": float(np.mean(v)) for k, v in r.items()} | {"mAP": float(np.mean(aps)), "queries": len(aps)}
            | {f"mAP {name}": float(aps[sets == name].mean()) for name in sorted(set(sets))} | {"aps": aps})


def paired_interval(a, b, seed=0, rounds=10_000):
    """Mean of ``a - b`` (per-query APs of two methods) and its 95 % bootstrap interval."""
    d = np.asarray(a) - np.asarray(b)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), (rounds, len(d)))].mean(1)
    return float(d.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--max-features", type=int, default=2000)
    parser.add_argument("--min-shared", type=int, default=30)
    parser.add_argument("--p0", default="200,300,400")
    parser.add_argument("--methods", default="exact,ivf")
    parser.add_argument("--vlad-k", default="64,256", help="VLAD vocabulary sizes (the best is compared)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kernel", default="cann", choices=["cann", "gaussian"],
                        help="score kernel; for gaussian the --p0 values are sigmas")
    parser.add_argument("--lund-truth", default="verified", choices=["verified", "sfm"],
                        help="Lund co-visibility: verified two-view geometry of every pair (8k features), or "
                             "3D points shared in the SfM model (which registers only part of the sequence)")
    parser.add_argument("--cache", help="npz file to keep features and ground truth between runs")
    args = parser.parse_args(argv)
    if args.cache and Path(args.cache).is_file():
        cached = np.load(args.cache, allow_pickle=False)
        if "lund_verified" not in cached.files:
            raise SystemExit(f"{args.cache} was written by an older version of this benchmark: delete it to rebuild")
        names = [str(n) for n in cached["names"]]
        counts = cached["counts"]
        descs = np.split(cached["descriptors"], np.cumsum(counts)[:-1])
        covis = {(str(a), str(b)) for a, b in cached["covis"]}
        lund = {k: {(str(a), str(b)) for a, b in cached[f"lund_{k}"]} for k in ("sfm", "verified")}
        print(f"features and ground truth from {args.cache}; {len(names)} images pooled\n")
    else:
        data = Path(args.data)
        scenes = [p for p in sorted((data / "strecha").iterdir()) if (p / "images").is_dir()]
        names, descs, covis = [], [], set()
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            feats, pairs, _, _ = extract(strecha_images(scenes, Path(tmp)), Path(tmp), args.max_features, False)
        local = strecha_covisible(scenes, feats, pairs, args.min_shared)
        across = sum(a.split("/")[0] != b.split("/")[0] for a, b in local) // 2
        for name in sorted(feats):
            names.append("strecha/" + name)
            descs.append(feats[name][1])
        covis |= {("strecha/" + a, "strecha/" + b) for a, b in local}
        print(f"strecha ({len(scenes)} scenes): {len(feats)} images, {sum(len(f[1]) for f in feats.values())} "
              f"features, {len(local) // 2} co-visible pairs, {across} of them across scenes")
        with tempfile.TemporaryDirectory() as tmp:
            feats, pairs, model, verified = extract(data / "lund" / "images", Path(tmp), args.max_features, True)
        for name in sorted(feats):
            names.append("lund/" + name)
            descs.append(feats[name][1])
        lund = {"sfm": sfm_covisible(model, args.min_shared),
                "verified": verified_covisible(verified, args.min_shared)}
        lund = {k: {("lund/" + a, "lund/" + b) for a, b in v} for k, v in lund.items()}
        print(f"lund: {len(feats)} images, {sum(len(f[1]) for f in feats.values())} features, "
              f"{len(lund['sfm']) // 2} co-visible pairs in SfM ({model.num_reg_images() if model else 0} "
              f"registered), {len(lund['verified']) // 2} verified")
        print(f"features and ground truth in {time.perf_counter() - t0:.0f} s; {len(names)} images pooled\n")

        if args.cache:
            np.savez(args.cache, names=np.array(names), counts=np.array([len(d) for d in descs]),
                     descriptors=np.concatenate(descs), covis=np.array(sorted(covis)),
                     **{f"lund_{k}": np.array(sorted(v)).reshape(-1, 2) for k, v in lund.items()})
    covis = covis | lund[args.lund_truth]
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
    for words in [int(v) for v in args.vlad_k.split(",")]:
        t0 = time.perf_counter()
        g = vlad(descs, words, args.seed)
        sims = g @ g.T
        rankings = [[j for j in np.argsort(-sims[qi], kind="stable") if j != qi] for qi in range(n)]
        ms = 1e3 * (time.perf_counter() - t0) / n
        results[f"VLAD k={words} (global)"] = evaluate(rankings, names, covis) | {"ms": ms}
    per_set = sorted(k for k in next(iter(results.values())) if k.startswith("mAP "))
    print(f"{'method':28s} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'mAP':>6} " + " ".join(f"{k:>12s}" for k in per_set)
          + f" {'ms/query':>9}")
    for name, r in results.items():
        print(f"{name:28s} {r['R@1']:6.3f} {r['R@5']:6.3f} {r['R@10']:6.3f} {r['mAP']:6.3f} "
              + " ".join(f"{r[k]:12.3f}" for k in per_set) + f" {r['ms']:9.1f}")
    print(f"({next(iter(results.values()))['queries']} queries with at least one co-visible image)")
    best_vlad = max((k for k in results if k.startswith("VLAD")), key=lambda k: results[k]["mAP"])
    for name in results:
        if name.startswith("CANN"):
            mean, low, high = paired_interval(results[name]["aps"], results[best_vlad]["aps"], args.seed)
            print(f"{name} - {best_vlad}: AP {mean:+.3f} per query (95 % bootstrap interval {low:+.3f} .. {high:+.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
