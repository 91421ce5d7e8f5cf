"""A map as a COLMAP model: cameras, posed images with their 2D points, 3D points with tracks.

The model is built with pycolmap's own classes and written by pycolmap (binary or text), so
COLMAP, pycolmap, hloc and every tool that reads COLMAP models read it. Image ``i`` of the
map is COLMAP image ``i + 1``, its keypoint ``j`` the image's 2D point ``j`` (shifted by +0.5
into COLMAP's pixel convention), map point ``k`` COLMAP point ``k + 1``; images sharing a
camera share one COLMAP camera. Point colours are the mean of the pixels that observe each
point when the map's image folder is at hand, else grey.

Writing is all-or-nothing: the model is written into a temporary folder beside the target,
synced, and renamed into place.
"""

from __future__ import annotations

import os
import secrets
import shutil
import zlib
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

# Files of a COLMAP model folder (pycolmap 4 writes rigs and frames too); a target folder that
# holds only these may be replaced by an export
MODEL_FILES = {f"{stem}.{ext}" for stem in ("cameras", "images", "points3D", "rigs", "frames")
               for ext in ("bin", "txt")}
GREY = (128, 128, 128)


def reconstruction_from_map(m, image_dir=None):
    """A ``pycolmap.Reconstruction`` holding map ``m``'s cameras, poses, 2D points, 3D points
    and tracks; colours from the images in ``image_dir`` (default: the map's own folder,
    when it exists), else grey."""
    import pycolmap

    rec = pycolmap.Reconstruction()
    camera_ids = {}
    for camera in m.cameras:
        if camera not in camera_ids:
            colmap_camera = camera.to_pycolmap()
            colmap_camera.camera_id = camera_ids[camera] = len(camera_ids) + 1
            rec.add_camera_with_trivial_rig(colmap_camera)
    for i, (name, camera, pose, keypoints) in enumerate(zip(m.names, m.cameras, m.cam_from_world, m.keypoints)):
        image = pycolmap.Image(name=name, camera_id=camera_ids[camera], image_id=i + 1)
        # +0.5: OpenCV pixel centres to COLMAP's
        image.points2D = pycolmap.Point2DList([pycolmap.Point2D(xy) for xy in np.asarray(keypoints, np.float64) + 0.5])
        rigid = pycolmap.Rigid3d(pycolmap.Rotation3d(pose[:, :3]), np.ascontiguousarray(pose[:, 3]))
        rec.add_image_with_trivial_frame(image, rigid)
    colors = _point_colors(m, image_dir)
    tracks = [[] for _ in range(len(m.points3D))]
    for i, ids in enumerate(m.point_ids):
        for j in np.flatnonzero(np.asarray(ids) >= 0):
            tracks[ids[j]].append(pycolmap.TrackElement(i + 1, int(j)))
    for k, (xyz, track) in enumerate(zip(m.points3D, tracks)):
        point = pycolmap.Point3D()
        point.xyz, point.track, point.color = xyz, pycolmap.Track(track), colors[k]
        rec.add_point3D_with_id(k + 1, point)  # also ties each track's 2D points to the point
    rec.update_point_3d_errors()  # each point's mean reprojection error, as COLMAP models carry
    return rec


def _point_colors(m, image_dir) -> np.ndarray:
    """uint8 (n, 3): the mean colour of the pixels observing each point (nearest pixel to
    each keypoint), grey for points no readable image observes."""
    from pylocalize.io import read_image

    folder = image_dir if image_dir is not None else m.image_dir
    sums, counts = np.zeros((len(m.points3D), 3)), np.zeros(len(m.points3D))
    if folder is not None and Path(folder).is_dir():
        for name, keypoints, ids in zip(m.names, m.keypoints, m.point_ids):
            observed = np.flatnonzero(np.asarray(ids) >= 0)
            try:
                pixels = read_image(Path(folder) / name)
            except ValueError:
                continue
            h, w = pixels.shape[:2]
            xy = np.rint(np.asarray(keypoints, np.float64)[observed]).astype(np.int64)
            xy = np.clip(xy, 0, [w - 1, h - 1])
            np.add.at(sums, ids[observed], pixels[xy[:, 1], xy[:, 0]])
            np.add.at(counts, ids[observed], 1)
    colors = np.tile(np.array(GREY, np.float64), (len(m.points3D), 1))
    seen = counts > 0
    colors[seen] = sums[seen] / counts[seen, None]
    return np.rint(colors).astype(np.uint8)


def write_colmap_model(m, out_dir, binary: bool = True, image_dir=None) -> Path:
    """Writes map ``m`` as a COLMAP model into folder ``out_dir`` (binary ``.bin`` files, or
    text with ``binary=False``), all-or-nothing (:func:`write_reconstruction`).

    ``out_dir`` may be new, empty, or hold a COLMAP model, which is replaced; a folder
    holding other files is refused (``ValueError``). Returns ``out_dir``.
    """
    _check_target(Path(out_dir))
    return write_reconstruction(reconstruction_from_map(m, image_dir), out_dir, binary)


def write_reconstruction(rec, out_dir, binary: bool = True) -> Path:
    """Writes a ``pycolmap.Reconstruction`` into folder ``out_dir`` all-or-nothing: into a
    temporary folder beside it, every file and the folder synced, then renamed into place
    (an existing COLMAP model there is replaced). Returns ``out_dir``."""
    out = Path(out_dir)
    _check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.parent / f".{out.name}.tmp-{secrets.token_hex(8)}"
    temp.mkdir()
    try:
        (rec.write if binary else rec.write_text)(str(temp))
        _sync_folder(temp, files=True)
        _replace_folder(temp, out)
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)
    return out


def model_checksums(folder) -> Dict[str, List[int]]:
    """``{file name: [size, CRC-32]}`` of the files of a COLMAP model folder: pycolmap has no
    checksums of its own, and a damaged model file can make it hang or allocate without
    bound, so a model kept in a map is checked against these before pycolmap reads it."""
    sums = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_file() and entry.name in MODEL_FILES:
            crc = 0
            with open(entry.path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    crc = zlib.crc32(block, crc)
            sums[entry.name] = [entry.stat().st_size, crc]
    return sums


def check_model_checksums(folder, expected: Dict[str, List[int]]) -> None:
    """``FormatError`` unless the model folder holds exactly the files ``expected`` records,
    with their sizes and CRC-32s (:func:`model_checksums`)."""
    from pylocalize._core import FormatError

    found = model_checksums(folder)
    for name in sorted(set(found) | set(expected)):
        if found.get(name) != list(expected.get(name, [])):
            state = "missing" if name not in found else "unexpected" if name not in expected else "damaged"
            raise FormatError(f"{folder}: the SfM model's {name} is {state} (size or CRC-32 differ from what the map "
                              "recorded); rebuild the map with `pylocalize map build --images`")


def _check_target(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; give a folder for the COLMAP model")
    if out.is_dir():
        others = sorted(set(os.listdir(out)) - MODEL_FILES)
        if others:
            raise ValueError(f"{out} holds files that are not a COLMAP model (e.g. {others[0]}); "
                             "give a new or empty folder")


def _sync_folder(folder: Path, files: bool = False) -> None:
    """fsync of a folder (its entries), and of the files directly inside it with ``files``."""
    if files:
        for entry in os.scandir(folder):
            if entry.is_file():
                fd = os.open(entry.path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_folder(new: Path, target: Path) -> None:
    """Renames folder ``new`` to ``target``. An existing ``target`` is first moved aside and
    removed after: a crash in between leaves the old model in ``.<name>.old-<hex>`` beside
    it, never a half-written one at ``target``."""
    old: Optional[Path] = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{secrets.token_hex(8)}"
        os.rename(target, old)
    os.rename(new, target)
    _sync_folder(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


__all__ = ["MODEL_FILES", "check_model_checksums", "model_checksums", "reconstruction_from_map", "write_colmap_model",
           "write_reconstruction"]
