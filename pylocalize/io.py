"""Image files: the one place that reads pixels and sizes and says which files are images.

Every reader turns a missing or undecodable file into a ``ValueError`` naming the file, so a
batch (``Map.localize_many``, ``pylocalize localize``) can report the query and go on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, List, Optional, Tuple

import numpy as np

# The suffixes (lower case) of the files a folder of images stands for, in SfM and on the
# command line; PIL reads them all.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


def is_image_file(path) -> bool:
    """Whether ``path`` names an image by its suffix (case-insensitive); the file is not opened."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def image_files(folder) -> List[Path]:
    """The image files directly inside ``folder``, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if is_image_file(p))


def expand_image_paths(paths: Iterable) -> List[Path]:
    """Image paths from files and folders, in the given order; a folder stands for its image
    files, sorted. A file is kept whatever its suffix: the caller named it."""
    out: List[Path] = []
    for path in map(Path, paths):
        out.extend(image_files(path) if path.is_dir() else [path])
    return out


def image_keys(paths: Iterable) -> List[Tuple[str, Path]]:
    """``(key, path)`` of the images that files and folders stand for, in the given order:
    the key names the image in pose files, figures and result lines.

    A file given directly is keyed by its name (``q/0003.jpg`` -> ``0003.jpg``); the images of
    a folder by the folder's name and theirs (``qa`` -> ``qa/0003.jpg``, ``qb/0003.jpg``), as
    hloc keys an image by its path below the image root, so that two folders may hold files
    of the same name.

    Raises
    ------
    ValueError
        If two images get the same key (the same file or folder given twice, or two files of
        one name given directly), naming both and the way out.
    """
    keyed: List[Tuple[str, Path]] = []
    source = {}
    for given in map(Path, paths):
        if given.is_dir():
            prefix = given.name or given.resolve().name
            pairs = [(f"{prefix}/{p.name}" if prefix else p.name, p) for p in image_files(given)]
        else:
            pairs = [(given.name, given)]
        for key, path in pairs:
            if key in source:
                raise ValueError(f"two query images are both keyed {key!r} ({source[key]} and {path}): give each "
                                 "image once; for two files of the same name in different folders, give the "
                                 "folders instead (their images are keyed folder/name)")
            source[key] = path
            keyed.append((key, path))
    return keyed


def _open_error(path, error: Exception) -> ValueError:
    from PIL import UnidentifiedImageError

    if isinstance(error, FileNotFoundError):
        return ValueError(f"{path}: no such image file")
    if isinstance(error, UnidentifiedImageError):  # PIL's message repeats the path and says no more
        return ValueError(f"{path}: not a readable image (unknown format or corrupt file)")
    return ValueError(f"{path}: not a readable image ({error})")


def read_image(path) -> np.ndarray:
    """uint8 ``(H, W, 3)`` RGB pixels of an image file (grey and RGBA files are converted).

    Raises ``ValueError`` for a missing or unreadable file.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (FileNotFoundError, UnidentifiedImageError, OSError) as error:
        raise _open_error(path, error) from None


def image_size(path) -> Tuple[int, int]:
    """``(width, height)`` of an image file, from its header (the pixels are not decoded).

    Raises ``ValueError`` for a missing or unreadable file.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.size
    except (FileNotFoundError, UnidentifiedImageError, OSError) as error:
        raise _open_error(path, error) from None


def load_pixels(image) -> np.ndarray:
    """Pixels of an image given as an array (returned as it is) or as a file path (read)."""
    return read_image(image) if isinstance(image, (str, os.PathLike)) else np.asarray(image)


# EXIF tags: the GPS IFD's pointer in IFD0, and the GPS IFD's entries pylocalize reads
_GPS_IFD = 0x8825
_GPS_LAT_REF, _GPS_LAT, _GPS_LON_REF, _GPS_LON, _GPS_ALT_REF, _GPS_ALT = 1, 2, 3, 4, 5, 6


def read_gps(path) -> Optional[Tuple[float, float, float]]:
    """``(latitude deg, longitude deg, altitude m)`` from an image file's EXIF GPS tags, or
    None when the file has no usable GPS position (no GPS IFD, no latitude or longitude, or
    values out of range). South and west are negative; the altitude is NaN when the file has
    none and negative below sea level.

    Raises ``ValueError`` for a missing or unreadable file.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            exif = image.getexif()
            gps = dict(exif.get_ifd(_GPS_IFD)) if exif else {}
    except (FileNotFoundError, UnidentifiedImageError, OSError) as error:
        raise _open_error(path, error) from None
    try:
        lat = _degrees(gps[_GPS_LAT]) * (-1.0 if str(gps.get(_GPS_LAT_REF, "N")).upper().startswith("S") else 1.0)
        lon = _degrees(gps[_GPS_LON]) * (-1.0 if str(gps.get(_GPS_LON_REF, "E")).upper().startswith("W") else 1.0)
        alt = float(gps[_GPS_ALT]) if _GPS_ALT in gps else float("nan")
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    below = gps.get(_GPS_ALT_REF, 0)
    if below in (1, b"\x01", "1"):  # GPSAltitudeRef 1: below sea level
        alt = -alt
    if not (abs(lat) <= 90 and abs(lon) <= 180 and np.isfinite([lat, lon]).all()) or np.isinf(alt):
        return None
    return lat, lon, alt


def _degrees(value) -> float:
    """Degrees from EXIF's (degrees, minutes, seconds) rationals (or one number)."""
    parts = [float(v) for v in value] if isinstance(value, (tuple, list)) else [float(value)]
    if not 1 <= len(parts) <= 3 or any(p < 0 for p in parts):
        raise ValueError(f"not an EXIF angle: {value!r}")
    return sum(p / 60.0 ** i for i, p in enumerate(parts))


__all__ = ["IMAGE_SUFFIXES", "expand_image_paths", "image_files", "image_keys", "image_size", "is_image_file",
           "load_pixels", "read_gps", "read_image"]
