"""The one PnP: known poses of analytic scenes, with outliers, both camera forms."""

import numpy as np
import pytest

from pylocalize.geometry import Camera
from pylocalize.geometry.absolute_pose import estimate_absolute_pose
from pylocalize.geometry.views import look_at


def _scene(seed, n=200, outliers=0.3, noise_px=0.3):
    rng = np.random.default_rng(seed)
    K = np.array([[700.0, 0, 319.5], [0, 700.0, 239.5], [0, 0, 1]])
    pose = look_at(np.array([0.5, -0.3, -4.0]), np.zeros(3))
    X = rng.uniform(-1, 1, size=(n, 3))
    x_cam = X @ pose[:, :3].T + pose[:, 3]
    uv = x_cam[:, :2] / x_cam[:, 2:] * 700.0 + [319.5, 239.5]
    uv += rng.normal(0, noise_px, uv.shape)
    bad = rng.random(n) < outliers
    uv[bad] = rng.uniform([0, 0], [640, 480], size=(bad.sum(), 2))
    return K, pose, X, uv, bad


@pytest.mark.parametrize("as_camera", [False, True])
def test_known_pose_recovered_with_outliers(as_camera):
    K, pose, X, uv, bad = _scene(0)
    camera = Camera.from_K(K, 640, 480) if as_camera else K
    result = estimate_absolute_pose(uv, X, camera, 2.0, image_size=(640, 480), covariance=True)
    assert result is not None
    R_err = np.degrees(np.arccos(np.clip((np.trace(result.R.T @ pose[:, :3]) - 1) / 2, -1, 1)))
    centre = -result.R.T @ result.t
    assert R_err < 0.2
    assert np.linalg.norm(centre - (-pose[:, :3].T @ pose[:, 3])) < 0.01
    # every clean point is an inlier, and nearly every random point is not
    assert result.inlier_mask[~bad].mean() > 0.97
    assert result.inlier_mask[bad].mean() < 0.05
    assert result.covariance.shape == (6, 6)


def test_pixel_convention_is_opencv():
    """Exact projections in OpenCV pixels give a pose exact to numerical precision."""
    K, pose, X, uv, _ = _scene(1, outliers=0.0, noise_px=0.0)
    result = estimate_absolute_pose(uv, X, K, 1.0, image_size=(640, 480))
    assert np.abs(result.cam_from_world - pose).max() < 1e-6


def test_too_few_and_bad_input():
    K, _, X, uv, _ = _scene(2)
    assert estimate_absolute_pose(uv[:3], X[:3], K, image_size=(640, 480)) is None
    with pytest.raises(ValueError, match="image_size"):
        estimate_absolute_pose(uv, X, K)
    with pytest.raises(ValueError, match="one 3D point per 2D point"):
        estimate_absolute_pose(uv, X[:-1], K, image_size=(640, 480))
    with pytest.raises(ValueError, match=r"shape \(n, 3\)"):
        estimate_absolute_pose(uv, X[:, :2], K, image_size=(640, 480))
    uv[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        estimate_absolute_pose(uv, X, K, image_size=(640, 480))
