"""Geo-registration: a map's frame mapped into metres east-north-up from its images' GPS.

Structure-from-motion leaves a map in an arbitrary similarity frame. When enough of its
images carry EXIF GPS positions, the similarity from the map frame to a local east-north-up
(ENU) frame is fitted to the camera centres (least squares inside RANSAC, as COLMAP's model
aligner does: :func:`~pylocalize.geometry.poses.ransac_similarity`) and applied to the map's
poses and points. The ENU origin (latitude, longitude, altitude) is stored with the map, so
localized poses come out in metres and their camera centres turn back into latitude and
longitude (:func:`camera_geodetic`).

GPS only fixes the frame when its positions are spread beyond its own noise in at least two
directions: a street walked in a straight line leaves the rotation about the street unknown.
Maps whose GPS does not fix the frame are left as they are, and the log says why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from pylocalize.geometry.geodesy import ecef_from_geodetic, enu_from_geodetic, geodetic_from_ecef, geodetic_from_enu
from pylocalize.geometry.poses import ransac_similarity, transform_pose
from pylocalize.io import read_gps

log = logging.getLogger(__name__)

# Typical horizontal error of a phone's or camera's GPS fix, metres
DEFAULT_GPS_NOISE_M = 5.0


@dataclass
class GeoRegistration:
    """A fitted map-to-ENU similarity ``enu = scale * rotation @ x_map + translation``.

    Attributes
    ----------
    origin : float64 (3,)
        (latitude deg, longitude deg, altitude m) of the ENU frame's origin.
    scale, rotation, translation : float, float64 (3, 3), float64 (3,)
    names : list of str
        The images whose GPS took part in the fit.
    inliers : bool (len(names),)
        Which of them agree with the fit within ``max_error_m``.
    residuals_m : float64 (len(names),)
        Distance between each image's registered camera centre and its GPS position.
    """

    origin: np.ndarray
    scale: float
    rotation: np.ndarray
    translation: np.ndarray
    names: List[str]
    inliers: np.ndarray
    residuals_m: np.ndarray

    def __repr__(self) -> str:
        rms = float(np.sqrt(np.mean(self.residuals_m[self.inliers] ** 2)))
        lat, lon, alt = (float(v) for v in self.origin)
        return (f"GeoRegistration(origin=({lat:.7f}, {lon:.7f}, {alt:.2f}), scale={self.scale:.6g}, "
                f"{int(self.inliers.sum())}/{len(self.names)} GPS inliers, RMS {rms:.2f} m)")


def camera_centres(cam_from_world: np.ndarray) -> np.ndarray:
    """Camera centres ``-R^T t`` of ``(n, 3, 4)`` (or one ``(3, 4)``) cam_from_world poses."""
    P = np.asarray(cam_from_world, dtype=np.float64)
    return -np.einsum("...ji,...j->...i", P[..., :3], P[..., 3])


def camera_geodetic(cam_from_world: np.ndarray, origin: Sequence[float]) -> np.ndarray:
    """``(lat, lon, alt)`` of the camera centre of a cam_from_world pose (or ``(n, 3)`` of
    ``n`` poses) in a map geo-registered at ``origin`` (its ENU frame)."""
    return geodetic_from_enu(camera_centres(cam_from_world), origin)


def gps_of_images(paths: Dict[str, object]) -> Dict[str, np.ndarray]:
    """``{name: (lat, lon, alt)}`` of the images (``{name: file}``) whose EXIF carries a GPS
    position; unreadable files and files without GPS are left out."""
    gps = {}
    for name, path in paths.items():
        try:
            position = read_gps(path)
        except ValueError:
            continue
        if position is not None:
            gps[name] = np.array(position, dtype=np.float64)
    return gps


def _spread(points: np.ndarray) -> np.ndarray:
    """RMS extent of points along their principal axes, largest first."""
    centred = points - points.mean(0)
    return np.linalg.svd(centred, compute_uv=False) / np.sqrt(len(points))


def _with_altitudes(gps: Dict[str, np.ndarray]) -> Tuple[Dict[str, np.ndarray], str]:
    """GPS positions usable in 3D: images without altitude are dropped, unless none has one,
    then all get altitude 0 (the map's vertical is then fitted to a level plane)."""
    known = {n: p for n, p in gps.items() if np.isfinite(p[2])}
    if known:
        note = f"; {len(gps) - len(known)} without altitude left out" if len(known) < len(gps) else ""
        return known, note
    return {n: np.array([p[0], p[1], 0.0]) for n, p in gps.items()}, "; no GPS altitude: cameras assumed level"


def fit_georegistration(names: Sequence[str], cam_from_world: np.ndarray, gps: Dict[str, np.ndarray],
                        gps_noise_m: float = DEFAULT_GPS_NOISE_M, max_error_m: Optional[float] = None,
                        min_images: int = 3, seed: int = 0) -> Tuple[Optional[GeoRegistration], str]:
    """The similarity from a map frame to the ENU frame at the GPS positions' centroid.

    Parameters
    ----------
    names, cam_from_world : the map's images and their poses.
    gps : ``{name: (lat, lon, alt)}`` of the images that have a GPS position.
    gps_noise_m : float
        The GPS positions' expected error: they must spread beyond it in two directions.
    max_error_m : float, optional
        RANSAC inlier threshold on camera-centre distance; default ``3 * gps_noise_m``.
    min_images : int
        GPS positions needed (at least 3), before and after RANSAC.

    Returns
    -------
    (GeoRegistration or None, str)
        The registration, or None and why none was made (the GPS too sparse, too little
        spread, or disagreeing with the map).
    """
    if not gps_noise_m > 0:
        raise ValueError(f"gps_noise_m must be positive, got {gps_noise_m}")
    max_error_m = 3.0 * gps_noise_m if max_error_m is None else float(max_error_m)
    known, note = _with_altitudes({n: gps[n] for n in names if n in gps})
    used = [n for n in names if n in known]
    if len(used) < max(3, min_images):
        return None, f"{len(used)} of {len(names)} images carry a GPS position{note}; need {max(3, min_images)}"
    lla = np.array([known[n] for n in used])
    origin = geodetic_from_ecef(ecef_from_geodetic(lla).mean(0))
    enu = enu_from_geodetic(lla, origin)
    spread = _spread(enu)
    if spread[1] <= gps_noise_m:
        return None, (f"the GPS positions of {len(used)} images spread {spread[0]:.1f} m x {spread[1]:.1f} m (RMS), "
                      f"not beyond the GPS noise ({gps_noise_m:g} m) in two directions: the rotation about their "
                      "line is unknown")
    index = {n: i for i, n in enumerate(names)}
    centres = camera_centres(np.asarray(cam_from_world)[[index[n] for n in used]])
    try:
        s, R, t, inliers = ransac_similarity(centres, enu, max_error_m, seed=seed)
    except ValueError as error:
        return None, f"the map's camera centres and their GPS positions disagree ({error})"
    if inliers.sum() < max(3, min_images) or _spread(enu[inliers])[1] <= gps_noise_m:
        return None, (f"only {int(inliers.sum())} of {len(used)} GPS positions agree with the map within "
                      f"{max_error_m:g} m, or they lie on one line")
    residuals = np.linalg.norm(centres @ (s * R).T + t - enu, axis=1)
    registration = GeoRegistration(origin, float(s), R, t, used, inliers, residuals)
    return registration, f"geo-registered with {registration!r}{note}"


def apply_registration(m, registration: GeoRegistration) -> None:
    """Moves map ``m`` (its poses, points, its feature layers' points and kept SfM model) into the registration's ENU
    frame and records the origin in ``m.geo_origin``."""
    s, R, t = registration.scale, registration.rotation, registration.translation
    m.cam_from_world = np.stack([transform_pose(P, s, R, t) for P in m.cam_from_world]).reshape(-1, 3, 4)
    m.points3D = np.ascontiguousarray(m.points3D @ (s * R).T + t)
    for layer in m.layers.values():  # binary feature layers hold points of their own
        layer.points3D = np.ascontiguousarray(layer.points3D @ (s * R).T + t)
    model = m.sfm_model()
    if model is not None:  # the kept SfM model moves with the map, in memory until the next save
        import pycolmap

        model.transform(pycolmap.Sim3d(s, pycolmap.Rotation3d(R), t))
        m.sfm_reconstruction, m.sfm_model_dir = model, None
    m.geo_origin = np.asarray(registration.origin, dtype=np.float64)


def georegister(m, gps: Dict[str, np.ndarray], **options) -> Optional[GeoRegistration]:
    """Geo-registers map ``m`` in place from ``{name: (lat, lon, alt)}``
    (:func:`fit_georegistration`'s ``options``); logs and returns None, leaving the map as it
    is, when the GPS does not fix the frame."""
    registration, message = fit_georegistration(m.names, m.cam_from_world, gps, **options)
    if registration is None:
        log.warning("map not geo-registered: %s", message)
        return None
    apply_registration(m, registration)
    log.info("%s", message)
    return registration


__all__ = ["DEFAULT_GPS_NOISE_M", "GeoRegistration", "apply_registration", "camera_centres", "camera_geodetic",
           "fit_georegistration", "georegister", "gps_of_images"]
