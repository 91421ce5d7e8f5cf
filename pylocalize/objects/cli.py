"""``pylocalize objects onboard|estimate|eval``: 6D pose of unseen objects from their mesh (FoundPose).

- ``objects onboard``: render templates of a mesh and build the object representation
  (``--ray``: the templates as Ray tasks, :class:`pylocalize.distributed.RayExecutor`);
- ``objects estimate``: the object's pose in one RGB image, given its mask or box;
- ``objects eval``: estimate and score every instance of an object in a BOP scene.

``pylocalize/cli.py`` wires them in with ``add_parser(subparsers)``; the renderer, the
patch extractors (and torch, for DINOv2 and the learned descriptor) are imported only when a command runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from pylocalize._cli import at_least, run_alone
from pylocalize.objects.evaluate import GIVEN
from pylocalize.objects.learned import TRAIN_SECONDS_CAP, TRAIN_STEPS, WITH_DESCRIPTOR_FILE
from pylocalize.objects.representation import RETRIEVALS
from pylocalize.objects.segmentation import SEGMENTATIONS


def _patch_extractor(name, weights, rep_path=None):
    """The patch extractor a representation was (or will be) onboarded with; a learned one
    is read from ``weights`` or from beside the representation file ``rep_path``."""
    if name in WITH_DESCRIPTOR_FILE:
        from pylocalize.objects.learned import descriptor_path, load_extractor

        try:
            return load_extractor(name, weights or descriptor_path(rep_path))
        except (FileNotFoundError, ImportError) as error:
            raise SystemExit(str(error)) from None
    if name == "dinov2":
        if not weights:
            raise SystemExit("--extractor dinov2 needs --weights DIR (a local DINOv2 model directory)")
        from pylocalize.features.dinov2 import DINOv2Extractor

        return DINOv2Extractor(weights)
    from pylocalize.features.patches import DenseSIFTExtractor

    return DenseSIFTExtractor()


def _onboard(args) -> int:
    import time

    from pylocalize.objects import onboard
    from pylocalize.objects.onboarding import format_stage_seconds

    t0 = time.perf_counter()
    executor = None
    if args.ray:  # the templates as Ray tasks on that cluster
        from pylocalize.distributed._runtime import connect, install_hint
        from pylocalize.distributed.executor import RayExecutor

        with install_hint("--ray"):
            connect(args.ray)
        executor = RayExecutor()
    options = dict(num_views=args.views, num_inplane=args.inplane, num_words=args.words, size=args.size,
                   progress=args.progress, mesh_units=args.mesh_units, executor=executor)
    if args.extractor == "auto":  # both descriptors, scored on held-out frames; the winner is kept
        from pylocalize.objects.choice import onboard_with_best_descriptor

        rep, extractor, choice = onboard_with_best_descriptor(
            args.mesh, args.backgrounds, num_frames=args.check_frames,
            train_options={"steps": args.train_steps, "seconds": args.train_seconds}, **options)
        print(f"held-out check ({args.check_frames} frames, mean of AR_MSSD and AR_MSPD; dense-sift kept unless "
              "beaten by over 2 standard errors): "
              + ", ".join(f"{name} {score:.3f}" for name, score in choice.scores.items()) + f" -> {choice.name}")
    elif args.extractor in WITH_DESCRIPTOR_FILE:  # trained on the renders first; its file goes beside OUT
        from pylocalize.objects.learned import train_object_descriptor, with_learned

        extractor = with_learned(args.extractor, train_object_descriptor(
            args.mesh, args.backgrounds, steps=args.train_steps, seconds=args.train_seconds, size=args.size,
            progress=args.progress))
        rep = onboard(args.mesh, extractor, **options)
    else:
        rep = onboard(args.mesh, _patch_extractor(args.extractor, args.weights), **options)
    saving = time.perf_counter()
    rep.save(args.out)
    if rep.extractor_name in WITH_DESCRIPTOR_FILE:
        from pylocalize.objects.learned import descriptor_path

        extractor.save(descriptor_path(args.out))
        print(f"learned descriptor -> {descriptor_path(args.out)}")
    rep.onboarding_seconds["saving"] = time.perf_counter() - saving
    print(f"{rep} onboarded in {time.perf_counter() - t0:.1f} s -> {args.out}")
    print(f"  stages: {format_stage_seconds(rep.onboarding_seconds)}; mesh units: {rep.mesh_units}")
    return 0


def _intrinsics(text: str) -> np.ndarray:
    """3x3 K from ``--K fx,fy,cx,cy`` (OpenCV convention)."""
    try:
        fx, fy, cx, cy = (float(v) for v in text.split(","))
    except ValueError:
        raise SystemExit(f"--K {text!r}: expected fx,fy,cx,cy (OpenCV convention)") from None
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])


def _object_region(args):
    """``(mask, bbox)`` from --mask (a PNG, object pixels white) or --bbox x,y,w,h; one is None."""
    from pylocalize.io import read_image

    if args.mask:
        return read_image(args.mask)[..., 0] > 127, None
    if args.bbox:
        bbox = [float(v) for v in args.bbox.split(",")]
        if len(bbox) != 4:
            raise SystemExit(f"--bbox {args.bbox!r}: expected x,y,w,h")
        return None, bbox
    raise SystemExit("give --mask PNG or --bbox x,y,w,h")


def _estimate(args) -> int:
    import json

    from pylocalize.containers import write_bytes_atomic
    from pylocalize.io import read_image
    from pylocalize.objects import ObjectRepresentation

    rep = ObjectRepresentation.load(args.rep)
    image = read_image(args.image)
    K = _intrinsics(args.K)
    mask, bbox = _object_region(args)
    extractor = _patch_extractor(rep.extractor_name, args.weights, args.rep)
    if args.depth and not args.mesh:
        raise SystemExit("--depth needs --mesh: the fit to the depth renders the onboarded mesh")
    depth = _depth_image(args) if args.depth else None
    if depth is not None and depth.shape != image.shape[:2]:
        raise SystemExit(f"--depth is {depth.shape[1]}x{depth.shape[0]} and the image {image.shape[1]}x"
                         f"{image.shape[0]}: give the depth registered to the colour image")
    options = dict(mask=mask, bbox=bbox, extractor=extractor, segment=args.segment, retrieval=args.retrieval)
    if depth is None:
        result = rep.estimate(image, K, **options)
    else:
        from pylocalize.objects.depth import estimate_with_depth
        from pylocalize.render import load_mesh

        result, agreement = estimate_with_depth(rep, load_mesh(args.mesh), image, K, depth, **options)
    out = {"success": result.success, "reason": result.reason, "score": result.score,
           "inliers": result.num_inliers, "matches": result.num_matches, "templates": result.templates,
           "timings": result.timings}
    if result.success and depth is not None:
        out["depth"] = ({"used": True, "agreement": agreement} if agreement is not None else
                        {"used": False, "reason": "no hypothesis meets the measured depth: the RGB pose"})
    if result.success:
        out["R"], out["t"] = result.R.tolist(), result.t.tolist()
    write_bytes_atomic(args.out, json.dumps(out, indent=2).encode("utf-8"))
    print(f"{'pose' if result.success else 'failed: ' + result.reason} -> {args.out}")
    if args.viz and result.success and args.mesh:
        from pylocalize.objects.viz import save_pose_overlay

        save_pose_overlay(args.viz, image, args.mesh, K, result)
        print(f"overlay -> {args.viz}")
    return 0 if result.success else 1


def _depth_image(args):
    """--depth read as float32 mesh units (times --depth-scale), or ``SystemExit`` naming it."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(args.depth) as im:
            depth = np.asarray(im).astype(np.float32) * args.depth_scale
    except (OSError, ValueError) as error:
        raise SystemExit(f"--depth {args.depth}: cannot read it as an image ({error})") from None
    if depth.ndim != 2:
        raise SystemExit(f"--depth {args.depth}: a one-channel depth image is needed, got shape {depth.shape}")
    return depth


def _symmetries(args, models: Path):
    """The object's symmetry transformations from --models-info or ``models/models_info.json``
    (None when neither is there: the object is treated as asymmetric)."""
    from pylocalize.objects import bop

    info_path = args.models_info or (models / "models_info.json" if (models / "models_info.json").is_file() else None)
    if not info_path:
        return None
    info = bop.read_models_info(info_path)
    if args.obj_id not in info:
        raise SystemExit(f"{info_path} has no object {args.obj_id}")
    return bop.symmetry_transformations(info[args.obj_id])


def _eval(args) -> int:
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
    symmetries = _symmetries(args, models)
    extractor = _patch_extractor(rep.extractor_name, args.weights, args.rep)
    result = evaluate_dataset(rep, mesh, root, args.obj_id, split=args.split, extractor=extractor,
                              symmetries=symmetries, progress=args.progress, given=args.given, segment=args.segment,
                              depth=args.depth)
    bop.write_results_csv(args.out, result["rows"], units=rep.mesh_units)
    print(f"{len(result['rows'])}/{len(result['times'])} instances estimated -> {args.out}")
    for stage, recalls in summarize(result, mesh.extent).items():
        print(stage + ": " + ", ".join(f"{k} {v:.3f}" for k, v in recalls.items()))
    return 0


def _add_onboard(sub) -> None:
    o = sub.add_parser("onboard", help="render templates and build the object representation")
    o.add_argument("--mesh", required=True, help="mesh file (PLY, OBJ, ...), in the units poses should use")
    o.add_argument("--mesh-units", choices=["mm", "cm", "m"],
                   help="the mesh's length unit, recorded for BOP results (t in mm); poses stay in mesh units "
                        "(default: guessed from the mesh's size, metres under 10 units across, else mm)")
    o.add_argument("--out", required=True, help="representation file to write")
    o.add_argument("--views", type=at_least(1), default=57, help="Fibonacci viewpoints")
    o.add_argument("--inplane", type=at_least(1), default=14, help="in-plane rotations per viewpoint")
    o.add_argument("--words", type=at_least(2), default=2048, help="visual words")
    o.add_argument("--size", type=at_least(14), default=420, help="template crop size (a multiple of 14)")
    o.add_argument("--extractor", choices=["dense-sift", "dinov2", "learned", "dense-sift+learned", "auto"],
                   default="dense-sift",
                   help="patch descriptors (dinov2 needs the torch extra and --weights; learned: a per-object "
                        "network trained here on the mesh's renders, torch extra, written to OUT.descriptor; "
                        "dense-sift+learned: both side by side; auto: onboards with dense-sift and dense-sift+learned "
                        "and keeps the one that poses held-out frames better)")
    o.add_argument("--weights", help="local DINOv2 model directory (save_pretrained layout)")
    o.add_argument("--backgrounds", help="learned, auto: a folder of any photos to put behind the training renders "
                                         "(auto holds a quarter out for its check; default: procedural textures)")
    o.add_argument("--check-frames", type=at_least(2), default=48,
                   help="auto: held-out frames both descriptors are scored on")
    o.add_argument("--train-steps", type=at_least(1), default=TRAIN_STEPS, help="learned: training steps")
    o.add_argument("--train-seconds", type=float, default=TRAIN_SECONDS_CAP,
                   help="learned: stop training early after this many seconds (a loaded machine)")
    o.add_argument("--ray", metavar="auto|local|ADDRESS",
                   help="render and describe the templates as Ray tasks (extra dist; the same representation): "
                        "'auto' joins the Ray running on this machine or starts one in this process, 'local' always "
                        "starts one here, ADDRESS (HOST:PORT) connects to a cluster")
    o.set_defaults(func=_onboard)


def _add_segment(parser) -> None:
    parser.add_argument("--segment", choices=SEGMENTATIONS, default="grabcut",
                        help="with a box and no mask: the object's pixels found in it by GrabCut, or the whole box")


def _add_estimate(sub) -> None:
    o = sub.add_parser("estimate", help="the object's pose in one RGB image")
    o.add_argument("--rep", required=True, help="representation from 'objects onboard'")
    o.add_argument("--image", required=True)
    o.add_argument("--K", required=True, help="fx,fy,cx,cy (OpenCV convention)")
    o.add_argument("--mask", help="PNG, object pixels white")
    o.add_argument("--bbox", help="x,y,w,h in pixels")
    o.add_argument("--out", required=True, help="pose JSON (R, t in mesh units, cam_from_model)")
    o.add_argument("--viz", help="PNG: the posed model's contour over the image (needs --mesh)")
    o.add_argument("--mesh", help="the onboarded mesh, for --viz and --depth")
    o.add_argument("--depth", help="depth PNG of the same camera (RGB-D): the pose is then the hypothesis the "
                                   "measured depth supports best, fitted to it (needs --mesh)")
    o.add_argument("--depth-scale", type=float, default=1.0,
                   help="mesh units per depth unit (BOP's depth_scale when the mesh is in mm)")
    o.add_argument("--weights", help="DINOv2 model directory (onboarded with dinov2), or the learned descriptor file "
                        "(onboarded with learned; default: REP.descriptor)")
    _add_segment(o)
    o.add_argument("--retrieval", choices=RETRIEVALS, default=None,
                   help="template retrieval (default: bow+line2d where the representation has orientation "
                        "features, else bow)")
    o.set_defaults(func=_estimate)


def _add_eval(sub) -> None:
    o = sub.add_parser("eval", help="estimate and score every instance of an object in a BOP scene")
    o.add_argument("--bop", required=True, help="BOP dataset folder (models/, test/<scene>/...) or one scene folder "
                                                "(scene_camera/gt json, rgb/, mask_visib/, depth/)")
    o.add_argument("--split", default="test", help="dataset split folder")
    o.add_argument("--rep", required=True)
    o.add_argument("--mesh", help="the object's mesh, for the metrics (default: models/obj_NNNNNN.ply)")
    o.add_argument("--obj-id", type=int, required=True)
    o.add_argument("--models-info", help="models_info.json, for the object's symmetries (default: models/)")
    o.add_argument("--out", required=True, help="BOP19 results CSV")
    o.add_argument("--weights", help="DINOv2 model directory (onboarded with dinov2), or the learned descriptor file "
                        "(onboarded with learned; default: REP.descriptor)")
    o.add_argument("--given", choices=GIVEN, default="mask",
                   help="what each instance is estimated from: its visible mask, or only that mask's box")
    o.add_argument("--depth", action="store_true",
                   help="RGB-D: also use each image's depth/ (the hypothesis it supports best, fitted to it)")
    _add_segment(o)
    o.set_defaults(func=_eval)


def add_parser(subparsers) -> None:
    """Adds the ``objects`` command (``onboard``, ``estimate``, ``eval``) to an argparse
    sub-parser set, as ``pylocalize.cli.build_parser`` builds its commands."""
    p = subparsers.add_parser("objects", help="6D pose of unseen objects from their mesh (FoundPose)")
    sub = p.add_subparsers(dest="objects_command", required=True)
    _add_onboard(sub)
    _add_estimate(sub)
    _add_eval(sub)


def main(argv=None) -> int:
    """Runs ``objects`` alone: ``python -m pylocalize.objects.cli estimate ...``."""
    return run_alone(add_parser, argv, command="objects")


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["add_parser", "main"]
