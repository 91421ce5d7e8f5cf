"""``pylocalize map build``, ``localize``, ``evaluate``: visual localization from the command line.

- ``map build``: a map from posed images (a Strecha folder, a COLMAP model, a pose file) or
  from images alone (structure-from-motion); ``--ray``: its features extracted on a Ray
  cluster (:mod:`pylocalize.distributed.extract`, the same map); ``--features sift,orb``:
  an ORB layer beside SIFT (:mod:`pylocalize.localization.layers`);
- ``localize``: the poses of query images in a map, written as a pose file (``--ray``: on a
  Ray cluster, :mod:`pylocalize.distributed.batch`, the same file; ``--features orb``: by
  the map's ORB layer);
- ``evaluate``: pose errors and recall of a pose file against ground truth;
- ``pairs``: retrieval pairs of query images in a map, as hloc or kapture pairs files.

``pylocalize/cli.py`` wires them in with ``add_parser(subparsers)``; pycolmap and the map
code are imported only when a command runs.
"""

from __future__ import annotations

import logging
import sys
from contextlib import nullcontext
from pathlib import Path

from pylocalize._cli import at_least, run_alone

logger = logging.getLogger(__name__)


def _existing(path, option: str, what: str, folder: bool = True) -> Path:
    """``path`` if it is there (a folder, or a file), else a ``FileNotFoundError`` naming the option."""
    path = Path(path)
    if not (path.is_dir() if folder else path.is_file()):
        kind = "folder" if folder else "file"
        there = "a file, not a folder" if folder and path.is_file() else f"no such {kind}"
        raise FileNotFoundError(f"{option} {path}: {there}; give the {what}")
    return path


def _load_map(path):
    """The map at ``path`` (``--map``), or one line saying it is not there and what to give."""
    from pylocalize.localization import Map

    return Map.load(_existing(path, "--map", "map folder from 'pylocalize map build ... --out DIR'"))


def _check_build_inputs(args) -> None:
    """The inputs of ``map build`` are there and its camera parses, before minutes of work."""
    for option, what in (("strecha", "Strecha scene folder (images/ + gt_dense_cameras/)"),
                         ("colmap", "COLMAP model folder (cameras, images, points3D .bin or .txt)"),
                         ("images", "folder of the images")):
        if getattr(args, option):
            _existing(getattr(args, option), f"--{option}", what)
    for option, what in (("poses", "pose file, lines 'name qw qx qy qz tx ty tz'"),
                         ("cameras", "cameras file, lines 'name MODEL W H PARAMS...'")):
        if getattr(args, option):
            _existing(getattr(args, option), f"--{option}", what, folder=False)
    if args.camera:
        from pylocalize.geometry import Camera

        try:
            Camera.from_string(args.camera)
        except ValueError as error:
            raise ValueError(f"--camera: {error}") from None



def _ray_extraction(args):
    """``map build --ray``: the features extracted on that Ray cluster (Ray Data), their shards
    in a temporary folder beside ``--out`` (the images and that folder must be at the same
    paths on every node)."""
    from pylocalize.distributed._runtime import connect, install_hint
    from pylocalize.distributed.extract import RayExtraction

    with install_hint("--ray"):
        connect(args.ray)
    return RayExtraction(folder=Path(args.out).absolute().parent)


def _build_layers(args) -> dict:
    """``map build --features``: ``{kind: extractor options}`` for the map builders' ``layers``."""
    from pylocalize.localization.layers import FEATURE_KINDS

    kinds = [k.strip() for k in args.features.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in FEATURE_KINDS]
    if unknown or "sift" not in kinds:
        raise SystemExit(f"--features {args.features}: give a comma-separated list of {', '.join(FEATURE_KINDS)} "
                         "holding sift (a map always holds SIFT), e.g. --features sift,orb")
    return {kind: ({"max_features": args.orb_features} if kind == "orb" else {}) for kind in kinds}


def _map_build(args) -> int:
    from pylocalize.localization import Map

    _check_build_inputs(args)
    options = {"max_features": args.max_features, "extractor": args.extractor, "progress": args.progress,
               "extraction": _ray_extraction(args) if args.ray else None, "layers": _build_layers(args)}
    if args.strecha:
        exclude = [e for e in (args.exclude or "").split(",") if e]
        m = Map.from_strecha(args.strecha, exclude=exclude, **options)
    elif args.colmap:
        if not args.images:
            raise SystemExit("--colmap needs --images DIR (the model's image folder)")
        m = Map.from_colmap(args.colmap, args.images, **options)
    elif args.poses:
        if not args.images or not (args.cameras or args.camera):
            raise SystemExit("--poses needs --images DIR and --cameras FILE or --camera 'MODEL W H PARAMS...'")
        m = Map.from_pose_file(args.poses, args.cameras or args.camera, args.images, **options)
    elif args.images:
        m = Map.from_images(args.images, camera=args.camera, seed=args.seed, sfm=args.sfm,
                            georegister=args.georegister, gps_noise_m=args.gps_noise,
                            deterministic=args.deterministic, **options)
    else:
        raise SystemExit("give --strecha DIR, --colmap DIR --images DIR, --poses FILE --images DIR, or --images DIR")
    if args.patches:
        m.add_patches("sift", progress=args.progress)  # the map's image folder is known: every builder above set it
    m.save(args.out)
    geo = ""
    if m.geo_origin is not None:
        geo = " (geo-registered: metres east-north-up from lat {:.7f}, lon {:.7f}, alt {:.2f} m)".format(*m.geo_origin)
    print(f"{m} -> {args.out}{geo}")
    return 0


def _map_export(args) -> int:

    m = _load_map(args.map)
    out = m.to_colmap(args.colmap, binary=not args.text)
    print(f"{m} -> COLMAP model ({'text' if args.text else 'binary'}) in {out}")
    return 0


def _map_geo(args) -> int:
    import numpy as np

    from pylocalize.containers import write_bytes_atomic
    from pylocalize.geometry import read_pose_file

    m = _load_map(args.map)
    if m.geo_origin is None:
        raise ValueError(f"{args.map}: the map is not geo-registered; `pylocalize map build --images DIR` "
                         "registers maps whose photos' EXIF GPS spreads beyond --gps-noise in two directions (its log "
                         "says why a map was not)")
    poses = read_pose_file(args.poses)
    lines = [f"{name} {lat:.9f} {lon:.9f} {alt:.3f}"
             for name, (lat, lon, alt) in zip(poses, m.camera_geodetic(np.stack(list(poses.values()))))]
    text = "# name latitude longitude altitude (camera centre, WGS84 degrees, metres)\n" + "\n".join(lines) + "\n"
    if args.out:
        write_bytes_atomic(args.out, text.encode("utf-8"))
        print(f"{len(lines)} camera positions -> {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def query_camera(path, fixed=None, per_name=None, m=None, key=None):
    """The :class:`~pylocalize.localization.map.QueryCamera` (camera, where it came from,
    whether its focal length is a guess) of the query image ``path``, from the first source
    that has one: ``fixed`` (--camera; ``"map"`` forces the map's camera), ``per_name[key]``
    (--cameras; ``key`` is the query's key, see :func:`pylocalize.io.image_keys`, else its file
    name, which older cameras files use), the Strecha ``.camera`` file of the image, the calibrated camera of the map
    ``m`` for the query's EXIF device (:meth:`Map.query_camera`), its EXIF focal length, or a guess
    (:meth:`Camera.from_exif`). Raises ``ValueError`` if ``per_name`` lacks the image, or for
    ``"map"`` when no map camera fits the query."""
    from pylocalize.datasets.strecha import camera_file_of_image, read_strecha_camera
    from pylocalize.geometry import Camera
    from pylocalize.geometry.camera import is_focal_guess
    from pylocalize.io import image_size
    from pylocalize.localization.map import QueryCamera

    if isinstance(fixed, str) and fixed == "map":
        if m is None:
            raise ValueError("--camera map needs the map")
        return m.query_camera(path, use_map=True)
    if fixed is not None:
        return QueryCamera(fixed, "--camera", False)
    if per_name is not None:
        name = next((n for n in (key, path.name) if n in per_name), None)
        if name is None:
            raise ValueError(f"no camera for {key or path.name} in --cameras: add a line "
                             f"'{key or path.name} MODEL W H PARAMS...'")
        return QueryCamera(per_name[name], "--cameras", False)
    strecha = camera_file_of_image(path)
    if strecha is not None:
        return QueryCamera(Camera.from_K(read_strecha_camera(strecha)[0], *image_size(path)), "Strecha .camera file",
                           False)
    if m is not None:
        return m.query_camera(path)
    camera, source = Camera.from_exif(path)
    return QueryCamera(camera, source, is_focal_guess(source))


def _query_cameras(args, m):
    """``(keys, paths, cameras, failed)``: the queries that have a camera (``QueryCamera`` each),
    and ``{key: reason}`` of those that have none (one bad query must not stop the batch)."""
    from pylocalize.geometry import Camera, read_cameras_file
    from pylocalize.io import image_keys

    fixed = None if not args.camera else "map" if args.camera == "map" else Camera.from_string(args.camera)
    per_name = read_cameras_file(args.cameras) if args.cameras else None
    keys, paths, cameras, failed = [], [], [], {}
    for key, path in image_keys(args.images):
        try:
            query = query_camera(path, fixed, per_name, m, key=key)
        except Exception as error:  # one bad query must not stop the batch
            failed[key] = str(error)
            continue
        if query.guessed:
            logger.warning("%s: intrinsics guessed (%s); the focal length is estimated with the pose (give --camera or "
                           "--cameras for a calibrated one)", key, query.source)
        keys.append(key)
        paths.append(path)
        cameras.append(query)
    return keys, paths, cameras, failed


def _pose_note(result) -> str:
    """The pose file's comment on a localized query's camera (the pose line itself stays
    ``name qw qx qy qz tx ty tz``, which every pose reader skips comments around)."""
    if result.intrinsics_guessed:
        how = "focal length estimated with the pose" if result.focal_estimated else "used as guessed"
        return f"intrinsics GUESSED ({result.camera_source}); {how}: {result.camera.to_string()}"
    return f"camera: {result.camera_source}"


def _localize(args) -> int:
    from pylocalize._log import quiet_colmap
    from pylocalize.geometry import write_pose_file
    from pylocalize.io import read_image
    from pylocalize.localization.viz import save_localization_figure

    m = _load_map(args.map)
    m.feature_layer(args.features)  # a map without the layer: one line saying how to build one
    if args.cameras:
        _existing(args.cameras, "--cameras", "cameras file, lines 'name MODEL W H PARAMS...'", folder=False)
    keys, paths, cameras, failed = _query_cameras(args, m)
    if not keys and not failed:
        from pylocalize.io import IMAGE_SUFFIXES

        raise ValueError(f"--images {' '.join(args.images)}: no image files there (suffixes "
                         f"{', '.join(IMAGE_SUFFIXES)}); give image files or folders holding them")
    if args.ray:
        results = _localize_on_ray(args, paths, cameras)
    else:
        with quiet_colmap() if m.extractor == "colmap" else nullcontext():  # pycolmap's SIFT logs each extractor
            results = m.localize_many(paths, cameras, workers=args.workers, progress=args.progress,
                                      features=args.features)
    estimates, notes = [], {}
    for key, path, result in zip(keys, paths, results):
        if result.success:
            estimates.append((key, result.cam_from_world))
            notes[key] = _pose_note(result)
            total = sum(result.timings.values())
            print(f"{key}: {result.num_inliers} inliers, {total:.2f} s, camera: {result.camera_source}")
            if result.intrinsics_guessed:
                logger.warning("%s: localized with GUESSED intrinsics (%s, f = %.1f px): the pose is less "
                               "reliable than with a calibrated camera", key,
                               "focal length estimated" if result.focal_estimated else "as guessed",
                               result.camera.K[0, 0])
        else:
            failed[key] = result.reason
        if args.viz and result.points2D is not None:  # viz/qa/0003.png for the query qa/0003.jpg
            save_localization_figure(Path(args.viz) / Path(key).with_suffix(".png"), read_image(path), result, m,
                                     result.camera, image_dir=m.image_dir)
    for key, reason in failed.items():
        print(f"{key}: failed: {reason}")
    write_pose_file(args.out, estimates, notes=notes)
    guessed = sum(r.success and r.intrinsics_guessed for r in results)
    if guessed:
        print(f"{guessed} of the localized queries had guessed intrinsics (marked in {args.out})")
    print(f"{len(estimates)} localized, {len(failed)} failed -> {args.out}")
    return _batch_status(len(estimates), len(failed), args.allow_failures)


def _localize_on_ray(args, paths, cameras) -> list:
    """The results of ``localize --ray``: the queries on a pool of Ray actors, each loading the
    map from ``--map`` (a path every node of the cluster must see)."""
    from pylocalize.distributed._runtime import install_hint
    from pylocalize.distributed.batch import localize_many_ray

    with install_hint("--ray"):
        return localize_many_ray(args.map, paths, cameras, address=args.ray, actors=args.workers,
                                 progress=args.progress, features=args.features)


def _batch_status(done: int, failed: int, allow_failures: bool, what: str = "localized") -> int:
    """0 when every query was done; 1 when one failed (0 with ``--allow-failures``, as long as
    one was done), so that a script notices."""
    if done == 0:
        logger.error("no query was %s: see the reasons above", what)
        return 1
    if failed and not allow_failures:
        logger.error("%d of %d queries failed (their reasons are above); --allow-failures accepts that",
                     failed, done + failed)
        return 1
    return 0


def _evaluate(args) -> int:
    from pylocalize.localization import evaluate_poses, load_poses

    queries = _read_query_list(args.queries) if args.queries else None
    result = evaluate_poses(load_poses(args.gt), load_poses(args.pred), queries=queries)
    print(f"{result['num_estimated']}/{result['num_images']} images estimated")
    if result["missing"]:
        print(f"missing (no pose estimated, counted as failures): {', '.join(result['missing'])}")
    print(f"{'image':<32} {'error m':>10} {'error deg':>10}")
    for name, (t_err, r_err) in result["per_image"].items():
        print(f"{name:<32} {t_err:>10.4f} {r_err:>10.4f}")
    print(f"median error: {result['median_translation_m']:.4f} m, {result['median_rotation_deg']:.4f} deg")
    for key, value in result.items():
        if key.startswith("recall@"):
            print(f"{key}: {100 * value:.1f} %")
    return 0


def _pairs(args) -> int:
    from pylocalize.features import extract_sift
    from pylocalize.index.pairs import write_pairs_hloc, write_pairs_kapture
    from pylocalize.io import image_keys

    m = _load_map(args.map)
    pairs, failed = {}, {}
    for key, path in image_keys(args.images):  # keys as in localize: name, or folder/name
        try:
            _, descriptors = extract_sift(path, m.max_features, m.extractor)  # retrieval needs no camera
        except ValueError as error:  # one unreadable query must not stop the batch
            failed[key] = str(error)
            continue
        images, scores = m.retrieve(descriptors, args.k, return_scores=True)
        pairs[key] = [(m.names[i], s) for i, s in zip(images, scores)]
    if args.format == "hloc":
        write_pairs_hloc(args.out, {q: [d for d, _ in dbs] for q, dbs in pairs.items()})
    else:
        write_pairs_kapture(args.out, pairs)
    for name, reason in failed.items():
        print(f"{name}: failed: {reason}")
    print(f"{sum(map(len, pairs.values()))} pairs of {len(pairs)} queries -> {args.out}")
    return _batch_status(len(pairs), len(failed), args.allow_failures, "paired")


def _read_query_list(path) -> list:
    """Image names, one per line (the first word of a line: hloc's query lists carry the camera
    after the name); blank lines and ``#`` comments skipped."""
    lines = Path(path).read_text().splitlines()
    return [line.split()[0] for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _add_map(subparsers) -> None:
    p = subparsers.add_parser("map", help="build, export or geo-locate a localization map")
    map_sub = p.add_subparsers(dest="map_command", required=True)
    b = map_sub.add_parser("build",
                           help="map from posed images (Strecha, COLMAP model, pose file) or images only (SfM)")
    b.add_argument("--strecha", help="Strecha scene folder (images/ + gt_dense_cameras/)")
    b.add_argument("--exclude", help="Strecha: comma-separated image names to leave out (queries)")
    b.add_argument("--colmap", help="COLMAP model folder (cameras/images/points3D .bin or .txt); needs --images")
    b.add_argument("--poses", help="pose file 'name qw qx qy qz tx ty tz' (cam_from_world); needs --images and "
                                   "--cameras or --camera")
    b.add_argument("--cameras", help="cameras file, lines 'name MODEL W H PARAMS...'")
    b.add_argument("--camera", help="one camera 'MODEL W H PARAMS...' for every image (COLMAP convention)")
    b.add_argument("--images", help="image folder; alone: structure-from-motion from the images only")
    b.add_argument("--extractor", choices=["opencv", "colmap"], default="opencv", help="SIFT implementation")
    b.add_argument("--max-features", type=at_least(1), default=4000, help="SIFT features per image")
    b.add_argument("--features", default="sift", metavar="KINDS",
                   help="kinds of local features the map holds, comma-separated: sift, and orb (fast binary "
                        "features for localizing frames, matched by Hamming distance) beside it: sift,orb")
    b.add_argument("--patches", action="store_true",
                   help="also keep an image patch of each SIFT observation (~256 bytes each), so that `pylocalize "
                        "track` refines every pose to a fraction of a pixel")
    b.add_argument("--orb-features", type=at_least(1), default=2000, help="ORB features per image (--features orb)")
    b.add_argument("--seed", type=int, default=0, help="structure-from-motion random seed")
    b.add_argument("--sfm", choices=["incremental", "global"], default="incremental",
                   help="structure-from-motion mapper tried first (images only)")
    b.add_argument("--no-georegister", dest="georegister", action="store_false",
                   help="images only: keep SfM's frame even when the images carry GPS (default: maps whose "
                        "images' EXIF GPS spreads beyond --gps-noise are moved into metres east-north-up)")
    b.add_argument("--gps-noise", type=float, default=5.0, metavar="M",
                   help="images only: expected GPS error in metres, for geo-registration")
    b.add_argument("--deterministic", action="store_true",
                   help="structure-from-motion on one thread with seeded randomness: the same images and --seed "
                        "give the same map (slower)")
    b.add_argument("--ray", metavar="auto|local|ADDRESS",
                   help="extract the features on a Ray cluster (extra dist; Ray Data, the same features): 'auto' "
                        "joins the Ray running on this machine or starts one in this process, 'local' always starts "
                        "one here, ADDRESS (HOST:PORT) connects to a cluster; the images and the folder of --out must "
                        "be at the same paths on every node")
    b.add_argument("--out", required=True, help="map directory to write")
    b.set_defaults(func=_map_build)
    e = map_sub.add_parser("export", help="write a map as a COLMAP model (cameras, images, points3D)")
    e.add_argument("--map", required=True, help="map directory")
    e.add_argument("--colmap", required=True, metavar="DIR",
                   help="folder to write the model into (new, empty, or holding a COLMAP model to replace)")
    form = e.add_mutually_exclusive_group()
    form.add_argument("--binary", dest="text", action="store_false", help="COLMAP's .bin files (the default)")
    form.add_argument("--text", dest="text", action="store_true", help="COLMAP's .txt files")
    e.set_defaults(func=_map_export, text=False)
    g = map_sub.add_parser("geo", help="latitude, longitude and altitude of the cameras of a pose file in a "
                                       "geo-registered map")
    g.add_argument("--map", required=True, help="geo-registered map directory")
    g.add_argument("--poses", required=True, help="pose file (name qw qx qy qz tx ty tz), e.g. from localize")
    g.add_argument("--out", help="file to write 'name lat lon alt' lines to (default: print them)")
    g.set_defaults(func=_map_geo)


def _add_localize(subparsers) -> None:
    p = subparsers.add_parser("localize", help="localize query images in a map")
    p.add_argument("--map", required=True, help="map directory")
    p.add_argument("--images", nargs="+", required=True, help="query image files or folders")
    p.add_argument("--camera", help="'MODEL W H PARAMS...' (COLMAP convention) for every query, or 'map': the "
                                    "map's calibrated camera (scaled to the query's size)")
    p.add_argument("--cameras", help="cameras file, lines 'name MODEL W H PARAMS...'")
    p.add_argument("--workers", type=at_least(1), default=None,
                   help="queries localized in parallel (with --ray: Ray actors; default one per free CPU)")
    p.add_argument("--ray", metavar="auto|local|ADDRESS",
                   help="localize on a Ray cluster (extra dist): 'auto' joins the Ray running on this machine or "
                        "starts one in this process, 'local' always starts one here, ADDRESS (HOST:PORT) connects "
                        "to a cluster; the map and the query files must be at the same paths on every node")
    p.add_argument("--out", required=True, help="pose file to write (name qw qx qy qz tx ty tz)")
    p.add_argument("--viz", help="folder for one figure per query (matches, reprojections, retrieved images)")
    p.add_argument("--features", choices=["sift", "orb"], default="sift",
                   help="the map's features to localize with: orb needs a map built with --features sift,orb")
    p.add_argument("--allow-failures", action="store_true",
                   help="exit 0 when some queries fail (not all): by default any failure exits 1")
    p.set_defaults(func=_localize)
    p.epilog = ("Without --camera or --cameras, a query's camera comes from a Strecha .camera file beside it, "
                "else from the map's calibrated camera of the same EXIF device (make, model, focal length) and "
                "aspect ratio, else from its EXIF focal length; without any, the focal length is guessed and "
                "estimated with the pose, and the output and the pose file say so. "
                "Queries are keyed by file name when given as files, by folder/name when given as folders "
                "(qa/0003.jpg), in the pose file, the output and the figures.")


def _add_evaluate(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="pose errors and recall of estimated poses against ground truth")
    p.add_argument("--gt", required=True, help="pose file, COLMAP model folder or Strecha folder")
    p.add_argument("--pred", required=True, help="pose file (name qw qx qy qz tx ty tz)")
    p.add_argument("--queries", help="file of the query image names to score, one per line (default: the images "
                                     "in --pred); a query without a pose counts as a failure")
    p.set_defaults(func=_evaluate)


def _add_pairs(subparsers) -> None:
    p = subparsers.add_parser("pairs", help="image pairs (query, map image, CANN score) for hloc or kapture")
    p.add_argument("--map", required=True, help="map directory")
    p.add_argument("--images", nargs="+", required=True, help="query image files or folders")
    p.add_argument("--k", type=at_least(1), default=10, help="map images per query, best first")
    p.add_argument("--format", choices=["hloc", "kapture"], default="hloc",
                   help="hloc: 'query db' lines; kapture: 'query, db, score' pairsfile")
    p.add_argument("--out", required=True, help="pairs file to write")
    p.add_argument("--allow-failures", action="store_true",
                   help="exit 0 when some queries cannot be read (not all): by default any failure exits 1")
    p.set_defaults(func=_pairs)


def add_parser(subparsers) -> None:
    """Adds the ``map`` (``build``), ``localize``, ``evaluate`` and ``pairs`` commands to an argparse
    sub-parser set, as ``pylocalize.cli.build_parser`` builds its commands."""
    _add_map(subparsers)
    _add_localize(subparsers)
    _add_evaluate(subparsers)
    _add_pairs(subparsers)


def main(argv=None) -> int:
    """Runs the localization commands alone: ``python -m pylocalize.localization.cli localize ...``."""
    return run_alone(add_parser, argv)


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["add_parser", "main", "query_camera"]
