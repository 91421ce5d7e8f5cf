"""Which patch descriptor an object is onboarded with, decided per object by a held-out check.

Dense SIFT is precise on sharp, clean texture and falls apart under pixel noise; the
per-object learned descriptor (:mod:`pylocalize.objects.learned`) holds under noise but
varies from one training to the next; the two side by side
(:class:`~pylocalize.objects.learned.SiftAndLearnedExtractor`) scored best on most held-out
sets measured, but not all (``benchmarks/README.md``). So ``objects onboard --extractor
auto`` (:func:`onboard_with_best_descriptor`) onboards the object with dense SIFT and with
the pair, poses both on the same held-out frames, and keeps dense SIFT unless the pair does
better for sure.

The held-out frames (:func:`held_out_frames`) are meant to look like a user's photos and
unlike anything either descriptor was built from: the object rendered at random views and
distances in a 640x480 camera, lit by a directional light with a highlight (templates and
training renders are lit from the camera), over crops of background photos kept out of
training, through a camera's blur, noise, exposure and JPEG compression (not the training's
augmentation, which would favour the learned descriptor). Each is posed from the object's box,
as a detector would give it, and scored by BOP's average recall of MSSD and MSPD (identity
symmetry unless given: a symmetric object's equivalent poses count as wrong for both
descriptors alike). Dense SIFT, which needs no torch and runs faster, is kept unless the
other beats it for sure: by more than twice the standard error of its gains over the same
frames (:func:`score_candidates`).
"""

from __future__ import annotations

import logging
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from pylocalize.objects import bop

logger = logging.getLogger(__name__)

HELD_OUT_SHARE = 0.25  # of the background photos, kept out of training for the check
MIN_VISIBLE = 0.5  # a held-out frame shows at least this share of the object's silhouette


class HeldOutFrame(NamedTuple):
    image: np.ndarray  # uint8 (H, W, 3)
    K: np.ndarray
    R: np.ndarray  # the true pose, model to camera
    t: np.ndarray
    bbox: Tuple[int, int, int, int]  # the visible object's box (x, y, w, h)


class DescriptorChoice(NamedTuple):
    name: str  # the winner's extractor name
    scores: Dict[str, float]  # each candidate's mean of AR_MSSD and AR_MSPD on the held-out frames
    errors: Dict[str, Dict[str, np.ndarray]]  # each candidate's per-frame "mssd" and "mspd" (inf: failed)


def split_backgrounds(backgrounds, rng: np.random.Generator) -> Tuple[Optional[list], Optional[list]]:
    """``(training, held_out)`` photo lists from a folder or a list of photos (paths or
    arrays): a random ``HELD_OUT_SHARE`` (at least one) held out. One photo serves both, with
    a warning; None (procedural textures) stays None for both."""
    if backgrounds is None:
        return None, None
    import os

    from pylocalize.objects.learned import photos_in

    if isinstance(backgrounds, (str, os.PathLike)):
        backgrounds = photos_in(backgrounds)
    backgrounds = list(backgrounds)
    if not backgrounds:
        raise ValueError("backgrounds: no photos (give None for procedural textures)")
    if len(backgrounds) == 1:
        logger.warning("one background photo: training and the held-out check see crops of the same photo")
        return backgrounds, backgrounds
    order = rng.permutation(len(backgrounds))
    held = max(1, int(round(HELD_OUT_SHARE * len(backgrounds))))
    return [backgrounds[i] for i in order[held:]], [backgrounds[i] for i in order[:held]]


def held_out_frames(mesh, backgrounds, num_frames: int = 16, seed: int = 0, width: int = 640,
                    height: int = 480, focal: float = 600.0) -> List[HeldOutFrame]:
    """``num_frames`` frames of ``mesh`` at random poses over crops of ``backgrounds`` (photos
    as :func:`~pylocalize.objects.learned.background_images` takes them; None: procedural
    textures), each with its true pose and visible box.

    The frames are made unlike both the templates and the learned descriptor's training
    queries, as real photos are: a directional light with a specular highlight
    (:func:`relight`) where templates and training renders are lit from the camera, then a
    camera's blur, noise, exposure and JPEG compression (:func:`camera_faults`), and maybe an
    occluder. Frames where less than ``MIN_VISIBLE`` of the object shows are drawn again."""
    from pylocalize.objects.evaluate import mask_box
    from pylocalize.objects.learned import background_images
    from pylocalize.render import Renderer, load_mesh

    if not hasattr(mesh, "faces"):
        mesh = load_mesh(mesh)
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    rng = np.random.default_rng(seed)
    if backgrounds is None:  # training already warned that it saw no photos
        from pylocalize.datasets.synthetic import procedural_texture

        photos = [procedural_texture(rng, height, width) for _ in range(8)]
    else:
        photos = background_images(backgrounds, min(width, height), rng)
    K = np.array([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1.0]])
    renderer = Renderer(width, height, K, shading="unlit", supersample=3)
    frames, draws = [], 0
    while len(frames) < num_frames:
        draws += 1
        if draws > 20 * num_frames:
            raise RuntimeError(f"{draws} random views showed under {MIN_VISIBLE:.0%} of the object or under 100 of its "
                               "pixels: is the mesh degenerate?")
        pose = random_object_pose(mesh, rng, (2.5, 5.0))
        out = renderer.render(mesh, pose, outputs=("rgb", "normals", "mask"))
        mask = out.mask[0].astype(bool)
        if mask.sum() < 100:
            continue
        image = np.where(mask[..., None], relight(out.rgb[0], out.normals[0], rng), _photo_crop(photos, width, height,
                                                                                               rng))
        visible = mask.copy()
        if rng.random() < 0.5:  # an occluder: a piece of another photo over up to 40 % of the object's box
            x, y, w, h = mask_box(mask)
            ow, oh = (max(1, int(side * np.sqrt(rng.uniform(0.1, 0.4)))) for side in (w, h))
            ox, oy = x + rng.integers(-ow // 2, w), y + rng.integers(-oh // 2, h)
            x0, y0, x1, y1 = max(ox, 0), max(oy, 0), min(ox + ow, width), min(oy + oh, height)
            if x1 > x0 and y1 > y0:
                image[y0:y1, x0:x1] = _photo_crop(photos, width, height, rng)[y0:y1, x0:x1]
                visible[y0:y1, x0:x1] = False
        if visible.sum() < MIN_VISIBLE * mask.sum():
            continue
        frames.append(HeldOutFrame(camera_faults(image, rng), K, pose[:, :3], pose[:, 3], mask_box(visible)))
    return frames


def random_object_pose(mesh, rng: np.random.Generator, distances=(2.5, 4.5)) -> np.ndarray:
    """A camera looking at ``mesh`` from a random direction, ``distances`` (in diameters)
    away, with a random roll, the object then shifted off the optical axis by up to 15 % of
    its depth sideways and 10 % up or down: ``cam_from_model`` (3, 4)."""
    from pylocalize.geometry import look_at

    d = rng.normal(size=3)
    d /= np.linalg.norm(d)
    pose = look_at(mesh.center + d * rng.uniform(*distances) * mesh.extent, mesh.center, up=rng.normal(size=3))
    pose[:, 3] += [rng.uniform(-0.15, 0.15) * pose[2, 3], rng.uniform(-0.1, 0.1) * pose[2, 3], 0]
    return pose


def relight(albedo: np.ndarray, normals: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An unlit render ``albedo`` (uint8) lit by a white directional light up to 60 degrees
    off the viewing axis, with ambient light and a Blinn-Phong highlight of random strength
    and sharpness (``normals``: camera frame, facing the camera, z < 0); float32."""
    off, around = np.deg2rad(rng.uniform(0, 60)), rng.uniform(0, 2 * np.pi)
    light = np.array([np.sin(off) * np.cos(around), np.sin(off) * np.sin(around), -np.cos(off)], np.float32)
    halfway = light + np.array([0, 0, -1], np.float32)  # between the light and the viewer
    halfway /= np.linalg.norm(halfway)
    ambient = rng.uniform(0.2, 0.5)
    diffuse = np.maximum(normals @ light, 0)[..., None]
    specular = rng.uniform(0, 0.5) * np.maximum(normals @ halfway, 0)[..., None] ** rng.uniform(8, 64)
    tint = rng.uniform(0.85, 1.15, 3).astype(np.float32)  # the light's colour
    return (albedo.astype(np.float32) * (ambient + (1 - ambient) * diffuse) * rng.uniform(0.8, 1.5)
            + 255 * specular) * tint


def _photo_crop(photos: list, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A random crop of a random photo, of the frame's aspect and 40-100 % of the photo's
    height, resized to the frame (float32)."""
    import cv2

    photo = photos[rng.integers(len(photos))]
    h = max(1, int(rng.uniform(0.4, 1.0) * min(photo.shape[0], photo.shape[1] * height / width)))
    w = max(1, min(photo.shape[1], round(h * width / height)))
    y, x = rng.integers(0, photo.shape[0] - h + 1), rng.integers(0, photo.shape[1] - w + 1)
    return cv2.resize(photo[y:y + h, x:x + w], (width, height), interpolation=cv2.INTER_AREA).astype(np.float32)


def camera_faults(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What a camera does to the light it gets (float RGB in, uint8 out): defocus blur,
    shot and read noise, an exposure curve, JPEG compression at quality 60-95."""
    import cv2

    sigma = rng.uniform(0, 1.5)
    if sigma > 0.3:
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    # noise of 1.7-6.3 grey levels at mid-grey, the range the noise estimate (Immerkaer's
    # mask, median absolute response) puts real photos in: the LINEMOD, HOPE and Lund photos
    # measure as this range's low half does
    image = image + rng.normal(size=image.shape).astype(np.float32) * np.sqrt(
        rng.uniform(0.02, 0.3) * np.maximum(image, 0) + rng.uniform(0.25, 2.0))
    image = 255 * (np.clip(image, 0, 255) / 255) ** rng.uniform(0.8, 1.25)
    quality = int(rng.integers(60, 96))
    ok, jpeg = cv2.imencode(".jpg", np.clip(image, 0, 255).astype(np.uint8)[..., ::-1],
                            [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[..., ::-1].copy()


def frame_scores(errors: Dict[str, np.ndarray], diameter: float, width: int) -> np.ndarray:
    """Each frame's share of BOP's MSSD and MSPD thresholds it meets, averaged over the two
    (its mean over frames is the mean of AR_MSSD and AR_MSPD)."""
    mssd = np.asarray(errors["mssd"])[:, None] / diameter < bop.MSSD_THRESHOLDS[None, :]
    mspd = np.asarray(errors["mspd"])[:, None] / (width / 640.0) < bop.MSPD_THRESHOLDS[None, :]
    return 0.5 * (mssd.mean(1) + mspd.mean(1))


def score_candidates(candidates: Dict[str, tuple], mesh, frames: Sequence[HeldOutFrame], symmetries=None,
                     margin_z: float = 2.0, progress: bool = False, **estimate_options) -> DescriptorChoice:
    """Poses every frame with every candidate, ``{name: (representation, extractor)}``, from
    the frame's box, and scores each by the mean of AR_MSSD and AR_MSPD (a frame that fails
    to pose scores as a miss).

    The first candidate (the cheaper default) is kept unless another beats it for sure: by a
    mean per-frame gain over ``margin_z`` standard errors of the gains on the same frames
    (a one-sided test; a held-out set of a few dozen frames is noisy, and a near-tie is not
    worth torch and a network). Of those that do, the highest scoring wins."""
    from tqdm import tqdm

    from pylocalize.objects.evaluate import metric_points

    if not candidates:
        raise ValueError("no candidate descriptors to choose from")
    if not frames:
        raise ValueError("no held-out frames to score the candidates on")
    points = metric_points(mesh)
    symmetries = symmetries or [np.eye(4)]
    diameter, width = float(mesh.extent), frames[0].image.shape[1]
    errors, per_frame = {}, {}
    for name, (rep, extractor) in candidates.items():
        found = {"mssd": [], "mspd": []}
        for frame in tqdm(frames, desc=f"held-out check: {name}", disable=not progress, leave=False):
            result = rep.estimate(frame.image, frame.K, bbox=frame.bbox, extractor=extractor, **estimate_options)
            if result.success:
                found["mssd"].append(bop.mssd(result.R, result.t, frame.R, frame.t, points, symmetries))
                found["mspd"].append(bop.mspd(result.R, result.t, frame.R, frame.t, frame.K, points, symmetries))
            else:
                found["mssd"].append(np.inf)
                found["mspd"].append(np.inf)
        errors[name] = {key: np.asarray(values) for key, values in found.items()}
        per_frame[name] = frame_scores(errors[name], diameter, width)
    scores = {name: float(values.mean()) for name, values in per_frame.items()}
    default = next(iter(candidates))
    name = default
    for challenger, values in per_frame.items():
        gains = values - per_frame[default]
        error = gains.std(ddof=1) / np.sqrt(len(gains)) if len(gains) > 1 else np.inf
        if gains.mean() > margin_z * error and scores[challenger] > scores[name]:
            name = challenger
    logger.info("held-out check on %d frames: %s -> %s", len(frames),
                ", ".join(f"{n} {s:.3f}" for n, s in scores.items()), name)
    return DescriptorChoice(name, scores, errors)


def onboard_with_best_descriptor(mesh, backgrounds=None, num_frames: int = 48, seed: int = 0,
                                 progress: bool = False, train_options: Optional[dict] = None,
                                 **onboard_options):
    """Onboards ``mesh`` with dense SIFT and with dense SIFT and a learned descriptor trained
    on it side by side (:class:`~pylocalize.objects.learned.SiftAndLearnedExtractor`; photos
    of ``backgrounds`` held out for the check, :func:`split_backgrounds`), scores both on
    ``num_frames`` held-out frames (:func:`held_out_frames`, :func:`score_candidates`) and
    returns ``(representation, extractor, choice)`` of the winner; ``extractor`` is the one
    to ``save`` beside the representation, or None for dense SIFT. The learned descriptor
    alone is not a candidate: on every held-out set measured it scored below one of the two
    (``benchmarks/README.md``). Needs torch (the ``torch`` extra)."""
    from pylocalize.features.patches import DenseSIFTExtractor
    from pylocalize.objects.learned import SiftAndLearnedExtractor, train_object_descriptor
    from pylocalize.objects.onboarding import onboard
    from pylocalize.render import load_mesh

    if not hasattr(mesh, "faces"):
        mesh = load_mesh(mesh)
    training, held_out = split_backgrounds(backgrounds, np.random.default_rng(seed))
    learned = train_object_descriptor(mesh, training, seed=seed, progress=progress,
                                      size=onboard_options.get("size", 420), **(train_options or {}))
    candidates = {}
    for extractor in (DenseSIFTExtractor(), SiftAndLearnedExtractor(learned)):
        candidates[extractor.name] = (onboard(mesh, extractor, seed=seed, progress=progress, **onboard_options),
                                      extractor)
    # another seed than training's: other crops, views and augmentation
    frames = held_out_frames(mesh, held_out, num_frames, seed=seed + 1)
    choice = score_candidates(candidates, mesh, frames, progress=progress)
    rep, extractor = candidates[choice.name]
    return rep, (None if choice.name == "dense-sift" else extractor), choice
