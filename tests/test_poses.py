"""The angle between two rotations (geometry.poses.rotation_error_deg)."""

from __future__ import annotations

import numpy as np
import pytest

from pylocalize.geometry.poses import rotation_error_deg


def _axis_angle(axis, degrees) -> np.ndarray:
    """Rodrigues' rotation matrix, written out independently of the function under test."""
    k = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    a = np.radians(degrees)
    return np.eye(3) + np.sin(a) * K + (1 - np.cos(a)) * K @ K


@pytest.mark.parametrize("degrees", [0.0, 1e-7, 1e-3, 0.5, 37.0, 90.0, 150.0, 179.999, 180.0])
def test_rotation_error_is_the_angle_of_the_relative_rotation(degrees):
    rng = np.random.default_rng(int(degrees * 1000) % 2**32)
    R_a = _axis_angle(rng.normal(size=3), rng.uniform(0, 180))
    R_b = R_a @ _axis_angle(rng.normal(size=3), degrees)
    # absolute accuracy near 0 deg (where arccos of the trace keeps ~1e-6 deg) and 180 deg
    assert rotation_error_deg(R_a, R_b) == pytest.approx(degrees, abs=1e-9)
    assert rotation_error_deg(R_b, R_a) == pytest.approx(degrees, abs=1e-9)
    assert isinstance(rotation_error_deg(R_a, R_b), float)


def test_rotation_error_on_stacks_and_bad_input():
    rng = np.random.default_rng(0)
    angles = rng.uniform(0, 180, 5)
    R_a = np.stack([_axis_angle(rng.normal(size=3), rng.uniform(0, 180)) for _ in angles])
    R_b = np.stack([a @ _axis_angle(rng.normal(size=3), d) for a, d in zip(R_a, angles)])
    np.testing.assert_allclose(rotation_error_deg(R_a, R_b), angles, atol=1e-9)
    # a slightly scaled "rotation" (an estimate, a float32 round trip) gives a number, not NaN
    assert rotation_error_deg(np.eye(3), 1.000001 * np.eye(3)) == pytest.approx(0.0, abs=1e-9)
    assert rotation_error_deg(np.eye(3), -np.diag([1.0, 1.0, -1.0]) * 1.000001) == pytest.approx(180.0)
    with pytest.raises(ValueError, match="3, 3"):
        rotation_error_deg(np.eye(3), np.eye(4))
