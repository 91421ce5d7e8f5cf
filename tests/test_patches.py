"""Point patches and their sub-pixel alignment: the core's Lucas-Kanade against known
shifts, the local warps against analytic views, the Gauss-Newton pose refinement against
pycolmap's, the map sections, and the tracker's refinement on a rendered stream."""

from __future__ import annotations

import numpy as np
import pycolmap
import pytest

from pylocalize import FormatError
from pylocalize.datasets.camera_paths import render_path, walking_path
from pylocalize.datasets.synthetic import courtyard_scene
from pylocalize.geometry import Camera, look_at
from pylocalize.geometry.absolute_pose import refine_absolute_pose
from pylocalize.localization import Map
from pylocalize.localization.patches import (
    PATCH_SIZE,
    align_patches,
    align_patches_fitted,
    local_affines,
    prepare_image,
    sample_patches,
    template_fits,
)
from pylocalize.localization.tracking import Tracker, TrackerOptions, project_points, spread_evenly
from pylocalize.localization.triangulation import camera_centres


def _texture(seed=0, shape=(240, 320)):
    """A smooth random texture (blobs of a few pixels): every patch has 2-D structure."""
    import cv2

    rng = np.random.default_rng(seed)
    noise = rng.uniform(0, 255, shape).astype(np.float32)
    image = cv2.GaussianBlur(noise, (0, 0), 2.0)
    return (image - image.min()) / np.ptp(image) * 220 + 15


IDENTITY = np.array([1.0, 0.0, 0.0, 1.0])


def test_alignment_finds_known_sub_pixel_shifts_blind_to_gain_and_bias():
    rng = np.random.default_rng(1)
    image = _texture(1)
    truth = rng.uniform(30, [290, 210], (200, 2))
    references = sample_patches(image, truth)
    start = truth + rng.uniform(-2.0, 2.0, truth.shape)
    frame = image * 1.4 + 12.0  # another exposure: normalized intensities do not see it
    xy, zncc, converged, _ = align_patches(frame, references, np.tile(IDENTITY, (200, 1)), start)
    assert converged.mean() > 0.95
    assert np.median(np.linalg.norm(xy[converged] - truth[converged], axis=1)) < 0.02
    assert np.abs(xy[converged] - truth[converged]).max() < 0.1
    assert (zncc[converged] > 0.99).all()


def test_alignment_resamples_the_reference_under_its_warp():
    """A frame rotated by 30 degrees and scaled by 1.25 about each point: the warp from the
    frame's offsets to the reference's undoes it."""
    import cv2

    image = _texture(2, (300, 300))
    angle, scale, centre = 30.0, 1.25, (150.0, 150.0)
    frame_from_image = cv2.getRotationMatrix2D(centre, angle, scale)
    frame = cv2.warpAffine(image, frame_from_image, (300, 300), flags=cv2.INTER_CUBIC)
    rng = np.random.default_rng(2)
    truth = rng.uniform(110, 190, (50, 2))
    in_frame = truth @ frame_from_image[:, :2].T + frame_from_image[:, 2]
    image_from_frame = np.linalg.inv(frame_from_image[:, :2])
    references = sample_patches(image, truth)
    warps = np.tile(image_from_frame.ravel(), (50, 1))
    xy, zncc, converged, _ = align_patches(frame, references, warps, in_frame + 1.0)
    assert converged.mean() > 0.9
    # resampled twice (the frame, the template), bilinear: a twentieth of a pixel typical
    assert np.median(np.linalg.norm(xy[converged] - in_frame[converged], axis=1)) < 0.1
    # without the warp the template is the wrong shape: it correlates less, lands further off
    xy0, zncc0, converged0, _ = align_patches(frame, references, np.tile(IDENTITY, (50, 1)), in_frame + 1.0)
    assert np.median(zncc[converged]) > 0.98 and np.median(zncc0) < np.median(zncc[converged]) - 0.1
    assert np.median(np.linalg.norm(xy0 - in_frame, axis=1)) > 2 * np.median(np.linalg.norm(xy - in_frame, axis=1))


def test_fitted_alignment_takes_the_largest_template_the_warp_keeps_inside():
    """Identity and 1.6x warps fit a 10 x 10 template in a 16 x 16 patch (4.5 x 1.6 = 7.2 px
    of its 7.5); a 1.8x warp only an 8 x 8 one; 2.5x neither. Each patch's result is that of
    align_patches with the size it fits."""
    import cv2

    warps = np.array([IDENTITY, [1.6, 0, 0, 1.6], [1.8, 0, 0, 1.8], [2.5, 0, 0, 2.5]])
    assert template_fits(warps, 10).tolist() == [True, True, False, False]
    assert template_fits(warps, 8).tolist() == [True, True, True, False]
    image = _texture(8, (300, 300))
    rng = np.random.default_rng(8)
    truth = rng.uniform(110, 190, (40, 2))
    references = sample_patches(image, truth)
    scale = np.repeat([1.0, 1.6, 1.8, 2.5], 10)  # the frame shrinks the image by the warp's factor about each point
    frames = {s: cv2.resize(image, None, fx=1 / s, fy=1 / s, interpolation=cv2.INTER_AREA)
              for s in (1.0, 1.6, 1.8, 2.5)}
    for s in frames:
        rows = scale == s
        start = (truth[rows] + 0.5) / s - 0.5 + 0.3
        fitted = align_patches_fitted(frames[s], references[rows], np.tile([s, 0, 0, s], (10, 1)), start)
        size = 10 if s <= 1.6 else 8
        alone = align_patches(frames[s], references[rows], np.tile([s, 0, 0, s], (10, 1)), start, template_size=size)
        for got, want in zip(fitted, alone):
            np.testing.assert_array_equal(got, want)
        assert fitted[2].mean() > (0.8 if s < 2.5 else -1) and (s < 2.5 or not fitted[2].any())


def test_alignment_refuses_flat_patches_the_border_and_bad_input():
    image = _texture(3)
    references = sample_patches(image, np.array([[100.0, 100.0], [100.0, 100.0], [100.0, 100.0]]))
    references[1] = 128  # flat: nothing to align on
    start = np.array([[100.5, 100.0], [100.0, 100.0], [2.0, 2.0]])  # the third's window leaves the image
    _, _, converged, _ = align_patches(image, references, np.tile(IDENTITY, (3, 1)), start)
    assert converged.tolist() == [True, False, False]
    # a warp that reaches outside the stored patch
    _, _, converged, _ = align_patches(image, references[:1], np.array([[3.0, 0.0, 0.0, 3.0]]), start[:1])
    assert not converged[0]
    with pytest.raises(ValueError, match="one row per reference patch"):
        align_patches(image, references, np.tile(IDENTITY, (2, 1)), start)
    with pytest.raises(ValueError, match="2-D grey"):
        align_patches(np.zeros((10, 10, 3)), references, np.tile(IDENTITY, (3, 1)), start)


def test_alignment_information_predicts_its_scatter():
    """Aligned in 50 noisy frames, each patch's scatter follows its information: the predicted
    variances rank as the measured ones do, and the patches of a striped texture (blurred
    along y) are known more precise across the stripes (x) only. The scale is optimistic by a
    common factor (the noise of an interpolated frame is not white), which the weighted pose
    does not use."""
    import cv2

    rng = np.random.default_rng(6)
    image = _texture(6, (240, 480))
    image[:, 240:] = cv2.GaussianBlur(image[:, 240:], (0, 0), sigmaX=0.5, sigmaY=4.0)
    truth = np.r_[rng.uniform(30, 210, (20, 2)), rng.uniform([270, 30], [450, 210], (20, 2))]
    references = sample_patches(image, truth)
    errors, informations = [], []
    for _ in range(50):
        frame = image + rng.normal(0, 4.0, image.shape).astype(np.float32)
        xy, _, converged, information = align_patches(frame, references, np.tile(IDENTITY, (40, 1)),
                                                      truth + rng.uniform(-0.5, 0.5, truth.shape))
        assert converged.mean() > 0.75  # an edge-like patch may wander along its edge
        errors.append(np.where(converged[:, None], xy - truth, np.nan))
        informations.append(information)
    errors, information = np.array(errors), np.mean(informations, axis=0)
    assert np.allclose(information, information.transpose(0, 2, 1))
    scatter = np.nanmean(errors[..., :, None] * errors[..., None, :], axis=0)
    predicted = np.linalg.inv(information)
    log_variance = [np.log(np.trace(c, axis1=1, axis2=2)) for c in (predicted, scatter)]
    assert np.corrcoef(*log_variance)[0, 1] > 0.7
    texture, stripes = slice(0, 20), slice(20, 40)
    assert 1 / 3 < np.median(information[texture, 1, 1] / information[texture, 0, 0]) < 3
    assert 1 / 3 < np.median(scatter[texture, 1, 1] / scatter[texture, 0, 0]) < 3
    assert np.median(information[stripes, 1, 1] / information[stripes, 0, 0]) < 0.35
    assert np.median(scatter[stripes, 1, 1] / scatter[stripes, 0, 0]) > 3


def test_refinement_weighted_by_information():
    """Points measured with anisotropic noise of known covariance: weighted by its inverse
    the pose is closer to the truth than unweighted (over 20 draws); identity information is
    the unweighted refinement, and only the information's relative size matters."""
    camera = Camera.from_string("PINHOLE 640 480 500 500 319.5 239.5")
    rng = np.random.default_rng(7)
    pose = np.c_[pycolmap.Rotation3d(np.array([0.02, 0.05, -0.01])).matrix(), [0.2, 0.1, 0.0]]
    errors, centre = {"weighted": [], "plain": []}, camera_centres(pose[None])[0]
    for _ in range(20):
        points = rng.uniform(-3, 3, (200, 3)) + [0, 0, 8]
        angles = rng.uniform(0, np.pi, 200)
        axes = np.stack([np.c_[np.cos(angles), np.sin(angles)], np.c_[-np.sin(angles), np.cos(angles)]], axis=2)
        sigmas = np.c_[np.full(200, 0.05), np.full(200, 1.0)]  # precise along one axis, not the other
        covariance = np.einsum("nij,nj,nkj->nik", axes, sigmas ** 2, axes)
        noise = np.einsum("nij,nj->ni", axes, sigmas * rng.normal(size=(200, 2)))
        pixels = camera.project(points @ pose[:, :3].T + pose[:, 3]) + noise
        prior = pose + np.c_[np.zeros((3, 3)), [0.01, -0.01, 0.02]]
        information = np.linalg.inv(covariance)
        weighted = refine_absolute_pose(pixels, points, camera, prior, loss_scale_px=3.0, max_error_px=10.0,
                                        information=information)
        plain = refine_absolute_pose(pixels, points, camera, prior, loss_scale_px=3.0, max_error_px=10.0)
        for name, result in (("weighted", weighted), ("plain", plain)):
            errors[name].append(np.linalg.norm(camera_centres(result.cam_from_world[None])[0] - centre))
        scaled = refine_absolute_pose(pixels, points, camera, prior, loss_scale_px=3.0, max_error_px=10.0,
                                      information=information * 1e4)
        assert np.abs(scaled.cam_from_world - weighted.cam_from_world).max() < 1e-9
    assert np.mean(errors["weighted"]) < 0.5 * np.mean(errors["plain"]), errors
    identity = refine_absolute_pose(pixels, points, camera, prior, loss_scale_px=3.0, max_error_px=10.0,
                                    information=np.tile(np.eye(2), (200, 1, 1)))
    assert np.abs(identity.cam_from_world - plain.cam_from_world).max() < 1e-9
    with pytest.raises(ValueError, match=r"\(n, 2, 2\)"):
        refine_absolute_pose(pixels, points, camera, prior, information=np.ones((200, 3)))
    with pytest.raises(ValueError, match="positive median trace"):
        refine_absolute_pose(pixels, points, camera, prior, information=np.zeros((200, 2, 2)))


def test_local_affines_of_analytic_views():
    """Point on the reference camera's axis; the frame camera (a) twice as far along that axis:
    offsets in the frame are half the size, so the warp doubles them; (b) rolled by 30
    degrees about its axis: the warp is that rotation."""
    camera = Camera("PINHOLE", 640, 480, (500.0, 500.0, 320.0, 240.0))
    point = np.array([[0.0, 5.0, 1.0]])
    ref = look_at(np.array([0.0, 0.0, 1.0]), point[0], up=(0, 0, 1))
    far = look_at(np.array([0.0, -5.0, 1.0]), point[0], up=(0, 0, 1))
    xy, _ = project_points(point, far, camera)
    affines, valid = local_affines(point, xy, far, camera, ref[None], [camera])
    assert valid.all() and np.allclose(affines[0], [2.0, 0.0, 0.0, 2.0], atol=1e-3)
    roll = np.radians(30.0)
    rolled = np.array([[np.cos(roll), -np.sin(roll), 0], [np.sin(roll), np.cos(roll), 0], [0, 0, 1]]) @ ref[:, :3]
    rolled = np.c_[rolled, -rolled @ camera_centres(ref[None])[0]]
    xy, _ = project_points(point, rolled, camera)
    affines, valid = local_affines(point, xy, rolled, camera, ref[None], [camera])
    # frame offset d -> reference offset R(-roll) d, in image axes (y down)
    c, s = np.cos(roll), np.sin(roll)
    assert valid.all() and np.allclose(affines[0], [c, s, -s, c], atol=1e-3)
    # a point behind the frame camera has no warp
    _, valid = local_affines(point, xy, look_at(np.array([0.0, 8.0, 1.0]), np.array([0.0, 12.0, 1.0]), up=(0, 0, 1)),
                             camera, ref[None], [camera])
    assert not valid.any()


@pytest.mark.parametrize("model", ["PINHOLE 640 480 512 500 319.5 239.5",
                                   "OPENCV 640 480 512 500 320 240 -0.1 0.02 0.001 -0.001"])
def test_gauss_newton_refinement_agrees_with_pycolmaps(model):
    camera = Camera.from_string(model)
    rng = np.random.default_rng(4)
    points = rng.uniform(-3, 3, (400, 3)) + [0, 0, 8]
    pose = np.c_[pycolmap.Rotation3d(np.array([0.05, -0.1, 0.02])).matrix(), [0.1, -0.2, 0.3]]
    pixels = camera.project(points @ pose[:, :3].T + pose[:, 3]) + rng.normal(0, 0.3, (400, 2))
    pixels[:40] += rng.uniform(-30, 30, (40, 2))
    prior = pose.copy()
    prior[:, 3] += [0.02, -0.01, 0.03]
    ours = refine_absolute_pose(pixels, points, camera, prior, loss_scale_px=1.0, max_error_px=2.0)
    options = pycolmap.AbsolutePoseRefinementOptions()
    options.print_summary, options.loss_function_scale = False, 1.0
    rigid = pycolmap.Rigid3d(pycolmap.Rotation3d(prior[:, :3]), prior[:, 3].copy())
    theirs = pycolmap.refine_absolute_pose(rigid, pixels + 0.5, points, ours.inlier_mask, camera.to_pycolmap(),
                                           options)["cam_from_world"].matrix()
    assert ours.inlier_mask[40:].mean() > 0.99 and ours.inlier_mask[:40].mean() < 0.3
    # the distorted model's error is minimised on undistorted points: the same pose to 1e-4
    assert np.abs(ours.cam_from_world - theirs).max() < (1e-5 if camera.is_pinhole else 1e-4)
    assert np.abs(ours.cam_from_world - pose).max() < 2e-3


def test_spread_evenly_lets_the_grid_cells_take_turns():
    rng = np.random.default_rng(5)
    # crowded top-left corner, a sparse rest of the image
    pixels = np.concatenate([rng.uniform(0, 60, (400, 2)), rng.uniform(0, [320, 240], (100, 2))])
    chosen = spread_evenly(pixels, 120, (320, 240))
    assert len(chosen) == 120 and len(np.unique(chosen)) == 120 and (np.diff(chosen) > 0).all()
    cells = (pixels[:, 1] // 32).astype(int) * 10 + (pixels[:, 0] // 32).astype(int)
    have = np.bincount(cells, minlength=80)
    got = np.bincount(cells[chosen], minlength=80)
    # round robin: a cell gets all its points, or as many as the fullest turn reached
    level = got.max()
    assert all(g == h or g >= level - 1 for g, h in zip(got, have))
    assert got[have > 0].min() >= 1  # every occupied cell is represented
    # within a cell, the first points in order
    for cell in np.flatnonzero(got):
        members = np.flatnonzero(cells == cell)
        assert np.array_equal(np.sort(chosen[cells[chosen] == cell]), members[:got[cell]])
    assert np.array_equal(spread_evenly(pixels, 1000, (320, 240)), np.arange(500))


@pytest.fixture(scope="module")
def courtyard():
    scene = courtyard_scene(num_views=20, seed=3, width=320, height=240)
    m = Map.from_views(scene.images, scene.K, scene.cam_from_world, scene.names, max_features=1500)
    m.add_patches("sift", scene.images)
    return scene, m


def test_map_patches_are_centred_on_the_keypoints_and_saved_with_the_map(tmp_path, courtyard):
    import cv2

    scene, m = courtyard
    observed = [(np.asarray(ids) >= 0).sum() for ids in m.point_ids]
    assert [len(p) for p in m.patches["sift"]] == observed
    assert m.patches["sift"][0].shape[1:] == (PATCH_SIZE, PATCH_SIZE) and m.patches["sift"][0].dtype == np.uint8
    # patch j of image 0: the blurred image around observation j's keypoint, less OpenCV
    # SIFT's quarter pixel (getRectSubPix: an independent bilinear sampler)
    gray = prepare_image(scene.images[0])
    keypoints = np.asarray(m.keypoints[0])[np.asarray(m.point_ids[0]) >= 0][:20]
    for j, (x, y) in enumerate(keypoints - 0.25):
        window = cv2.getRectSubPix(gray, (PATCH_SIZE, PATCH_SIZE), (float(x), float(y)))
        assert np.abs(window.astype(np.float32) - m.patches["sift"][0][j]).max() <= 1.0
    m.save(tmp_path / "map")
    loaded = Map.load(tmp_path / "map")
    assert all(np.array_equal(a, b) for a, b in zip(loaded.patches["sift"], m.patches["sift"]))
    assert Map.load(tmp_path / "map", mmap=False).patches.keys() == {"sift"}


def test_corrupt_or_stale_patches_are_named(tmp_path, courtyard):
    from pylocalize import _core

    scene, m = courtyard
    m.save(tmp_path / "map")
    file = tmp_path / "map" / "map.pyloc"
    # a file pylocalize did not write (valid checksums): counts that do not fit, a wrong size
    tag, _, meta, sections = _core.read_container(str(file), mmap=False)
    sections = {k: np.array(v) for k, v in sections.items()}
    original = dict(sections)
    sections["patches.sift.counts"] = sections["patches.sift.counts"] + 1
    _core.write_container(str(file), tag, meta, sections)
    with pytest.raises(FormatError, match="point patches of 'sift': their counts"):
        Map.load(tmp_path / "map")
    sections = dict(original)
    sections["patches.sift.data"] = np.ascontiguousarray(original["patches.sift.data"][:, :8, :8])
    _core.write_container(str(file), tag, meta, sections)
    with pytest.raises(FormatError, match="patches.sift.data"):
        Map.load(tmp_path / "map")
    del sections["patches.sift.data"]
    _core.write_container(str(file), tag, meta, sections)
    with pytest.raises(FormatError, match="is missing"):
        Map.load(tmp_path / "map")
    stale = Map.from_views(scene.images[:3], scene.K, scene.cam_from_world[:3], scene.names[:3], max_features=300)
    stale.patches["sift"] = m.patches["sift"][:3]  # patches of other features
    with pytest.raises(ValueError, match="add them again"):
        stale.save(tmp_path / "stale")
    with pytest.raises(ValueError, match="image folder"):
        stale.add_patches("sift")


def test_tracker_refined_on_patches_is_more_precise(courtyard):
    """A 30-frame walk tracked on half-resolution SIFT, with and without the patch step."""
    scene, m = courtyard
    path = walking_path(30, seed=5)
    frames = list(render_path(scene, path))
    errors = {}
    for patches in ("sift", None):
        tracker = Tracker(m, scene.camera, options=TrackerOptions(scale=0.5, max_features=600, patches=patches))
        results = [tracker.track(f, t) for f, t in zip(frames, path.timestamps)]
        assert all(r.success for r in results)
        poses = np.array([r.cam_from_world for r in results])
        errors[patches] = np.median(np.linalg.norm(camera_centres(poses) - camera_centres(path.cam_from_world),
                                                   axis=1))
        refined = [r.patch_inliers for r in results]
        if patches:
            assert min(refined) >= 20 and "patches" in results[-1].timings
        else:
            assert max(refined) == 0
    assert errors["sift"] < 0.7 * errors[None], errors
