#!/usr/bin/env python3
"""Real queries among thousands of distractor images (issue 19).

One CANN index holds every real image (Strecha, 4 scenes, and the images of Lund's SfM map)
and ``--distractors`` images of real SIFT recombined at random
(:func:`pylocalize.datasets.city.iter_pool_distractors`, drawn from the SIFT of all those
images, the queries' own included: each query descriptor has exact copies spread over the
distractors, a harder setting than unseen photos). The index is built as a map builds its
own (CANN, p0 200, ivf lists trained on a sample, nprobe 4).

(i) Retrieval: every real image is a query against all the others (its own entry skipped:
CANN scores each database image on its own, so the others' scores do not change). A
database image is a true co-visible one when it is of the same scene and shares at least
``--min-shared`` 3D points with the query in that scene's map (Strecha: triangulated from
the lidar poses; Lund: its SfM map). Reported: how often the first-ranked image is a true
co-visible one, with and without the distractors, and how often it is a distractor.

(ii) Localization: the Strecha leave-one-out table of ``bench_localization.py`` (a map of
each scene's other images, OpenCV SIFT, the query localized from its features with the
ground-truth camera), once with the map's own CANN retrieval (today's benchmark) and once
with retrieval over the pooled index: a distractor or an image of another scene among the
top k gives no 3D points, as it would in a map that held them.

    python benchmarks/bench_city_distractors.py --k 2 --cache real.pkl --json city_distractors.json

On 2 shared cores: 8-11 minutes for the real images' features and ground truth (kept in
``--cache``), then about 17 minutes for 5,000 distractors of 1,000 features.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_localization  # noqa: E402  (benchmarks/ is not a package; quiets COLMAP too)


def _shared_points_pairs(names, point_ids, min_shared: int) -> set:
    """Pairs ``(a, b)`` of images (both orders) sharing at least ``min_shared`` 3D points."""
    points = [set(p[p >= 0].tolist()) for p in point_ids]
    pairs = set()
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            if len(points[i] & points[j]) >= min_shared:
                pairs |= {(names[i], names[j]), (names[j], names[i])}
    return pairs


def load_strecha(data: Path, max_features: int) -> list:
    """Every Strecha image: scene, name, camera, ground-truth pose and OpenCV SIFT features."""
    from tqdm import tqdm

    from pylocalize.features import extract_sift
    from pylocalize.geometry import Camera
    from pylocalize.localization import read_strecha_camera
    from pylocalize.localization.map import read_image

    views = []
    for scene in bench_localization.SCENES:
        folder = data / "strecha" / scene
        for path in tqdm(sorted((folder / "gt_dense_cameras").glob("*.camera")), desc=scene, leave=False):
            name = path.name[: -len(".camera")]
            K, pose = read_strecha_camera(path)
            image = read_image(folder / "images" / name)
            keypoints, descriptors = extract_sift(image, max_features)
            views.append(dict(scene=scene, name=f"{scene}/{name}", path=folder / "images" / name, pose=pose,
                              camera=Camera.from_K(K, image.shape[1], image.shape[0]), keypoints=keypoints,
                              descriptors=descriptors))
    return views


def strecha_covisible(views, max_features: int, min_shared: int) -> set:
    """Co-visible Strecha pairs: sharing ``min_shared`` points in a map of the whole scene."""
    from pylocalize.localization import Map

    pairs = set()
    for scene in bench_localization.SCENES:
        sel = [v for v in views if v["scene"] == scene]
        m = Map.from_features([v["name"] for v in sel], [v["camera"] for v in sel], np.stack([v["pose"] for v in sel]),
                              [v["keypoints"] for v in sel], [v["descriptors"] for v in sel],
                              max_features=max_features)
        pairs |= _shared_points_pairs(m.names, m.point_ids, min_shared)
    return pairs


def load_lund(data: Path, max_features: int, min_shared: int):
    """Lund's SfM map (seeded, deterministic): names ``lund/<file>``, descriptors, co-visible pairs."""
    from pylocalize.localization import Map

    m = Map.from_images(data / "lund" / "images", max_features=max_features, progress=True, georegister=False,
                        deterministic=True)
    names = [f"lund/{n}" for n in m.names]
    return names, list(m.descriptors), _shared_points_pairs(names, m.point_ids, min_shared)


def real_images(args):
    """Strecha views, every real image's name and descriptors, and the co-visible pairs
    (from ``--cache`` when it exists; written there otherwise)."""
    import pickle

    settings = {"data": str(Path(args.data).resolve()), "max_features": args.max_features,
                "min_shared": args.min_shared}
    if args.cache and Path(args.cache).is_file():
        with open(args.cache, "rb") as f:
            cached = pickle.load(f)
        if cached.get("settings") != settings:
            raise SystemExit(f"{args.cache} holds other settings ({cached.get('settings')}): delete it or drop --cache")
        return cached["images"]
    data = Path(args.data)
    views = load_strecha(data, args.max_features)
    covisible = strecha_covisible(views, args.max_features, args.min_shared)
    lund_names, lund_descriptors, lund_covisible = load_lund(data, args.max_features, args.min_shared)
    out = (views, [v["name"] for v in views] + lund_names, [v["descriptors"] for v in views] + lund_descriptors,
           covisible | lund_covisible)
    if args.cache:
        with open(args.cache, "wb") as f:
            pickle.dump({"settings": settings, "images": out}, f)
    return out


def pooled_index(descriptors, distractors=None, seed: int = 0):
    """A CANN index configured as a map's (:class:`~pylocalize.localization.Map`) over the
    real images' ``descriptors`` (image ids 0..n-1) and then the ``distractors`` (an iterator
    of :class:`~pylocalize.datasets.city.CityImage`, ids n, n+1, ...), added in chunks."""
    from pylocalize.index.cann import CANNIndex
    from pylocalize.localization.map import IVF_NPROBE, RETRIEVAL_OPTIONS

    index = CANNIndex(128, **RETRIEVAL_OPTIONS)
    for i, d in enumerate(descriptors):
        index.add(d, np.full(len(d), i, np.int64))
    chunk, ids = [], []
    for i, image in enumerate(distractors or (), start=len(descriptors)):
        chunk.append(image.descriptors)
        ids.append(np.full(len(image.descriptors), i, np.int64))
        if len(chunk) == 256:
            index.add(np.concatenate(chunk), np.concatenate(ids))
            chunk, ids = [], []
    if chunk:
        index.add(np.concatenate(chunk), np.concatenate(ids))
    t0 = time.perf_counter()
    index.train(seed=seed)
    index.method, index.nprobe = "ivf", IVF_NPROBE
    return index, time.perf_counter() - t0


def ranked_without(index, descriptors, own: int, k: int) -> list:
    """The ``k`` images CANN ranks best for ``descriptors``, image ``own`` (the query) skipped."""
    _, ids = index.search(descriptors, k + 1)
    return [int(i) for i in ids if i >= 0 and i != own][:k]


def first_rank(index, names, descriptors, covisible) -> dict:
    """Over the real images with a co-visible image: how often CANN ranks one first, or in the
    top 2, and how often a distractor (an id past the real images) comes first."""
    from tqdm import tqdm

    first, top2, distractor, queries = [], [], [], []
    for q in tqdm(range(len(names)), desc="retrieval", leave=False):
        if not any((names[q], n) in covisible for n in names):
            continue
        ranked = ranked_without(index, descriptors[q], q, 2)
        hits = [j < len(names) and (names[q], names[j]) in covisible for j in ranked]
        first.append(bool(hits and hits[0]))
        top2.append(any(hits))
        distractor.append(bool(ranked) and ranked[0] >= len(names))
        queries.append(names[q])
    missed = [n for n, ok in zip(queries, first) if not ok]
    sets = np.array([n.split("/")[0] for n in queries])
    per_set = {s: float(np.mean(np.array(first)[sets == s])) for s in sorted(set(sets))}
    return {"queries": len(first), "first_covisible": float(np.mean(first)), "top2_covisible": float(np.mean(top2)),
            "first_distractor": float(np.mean(distractor)), "first_covisible_by_set": per_set, "missed": missed}


def _pooled_retrieval(index, own: int, to_map: dict, k: int):
    """A ``retrieval`` for :meth:`Map.localize_features`: the pooled index's top ``k`` (the
    query skipped), as indices of the leave-one-out map; other images hold no points in it."""
    def retrieve(keypoints, descriptors):
        return [to_map[j] for j in ranked_without(index, descriptors, own, k) if j in to_map]

    return retrieve


def leave_one_out(views, index, ks, max_features: int) -> list:
    """Rows of the Strecha leave-one-out benchmark (``bench_localization.summarize_strecha``),
    variants ``cann k=K`` (the map's own index) and ``pooled k=K`` (the pooled index)."""
    from tqdm import tqdm

    from pylocalize.localization import Map, pose_error

    rows = []
    for q in tqdm(range(len(views)), desc="leave-one-out", leave=False):
        v = views[q]
        db = [i for i, w in enumerate(views) if w["scene"] == v["scene"] and i != q]
        m = Map.from_features([views[i]["name"] for i in db], [views[i]["camera"] for i in db],
                              np.stack([views[i]["pose"] for i in db]), [views[i]["keypoints"] for i in db],
                              [views[i]["descriptors"] for i in db], max_features=max_features)
        to_map = {i: j for j, i in enumerate(db)}
        variants = {f"cann k={k}": dict(k=k) for k in ks}
        variants |= {f"pooled k={k}": dict(retrieval=_pooled_retrieval(index, q, to_map, k)) for k in ks}
        for variant, options in variants.items():
            r = m.localize_features(v["keypoints"], v["descriptors"], v["camera"], covariance=False, **options)
            t_err, r_err = pose_error(r.cam_from_world, v["pose"]) if r.success else (np.inf, np.inf)
            rows.append(dict(dataset="strecha", scene=v["scene"], query=v["name"], variant=variant,
                             success=r.success, t_err=t_err, r_err=r_err, inliers=r.num_inliers,
                             retrieved=r.retrieved, **{f"t_{key}": val for key, val in r.timings.items()}))
    return rows


def print_retrieval(retrieval) -> None:
    for label, r in retrieval.items():
        print(f"{label}: first-ranked image co-visible {100 * r['first_covisible']:.1f} % of {r['queries']} queries "
              f"({', '.join(f'{s} {100 * v:.1f} %' for s, v in r['first_covisible_by_set'].items())}), in the top 2 "
              f"{100 * r['top2_covisible']:.1f} %, a distractor first {100 * r['first_distractor']:.1f} %")


def print_localization(summary) -> None:
    print(f"\n{'variant':<12} {'queries':>7} {'median cm':>9} {'median deg':>10} {'(25cm,2deg)':>11} "
          f"{'(5cm,0.5deg)':>12} {'after SIFT s':>12} {'retrieval s':>11}")
    for variant, s in summary.items():
        print(f"{variant:<12} {s['queries']:>7} {s['median_t_cm']:>9.2f} {s['median_r_deg']:>10.3f} "
              f"{100 * s['within_25cm_2deg']:>10.1f}% {100 * s['within_5cm_05deg']:>11.1f}% "
              f"{s['median_after_features_s']:>12.3f} {s['median_retrieval_s']:>11.3f}")


def retrieval_tables(args, names, descriptors, covisible) -> tuple:
    """(i) with and without distractors; returns the summary rows, the pooled index and its facts."""
    from pylocalize.datasets.city import iter_pool_distractors

    index, _ = pooled_index(descriptors, seed=args.seed)
    out = {"without distractors": first_rank(index, names, descriptors, covisible)}
    del index
    t0 = time.perf_counter()
    distractors = iter_pool_distractors(args.distractors, args.distractor_features, np.concatenate(descriptors),
                                        seed=args.seed, progress=True)
    index, train_s = pooled_index(descriptors, distractors, seed=args.seed)
    out[f"with {args.distractors} distractors"] = first_rank(index, names, descriptors, covisible)
    facts = {"images": index.num_images, "features": len(index), "build_and_search_s": time.perf_counter() - t0,
             "train_s": train_s, "nlist": index.nlist, "index_memory_mb": index.memory_bytes / 1e6}
    return out, index, facts


def main(argv=None) -> int:
    import os

    import pylocalize

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--max-features", type=int, default=4000)
    parser.add_argument("--distractors", type=int, default=5000, help="distractor images")
    parser.add_argument("--distractor-features", type=int, default=1000, help="features per distractor image")
    parser.add_argument("--min-shared", type=int, default=30, help="3D points shared by a co-visible pair")
    parser.add_argument("--k", type=int, nargs="+", default=[2, 3], help="images retrieved for localization")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the summary and every localization row here")
    parser.add_argument("--cache", help="pickle file keeping the real images' features and ground truth between runs")
    args = parser.parse_args(argv)
    if not (Path(args.data) / "strecha").is_dir() or not (Path(args.data) / "lund").is_dir():
        print(f"no Strecha or Lund data under {args.data}: give --data (the shared data folder)")
        return 1
    pylocalize.set_num_threads(-1)
    t0 = time.perf_counter()
    views, names, descriptors, covisible = real_images(args)
    print(f"{len(names)} real images ({len(views)} Strecha), {len(covisible) // 2} co-visible pairs; features and "
          f"ground truth in {time.perf_counter() - t0:.0f} s")
    retrieval, index, facts = retrieval_tables(args, names, descriptors, covisible)
    print(f"pooled index: {facts['images']} images, {facts['features']:,} features, built and searched by every real "
          f"image in {facts['build_and_search_s']:.0f} s")
    print_retrieval(retrieval)
    rows = leave_one_out(views, index, args.k, args.max_features)
    summary = {"retrieval": retrieval, "localization": bench_localization.summarize_strecha(rows), "index": facts,
               "seconds": time.perf_counter() - t0, "load_average": os.getloadavg(), "args": vars(args)}
    print_localization(summary["localization"])
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
