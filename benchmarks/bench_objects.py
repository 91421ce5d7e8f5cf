#!/usr/bin/env python3
"""Unseen-object pose on a generated BOP-format test set from real scanned meshes.

For each mesh in ../shared/data/objects (HOPE "Tangy BBQ Sauce" bottle, LINEMOD can), test
images are renders at random poses (640x480, f = 600 px, 2.5-4.5 diameters away, any
orientation) composited over crops of real photographs (Strecha and Lund), with colour
and brightness jitter of the object and a random occluder hiding up to 30 % of its box.
Ground truth is written in BOP format (``scene_camera.json``, ``scene_gt.json``,
``scene_gt_info.json``), read back, and the estimates go to a BOP19 results CSV.

The object is onboarded from its mesh alone (FoundPose pipeline, dense SIFT patches) and
each instance is estimated from the RGB image and its visible (modal) mask. Reported:
AR_VSD, AR_MSSD, AR_MSPD, AR and ADD / ADD-S recall, coarse (PnP) vs refined
(featuremetric), onboarding time and time per instance.

    python benchmarks/bench_objects.py [--data ../shared/data] [--instances 25] [--out bench_objects]
        [--given mask|box] [--segment grabcut|box] [--retrieval bow,bow+line2d] [--representations DIR]
        [--extractor dense-sift|learned|dense-sift+learned|auto] [--train-steps 800] [--train-backgrounds DIR]
        [--reuse-descriptor] [--depth]

``--extractor learned`` trains the per-object descriptor (:mod:`pylocalize.objects.learned`)
over crops of the Lund photos (by default), which are also among the test images'
backgrounds (29 of the 77 photos; other crops of them).

The real photos are always estimated from a box drawn by hand (``--segment`` applies).
``--retrieval`` takes a comma-separated list of template retrievals (``estimate(retrieval=)``:
bag of words, LINE-2D gradient-orientation shape matching, or both; default ``bow+line2d``,
estimate's), each scored on the same onboarded objects and instances; ``--representations``
loads the objects an earlier run saved instead of onboarding them. ``--depth`` scores every
generated instance in RGB-D as well, on depth images given a structured-light camera's noise
and holes (the RGB rows' VSD then sees the same noisy depth).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from pylocalize.objects import bop, onboard
from pylocalize.objects.choice import random_object_pose
from pylocalize.objects.depth import depth_agreement, estimate_with_depth, pose_from_depth
from pylocalize.objects.evaluate import GIVEN, evaluate_scene, metric_points, summarize
from pylocalize.objects.learned import TRAIN_SECONDS_CAP, TRAIN_STEPS, WITH_DESCRIPTOR_FILE
from pylocalize.objects.representation import RETRIEVALS
from pylocalize.objects.segmentation import SEGMENTATIONS
from pylocalize.render import Renderer, load_mesh

K = np.array([[600.0, 0, 319.5], [0, 600.0, 239.5], [0, 0, 1]])
W, H = 640, 480
DEPTH_SCALE = 0.1  # mm per depth-image unit, as in several BOP datasets
DEPTH_TOLERANCE_MM = 20.0  # the real frame's depth agreement: model pixels within this of the measured depth

# Real photos without ground truth: boxes drawn by hand around the object; the HOPE photo
# has no intrinsics, so a typical 640x480 RGB-D colour camera (f = 615 px) is assumed.
REAL = {
    1: ("objects/hope/bba_sauce_rgb.png", np.array([[615.0, 0, 319.5], [0, 615.0, 239.5], [0, 0, 1]]),
        (415, 250, 88, 190)),
    5: ("objects/linemod_can/rgb.png", None, (375, 225, 65, 90)),
}


def backgrounds(data: Path):
    from PIL import Image

    paths = sorted((data / "strecha").glob("*/images/*.jpg")) + sorted((data / "lund" / "images").glob("*.jpg"))
    if not paths:
        raise SystemExit(f"no background photos under {data}")
    return paths, Image


def make_instance(mesh, rng, bg_paths, Image):
    pose = random_object_pose(mesh, rng, (2.5, 4.5))
    out = Renderer(W, H, K, supersample=3).render(mesh, pose, outputs=("rgb", "mask", "depth"))
    rgb, mask, depth = out.rgb[0].astype(np.float32), out.mask[0], out.depth[0]
    # lighting and colour jitter of the object
    rgb = rgb * rng.uniform(0.7, 1.4) * rng.uniform(0.9, 1.1, 3) + rng.uniform(-20, 20)
    with Image.open(bg_paths[rng.integers(len(bg_paths))]) as im:
        bg = np.asarray(im.convert("RGB").resize((W, H)), np.float32)
    image = np.where(mask[..., None], rgb, bg)
    visible = mask.copy()
    ys, xs = np.nonzero(mask)
    if len(xs):  # an occluder (a patch of another photo) over part of the object's box
        x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
        frac = rng.uniform(0.0, 0.3)
        if frac > 0.05:
            w, h = max(1, int((x1 - x0) * np.sqrt(frac))), max(1, int((y1 - y0) * np.sqrt(frac)))
            ox, oy = rng.integers(x0, max(x0 + 1, x1 - w)), rng.integers(y0, max(y0 + 1, y1 - h))
            image[oy:oy + h, ox:ox + w] = np.roll(bg, 200, axis=1)[oy:oy + h, ox:ox + w]
            visible[oy:oy + h, ox:ox + w] = False
            depth = depth.copy()
            depth[oy:oy + h, ox:ox + w] = np.where(mask[oy:oy + h, ox:ox + w], depth[oy:oy + h, ox:ox + w] - 50, 300)
    image = np.clip(image, 0, 255).astype(np.uint8)
    return pose, image, visible, depth, float(visible.sum() / max(mask.sum(), 1))


def sensor_depth(depth: np.ndarray, rng) -> np.ndarray:
    """A rendered depth image (mm) as a structured-light camera measures it: noise growing
    with the square of the distance (0.5 mm + 1.5 mm at 1 m, about a Kinect's), rounded to
    the millimetre, and 3 % of the pixels missing."""
    measured = np.rint(depth + rng.normal(size=depth.shape) * (0.5 + 1.5 * (depth / 1000.0) ** 2))
    measured[(rng.random(depth.shape) < 0.03) | (depth <= 0)] = 0
    return measured.astype(np.float32)


def onboard_and_save(mesh, args, path: Path):
    """The object's representation, saved to ``path``, its patch extractor, and what
    onboarding took: wall and CPU seconds (training the learned descriptor included), seconds
    per stage, and the file's size. With ``--extractor learned`` (or ``dense-sift+learned``) the descriptor is trained
    first (or read back from beside ``path`` with ``--reuse-descriptor``) and saved there. With
    ``--representations``, the one saved there by an earlier run (no onboarding times then)."""
    if args.representations:
        from pylocalize.objects import ObjectRepresentation
        from pylocalize.objects.learned import descriptor_path, load_extractor

        saved = Path(args.representations) / path.name
        rep = ObjectRepresentation.load(saved)
        extractor = (load_extractor(rep.extractor_name, descriptor_path(saved))
                     if rep.extractor_name in WITH_DESCRIPTOR_FILE else None)
        return rep, extractor, {"onboarding_s": float("nan"), "onboarding_cpu_s": float("nan"),
                                "onboarding_stages_s": {}, "representation_mb": saved.stat().st_size / 1e6}
    t0, cpu0 = time.perf_counter(), time.process_time()
    extractor, trained, chosen = None, {}, {}
    if args.extractor == "auto":
        from pylocalize.objects.choice import onboard_with_best_descriptor
        from pylocalize.objects.learned import descriptor_path

        rep, extractor, choice = onboard_with_best_descriptor(
            mesh, args.train_backgrounds, seed=args.seed, progress=True,
            train_options={"steps": args.train_steps, "seconds": args.train_seconds},
            num_views=args.views, num_inplane=args.inplane, supersample=args.supersample, pca_dim=args.pca_dim)
        print(f"descriptor chosen on held-out frames: {choice.name} "
              f"({', '.join(f'{n} {s:.3f}' for n, s in choice.scores.items())})")
        chosen = {"descriptor": choice.name, "held_out_scores": choice.scores}
    elif args.extractor in WITH_DESCRIPTOR_FILE:
        from pylocalize.objects.learned import descriptor_path, load_extractor, train_object_descriptor, with_learned

        if args.reuse_descriptor and descriptor_path(path).is_file():
            extractor = load_extractor(args.extractor, descriptor_path(path))
        else:
            extractor = with_learned(args.extractor, train_object_descriptor(
                mesh, args.train_backgrounds, steps=args.train_steps, seconds=args.train_seconds, seed=args.seed,
                progress=True))
            trained = {"learned descriptor": time.perf_counter() - t0}
    if args.extractor != "auto":
        rep = onboard(mesh, extractor, num_views=args.views, num_inplane=args.inplane, progress=True,
                      supersample=args.supersample, pca_dim=args.pca_dim)
    measured = {"onboarding_s": time.perf_counter() - t0, "onboarding_cpu_s": time.process_time() - cpu0,
                "onboarding_stages_s": {**trained, **rep.onboarding_seconds}, **chosen}
    path.parent.mkdir(parents=True, exist_ok=True)
    rep.save(path)
    measured["representation_mb"] = path.stat().st_size / 1e6
    if extractor is not None:
        extractor.save(descriptor_path(path))
    return rep, extractor, measured


def real_photo(rep, mesh, data: Path, out: Path, real, obj_id: int, segment: str, **options) -> dict:
    """The pose in a real photo from its hand-drawn box, its overlay figure, and where the
    frame has a depth image: the pose's errors against a reference fitted to that depth
    (:func:`depth_reference`), in the photo and in 17 warped versions of it
    (:func:`warped_frames`), and the depth agreement of each pose."""
    from PIL import Image

    photo, K_real, box = real
    camera_path = (data / photo).parent / "camera.json"
    camera = json.loads(camera_path.read_text()) if camera_path.is_file() else {}
    if K_real is None:
        K_real = np.asarray(camera["cam_K"]).reshape(3, 3)
    with Image.open(data / photo) as im:
        image = np.asarray(im.convert("RGB"))
    r = rep.estimate(image, K_real, bbox=box, segment=segment, **options)
    if r.success:
        from pylocalize.objects.viz import pose_overlay

        Image.fromarray(pose_overlay(image, mesh, K_real, r.R, r.t)).save(out / f"real_{obj_id:06d}.png")
    print(f"real photo {photo}: {'pose' if r.success else r.reason}, {r.num_inliers}/{r.num_matches} inliers")
    depth_path = (data / photo).parent / "depth.png"
    if not depth_path.is_file():
        return {}
    with Image.open(depth_path) as im:
        measured = np.asarray(im).astype(np.float32) * camera.get("depth_scale", 1.0)
    reference = depth_reference(rep, image, mesh, measured, K_real, box, segment, **options)
    if reference is None:
        print("  no pose reference: no start fitted the measured depth")
        return {}
    R_ref, t_ref, ceiling = reference
    print(f"  reference fitted to the measured depth: {ceiling:.0%} of its pixels within 20 mm (the ceiling of "
          "the depth agreement)")
    points = metric_points(mesh)
    frames = [(image, measured, K_real, box, np.eye(3))] + list(warped_frames(image, measured, K_real, box))
    errors, seconds = {"RGB": [], "RGB-D": []}, {"RGB": [], "RGB-D": []}
    for k, (frame, depth, K_frame, box_frame, Rz) in enumerate(frames):
        start = time.perf_counter()
        w = r if k == 0 else rep.estimate(frame, K_frame, bbox=box_frame, segment=segment, **options)
        seconds["RGB"].append(time.perf_counter() - start)
        truth = (Rz @ R_ref, Rz @ t_ref)
        errors["RGB"].append(pose_errors(w.R, w.t, mesh, points, K_frame, depth, *truth) if w.success else None)
        # RGB-D: the hypothesis the frame's depth supports best, fitted to it (as `objects estimate --depth`)
        start = time.perf_counter()
        d, _ = estimate_with_depth(rep, mesh, frame, K_frame, depth, bbox=box_frame, segment=segment,
                                   **{**options, "retrieval": None})  # RGB-D with estimate's default retrieval
        seconds["RGB-D"].append(time.perf_counter() - start)
        errors["RGB-D"].append(pose_errors(d.R, d.t, mesh, points, K_frame, depth, *truth) if d.success else None)
    e = errors["RGB"][0]
    print(f"  photo: rotation {e['rotation_deg']:.1f} deg, MSPD {e['mspd_px']:.1f} px, depth "
          f"{e['depth_agreement_20mm']:.0%} (coarse "
          f"{depth_agreement(mesh, K_real, measured, r.R_coarse, r.t_coarse, DEPTH_TOLERANCE_MM):.0%})")
    for mode, per_frame in errors.items():
        warped = [e or FAILED for e in per_frame[1:]]
        met = [e["rotation_deg"] <= 15 and e["mspd_px"] <= 30 for e in warped]
        agreement = [e["depth_agreement_20mm"] for e in warped]
        print(f"  {mode}, 17 warped frames: rotation <= 15 deg and MSPD <= 30 px in {sum(met)}, rotation <= 15 "
              f"deg in {sum(e['rotation_deg'] <= 15 for e in warped)}, depth agreement >= 50 % in "
              f"{sum(a >= 0.5 for a in agreement)}, mean {np.mean(agreement):.0%}; median "
              f"{np.median(seconds[mode][1:]):.2f} s per frame")
    return {"reference_depth_agreement_20mm": ceiling,
            **{mode: {"real_photo": scored[0], "warped_frames": scored[1:]} for mode, scored in errors.items()}}


def depth_reference(rep, image, mesh, depth, K, box, segment: str, **options):
    """A pose reference for a real frame with depth but no annotated pose: the pose the
    measured depth supports best among 10 PnP hypotheses of the frame, fitted to it
    (:func:`~pylocalize.objects.depth.pose_from_depth`); ``(R, t, share of its pixels within
    20 mm)``, or None when it agrees on less than half. The depth, not the RGB pipeline
    under test, decides the pose: the starts need only lie in the fit's basin (two starts 1.9
    degrees apart on the LINEMOD frame end 0.07 degrees apart)."""
    starts = rep.estimate(image, K, bbox=box, segment=segment, num_templates=10, refine=False, **options)
    best = pose_from_depth(mesh, K, depth, [(h.R, h.t) for h in starts.hypotheses or []],
                           tolerance=DEPTH_TOLERANCE_MM, num_fits=10, iterations=40)
    return (best[0].R, best[0].t, best[1]) if best and best[1] >= 0.5 else None


# a pose that failed, as pose_errors scores it
FAILED = {"rotation_deg": 180.0, "mspd_px": float("inf"), "translation": float("inf"), "depth_agreement_20mm": 0.0}


def pose_errors(R, t, mesh, points, K, depth, R_ref, t_ref) -> dict:
    """Rotation error (degrees), MSPD (px, no symmetries) and translation error (mesh units)
    of a pose against a reference pose, and its depth agreement."""
    cos = (np.trace(R_ref.T @ R) - 1) / 2
    return {"rotation_deg": float(np.degrees(np.arccos(np.clip(cos, -1, 1)))),
            "mspd_px": float(bop.mspd(R, t, R_ref, t_ref, K, points, [np.eye(4)])),
            "translation": float(np.linalg.norm(t - t_ref)),
            "depth_agreement_20mm": depth_agreement(mesh, K, depth, R, t, DEPTH_TOLERANCE_MM)}


def warped_frames(image: np.ndarray, depth: np.ndarray, K_image: np.ndarray, box):
    """17 versions of one real frame whose depth stays exact: rotations about the optical
    axis (-40 to 40 degrees) times zooms about the principal point (0.8 to 1.25), and two
    gamma changes of the unwarped frame. A rotation about the optical axis and a zoom
    move pixels by the homography K' Rz K^-1 and leave every point's depth unchanged, so
    the warped depth image is the truth of the warped frame. One real frame decides
    nothing: there the pose flips under 0.1 % of noise on the descriptors. Each comes with
    its rotation Rz: a pose (R, t) of the frame is (Rz R, Rz t) in the warped one."""
    import cv2

    h, w = depth.shape
    corners = np.array([[box[0], box[1]], [box[0] + box[2], box[1]], [box[0], box[1] + box[3]],
                        [box[0] + box[2], box[1] + box[3]]], np.float64)
    for degrees in (-40, -20, 0, 20, 40):
        for zoom in (0.8, 1.0, 1.25):
            for gamma in ((0.7, 1.0, 1.4) if (degrees, zoom) == (0, 1.0) else (1.0,)):
                a = np.deg2rad(degrees)
                Rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
                c = K_image[:2, 2]
                K_warped = np.array([[zoom, 0, c[0] * (1 - zoom)], [0, zoom, c[1] * (1 - zoom)], [0, 0, 1]]) @ K_image
                H = K_warped @ Rz @ np.linalg.inv(K_image)
                frame = cv2.warpPerspective(image, H, (w, h), flags=cv2.INTER_LINEAR)
                frame = np.clip(255.0 * (frame / 255.0) ** gamma, 0, 255).astype(np.uint8)
                p = np.c_[corners, np.ones(4)] @ H.T
                p = p[:, :2] / p[:, 2:]
                yield (frame, cv2.warpPerspective(depth, H, (w, h), flags=cv2.INTER_NEAREST), K_warped,
                       (*p.min(0), *(p.max(0) - p.min(0))), Rz)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--instances", type=int, default=25, help="test images per object")
    parser.add_argument("--views", type=int, default=57)
    parser.add_argument("--inplane", type=int, default=14)
    parser.add_argument("--out", default="bench_objects", help="folder for the BOP test set, results and figure")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--supersample", type=int, default=3, help="anti-aliasing of the templates' renders")
    parser.add_argument("--pca-dim", type=int, default=96, help="descriptor dimensions kept by PCA (onboard's default)")
    parser.add_argument("--given", choices=GIVEN, default="mask",
                        help="estimate each generated instance from its visible mask, or from that mask's box only")
    parser.add_argument("--segment", choices=SEGMENTATIONS, default="grabcut",
                        help="with --given box: the object's pixels found in the box by GrabCut, or the whole box")
    parser.add_argument("--objects", type=int, nargs="+", choices=[1, 5], default=[1, 5],
                        help="objects to run: 1 the HOPE bottle, 5 the LINEMOD can")
    parser.add_argument("--extractor", choices=["dense-sift", "learned", "dense-sift+learned", "auto"],
                        default="dense-sift",
                        help="patch descriptors: dense SIFT, a per-object network trained at onboarding (torch), the "
                             "two side by side, or auto: dense SIFT or the pair, whichever poses held-out frames "
                             "better (objects.choice)")
    parser.add_argument("--train-steps", type=int, default=TRAIN_STEPS, help="learned: training steps per object")
    parser.add_argument("--train-seconds", type=float, default=TRAIN_SECONDS_CAP,
                        help="learned: stop training early after this many seconds")
    parser.add_argument("--train-backgrounds", default=None,
                        help="learned: folder of photos behind the training renders (default: DATA/lund/images)")
    parser.add_argument("--reuse-descriptor", action="store_true",
                        help="learned: read the descriptor saved beside the representation in --out, if there")
    parser.add_argument("--representations", help="folder of an earlier run's obj_NNNNNN.pyloc to load, not onboard")
    parser.add_argument("--depth", action="store_true",
                        help="also score every generated instance in RGB-D (evaluate_scene(depth=True)), on depth "
                             "images with a structured-light camera's noise and holes (sensor_depth)")
    parser.add_argument("--retrieval", default="bow+line2d",
                        help="comma-separated template retrievals to compare (estimate's default: bow+line2d): "
                             + ", ".join(RETRIEVALS))
    args = parser.parse_args(argv)
    if args.train_backgrounds is None:
        args.train_backgrounds = str(Path(args.data) / "lund" / "images")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    retrievals = args.retrieval.split(",")
    unknown = [r for r in retrievals if r not in RETRIEVALS]
    if unknown:
        raise SystemExit(f"--retrieval: unknown {unknown}; choose among {RETRIEVALS}")
    data, out = Path(args.data), Path(args.out)
    bg_paths, Image = backgrounds(data)
    objects = {1: data / "objects" / "hope" / "hope_000002.ply", 5: data / "objects" / "linemod_can" / "obj_000005.ply"}
    objects = {obj_id: objects[obj_id] for obj_id in args.objects}
    summary, csv_rows, overlays = {}, [], []
    for obj_id, mesh_path in objects.items():
        mesh = load_mesh(mesh_path)
        rep, extractor, onboarding = onboard_and_save(mesh, args, out / f"obj_{obj_id:06d}.pyloc")
        rng = np.random.default_rng(args.seed + obj_id)
        sensor_rng = np.random.default_rng(args.seed + 100 + obj_id)  # apart, so that the images stay the same
        scene_dir = out / "test" / f"{obj_id:06d}"
        for sub in ("rgb", "mask_visib", "depth"):
            (scene_dir / sub).mkdir(parents=True, exist_ok=True)
        images = {}
        for im_id in range(args.instances):
            pose, image, visible, depth, visib = make_instance(mesh, rng, bg_paths, Image)
            if args.depth:
                depth = sensor_depth(depth, sensor_rng)
            Image.fromarray(image).save(scene_dir / "rgb" / f"{im_id:06d}.png")
            Image.fromarray((visible * 255).astype(np.uint8)).save(scene_dir / "mask_visib" / f"{im_id:06d}_000000.png")
            Image.fromarray(np.clip(np.rint(depth / DEPTH_SCALE), 0, 65535).astype(np.uint16)).save(
                scene_dir / "depth" / f"{im_id:06d}.png")
            images[im_id] = {"K": K, "depth_scale": DEPTH_SCALE,
                             "gt": [{"obj_id": obj_id, "R": pose[:, :3], "t": pose[:, 3]}],
                             "gt_info": [{"visib_fract": visib}]}
        bop.write_scene(scene_dir, images)
        # the RGB rows, one per retrieval, each with the real photo; then RGB-D once, with
        # estimate's default retrieval
        runs = [(retrieval, retrieval, False) for retrieval in retrievals] + ([("RGB-D", None, True)] if args.depth
                                                                             else [])
        for name, retrieval, depth in runs:
            result = evaluate_scene(rep, mesh, scene_dir, obj_id, scene_id=obj_id, extractor=extractor, progress=True,
                                    given=args.given, segment=args.segment, depth=depth, retrieval=retrieval)
            if retrieval == retrievals[0]:
                csv_rows += result["rows"]
            summary[f"{obj_id} {name}"] = {
                "mesh": mesh_path.name, "retrieval": name, "instances": len(result["times"]), **onboarding,
                "templates": len(rep.template_poses), "median_s_per_instance": float(np.median(result["times"])),
                "median_s_per_stage": {stage: float(np.median(seconds))
                                       for stage, seconds in result["stage_times"].items()},
                **summarize(result, mesh.extent)}
            if not depth:
                print(f"retrieval {retrieval}:", end=" ")
                summary[f"{obj_id} {name}"].update(real_photo(rep, mesh, data, out, REAL[obj_id], obj_id,
                                                              args.segment, extractor=extractor, retrieval=retrieval))
        for row in result["rows"][:3]:
            from pylocalize.objects.viz import pose_overlay

            with Image.open(scene_dir / "rgb" / f"{row['im_id']:06d}.png") as im:
                overlays.append(pose_overlay(np.asarray(im.convert("RGB")), mesh, K, row["R"], row["t"]))
    bop.write_results_csv(out / "results.csv", csv_rows)
    print(f"{'object':<22} {'retrieval':<17} {'stage':<8} {'AR':>6} {'VSD':>6} {'MSSD':>6} {'MSPD':>6} {'ADD':>6} "
          f"{'ADD-S':>6}")
    for s in summary.values():
        for stage in ("coarse", "refined"):
            a = s[stage]
            print(f"{s['mesh']:<22} {s['retrieval']:<17} {stage:<8} {a['AR']:>6.3f} {a['AR_VSD']:>6.3f} "
                  f"{a['AR_MSSD']:>6.3f} {a['AR_MSPD']:>6.3f} {a['ADD@0.1d']:>6.3f} {a['ADD-S@0.1d']:>6.3f}")
        stages = ", ".join(f"{stage} {seconds * 1000:.0f} ms" for stage, seconds in s["median_s_per_stage"].items())
        onboarding_stages = ", ".join(f"{k} {v:.1f} s" for k, v in s["onboarding_stages_s"].items())
        print(f"  {s['templates']} templates onboarded in {s['onboarding_s']:.1f} s "
              f"({s['onboarding_cpu_s']:.0f} s CPU; {onboarding_stages}), {s['representation_mb']:.1f} MB saved")
        print(f"  {s['median_s_per_instance']:.2f} s per instance ({stages})")
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    if overlays:
        Image.fromarray(np.concatenate([np.concatenate(overlays[i:i + 3], 1) for i in range(0, len(overlays) - 2, 3)],
                                       0)).save(out / "overlays.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
