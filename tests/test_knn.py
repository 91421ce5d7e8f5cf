"""k-means and nearest-centroid assignment (pylocalize.kmeans, pylocalize.assign) against numpy."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import pylocalize


def test_kmeans_and_assign(simd_level):
    rng = np.random.default_rng(10)
    centers = rng.normal(0, 20, (8, 16))
    x = (centers[rng.integers(0, 8, 4000)] + rng.normal(0, 1, (4000, 16))).astype(np.float32)
    c, labels = pylocalize.kmeans(x, 8, iterations=15, seed=3)
    assert c.shape == (8, 16) and labels.shape == (4000,)
    # every true centre is recovered by some centroid
    d = np.linalg.norm(centers[:, None] - c[None], axis=2)
    assert d.min(1).max() < 1.0
    ref = np.argmin(((x[:, None] - c[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(labels, ref)
    lab3, dist3 = pylocalize.assign(x[:50], c, m=3)
    full = ((x[:50, None].astype(np.float64) - c[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(lab3, np.argsort(full, axis=1, kind="stable")[:, :3])
    np.testing.assert_allclose(dist3, np.sort(full, axis=1)[:, :3], rtol=1e-3, atol=1e-2)
    again, _ = pylocalize.kmeans(x, 8, iterations=15, seed=3)
    np.testing.assert_array_equal(again, c)  # deterministic for a seed
    with pytest.raises(ValueError, match="at least k"):
        pylocalize.kmeans(x[:5], 8)


def test_assign_many_centroids_matches_brute_force_with_ties(simd_level):
    """Centroids spanning several tiles of the kernel (an uneven last one), duplicated so that
    distances tie exactly (integer data): the m nearest, ties to the smaller index, as numpy
    finds them, as float32 and as uint8; as when matching a query's features against a map's."""
    rng = np.random.default_rng(12)
    base = rng.integers(0, 40, (1100, 128)).astype(np.float32)
    c = np.concatenate([base, base[::-1]])  # 2,200 centroids, every one twice
    x = rng.integers(0, 40, (130, 128)).astype(np.float32)
    full = ((x[:, None].astype(np.float64) - c[None]) ** 2).sum(-1)
    for m in (1, 2, 7):
        labels, dist = pylocalize.assign(x, c, m=m)
        labels, dist = labels.reshape(len(x), m), dist.reshape(len(x), m)
        np.testing.assert_array_equal(labels, np.argsort(full, axis=1, kind="stable")[:, :m])
        np.testing.assert_array_equal(dist, np.sort(full, axis=1)[:, :m].astype(np.float32))
        # descriptors against descriptors: uint8 gives exactly the float result
        labels8, dist8 = pylocalize.assign(x.astype(np.uint8), c.astype(np.uint8), m=m)
        np.testing.assert_array_equal(labels8.reshape(len(x), m), labels)
        np.testing.assert_array_equal(dist8.reshape(len(x), m), dist)
    with pytest.raises(ValueError, match="x must have dtype uint8"):
        pylocalize.assign(x, c.astype(np.uint8))


def test_kmeans_n_iter_is_a_deprecated_alias():
    rng = np.random.default_rng(11)
    x = rng.normal(0, 10, (500, 8)).astype(np.float32)
    expected = pylocalize.kmeans(x, 5, iterations=3, seed=1)
    with pytest.warns(DeprecationWarning, match="iterations"):
        got = pylocalize.kmeans(x, 5, n_iter=3, seed=1)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(pylocalize.kmeans(x, 5, 3, seed=1)[0], expected[0])  # positional: no warning
    with pytest.raises(TypeError, match="both"):
        pylocalize.kmeans(x, 5, iterations=4, n_iter=3)


def _clustered(rng, n, modes, dim):
    centres = rng.uniform(0, 120, (modes, dim))
    return (centres[rng.integers(0, modes, n)] + rng.normal(0, 12, (n, dim))).astype(np.float32)


def _brute(x, c, m):
    d2 = ((x[:, None, :].astype(np.float64) - c[None].astype(np.float64)) ** 2).sum(-1)
    order = np.argsort(d2, axis=1, kind="stable")[:, :m]
    return order, np.take_along_axis(d2, order, 1)


def test_coarse_quantizer_flat_is_exact():
    from pylocalize.index.knn import CoarseQuantizer

    rng = np.random.default_rng(11)
    c, x = _clustered(rng, 500, 60, 16), _clustered(rng, 300, 60, 16)
    q = CoarseQuantizer(c)
    assert not q.two_level and len(q) == 500
    labels, dist = q.assign(x, 3)
    truth, truth_d = _brute(x, c, 3)
    np.testing.assert_array_equal(labels[:, 0], truth[:, 0])
    np.testing.assert_allclose(dist, truth_d, rtol=1e-4, atol=1e-2)


def test_coarse_quantizer_two_level_against_brute_force():
    """Two-level: every answer's distance is the true distance to that centroid, answers are
    best first, each centroid finds itself, most rows find their true nearest, and probing
    every group makes it exact."""
    from pylocalize.index.knn import CoarseQuantizer

    rng = np.random.default_rng(12)
    c, x = _clustered(rng, 1500, 150, 24), _clustered(rng, 2000, 150, 24)
    q = CoarseQuantizer(c)
    assert q.two_level
    labels, dist = q.assign(x, 4)
    true_d = ((x[:, None, :].astype(np.float64) - c[labels].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_allclose(dist, true_d, rtol=1e-4, atol=1e-2)
    assert np.all(np.diff(dist, axis=1) >= -1e-2)
    truth, _ = _brute(x, c, 1)
    assert np.mean(labels[:, 0] == truth[:, 0]) > 0.8
    np.testing.assert_array_equal(q.assign(c, 1)[0], np.arange(len(c)))
    every = CoarseQuantizer(c, group_probe=10_000)  # all groups probed: the flat answer
    np.testing.assert_array_equal(every.assign(x, 1)[0], truth[:, 0])
    with pytest.raises(ValueError, match="group_probe"):
        CoarseQuantizer(c, group_probe=0)
    with pytest.raises(ValueError, match="m must be"):
        q.assign(x, 0)
