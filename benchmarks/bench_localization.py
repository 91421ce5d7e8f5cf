#!/usr/bin/env python3
"""Visual localization on real photos: Strecha leave-one-out and Lund.

Strecha (4 scenes, lidar poses, 1536x1024): for every image, a map is built from the other
images of its scene with their ground-truth poses, then the image is localized three ways
with the same features, matcher and LO-RANSAC:

- CANN: the map's CANN index retrieves the top ``--k`` database images;
- exhaustive: 2D-3D matching against every database image (the accuracy reference);
- VLAD: a global-descriptor baseline (vocabulary from the map's images) picks the top k.

Per query: pose error, and seconds per stage (features, retrieval, matching, pose).
Speed-up is reported end to end and for the part after feature extraction (the same
OpenCV SIFT runs in every variant).

With ``--pooled``, the same queries are also localized in one map of all four scenes (held out
by folds), a map of 33-36 images where most database images show another place.

Lund (29 street photos, EXIF only): an SfM map from 24 images, the other 5 localized with
EXIF cameras, compared with their poses in an SfM model of all 29 after a similarity
alignment on the 24 shared images; metric scale from the photos' EXIF GPS.

    python benchmarks/bench_localization.py [--data ../shared/data] [--json out.json] [--figure out.png]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import pylocalize
from pylocalize.features import extract_sift
from pylocalize.geometry import Camera, similarity_from_points, transform_pose
from pylocalize.index.cann_pq import CANNPQIndex
from pylocalize.index.vlad import VLAD
from pylocalize.localization import Map, pose_error, read_strecha_camera
from pylocalize.localization.map import read_image

try:  # quiet COLMAP's logging
    import pycolmap

    pycolmap.logging.minloglevel = 2
except Exception:
    pass

SCENES = ("fountain-P11", "Herz-Jesus-P8", "castle-P19", "entry-P10")
# fountain-P11, castle-P19 and entry-P10 were taken at one place, in one lidar frame: their
# images share co-visible walls that pass the ground-truth epipolar test (bench_cann_real.py)
SITES = {"fountain-P11": 0, "Herz-Jesus-P8": 1, "castle-P19": 0, "entry-P10": 0}


def centre(P):
    return -P[:, :3].T @ P[:, 3]


def strecha(args, rows):
    from tqdm import tqdm

    for scene in SCENES:
        folder = Path(args.data) / "strecha" / scene
        cams = sorted((folder / "gt_dense_cameras").glob("*.camera"))
        names = [c.name[: -len(".camera")] for c in cams]
        gt = [read_strecha_camera(c) for c in cams]
        images = [read_image(folder / "images" / n) for n in names]
        feats = [extract_sift(im, args.max_features) for im in images]
        h, w = images[0].shape[:2]
        cameras = [Camera.from_K(K, w, h) for K, _ in gt]
        for q in tqdm(range(len(names)), desc=scene, leave=False):
            db = [i for i in range(len(names)) if i != q]
            t0 = time.perf_counter()
            m = Map.from_features([names[i] for i in db], [cameras[i] for i in db], np.stack([gt[i][1] for i in db]),
                                  [feats[i][0] for i in db], [feats[i][1] for i in db],
                                  max_features=args.max_features)
            build = time.perf_counter() - t0
            encoder = VLAD(args.vlad_words, seed=0).fit(m.descriptors)
            gallery = np.stack([encoder.encode(d) for d in m.descriptors])
            variants = {f"cann k={k}": dict(k=k) for k in args.k}
            variants["exhaustive"] = dict(k=None)
            variants[f"vlad k={max(args.k)}"] = dict(
                retrieval=lambda kp, d: encoder.rank(encoder.encode(d), gallery)[: max(args.k)])
            if args.compressed:  # after the others: compress() replaces the map's index
                variants.update({f"cann k={k} compressed": dict(k=k, _compress=True) for k in args.k})
            for variant, options in variants.items():
                if options.pop("_compress", False) and not isinstance(m.index, CANNPQIndex):
                    m.compress()
                r = m.localize(images[q], cameras[q], **options)
                t_err, r_err = pose_error(r.cam_from_world, gt[q][1]) if r.success else (np.inf, np.inf)
                rows.append(dict(dataset="strecha", scene=scene, query=names[q], variant=variant, success=r.success,
                                 t_err=t_err, r_err=r_err, inliers=r.num_inliers, map_points=len(m.points3D),
                                 map_seconds=build, **{f"t_{k}": v for k, v in r.timings.items()}))


def strecha_pooled(args, rows):
    """One map of all four scenes (a map larger than one place, where retrieval matters):
    fold j holds out every image whose index within its scene is j modulo ``--folds`` and
    maps the rest. Each site keeps its own lidar frame, moved 10 km apart from the others
    so that no image pair of two sites looks geometrically plausible. fountain-P11,
    castle-P19 and entry-P10 are one site: their frames coincide (an entry query localized
    through castle images lands within 2 cm of its own ground truth, and fountain images see
    castle walls), so they share a shift."""
    from tqdm import tqdm

    scenes = []
    for scene in SCENES:
        folder = Path(args.data) / "strecha" / scene
        cams = sorted((folder / "gt_dense_cameras").glob("*.camera"))
        shift = np.array([10_000.0 * SITES[scene], 0.0, 0.0])
        for j, c in enumerate(cams):
            name = c.name[: -len(".camera")]
            K, P = read_strecha_camera(c)
            P = np.c_[P[:, :3], P[:, 3] - P[:, :3] @ shift]  # world moved by +shift
            image = read_image(folder / "images" / name)
            h, w = image.shape[:2]
            scenes.append(dict(scene=scene, name=f"{scene}/{name}", index=j, camera=Camera.from_K(K, w, h), pose=P,
                               image=image, features=extract_sift(image, args.max_features)))
    for fold in tqdm(range(args.folds), desc="pooled folds", leave=False):
        db = [v for v in scenes if v["index"] % args.folds != fold]
        queries = [v for v in scenes if v["index"] % args.folds == fold]
        t0 = time.perf_counter()
        m = Map.from_features([v["name"] for v in db], [v["camera"] for v in db], np.stack([v["pose"] for v in db]),
                              [v["features"][0] for v in db], [v["features"][1] for v in db],
                              max_features=args.max_features)
        build = time.perf_counter() - t0
        variants = {f"cann k={k}": dict(k=k) for k in args.k}
        variants["exhaustive"] = dict(k=None)
        for v in queries:
            for variant, options in variants.items():
                r = m.localize(v["image"], v["camera"], **options)
                t_err, r_err = pose_error(r.cam_from_world, v["pose"]) if r.success else (np.inf, np.inf)
                rows.append(dict(dataset="strecha-pooled", scene=v["scene"], query=v["name"], variant=variant,
                                 success=r.success, t_err=t_err, r_err=r_err, inliers=r.num_inliers,
                                 map_images=len(db), map_points=len(m.points3D), map_seconds=build,
                                 **{f"t_{k}": val for k, val in r.timings.items()}))


def summarize_strecha(rows, dataset="strecha"):
    out = {}
    variants = list(dict.fromkeys(r["variant"] for r in rows if r["dataset"] == dataset))
    for variant in variants:
        sel = [r for r in rows if r["dataset"] == dataset and r["variant"] == variant]
        t = np.array([r["t_err"] for r in sel])
        a = np.array([r["r_err"] for r in sel])
        after = np.array([r.get("t_retrieval", 0) + r.get("t_matching", 0) + r.get("t_pose", 0) for r in sel])
        total = after + np.array([r.get("t_features", 0) for r in sel])
        out[variant] = dict(queries=len(sel), median_t_cm=100 * float(np.median(t)), median_r_deg=float(np.median(a)),
                            within_25cm_2deg=float(np.mean((t <= 0.25) & (a <= 2))),
                            within_5cm_05deg=float(np.mean((t <= 0.05) & (a <= 0.5))),
                            median_total_s=float(np.median(total)), median_after_features_s=float(np.median(after)),
                            median_features_s=float(np.median([r.get("t_features", 0) for r in sel])),
                            median_retrieval_s=float(np.median([r.get("t_retrieval", 0) for r in sel])),
                            median_matching_s=float(np.median([r.get("t_matching", 0) for r in sel])),
                            median_pose_s=float(np.median([r.get("t_pose", 0) for r in sel])))
    return out


def gps_enu(path):
    """East-north-up metres of an image's EXIF GPS position (local tangent plane)."""
    from PIL import Image

    with Image.open(path) as image:
        gps = image.getexif().get_ifd(0x8825)
    if not gps or 2 not in gps or 4 not in gps:
        return None

    def degrees(value, ref):
        d = float(value[0]) + float(value[1]) / 60 + float(value[2]) / 3600
        return -d if ref in ("S", "W") else d

    return degrees(gps[2], gps.get(1, "N")), degrees(gps[4], gps.get(3, "E")), float(gps.get(6, 0.0))


def lund(args, rows):
    import shutil
    import tempfile

    folder = Path(args.data) / "lund" / "images"
    names = sorted(p.name for p in folder.glob("*.jpg"))
    queries = names[2::6][:5]
    with tempfile.TemporaryDirectory() as tmp:
        db_dir = Path(tmp) / "db"
        db_dir.mkdir()
        for n in names:
            if n not in queries:
                shutil.copy(folder / n, db_dir / n)
        t0 = time.perf_counter()
        m = Map.from_images(db_dir, max_features=args.max_features, progress=True)
        build = time.perf_counter() - t0
    reference = Map.from_images(folder, max_features=args.max_features, progress=True)
    ref = dict(zip(reference.names, reference.cam_from_world))
    shared = [n for n in m.names if n in ref]
    s, R, t = similarity_from_points(np.array([centre(m.cam_from_world[m.names.index(n)]) for n in shared]),
                                     np.array([centre(ref[n]) for n in shared]))
    # metric scale of the reference model from EXIF GPS (a few metres of noise per photo)
    geo = {n: gps_enu(folder / n) for n in reference.names}
    known = [n for n in reference.names if geo[n] is not None]
    lat0, lon0 = np.mean([geo[n][0] for n in known]), np.mean([geo[n][1] for n in known])
    enu = np.array([[np.radians(geo[n][1] - lon0) * 6371000 * np.cos(np.radians(lat0)),
                     np.radians(geo[n][0] - lat0) * 6371000, 0.0] for n in known])
    metres_per_unit = similarity_from_points(np.array([centre(ref[n]) for n in known]), enu)[0]
    # how well the two models agree on the images they share (bounds what localization can show)
    mapped = {n: m.cam_from_world[m.names.index(n)] for n in shared}
    residual = [np.linalg.norm(s * R @ centre(mapped[n]) + t - centre(ref[n])) * metres_per_unit for n in shared]
    model_rotation = [pose_error(transform_pose(mapped[n], s, R, t), ref[n])[1] for n in shared]
    print(f"lund: map {len(m.names)}/{len(names) - len(queries)} images registered, reference {len(reference.names)}/"
          f"{len(names)}; {metres_per_unit:.3f} m per model unit from EXIF GPS; the two models disagree on shared "
          f"images by a median {np.median(residual):.2f} m / {np.median(model_rotation):.2f} deg")
    for n in queries:
        # the queries come from the phone that took the map's photos: use its camera as SfM
        # calibrated it (EXIF focal length is ~30 % off on these photos)
        camera = m.cameras[0]
        r = m.localize(folder / n, camera)
        if r.success and n in ref:
            t_err, r_err = pose_error(transform_pose(r.cam_from_world, s, R, t), ref[n])
            t_err *= metres_per_unit
        else:
            t_err = r_err = np.inf
        rows.append(dict(dataset="lund", query=n, variant="cann k=10", success=r.success, in_reference=n in ref,
                         t_err=t_err, r_err=r_err, inliers=r.num_inliers, map_images=len(m.names),
                         map_points=len(m.points3D), map_seconds=build, metres_per_unit=metres_per_unit,
                         model_disagreement_m=float(np.median(residual)),
                         model_disagreement_deg=float(np.median(model_rotation)),
                         reason=r.reason, **{f"t_{k}": v for k, v in r.timings.items()}))


def figure(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    variants = list(dict.fromkeys(r["variant"] for r in rows if r["dataset"] == "strecha"))
    for variant, colour in zip(variants, ("tab:blue", "tab:cyan", "tab:purple", "tab:green", "tab:orange")):
        sel = [r for r in rows if r["dataset"] == "strecha" and r["variant"] == variant]
        for ax, key, unit in ((axes[0], "t_err", 100.0), (axes[1], "r_err", 1.0)):
            x = np.sort(np.array([r[key] for r in sel]) * unit)
            ax.step(x, np.arange(1, len(x) + 1) / len(x), where="post", c=colour, label=variant)
    axes[0].set(xscale="log", xlabel="translation error (cm)", ylabel="fraction of queries",
                title="Strecha leave-one-out")
    axes[1].set(xscale="log", xlabel="rotation error (deg)", title="Strecha leave-one-out")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--max-features", type=int, default=4000)
    parser.add_argument("--k", type=int, nargs="+", default=[3, 5], help="images retrieved by CANN (VLAD: the largest)")
    parser.add_argument("--vlad-words", type=int, default=64)
    parser.add_argument("--skip-lund", action="store_true")
    parser.add_argument("--skip-strecha", action="store_true")
    parser.add_argument("--pooled", action="store_true",
                        help="also localize in one map of all four Strecha scenes (--folds held-out folds)")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--compressed", action="store_true",
                        help="also localize each Strecha query with the map compressed (Map.compress: 32-byte codes)")
    parser.add_argument("--json", help="write every row and the summary here")
    parser.add_argument("--figure", default="bench_localization.png")
    args = parser.parse_args(argv)
    pylocalize.set_num_threads(-1)
    rows, summary = [], {}
    if not args.skip_strecha:
        strecha(args, rows)
        summary = summarize_strecha(rows)
        print_strecha(summary, args.k)

        def after(r):
            return r.get("t_retrieval", 0) + r.get("t_matching", 0) + r.get("t_pose", 0)

        for scene in SCENES:  # the speed-up grows with the map: about (database images) / k
            sel = [r for r in rows if r["dataset"] == "strecha" and r["scene"] == scene]
            ex = np.median([after(r) for r in sel if r["variant"] == "exhaustive"])
            ratios = ", ".join(f"k={k}: {ex / np.median([after(r) for r in sel if r['variant'] == f'cann k={k}']):.2f}x"
                               for k in args.k)
            print(f"  {scene}: CANN vs exhaustive after feature extraction {ratios}")
    if args.pooled:
        strecha_pooled(args, rows)
        summary["pooled"] = summarize_strecha(rows, "strecha-pooled")
        print(f"\nOne map of all four scenes, {args.folds} folds "
              f"({min(r['map_images'] for r in rows if r['dataset'] == 'strecha-pooled')}-"
              f"{max(r['map_images'] for r in rows if r['dataset'] == 'strecha-pooled')} database images per map)")
        print_strecha(summary["pooled"], args.k)
    if not args.skip_lund:
        lund(args, rows)
        for r in (r for r in rows if r["dataset"] == "lund"):
            print(f"lund {r['query']}: {'ok' if r['success'] else 'failed'} {r['t_err']:.2f} m {r['r_err']:.2f} deg "
                  f"{r['inliers']} inliers ({r['map_images']}-image map, {r['map_points']} points) {r['reason']}")
    if any(r["dataset"] == "strecha" for r in rows):
        figure(rows, args.figure)
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1, default=float))
    return 0


def print_strecha(summary, k):
    print(f"Strecha leave-one-out, {summary['exhaustive']['queries']} queries")
    print(f"{'variant':<11} {'median cm':>9} {'median deg':>10} {'(25cm,2deg)':>11} {'(5cm,0.5deg)':>12} "
          f"{'total s':>8} {'after SIFT s':>12} {'retrieval':>9} {'matching':>8} {'pose':>6}")
    for variant, s in summary.items():
        print(f"{variant:<11} {s['median_t_cm']:>9.2f} {s['median_r_deg']:>10.3f} "
              f"{100 * s['within_25cm_2deg']:>10.1f}% {100 * s['within_5cm_05deg']:>11.1f}% "
              f"{s['median_total_s']:>8.3f} {s['median_after_features_s']:>12.3f} "
              f"{s['median_retrieval_s']:>9.3f} {s['median_matching_s']:>8.3f} {s['median_pose_s']:>6.3f}")
    ex = summary["exhaustive"]
    for variant, s in summary.items():
        if variant.startswith("cann"):
            print(f"{variant} vs exhaustive: {ex['median_total_s'] / s['median_total_s']:.2f}x end to end, "
                  f"{ex['median_after_features_s'] / s['median_after_features_s']:.2f}x after feature extraction")


if __name__ == "__main__":
    sys.exit(main())
