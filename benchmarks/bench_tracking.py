#!/usr/bin/env python3
"""Tracking a camera stream against per-frame localization of the same frames.

Synthetic (default 500 frames at 640x480, 30 Hz): a walk round the courtyard
(:func:`pylocalize.datasets.camera_paths.walking_path`: ~1.4 m/s, the heading sweeping
+-25 deg, an occluder sweeping past twice, 20 dropped frames, a teleport), rendered, then

- tracked with :class:`pylocalize.localization.tracking.Tracker` (SIFT at half resolution,
  1,000 features; prediction, guided matching, refinement from the prior; CANN
  relocalization when lost), features included in every frame's latency;
- localized frame by frame with :meth:`Map.localize` (SIFT of the full frame, the map's
  feature budget, CANN top 10, matching, LO-RANSAC), the strongest peer we have: the
  per-frame pipeline of the same map. It takes turns with the first tracker frame by frame,
  so that a shared machine's load weighs on both alike (further ``--scales`` and ``--orb``
  run after, on their own).

Reported: rate (median latency) and latency percentiles of both and their ratio, median
position and rotation error of both on the same frames, share of frames with a pose, tracked,
relocalized, frames to recover after the teleport and after the dropped frames, ATE and RPE;
and, on the tracked frames, guided matching in the radius (the grid) against the core's kNN
of every frame feature over the same visible map points (``assign``, 2 nearest).

Strecha (``--strecha``): each scene's images in name order as a sparse sequence; frame k is
tracked against the map of the other images (the leave-one-out map of bench_localization.py)
with the motion state carried from frame k-1 (:meth:`Tracker.continue_from`), and localized
per frame on the same map.

    python benchmarks/bench_tracking.py [--frames 500] [--strecha] [--json out.json] [--figure out.png]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

import pylocalize
from pylocalize.geometry import Camera, rotation_error_deg
from pylocalize.localization import Map, read_strecha_camera
from pylocalize.localization.tracking import Tracker, TrackerOptions, guided_matches
from pylocalize.localization.trajectory import estimates_array, plot_trajectory, recovery_frames, sequence_summary
from pylocalize.localization.triangulation import camera_centres

try:  # quiet COLMAP's logging
    import pycolmap

    pycolmap.logging.minloglevel = 2
except Exception:
    pass

ROOT = Path(__file__).resolve().parents[1]


def errors(poses, gt):
    """(position error m, rotation error deg) per frame; NaN where no pose."""
    valid = np.isfinite(poses).all(axis=(1, 2))
    t_err = np.full(len(poses), np.nan)
    r_err = np.full(len(poses), np.nan)
    t_err[valid] = np.linalg.norm(camera_centres(poses[valid]) - camera_centres(gt[valid]), axis=1)
    r_err[valid] = rotation_error_deg(poses[valid][:, :, :3], gt[valid][:, :, :3])
    return t_err, r_err


def load_or_build_map(scene, cache: Path, key: str, orb: bool = False, patches: bool = True):
    path = cache / f"map-{key}{'-orb' if orb else ''}"
    if path.is_dir():
        m = Map.load(path)
    else:
        layers = {"layers": ("sift", "orb")} if orb else {}  # binary layers: Map.add_layer (issue 21, binmap)
        m = Map.from_views(scene.images, scene.K, scene.cam_from_world, scene.names, max_features=3000, progress=True,
                           **layers)
        m.save(path)
    if patches and "sift" not in m.patches:  # the points' image patches, for sub-pixel tracking
        m.add_patches("sift", scene.images, progress=True)
        m.save(path)
    return m


def matching_peer(tracker, frames, results, features, sample=40):
    """Median ms of guided matching (grid, radius) and of the core's kNN of every frame feature
    over the same visible points (2 nearest: what a ratio test needs), on tracked frames."""
    from pylocalize.index.knn import assign

    grid, knn = [], []
    tracked = [k for k, r in enumerate(results) if r.status == "tracked"][:sample]
    radius = tracker.options.search_radius_px
    for k in tracked:
        kp, desc = features[k]
        pixels, cand, ids = tracker.local_map(results[k].predicted, margin_px=radius)
        t0 = time.perf_counter()
        guided_matches(kp, desc, pixels, cand, ids, radius, "l2", tracker.options.ratio)
        grid.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        assign(desc, cand, 2)
        knn.append(time.perf_counter() - t0)
    return {"grid_ms": 1000 * float(np.median(grid)), "core_knn_ms": 1000 * float(np.median(knn)),
            "frames": len(tracked), "visible_points": int(len(ids)) if tracked else 0}


def synthetic(args):
    from tqdm import tqdm

    from pylocalize.datasets.camera_paths import render_path, walking_path
    from pylocalize.datasets.synthetic import courtyard_scene

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    scene = courtyard_scene(args.views, seed=args.seed, width=args.width, height=args.height)
    m = load_or_build_map(scene, cache, f"{args.views}-{args.seed}-{args.width}x{args.height}", args.orb,
                          args.patches)
    print(f"scene and {m}: {time.perf_counter() - t0:.0f} s")
    n = args.frames
    events = {"teleports": [int(0.7 * n)], "drops": [(int(0.4 * n), 20)],
              "occlusions": [(int(0.2 * n), 8), (int(0.85 * n), 6)]}
    path = walking_path(n, seed=args.seed + 1, **events)
    frames = list(render_path(scene, path, progress=True))
    camera = scene.camera
    configs = [(f"SIFT at {scale}", {"options": TrackerOptions(scale=scale, max_features=args.max_features)})
               for scale in args.scales]
    if args.orb:
        configs.append(("ORB (map layer)", {"features": "orb"}))
        for features, levels in args.orb_stream:  # frames described with fewer features and pyramid levels
            from pylocalize.features.orb import OrbExtractor

            configs.append((f"ORB {features} x {levels} levels",
                            {"features": "orb", "extractor": OrbExtractor(max_features=features, num_levels=levels)}))
        if args.lead == "orb":  # the last ORB configuration takes turns with per-frame localization
            configs.insert(0, configs.pop())
    if args.patches:
        for label, config in list(configs):
            if args.without_patches:
                options = config.get("options", TrackerOptions())
                configs.append((f"{label}, no patches", {**config, "options": replace(options, patches=None)}))
        configs = [(f"{label} + patches" if "no patches" not in label else label, config)
                   for label, config in configs]
    # the first tracker and per-frame localization take turns frame by frame, so that the load of
    # a shared machine weighs on both alike and their ratio holds
    every = args.baseline_every
    baseline, baseline_seconds, first_results = {}, {}, []
    first = Tracker(m, camera, **configs[0][1])
    for k in tqdm(range(n), desc=f"track ({configs[0][0]}) and localize per frame", leave=False):
        first_results.append(first.track(frames[k], path.timestamps[k]))
        if k % every == 0:
            t0 = time.perf_counter()
            baseline[k] = m.localize(frames[k], camera, covariance=False)
            baseline_seconds[k] = time.perf_counter() - t0
    gt = path.cam_from_world
    base_poses = np.full_like(gt, np.nan)
    for k, r in baseline.items():
        if r.success:
            base_poses[k] = r.cam_from_world
    bt_err, br_err = errors(base_poses, gt)
    same = np.array(sorted(baseline))
    base_ms = np.array([baseline_seconds[k] for k in same]) * 1000
    out = {
        "frames": n, "size": [args.width, args.height], "map": {"images": len(m.names), "points": len(m.points3D)},
        "events": {int(k): v for k, v in path.events.items()},
        "per_frame_localize": {"frames": len(same), "with_pose": float(np.isfinite(bt_err[same]).mean()),
                               "median_t_err_m": float(np.nanmedian(bt_err[same])),
                               "median_r_err_deg": float(np.nanmedian(br_err[same])),
                               "latency_ms": {p: float(np.percentile(base_ms, q)) for p, q in
                                              (("p50", 50), ("p90", 90), ("p99", 99))},
                               "per_frame": {"t_err_m": bt_err.tolist(), "r_err_deg": br_err.tolist(),
                                             "ms": base_ms.tolist()}},
        "tracker": {},
    }
    for label, config in configs:
        if label == configs[0][0]:
            tracker, results = first, first_results
        else:
            tracker, results = Tracker(m, camera, **config), []
            for frame, stamp in tqdm(list(zip(frames, path.timestamps)), desc=f"track, {label}", leave=False):
                results.append(tracker.track(frame, stamp))
        poses = estimates_array(results)
        t_err, r_err = errors(poses, gt)
        summary = sequence_summary(results, gt)
        track_ms = np.array([r.timings["total"] for r in results]) * 1000
        statuses = [r.status for r in results]
        out["tracker"][label] = {
            **summary, "median_t_err_m": float(np.nanmedian(t_err[same])),
            "median_r_err_deg": float(np.nanmedian(r_err[same])),
            "recovery_frames": recovery_frames(statuses, list(path.events)),
            "ms_by_step": {step: 1000 * float(np.median([r.timings.get(step, 0.0) for r in results
                                                         if r.status == "tracked"]))
                           for step in ("features", "local map", "matching", "pose", "patches")},
            "ms_relocalized": [float(track_ms[k]) for k, s in enumerate(statuses) if s == "relocalized"],
            "speedup_median": float(np.median(base_ms) / np.median(track_ms[same])),
            "speedup_mean": float(np.mean(base_ms) / np.mean(track_ms[same])),
            "per_frame": {"t_err_m": t_err.tolist(), "r_err_deg": r_err.tolist(), "status": statuses,
                          "ms": track_ms.tolist(), "inliers": [r.num_inliers for r in results]}}
        if label == configs[0][0] and tracker.layer.metric == "l2":  # the peer kNN is the float one
            features = {k: tracker.extractor(frames[k]) for k, r in enumerate(results) if r.status == "tracked"}
            out["matching_peer"] = matching_peer(tracker, frames, results, features)
        if label == configs[0][0]:
            headline = poses, statuses
    poses, statuses = headline
    if args.figure:
        plot_trajectory(args.figure, poses, gt, statuses, path.timestamps, m.points3D,
                        title=f"courtyard walk, {n} frames at {args.width}x{args.height}: tracker")
    return out


def strecha(args):
    from tqdm import tqdm

    from pylocalize.features import extract_sift
    from pylocalize.io import read_image

    rows = []
    for scene in args.scenes:
        folder = Path(args.data) / "strecha" / scene
        cams = sorted((folder / "gt_dense_cameras").glob("*.camera"))
        names = [c.name[: -len(".camera")] for c in cams]
        gt = [read_strecha_camera(c) for c in cams]
        images = [read_image(folder / "images" / name) for name in names]
        feats = [extract_sift(im, 4000) for im in images]
        h, w = images[0].shape[:2]
        cameras = [Camera.from_K(K, w, h) for K, _ in gt]
        base_options = TrackerOptions(scale=args.scales[0], max_features=args.max_features)
        variants = {"tracker": base_options}
        for angle in args.patch_angles or []:
            variants[f"patches within {angle:g} deg"] = replace(base_options, max_patch_angle_deg=angle)
        if args.patches and args.without_patches:
            variants["no patches"] = replace(base_options, patches=None)
        previous = {}
        for q in tqdm(range(len(names)), desc=scene, leave=False):
            db = [i for i in range(len(names)) if i != q]
            m = Map.from_features([names[i] for i in db], [cameras[i] for i in db], np.stack([gt[i][1] for i in db]),
                                  [feats[i][0] for i in db], [feats[i][1] for i in db], max_features=4000)
            if args.patches:
                m.add_patches("sift", [images[i] for i in db])
            results = {}
            for label, options in variants.items():
                tracker = Tracker(m, cameras[q], options=options)
                if label in previous:
                    tracker.continue_from(previous[label])
                # a sparse sequence: one second between images (constant velocity over that step)
                results[label] = tracker.track(images[q], float(q))
                previous[label] = tracker
            r = results["tracker"]
            t0 = time.perf_counter()
            base = m.localize(images[q], cameras[q], covariance=False)
            base_s = time.perf_counter() - t0
            row = dict(scene=scene, image=names[q], status=r.status, method=r.method, ms=1000 * r.timings["total"],
                       base_ms=1000 * base_s, base_success=base.success)
            for key, pose in (("", r.cam_from_world), ("base_", base.cam_from_world if base.success else None)):
                if pose is None:
                    row[key + "t_err"], row[key + "r_err"] = np.inf, np.inf
                else:
                    t, rr = errors(pose[None], gt[q][1][None])
                    row[key + "t_err"], row[key + "r_err"] = float(t[0]), float(rr[0])
            for label, result in results.items():
                if label != "tracker":
                    t, rr = (errors(result.cam_from_world[None], gt[q][1][None]) if result.success else
                             ([np.inf], [np.inf]))
                    row.setdefault("variants", {})[label] = {"t_err": float(t[0]), "r_err": float(rr[0])}
            rows.append(row)
    t = np.array([r["t_err"] for r in rows])
    bt = np.array([r["base_t_err"] for r in rows])
    variants = {}
    for label in rows[0].get("variants", {}) if rows else ():
        vt = np.array([r["variants"][label]["t_err"] for r in rows])
        vr = np.array([r["variants"][label]["r_err"] for r in rows])
        variants[label] = {"median_t_err_m": float(np.median(vt)), "median_r_err_deg": float(np.median(vr)),
                           "within_5cm_0.5deg": float(np.mean((vt < 0.05) & (vr < 0.5)))}
    return {"rows": rows, "frames": len(rows), "variants": variants,
            "with_pose": float(np.isfinite(t).mean()),
            "statuses": {s: sum(r["status"] == s for r in rows) for s in ("tracked", "relocalized", "lost")},
            "median_t_err_m": float(np.median(t)), "median_r_err_deg": float(np.median([r["r_err"] for r in rows])),
            "within_5cm_0.5deg": float(np.mean([(r["t_err"] < 0.05) & (r["r_err"] < 0.5) for r in rows])),
            "base_median_t_err_m": float(np.median(bt)),
            "base_median_r_err_deg": float(np.median([r["base_r_err"] for r in rows])),
            "median_ms": float(np.median([r["ms"] for r in rows])),
            "base_median_ms": float(np.median([r["base_ms"] for r in rows]))}


def print_synthetic(s):
    base = s["per_frame_localize"]
    print(f"\nSynthetic walk: {s['frames']} frames at {s['size'][0]}x{s['size'][1]}, map of {s['map']['images']} "
          f"images / {s['map']['points']} points; events {s['events']}")
    print(f"{'':40s} {'Hz (median)':>11s} {'p50 ms':>8s} {'p90 ms':>8s} {'p99 ms':>8s} {'pose':>6s} "
          f"{'median err':>18s} {'speed-up':>8s}")
    bl = base["latency_ms"]
    print(f"{'localize per frame':40s} {1000 / bl['p50']:11.1f} {bl['p50']:8.1f} {bl['p90']:8.1f} {bl['p99']:8.1f} "
          f"{100 * base['with_pose']:5.1f}% {100 * base['median_t_err_m']:8.2f} cm {base['median_r_err_deg']:.3f} deg")
    for label, tr in s["tracker"].items():
        lat = tr["latency_ms"]
        print(f"{'tracker, ' + label:40s} {lat['hz_median']:11.1f} {lat['p50']:8.1f} {lat['p90']:8.1f} "
              f"{lat['p99']:8.1f} {100 * tr['with_pose']:5.1f}% {100 * tr['median_t_err_m']:8.2f} cm "
              f"{tr['median_r_err_deg']:.3f} deg {tr['speedup_median']:7.2f}x")
    for label, tr in s["tracker"].items():
        shares = tr["shares"]
        print(f"\n{label}: speed-up {tr['speedup_median']:.2f}x (medians), {tr['speedup_mean']:.2f}x (means); "
              f"error ratio {tr['median_t_err_m'] / base['median_t_err_m']:.2f} (position), "
              f"{tr['median_r_err_deg'] / base['median_r_err_deg']:.2f} (rotation)")
        print(f"  tracked {100 * shares['tracked']:.1f} %, relocalized {100 * shares['relocalized']:.1f} %, lost "
              f"{100 * shares['lost']:.1f} %; recovery (frames): {tr['recovery_frames']}")
        print("  tracked frames, median ms by step: " + ", ".join(f"{k} {v:.1f}" for k, v in tr["ms_by_step"].items())
              + f"; relocalized frames: {[round(v) for v in tr['ms_relocalized']]} ms")
        print(f"  ATE (no alignment) RMSE {100 * tr['ate']['rmse']:.2f} cm, median {100 * tr['ate']['median']:.2f} cm, "
              f"max {100 * tr['ate']['max']:.2f} cm; RPE RMSE {100 * tr['rpe']['translation']['rmse']:.2f} cm, "
              f"{tr['rpe']['rotation']['rmse']:.3f} deg")
    if "matching_peer" not in s:
        return
    peer = s["matching_peer"]
    print(f"guided matching (grid, radius) {peer['grid_ms']:.2f} ms vs core kNN over the same "
          f"~{peer['visible_points']} points {peer['core_knn_ms']:.2f} ms "
          f"({peer['core_knn_ms'] / peer['grid_ms']:.1f}x), {peer['frames']} frames")


def print_strecha(s):
    print(f"\nStrecha as sparse sequences ({s['frames']} images, leave-one-out maps): poses "
          f"{100 * s['with_pose']:.0f} %, statuses {s['statuses']}")
    print(f"tracker: median {100 * s['median_t_err_m']:.2f} cm, {s['median_r_err_deg']:.3f} deg, within (5 cm, "
          f"0.5 deg) {100 * s['within_5cm_0.5deg']:.1f} %, {s['median_ms']:.0f} ms")
    for label, v in s.get("variants", {}).items():
        print(f"tracker, {label}: median {100 * v['median_t_err_m']:.2f} cm, {v['median_r_err_deg']:.3f} deg, "
              f"within (5 cm, 0.5 deg) {100 * v['within_5cm_0.5deg']:.1f} %")
    print(f"localize per frame: median {100 * s['base_median_t_err_m']:.2f} cm, {s['base_median_r_err_deg']:.3f} deg, "
          f"{s['base_median_ms']:.0f} ms")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=500)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--views", type=int, default=40, help="map images on the courtyard loop")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scales", type=float, nargs="+", default=[0.5],
                   help="tracker: SIFT resolution factors, each tracked over the same frames (the first for Strecha)")
    p.add_argument("--max-features", type=int, default=1000, help="tracker: SIFT features per frame")
    p.add_argument("--orb", action="store_true",
                   help="also track on an ORB layer of the map (needs binary layers, Map.add_layer)")
    p.add_argument("--orb-stream", type=int, nargs=2, action="append", default=[], metavar=("FEATURES", "LEVELS"),
                   help="with --orb: also track with an ORB extractor of FEATURES features and LEVELS pyramid levels "
                        "per frame (the map's layer keeps its own); repeatable")
    p.add_argument("--lead", choices=("sift", "orb"), default="sift",
                   help="which tracker takes turns with per-frame localization frame by frame (orb: the last ORB "
                        "configuration)")
    p.add_argument("--no-patches", dest="patches", action="store_false",
                   help="no point patches in the map (no sub-pixel refinement, Map.add_patches)")
    p.add_argument("--without-patches", action="store_true",
                   help="also run every tracker configuration without the patch refinement")
    p.add_argument("--patch-angles", type=float, nargs="+",
                   help="Strecha: also track with patches taken from map views up to each of these angles (degrees; "
                        "TrackerOptions.max_patch_angle_deg)")
    p.add_argument("--baseline-every", type=int, default=1, help="localize every n-th frame per frame")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache", default="/tmp/pylocalize-bench-tracking", help="folder for the built map")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--strecha", action="store_true", help="also the Strecha scenes as sparse sequences")
    p.add_argument("--scenes", nargs="+", default=["fountain-P11", "Herz-Jesus-P8", "castle-P19", "entry-P10"],
                   help="Strecha scenes")
    p.add_argument("--skip-synthetic", action="store_true")
    p.add_argument("--json")
    p.add_argument("--figure")
    args = p.parse_args(argv)
    pylocalize.set_num_threads(args.threads)
    import cv2

    cv2.setNumThreads(args.threads)
    print(f"pylocalize {pylocalize.__version__}, {args.threads} threads, load {os.getloadavg()[0]:.2f}")
    out = {"load_start": os.getloadavg()}
    if not args.skip_synthetic:
        out["synthetic"] = synthetic(args)
        print_synthetic(out["synthetic"])
    if args.strecha:
        out["strecha"] = strecha(args)
        print_strecha(out["strecha"])
    out["load_end"] = os.getloadavg()
    print(f"load average at the end: {out['load_end'][0]:.2f} (1 min), {out['load_end'][1]:.2f} (5 min)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
