"""WGS84 geodesy: geodetic <-> ECEF <-> east-north-up, against closed forms and round trips."""

from __future__ import annotations

import numpy as np
import pytest

from pylocalize.geometry.geodesy import (
    WGS84_A,
    WGS84_F,
    ecef_from_geodetic,
    enu_from_ecef_rotation,
    enu_from_geodetic,
    geodetic_from_ecef,
    geodetic_from_enu,
)

B = WGS84_A * (1 - WGS84_F)


def test_ecef_of_points_with_closed_forms():
    """On the equator the ECEF radius is a + h; at the poles z = +-(b + h); at latitude phi on
    the ellipsoid (h = 0) the point satisfies (p/a)^2 + (z/b)^2 = 1 and its normal makes the
    angle phi with the equator plane."""
    np.testing.assert_allclose(ecef_from_geodetic([0.0, 0.0, 0.0]), [WGS84_A, 0, 0], atol=1e-9)
    np.testing.assert_allclose(ecef_from_geodetic([0.0, 90.0, 100.0]), [0, WGS84_A + 100, 0], atol=1e-8)
    np.testing.assert_allclose(ecef_from_geodetic([0.0, 180.0, -50.0]), [-(WGS84_A - 50), 0, 0], atol=1e-8)
    np.testing.assert_allclose(ecef_from_geodetic([90.0, 0.0, 10.0]), [0, 0, B + 10], atol=1e-8)
    np.testing.assert_allclose(ecef_from_geodetic([-90.0, 33.0, 0.0]), [0, 0, -B], atol=1e-8)
    for lat in (10.0, 45.0, 55.7, 80.0):
        x, y, z = ecef_from_geodetic([lat, 30.0, 0.0])
        p = np.hypot(x, y)
        assert (p / WGS84_A) ** 2 + (z / B) ** 2 == pytest.approx(1.0, abs=1e-14)
        # the ellipse's normal at (p, z) is (p / a^2, z / b^2)
        assert np.degrees(np.arctan2(z / B ** 2, p / WGS84_A ** 2)) == pytest.approx(lat, abs=1e-12)
        assert np.degrees(np.arctan2(y, x)) == pytest.approx(30.0, abs=1e-12)


def test_geodetic_ecef_round_trip_below_a_millimetre():
    rng = np.random.default_rng(0)
    lla = np.column_stack([rng.uniform(-90, 90, 2000), rng.uniform(-180, 180, 2000), rng.uniform(-500, 9000, 2000)])
    lla[:4] = [[90, 0, 0], [-90, 10, 100], [0, 0, 0], [89.9999, -170, 3]]  # poles and the equator
    back = geodetic_from_ecef(ecef_from_geodetic(lla))
    # compare as positions: longitude is undefined at the poles
    assert np.linalg.norm(ecef_from_geodetic(back) - ecef_from_geodetic(lla), axis=1).max() < 1e-3
    assert np.abs(back[:, 2] - lla[:, 2]).max() < 1e-3
    assert np.abs(back[4:, 0] - lla[4:, 0]).max() < 1e-9  # 1e-9 deg is 0.1 mm


def test_enu_axes_and_small_offsets():
    """East, north and up are orthonormal, right-handed and point where their names say; a
    point a little east or north of the origin on the equator lands where the circle and
    ellipse arcs put it."""
    R = enu_from_ecef_rotation(55.7, 13.2)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-15)
    assert np.linalg.det(R) == pytest.approx(1.0)
    R0 = enu_from_ecef_rotation(0.0, 0.0)
    np.testing.assert_allclose(R0, [[0, 1, 0], [0, 0, 1], [1, 0, 0]], atol=1e-15)  # east = +y, north = +z
    d = np.radians(0.001)
    enu = enu_from_geodetic([0.0, 0.001, 0.0], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(enu, [WGS84_A * np.sin(d), 0, WGS84_A * (np.cos(d) - 1)], atol=1e-9)
    up = enu_from_geodetic([55.7, 13.2, 123.0], [55.7, 13.2, 23.0])
    np.testing.assert_allclose(up, [0, 0, 100], atol=1e-8)
    north = enu_from_geodetic([55.701, 13.2, 0.0], [55.7, 13.2, 0.0])
    assert north[0] == pytest.approx(0, abs=1e-9) and 111.0 < north[1] < 112.0 and north[2] < 0


def test_enu_round_trip_and_input_checks():
    rng = np.random.default_rng(1)
    origin = [55.698, 13.195, 35.0]
    enu = rng.uniform(-5000, 5000, (500, 3))
    np.testing.assert_allclose(enu_from_geodetic(geodetic_from_enu(enu, origin), origin), enu, atol=1e-3)
    assert np.abs(enu_from_geodetic(geodetic_from_enu(enu, origin), origin) - enu).max() < 1e-6
    with pytest.raises(ValueError, match="latitudes"):
        ecef_from_geodetic([91.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="NaN"):
        enu_from_geodetic([np.nan, 0, 0], origin)
    with pytest.raises(ValueError, match="one \\(lat, lon, alt\\)"):
        enu_from_geodetic([0, 0, 0], [[0, 0, 0]])


def test_against_pyproj_when_installed():
    pyproj = pytest.importorskip("pyproj")
    rng = np.random.default_rng(2)
    lla = np.column_stack([rng.uniform(-89, 89, 200), rng.uniform(-180, 180, 200), rng.uniform(-100, 5000, 200)])
    to_ecef = pyproj.Transformer.from_crs("EPSG:4979", "EPSG:4978", always_xy=True)
    x, y, z = to_ecef.transform(lla[:, 1], lla[:, 0], lla[:, 2])
    np.testing.assert_allclose(ecef_from_geodetic(lla), np.column_stack([x, y, z]), atol=1e-3)
