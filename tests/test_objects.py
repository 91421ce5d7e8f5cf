"""Unseen-object pose (FoundPose pipeline) with dense SIFT on a generated textured object."""

from __future__ import annotations

import numpy as np
import pytest

from pylocalize.datasets.synthetic import textured_box_object
from pylocalize.features.patches import DenseSIFTExtractor, patch_centres
from pylocalize.geometry import look_at
from pylocalize.localization import pose_error
from pylocalize.objects import ObjectRepresentation, onboard
from pylocalize.objects.templates import crop_transform, square_around, template_intrinsics
from pylocalize.render import Renderer

pytest.importorskip("cv2")

K_QUERY = np.array([[500.0, 0, 319.5], [0, 520.0, 239.5], [0, 0, 1.0]])


@pytest.fixture(scope="module")
def box_and_representation():
    mesh = textured_box_object(0)
    return mesh, onboard(mesh, num_views=42, num_inplane=14, size=336, num_words=512)


def random_view(mesh, rng):
    d = rng.normal(size=3)
    d /= np.linalg.norm(d)
    pose = look_at(mesh.center + d * rng.uniform(2.5, 3.5) * mesh.extent, mesh.center, up=rng.normal(size=3))
    pose[:, 3] += [rng.uniform(-40, 40), rng.uniform(-30, 30), 0]  # off the optical axis
    out = Renderer(640, 480, K_QUERY, supersample=3).render(mesh, pose, outputs=("rgb", "mask"))
    background = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    return pose, np.where(out.mask[0][..., None], out.rgb[0], background), out.mask[0]


def test_dense_sift_grid_and_invariances():
    rng = np.random.default_rng(0)
    image = np.repeat(np.kron(rng.integers(0, 256, (30, 40)), np.ones((7, 7))), 1, 0).astype(np.uint8)
    extractor = DenseSIFTExtractor(14)
    f = extractor(np.stack([image] * 3, -1))
    assert f.shape == (15, 20, 128) and np.allclose(np.linalg.norm(f, axis=-1), 1, atol=1e-5)
    # shifting the image by one patch shifts the descriptor map by one cell
    shifted = extractor(np.stack([np.roll(image, 14, axis=1)] * 3, -1))
    np.testing.assert_allclose(shifted[3:-3, 4:-3], f[3:-3, 3:-4], atol=1e-5)
    # an affine change of intensity leaves descriptors unchanged (normalised gradients)
    dimmer = extractor(np.stack([(image * 0.5 + 20).astype(np.uint8)] * 3, -1))
    assert np.median(np.abs(dimmer - f)) < 0.01
    np.testing.assert_allclose(patch_centres(1, 2, 14), [[6.5, 6.5], [20.5, 6.5]])


def test_crop_geometry():
    A = crop_transform(centre=(100.0, 50.0), side=40.0, size=20)
    np.testing.assert_allclose(A @ [100.0, 50.0, 1.0], [9.5, 9.5, 1])  # the centre lands mid-crop
    # the window's edges (40 px around the centre) land on the crop's outer pixel edges
    np.testing.assert_allclose((A @ [80.0, 30.0, 1.0])[:2], [-0.5, -0.5])
    np.testing.assert_allclose((A @ [120.0, 70.0, 1.0])[:2], [19.5, 19.5])
    centre, side = square_around(10, 20, 29, 29, padding=0.5)
    np.testing.assert_allclose(centre, [19.5, 24.5])
    assert side == 30.0
    mesh = textured_box_object(1)
    pose = look_at([300.0, -200.0, 150.0], [0, 0, 0])
    K = template_intrinsics(mesh.vertices, pose, 280, padding=0.2)
    cam = mesh.vertices @ pose[:, :3].T + pose[:, 3]
    uv = (cam @ K.T)[:, :2] / cam[:, 2:]
    extent = uv.max(0) - uv.min(0)
    assert extent.max() == pytest.approx(280 / 1.2, rel=1e-6)  # the object fills the crop minus padding
    np.testing.assert_allclose((uv.max(0) + uv.min(0)) / 2, [139.5, 139.5], atol=1e-6)


def test_known_pose_renders_come_back(box_and_representation):
    mesh, rep = box_and_representation
    rng = np.random.default_rng(1)
    rotation, translation, coarse = [], [], []
    for _ in range(8):
        pose, image, mask = random_view(mesh, rng)
        result = rep.estimate(image, K_QUERY, mask=mask)
        assert result.success, result.reason
        t_err, r_err = pose_error(np.c_[result.R, result.t], pose)
        rotation.append(r_err)
        translation.append(t_err / np.linalg.norm(pose[:, 3]))
        t_coarse, r_coarse = pose_error(np.c_[result.R_coarse, result.t_coarse], pose)
        coarse.append((t_coarse / np.linalg.norm(pose[:, 3]), r_coarse))
    rotation, translation, coarse = np.array(rotation), np.array(translation), np.array(coarse)
    # a 150 mm box at 400-560 mm, 640x480 images, 588 templates
    assert np.median(rotation) < 2 and np.median(translation) < 0.02
    assert ((rotation < 5) & (translation < 0.05)).sum() >= 7  # a wrong template can still win
    # featuremetric refinement improves on PnP over patch-level matches
    assert np.median(rotation) < np.median(coarse[:, 1]) and np.median(translation) < np.median(coarse[:, 0])


def test_bbox_input_save_load_and_errors(tmp_path, box_and_representation):
    import pylocalize

    mesh, rep = box_and_representation
    pose, image, mask = random_view(mesh, np.random.default_rng(5))
    ys, xs = np.nonzero(mask)
    bbox = (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
    rep.save(tmp_path / "box.pyloc")
    loaded = ObjectRepresentation.load(tmp_path / "box.pyloc")
    assert len(loaded.template_poses) == 588 and loaded.extractor_name == "dense-sift"
    assert loaded.mesh_units == rep.mesh_units == "mm"
    # the file holds exactly what the pose stages read: 8-bit descriptor codes, grid cells
    # and word counts give back the onboarded arrays bit for bit
    assert (tmp_path / "box.pyloc").stat().st_size < 1.2 * rep.patch_desc.size
    for name in ("template_poses", "template_K", "patch_template", "patch_xy", "patch_xyz", "patch_desc",
                 "template_counts", "template_bow"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(rep, name), err_msg=name)
    a, b = rep.estimate(image, K_QUERY, mask=mask), loaded.estimate(image, K_QUERY, mask=mask)
    assert a.templates == b.templates and a.template == b.template
    np.testing.assert_array_equal(a.R, b.R)
    boxed = loaded.estimate(image, K_QUERY, bbox=bbox)  # the object's pixels found in the box (GrabCut)
    assert boxed.success and pose_error(np.c_[boxed.R, boxed.t], pose)[1] < 15 and "segmentation" in boxed.timings
    whole_box = loaded.estimate(image, K_QUERY, bbox=bbox, segment="box")
    assert whole_box.success and "segmentation" not in whole_box.timings
    with pytest.raises(ValueError, match="segment must be one of"):
        loaded.estimate(image, K_QUERY, bbox=bbox, segment="sam")
    empty = loaded.estimate(image, K_QUERY, mask=np.zeros(mask.shape, bool))
    assert not empty.success and "no foreground" in empty.reason
    with pytest.raises(ValueError, match="3x3"):
        loaded.estimate(image, K_QUERY[:2], mask=mask)
    with pytest.raises(ValueError, match="mask or bbox"):
        loaded.estimate(image, K_QUERY)
    with pytest.raises(ValueError, match="select must be"):
        loaded.estimate(image, K_QUERY, mask=mask, select="score")
    # the paper's rule (most PnP inliers) stays available, with and without refinement
    for refine in (True, False):
        by_inliers = loaded.estimate(image, K_QUERY, mask=mask, select="inliers", refine=refine)
        assert by_inliers.success and pose_error(np.c_[by_inliers.R, by_inliers.t], pose)[1] < 15
    with pytest.raises(ValueError, match="no faces"):
        onboard(pylocalize.render.Mesh(vertices=np.zeros((3, 3), np.float32), faces=np.zeros((0, 3), np.int32)))
    from pylocalize import _core

    _core.write_container(str(tmp_path / "old.pyloc"), "ObjectRepresentation", {"representation_version": 0},
                          {"x": np.zeros(1)})
    with pytest.raises(pylocalize.FormatError, match="version 0.*onboard"):
        ObjectRepresentation.load(tmp_path / "old.pyloc")


def test_cli_estimate_and_overlay(tmp_path, box_and_representation):
    import json

    from PIL import Image

    from pylocalize.cli import main
    from pylocalize.objects.viz import pose_overlay

    mesh, rep = box_and_representation
    pose, image, mask = random_view(mesh, np.random.default_rng(7))
    rep.save(tmp_path / "box.pyloc")
    Image.fromarray(image).save(tmp_path / "query.png")
    Image.fromarray((mask * 255).astype(np.uint8)).save(tmp_path / "mask.png")
    K = "500,520,319.5,239.5"
    assert main(["objects", "estimate", "--rep", str(tmp_path / "box.pyloc"), "--image", str(tmp_path / "query.png"),
                 "--K", K, "--mask", str(tmp_path / "mask.png"), "--out", str(tmp_path / "pose.json")]) == 0
    out = json.loads((tmp_path / "pose.json").read_text())
    assert out["success"] and pose_error(np.c_[np.array(out["R"]), np.array(out["t"])], pose)[1] < 10
    # the overlay at the true pose draws the contour on the silhouette's boundary
    drawn = np.any(pose_overlay(image, mesh, K_QUERY, pose[:, :3], pose[:, 3], thickness=1) != image, axis=-1)
    import cv2

    boundary = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) != cv2.erode(
        mask.astype(np.uint8), np.ones((3, 3), np.uint8))
    assert drawn.sum() > 100 and (drawn & ~boundary).sum() < 0.05 * drawn.sum()


def test_cli_estimate_with_depth_fits_the_pose_to_it(tmp_path, box_and_representation, capsys):
    """RGB-D: with --depth (and --mesh) the pose is the hypothesis the depth supports best,
    fitted to it: far closer than the RGB pose; bad depth inputs are errors that say why."""
    import json

    import trimesh
    from PIL import Image

    from pylocalize.cli import main

    mesh, rep = box_and_representation
    pose, image, mask = random_view(mesh, np.random.default_rng(7))
    depth = Renderer(640, 480, K_QUERY).render(mesh, pose, outputs=("depth",)).depth[0]
    rep.save(tmp_path / "box.pyloc")
    trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).export(tmp_path / "box.ply")
    Image.fromarray(image).save(tmp_path / "query.png")
    Image.fromarray((mask * 255).astype(np.uint8)).save(tmp_path / "mask.png")
    Image.fromarray(np.rint(depth * 10).astype(np.uint16)).save(tmp_path / "depth.png")  # 0.1 mm units
    common = ["objects", "estimate", "--rep", str(tmp_path / "box.pyloc"), "--image", str(tmp_path / "query.png"),
              "--K", "500,520,319.5,239.5", "--mask", str(tmp_path / "mask.png")]
    assert main(common + ["--out", str(tmp_path / "rgb.json")]) == 0
    assert main(common + ["--out", str(tmp_path / "rgbd.json"), "--depth", str(tmp_path / "depth.png"),
                          "--depth-scale", "0.1", "--mesh", str(tmp_path / "box.ply")]) == 0
    rgb, rgbd = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("rgb", "rgbd"))
    assert rgbd["depth"]["used"] and rgbd["depth"]["agreement"] > 0.95
    centre_mm, rotation_deg = pose_error(np.c_[np.array(rgbd["R"]), np.array(rgbd["t"])], pose)
    rgb_centre_mm, _ = pose_error(np.c_[np.array(rgb["R"]), np.array(rgb["t"])], pose)
    assert centre_mm < 1.5 and rotation_deg < 0.3 and centre_mm < rgb_centre_mm, (centre_mm, rotation_deg,
                                                                                   rgb_centre_mm)
    capsys.readouterr()
    assert main(common + ["--out", str(tmp_path / "x.json"), "--depth", str(tmp_path / "depth.png")]) == 2
    assert "error: --depth needs --mesh" in capsys.readouterr().err
    Image.fromarray(np.zeros((10, 10), np.uint16)).save(tmp_path / "small.png")
    assert main(common + ["--out", str(tmp_path / "x.json"), "--depth", str(tmp_path / "small.png"),
                          "--mesh", str(tmp_path / "box.ply")]) == 2
    assert "registered to the colour image" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def _box_scene(tmp_path, mesh, rep, images: int = 3):
    """A BOP scene folder (``000002``) of the box at seeded random poses, with masks and
    depth (0.1 mm units), beside ``box.pyloc`` and ``box.ply``."""
    import trimesh
    from PIL import Image

    from pylocalize.objects import bop

    rep.save(tmp_path / "box.pyloc")
    trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).export(tmp_path / "box.ply")
    scene = tmp_path / "000002"
    for sub in ("rgb", "mask_visib", "depth"):
        (scene / sub).mkdir(parents=True)
    rng = np.random.default_rng(11)
    entries = {}
    for im_id in range(images):
        pose, image, mask = random_view(mesh, rng)
        depth = Renderer(640, 480, K_QUERY).render(mesh, pose, outputs=("depth",)).depth[0]
        Image.fromarray(image).save(scene / "rgb" / f"{im_id:06d}.png")
        Image.fromarray((mask * 255).astype(np.uint8)).save(scene / "mask_visib" / f"{im_id:06d}_000000.png")
        Image.fromarray(np.rint(depth * 10).astype(np.uint16)).save(scene / "depth" / f"{im_id:06d}.png")
        entries[im_id] = {"K": K_QUERY, "depth_scale": 0.1, "gt": [{"obj_id": 7, "R": pose[:, :3], "t": pose[:, 3]}]}
    bop.write_scene(scene, entries)
    return scene


def _refined_recalls(out: str):
    return [float(line.split("AR ")[1].split(",")[0]) for line in out.splitlines() if line.startswith("refined")]


def test_bop_scene_evaluation_with_depth(tmp_path, box_and_representation, capsys):
    """``objects eval --depth``: each instance from its RGB-D frame; the depth-fitted poses
    score at least as the RGB ones and every instance near exactly; a scene without depth
    images is an error that says so."""
    import shutil

    from pylocalize.cli import main
    from pylocalize.objects import bop

    mesh, rep = box_and_representation
    scene = _box_scene(tmp_path, mesh, rep)
    common = ["objects", "eval", "--bop", str(scene), "--rep", str(tmp_path / "box.pyloc"), "--mesh",
              str(tmp_path / "box.ply"), "--obj-id", "7"]
    assert main(common + ["--out", str(tmp_path / "rgb.csv")]) == 0
    rgb = _refined_recalls(capsys.readouterr().out)[0]
    assert main(common + ["--out", str(tmp_path / "rgbd.csv"), "--depth"]) == 0
    out = capsys.readouterr().out
    rgbd = _refined_recalls(out)[0]
    assert "3/3 instances" in out and rgbd >= rgb and rgbd > 0.9, (rgb, rgbd)
    truth = bop.read_scene(scene)
    for row in bop.read_results_csv(tmp_path / "rgbd.csv"):
        gt = truth[row["im_id"]]["gt"][0]
        assert np.linalg.norm(row["t"] - gt["t"]) < 2.0, row["t"] - gt["t"]
    shutil.rmtree(scene / "depth")
    assert main(common + ["--out", str(tmp_path / "x.csv"), "--depth"]) == 1
    assert "needs the depth of every image" in capsys.readouterr().err


def test_bop_scene_evaluation_through_the_cli(tmp_path, box_and_representation, capsys):
    from pylocalize.cli import main
    from pylocalize.objects import bop

    mesh, rep = box_and_representation
    scene = _box_scene(tmp_path, mesh, rep)
    assert main(["objects", "eval", "--bop", str(scene), "--rep", str(tmp_path / "box.pyloc"), "--mesh",
                 str(tmp_path / "box.ply"), "--obj-id", "7", "--out", str(tmp_path / "results.csv")]) == 0
    rows = bop.read_results_csv(tmp_path / "results.csv")
    assert len(rows) == 3 and {r["scene_id"] for r in rows} == {2}
    out = capsys.readouterr().out
    assert "3/3 instances" in out and "AR_VSD" in out
    recalls = _refined_recalls(out)
    assert recalls and recalls[0] > 0.5
    # from each visible mask's box alone: GrabCut finds the object's pixels in it
    assert main(["objects", "eval", "--bop", str(scene), "--rep", str(tmp_path / "box.pyloc"), "--mesh",
                 str(tmp_path / "box.ply"), "--obj-id", "7", "--out", str(tmp_path / "boxes.csv"),
                 "--given", "box"]) == 0
    out = capsys.readouterr().out
    recalls = _refined_recalls(out)
    assert "3/3 instances" in out and recalls[0] > 0.5
    # a dataset layout: models/ with mesh and symmetries, test/<scene>/, two scenes
    import json
    import shutil

    dataset = tmp_path / "dataset"
    (dataset / "models").mkdir(parents=True)
    shutil.copy(tmp_path / "box.ply", dataset / "models" / "obj_000007.ply")
    (dataset / "models" / "models_info.json").write_text(json.dumps({"7": {"diameter": float(mesh.extent)}}))
    shutil.copytree(scene, dataset / "test" / "000002")
    shutil.copytree(scene, dataset / "test" / "000009")
    assert main(["objects", "eval", "--bop", str(dataset), "--rep", str(tmp_path / "box.pyloc"), "--obj-id", "7",
                 "--out", str(tmp_path / "all.csv")]) == 0
    rows = bop.read_results_csv(tmp_path / "all.csv")
    assert len(rows) == 6 and {r["scene_id"] for r in rows} == {2, 9}
    capsys.readouterr()
    assert main(["objects", "eval", "--bop", str(scene), "--rep", str(tmp_path / "box.pyloc"), "--obj-id", "7",
                 "--out", str(tmp_path / "x.csv")]) == 2
    assert "pylocalize objects eval: error: no mesh" in capsys.readouterr().err



def test_stages_callable_alone(box_and_representation):
    """The stages of estimate, called one by one, give what estimate gives; retrieval is
    tf-idf cosine ranking and selection follows its rule over PoseHypothesis records."""
    from pylocalize.objects.representation import PoseHypothesis

    mesh, rep = box_and_representation
    _, image, mask = random_view(mesh, np.random.default_rng(21))
    result = rep.estimate(image, K_QUERY, mask=mask, retrieval="bow")  # the paper's retrieval, stage by stage
    assert result.success and all(isinstance(h, PoseHypothesis) for h in result.hypotheses)
    ys, xs = np.nonzero(mask)
    query = rep.crop_query(image, K_QUERY, (xs.min(), ys.min(), xs.max(), ys.max()), mask, rep.default_extractor())
    assert query.descriptors.shape == (len(query.xy), rep.patch_desc.shape[1])
    # the bag-of-words shortlist is the brute-force cosine ranking of the templates' tf-idf vectors
    bag = rep.bow.tfidf(rep.bow.histograms(query.descriptors, np.zeros(len(query.descriptors), np.int64), 1))[0]
    cosine = rep.template_bow.astype(np.float64) @ bag
    shortlist = rep.bow_shortlist(query.descriptors, 20)
    np.testing.assert_allclose(cosine[shortlist], np.sort(cosine)[::-1][:20], rtol=1e-5)
    matches = rep.retrieve_templates(query)
    assert [m.template for m in matches] == result.templates
    consistent = [m.num_consistent(rep.patch_size) for m in matches]
    assert consistent == sorted(consistent, reverse=True)
    hypotheses = rep.pose_hypotheses(query, matches)
    assert [h.template for h in hypotheses] == [h.template for h in result.hypotheses]
    for h in hypotheses:
        assert h.R.shape == (3, 3) and h.t.shape == (3,) and 6 <= h.num_inliers <= h.num_matches
    assert rep.select_hypothesis(query, hypotheses, "inliers").num_inliers == max(h.num_inliers for h in hypotheses)
    if len(hypotheses) > 1:
        query.feature_map, query.stride = rep.query_feature_map(query, rep.default_extractor())
        best = rep.select_hypothesis(query, hypotheses, "featuremetric")
        assert best.featuremetric_cost == min(h.featuremetric_cost for h in hypotheses)
        assert best.template == result.template
        np.testing.assert_allclose(best.R, result.R_coarse, atol=1e-6)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_older_layouts_are_refused_with_the_fix(tmp_path, version):
    """A representation saved before float16 descriptors (layout 1: float descriptors,
    per-patch template ids), before 16-bit model points (layout 2) or before 8-bit
    descriptor codes (layout 3) is refused with a FormatError that says to onboard again."""
    import pylocalize
    from pylocalize import _core

    n = 4
    sections = {"info": np.frombuffer(b'{"extractor": "dense-sift", "padding": 0.2, "diameter": 1.0}', np.uint8).copy(),
                "template_poses": np.zeros((1, 3, 4)), "template_K": np.eye(3)[None],
                "patch_template": np.zeros(n, np.int64),
                "patch_xy": np.zeros((n, 2), np.float32), "patch_xyz": np.zeros((n, 3), np.float32),
                "patch_desc": np.zeros((n, 8), np.float32), "pca_mean": np.zeros(8, np.float32),
                "pca_components": np.eye(8, dtype=np.float32), "words": np.zeros((2, 8), np.float32),
                "idf": np.ones(2, np.float32), "template_bow": np.zeros((1, 2), np.float32)}
    _core.write_container(str(tmp_path / "old.pyloc"), "ObjectRepresentation",
                          {"representation_version": version, "size": 112, "patch_size": 14, "num_assign": 3},
                          sections)
    with pytest.raises(pylocalize.FormatError,
                       match=f"version {version}; this pylocalize reads version 4.*onboard the object"):
        ObjectRepresentation.load(tmp_path / "old.pyloc")


def test_principal_axes_span_the_svd_subspace():
    """The covariance PCA gives the SVD's leading axes (up to sign) on data with distinct
    variances, each axis with its largest entry positive, unit length, in float32."""
    from pylocalize.objects.representation import principal_axes

    rng = np.random.default_rng(12)
    x = rng.normal(size=(3000, 16)) * np.linspace(5.0, 0.5, 16) @ np.linalg.qr(rng.normal(size=(16, 16)))[0] + 7.0
    mean = x.mean(0)
    axes = principal_axes(x, mean, 6)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    assert axes.shape == (6, 16) and axes.dtype == np.float32
    np.testing.assert_allclose(np.abs((axes * vt[:6]).sum(1)), 1.0, atol=1e-5)
    assert (axes[np.arange(6), np.abs(axes).argmax(1)] > 0).all()


def test_descriptor_codes_within_half_a_step():
    """Descriptors saved as 8-bit codes come back within half a step (1/255 of each
    dimension's own range) of a float64 reference, dimensions of very different ranges
    alike; a constant dimension comes back exactly; bad input and frames are refused."""
    from pylocalize.objects.representation import dequantize_descriptors, quantize_descriptors

    rng = np.random.default_rng(11)
    desc = rng.normal(size=(500, 6)) * np.array([100.0, 10.0, 1.0, 0.1, 0.01, 0.0]) + 3.0
    codes, frame = quantize_descriptors(desc)
    assert codes.dtype == np.uint8 and frame.shape == (2, 6)
    back = dequantize_descriptors(codes, frame).astype(np.float64)
    half_step = (desc.max(0) - desc.min(0)) / 255.0 / 2.0
    assert (np.abs(back - desc) <= half_step * (1 + 1e-4) + 1e-5).all()
    np.testing.assert_allclose(back[:, 5], 3.0, atol=1e-6)
    assert np.abs(back[:, 4] - desc[:, 4]).max() < 0.02 * desc[:, 4].std()  # its own range, not the first one's
    assert quantize_descriptors(np.zeros((0, 4)))[0].shape == (0, 4)
    with pytest.raises(ValueError, match="finite"):
        quantize_descriptors(np.full((2, 3), np.nan))
    for bad in (np.zeros((2, 6), np.float32), np.ones((2, 5), np.float32)):
        with pytest.raises(ValueError, match="lows and steps"):
            dequantize_descriptors(codes, bad)
    with pytest.raises(ValueError, match="uint8 codes"):
        dequantize_descriptors(codes.astype(np.int16), frame)


def test_model_points_kept_within_half_a_step():
    """Model points saved as int16 offsets come back within half a step of 1/32767 of the
    largest half-side (0.002 mm on a 200 mm object); bad frames are refused."""
    from pylocalize.objects.representation import dequantize_points, quantize_points

    rng = np.random.default_rng(12)
    points = rng.uniform(-100.0, 100.0, size=(5000, 3)) + [300.0, -20.0, 5.0]
    offsets, frame = quantize_points(points)
    assert offsets.dtype == np.int16 and frame.shape == (4,)
    back = dequantize_points(offsets, frame).astype(np.float64)
    assert np.abs(back - points).max() <= frame[3] / 2 + np.abs(points).max() * 2.0 ** -23
    assert np.abs(back - points).max() < 0.01
    assert np.array_equal(quantize_points(np.zeros((0, 3)))[0].shape, (0, 3))
    for bad in (np.array([0.0, 0, 0, 0]), np.array([0.0, 0, 0]), np.array([np.nan, 0, 0, 1])):
        with pytest.raises(ValueError, match="int16 offsets and a frame"):
            dequantize_points(offsets, bad)
    with pytest.raises(ValueError, match="finite"):
        quantize_points(np.full((2, 3), np.inf))


def test_mesh_units_guessed_given_and_kept(tmp_path, caplog):
    """A mesh in metres is taken for metres (with a log line), units given are kept through
    save and load, and unknown units are refused; onboarding reports its stages."""
    import dataclasses
    import logging

    box = textured_box_object(0)
    metres = dataclasses.replace(box, vertices=box.vertices / 1000.0)
    with caplog.at_level(logging.INFO, logger="pylocalize.objects.onboarding"):
        rep = onboard(metres, num_views=4, num_inplane=2, size=112, num_words=16, pca_dim=16)
    assert rep.mesh_units == "m" and "guessed" in caplog.text
    from pylocalize.objects.evaluate import evaluate_scene

    with pytest.raises(ValueError, match="mesh is in m: onboard the dataset's model"):
        evaluate_scene(rep, metres, tmp_path, obj_id=1)  # BOP ground truth is in mm
    stages = {"templates", "rendering", "patch features", "PCA", "vocabulary", "bags of words", "total"}
    assert stages <= set(rep.onboarding_seconds)
    assert "onboarded ObjectRepresentation(8 templates" in caplog.text and "vocabulary" in caplog.text
    given = onboard(box, num_views=4, num_inplane=2, size=112, num_words=16, pca_dim=16, mesh_units="cm")
    given.save(tmp_path / "cm.pyloc")
    assert ObjectRepresentation.load(tmp_path / "cm.pyloc").mesh_units == "cm"
    with pytest.raises(ValueError, match="mesh units must be one of mm, cm, m"):
        onboard(box, num_views=4, num_inplane=2, size=112, mesh_units="inch")


def test_template_features_on_the_object_box_equal_the_whole_image():
    """Dense SIFT on the object's box grown by its reach gives the whole template's
    descriptors at every kept patch, bit for bit, whatever the view."""
    import cv2

    from pylocalize.geometry import viewpoint_poses
    from pylocalize.objects.onboarding import patch_features

    mesh = textured_box_object(0)
    extractor = DenseSIFTExtractor()
    centres = np.rint(patch_centres(24, 24, 14)).astype(int)
    for pose in viewpoint_poses(6, 2, radius=2.5 * mesh.extent, center=mesh.center):
        K = template_intrinsics(mesh.vertices, pose, 336, 0.2)
        out = Renderer(336, 336, K, supersample=3).render(mesh, pose, outputs=("rgb", "mask"))
        eroded = cv2.erode(out.mask[0].astype(np.uint8), np.ones((7, 7), np.uint8))
        keep = eroded[centres[:, 1], centres[:, 0]] > 0
        assert keep.sum() > 20
        whole = extractor(out.rgb[0]).reshape(-1, extractor.dim)[keep]
        np.testing.assert_array_equal(patch_features(extractor, out.rgb[0], out.mask[0], keep), whole)


def test_cli_onboard_prints_stages_and_records_units(tmp_path, capsys):
    import trimesh

    from pylocalize.cli import main

    mesh = textured_box_object(3)
    trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).export(tmp_path / "box.ply")
    args = ["objects", "onboard", "--mesh", str(tmp_path / "box.ply"), "--views", "4", "--inplane", "1",
            "--size", "112", "--words", "8", "--out", str(tmp_path / "rep.pyloc")]
    assert main(args + ["--mesh-units", "cm"]) == 0
    out = capsys.readouterr().out
    assert "stages:" in out and "vocabulary" in out and "saving" in out and "mesh units: cm" in out
    assert ObjectRepresentation.load(tmp_path / "rep.pyloc").mesh_units == "cm"
    assert main(args) == 0  # a box 150 units across: millimetres
    assert ObjectRepresentation.load(tmp_path / "rep.pyloc").mesh_units == "mm"
    with pytest.raises(SystemExit):
        main(args + ["--mesh-units", "inch"])
