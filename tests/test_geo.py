"""Geo-localization without torch: S2 cells, metrics, gallery retrieval.

References are independent of the code under test: s2sphere (the S2 library's Python port)
for cell ids, containment and recursive splitting; hand-written spherical trigonometry and
published city distances for the metrics; numpy brute force for the kNN.
"""

import subprocess
import sys

import numpy as np
import pytest

s2sphere = pytest.importorskip("s2sphere")

from pylocalize import FormatError  # noqa: E402
from pylocalize.geo import (  # noqa: E402
    CellHierarchy,
    GeoGallery,
    accuracy,
    equal_earth,
    great_circle_km,
    plot_predictions,
    s2_leaf_ids,
)
from pylocalize.geo.cells import s2_parent, s2_range  # noqa: E402
from pylocalize.geo.retrieval import kernel_mode  # noqa: E402


def _s2(lat, lon):
    return s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(float(lat), float(lon)))


def _uniform_sphere(rng, n):
    return np.c_[np.degrees(np.arcsin(rng.uniform(-1, 1, n))), rng.uniform(-180, 180, n)]


def _clustered(rng, n):
    """Photo-like GPS: a few dense 'cities' of different sizes plus a uniform sprinkle."""
    centres = np.array([[48.85, 2.35], [40.71, -74.0], [35.68, 139.69], [-33.87, 151.2], [64.1, -21.9],
                        [0.0, 179.9], [-89.5, 0.0], [89.9, 45.0]])
    sizes = rng.dirichlet(np.ones(len(centres)) * 0.7)
    which = rng.choice(len(centres), int(0.9 * n), p=sizes)
    pts = centres[which] + rng.normal(0, 1, (len(which), 2)) * rng.choice([0.05, 0.5, 3.0], (len(which), 1))
    pts = np.r_[pts, _uniform_sphere(rng, n - len(pts))]
    pts[:, 0] = np.clip(pts[:, 0], -90, 90)
    pts[:, 1] = (pts[:, 1] + 180) % 360 - 180
    return pts


# ---------------------------------------------------------------------------- S2 ids


def test_leaf_ids_equal_s2sphere():
    rng = np.random.default_rng(0)
    special = [[90, 0], [-90, 0], [90, 137], [-90, -45], [0, 180], [0, -180], [12.5, 180], [-12.5, -180],
               [0, 0], [0, 45], [0, 90], [0, -135], [35.26438968275466, 45], [-35.26438968275466, -135],
               [45, 0], [-45, 90], [89.999999, 179.999999], [-89.999999, -179.999999], [1e-12, -1e-12]]
    ll = np.r_[_uniform_sphere(rng, 3000), np.array(special, float),
               np.c_[rng.uniform(-90, 90, 200), rng.choice([-180.0, 180.0, 179.9999, -179.9999], 200)]]
    ours = s2_leaf_ids(ll)
    ref = np.array([_s2(a, b).id() for a, b in ll], np.uint64)
    np.testing.assert_array_equal(ours, ref)
    for level in (0, 1, 7, 19, 29, 30):
        np.testing.assert_array_equal(s2_parent(ours[:50], level),
                                      np.array([_s2(a, b).parent(level).id() for a, b in ll[:50]], np.uint64))
    lo, hi = s2_range(s2_parent(ours[:20], 9), 9)
    for i, (a, b) in enumerate(ll[:20]):
        cell = _s2(a, b).parent(9)
        assert int(lo[i]) == cell.range_min().id() and int(hi[i]) == cell.range_max().id()


@pytest.mark.parametrize("bad,match", [
    ([[np.nan, 0.0]], "NaN"), ([[0.0, np.inf]], "NaN or Inf"), ([[91.0, 0.0]], "latitude must be in"),
    ([[0.0, 180.5]], "longitude"), ([[0.0, 1.0, 2.0]], r"\(n, 2\)"), (np.zeros((2, 2, 2)), r"\(n, 2\)"),
    ([["a", "b"]], "numeric"),
])
def test_bad_coordinates_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        s2_leaf_ids(np.array(bad))
    with pytest.raises(ValueError, match=match):
        great_circle_km(np.array(bad), np.zeros((1, 2)))
    with pytest.raises(ValueError, match=match):
        CellHierarchy.from_latlon(np.array(bad))


# ---------------------------------------------------------------------------- hierarchy


def _reference_partition(ll, max_images, min_images):
    """Recursive splitting with s2sphere objects: sets of (cell id, count) per granularity."""
    leaves = [_s2(a, b) for a, b in ll]
    faces = [s2sphere.CellId.from_face_pos_level(f, 0, 0) for f in range(6)]
    roots = [(face, [m for m in range(len(ll)) if face.contains(leaves[m])]) for face in faces]
    out = []
    for hi, lo in zip(max_images, min_images):
        cells = []

        def split(cell, members):
            if len(members) <= hi or cell.level() == 30:
                cells.append((cell, members))
                return
            for child in cell.children():
                inside = [m for m in members if child.contains(leaves[m])]
                if inside:
                    split(child, inside)

        for cell, members in roots:
            split(cell, members)
        kept = [(c, m) for c, m in cells if len(m) >= lo]
        out.append({c.id(): len(m) for c, m in kept})
        roots = kept
    return out


def test_hierarchy_equals_recursive_reference():
    rng = np.random.default_rng(1)
    ll = _clustered(rng, 2500)
    h = CellHierarchy.from_latlon(ll, max_images=(600, 150, 40), min_images=(10, 5, 3))
    ref = _reference_partition(ll, (600, 150, 40), (10, 5, 3))
    assert h.num_hierarchies == 3
    for g in range(3):
        assert dict(zip(h.cell_ids[g].tolist(), h.counts[g].tolist())) == ref[g]
    assert h.num_cells[0] < h.num_cells[1] < h.num_cells[2]


def test_cells_cover_points_parents_contain_children_and_centres():
    rng = np.random.default_rng(2)
    ll = _clustered(rng, 20000)
    h = CellHierarchy.from_latlon(ll, max_images=(3000, 800, 200), min_images=(30, 20, 10))
    labels = h.cell_of(ll)
    assert labels.shape == (len(ll), 3) and labels.dtype == np.int64
    for g in range(3):
        # every training point of a kept cell is labelled with it; the rest (-1) lie in cells
        # dropped for having fewer than min_images photos, by design
        assert (labels[:, g] >= 0).sum() == h.counts[g].sum()
        np.testing.assert_array_equal(np.bincount(labels[labels[:, g] >= 0, g], minlength=h.num_cells[g]),
                                      h.counts[g])
        assert h.counts[g].min() >= h.min_images[g]
        # counts above max_images only where the cell can no longer split
        assert np.all((h.counts[g] <= h.max_images[g]) | (h.levels[g] == 30))
        if g:
            # a point without a coarse cell has no finer cell either; finer labels' parents
            # are the coarse labels
            assert np.all(labels[labels[:, g - 1] < 0, g] < 0)
            has = labels[:, g] >= 0
            np.testing.assert_array_equal(h.parents[g][labels[has, g]], labels[has, g - 1])
            for child, parent in zip(h.cell_ids[g], h.cell_ids[g - 1][h.parents[g]]):
                assert s2sphere.CellId(int(parent)).contains(s2sphere.CellId(int(child)))
    assert (labels[:, 0] >= 0).mean() > 0.95
    # mean GPS on the sphere, by brute force over each fine cell's points
    for c in rng.choice(h.num_cells[2], 20, replace=False):
        pts = np.radians(ll[labels[:, 2] == c])
        v = np.c_[np.cos(pts[:, 0]) * np.cos(pts[:, 1]), np.cos(pts[:, 0]) * np.sin(pts[:, 1]), np.sin(pts[:, 0])]
        m = v.sum(0) / np.linalg.norm(v.sum(0))
        want = np.degrees([np.arcsin(m[2]), np.arctan2(m[1], m[0])])
        assert great_circle_km(h.centers[2][c], want)[0] < 1e-6


def test_point_maps_to_exactly_one_cell_per_level():
    rng = np.random.default_rng(3)
    ll = _clustered(rng, 4000)
    h = CellHierarchy.from_latlon(ll, max_images=(800, 200), min_images=5)
    queries = np.r_[_clustered(rng, 300), [[90, 0], [-90, 0], [0, 180], [0, -180]]]
    labels = h.cell_of(queries)
    for q, lab in zip(queries, labels):
        leaf = _s2(*q)
        for g in range(2):
            holders = [i for i, c in enumerate(h.cell_ids[g]) if s2sphere.CellId(int(c)).contains(leaf)]
            assert len(holders) <= 1
            assert lab[g] == (holders[0] if holders else -1)


def test_antimeridian_and_poles_cells():
    # photos straddling the antimeridian and at both poles get cells and sensible centres
    rng = np.random.default_rng(4)
    fiji = np.c_[rng.normal(-17, 0.2, 500), rng.choice([-1, 1], 500) * rng.uniform(179.8, 180, 500)]
    north = np.c_[rng.uniform(89.95, 90, 300), rng.uniform(-180, 180, 300)]
    south = np.c_[rng.uniform(-90, -89.95, 300), rng.uniform(-180, 180, 300)]
    h = CellHierarchy.from_latlon(np.r_[fiji, north, south], max_images=(2000,), min_images=1)
    assert np.all(h.cell_of(np.r_[fiji, north, south])[:, 0] >= 0)
    c = h.centers[0]
    assert great_circle_km(c, np.array([[-17, 180]])).min() < 20  # not the (-17, 0) of a naive mean
    assert c[:, 0].max() > 89.9 and c[:, 0].min() < -89.9


def test_hierarchical_probabilities_hand_computed():
    face0 = s2sphere.CellId.from_face_pos_level(0, 0, 0)
    face1 = s2sphere.CellId.from_face_pos_level(1, 0, 0)
    kids0 = list(face0.children())
    fine = [kids0[0].id(), kids0[2].id(), face1.id()]
    h = CellHierarchy([np.array([face0.id(), face1.id()], np.uint64), np.array(fine, np.uint64)],
                      [np.zeros(2), np.array([1, 1, 0])], [np.array([3, 1]), np.array([2, 1, 1])],
                      [np.zeros((2, 2)), np.zeros((3, 2))], [np.array([-1, -1]), np.array([0, 0, 1])],
                      [4, 2], [1, 1])
    coarse = np.array([[0.7, 0.3], [0.1, 0.9]])
    finer = np.array([[0.5, 0.2, 0.3], [0.6, 0.3, 0.1]])
    out = h.hierarchical_probabilities([coarse, finer])
    np.testing.assert_allclose(out[1], [[0.35, 0.14, 0.09], [0.06, 0.03, 0.09]])
    np.testing.assert_array_equal(h.ancestors(), [[0, 0], [0, 1], [1, 2]])
    with pytest.raises(ValueError, match="one probability array per granularity"):
        h.hierarchical_probabilities([coarse])
    with pytest.raises(ValueError, match=r"must be \(n, 3\)"):
        h.hierarchical_probabilities([coarse, finer[:, :2]])


def test_hierarchy_save_load_and_corrupt(tmp_path):
    rng = np.random.default_rng(5)
    ll = _clustered(rng, 3000)
    h = CellHierarchy.from_latlon(ll, max_images=(500, 100), min_images=4)
    path = tmp_path / "cells.plc"
    h.save(path)
    g = CellHierarchy.load(path)
    for name in ("cell_ids", "levels", "counts", "centers", "parents"):
        for a, b in zip(getattr(h, name), getattr(g, name)):
            np.testing.assert_array_equal(a, b)
    assert g.max_images == [500, 100] and g.min_images == [4, 4]
    np.testing.assert_array_equal(CellHierarchy.load(h.serialize()).cell_of(ll), h.cell_of(ll))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "bad.plc").write_bytes(bytes(data))
    with pytest.raises(FormatError):
        CellHierarchy.load(tmp_path / "bad.plc")
    GeoGallery(rng.normal(size=(3, 4)), ll[:3]).save(tmp_path / "gallery.plc")
    with pytest.raises(FormatError, match="not a GeoCellHierarchy"):
        CellHierarchy.load(tmp_path / "gallery.plc")


def test_hierarchy_argument_checks():
    ll = _clustered(np.random.default_rng(6), 100)
    with pytest.raises(ValueError, match="non-increasing"):
        CellHierarchy.from_latlon(ll, max_images=(10, 50))
    with pytest.raises(ValueError, match="min_images"):
        CellHierarchy.from_latlon(ll, max_images=(10,), min_images=20)
    with pytest.raises(ValueError, match="one value per granularity"):
        CellHierarchy.from_latlon(ll, max_images=(50, 10), min_images=(1, 2, 3))
    with pytest.raises(ValueError, match="at least one"):
        CellHierarchy.from_latlon(np.zeros((0, 2)))


# ---------------------------------------------------------------------------- metrics


def _arccos_km(a, b, r=6371.0088):
    """Great circle by the spherical law of cosines (a different formula from the code's)."""
    (la1, lo1), (la2, lo2) = np.radians(a), np.radians(b)
    c = np.sin(la1) * np.sin(la2) + np.cos(la1) * np.cos(la2) * np.cos(lo2 - lo1)
    return r * np.arccos(np.clip(c, -1, 1))


def test_great_circle_known_city_pairs():
    london, paris = [51.5074, -0.1278], [48.8566, 2.3522]
    nyc, la = [40.7128, -74.0060], [34.0522, -118.2437]
    sydney, tokyo = [-33.8688, 151.2093], [35.6762, 139.6503]
    d = great_circle_km(np.array([london, nyc, sydney]), np.array([paris, la, tokyo]))
    # published great-circle figures: London-Paris 344 km, New York-Los Angeles 3,936 km,
    # Sydney-Tokyo 7,826 km (spherical Earth; within 0.5 % of the ellipsoidal distances)
    np.testing.assert_allclose(d, [344, 3936, 7826], rtol=0.005)
    np.testing.assert_allclose(d, [_arccos_km(london, paris), _arccos_km(nyc, la), _arccos_km(sydney, tokyo)],
                               rtol=1e-9)


def test_great_circle_antimeridian_poles_and_symmetry():
    one_degree = 6371.0088 * np.pi / 180
    d = great_circle_km(np.array([[0, 179.5], [90, 0], [90, 0], [-90, 10], [0, 0], [10, -180]]),
                        np.array([[0, -179.5], [90, 123], [-90, 0], [-89, 10], [0, 0], [10, 180]]))
    np.testing.assert_allclose(d, [one_degree, 0, 180 * one_degree, one_degree, 0, 0], atol=1e-6)
    rng = np.random.default_rng(7)
    a, b = _uniform_sphere(rng, 500), _uniform_sphere(rng, 500)
    np.testing.assert_allclose(great_circle_km(a, b), great_circle_km(b, a))
    np.testing.assert_allclose(great_circle_km(a, b), [_arccos_km(x, y) for x, y in zip(a, b)], rtol=1e-7, atol=1e-6)
    assert great_circle_km(a[:1], b).shape == (500,)  # one point against many


def test_accuracy_thresholds_and_median():
    truth = np.zeros((5, 2))
    one_degree = 6371.0088 * np.pi / 180
    # errors of 0.5, 10, 100, 1000, 5000 km along the equator
    pred = np.c_[np.zeros(5), np.array([0.5, 10, 100, 1000, 5000]) / one_degree]
    acc = accuracy(pred, truth)
    assert [acc[f"acc@{t}km"] for t in (1, 25, 200, 750, 2500)] == [0.2, 0.4, 0.6, 0.6, 0.8]
    assert acc["median_km"] == pytest.approx(100) and acc["n"] == 5
    with pytest.raises(ValueError, match="same number of rows"):
        accuracy(pred[:3], truth[:2])


def test_equal_earth_is_equal_area():
    # the Jacobian determinant of an equal-area map of the unit sphere is cos(latitude)
    rng = np.random.default_rng(8)
    ll = np.c_[rng.uniform(-85, 85, 200), rng.uniform(-175, 175, 200)]
    e = 1e-5
    dx_dlon = (equal_earth(ll + [0, e]) - equal_earth(ll - [0, e])) / (2 * np.radians(e))
    dx_dlat = (equal_earth(ll + [e, 0]) - equal_earth(ll - [e, 0])) / (2 * np.radians(e))
    det = dx_dlon[:, 0] * dx_dlat[:, 1] - dx_dlon[:, 1] * dx_dlat[:, 0]
    np.testing.assert_allclose(det, np.cos(np.radians(ll[:, 0])), rtol=1e-5)
    # the pole line sits at y = 1.3173627 for R = 1 (Šavrič et al. 2018)
    corners = equal_earth(np.array([[90, 0], [0, 180], [0, 0]]))
    np.testing.assert_allclose(corners[0, 1], 1.3173627, atol=1e-6)
    np.testing.assert_allclose(corners[2], [0, 0])
    assert corners[1, 0] == pytest.approx(2 * np.sqrt(3) * np.pi / (3 * 1.340264))


def test_plot_predictions_writes_png(tmp_path):
    rng = np.random.default_rng(9)
    truth = _clustered(rng, 200)
    pred = truth + rng.normal(0, 2, truth.shape)
    pred[:, 0] = np.clip(pred[:, 0], -90, 90)
    pred[:, 1] = (pred[:, 1] + 180) % 360 - 180
    for projection in ("equal-earth", "lonlat"):
        fig = plot_predictions(pred, truth, tmp_path / f"{projection}.png", background=truth, projection=projection)
        assert (tmp_path / f"{projection}.png").stat().st_size > 10_000 and fig.axes
    with pytest.raises(ValueError, match="projection"):
        plot_predictions(pred, truth, projection="mercator")


# ---------------------------------------------------------------------------- retrieval


def test_gallery_search_equals_brute_force():
    rng = np.random.default_rng(10)
    x, q = rng.normal(size=(500, 40)), rng.normal(size=(30, 40))
    ll = _uniform_sphere(rng, 500)
    sim, ids = GeoGallery(x, ll).search(q, 7)
    xn, qn = x / np.linalg.norm(x, axis=1, keepdims=True), q / np.linalg.norm(q, axis=1, keepdims=True)
    cos = qn @ xn.T
    np.testing.assert_array_equal(ids, np.argsort(-cos, 1, kind="stable")[:, :7])
    np.testing.assert_allclose(sim, np.sort(cos, 1)[:, ::-1][:, :7], atol=1e-5)
    # binary: Hamming distances of sign bits (40 dims padded to 40 bits)
    sim_b, ids_b = GeoGallery(x, ll, binary=True).search(q, 7)
    ham = ((q[:, None, :] > 0) != (x[None, :, :] > 0)).sum(2)
    np.testing.assert_array_equal(np.sort(ham, 1)[:, :7], np.round((1 - sim_b) * 40 / 2).astype(int))
    np.testing.assert_array_equal(np.take_along_axis(ham, ids_b, 1), np.sort(ham, 1)[:, :7])
    # more neighbours than images: padded
    sim, ids = GeoGallery(x[:3], ll[:3]).search(q[:2], 5)
    assert (ids[:, 3:] == -1).all() and np.isneginf(sim[:, 3:]).all()


def test_kernel_mode_prefers_the_dense_neighbours():
    paris, nyc = [48.8566, 2.3522], [40.7128, -74.0060]
    near = [[48.86, 2.35], [48.85, 2.36], [48.87, 2.34], paris]
    neighbours = np.array([[nyc] + near])
    sim = np.array([[0.95, 0.9, 0.9, 0.9, 0.9]])
    out = kernel_mode(neighbours, sim, np.ones((1, 5), bool), bandwidth_km=25)
    assert great_circle_km(out, np.array([paris]))[0] < 2
    # one neighbour: its own location; without refinement: exactly a neighbour's location
    out = kernel_mode(neighbours[:, :1], sim[:, :1], np.ones((1, 1), bool))
    np.testing.assert_allclose(out, [nyc], atol=1e-9)
    out = kernel_mode(neighbours, sim, np.ones((1, 5), bool), refine=False)
    assert any(np.allclose(out[0], p) for p in near)


def test_gallery_localizes_toy_places(tmp_path):
    rng = np.random.default_rng(11)
    places = _clustered(rng, 12)
    keys = rng.normal(size=(12, 32))
    which = rng.integers(0, 12, 600)
    x = keys[which] + 0.6 * rng.normal(size=(600, 32))
    ll = places[which] + rng.normal(0, 0.01, (600, 2))
    ll[:, 0] = np.clip(ll[:, 0], -90, 90)
    ll[:, 1] = (ll[:, 1] + 180) % 360 - 180
    qw = rng.integers(0, 12, 100)
    q = keys[qw] + 0.6 * rng.normal(size=(100, 32))
    for binary in (False, True):
        gallery = GeoGallery(x, ll, binary=binary)
        pred = gallery.predict(q, k=15)
        err = great_circle_km(pred, places[qw])
        assert np.median(err) < 5 and np.mean(err < 25) > 0.9
        gallery.save(tmp_path / "g.plc")
        loaded = GeoGallery.load(tmp_path / "g.plc")
        assert loaded.binary == binary
        np.testing.assert_array_equal(loaded.predict(q, k=15), pred)
    with pytest.raises(ValueError, match=r"\(n, 32\)"):
        gallery.predict(q[:, :10])
    with pytest.raises(ValueError, match="NaN"):
        gallery.predict(np.full((1, 32), np.nan))
    with pytest.raises(ValueError, match="one per image"):
        GeoGallery(x[:5], ll[:4])


def test_import_without_torch(tmp_path):
    code = ("import sys; import pylocalize.geo as g; import numpy as np; "
            "h = g.CellHierarchy.from_latlon(np.array([[1.0, 2.0]] * 5), (3,), 1); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    # cwd away from the checkout, so the installed package is imported, not the sources
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, timeout=300)


def test_main_command_line_geo_cells(tmp_path, capsys):
    from pylocalize.cli import main

    ll = _clustered(np.random.default_rng(12), 500)
    np.savetxt(tmp_path / "gps.csv", ll, delimiter=",", header="latitude,longitude", comments="")
    assert main(["geo", "cells", "--gps", str(tmp_path / "gps.csv"), "--out", str(tmp_path / "c.plc"),
                 "--max-images", "100", "25", "--min-images", "3"]) == 0
    want = CellHierarchy.from_latlon(ll, (100, 25), 3)
    got = CellHierarchy.load(tmp_path / "c.plc")
    assert got.num_cells == want.num_cells and "photos ->" in capsys.readouterr().out
