"""The generated street-grid city (pylocalize.datasets.city): determinism, projections,
occlusion against a brute-force segment sampler, SIFT-like descriptors, the repeated-
structure hard case, localization of simulated queries with Map's stages, and the
real-SIFT distractor mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pylocalize.datasets.city import (
    CityOptions,
    generate_city,
    iter_pool_distractors,
    iter_sift_distractors,
    real_sift_distractors,
    sift_descriptor_pool,
)
from pylocalize.features import extract_sift
from pylocalize.geometry import rotation_error_deg

LUND = Path(__file__).resolve().parents[2] / "shared" / "data" / "lund" / "images"

# a small city: 2 x 2 blocks, about 150 database images of at most 600 features
SMALL = dict(blocks_x=2, blocks_y=2, block_size=30.0, street_width=10.0, building_height_range=(6.0, 20.0),
             landmark_density=3.0, cameras_per_metre=0.3, max_features=600, clutter_per_image=80.0,
             image_size=(640, 480), focal=500.0, max_range=50.0, num_prototypes=8, prototypes_per_building=3, seed=3)


@pytest.fixture(scope="module")
def city():
    return generate_city(**SMALL)


def _centre(pose):
    return -pose[:, :3].T @ pose[:, 3]


def test_small_city_size(city):
    assert 100 <= len(city) <= 200
    assert len(city.buildings) == 4 and len(city.landmarks) > 1000
    # landmarks lie on their facades: on the box side along the facade's axis, inside its extent
    box = city.buildings[city.facade_building[city.landmark_facade]]
    assert (city.landmarks >= box[:, 0] - 1e-9).all() and (city.landmarks <= box[:, 1] + 1e-9).all()
    axis = city.facade_axis[city.landmark_facade]
    side = np.where(city.facade_normal[city.landmark_facade, axis] > 0, box[np.arange(len(box)), 1, axis],
                    box[np.arange(len(box)), 0, axis])
    np.testing.assert_array_equal(city.landmarks[np.arange(len(axis)), axis], side)
    # cameras stand in the streets, outside every building, at the heights asked for
    centres = np.stack([_centre(p) for p in city.cam_from_world])
    for lo, hi in city.buildings:
        assert not ((centres > lo) & (centres < hi)).all(1).any()
    assert (centres[:, 2] >= 1.4).all() and (centres[:, 2] <= 2.2).all()
    # rotations are proper and world z (up) points up in the image (negative image y)
    R = city.cam_from_world[:, :, :3]
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
    assert (R[:, 1, 2] < -0.9).all()


def test_deterministic(city):
    again = generate_city(**SMALL)
    np.testing.assert_array_equal(city.landmarks, again.landmarks)
    np.testing.assert_array_equal(city.base_descriptors, again.base_descriptors)
    np.testing.assert_array_equal(city.cam_from_world, again.cam_from_world)
    for i in (0, 17, len(city) - 1):
        a, b = city.image(i), again.image(i)
        for x, y in zip(a[1:], b[1:]):
            np.testing.assert_array_equal(x, y)
    # streaming gives the images one by one, the same as asking for each
    streamed = next(iter(again.iter_images()))
    np.testing.assert_array_equal(streamed.descriptors, city.image(0).descriptors)
    threaded = list(again.iter_images(workers=2))
    assert [im.name for im in threaded] == city.names
    for i in (0, 5, len(city) - 1):
        np.testing.assert_array_equal(threaded[i].keypoints, city.image(i).keypoints)
        np.testing.assert_array_equal(threaded[i].point_ids, city.image(i).point_ids)
    q1, q2 = city.queries(3, seed=7), again.queries(3, seed=7)
    np.testing.assert_array_equal(q1.cam_from_world, q2.cam_from_world)
    np.testing.assert_array_equal(q1.descriptors[2], q2.descriptors[2])
    assert not np.array_equal(city.queries(3, seed=8).cam_from_world, q1.cam_from_world)
    # queries observe min_landmarks landmarks at least (here the unfiltered draw has fewer)
    counts = [len(city.visible_landmarks(p).ids) for p in city.queries(30, seed=9, min_landmarks=0).cam_from_world]
    assert min(counts) < 100
    assert all(len(city.visible_landmarks(p).ids) >= 100
               for p in city.queries(30, seed=9, min_landmarks=100).cam_from_world)
    other = generate_city(**{**SMALL, "seed": 4})
    assert not np.array_equal(other.landmarks[:100], city.landmarks[:100])
    assert not np.array_equal(other.image(0).keypoints[:10], city.image(0).keypoints[:10])


def test_observations_project_to_their_keypoints():
    exact = generate_city(**{**SMALL, "keypoint_noise_px": 0.0})
    noisy = generate_city(**{**SMALL, "keypoint_noise_px": 0.5})
    camera = exact.camera
    residuals = []
    for i in range(0, len(exact), 15):
        for city, errors in ((exact, None), (noisy, residuals)):
            image = city.image(i)
            assert image.keypoints.dtype == np.float32 and image.point_ids.dtype == np.int64
            seen = image.point_ids >= 0
            assert seen.sum() > 20 and (~seen).sum() > 20
            pose = city.cam_from_world[i]
            points_cam = city.landmarks[image.point_ids[seen]] @ pose[:, :3].T + pose[:, 3]
            assert (points_cam[:, 2] > 0).all()
            assert (np.linalg.norm(points_cam, axis=1) <= SMALL["max_range"]).all()
            projected = camera.project(points_cam)  # pycolmap's projection, not the generator's
            if errors is None:
                np.testing.assert_allclose(image.keypoints[seen], projected, atol=2e-3)
            else:
                errors.append(image.keypoints[seen] - projected)
            assert (image.keypoints >= -0.5).all() and (image.keypoints < (camera.width - 0.5,
                                                                           camera.height - 0.5)).all()
    residuals = np.concatenate(residuals)
    assert 0.45 < residuals.std() < 0.55 and np.abs(residuals).max() < 0.5 * 6


def _blocked_by_sampling(centre, points, buildings, own, samples=1000):
    """Brute force: whether a point sampled on the open segment centre -> point lies strictly
    inside a building other than the point's own."""
    t = np.linspace(0, 1, samples + 2)[1:-1]
    blocked = np.zeros(len(points), bool)
    for b, (lo, hi) in enumerate(buildings):
        for chunk in np.array_split(np.arange(len(points)), max(1, len(points) // 200)):
            along = centre + t[None, :, None] * (points[chunk, None, :] - centre)
            inside = ((along > lo) & (along < hi)).all(2).any(1)
            blocked[chunk] |= inside & (own[chunk] != b)
    return blocked


def test_occlusion_against_brute_force(city):
    camera = city.camera
    size = np.array([camera.width - 0.5, camera.height - 0.5])
    total_hidden = 0
    # database views and queries (turned up to 30 degrees off the street axes: views past corners)
    poses = np.concatenate([city.cam_from_world[3::40], city.queries(4, seed=1).cam_from_world])
    for pose in poses:
        centre = _centre(pose)
        # every landmark in front, in range, in the image, facing the camera and detectable
        cam = city.landmarks @ pose[:, :3].T + pose[:, 3]
        ahead = np.flatnonzero(cam[:, 2] > 0.3)
        pixels = camera.project(cam[ahead])
        distance = np.linalg.norm(city.landmarks[ahead] - centre, axis=1)
        normals = city.facade_normal[city.landmark_facade[ahead]]
        facing = np.einsum("ij,ij->i", centre - city.landmarks[ahead], normals) > 0
        big = SMALL["focal"] * city.landmark_size[ahead] / cam[ahead, 2] >= CityOptions.min_feature_px
        candidates = ahead[((pixels >= -0.5) & (pixels < size)).all(1) & (distance <= SMALL["max_range"])
                           & facing & big]
        own = city.facade_building[city.landmark_facade[candidates]]
        hidden = _blocked_by_sampling(centre, city.landmarks[candidates], city.buildings, own)
        total_hidden += hidden.sum()
        observed = city.visible_landmarks(pose).ids
        # no observed landmark is hidden; every visible one is observed (sampling can miss a
        # segment that only grazes a corner: a few at most)
        assert not np.isin(observed, candidates[hidden]).any()
        assert np.isin(observed, candidates).all()
        missed = np.setdiff1d(candidates[~hidden], observed)
        assert len(missed) <= 0.01 * len(candidates) + 1
        # the features of the image are these landmarks (minus the max_features budget)
        features = city.observe(pose, np.random.default_rng(0))[2]
        assert np.isin(features[features >= 0], observed).all()
    assert total_hidden > 100  # the views chosen do look past buildings


def test_descriptors_are_sift_like(city):
    image = city.image(40)
    d = image.descriptors
    assert d.dtype == np.uint8 and d.shape == (len(image.keypoints), 128) and d.flags.c_contiguous
    norms = np.linalg.norm(d.astype(np.float64), axis=1)
    assert (np.abs(norms - 512) < 8).all()
    base_norms = np.linalg.norm(city.base_descriptors.astype(np.float64), axis=1)
    assert (np.abs(base_norms - 512) < 8).all()
    # unrelated descriptors are far apart, as RootSIFT's are (a few hundred)
    rng = np.random.default_rng(0)
    a, b = city.base_descriptors[rng.choice(len(city.landmarks), (2, 500))]
    unrelated = np.linalg.norm(a.astype(float) - b, axis=1)
    assert 300 < np.median(unrelated) < 550


def test_descriptor_noise_grows_with_viewing_angle_and_distance(city):
    near_frontal, far_oblique = [], []
    for i in range(0, len(city), 10):
        pose = city.cam_from_world[i]
        visible = city.visible_landmarks(pose)
        image = city.image(i)
        seen = image.point_ids >= 0
        ids = image.point_ids[seen]
        where = np.searchsorted(visible.ids, ids)
        cosine, distance = visible.cosine[where], visible.distance[where]
        error = np.linalg.norm(image.descriptors[seen].astype(float) - city.base_descriptors[ids], axis=1)
        near_frontal.append(error[(cosine > 0.9) & (distance < 15)])
        far_oblique.append(error[(cosine < 0.5) & (distance > 25)])
    near_frontal, far_oblique = np.concatenate(near_frontal), np.concatenate(far_oblique)
    assert len(near_frontal) > 100 and len(far_oblique) > 100
    assert np.median(far_oblique) > 1.5 * np.median(near_frontal)


def test_repeated_prototypes_make_hard_matches(city):
    """The base descriptor of a repeated landmark is often nearer to another building's
    landmark than its own observations are to it (viewpoint noise alone); a unique
    landmark's never is."""
    base = city.base_descriptors.astype(np.float32)
    building = city.facade_building[city.landmark_facade]
    seen_ids, noise = [], []
    for i in range(0, len(city), 12):
        image = city.image(i)
        seen = image.point_ids >= 0
        seen_ids.append(image.point_ids[seen])
        noise.append(np.linalg.norm(image.descriptors[seen].astype(np.float32) - base[image.point_ids[seen]], axis=1))
    ids, noise = np.concatenate(seen_ids), np.concatenate(noise)
    # brute force: each observed landmark's nearest landmark on another building
    d2 = (base[ids] ** 2).sum(1)[:, None] - 2 * base[ids] @ base.T + (base ** 2).sum(1)[None]
    d2[building[ids][:, None] == building[None, :]] = np.inf
    nearest_elsewhere = np.sqrt(np.maximum(d2.min(1), 0))
    repeated = city.landmark_prototype[ids] >= 0
    assert repeated.sum() > 200 and (~repeated).sum() > 200
    hard = nearest_elsewhere < noise
    assert hard[repeated].mean() > 0.3
    assert hard[~repeated].mean() < 0.01
    # the prototypes behind the hard cases are shared by several buildings
    shared = [len(np.unique(building[city.landmark_prototype == p])) for p in np.unique(city.landmark_prototype)
              if p >= 0]
    assert max(shared) >= 2


def test_map_from_city_localizes_simulated_queries(city):
    from pylocalize.localization import Map

    database = city.database()
    assert len(database) == len(city) and database.num_features > 50_000
    m = Map(database.names, database.cameras, database.cam_from_world, database.keypoints, database.descriptors,
            database.point_ids, city.landmarks)
    queries = city.queries(20, seed=11)
    good = 0
    for i in range(len(queries)):
        keypoints, descriptors = queries.keypoints[i], queries.descriptors[i]
        matches = m.match_2d3d(descriptors, m.retrieve(descriptors, 10))
        # every match whose true landmark is known: most point to that landmark
        truth = queries.point_ids[i][matches.query_ids]
        if len(matches.query_ids) >= 12:
            assert (truth == matches.point3D_ids).mean() > 0.5
        # the whole pipeline from features: the same stages, composed
        result = m.localize_features(keypoints, descriptors, queries.camera, covariance=False)
        np.testing.assert_array_equal(result.point3D_ids if result.num_matches else matches.point3D_ids,
                                      matches.point3D_ids)
        assert list(result.timings) == ["retrieval", "matching", "pose"][:len(result.timings)]
        if not result.success:
            continue
        true = queries.cam_from_world[i]
        dt = np.linalg.norm(_centre(result.cam_from_world) - _centre(true))
        good += dt < 0.25 and rotation_error_deg(result.cam_from_world[:, :3], true[:, :3]) < 2.0
    assert good >= 17, f"{good} of 20 queries localized within (0.25 m, 2 deg)"


def test_bad_options_say_the_fix():
    with pytest.raises(ValueError, match="street_width"):
        CityOptions(street_width=2.0)
    with pytest.raises(ValueError, match="camera_height_range"):
        CityOptions(camera_height_range=(1.0, 9.0))
    with pytest.raises(ValueError, match="seed"):
        CityOptions(seed=-1)
    with pytest.raises(ValueError, match="repeated_share"):
        CityOptions(repeated_share=1.5)
    with pytest.raises(ValueError, match="unknown city options"):
        generate_city(blocks=3)
    with pytest.raises(ValueError, match="seed"):
        generate_city(**SMALL).queries(2, seed=-3)
    with pytest.raises(ValueError, match="min_landmarks"):
        generate_city(**SMALL).queries(2, min_landmarks=100_000)
    with pytest.raises(ValueError, match="3x4"):
        generate_city(**SMALL).observe(np.eye(3), np.random.default_rng(0))


@pytest.mark.skipif(not LUND.is_dir(), reason="needs ../shared/data")
def test_real_sift_distractors():
    sources = sorted(LUND.glob("*.jpg"))[:3]
    pool = sift_descriptor_pool(sources, max_features=1000)
    assert sift_descriptor_pool(sources, max_features=1000) is pool  # extracted once
    reference = np.concatenate([extract_sift(p, 1000)[1] for p in sources])
    np.testing.assert_array_equal(pool, reference)
    distractors = real_sift_distractors(30, 400, sources, seed=2, max_features=1000)
    assert len(distractors) == 30 and distractors.cam_from_world is None
    pool_rows = {row.tobytes() for row in pool}
    for k, d, ids in zip(distractors.keypoints, distractors.descriptors, distractors.point_ids):
        assert d.shape == (400, 128) and d.dtype == np.uint8 and k.shape == (400, 2) and k.dtype == np.float32
        assert all(row.tobytes() in pool_rows for row in d)
        assert (ids == -1).all()
        assert (k >= -0.5).all() and (k < (1023.5, 767.5)).all()
    # images differ from each other; the same seed gives the same images
    assert not np.array_equal(distractors.descriptors[0], distractors.descriptors[1])
    again = real_sift_distractors(30, 400, sources, seed=2, max_features=1000)
    np.testing.assert_array_equal(again.descriptors[29], distractors.descriptors[29])
    streamed = list(iter_sift_distractors(30, 400, sources, seed=2, max_features=1000))
    np.testing.assert_array_equal(streamed[17].keypoints, distractors.keypoints[17])
    with pytest.raises(ValueError, match="fewer features"):
        real_sift_distractors(1, len(pool) + 1, sources, max_features=1000)
    # a pool at hand (the same features, extracted by the caller) gives the same images
    from_pool = list(iter_pool_distractors(30, 400, reference, seed=2))
    for a, b in zip(from_pool, streamed):
        assert a.name == b.name
        np.testing.assert_array_equal(a.descriptors, b.descriptors)
        np.testing.assert_array_equal(a.keypoints, b.keypoints)


def test_pool_distractors_errors():
    pool = np.random.default_rng(0).integers(0, 256, (50, 128), dtype=np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        iter_pool_distractors(2, 10, pool.astype(np.float32))
    with pytest.raises(ValueError, match="fewer features"):
        iter_pool_distractors(2, 51, pool)
    with pytest.raises(ValueError, match="n_images"):
        iter_pool_distractors(-1, 10, pool)
    images = list(iter_pool_distractors(3, 50, pool, seed=1))
    # every image takes each pool row once (drawn without replacement)
    assert all(len({row.tobytes() for row in im.descriptors}) == 50 for im in images)
