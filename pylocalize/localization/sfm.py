"""Images-only maps: incremental structure-from-motion with pycolmap on our features.

pylocalize's own features (the extractor the map will localize with) are written into a
COLMAP database, so the points of the reconstruction are observed by exactly the
keypoints and descriptors the map keeps. COLMAP then matches them exhaustively, verifies
the pairs geometrically and runs incremental mapping; cameras are read from EXIF (or
given), and their focal lengths and distortion are refined by bundle adjustment.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np


def reconstruct(image_dir, names: Sequence[str], keypoints: Sequence[np.ndarray], descriptors: Sequence[np.ndarray],
                camera=None, seed: int = 0, work_dir=None, min_registered: int = 3, verbose: bool = False):
    """The largest incremental reconstruction of the images.

    Parameters
    ----------
    image_dir : path
        Folder holding ``names``.
    keypoints, descriptors : per image, OpenCV convention and uint8 RootSIFT.
    camera : :class:`~pylocalize.geometry.camera.Camera`, optional
        One calibrated camera shared by every image, kept fixed; default: one camera per
        image from EXIF (COLMAP's focal-length prior when EXIF has none), refined by
        bundle adjustment.
    seed : int
        COLMAP's random seed (RANSAC and initial pair sampling).
    verbose : bool
        Keep COLMAP's log (otherwise only its warnings and errors).

    Returns
    -------
    pycolmap.Reconstruction

    Raises
    ------
    RuntimeError
        If no reconstruction registers at least ``min_registered`` images.
    """
    import pycolmap

    level = pycolmap.logging.minloglevel
    pycolmap.logging.minloglevel = level if verbose else max(level, 1)
    try:
        return _reconstruct(pycolmap, image_dir, names, keypoints, descriptors, camera, seed, work_dir, min_registered)
    finally:
        pycolmap.logging.minloglevel = level


def _reconstruct(pycolmap, image_dir, names, keypoints, descriptors, camera, seed, work_dir, min_registered):
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
            mode = pycolmap.CameraMode.PER_IMAGE
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
        options = pycolmap.IncrementalPipelineOptions()
        options.random_seed = int(seed)
        options.multiple_models = False
        if camera is not None:  # a known calibration stays fixed; EXIF guesses are refined
            options.ba_refine_focal_length = False
            options.ba_refine_principal_point = False
            options.ba_refine_extra_params = False
        reconstructions = pycolmap.incremental_mapping(db_path, Path(image_dir), tmp / "sparse", options)
    best: Optional[object] = max(reconstructions.values(), key=lambda r: r.num_reg_images(), default=None)
    if best is None or best.num_reg_images() < min_registered:
        found = 0 if best is None else best.num_reg_images()
        raise RuntimeError(f"structure-from-motion registered {found} of {len(names)} images; the images may not "
                           "overlap enough, or need a known camera (--camera)")
    return best
