"""``pylocalize demo``: the main job on built-in generated data.

- ``run_localization_demo`` (the default): renders the synthetic courtyard, builds a map
  from its mapping views with their poses, localizes held-out views by CANN retrieval,
  2D-3D matching and LO-RANSAC PnP, prints errors and timings, and writes a figure
  (query with inlier matches, retrieved image, top view of map and cameras), the
  estimated poses and the results as JSON.
- ``run_tracking_demo`` (``pylocalize demo --kind tracking``): renders a walk through the
  courtyard at video rate (a teleport, dropped frames and an occluder on the way), tracks it
  against the map frame by frame, prints the share of frames tracked, latency and trajectory
  errors, and writes the trajectory (TUM) and its figure against the ground truth.
- ``run_binary_demo`` (``pylocalize demo --kind binary``): binary retrieval on generated
  descriptors: sign codes, a random-projection hash, multi-bit SDC and SDC + re-ranking,
  with recall@10 and queries per second.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

import pylocalize
from pylocalize._cli import at_least
from pylocalize.containers import write_bytes_atomic
from pylocalize.datasets import clustered_queries, clustered_vectors
from pylocalize.index.metrics import recall_at


def _timed(fn):
    fn()  # warm-up: first touch of pages and caches
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run_binary_demo(out_dir: str | Path = "pylocalize-demo", nb: int = 200_000, nq: int = 1000,
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
        results.append({"method": name, "bits": bits, "recall@10": recall_at(10, ids, truth),
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
    write_bytes_atomic(out / "results.json", json.dumps(summary, indent=2).encode("utf-8"))
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


def run_localization_demo(out_dir: str | Path = "pylocalize-demo", num_views: int = 24,
                          num_queries: int = 8, width: int = 800, height: int = 600,
                          seed: int = 0, progress: bool = True) -> dict:
    """Builds a map of the synthetic courtyard and localizes held-out views (``progress``:
    tqdm bars while it does).

    Returns the summary also written to ``out_dir/results.json``.
    """
    from pylocalize.datasets.synthetic import courtyard_scene
    from pylocalize.geometry import write_pose_file
    from pylocalize.geometry.poses import rotation_error_deg
    from pylocalize.localization import Map

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    scene = courtyard_scene(num_views, seed=seed, width=width, height=height)
    query_poses = scene.query_poses(num_queries, seed=seed + 1)
    query_images, _ = scene.render(query_poses)
    t_scene = time.perf_counter() - t0
    t0 = time.perf_counter()
    m = Map.from_views(scene.images, scene.K, scene.cam_from_world, scene.names, max_features=3000,
                       progress=progress)
    t_map = time.perf_counter() - t0
    rows, estimates, results = [], [], []
    for i, (pose, image) in enumerate(tqdm(list(zip(query_poses, query_images)), desc="localize", leave=False,
                                      disable=not progress)):
        t0 = time.perf_counter()
        r = m.localize(image, scene.K)
        seconds = time.perf_counter() - t0
        name = f"query_{i:03d}.jpg"
        row = {"query": name, "success": r.success, "seconds": seconds, "inliers": r.num_inliers,
               "matches": r.num_matches, "retrieved": r.retrieved[:3], "reason": r.reason}
        if r.success:
            row["rotation_deg"] = rotation_error_deg(r.cam_from_world[:, :3], pose[:, :3])
            c_est = -r.cam_from_world[:, :3].T @ r.cam_from_world[:, 3]
            row["translation_m"] = float(np.linalg.norm(c_est + pose[:, :3].T @ pose[:, 3]))
            estimates.append((name, r.cam_from_world))
        rows.append(row)
        results.append(r)
    write_pose_file(out / "poses.txt", estimates)
    summary = {"scene": {"views": num_views, "size": [width, height], "seconds": t_scene},
               "map": {"images": len(m.names), "points": len(m.points3D), "seconds": t_map},
               "queries": rows}
    write_bytes_atomic(out / "results.json", json.dumps(summary, indent=2).encode("utf-8"))
    _plot_localization(out / "localization.png", scene, m, query_poses, query_images, results)
    return summary


def _plot_localization(path: Path, scene, m, query_poses, query_images, results) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pylocalize.localization.viz import draw_matches

    best = max(range(len(results)), key=lambda i: results[i].num_inliers)
    r = results[best]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    draw_matches(axes[0], query_images[best], r, m, scene.camera)
    axes[0].set_title(f"query {best}: " + axes[0].get_title(), fontsize=9)
    top = scene.names.index(r.retrieved[0]) if r.retrieved else 0
    axes[1].imshow(scene.images[top])
    axes[1].set_title(f"top retrieved: {scene.names[top]}")
    axes[1].axis("off")
    ax = axes[2]
    ax.scatter(m.points3D[:, 0], m.points3D[:, 1], s=0.5, c="0.6", label="map points")
    db = -np.einsum("nji,nj->ni", scene.cam_from_world[:, :, :3], scene.cam_from_world[:, :, 3])
    ax.scatter(db[:, 0], db[:, 1], c="tab:blue", s=20, label="mapping cameras")
    gt = -np.einsum("nji,nj->ni", query_poses[:, :, :3], query_poses[:, :, 3])
    ax.scatter(gt[:, 0], gt[:, 1], marker="x", c="tab:green", s=60, label="queries, ground truth")
    est = [(-res.cam_from_world[:, :3].T @ res.cam_from_world[:, 3]) for res in results if res.success]
    if est:
        est = np.array(est)
        ax.scatter(est[:, 0], est[:, 1], facecolors="none", edgecolors="tab:red", s=80, label="queries, estimated")
    ax.set_aspect("equal")
    ax.set_title("top view (metres)")
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_tracking_demo(out_dir: str | Path = "pylocalize-demo", num_views: int = 30, num_frames: int = 150,
                      width: int = 640, height: int = 480, seed: int = 0, progress: bool = True) -> dict:
    """Tracks a rendered walk through the courtyard against a map of it (``num_frames`` at 30 Hz;
    a teleport two thirds of the way, 20 frames dropped a third of the way, an occluder
    sweeping past near the start). Returns the summary also written to ``out_dir/results.json``."""
    from pylocalize.datasets.camera_paths import render_path, walking_path
    from pylocalize.datasets.synthetic import courtyard_scene
    from pylocalize.localization import Map
    from pylocalize.localization.tracking import Tracker, track_stream
    from pylocalize.localization.trajectory import estimates_array, plot_trajectory, sequence_summary, write_tum

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    scene = courtyard_scene(num_views, seed=seed, width=width, height=height)
    t_scene = time.perf_counter() - t0
    t0 = time.perf_counter()
    m = Map.from_views(scene.images, scene.K, scene.cam_from_world, scene.names, max_features=3000,
                       progress=progress)
    m.add_patches("sift", scene.images, progress=progress)  # sub-pixel refinement of every tracked pose
    t_map = time.perf_counter() - t0
    events = {"teleports": [2 * num_frames // 3], "drops": [(num_frames // 3, 20)],
              "occlusions": [(num_frames // 6, 8)]}
    path = walking_path(num_frames, seed=seed + 1, **events)
    frames = list(render_path(scene, path, progress=progress))
    results = track_stream(Tracker(m, scene.camera), frames, path.timestamps, progress=progress)
    poses = estimates_array(results)
    write_tum(out / "trajectory.txt", path.timestamps, poses)
    write_tum(out / "ground_truth.txt", path.timestamps, path.cam_from_world)
    statuses = [r.status for r in results]
    plot_trajectory(out / "tracking.png", poses, path.cam_from_world, statuses, path.timestamps, m.points3D,
                    title=f"courtyard walk, {num_frames} frames at {width}x{height}")
    summary = {"scene": {"views": num_views, "size": [width, height], "seconds": t_scene},
               "map": {"images": len(m.names), "points": len(m.points3D), "seconds": t_map},
               "events": {int(k): v for k, v in path.events.items()},
               **sequence_summary(results, path.cam_from_world),
               "frames_detail": [{"t": float(t), "status": r.status, "method": r.method, "inliers": r.num_inliers,
                                  "ms": 1000 * r.timings.get("total", 0.0)} for t, r in zip(path.timestamps, results)]}
    write_bytes_atomic(out / "results.json", json.dumps(summary, indent=2).encode("utf-8"))
    return summary


def _print_tracking(summary: dict, out_dir) -> None:
    shares, latency, ate = summary["shares"], summary["latency_ms"], summary["ate"]
    print(f"\nmap: {summary['map']['images']} images, {summary['map']['points']} 3D points, built in "
          f"{summary['map']['seconds']:.1f} s")
    print(f"{summary['frames']} frames: {100 * shares['tracked']:.1f} % tracked, {100 * shares['relocalized']:.1f} % "
          f"relocalized, {100 * shares['lost']:.1f} % lost")
    for index, event in summary["events"].items():
        after = summary["frames_detail"][index]
        print(f"  frame {index} ({event}): {after['status']}")
    print(f"latency per frame: median {latency['p50']:.1f} ms ({latency['hz_median']:.1f} Hz), "
          f"p90 {latency['p90']:.1f} ms")
    print(f"position error: median {100 * ate['median']:.2f} cm, max {100 * ate['max']:.2f} cm; rotation median "
          f"{summary['rotation_median_deg']:.3f} deg")
    print(f"trajectory (TUM), ground truth, figure and results written to {out_dir}/")


# ------------------------------------------------------------------ command line


def _print_localization(summary: dict, out_dir) -> None:
    print(f"\nmap: {summary['map']['images']} images, {summary['map']['points']} 3D points, built in "
          f"{summary['map']['seconds']:.1f} s (scene rendered in {summary['scene']['seconds']:.1f} s)")
    print(f"{'query':14s} {'ok':>3s} {'t err (cm)':>10s} {'R err (deg)':>11s} {'inliers':>8s} {'time (s)':>8s}")
    for r in summary["queries"]:
        if r["success"]:
            print(f"{r['query']:14s} {'yes':>3s} {100 * r['translation_m']:10.2f} {r['rotation_deg']:11.3f} "
                  f"{r['inliers']:8d} {r['seconds']:8.2f}")
        else:
            print(f"{r['query']:14s} {'no':>3s}  {r['reason']}")
    ok = [r for r in summary["queries"] if r["success"]]
    if ok:
        print(f"\nlocalized {len(ok)}/{len(summary['queries'])}: median error "
              f"{100 * np.median([r['translation_m'] for r in ok]):.2f} cm, "
              f"{np.median([r['rotation_deg'] for r in ok]):.3f} deg")
    print(f"figure, poses and results written to {out_dir}/")


def _print_binary(summary: dict, out_dir) -> None:
    print(f"\n{summary['nb']:,} database vectors, {summary['nq']} queries, {summary['dim']}-d, "
          f"SIMD {summary['simd']}, {summary['threads']} threads")
    print(f"{'method':40s} {'bits':>5s} {'recall@10':>10s} {'QPS':>10s}")
    for r in summary["results"]:
        print(f"{r['method']:40s} {r['bits']:5d} {r['recall@10']:10.3f} {r['qps']:10.0f}")
    print(f"\nfigure, results and index written to {out_dir}/")


def _demo(args) -> int:
    if args.kind == "binary":
        _print_binary(run_binary_demo(args.out, nb=args.nb, nq=args.nq, seed=args.seed), args.out)
        return 0
    if args.kind == "tracking":
        summary = run_tracking_demo(args.out, num_views=args.views, num_frames=args.frames, width=args.width or 640,
                                    height=args.height or 480, seed=args.seed, progress=args.progress)
        _print_tracking(summary, args.out)
        return 0
    try:  # COLMAP logs every extractor it creates; the demo shows progress bars instead
        import pycolmap

        pycolmap.logging.minloglevel = 2
    except (ImportError, AttributeError):
        pass
    summary = run_localization_demo(args.out, num_views=args.views, num_queries=args.queries,
                                    width=args.width or 800, height=args.height or 600, seed=args.seed,
                                    progress=args.progress)
    _print_localization(summary, args.out)
    return 0


def add_parser(subparsers) -> None:
    """Adds the ``demo`` command to an argparse sub-parser set, as ``pylocalize.cli.build_parser``
    builds its commands."""
    p = subparsers.add_parser("demo", help="run the main job on built-in generated data")
    p.add_argument("--kind", choices=["localization", "tracking", "binary"], default="localization",
                   help="what to run: localization, tracking a rendered walk, or binary retrieval")
    p.add_argument("--out", default="pylocalize-demo", help="output folder")
    p.add_argument("--views", type=at_least(4), default=24, help="localization and tracking: mapping views")
    p.add_argument("--queries", type=at_least(1), default=8, help="localization: held-out query views")
    p.add_argument("--frames", type=at_least(30), default=150, help="tracking: frames of the walk (30 Hz)")
    p.add_argument("--width", type=at_least(64), help="image width (default: 800 localization, 640 tracking)")
    p.add_argument("--height", type=at_least(64), help="image height (default: 600 localization, 480 tracking)")
    p.add_argument("--nb", type=at_least(100), default=200_000, help="binary: database size")
    p.add_argument("--nq", type=at_least(1), default=1000, help="binary: number of queries")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated data")
    p.set_defaults(func=_demo)
