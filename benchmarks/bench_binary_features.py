#!/usr/bin/env python3
"""Fast features for localizing frames of a stream (issue 21): SIFT at 640x480 against a
map's ORB layer, on the generated courtyard scene, and the ORB detector settings.

One map of ``--views`` posed 640x480 renders holds SIFT and an ORB layer (each
``--features`` per image). ``--queries`` renders at random poses are localized with each
(:meth:`Map.localize`, ``features="sift"`` / ``"orb"``), with retrieval of ``--k`` images and
against every image (``k=None``): per query the milliseconds of each stage, success (pose
within 25 cm and 2 degrees) and pose error against the rendered pose; medians are printed.

Peer for the Hamming matching: OpenCV's ``BFMatcher(NORM_HAMMING)``, the brute-force matcher
ORB users reach for, on the same candidates (the observed ORB features of the images each
query retrieved) and the same threads: a 2-NN search (pylocalize's ``BinaryIndex`` in
``match_descriptors``, with its ratio test and mutual check, against ``knnMatch(k=2)`` alone)
and the neighbours' distances are checked equal.

``--sweep`` also rebuilds the ORB layer for several detector settings and reports, per
setting, the correct 2D-3D matches (their 3D point reprojects within 3 px under the true
pose) and those per millisecond of extraction and matching: what chose ``OrbExtractor``'s
defaults.

    python benchmarks/bench_binary_features.py [--views 24] [--queries 20] [--threads 2] [--sweep]
"""

from __future__ import annotations

import argparse

import numpy as np
from _timing import best_of  # benchmarks/ is not a package: from the script's own folder

import pylocalize
from pylocalize.datasets.synthetic import courtyard_scene
from pylocalize.features import OrbExtractor, SiftExtractor, match_descriptors
from pylocalize.localization import Map, pose_error


def correct_matches(m, features, result, pose, camera_K, max_px=3.0) -> int:
    """Matches of ``result`` whose 3D point projects within ``max_px`` of its keypoint under
    the true ``pose``."""
    if result.point3D_ids is None or len(result.point3D_ids) == 0:
        return 0
    cam = m.feature_layer(features).points3D[result.point3D_ids] @ pose[:, :3].T + pose[:, 3]
    front = cam[:, 2] > 1e-6
    proj = cam[:, :2] / np.where(front, cam[:, 2], 1)[:, None] @ np.diag(camera_K[[0, 1], [0, 1]]) + camera_K[:2, 2]
    return int((front & (np.linalg.norm(proj - result.points2D, axis=1) < max_px)).sum())


def localize_all(m, queries, poses, K, features, k):
    rows = []
    for image, pose in zip(queries, poses):
        r = m.localize(image, K, k=k, features=features, covariance=False)
        t_err, r_err = pose_error(r.cam_from_world, pose) if r.success else (np.inf, np.inf)
        rows.append({"success": r.success and t_err < 0.25 and r_err < 2.0, "t_err": t_err, "r_err": r_err,
                     "correct": correct_matches(m, features, r, pose, K), "matches": r.num_matches,
                     **{f"{s}_ms": 1e3 * r.timings.get(s, np.nan) for s in ("features", "retrieval", "matching",
                                                                              "pose")}})
    return rows


def summary(rows) -> dict:
    ok = [r for r in rows if r["success"]]
    med = {key: float(np.median([r[key] for r in rows])) for key in rows[0] if key.endswith("_ms")}
    med.update(success=len(ok) / len(rows), correct=float(np.median([r["correct"] for r in rows])),
               t_err_cm=100 * float(np.median([r["t_err"] for r in ok])) if ok else np.nan,
               r_err_deg=float(np.median([r["r_err"] for r in ok])) if ok else np.nan)
    return med


def matching_peer(m, queries, K, threads, repeats):
    """BinaryIndex 2-NN (and the full ratio test + mutual check) against BFMatcher.knnMatch
    on each query's candidates; returns medians in ms and whether the distances agree."""
    import cv2

    cv2.setNumThreads(threads)
    bf = cv2.BFMatcher(cv2.NORM_HAMMING)
    ours_knn, ours_match, peer, equal = [], [], [], True
    layer = m.feature_layer("orb")
    for image in queries:
        _, desc, _ = m.extract(image, K, features="orb")
        images = sorted(m.retrieve(desc, 10, features="orb"))
        cand = np.concatenate([layer.descriptors[i][layer.point_ids[i] >= 0] for i in images])
        groups = np.concatenate([layer.point_ids[i][layer.point_ids[i] >= 0] for i in images])

        def knn():
            index = pylocalize.BinaryIndex(256)
            index.add(cand)
            return index.search(desc, 2)

        t, (dist, _) = best_of(knn, repeats)
        ours_knn.append(t)
        t, _ = best_of(lambda: match_descriptors(desc, cand, 0.8, groups_b=groups, metric="hamming"), repeats)
        ours_match.append(t)
        t, found = best_of(lambda: bf.knnMatch(desc, cand, k=2), repeats)
        peer.append(t)
        theirs = np.array([[d.distance for d in pair] for pair in found])
        equal &= bool(np.array_equal(theirs, dist.astype(np.float64)))
    return (1e3 * float(np.median(ours_knn)), 1e3 * float(np.median(ours_match)), 1e3 * float(np.median(peer)),
            equal, len(cand))


SWEEP = [  # OrbExtractor options, besides max_features
    {"fast_threshold": 20, "oversample": 1.0},  # OpenCV's defaults: no grid (the best corners anywhere)
    {"fast_threshold": 20, "oversample": 3.0},
    {"fast_threshold": 12, "oversample": 1.0},
    {"fast_threshold": 12, "oversample": 3.0},
    {"fast_threshold": 12, "oversample": 2.0},
    {"fast_threshold": 7, "oversample": 3.0},
    {"fast_threshold": 12, "oversample": 3.0, "num_levels": 4},
    {"fast_threshold": 12, "oversample": 3.0, "num_levels": 6},
]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--views", type=int, default=24, help="database renders on the courtyard loop")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--features", type=int, default=2000, help="SIFT and ORB features per image")
    parser.add_argument("--k", type=int, default=10, help="database images retrieved per query")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="matching timings: best of")
    parser.add_argument("--sweep", action="store_true", help="also compare ORB detector settings")
    args = parser.parse_args()
    pylocalize.set_num_threads(args.threads)
    import cv2

    cv2.setNumThreads(args.threads)
    scene = courtyard_scene(num_views=args.views, seed=2, width=640, height=480)
    poses = scene.query_poses(args.queries, seed=4)
    queries, _ = scene.render(poses)
    K = scene.K
    m = Map.from_views(scene.images, K, scene.cam_from_world, scene.names, max_features=args.features,
                       layers={"sift": {}, "orb": {"max_features": args.features}})
    print(f"{m}; {args.queries} queries at 640x480, {args.threads} threads, k = {args.k}")
    print(f"{'features':<10}{'k':>5}{'features ms':>12}{'retrieval ms':>13}{'matching ms':>12}{'pose ms':>9}"
          f"{'success':>9}{'correct':>9}{'error cm':>9}{'error deg':>10}")
    # k None: every database image, no retrieval; for ORB one search of the layer's own index
    for features, k in (("sift", args.k), ("sift", None), ("orb", args.k), ("orb", None)):
        s = summary(localize_all(m, queries, poses, K, features, k))
        print(f"{features:<10}{str(k):>5}{s['features_ms']:>12.1f}{s['retrieval_ms']:>13.1f}{s['matching_ms']:>12.1f}"
              f"{s['pose_ms']:>9.1f}{100 * s['success']:>8.0f}%{s['correct']:>9.0f}{s['t_err_cm']:>9.2f}"
              f"{s['r_err_deg']:>10.3f}")
    sift, orb = SiftExtractor(args.features), m.layers["orb"].extractor()
    t_sift = np.median([best_of(lambda: sift(image), args.repeats)[0] for image in queries])
    t_orb = np.median([best_of(lambda: orb(image), args.repeats)[0] for image in queries])
    print(f"extraction alone, best of {args.repeats} per query: SIFT {1e3 * t_sift:.1f} ms, ORB {1e3 * t_orb:.1f} ms: "
          f"ratio {t_sift / t_orb:.2f}x")
    knn_ms, match_ms, peer_ms, equal, n = matching_peer(m, queries, K, args.threads, args.repeats)
    print(f"Hamming 2-NN of the query's ORB against its candidates (last: {n} codes): BinaryIndex {knn_ms:.2f} ms "
          f"(index built in it), BFMatcher(NORM_HAMMING).knnMatch {peer_ms:.2f} ms: ratio {peer_ms / knn_ms:.2f}x; "
          f"distances equal: {equal}; match_descriptors (2-NN of 8 candidates, ratio test, mutual) {match_ms:.2f} ms")
    if args.sweep:
        print(f"\nORB settings ({args.features} features): correct 2D-3D matches per query, and per ms of "
              "extraction + retrieval + matching (medians)")
        for options in SWEEP:
            m.add_layer("orb", scene.images, max_features=args.features, **options)
            s = summary(localize_all(m, queries, poses, K, "orb", args.k))
            ms = s["features_ms"] + s["retrieval_ms"] + s["matching_ms"]
            print(f"  {OrbExtractor(args.features, **options)!r}: {s['correct']:.0f} correct, "
                  f"{s['correct'] / ms:.2f} per ms ({ms:.1f} ms), success {100 * s['success']:.0f}%, "
                  f"error {s['t_err_cm']:.2f} cm {s['r_err_deg']:.3f} deg")


if __name__ == "__main__":
    main()
