"""The ``pylocalize`` command line: ``info``, ``demo``, ``render``, ``evaluate``, ``bench``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import pylocalize


def _info(args) -> int:
    from pylocalize import _core

    print(f"pylocalize {pylocalize.__version__}")
    print(f"simd: {pylocalize.simd_level()} (detected {pylocalize.detected_simd_level()}; "
          f"supported {', '.join(pylocalize.supported_simd_levels())})")
    print(f"threads: {pylocalize.get_num_threads()} of {_core.num_cores()} cores"
          f" (OpenMP {'on' if _core.has_openmp() else 'off'})")
    print(f"cuda: {'yes' if pylocalize.has_cuda() else 'no'}")
    return 0


def _demo(args) -> int:
    if args.kind == "localization":
        from pylocalize.demo import run_localization_demo

        try:  # COLMAP logs every extractor it creates; the demo shows progress bars instead
            import pycolmap

            pycolmap.logging.minloglevel = 2
        except (ImportError, AttributeError):
            pass

        summary = run_localization_demo(args.out, num_views=args.views, num_queries=args.queries,
                                        width=args.width, height=args.height, seed=args.seed)
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
        print(f"figure, poses and results written to {args.out}/")
        return 0
    from pylocalize.demo import run_binary_demo

    summary = run_binary_demo(args.out, nb=args.nb, nq=args.nq, seed=args.seed)
    print(f"\n{summary['nb']:,} database vectors, {summary['nq']} queries, {summary['dim']}-d, "
          f"SIMD {summary['simd']}, {summary['threads']} threads")
    print(f"{'method':40s} {'bits':>5s} {'recall@10':>10s} {'QPS':>10s}")
    for r in summary["results"]:
        print(f"{r['method']:40s} {r['bits']:5d} {r['recall@10']:10.3f} {r['qps']:10.0f}")
    print(f"\nfigure, results and index written to {args.out}/")
    return 0


def _render(args) -> int:
    """Renders template views of a mesh and writes a contact sheet PNG."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from pylocalize.geometry import viewpoint_poses
    from pylocalize.render import Renderer, load_mesh

    mesh = load_mesh(args.mesh)
    size = args.size
    inplane = max(1, args.inplane)
    poses = viewpoint_poses(max(1, -(-args.views // inplane)), inplane,
                            radius=args.distance * mesh.extent, center=mesh.center)[: args.views]
    # Fit the object's bounding sphere into the image with some margin.
    focal = 0.5 * size * args.distance / 0.6
    K = np.array([[focal, 0, (size - 1) / 2], [0, focal, (size - 1) / 2], [0, 0, 1]])
    renderer = Renderer(size, size, K, near=0.01 * mesh.extent, far=100 * mesh.extent,
                        supersample=3, background=(40, 40, 40))
    rgb = renderer.render(mesh, poses, outputs=("rgb",)).rgb
    cols = int(np.ceil(np.sqrt(len(rgb))))
    rows = int(np.ceil(len(rgb) / cols))
    sheet = np.full((rows * size, cols * size, 3), 20, np.uint8)
    for i, image in enumerate(rgb):
        r, c = divmod(i, cols)
        sheet[r * size:(r + 1) * size, c * size:(c + 1) * size] = image
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / (Path(args.mesh).stem + "_templates.png")
    Image.fromarray(sheet).save(path)
    print(f"{len(rgb)} views of {args.mesh} ({len(mesh.faces):,} triangles) -> {path}")
    return 0


def _map_build(args) -> int:
    from pylocalize.localization import Map

    options = {"max_features": args.max_features, "extractor": args.extractor, "progress": True}
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
        m = Map.from_images(args.images, camera=args.camera, seed=args.seed, sfm=args.sfm, **options)
    else:
        raise SystemExit("give --strecha DIR, --colmap DIR --images DIR, --poses FILE --images DIR, or --images DIR")
    m.save(args.out)
    print(f"{m} -> {args.out}")
    return 0


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


def _query_paths(paths):
    """Image files from files and folders (a folder stands for its images, sorted)."""
    from pathlib import Path

    out = []
    for path in map(Path, paths):
        if path.is_dir():
            out.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            out.append(path)
    return out


def _query_camera(path, fixed, per_name):
    """The camera of a query: --camera, --cameras, a Strecha .camera file beside it, or EXIF."""
    from pylocalize.geometry import Camera
    from pylocalize.localization import read_strecha_camera
    from pylocalize.io import image_size as _image_size

    if fixed is not None:
        return fixed, "--camera"
    if per_name is not None:
        if path.name not in per_name:
            raise ValueError(f"no camera for {path.name} in --cameras")
        return per_name[path.name], "--cameras"
    strecha = path.parent.parent / "gt_dense_cameras" / (path.name + ".camera")
    if strecha.is_file():
        return Camera.from_K(read_strecha_camera(strecha)[0], *_image_size(path)), "Strecha .camera file"
    return Camera.from_exif(path)


def _localize(args) -> int:
    from pylocalize.geometry import Camera, read_cameras_file, write_pose_file
    from pylocalize.localization import Map
    from pylocalize.localization.viz import save_localization_figure

    m = Map.load(args.map)
    fixed = Camera.from_string(args.camera) if args.camera else None
    per_name = read_cameras_file(args.cameras) if args.cameras else None
    paths, cameras, failed = [], [], {}
    for path in _query_paths(args.images):
        try:
            camera, source = _query_camera(path, fixed, per_name)
        except Exception as error:  # one bad query must not stop the batch
            failed[path.name] = str(error)
            continue
        if source.startswith("no EXIF"):
            print(f"{path.name}: {source}")
        paths.append(path)
        cameras.append(camera)
    results = m.localize_many(paths, cameras, workers=args.workers, progress=True)
    estimates = []
    for path, camera, result in zip(paths, cameras, results):
        if result.success:
            estimates.append((path.name, result.cam_from_world))
            total = sum(result.timings.values())
            print(f"{path.name}: {result.num_inliers} inliers, {total:.2f} s")
        else:
            failed[path.name] = result.reason
        if args.viz and result.points2D is not None:
            from pylocalize.io import read_image

            save_localization_figure(f"{args.viz}/{path.stem}.png", read_image(path), result, m, camera,
                                     image_dir=m.image_dir)
    for name, reason in failed.items():
        print(f"{name}: failed: {reason}")
    write_pose_file(args.out, estimates)
    print(f"{len(estimates)} localized, {len(failed)} failed -> {args.out}")
    return 0


def _patch_extractor(name, weights):
    """The patch extractor a representation was (or will be) onboarded with."""
    if name == "dinov2":
        if not weights:
            raise SystemExit("--extractor dinov2 needs --weights DIR (a local DINOv2 model directory)")
        from pylocalize.features.dinov2 import DINOv2Extractor

        return DINOv2Extractor(weights)
    from pylocalize.features.patches import DenseSIFTExtractor

    return DenseSIFTExtractor()


def _objects_onboard(args) -> int:
    import time

    from pylocalize.objects import onboard

    t0 = time.perf_counter()
    rep = onboard(args.mesh, _patch_extractor(args.extractor, args.weights), num_views=args.views,
                  num_inplane=args.inplane, num_words=args.words, size=args.size, progress=True)
    rep.save(args.out)
    print(f"{rep} onboarded in {time.perf_counter() - t0:.1f} s -> {args.out}")
    return 0


def _objects_estimate(args) -> int:
    import json

    from pylocalize.io import read_image
    from pylocalize.objects import ObjectRepresentation

    rep = ObjectRepresentation.load(args.rep)
    image = read_image(args.image)
    try:
        fx, fy, cx, cy = (float(v) for v in args.K.split(","))
    except ValueError:
        raise SystemExit(f"--K {args.K!r}: expected fx,fy,cx,cy (OpenCV convention)") from None
    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])
    mask = bbox = None
    if args.mask:
        mask = read_image(args.mask)[..., 0] > 127
    elif args.bbox:
        bbox = [float(v) for v in args.bbox.split(",")]
        if len(bbox) != 4:
            raise SystemExit(f"--bbox {args.bbox!r}: expected x,y,w,h")
    else:
        raise SystemExit("give --mask PNG or --bbox x,y,w,h")
    result = rep.estimate(image, K, mask=mask, bbox=bbox, extractor=_patch_extractor(rep.extractor_name, args.weights))
    out = {"success": result.success, "reason": result.reason, "score": result.score,
           "inliers": result.num_inliers, "matches": result.num_matches, "templates": result.templates,
           "timings": result.timings}
    if result.success:
        out["R"], out["t"] = result.R.tolist(), result.t.tolist()
    from pylocalize.containers import write_bytes_atomic

    write_bytes_atomic(args.out, json.dumps(out, indent=2).encode("utf-8"))
    print(f"{'pose' if result.success else 'failed: ' + result.reason} -> {args.out}")
    if args.viz and result.success and args.mesh:
        from pylocalize.objects.viz import save_pose_overlay

        save_pose_overlay(args.viz, image, args.mesh, K, result)
        print(f"overlay -> {args.viz}")
    return 0 if result.success else 1


def _objects_eval(args) -> int:
    from pylocalize.objects import ObjectRepresentation, bop
    from pylocalize.objects.evaluate import evaluate_dataset, summarize
    from pylocalize.render import load_mesh

    rep = ObjectRepresentation.load(args.rep)
    root = Path(args.bop)
    models = root / "models"
    mesh_path = args.mesh or models / f"obj_{args.obj_id:06d}.ply"
    if not Path(mesh_path).is_file():
        raise SystemExit(f"no mesh: give --mesh, or a dataset folder with {models}/obj_{args.obj_id:06d}.ply")
    mesh = load_mesh(mesh_path)
    info_path = args.models_info or (models / "models_info.json" if (models / "models_info.json").is_file() else None)
    symmetries = None
    if info_path:
        info = bop.read_models_info(info_path)
        if args.obj_id not in info:
            raise SystemExit(f"{info_path} has no object {args.obj_id}")
        symmetries = bop.symmetry_transformations(info[args.obj_id])
    result = evaluate_dataset(rep, mesh, root, args.obj_id, split=args.split,
                              extractor=_patch_extractor(rep.extractor_name, args.weights), symmetries=symmetries,
                              progress=True)
    bop.write_results_csv(args.out, result["rows"])
    print(f"{len(result['rows'])}/{len(result['times'])} instances estimated -> {args.out}")
    for stage, recalls in summarize(result, mesh.extent).items():
        print(stage + ": " + ", ".join(f"{k} {v:.3f}" for k, v in recalls.items()))
    return 0


def _evaluate(args) -> int:
    from pylocalize.localization import evaluate_poses, load_poses

    result = evaluate_poses(load_poses(args.gt), load_poses(args.pred))
    print(f"{result['num_estimated']}/{result['num_images']} images estimated")
    print(f"median error: {result['median_translation_m']:.4f} m, {result['median_rotation_deg']:.4f} deg")
    for key, value in result.items():
        if key.startswith("recall@"):
            print(f"{key}: {100 * value:.1f} %")
    return 0


def _bench(args) -> int:
    if args.topic == "binary":
        from pylocalize.bench.binary import main as bench_main

        return bench_main(["--small"] + list(args.rest))
    raise SystemExit(f"unknown benchmark {args.topic!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pylocalize", description=__doc__)
    parser.add_argument("--threads", type=int, default=None, help="threads for the core (-1 = all)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="version, SIMD level, threads, CUDA")
    p.set_defaults(func=_info)

    p = sub.add_parser("demo", help="run the main job on built-in generated data")
    p.add_argument("--kind", choices=["localization", "binary"], default="localization",
                   help="localization (default) or binary retrieval")
    p.add_argument("--out", default="pylocalize-demo", help="output folder (default: %(default)s)")
    p.add_argument("--views", type=int, default=24, help="localization: mapping views")
    p.add_argument("--queries", type=int, default=8, help="localization: held-out query views")
    p.add_argument("--width", type=int, default=800, help="localization: image width")
    p.add_argument("--height", type=int, default=600, help="localization: image height")
    p.add_argument("--nb", type=int, default=200_000, help="binary: database size")
    p.add_argument("--nq", type=int, default=1000, help="binary: number of queries")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_demo)

    p = sub.add_parser("render", help="render template views of a mesh into a contact sheet PNG")
    p.add_argument("--mesh", required=True, help="mesh file (PLY, OBJ, ...)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--views", type=int, default=48, help="number of views (default: %(default)s)")
    p.add_argument("--inplane", type=int, default=1, help="in-plane rotations per viewpoint")
    p.add_argument("--size", type=int, default=200, help="view size in pixels")
    p.add_argument("--distance", type=float, default=1.5, help="camera distance in object diameters")
    p.set_defaults(func=_render)

    p = sub.add_parser("map", help="build a localization map")
    map_sub = p.add_subparsers(dest="map_command", required=True)
    b = map_sub.add_parser("build", help="map from posed images (Strecha, COLMAP model, pose file) or images only (SfM)")
    b.add_argument("--strecha", help="Strecha scene folder (images/ + gt_dense_cameras/)")
    b.add_argument("--exclude", help="Strecha: comma-separated image names to leave out (queries)")
    b.add_argument("--colmap", help="COLMAP model folder (cameras/images/points3D .bin or .txt); needs --images")
    b.add_argument("--poses", help="pose file 'name qw qx qy qz tx ty tz' (cam_from_world); needs --images and "
                                   "--cameras or --camera")
    b.add_argument("--cameras", help="cameras file, lines 'name MODEL W H PARAMS...'")
    b.add_argument("--camera", help="one camera 'MODEL W H PARAMS...' for every image (COLMAP convention)")
    b.add_argument("--images", help="image folder; alone: structure-from-motion from the images only")
    b.add_argument("--extractor", choices=["opencv", "colmap"], default="opencv", help="SIFT implementation")
    b.add_argument("--max-features", type=int, default=4000)
    b.add_argument("--seed", type=int, default=0, help="structure-from-motion random seed")
    b.add_argument("--sfm", choices=["incremental", "global"], default="incremental",
                   help="structure-from-motion mapper tried first (images only)")
    b.add_argument("--out", required=True, help="map directory to write")
    b.set_defaults(func=_map_build)

    p = sub.add_parser("localize", help="localize query images in a map")
    p.add_argument("--map", required=True, help="map directory")
    p.add_argument("--images", nargs="+", required=True, help="query image files or folders")
    p.add_argument("--camera", help="'MODEL W H PARAMS...' (COLMAP convention) for every query")
    p.add_argument("--cameras", help="cameras file, lines 'name MODEL W H PARAMS...'")
    p.add_argument("--workers", type=int, default=None, help="queries localized in parallel")
    p.add_argument("--out", required=True, help="pose file to write (name qw qx qy qz tx ty tz)")
    p.add_argument("--viz", help="folder for one figure per query (matches, reprojections, retrieved images)")
    p.set_defaults(func=_localize)
    p.epilog = ("Without --camera or --cameras, a query's camera comes from a Strecha .camera file beside it, "
                "else from its EXIF focal length (1.2 x the larger side when EXIF has none).")

    p = sub.add_parser("objects", help="6D pose of unseen objects from their mesh (FoundPose)")
    obj_sub = p.add_subparsers(dest="objects_command", required=True)
    o = obj_sub.add_parser("onboard", help="render templates and build the object representation")
    o.add_argument("--mesh", required=True, help="mesh file (PLY, OBJ, ...), in the units poses should use")
    o.add_argument("--out", required=True, help="representation file to write")
    o.add_argument("--views", type=int, default=57, help="Fibonacci viewpoints")
    o.add_argument("--inplane", type=int, default=14, help="in-plane rotations per viewpoint")
    o.add_argument("--words", type=int, default=2048, help="visual words")
    o.add_argument("--size", type=int, default=420, help="template crop size (a multiple of 14)")
    o.add_argument("--extractor", choices=["dense-sift", "dinov2"], default="dense-sift",
                   help="patch descriptors (dinov2 needs the torch extra and --weights)")
    o.add_argument("--weights", help="local DINOv2 model directory (save_pretrained layout)")
    o.set_defaults(func=_objects_onboard)
    o = obj_sub.add_parser("estimate", help="the object's pose in one RGB image")
    o.add_argument("--rep", required=True, help="representation from 'objects onboard'")
    o.add_argument("--image", required=True)
    o.add_argument("--K", required=True, help="fx,fy,cx,cy (OpenCV convention)")
    o.add_argument("--mask", help="PNG, object pixels white")
    o.add_argument("--bbox", help="x,y,w,h in pixels")
    o.add_argument("--out", required=True, help="pose JSON (R, t in mesh units, cam_from_model)")
    o.add_argument("--viz", help="PNG: the posed model's contour over the image (needs --mesh)")
    o.add_argument("--mesh", help="the onboarded mesh, for --viz")
    o.add_argument("--weights", help="DINOv2 model directory, for a representation onboarded with dinov2")
    o.set_defaults(func=_objects_estimate)

    o = obj_sub.add_parser("eval", help="estimate and score every instance of an object in a BOP scene")
    o.add_argument("--bop", required=True, help="BOP dataset folder (models/, test/<scene>/...) or one scene folder "
                                                "(scene_camera/gt json, rgb/, mask_visib/, depth/)")
    o.add_argument("--split", default="test", help="dataset split folder (default: %(default)s)")
    o.add_argument("--rep", required=True)
    o.add_argument("--mesh", help="the object's mesh, for the metrics (default: models/obj_NNNNNN.ply)")
    o.add_argument("--obj-id", type=int, required=True)
    o.add_argument("--models-info", help="models_info.json, for the object's symmetries (default: models/)")
    o.add_argument("--out", required=True, help="BOP19 results CSV")
    o.add_argument("--weights", help="DINOv2 model directory, for a representation onboarded with dinov2")
    o.set_defaults(func=_objects_eval)

    p = sub.add_parser("evaluate", help="pose errors and recall of estimated poses against ground truth")
    p.add_argument("--gt", required=True, help="pose file, COLMAP model folder or Strecha folder")
    p.add_argument("--pred", required=True, help="pose file (name qw qx qy qz tx ty tz)")
    p.set_defaults(func=_evaluate)

    # The geo and posetext modules import nothing heavy at module level, so their
    # commands are registered here; torch is imported only when a command runs.
    from pylocalize.geo.cli import add_parser as add_geo
    from pylocalize.posetext.cli import add_parser as add_posetext

    add_geo(sub)
    add_posetext(sub)

    p = sub.add_parser("bench", help="run a benchmark at a small size (full runs: benchmarks/)")
    p.add_argument("topic", choices=["binary"])
    p.add_argument("rest", nargs=argparse.REMAINDER, help="extra flags for the benchmark")
    p.set_defaults(func=_bench)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        pylocalize.set_num_threads(args.threads)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
