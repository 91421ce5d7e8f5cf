"""Cameras: intrinsics as COLMAP camera models, parsed, checked and converted.

A :class:`Camera` is what COLMAP calls one (``MODEL W H PARAMS...``, pixel centres at
+0.5), so a model's ``cameras.txt`` line or an hloc query list reads straight in and any
of COLMAP's distortion models works. pylocalize's own pixel convention is OpenCV's
(centres at integers): :attr:`Camera.K` and :meth:`Camera.undistort` speak it, and the
+0.5 is applied only at the pycolmap boundary, here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

# Focal length assumed when nothing better is known: 1.2 x the larger image side, COLMAP's
# prior for unknown cameras (a field of view of about 45 degrees).
DEFAULT_FOCAL_FACTOR = 1.2
# How the source note of :meth:`Camera.from_exif` starts when the focal length is that guess
# (:func:`is_focal_guess` reads it back).
FOCAL_GUESS_NOTE = "no EXIF focal length"


@dataclass(frozen=True)
class Camera:
    """A COLMAP camera model: ``model`` name, image ``width`` and ``height`` in pixels, and
    ``params`` in COLMAP's order and pixel convention."""

    model: str
    width: int
    height: int
    params: Tuple[float, ...]

    def __post_init__(self):
        import pycolmap

        if self.model not in pycolmap.CameraModelId.__members__ or self.model == "INVALID":
            models = ", ".join(m for m in pycolmap.CameraModelId.__members__ if m != "INVALID")
            raise ValueError(f"unknown camera model {self.model!r}; use one of {models}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"camera size {self.width}x{self.height}: width and height must be positive")
        object.__setattr__(self, "params", tuple(float(p) for p in self.params))
        camera = self.to_pycolmap()
        if not camera.verify_params():
            raise ValueError(f"camera model {self.model} takes {len(camera.params_info.split(','))} parameters "
                             f"({camera.params_info}), got {len(self.params)}")
        if not np.all(np.isfinite(self.params)) or camera.focal_length_x <= 0 or camera.focal_length_y <= 0:
            raise ValueError(f"camera {self.to_string()!r}: focal lengths must be positive and parameters finite")

    @classmethod
    def from_string(cls, text: str) -> "Camera":
        """Parses ``"MODEL W H PARAMS..."`` (a COLMAP ``cameras.txt`` line without its id)."""
        parts = str(text).split()
        try:
            model, width, height, params = parts[0], int(parts[1]), int(parts[2]), [float(p) for p in parts[3:]]
        except (IndexError, ValueError):
            raise ValueError(f"camera {text!r}: expected 'MODEL W H PARAMS...', "
                             "e.g. 'SIMPLE_RADIAL 1024 768 900 512 384 0'") from None
        return cls(model, width, height, tuple(params))

    @classmethod
    def from_K(cls, K, width: int, height: int) -> "Camera":
        """A PINHOLE camera from a 3x3 K in the OpenCV convention."""
        K = np.asarray(K, dtype=np.float64)
        if K.shape != (3, 3):
            raise ValueError(f"K must be 3x3, got shape {K.shape}")
        return cls("PINHOLE", int(width), int(height), (K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5))

    @classmethod
    def from_pycolmap(cls, camera) -> "Camera":
        return cls(camera.model.name, int(camera.width), int(camera.height), tuple(np.asarray(camera.params)))

    @classmethod
    def from_exif(cls, path, default_focal_factor: float = DEFAULT_FOCAL_FACTOR) -> Tuple["Camera", str]:
        """A SIMPLE_RADIAL camera for an image file from its EXIF focal length.

        The 35 mm-equivalent focal length is used when present, else the focal length in mm
        with the sensor width from the focal-plane resolution. Without either, the focal
        length falls back to ``default_focal_factor`` x the larger image side. Returns the
        camera and a note saying which source was used (:func:`is_focal_guess` tells a guess).
        """
        from PIL import Image

        with Image.open(path) as image:
            width, height = image.size
            exif = image.getexif()
            info = exif.get_ifd(0x8769) if exif else {}
        focal, source = _exif_focal_px(info, width, height)
        if focal is None:
            focal = default_focal_factor * max(width, height)
            source = f"{FOCAL_GUESS_NOTE}: assumed {default_focal_factor:g} x the larger side"
        camera = cls("SIMPLE_RADIAL", width, height, (focal, width / 2, height / 2, 0.0))
        return camera, source

    def to_string(self) -> str:
        return " ".join([self.model, str(self.width), str(self.height)] + [f"{p:.17g}" for p in self.params])

    def to_pycolmap(self):
        import pycolmap

        return pycolmap.Camera(model=self.model, width=self.width, height=self.height, params=list(self.params))

    @property
    def K(self) -> np.ndarray:
        """The pinhole part of the model as a 3x3 matrix, OpenCV convention."""
        camera = self.to_pycolmap()
        return np.array([[camera.focal_length_x, 0, camera.principal_point_x - 0.5],
                         [0, camera.focal_length_y, camera.principal_point_y - 0.5], [0, 0, 1.0]])

    @property
    def is_pinhole(self) -> bool:
        return self.model in ("SIMPLE_PINHOLE", "PINHOLE")

    def undistort(self, points: np.ndarray) -> np.ndarray:
        """Pixel positions (OpenCV convention) as an ideal pinhole camera with :attr:`K`
        would see them, so that epipolar geometry and triangulation are linear."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        if self.is_pinhole or len(points) == 0:
            return points.copy()
        normalized = self.to_pycolmap().cam_from_img(points + 0.5)
        K = self.K
        return normalized * K[[0, 1], [0, 1]] + K[:2, 2]

    def project(self, points_cam: np.ndarray) -> np.ndarray:
        """Pixels (OpenCV convention) of 3D points in the camera frame (z > 0), with distortion."""
        points_cam = np.asarray(points_cam, dtype=np.float64).reshape(-1, 3)
        if len(points_cam) == 0:
            return np.zeros((0, 2))
        return np.asarray(self.to_pycolmap().img_from_cam(points_cam)) - 0.5

    def scaled(self, width: int, height: int) -> "Camera":
        """The same camera for an image resized to ``width`` x ``height``."""
        camera = self.to_pycolmap()
        camera.rescale(int(width), int(height))
        return Camera.from_pycolmap(camera)


def is_focal_guess(source: str) -> bool:
    """Whether a camera source note of :meth:`Camera.from_exif` says the focal length was guessed."""
    return str(source).startswith(FOCAL_GUESS_NOTE)


@dataclass(frozen=True)
class CameraDevice:
    """What took a photo, as its EXIF says: ``make``, ``model``, the image size in pixels
    and the lens focal length in mm (None when EXIF has none).

    Photos of one device, size and focal length share their intrinsics, so a map's
    calibrated camera serves the queries of the device that took the map's images (COLMAP
    groups images into cameras by the same EXIF fields)."""

    make: str
    model: str
    width: int
    height: int
    focal_mm: Optional[float] = None

    @classmethod
    def from_image(cls, path) -> Optional["CameraDevice"]:
        """The device of an image file; None without a make or model (or for a file PIL
        cannot read). Make and model come from the EXIF tags, else from the
        ``MAPDeviceMake``/``MAPDeviceModel`` that the Mapillary app writes into the image
        description (the Lund sample photos carry theirs only there)."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                width, height = image.size
                exif = image.getexif()
                info = exif.get_ifd(0x8769) if exif else {}
        except (OSError, UnidentifiedImageError, ValueError):
            return None
        make, model = (_exif_text(exif.get(tag)) for tag in (0x010F, 0x0110))  # Make, Model
        if not make and not model:
            make, model = _mapillary_device(exif.get(0x010E))  # ImageDescription
        if not make and not model:
            return None
        focal = info.get(0x920A)  # FocalLength
        try:
            focal_mm = float(focal) if focal and np.isfinite(float(focal)) and float(focal) > 0 else None
        except (TypeError, ValueError, ZeroDivisionError):
            focal_mm = None
        return cls(make, model, int(width), int(height), focal_mm)

    def same_device(self, other: Optional["CameraDevice"]) -> bool:
        """Same make and model, and the same focal length (within 1 %) when both know theirs;
        the image size is left to the caller (a camera scales to another size)."""
        if other is None or (self.make, self.model) != (other.make, other.model):
            return False
        if self.focal_mm is None or other.focal_mm is None:
            return True
        return abs(self.focal_mm - other.focal_mm) <= 0.01 * max(self.focal_mm, other.focal_mm)

    def to_json(self) -> dict:
        return {"make": self.make, "model": self.model, "width": self.width, "height": self.height,
                "focal_mm": self.focal_mm}

    @classmethod
    def from_json(cls, value) -> "CameraDevice":
        """Reads :meth:`to_json`'s dict back; ValueError for anything else."""
        try:
            make, model, width, height = value["make"], value["model"], value["width"], value["height"]
            focal = value.get("focal_mm")
            if not (isinstance(make, str) and isinstance(model, str) and isinstance(width, int)
                    and isinstance(height, int) and width > 0 and height > 0):
                raise TypeError
            if focal is not None and not (isinstance(focal, (int, float)) and np.isfinite(focal) and focal > 0):
                raise TypeError
        except (TypeError, KeyError, AttributeError):
            raise ValueError(f"camera device {value!r}: expected {{make, model, width, height, focal_mm}}") from None
        return cls(make, model, width, height, None if focal is None else float(focal))

    def describe(self) -> str:
        focal = "" if self.focal_mm is None else f", {self.focal_mm:g} mm"
        return f"{self.make} {self.model} ({self.width}x{self.height}{focal})".strip()


def _exif_text(value) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return "" if value is None else str(value).replace("\0", "").strip()


def _mapillary_device(description) -> Tuple[str, str]:
    """``(make, model)`` from a Mapillary image description (JSON), else empty strings."""
    import json

    try:
        fields = json.loads(_exif_text(description))
        return _exif_text(fields.get("MAPDeviceMake")), _exif_text(fields.get("MAPDeviceModel"))
    except (ValueError, AttributeError):
        return "", ""


def _exif_focal_px(info, width: int, height: int) -> Tuple[Optional[float], str]:
    focal_35 = info.get(0xA405)  # FocalLengthIn35mmFilm
    if focal_35:
        # 35 mm film is 36 mm wide: scale to the longer image side
        return float(focal_35) / 36.0 * max(width, height), f"EXIF 35 mm-equivalent focal length {focal_35} mm"
    focal_mm = info.get(0x920A)  # FocalLength
    x_resolution, unit = info.get(0xA20E), info.get(0xA210, 2)  # FocalPlaneXResolution, its unit
    if focal_mm and x_resolution:
        per_mm = float(x_resolution) / {2: 25.4, 3: 10.0, 4: 1.0}.get(int(unit), 25.4)
        # the focal-plane resolution refers to the sensor readout the EXIF width describes;
        # a file resized since then needs the ratio of the two widths
        exif_width = info.get(0xA002)  # PixelXDimension
        resize = width / float(exif_width) if exif_width else 1.0
        return (float(focal_mm) * per_mm * resize,
                f"EXIF focal length {float(focal_mm):g} mm and focal-plane resolution")
    return None, ""


def read_cameras_file(path) -> dict:
    """``{image name: Camera}`` from lines ``name MODEL W H PARAMS...`` (an hloc query list
    with intrinsics); ``#`` starts a comment."""
    cameras = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, rest = line.partition(" ")
        try:
            cameras[name] = Camera.from_string(rest)
        except ValueError as error:
            raise ValueError(f"{path}:{number}: {error}") from None
    if not cameras:
        raise ValueError(f"{path}: no cameras; expected lines 'name MODEL W H PARAMS...'")
    return cameras
