"""WGS84 geodesy: geodetic (latitude, longitude, altitude) <-> ECEF <-> local east-north-up.

A local ENU frame is a metric frame tangent to the ellipsoid at an origin (lat0, lon0, alt0):
x east, y north, z up, in metres. Geo-registered maps (:mod:`~pylocalize.localization.georegister`)
live in one, so their poses come out in metres and camera centres turn back into latitude,
longitude and altitude here.

Angles are in degrees, altitudes in metres above the WGS84 ellipsoid (what EXIF GPS holds is
usually above sea level; the difference, the geoid height, is a constant offset over the extent
of a map and cancels in the local frame).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

# WGS84 ellipsoid: semi-major axis (m) and flattening, its defining constants
WGS84_A = 6378137.0
WGS84_F = 1.0 / 298.257223563
WGS84_B = WGS84_A * (1.0 - WGS84_F)
WGS84_E2 = WGS84_F * (2.0 - WGS84_F)  # first eccentricity squared


def _as_points(values, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.shape[-1:] != (3,):
        raise ValueError(f"{what} must have shape (..., 3), got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{what} holds NaN or Inf")
    return array


def ecef_from_geodetic(lla) -> np.ndarray:
    """ECEF coordinates (metres) of geodetic points ``(..., 3)``: latitude and longitude in
    degrees, altitude in metres above the ellipsoid."""
    lla = _as_points(lla, "geodetic points")
    lat, lon, alt = np.radians(lla[..., 0]), np.radians(lla[..., 1]), lla[..., 2]
    if (np.abs(lla[..., 0]) > 90).any():
        raise ValueError("latitudes must lie in [-90, 90] degrees")
    n = WGS84_A / np.sqrt(1.0 - WGS84_E2 * np.sin(lat) ** 2)  # prime vertical radius of curvature
    return np.stack([(n + alt) * np.cos(lat) * np.cos(lon), (n + alt) * np.cos(lat) * np.sin(lon),
                     (n * (1.0 - WGS84_E2) + alt) * np.sin(lat)], axis=-1)


def geodetic_from_ecef(xyz) -> np.ndarray:
    """Geodetic ``(lat deg, lon deg, alt m)`` of ECEF points ``(..., 3)``.

    Bowring's parametric-latitude iteration: each step multiplies the latitude error by
    about e^2 (~0.007) at the Earth's surface, so four steps reach the float64 limit
    (nanometres) for any point not near the centre of the Earth.
    """
    xyz = _as_points(xyz, "ECEF points")
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    p = np.hypot(x, y)
    lon = np.arctan2(y, x)
    ep2 = WGS84_E2 / (1.0 - WGS84_E2)  # second eccentricity squared
    beta = np.arctan2(z * WGS84_A, p * WGS84_B)  # reduced latitude, first guess
    for _ in range(4):
        lat = np.arctan2(z + ep2 * WGS84_B * np.sin(beta) ** 3, p - WGS84_E2 * WGS84_A * np.cos(beta) ** 3)
        beta = np.arctan2(WGS84_B * np.sin(lat), WGS84_A * np.cos(lat))
    sin_lat, cos_lat = np.sin(lat), np.cos(lat)
    n = WGS84_A / np.sqrt(1.0 - WGS84_E2 * sin_lat ** 2)
    # the altitude along the normal; the two forms are well conditioned away from the poles
    # and the equator respectively
    alt = np.where(np.abs(cos_lat) > 0.5, p / np.where(cos_lat == 0, 1, cos_lat) - n,
                   z / np.where(sin_lat == 0, 1, sin_lat) - n * (1.0 - WGS84_E2))
    return np.stack([np.degrees(lat), np.degrees(lon), alt], axis=-1)


def enu_from_ecef_rotation(lat0: float, lon0: float) -> np.ndarray:
    """The 3x3 rotation whose rows are the east, north and up unit vectors at (lat0, lon0)
    in ECEF: ``enu = R @ (ecef - ecef_origin)``."""
    lat, lon = np.radians(lat0), np.radians(lon0)
    sl, cl, so, co = np.sin(lat), np.cos(lat), np.sin(lon), np.cos(lon)
    return np.array([[-so, co, 0.0], [-sl * co, -sl * so, cl], [cl * co, cl * so, sl]])


def _check_origin(origin: Sequence[float]) -> np.ndarray:
    origin = _as_points(origin, "the ENU origin")
    if origin.shape != (3,):
        raise ValueError(f"the ENU origin is one (lat, lon, alt), got shape {origin.shape}")
    return origin


def enu_from_geodetic(lla, origin: Sequence[float]) -> np.ndarray:
    """East-north-up coordinates (metres) of geodetic points ``(..., 3)`` in the local frame
    at ``origin`` = (lat0, lon0, alt0)."""
    origin = _check_origin(origin)
    R = enu_from_ecef_rotation(origin[0], origin[1])
    return (ecef_from_geodetic(lla) - ecef_from_geodetic(origin)) @ R.T


def geodetic_from_enu(enu, origin: Sequence[float]) -> np.ndarray:
    """Geodetic ``(lat, lon, alt)`` of east-north-up points ``(..., 3)`` of the local frame at
    ``origin``; the inverse of :func:`enu_from_geodetic`."""
    origin = _check_origin(origin)
    enu = _as_points(enu, "ENU points")
    R = enu_from_ecef_rotation(origin[0], origin[1])
    return geodetic_from_ecef(enu @ R + ecef_from_geodetic(origin))


__all__ = ["WGS84_A", "WGS84_F", "ecef_from_geodetic", "enu_from_ecef_rotation", "enu_from_geodetic",
           "geodetic_from_ecef", "geodetic_from_enu"]
