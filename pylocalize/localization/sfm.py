"""Images-only maps: structure-from-motion with pycolmap on our features.

pylocalize's own features (the extractor the map will localize with) are written into a
COLMAP database, so the points of the reconstruction are observed by exactly the
keypoints and descriptors the map keeps. COLMAP then matches them exhaustively, verifies
the pairs geometrically and reconstructs; cameras are read from EXIF (or given), and
their focal lengths and distortion are refined by bundle adjustment.

COLMAP's incremental mapper runs first: where it works it is the more accurate (on the
synthetic courtyard loop, global positioning drifts by metres or collapses the camera
centres). On forward-moving street sequences such as ../shared/data/lund it finds an
initial pair but cannot register a third image; when it registers under 90 % of the
images, global SfM (GLOMAP's rotation averaging + global positioning, in pycolmap) runs
too, and the model that registers more images (never a collapsed one) is kept.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np


def reconstruct(image_dir, names: Sequence[str], keypoints: Sequence[np.ndarray], descriptors: Sequence[np.ndarray],
                camera=None, seed: int = 0, work_dir=None, min_registered: int = 3, verbose: bool = False,
                method: str = "incremental"):
    """The largest incremental reconstruction of the images.

    Parameters
    ----------
    image_dir : path
        Folder holding ``names``.
    keypoints, descriptors : per image, OpenCV convention and uint8 RootSIFT.
    camera : :class:`~pylocalize.geometry.camera.Camera`, optional
        One calibrated camera shared by every image, kept fixed; default: cameras from
        EXIF (one per make, model, focal length and image size; COLMAP's focal-length
        prior when EXIF has none), refined by bundle adjustment.
    seed : int
        COLMAP's random seed (RANSAC and initial pair sampling).
    verbose : bool
        Keep COLMAP's log (otherwise only its warnings and errors).
    method : {"incremental", "global"}
        The mapper tried first; the other one runs if it registers under 90 % of the
        images or collapses.

    Returns
    -------
    pycolmap.Reconstruction

    Raises
    ------
    RuntimeError
        If no reconstruction registers at least ``min_registered`` images.
    """
    import pycolmap

    if method not in ("global", "incremental"):
        raise ValueError(f"method must be 'global' or 'incremental', got {method!r}")
    level = pycolmap.logging.minloglevel
    pycolmap.logging.minloglevel = level if verbose else max(level, 1)
    try:
        return _reconstruct(pycolmap, image_dir, names, keypoints, descriptors, camera, seed, work_dir,
                            min_registered, method)
    finally:
        pycolmap.logging.minloglevel = level


def _map(pycolmap, method, db_path, image_dir, out, camera, seed):
    if method == "global":
        options = pycolmap.GlobalPipelineOptions()
        options.random_seed = int(seed)
        options.multiple_models = False
        if camera is not None:  # a known calibration stays fixed; EXIF guesses are refined
            options.mapper.bundle_adjustment.refine_focal_length = False
            options.mapper.bundle_adjustment.refine_extra_params = False
        return pycolmap.global_mapping(db_path, Path(image_dir), out, options)
    options = pycolmap.IncrementalPipelineOptions()
    options.random_seed = int(seed)
    options.multiple_models = False
    if camera is not None:
        options.ba_refine_focal_length = False
        options.ba_refine_principal_point = False
        options.ba_refine_extra_params = False
    return pycolmap.incremental_mapping(db_path, Path(image_dir), out, options)


def _collapsed(rec) -> bool:
    """Whether the camera centres collapsed onto one point, a degenerate solution that
    reprojects well (a rotation-only 'panorama') but has no baseline: global positioning
    falls into it when translations are small against scene depth."""
    images = [im for im in rec.images.values() if im.has_pose]
    if len(images) < 2 or rec.num_points3D() == 0:
        return True
    centres = np.array([im.projection_center() for im in images])
    points = np.array([p.xyz for p in rec.points3D.values()])
    depth = np.median(np.linalg.norm(points - centres.mean(0), axis=1))
    return float(np.linalg.norm(centres - centres.mean(0), axis=1).max()) < 0.01 * depth


def _reconstruct(pycolmap, image_dir, names, keypoints, descriptors, camera, seed, work_dir, min_registered, method):
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        tmp = Path(tmp)
        db_path = tmp / "database.db"
        reader = pycolmap.ImageReaderOptions()
        if camera is not None:
            reader.camera_model = camera.model
            reader.camera_params = ",".join(f"{p:.17g}" for p in camera.params)
            mode = pycolmap.CameraMode.SINGLE
        else:
            reader.camera_model = "SIMPLE_RADIAL"
            mode = pycolmap.CameraMode.AUTO  # one camera per EXIF make, model, focal length and size
        pycolmap.Database.open(db_path).close()  # import_images wants an existing database
        pycolmap.import_images(db_path, Path(image_dir), camera_mode=mode, image_names=list(names), options=reader)
        db = pycolmap.Database.open(db_path)
        try:
            features = {n: (k, d) for n, k, d in zip(names, keypoints, descriptors)}
            for image in db.read_all_images():
                kp, desc = features[image.name]
                db.write_keypoints(image.image_id, np.ascontiguousarray(kp + 0.5, dtype=np.float32))
                db.write_descriptors(image.image_id, pycolmap.FeatureDescriptors(
                    pycolmap.FeatureExtractorType.SIFT, np.ascontiguousarray(desc, dtype=np.uint8)))
        finally:
            db.close()
        pycolmap.match_exhaustive(db_path, device=pycolmap.Device.cpu)
        best, best_key = None, None
        for attempt in (method, "incremental" if method == "global" else "global"):
            for rec in _map(pycolmap, attempt, db_path, image_dir, tmp / attempt, camera, seed).values():
                key = (not _collapsed(rec), rec.num_reg_images(), rec.num_points3D())
                if best_key is None or key > best_key:
                    best, best_key = rec, key
            if best_key is not None and best_key[0] and best_key[1] >= 0.9 * len(names):
                break  # good enough: skip the other mapper
    if best is None or best.num_reg_images() < min_registered or _collapsed(best):
        found = 0 if best is None or _collapsed(best) else best.num_reg_images()
        raise RuntimeError(f"structure-from-motion registered {found} of {len(names)} images; the images may not "
                           "overlap enough, or need a known camera (--camera)")
    return best

