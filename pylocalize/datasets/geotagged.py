"""Geotagged image lists: the CSVs of the geo-localization benchmarks Im2GPS3k and YFCC4k (and
of a user's own gallery) and the images they name.

A list is a CSV with a header naming an image column (``IMG_ID``, ``image_id``, ``id``,
``image``, ``name``, ``filename``; Im2GPS3k's and YFCC4k's ``*_places365.csv`` call it
``IMG_ID``) and the latitude and longitude columns (``LAT``/``LON``, ``lat``/``lon``,
``latitude``/``longitude``, any case), in degrees; other columns (author, scene labels) are
ignored. An image id is the file name inside the images folder, with or without its ``.jpg``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import numpy as np

ID_NAMES = ("img_id", "image_id", "id", "image", "name", "filename", "file")
LAT_NAMES = ("lat", "latitude")
LON_NAMES = ("lon", "lng", "long", "longitude")


@dataclass
class GeotaggedImages:
    """Image ids and their ``latlon`` (float64 (n, 2) degrees), in the file's order."""

    ids: List[str]
    latlon: np.ndarray

    def subset(self, keep) -> "GeotaggedImages":
        keep = list(keep)
        return GeotaggedImages([self.ids[i] for i in keep], self.latlon[keep])


def _column(header: List[str], names, what: str, path) -> int:
    lowered = [h.strip().strip('"').lower() for h in header]
    found = next((lowered.index(n) for n in names if n in lowered), None)
    if found is None:
        raise ValueError(f"{path}: the header {','.join(header)!r} names no {what} column; call it {names[0]}")
    return found


def read_geotagged_csv(path) -> GeotaggedImages:
    """Reads a geotagged image list (see the module docstring). Raises ``ValueError`` naming
    the line whose coordinates are not degrees in range, or an id given twice."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"{path}: empty; expected a header and one line per image")
    header = rows[0]
    columns = (_column(header, ID_NAMES, "image id", path), _column(header, LAT_NAMES, "latitude", path),
               _column(header, LON_NAMES, "longitude", path))
    ids, latlon, seen = [], [], set()
    for number, row in enumerate(rows[1:], 2):
        if not row or not "".join(row).strip():
            continue
        try:
            image, lat, lon = row[columns[0]].strip(), float(row[columns[1]]), float(row[columns[2]])
        except (IndexError, ValueError):
            raise ValueError(f"{path}:{number}: expected an image id, latitude and longitude, got {row!r}") from None
        if not (np.isfinite(lat) and np.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180):
            raise ValueError(f"{path}:{number}: latitude {lat} / longitude {lon} out of range (degrees, |lat| <= 90, "
                             "|lon| <= 180)")
        if image in seen:
            raise ValueError(f"{path}:{number}: image {image} is listed twice")
        seen.add(image)
        ids.append(image)
        latlon.append((lat, lon))
    if not ids:
        raise ValueError(f"{path}: no images after the header")
    return GeotaggedImages(ids, np.array(latlon, np.float64).reshape(-1, 2))


def image_file(folder, image_id: str) -> Path:
    """The file of an image id in ``folder``: ``folder/id``, else ``folder/id.jpg``."""
    folder = Path(folder)
    for candidate in (folder / image_id, folder / f"{image_id}.jpg"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{folder / image_id}: missing (nor with .jpg); give the folder holding the list's images")


def image_files(folder, images: GeotaggedImages, missing_ok: bool = False) -> List[Optional[Path]]:
    """The file of each image (None for a missing one when ``missing_ok``)."""
    out: List[Optional[Path]] = []
    for image_id in images.ids:
        try:
            out.append(image_file(folder, image_id))
        except FileNotFoundError:
            if not missing_ok:
                raise
            out.append(None)
    return out


__all__ = ["GeotaggedImages", "image_file", "image_files", "read_geotagged_csv"]
