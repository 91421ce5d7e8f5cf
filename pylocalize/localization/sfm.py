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

Reproducibility: with ``deterministic=True`` every COLMAP step runs on one thread with
seeded random numbers (matching, geometric verification, mapping, bundle adjustment), so
the same images and seed give the same model, point for point, on the same machine and
pycolmap build. Otherwise matching, mapping and bundle adjustment use every core and the
order in which threads finish changes RANSAC samples and floating-point sums: two runs give
models that agree to within their accuracy but not point for point (a few points more or
fewer, coordinates that differ in the last digits). Neither mode promises the same bits on
another CPU, BLAS or pycolmap version.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from pylocalize._log import phase, quiet_colmap

logger = logging.getLogger(__name__)


def reconstruct(image_dir, names: Sequence[str], keypoints: Sequence[np.ndarray], descriptors: Sequence[np.ndarray],
                camera=None, seed: int = 0, work_dir=None, min_registered: int = 3, verbose: Optional[bool] = None,
                method: str = "incremental", deterministic: bool = False, progress: bool = False):
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
        COLMAP's random seed (RANSAC of the geometric verification and of the mappers,
        initial pair sampling).
    verbose : bool, optional
        Keep COLMAP's own log on stderr; default: only when the ``pylocalize`` logger shows
        DEBUG. Our log says what each phase did either way.
    method : {"incremental", "global"}
        The mapper tried first; the other one runs if it registers under 90 % of the
        images or collapses.
    deterministic : bool
        One thread for every COLMAP step, so that a run repeats exactly (see the module
        docstring for what is and is not reproducible); slower on many cores.
    progress : bool
        A progress bar of the images the incremental mapper registers.

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
    if deterministic:
        pycolmap.set_random_seed(int(seed))  # COLMAP's process-wide generator, for the steps without a seed option
    threads = 1 if deterministic else -1
    with quiet_colmap(verbose):
        return _reconstruct(pycolmap, image_dir, names, keypoints, descriptors, camera, seed, work_dir,
                            min_registered, method, threads, progress)


def _map(pycolmap, method, db_path, image_dir, out, camera, seed, threads, progress):
    """The models of one mapper; GPU solvers off (pycolmap wheels have none: each request
    would only log a warning)."""
    if method == "global":
        options = pycolmap.GlobalPipelineOptions()
        options.random_seed = int(seed)
        options.num_threads = threads
        options.multiple_models = False
        options.mapper.global_positioning.use_gpu = False
        options.mapper.bundle_adjustment.ceres.use_gpu = False
        if camera is not None:  # a known calibration stays fixed; EXIF guesses are refined
            options.mapper.bundle_adjustment.refine_focal_length = False
            options.mapper.bundle_adjustment.refine_extra_params = False
        return pycolmap.global_mapping(db_path, Path(image_dir), out, options)
    options = pycolmap.IncrementalPipelineOptions()
    options.random_seed = int(seed)
    options.num_threads = threads
    options.multiple_models = False
    options.ba_use_gpu = False
    if camera is not None:
        options.ba_refine_focal_length = False
        options.ba_refine_principal_point = False
        options.ba_refine_extra_params = False
    from tqdm import tqdm

    with tqdm(desc="map: SfM registration", disable=not progress, leave=False) as bar:
        return pycolmap.incremental_mapping(db_path, Path(image_dir), out, options,
                                            initial_image_pair_callback=lambda: bar.update(2),
                                            next_image_callback=lambda: bar.update(1))


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


def _write_database(pycolmap, db_path, image_dir, names, keypoints, descriptors, camera) -> None:
    """A COLMAP database of the images, their cameras and our features."""
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


def _match(pycolmap, db_path, num_images: int, seed: int, threads: int) -> None:
    """COLMAP's exhaustive matching and geometric verification, seeded."""
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = threads
    verification = pycolmap.TwoViewGeometryOptions()
    verification.ransac.random_seed = int(seed)
    with phase(logger, f"map: SfM matching of {num_images * (num_images - 1) // 2} image pairs"):
        pycolmap.match_exhaustive(db_path, matching_options=matching, verification_options=verification,
                                  device=pycolmap.Device.cpu)


def _reconstruct(pycolmap, image_dir, names, keypoints, descriptors, camera, seed, work_dir, min_registered, method,
                 threads, progress):
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        tmp = Path(tmp)
        db_path = tmp / "database.db"
        _write_database(pycolmap, db_path, image_dir, names, keypoints, descriptors, camera)
        _match(pycolmap, db_path, len(names), seed, threads)
        best, best_key = None, None
        for attempt in (method, "incremental" if method == "global" else "global"):
            with phase(logger, f"map: {attempt} SfM") as done:
                models = _map(pycolmap, attempt, db_path, image_dir, tmp / attempt, camera, seed, threads, progress)
                done.outcome = _describe(models.values(), len(names))
            for rec in models.values():
                key = (not _collapsed(rec), rec.num_reg_images(), rec.num_points3D())
                if best_key is None or key > best_key:
                    best, best_key = rec, key
            if best_key is not None and best_key[0] and best_key[1] >= 0.9 * len(names):
                break  # good enough: skip the other mapper
            if attempt == method:
                logger.info("map: %s SfM registered under 90 %% of the images; trying the other mapper", attempt)
    if best is None or best.num_reg_images() < min_registered or _collapsed(best):
        found = 0 if best is None or _collapsed(best) else best.num_reg_images()
        raise RuntimeError(f"structure-from-motion registered {found} of {len(names)} images; the images may not "
                           "overlap enough, or need a known camera (--camera)")
    return best


def _describe(models, num_images: int) -> str:
    """What a mapper found, for the log (COLMAP's own "Failed to create any sparse model",
    said our way)."""
    models = list(models)
    if not models:
        return "no model"
    best = max(models, key=lambda rec: rec.num_reg_images())
    note = ", collapsed (no baseline)" if _collapsed(best) else ""
    return f"{best.num_reg_images()} of {num_images} images registered, {best.num_points3D():,} 3D points{note}"
