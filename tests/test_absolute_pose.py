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


def test_ransac_options_seed_and_checks():
    """A seed makes the pose repeatable; RANSAC bounds reach pycolmap, bad ones are refused
    before any work (even with too few points to solve)."""
    K, _, X, uv, bad = _scene(3, outliers=0.5, noise_px=1.0)
    runs = [estimate_absolute_pose(uv, X, K, 3.0, image_size=(640, 480), seed=7) for _ in range(2)]
    np.testing.assert_array_equal(runs[0].cam_from_world, runs[1].cam_from_world)
    np.testing.assert_array_equal(runs[0].inlier_mask, runs[1].inlier_mask)
    # half the points are outliers: planned for a 0.3 inlier ratio with few trials, still found
    capped = estimate_absolute_pose(uv, X, K, 3.0, image_size=(640, 480), max_trials=200, min_inlier_ratio=0.3,
                                    confidence=0.99, seed=0)
    assert capped is not None and capped.inlier_mask[~bad].mean() > 0.9
    for kwargs, message in (({"max_trials": 0}, "max_trials must be >= 1"),
                            ({"min_trials": -1}, "min_trials must be >= 0"),
                            ({"confidence": 1.0}, r"confidence must be in \(0, 1\)"),
                            ({"min_inlier_ratio": 0.0}, r"min_inlier_ratio must be in \(0, 1\]"),
                            ({"seed": -1}, "seed must be >= 0"),
                            ({"loss_scale_px": 0.0}, "loss_scale_px must be positive")):
        with pytest.raises(ValueError, match=message):
            estimate_absolute_pose(uv[:3], X[:3], K, image_size=(640, 480), **kwargs)


def test_refinement_loss_scale_reaches_the_refinement():
    """With 4 px of noise, a Cauchy scale at the noise level uses every inlier fully and lands
    closer to the truth than the default 1 px scale, which treats most of them as outliers."""
    K, pose, X, uv, _ = _scene(4, outliers=0.0, noise_px=4.0)
    tight = estimate_absolute_pose(uv, X, K, 16.0, image_size=(640, 480), seed=0)
    wide = estimate_absolute_pose(uv, X, K, 16.0, image_size=(640, 480), seed=0, loss_scale_px=4.0)
    np.testing.assert_array_equal(tight.inlier_mask, wide.inlier_mask)  # the same RANSAC
    assert np.abs(tight.cam_from_world - wide.cam_from_world).max() > 1e-6
    centre = -pose[:, :3].T @ pose[:, 3]
    errors = [np.linalg.norm(-r.R.T @ r.t - centre) for r in (tight, wide)]
    assert errors[1] < 0.8 * errors[0]  # 0.019 against 0.029 (seeds 4-9: always lower)


def test_epnp_recovers_a_known_pose_and_keeps_the_convention():
    """method="epnp" (OpenCV RANSAC + EPnP + LM): the same pose, inliers and pixel
    convention as "lo-ransac" on the analytic scene."""
    K, pose, X, uv, bad = _scene(3)
    result = estimate_absolute_pose(uv, X, K, 2.0, image_size=(640, 480), method="epnp", max_trials=500,
                                    confidence=0.999)
    assert result is not None and result.covariance is None
    centre = -result.R.T @ result.t
    assert np.linalg.norm(centre - (-pose[:, :3].T @ pose[:, 3])) < 0.01
    assert result.inlier_mask[~bad].mean() > 0.97 and result.inlier_mask[bad].mean() < 0.05
    K, pose, X, uv, _ = _scene(4, outliers=0.0, noise_px=0.0)
    exact = estimate_absolute_pose(uv, X, K, 1.0, image_size=(640, 480), method="epnp")
    assert np.abs(exact.cam_from_world - pose).max() < 1e-6


def test_epnp_refuses_what_it_cannot_do():
    K, _, X, uv, _ = _scene(5)
    for option in ({"seed": 1}, {"covariance": True}, {"loss_scale_px": 3.0}, {"min_inlier_ratio": 0.1}):
        with pytest.raises(ValueError, match="does not take"):
            estimate_absolute_pose(uv, X, K, image_size=(640, 480), method="epnp", **option)
    radial = Camera("SIMPLE_RADIAL", 640, 480, (700.0, 320.0, 240.0, 0.1))
    with pytest.raises(ValueError, match="pinhole"):
        estimate_absolute_pose(uv, X, radial, method="epnp")
    with pytest.raises(ValueError, match="method must be one of"):
        estimate_absolute_pose(uv, X, K, image_size=(640, 480), method="p3p")
