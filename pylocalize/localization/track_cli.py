"""``pylocalize track``: a camera stream (a folder of frames or a video) tracked against a map.

Every frame is localized against the map with :class:`~pylocalize.localization.tracking.Tracker`
(prediction from the last pose, guided matching, refinement; CANN relocalization when tracking
is lost). Writes the trajectory as a TUM file and, beside it, the status of each frame; with
``--gt``, prints the absolute trajectory error and the relative pose error; with ``--figure``,
draws the trajectory (against the ground truth when given).

``pylocalize/cli.py`` wires it in with ``add_parser(subparsers)``; the map and tracking code
are imported only when the command runs.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from pylocalize._cli import run_alone

logger = logging.getLogger(__name__)

# Ground-truth poses within this many seconds of a frame's timestamp score it (TUM's
# associate.py default is 0.02 s).
GT_MAX_DIFFERENCE_S = 0.02


def read_timestamps(path, names=None):
    """Timestamps of the frames from a text file: one number per line in frame order, or
    ``timestamp name`` lines (TUM's ``rgb.txt``) matched to the frames' file ``names``.
    ``#`` lines are comments. Raises ``ValueError`` naming the line that is neither."""
    by_name, ordered = {}, []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        try:
            stamp = float(parts[0])
        except ValueError:
            raise ValueError(f"{path}:{number}: expected 'timestamp' or 'timestamp name', "
                             f"got {line.strip()!r}") from None
        if len(parts) >= 2:
            by_name[Path(parts[1]).name] = stamp
        else:
            ordered.append(stamp)
    if by_name and names is not None:
        missing = [n for n in names if n not in by_name]
        if missing:
            raise ValueError(f"{path}: no timestamp for {len(missing)} frames ({', '.join(missing[:3])}...); add "
                             "'timestamp name' lines for them")
        return [by_name[n] for n in names]
    return ordered if ordered else list(by_name.values())


def _frames(args):
    """``(frames iterable, names, timestamps or None, count or None)`` of --images or --video."""
    from pylocalize.io import image_files, read_image

    if args.images:
        folder = Path(args.images)
        if not folder.is_dir():
            raise FileNotFoundError(f"--images {folder}: no such folder; give the folder of the frames")
        paths = sorted(image_files(folder), key=lambda p: p.name)
        if not paths:
            raise ValueError(f"--images {folder}: no image files there; give the folder of the frames")
        return (read_image(p) for p in paths), [p.name for p in paths], None, len(paths)
    import cv2

    video = Path(args.video)
    if not video.is_file():
        raise FileNotFoundError(f"--video {video}: no such file; give a video file OpenCV can read")
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise ValueError(f"--video {video}: OpenCV cannot open it; convert it (e.g. to H.264 MP4) or give "
                         "--images with its frames")
    fps = capture.get(cv2.CAP_PROP_FPS)
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None

    def read():
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    return
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        finally:
            capture.release()

    names = [f"frame_{k:06d}" for k in range(count)] if count else None
    return read(), names, None if args.fps or not fps or fps <= 0 else float(fps), count


def _ground_truth(path, timestamps):
    """Ground-truth ``cam_from_world`` (n, 3, 4) of the frames (NaN where a TUM pose lies
    further than ``GT_MAX_DIFFERENCE_S`` from the frame's timestamp)."""
    import numpy as np

    from pylocalize.localization.trajectory import read_tum

    stamps, poses = read_tum(path)
    if not len(stamps):
        raise ValueError(f"--gt {path}: no poses in it")
    out = np.full((len(timestamps), 3, 4), np.nan)
    order = np.argsort(stamps)
    stamps, poses = stamps[order], poses[order]
    for k, t in enumerate(timestamps):
        after = int(np.searchsorted(stamps, t))
        j = min((i for i in (after - 1, after) if 0 <= i < len(stamps)), key=lambda i: abs(stamps[i] - t))
        if abs(stamps[j] - t) <= GT_MAX_DIFFERENCE_S:
            out[k] = poses[j]
    if not np.isfinite(out).all(axis=(1, 2)).any():
        raise ValueError(f"--gt {path}: no pose within {GT_MAX_DIFFERENCE_S} s of any frame's timestamp; check "
                         "that both use the same clock (--timestamps, --fps)")
    return out


def _track(args) -> int:
    import numpy as np

    from pylocalize.geometry import Camera
    from pylocalize.localization.cli import _load_map
    from pylocalize.localization.tracking import Tracker, TrackerOptions
    from pylocalize.localization.trajectory import estimates_array, plot_trajectory, sequence_summary, write_tum

    camera = Camera.from_string(args.camera)
    options = TrackerOptions(scale=args.scale, max_features=args.max_features, search_radius_px=args.radius)
    m = _load_map(args.map)
    frames, names, video_fps, count = _frames(args)
    if args.timestamps:
        given = read_timestamps(args.timestamps, names if args.images else None)
        if count is not None and len(given) < count:
            raise ValueError(f"--timestamps {args.timestamps}: {len(given)} timestamps for {count} frames; give one "
                             "per frame")
        stamp_of = given.__getitem__
    else:
        fps = args.fps or video_fps or 30.0
        stamp_of = lambda k: k / fps  # noqa: E731 (the frame clock)
    extractor = None
    if args.features != "sift" and args.features in getattr(m, "layers", {}):
        # the frames' binary features: the layer's options, with the stream's feature budget and
        # pyramid (fewer than a map image's: benchmarks/README.md, "Real-time tracking")
        from pylocalize.localization.layers import binary_extractor

        extractor = binary_extractor(args.features, {**m.layers[args.features].options,
                                                     "max_features": args.max_features, "num_levels": args.levels})
    tracker = Tracker(m, camera, features=args.features, extractor=extractor, options=options)
    from tqdm import tqdm

    results, stamps = [], []
    for k, frame in enumerate(tqdm(frames, total=count, desc="track", unit="frame", disable=not args.progress)):
        stamps.append(float(stamp_of(k)))
        results.append(tracker.track(frame, stamps[-1]))
    if not results:
        raise ValueError("the stream holds no frames")
    poses = estimates_array(results)
    lost = {k: f"lost: {r.reason}" for k, r in enumerate(results) if not r.success}
    write_tum(args.out, stamps, poses, comments=lost)
    status_file = Path(args.out).with_suffix(".frames.tsv")
    lines = ["timestamp\tstatus\tmethod\tinliers\tmatches\tpatch_inliers\tms"]
    lines += [f"{t:.6f}\t{r.status}\t{r.method or '-'}\t{r.num_inliers}\t{r.num_matches}\t{r.patch_inliers}\t"
              f"{1000 * r.timings.get('total', 0):.1f}" for t, r in zip(stamps, results)]
    from pylocalize.containers import write_bytes_atomic

    write_bytes_atomic(status_file, ("\n".join(lines) + "\n").encode("utf-8"))
    gt = _ground_truth(args.gt, stamps) if args.gt else None
    summary = sequence_summary(results, gt)
    shares, latency = summary["shares"], summary["latency_ms"]
    print(f"{len(results)} frames: {100 * shares['tracked']:.1f} % tracked, {100 * shares['relocalized']:.1f} % "
          f"relocalized, {100 * shares['lost']:.1f} % lost")
    print(f"latency per frame: median {latency['p50']:.1f} ms ({latency['hz_median']:.1f} Hz), p90 "
          f"{latency['p90']:.1f} ms, p99 {latency['p99']:.1f} ms")
    if gt is not None:
        ate, rpe = summary["ate"], summary["rpe"]
        print(f"ATE (map frame, no alignment) over {ate['frames']} frames: RMSE {100 * ate['rmse']:.2f} cm, median "
              f"{100 * ate['median']:.2f} cm, max {100 * ate['max']:.2f} cm; median rotation error "
              f"{summary['rotation_median_deg']:.3f} deg")
        print(f"RPE per frame: translation RMSE {100 * rpe['translation']['rmse']:.2f} cm, rotation RMSE "
              f"{rpe['rotation']['rmse']:.3f} deg")
    if args.figure:
        plot_trajectory(args.figure, poses, gt, [r.status for r in results], stamps, m.points3D,
                        title=f"{Path(args.images or args.video).name}: {len(results)} frames")
    print(f"trajectory -> {args.out} (TUM), frame status -> {status_file}"
          + (f", figure -> {args.figure}" if args.figure else ""))
    if not np.isfinite(poses).all(axis=(1, 2)).any():
        logger.error("no frame was localized: see the reasons in %s", args.out)
        return 1
    if lost and not args.allow_failures:
        logger.error("%d of %d frames have no pose; --allow-failures accepts that", len(lost), len(results))
        return 1
    return 0


def _positive_float(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def add_parser(subparsers) -> None:
    """Adds the ``track`` command to an argparse sub-parser set."""
    from pylocalize._cli import at_least

    p = subparsers.add_parser("track", help="track a camera stream (frames or a video) against a map")
    p.add_argument("--map", required=True, help="map directory")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="folder of the frames, tracked in file-name order")
    source.add_argument("--video", help="video file (read with OpenCV)")
    p.add_argument("--camera", required=True, help="'MODEL W H PARAMS...' (COLMAP convention) of the frames")
    p.add_argument("--out", required=True,
                   help="trajectory file to write, TUM format: 'timestamp tx ty tz qx qy qz qw' per frame, the "
                        "camera's pose in the map (world_from_cam: t its centre, q its orientation, scalar last), "
                        "frames without a pose as '#' comments; the status of each frame (tracked, relocalized, "
                        "lost), its inliers and latency go to OUT with suffix .frames.tsv")
    p.add_argument("--timestamps", help="file of frame timestamps in seconds: one per line in frame order, or "
                                        "'timestamp name' lines (TUM rgb.txt); default: frame index / fps")
    p.add_argument("--fps", type=_positive_float, help="frame rate for timestamps (default: the video's, else 30)")
    p.add_argument("--gt", help="ground-truth TUM trajectory: prints ATE (map frame) and RPE")
    p.add_argument("--figure", help="PNG of the trajectory (top view; error over time with --gt)")
    p.add_argument("--features", default="sift", help="the map's feature layer to track with")
    p.add_argument("--scale", type=_positive_float, default=0.5,
                   help="frames are resized by this before SIFT (speed against keypoint precision)")
    p.add_argument("--max-features", type=at_least(1), default=1000, help="features per frame")
    p.add_argument("--levels", type=at_least(1), default=3,
                   help="pyramid levels of a binary layer's frame features (--features orb)")
    p.add_argument("--radius", type=_positive_float, default=15.0,
                   help="search radius of guided matching, in frame pixels")
    p.add_argument("--allow-failures", action="store_true",
                   help="exit 0 when some frames have no pose (not all): by default any such frame exits 1")
    p.set_defaults(func=_track)
    p.epilog = ("Each frame is predicted from the last pose (constant velocity over the timestamps), matched to "
                "the map points projected near its features, and refined from the prediction, then to a fraction "
                "of a pixel on the map's point patches where it holds them (map build --patches); a frame that "
                "cannot be tracked is relocalized by CANN retrieval over the whole map.")


def main(argv=None) -> int:
    """Runs ``track`` alone: ``python -m pylocalize.localization.track_cli track ...``."""
    return run_alone(add_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
