"""The per-object learned patch descriptor (pylocalize.objects.learned), on a tiny textured box."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("cv2")

from pylocalize._core import FormatError  # noqa: E402
from pylocalize.datasets.synthetic import textured_box_object  # noqa: E402
from pylocalize.geometry import look_at  # noqa: E402
from pylocalize.objects.learned import (  # noqa: E402
    LearnedPatchExtractor,
    SiftAndLearnedExtractor,
    build_network,
    descriptor_path,
    load_extractor,
    render_view_pair,
    train_object_descriptor,
    with_learned,
)
from pylocalize.render import Renderer  # noqa: E402

SIZE = 112


def view_pairs(mesh, count: int, seed: int):
    """Pairs of nearby template-framed views: (rgb, xyz, mask) of each."""
    rng = np.random.default_rng(seed)
    return [render_view_pair(mesh, SIZE, rng) for _ in range(count)]


def matching_accuracy(extractor, pairs, stride: int = 4, tolerance: float = 6.0) -> float:
    """Share of the first view's object cells whose nearest descriptor (brute force, over
    every cell of the second view, background included) sees a model point within
    ``tolerance`` mm of theirs; cells whose point the second view does not see are left out."""
    hits, total = 0, 0
    for (rgb_a, xyz_a, mask_a), (rgb_b, xyz_b, mask_b) in pairs:
        fa, fb = extractor.feature_map(rgb_a, stride), extractor.feature_map(rgb_b, stride)
        c = np.arange(fa.shape[0]) * stride + (stride - 1) // 2
        ma, mb = mask_a[np.ix_(c, c)].ravel(), mask_b[np.ix_(c, c)].ravel()
        pa, pb = xyz_a[np.ix_(c, c)].reshape(-1, 3)[ma], xyz_b[np.ix_(c, c)].reshape(-1, 3)
        seen = np.linalg.norm(pa[:, None] - pb[None, mb], axis=2).min(1) < tolerance
        nearest = (fa.reshape(-1, fa.shape[-1])[ma][seen] @ fb.reshape(-1, fb.shape[-1]).T).argmax(1)
        hits += int((mb[nearest] & (np.linalg.norm(pb[nearest] - pa[seen], axis=1) < tolerance)).sum())
        total += int(seen.sum())
    return hits / total


@pytest.fixture(scope="module")
def trained():
    mesh = textured_box_object(0)
    extractor = train_object_descriptor(mesh, None, steps=60, seconds=None, seed=0, dim=24, width=16, size=SIZE,
                                        crop=96, num_pairs=12, batch_pairs=4, samples=128)
    return mesh, extractor


def test_training_improves_surface_point_matching(trained):
    mesh, extractor = trained
    torch.manual_seed(0)  # the initialisation training starts from (same seed, same network)
    initial = LearnedPatchExtractor.from_network(build_network(24, 16), 24, 16)
    pairs = view_pairs(mesh, 6, seed=1)  # views training never saw
    before, after = matching_accuracy(initial, pairs), matching_accuracy(extractor, pairs)
    print(f"surface-point matching accuracy: {before:.3f} at initialisation, {after:.3f} trained")
    assert after > before + 0.1, (before, after)


def test_training_without_backgrounds_says_so(caplog):
    with caplog.at_level(logging.WARNING, logger="pylocalize.objects.learned"):
        train_object_descriptor(textured_box_object(1), None, steps=1, seconds=None, dim=8, width=8, size=56,
                                num_pairs=1, batch_pairs=1)
    assert "procedural textures" in caplog.text


def test_extractor_interface(trained):
    _, extractor = trained
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (130, 99, 3), dtype=np.uint8)  # not a multiple of the patch or the stride
    f = extractor(image)
    assert f.shape == (130 // 14, 99 // 14, 24) and f.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(f, axis=-1), 1, atol=1e-5)
    assert extractor.feature_map(image, 7).shape == (130 // 7, 99 // 7, 24)
    # on the network's own 4-px grid the samples are its outputs, cell for cell
    square = image[:112, :96]
    with torch.no_grad():
        x = torch.from_numpy((square.astype(np.float32) / 255 - 0.5) / 0.25).permute(2, 0, 1)[None]
        raw = extractor.net(x)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(extractor.feature_map(square, 4), raw, atol=1e-5)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        extractor(image[..., 0])
    with pytest.raises(ValueError, match="smaller than one"):
        extractor(image[:10])


def test_pickle_and_save_load_round_trip(trained, tmp_path):
    _, extractor = trained
    image = np.random.default_rng(1).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    expected = extractor(image)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(extractor))(image), expected)
    path = descriptor_path(tmp_path / "obj.pyloc")
    assert path.name == "obj.pyloc.descriptor"
    extractor.save(path)
    loaded = LearnedPatchExtractor.load(path)
    assert (loaded.dim, loaded.width, loaded.patch_size, loaded.name) == (24, 16, 14, "learned")
    np.testing.assert_array_equal(loaded(image), expected)


def test_bad_input_errors(tmp_path):
    mesh = textured_box_object(0)
    with pytest.raises(FileNotFoundError, match="--extractor learned"):
        LearnedPatchExtractor.load(tmp_path / "missing.descriptor")
    (tmp_path / "junk.descriptor").write_bytes(b"not a container")
    with pytest.raises(FormatError):
        LearnedPatchExtractor.load(tmp_path / "junk.descriptor")
    with pytest.raises(ValueError, match="do not fit"):
        LearnedPatchExtractor({"x": np.zeros(3, np.float32)}, 8, 8)
    with pytest.raises(ValueError, match="crop must be a multiple"):
        train_object_descriptor(mesh, None, steps=1, size=SIZE, crop=50)
    with pytest.raises(ValueError, match="seconds"):
        train_object_descriptor(mesh, None, steps=1, seconds=0, size=SIZE)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        train_object_descriptor(mesh, tmp_path / "empty", steps=1, size=SIZE)
    with pytest.raises(ValueError, match="RGB uint8"):
        train_object_descriptor(mesh, [np.zeros((64, 64), np.uint8)], steps=1, size=SIZE)


@pytest.mark.parametrize("extractor", ["learned", "dense-sift+learned"])
def test_onboard_and_estimate_through_the_cli(tmp_path, capsys, extractor):
    import trimesh

    from pylocalize.cli import main
    from pylocalize.objects import ObjectRepresentation

    mesh = textured_box_object(3)
    trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).export(tmp_path / "box.ply")
    backgrounds = tmp_path / "photos"
    backgrounds.mkdir()
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (80, 120, 3), dtype=np.uint8)).save(
        backgrounds / "a.png")
    rep_path = tmp_path / "rep.pyloc"
    assert main(["objects", "onboard", "--mesh", str(tmp_path / "box.ply"), "--views", "4", "--inplane", "1",
                 "--size", "112", "--words", "8", "--out", str(rep_path), "--extractor", extractor,
                 "--backgrounds", str(backgrounds), "--train-steps", "2"]) == 0
    assert "learned descriptor ->" in capsys.readouterr().out
    rep = ObjectRepresentation.load(rep_path)
    assert rep.extractor_name == extractor and descriptor_path(rep_path).is_file()
    # estimate finds the descriptor beside the representation
    out = Renderer(160, 120, np.array([[150.0, 0, 79.5], [0, 150.0, 59.5], [0, 0, 1]])).render(
        mesh, look_at([0, -600.0, 200.0], [0, 0, 0], up=[0, 0, 1]), outputs=("rgb", "mask"))
    Image.fromarray(out.rgb[0]).save(tmp_path / "q.png")
    Image.fromarray(out.mask[0].astype(np.uint8) * 255).save(tmp_path / "m.png")
    code = main(["objects", "estimate", "--rep", str(rep_path), "--image", str(tmp_path / "q.png"),
                 "--K", "150,150,79.5,59.5", "--mask", str(tmp_path / "m.png"), "--out", str(tmp_path / "p.json")])
    assert code in (0, 1) and (tmp_path / "p.json").is_file()  # runs end to end; 4 templates decide no accuracy
    descriptor_path(rep_path).unlink()
    capsys.readouterr()
    assert main(["objects", "estimate", "--rep", str(rep_path), "--image", str(tmp_path / "q.png"),
                 "--K", "150,150,79.5,59.5", "--mask", str(tmp_path / "m.png"), "--out", str(tmp_path / "p.json")]) != 0
    assert "onboard with '--extractor learned'" in capsys.readouterr().err


def test_the_same_seed_trains_the_same_network_where_the_time_cap_does_not_bind():
    mesh = textured_box_object(1)
    options = dict(steps=4, seconds=1000.0, seed=3, dim=8, width=8, size=SIZE, crop=64, num_pairs=3, samples=32)
    first, second = (train_object_descriptor(mesh, None, **options) for _ in range(2))
    for name, weights in first.weights.items():
        np.testing.assert_array_equal(weights, second.weights[name], err_msg=name)


def test_learning_rate_follows_the_steps_unless_the_cap_will_come_first():
    from pylocalize.objects.learned import WARMUP_STEPS, _learning_rate

    # 400 of 800 steps in 100 s: the steps will fit in 300 s, so the clock plays no part
    assert _learning_rate(1.0, 400, 800, 100.0, 300.0) == pytest.approx(0.5)
    assert _learning_rate(1.0, 400, 800, 100.0, 300.0) == _learning_rate(1.0, 400, 800, 140.0, 300.0)
    # 400 steps in 225 s: the cap comes first, and the decay follows the clock (3/4 done)
    assert _learning_rate(1.0, 400, 800, 225.0, 300.0) == pytest.approx(0.5 * (1 + np.cos(0.75 * np.pi)))
    assert _learning_rate(1.0, 0, 800, 5.0, 300.0) == pytest.approx(1 / WARMUP_STEPS)  # warm-up: steps alone


def test_sift_and_learned_side_by_side_weighs_the_two_similarities(trained, tmp_path):
    from pylocalize.features.patches import DenseSIFTExtractor

    mesh, learned = trained
    pair = SiftAndLearnedExtractor(learned, learned_weight=0.3)
    assert (pair.name, pair.dim, pair.patch_size) == ("dense-sift+learned", 128 + learned.dim, learned.patch_size)
    (rgb_a, _, _), (rgb_b, _, _) = view_pairs(mesh, 1, seed=4)[0]
    a, b = pair.feature_map(rgb_a, 4), pair.feature_map(rgb_b, 4)
    sift_a, sift_b = (DenseSIFTExtractor(learned.patch_size).feature_map(x, 4) for x in (rgb_a, rgb_b))
    net_a, net_b = (f / np.linalg.norm(f, axis=-1, keepdims=True) for f in (learned.feature_map(rgb_a, 4),
                                                                            learned.feature_map(rgb_b, 4)))
    # the dot product of two cells is 0.7 x their SIFT similarity + 0.3 x their learned one
    expected = 0.7 * np.einsum("ijk,ijk->ij", sift_a, sift_b) + 0.3 * np.einsum("ijk,ijk->ij", net_a, net_b)
    np.testing.assert_allclose(np.einsum("ijk,ijk->ij", a, b), expected, atol=1e-5)
    assert pair(rgb_a).shape == (SIZE // learned.patch_size, SIZE // learned.patch_size, pair.dim)
    # saved as the learned descriptor's file, read back by name
    pair.save(tmp_path / "d")
    again = load_extractor("dense-sift+learned", tmp_path / "d")
    assert isinstance(again, SiftAndLearnedExtractor)
    np.testing.assert_allclose(again.feature_map(rgb_a, 4),
                               SiftAndLearnedExtractor(learned).feature_map(rgb_a, 4), atol=1e-6)
    assert isinstance(load_extractor("learned", tmp_path / "d"), LearnedPatchExtractor)
    with pytest.raises(ValueError, match="does not use a learned descriptor"):
        with_learned("dense-sift", learned)
    with pytest.raises(ValueError, match="learned_weight"):
        SiftAndLearnedExtractor(learned, learned_weight=1.0)
