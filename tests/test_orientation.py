"""Gradient-orientation templates (LINE-2D): quantisation, spreading, responses and scores
against brute force, and shape retrieval of a texture-less object's rotation."""

from __future__ import annotations

import numpy as np
import pytest

from pylocalize.objects import orientation as ori

cv2 = pytest.importorskip("cv2")


def half_plane(angle_deg: float, size: int = 64, channel: int = 1) -> tuple:
    """An anti-aliased step edge through the image centre whose intensity grows along the
    direction ``angle_deg`` (image x right, y down), in one colour channel only; and each
    pixel's signed distance to the edge."""
    a = np.radians(angle_deg)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    distance = (xs - size / 2) * np.cos(a) + (ys - size / 2) * np.sin(a)
    image = np.full((size, size, 3), 90, np.uint8)
    image[..., channel] = np.rint(60 + 140 * np.clip(0.5 + distance, 0, 1)).astype(np.uint8)
    return image, distance


@pytest.mark.parametrize("channel", [0, 2])
def test_quantized_orientations_of_known_edges(channel):
    """An edge at a bin's central angle gives that bin on every pixel that keeps one (the
    gradient of the one channel that changes wins), whichever side is brighter."""
    for b in range(ori.NUM_BINS):
        for flip in (0.0, 180.0):
            image, distance = half_plane((b + 0.5) * 180.0 / ori.NUM_BINS + flip, channel=channel)
            bins, magnitude = ori.quantized_orientations(image)
            kept = bins != ori.NO_ORIENTATION
            border = np.zeros_like(kept)
            border[3:-3, 3:-3] = True
            assert (kept & border & (np.abs(distance) < 1.0)).sum() >= 40, (b, flip)
            assert set(np.unique(bins[kept & border])) == {b}, (b, flip)
            assert not kept[np.abs(distance) > 4].any()  # flat regions have no orientation
    flat = np.full((32, 32, 3), 128, np.uint8)
    assert (ori.quantized_orientations(flat)[0] == ori.NO_ORIENTATION).all()
    image, _ = half_plane(30.0)
    masked, _ = ori.quantized_orientations(image, mask=np.zeros(image.shape[:2], bool))
    assert (masked == ori.NO_ORIENTATION).all()  # outside the mask nothing votes
    with pytest.raises(ValueError, match="uint8"):
        ori.quantized_orientations(image.astype(np.float32))
    with pytest.raises(ValueError, match="mask must be"):
        ori.quantized_orientations(image, mask=np.ones((3, 3), bool))


@pytest.mark.parametrize("T", [1, 2, 3, 4, 5])
def test_spread_matches_brute_force(T):
    rng = np.random.default_rng(T)
    bins = np.where(rng.random((23, 31)) < 0.1, rng.integers(0, ori.NUM_BINS, (23, 31)),
                    ori.NO_ORIENTATION).astype(np.uint8)
    expected = np.zeros(bins.shape, np.uint8)
    for y in range(bins.shape[0]):
        for x in range(bins.shape[1]):
            for dy in range(-(T // 2), T - T // 2):
                for dx in range(-(T // 2), T - T // 2):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < bins.shape[0] and 0 <= xx < bins.shape[1] and bins[yy, xx] != ori.NO_ORIENTATION:
                        expected[y, x] |= 1 << int(bins[yy, xx])
    np.testing.assert_array_equal(ori.spread(bins, T), expected)


def test_responses_and_scores_match_brute_force():
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 256, (19, 25)).astype(np.uint8)
    responses = ori.response_maps(bits)
    for o in range(ori.NUM_BINS):
        for y, x in [(0, 0), (5, 7), (18, 24)]:
            cosines = [abs(np.cos((o - b) * np.pi / ori.NUM_BINS)) for b in range(8) if bits[y, x] >> b & 1]
            assert responses[o, y, x] == round(ori.SIMILARITY_SCALE * max(cosines, default=0.0))
    xy = rng.integers(0, 25, (6, 10, 2))
    xy[..., 1] %= 19
    bins = rng.integers(0, ori.NUM_BINS, (6, 10)).astype(np.uint8)
    bins[0, 7:] = ori.NO_ORIENTATION  # unused slots
    templates = ori.OrientationTemplates(xy, bins)
    offsets, scales = ori.search_offsets(2, 2), (0.8, 1.0, 1.25)
    scores, best_offsets, best_scales = ori.score_templates(responses, templates, 12.0, offsets, scales)
    for t in range(6):
        valid = bins[t] != ori.NO_ORIENTATION
        best = -1.0
        for scale in scales:
            for dx, dy in offsets:
                total = 0
                for (x, y), o in zip(xy[t][valid], bins[t][valid]):
                    px, py = int(np.rint((x - 12.0) * scale + 12.0)) + dx, int(np.rint((y - 12.0) * scale + 12.0)) + dy
                    if 0 <= px < 25 and 0 <= py < 19:
                        total += int(responses[o, py, px])
                best = max(best, total / (valid.sum() * ori.SIMILARITY_SCALE))
        assert scores[t] == pytest.approx(best, abs=1e-6)
    # the best offset and scale reported give the best score
    again, _, _ = ori.score_templates(responses, templates, 12.0, best_offsets[2:3], (float(best_scales[2]),),
                                      subset=np.array([2]))
    assert again[0] == pytest.approx(scores[2], abs=1e-6)


def test_query_responses_from_the_mask_box_equal_the_whole_crop():
    """Quantising only the mask's box (plus the filters' reach) changes nothing."""
    rng = np.random.default_rng(6)
    crop = cv2.GaussianBlur(rng.integers(0, 256, (120, 130, 3), dtype=np.uint8), (0, 0), 2)
    for y0, x0 in [(30, 40), (0, 0), (70, 90)]:  # inside, and touching the crop's edges
        mask = np.zeros((120, 130), bool)
        mask[y0:y0 + 50, x0:x0 + 40] = True
        whole, _ = ori.quantized_orientations(crop, min_magnitude=5.0, mask=mask)
        np.testing.assert_array_equal(ori.query_responses(crop, mask, 4, 5.0),
                                      ori.response_maps(ori.spread(whole, 4)))


def test_spread_points_cover_the_shape():
    """Points picked on a circle's contour spread around it, not bunched at the strongest."""
    angles = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    xy = np.rint(np.stack([100 + 80 * np.cos(angles), 100 + 80 * np.sin(angles)], 1)).astype(int)
    strength = np.linspace(1.0, 2.0, 400)  # the last quarter is the strongest
    chosen = ori.spread_points(xy, strength, 16)
    assert len(chosen) == 16 and len(set(chosen.tolist())) == 16
    picked = np.sort(angles[chosen])
    assert np.diff(np.r_[picked, picked[0] + 2 * np.pi]).max() < 2 * np.pi / 16 * 2.5


def lumpy_object():
    """A texture-less object of three plain-coloured boxes (an L with a stub across it)
    without symmetry, so its shape alone fixes its rotation."""
    from pylocalize.render import Mesh

    def box(lo, hi):
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])],
                           np.float32)
        quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
        return corners, np.array([[q[0], q[1], q[2]] for q in quads] + [[q[0], q[2], q[3]] for q in quads])

    parts = [box((-60, -20, -20), (60, 20, 20)), box((30, 20, -20), (60, 90, 20)), box((-60, -20, 20), (-25, 15, 90))]
    vertices = np.concatenate([p[0] for p in parts])
    faces = np.concatenate([p[1] + 8 * i for i, p in enumerate(parts)]).astype(np.int32)
    colors = np.repeat(np.array([[0.7, 0.7, 0.7], [0.5, 0.6, 0.7], [0.8, 0.6, 0.4]], np.float32), 8, axis=0)
    return Mesh(vertices=vertices, faces=faces, colors=colors)


@pytest.fixture(scope="module")
def lumpy_representation():
    from pylocalize.objects import onboard

    mesh = lumpy_object()
    return mesh, onboard(mesh, num_views=24, num_inplane=12, size=168, num_words=64, pca_dim=16, supersample=1)


def test_orientation_templates_find_a_texture_less_rotation(lumpy_representation):
    """Rendered at template views turned in-plane by a third of the template spacing, over
    clutter, the best of the view's in-plane templates by shape is the nearest (10 degrees
    off; the next is 20 degrees off), and over all templates the nearest ranks high (a
    silhouette seen from the opposite side is the mirror image, so a flat view's twin may
    tie with it)."""
    from pylocalize.localization import pose_error
    from pylocalize.render import Renderer

    mesh, rep = lumpy_representation
    rng = np.random.default_rng(0)
    K = np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])
    ranks = []
    for template in rng.choice(len(rep.template_poses), 8, replace=False):
        a = np.radians(10.0)
        roll = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
        pose = roll @ rep.template_poses[template]
        out = Renderer(640, 480, K, supersample=3).render(mesh, pose, outputs=("rgb", "mask"))
        clutter = cv2.resize(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), (640, 480),
                             interpolation=cv2.INTER_NEAREST)
        image = np.where(out.mask[0][..., None], out.rgb[0], clutter)
        ys, xs = np.nonzero(out.mask[0])
        query = rep.crop_query(image, K, (xs.min(), ys.min(), xs.max(), ys.max()), out.mask[0],
                               rep.default_extractor())
        scores = rep.match_shapes(query).scores
        view = np.arange(12) + template // 12 * 12  # the 12 in-plane rotations of the view
        some = rep.match_shapes(query, view)  # scoring a shortlist alone gives its scores
        np.testing.assert_array_equal(some.scores[view], scores[view])
        assert (np.delete(some.scores, view) == -1).all()
        best = int(view[np.argmax(scores[view])])
        assert pose_error(rep.template_poses[best], pose)[1] < 15, (template, best)
        ranks.append(int((scores > scores[template]).sum()))
    assert np.median(ranks) <= 3 and max(ranks) < 10, ranks  # of 288 templates


def test_shape_retrieval_through_estimate_save_and_load(tmp_path, lumpy_representation):
    """estimate(retrieval=...) on cluttered frames of the texture-less object: re-ranking by
    shape retrieves a template near the true rotation more often than bags of words of
    patch descriptors alone. The orientation features survive save and load; a file
    without them loads, and asks for onboarding again for shape retrieval."""
    from pylocalize import _core
    from pylocalize.geometry import look_at
    from pylocalize.localization import pose_error
    from pylocalize.objects import ObjectRepresentation
    from pylocalize.render import Renderer

    mesh, rep = lumpy_representation
    rep.save(tmp_path / "lumpy.pyloc")
    loaded = ObjectRepresentation.load(tmp_path / "lumpy.pyloc")
    np.testing.assert_array_equal(loaded.orientation.xy, rep.orientation.xy)
    np.testing.assert_array_equal(loaded.orientation.bins, rep.orientation.bins)
    assert (rep.orientation.counts == 96).all()
    rng = np.random.default_rng(4)
    K = np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])
    near = {"bow": 0, "bow+line2d": 0}
    for _ in range(10):
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        pose = look_at(mesh.center + d * rng.uniform(2.5, 3.5) * mesh.extent, mesh.center, up=rng.normal(size=3))
        pose[:, 3] += [rng.uniform(-40, 40), rng.uniform(-30, 30), 0]
        out = Renderer(640, 480, K, supersample=3).render(mesh, pose, outputs=("rgb", "mask"))
        clutter = cv2.resize(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), (640, 480),
                             interpolation=cv2.INTER_NEAREST)
        image = np.where(out.mask[0][..., None], out.rgb[0], clutter)
        for retrieval in near:
            result = loaded.estimate(image, K, mask=out.mask[0], retrieval=retrieval, refine=False)
            near[retrieval] += min((pose_error(rep.template_poses[t], pose)[1] for t in result.templates),
                                   default=180.0) < 30
    assert near["bow+line2d"] >= 6 and near["bow+line2d"] > near["bow"], near
    assert loaded.estimate(image, K, mask=out.mask[0], retrieval="line2d").templates
    # "union": the re-ranked bag-of-words and shape shortlists in turn, each template once
    import itertools

    ranked = {r: loaded.estimate(image, K, mask=out.mask[0], retrieval=r, num_templates=8, refine=False).templates
              for r in ("bow+line2d", "line2d", "union")}
    in_turn = [t for pair in itertools.zip_longest(ranked["bow+line2d"], ranked["line2d"]) for t in pair
               if t is not None]
    assert ranked["union"] == list(dict.fromkeys(in_turn))[:8] and len(ranked["union"]) == 8
    assert set(ranked["union"]) - set(ranked["bow+line2d"])  # the shape shortlist brought its own
    with pytest.raises(ValueError, match="retrieval must be one of"):
        loaded.estimate(image, K, mask=out.mask[0], retrieval="shape")
    # a file written before orientation features: the same sections less theirs
    _, _, meta, sections = _core.read_container(str(tmp_path / "lumpy.pyloc"))
    del sections["orientation_bins"], sections["orientation_xy_int16"]
    _core.write_container(str(tmp_path / "old.pyloc"), "ObjectRepresentation", meta, sections)
    old = ObjectRepresentation.load(tmp_path / "old.pyloc")
    assert old.orientation is None and old.estimate(image, K, mask=out.mask[0]).templates
    with pytest.raises(ValueError, match="onboard the object again"):
        old.estimate(image, K, mask=out.mask[0], retrieval="bow+line2d")
