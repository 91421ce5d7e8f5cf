"""Geo-localization heads (torch extra): GeoDecoder, flat baseline, GPS encoder, matcher.

Tiny models on synthetic tokens whose content is a known function of the photo's cell and
scene; every run is seeded. References: loops over the parent map by hand for the
hierarchical product, chance level for training.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("s2sphere")

from pylocalize.geo import CellHierarchy, great_circle_km  # noqa: E402
from pylocalize.geo.model import FlatCellClassifier, GeoDecoder, GPSEncoder, ImageGPSMatcher  # noqa: E402
from pylocalize.geo.synthetic import synthetic_tokens  # noqa: E402

# tiny models: torch's worker threads only add overhead, many-fold on a busy machine
pytestmark = pytest.mark.usefixtures("one_torch_thread")

CITIES = np.array([[48.85, 2.35], [40.71, -74.0], [35.68, 139.69], [-33.87, 151.2], [-23.55, -46.63],
                   [55.75, 37.62], [19.43, -99.13], [1.35, 103.82], [-1.29, 36.82], [64.14, -21.94]])


def _photos(rng, n):
    which = rng.integers(0, len(CITIES), n)
    ll = CITIES[which] + rng.normal(0, 1.5, (n, 2))
    ll[:, 0] = np.clip(ll[:, 0], -90, 90)
    return ll


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    train, test = _photos(rng, 1500), _photos(rng, 300)
    h = CellHierarchy.from_latlon(train, max_images=(200, 60), min_images=5)
    xt, st = synthetic_tokens(h, train, num_tokens=3, dim=16, num_scenes=2, noise=0.7, seed=1)
    xe, se = synthetic_tokens(h, test, num_tokens=3, dim=16, num_scenes=2, noise=0.7, seed=2)
    return h, train, test, xt, st, xe, se


def _small_decoder(h, **kw):
    return GeoDecoder(h, 16, num_scenes=2, d_model=32, num_heads=4, independent_layers=1, dependent_layers=1,
                      ffn_mult=2, dropout=0.0, **kw)


def test_decoder_shapes_scene_modes_and_hierarchical_product(data):
    h, train, _, xt, _, _, _ = data
    model = _small_decoder(h)
    logits, scene_logits = model.net(torch.from_numpy(xt[:5]))
    assert [tuple(lg.shape) for lg in logits] == [(5, 2, c) for c in h.num_cells]
    assert tuple(scene_logits.shape) == (5, 2)
    probs, scene_proba = model.predict_scene_proba(xt[:7])
    assert [p.shape for p in probs] == [(7, 2, c) for c in h.num_cells]
    np.testing.assert_allclose([p.sum(-1) for p in probs], 1, rtol=1e-5)
    assert scene_proba.shape == (7, 2)
    np.testing.assert_allclose(scene_proba.sum(1), 1, rtol=1e-5)
    # the paper's rule: the scene with the largest mean (over hierarchies) top-class probability
    conf = (probs[0].max(-1) + probs[1].max(-1)) / 2
    np.testing.assert_array_equal(GeoDecoder.confidence_scene(probs), conf.argmax(1))

    def by_hand(i, s, c):  # fine probability = its own times its parent's, parent found by loop
        parent = [p for p in range(h.num_cells[0]) if h.parents[1][c] == p][0]
        return probs[1][i, s, c] * probs[0][i, s, parent]

    picked = {"confidence": conf.argmax(1), "classifier": scene_proba.argmax(1)}
    for mode, scene in picked.items():
        combined = model.predict_proba(xt[:7], scene_mode=mode)
        for i in range(7):
            assert combined[0][i] == pytest.approx(probs[0][i, scene[i]], rel=1e-6)
            for c in range(h.num_cells[1]):
                assert combined[1][i, c] == pytest.approx(by_hand(i, scene[i], c), rel=1e-6)
    # the mixture (default): the scene-probability-weighted sum of every scene's products
    combined = model.predict_proba(xt[:7])
    for q, r in zip(combined, model.predict_proba(xt[:7], scene_mode="mixture")):
        np.testing.assert_array_equal(q, r)
    for i in range(7):
        want0 = sum(scene_proba[i, s] * probs[0][i, s] for s in range(2))
        np.testing.assert_allclose(combined[0][i], want0, rtol=1e-6)
        for c in range(h.num_cells[1]):
            want = sum(scene_proba[i, s] * by_hand(i, s, c) for s in range(2))
            assert combined[1][i, c] == pytest.approx(want, rel=1e-6)
    pred = model.predict(xt[:7])
    np.testing.assert_array_equal(pred, h.centers[1][combined[1].argmax(1)])
    np.testing.assert_array_equal(model.predict(xt[:7], scene_mode="confidence"),
                                  h.centers[1][model.predict_proba(xt[:7], scene_mode="confidence")[1].argmax(1)])
    with pytest.raises(ValueError, match="scene_mode must be one of"):
        model.predict(xt[:7], scene_mode="soft")
    with pytest.raises(ValueError, match="scene_mode must be one of"):
        _small_decoder(h, scene_mode="hard")


def test_scene_mixture_on_a_toy_case():
    # two scenes, cells 2 coarse / 3 fine (fine 0, 1 under coarse 0; fine 2 under coarse 1)
    h = CellHierarchy.from_latlon(np.array([[10.0, 10.0]] * 4 + [[10.0, 10.5]] * 4 + [[-40.0, 100.0]] * 4),
                                  max_images=(8, 4), min_images=1)
    assert h.num_cells == [2, 3]
    model = GeoDecoder(h, 4, num_scenes=2, d_model=8, num_heads=2)
    fine_parent = h.parents[1]
    coarse = np.array([[[0.6, 0.4], [0.1, 0.9]]])            # (1 photo, 2 scenes, 2 cells)
    fine = np.array([[[0.5, 0.3, 0.2], [0.2, 0.2, 0.6]]])    # (1, 2, 3)
    weights = np.array([[0.25, 0.75]])
    q = model.combine_scenes([coarse, fine], weights)
    # by hand: scene 0 fine products, scene 1 fine products, then 0.25 / 0.75
    s0 = [fine[0, 0, c] * coarse[0, 0, fine_parent[c]] for c in range(3)]
    s1 = [fine[0, 1, c] * coarse[0, 1, fine_parent[c]] for c in range(3)]
    np.testing.assert_allclose(q[1][0], [0.25 * a + 0.75 * b for a, b in zip(s0, s1)])
    np.testing.assert_allclose(q[0][0], [0.25 * 0.6 + 0.75 * 0.1, 0.25 * 0.4 + 0.75 * 0.9])
    # hard choices: the classifier takes scene 1; confidence takes scene 1 too (mean top
    # probability (0.9 + 0.6) / 2 against (0.6 + 0.5) / 2)
    np.testing.assert_allclose(model.combine_scenes([coarse, fine], weights, "classifier")[1][0], s1)
    np.testing.assert_allclose(model.combine_scenes([coarse, fine], weights, "confidence")[1][0], s1)
    # a confident but wrong scene: the classifier says scene 0, confidence still scene 1
    np.testing.assert_allclose(model.combine_scenes([coarse, fine], [[0.9, 0.1]], "classifier")[1][0], s0)
    np.testing.assert_allclose(model.combine_scenes([coarse, fine], [[0.9, 0.1]], "confidence")[1][0], s1)


@pytest.mark.slow
def test_decoder_training_beats_chance_and_round_trips(data, tmp_path):
    h, train, test, xt, st, xe, se = data
    model = _small_decoder(h).fit(xt, train, st, epochs=12, batch_size=64, lr=2e-3, patience=3, seed=0)
    assert model.history[-1] < model.history[0]
    labels = h.cell_of(test)
    fine = model.predict_proba(xe)[-1].argmax(1)
    ok = labels[:, 1] >= 0
    chance = np.max(np.bincount(labels[ok, 1])) / ok.sum()
    assert np.mean(fine[ok] == labels[ok, 1]) > max(0.5, 2 * chance)
    # the trained scene classifier finds the true scene; the paper's confidence rule, less often
    probs, scene_proba = model.predict_scene_proba(xe)
    assert np.mean(scene_proba.argmax(1) == se) > 0.9
    assert np.mean(GeoDecoder.confidence_scene(probs) == se) > 0.5
    assert len(model.validation_indices) == round(0.1 * len(train))
    assert np.median(great_circle_km(model.predict(xe), test)) < 500
    path = tmp_path / "decoder.pt"
    model.save(path)
    from pylocalize.checkpoints import load_checkpoint

    assert "GeoDecoder" in load_checkpoint(path, "GeoDecoder")["format"]  # weights_only inside
    loaded = GeoDecoder.load(path)
    np.testing.assert_array_equal(loaded.predict(xe), model.predict(xe))
    np.testing.assert_array_equal(loaded.hierarchy.cell_ids[1], h.cell_ids[1])
    # same seed, same model
    again = _small_decoder(h).fit(xt, train, st, epochs=2, batch_size=64, lr=2e-3, seed=0)
    twice = _small_decoder(h).fit(xt, train, st, epochs=2, batch_size=64, lr=2e-3, seed=0)
    np.testing.assert_array_equal(again.predict(xe[:20]), twice.predict(xe[:20]))


@pytest.mark.slow
def test_decoder_without_scene_labels_weighs_scene_zero(data):
    # no labels: every photo is scene 0, and the scene classifier learns that, so the
    # mixture leans on scene 0's trained queries, not on the untrained ones of scene 1
    h, train, _, xt, _, xe, _ = data
    model = _small_decoder(h).fit(xt, train, epochs=3, batch_size=64, lr=2e-3, seed=0)
    _, scene_proba = model.predict_scene_proba(xe)
    assert scene_proba[:, 0].mean() > 0.9


@pytest.mark.slow
def test_flat_classifier_trains(data, tmp_path):
    h, train, test, xt, _, xe, _ = data
    model = FlatCellClassifier(h, 16, d_model=32, num_heads=4, num_layers=1, ffn_mult=2, dropout=0.0)
    model.fit(xt, train, epochs=12, batch_size=64, lr=2e-3, seed=0)
    labels = h.cell_of(test)[:, 1]
    ok = labels >= 0
    assert np.mean(model.predict_proba(xe)[0].argmax(1)[ok] == labels[ok]) > 0.5
    model.save(tmp_path / "flat.pt")
    np.testing.assert_array_equal(FlatCellClassifier.load(tmp_path / "flat.pt").predict(xe), model.predict(xe))


def test_bad_inputs_and_corrupt_checkpoint(data, tmp_path):
    h, train, _, xt, st, _, _ = data
    model = _small_decoder(h)
    with pytest.raises(ValueError, match=r"tokens\[:, None, :\]"):
        model.predict(xt[:, 0])
    with pytest.raises(ValueError, match=r"\(n, num_tokens, 16\)"):
        model.predict(xt[..., :8])
    bad = xt[:10].copy()
    bad[3, 1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.predict(bad)
    with pytest.raises(ValueError, match="scene labels must be in 0..1"):
        model.fit(xt[:20], train[:20], np.full(20, 5), epochs=1)
    with pytest.raises(ValueError, match="latitude must be in"):
        model.fit(xt[:20], train[:20] + [100, 0], st[:20], epochs=1)
    with pytest.raises(ValueError, match="multiple of num_heads"):
        GeoDecoder(h, 16, d_model=30, num_heads=4)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a saved GeoDecoder"):
        GeoDecoder.load(tmp_path / "junk.pt")
    # another model's checkpoint (an untrained one: the kind is what is checked)
    FlatCellClassifier(h, 16, d_model=32, num_heads=4, num_layers=1, ffn_mult=2, dropout=0.0).save(tmp_path / "flat.pt")
    with pytest.raises(ValueError, match="not a saved GeoDecoder"):
        GeoDecoder.load(tmp_path / "flat.pt")


def test_gps_encoder_shapes_and_determinism():
    enc = GPSEncoder(dim=24, sigmas=(1.0, 8.0), num_features=32, hidden=64, seed=3)
    ll = np.array([[0.0, 0.0], [90, 0], [-90, 0], [10, 180], [10, -180]])
    z = enc.encode(ll)
    assert z.shape == (5, 24) and z.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(z, GPSEncoder(dim=24, sigmas=(1.0, 8.0), num_features=32, hidden=64, seed=3)
                                  .encode(ll))
    xy = GPSEncoder.coordinates(ll)
    assert xy[3, 0] == -xy[4, 0] and xy[3, 1] == xy[4, 1]  # the antimeridian's two sides
    assert abs(GPSEncoder.coordinates(np.array([[0.0, 180.0]]))[0, 0] - 1) < 1e-6
    with pytest.raises(ValueError, match="even"):
        GPSEncoder(num_features=33)
    with pytest.raises(ValueError, match="NaN"):
        enc.encode(np.array([[np.nan, 1.0]]))


@pytest.mark.slow
def test_image_gps_matcher_beats_chance(tmp_path):
    rng = np.random.default_rng(4)
    place = rng.integers(0, len(CITIES), 800)
    ll = CITIES[place] + rng.normal(0, 0.3, (800, 2))
    keys = rng.normal(size=(len(CITIES), 16))
    images = (keys[place] + 0.5 * rng.normal(size=(800, 16))).astype(np.float32)
    matcher = ImageGPSMatcher(16, dim=32, hidden=64, seed=0, gps={"sigmas": (1.0, 8.0), "num_features": 64})
    matcher.fit(images[:700], ll[:700], epochs=25, batch_size=64, lr=3e-3, seed=0)
    pred = matcher.predict(images[700:], CITIES)
    hit = great_circle_km(pred, CITIES[place[700:]]) < 1
    assert hit.mean() > 0.5  # chance: 1 in 10
    matcher.save(tmp_path / "m.pt")
    np.testing.assert_array_equal(ImageGPSMatcher.load(tmp_path / "m.pt").predict(images[700:], CITIES), pred)


# ---------------------------------------------------------------------------- backbones


@pytest.mark.parametrize("kind", ["dinov2", "clip"])
def test_token_extractor_tiny_saved_config(kind, tmp_path):
    transformers = pytest.importorskip("transformers")
    from pylocalize.geo.backbones import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, TokenExtractor

    torch.manual_seed(0)
    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=8,
                  image_size=32)
    if kind == "dinov2":
        model = transformers.Dinov2Model(transformers.Dinov2Config(**common)).eval()
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        model = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**common)).eval()
        mean, std = CLIP_MEAN, CLIP_STD
    model.save_pretrained(tmp_path / kind)
    extractor = TokenExtractor(tmp_path / kind, image_size=32, device="cpu")
    assert extractor.kind == kind and extractor.num_tokens == 1 + 16 and extractor.dim == 32
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)  # already the input size: no resampling
    tokens = extractor(images, batch_size=2)
    assert tokens.shape == (3, 17, 32) and tokens.dtype == np.float32
    # the reference: the saved model run directly on hand-normalised pixels
    pixels = torch.from_numpy(((images / 255.0 - mean) / std).transpose(0, 3, 1, 2).astype(np.float32))
    with torch.no_grad():
        want = model(pixel_values=pixels).last_hidden_state
        if kind == "clip":
            want = getattr(model, "vision_model", model).post_layernorm(want)
    np.testing.assert_allclose(tokens, want.numpy(), atol=1e-5)
    # other sizes are resized; a list of differently sized images works
    assert extractor([images[0], rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)]).shape == (2, 17, 32)
    with pytest.raises(ValueError, match="uint8 RGB"):
        extractor(images.astype(np.float32))


def test_token_extractor_refuses_missing_and_foreign_models(tmp_path):
    transformers = pytest.importorskip("transformers")
    from pylocalize.geo.backbones import TokenExtractor

    with pytest.raises(ValueError, match="nothing is downloaded"):
        TokenExtractor(tmp_path / "nowhere")
    bert = transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    transformers.BertModel(bert).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match="DINOv2 or CLIP"):
        TokenExtractor(tmp_path / "bert")


# ---------------------------------------------------------------------------- command line


@pytest.mark.slow
def test_command_line_cells_train_predict_eval(data, tmp_path, capsys):
    from pylocalize.geo.cli import main, read_latlon_csv, write_latlon_csv

    h, train, test, xt, st, xe, _ = data
    write_latlon_csv(tmp_path / "train.csv", train)
    (tmp_path / "test.csv").write_text("id,LAT,LON\n" + "".join(f"{i},{a},{b}\n" for i, (a, b) in enumerate(test)))
    np.testing.assert_allclose(read_latlon_csv(tmp_path / "test.csv"), test)
    np.save(tmp_path / "xt.npy", xt)
    np.save(tmp_path / "xe.npy", xe)
    np.save(tmp_path / "st.npy", st)
    np.save(tmp_path / "et.npy", xt.mean(1))
    np.save(tmp_path / "ee.npy", xe.mean(1))
    d = str(tmp_path)
    assert main(["geo", "cells", "--gps", f"{d}/train.csv", "--out", f"{d}/cells.plc", "--max-images", "200", "60",
                 "--min-images", "5"]) == 0
    from pylocalize.geo import CellHierarchy

    np.testing.assert_array_equal(CellHierarchy.load(f"{d}/cells.plc").cell_ids[1], h.cell_ids[1])
    small = ["--d-model", "32", "--heads", "4", "--layers", "1", "--epochs", "2", "--batch-size", "128"]
    assert main(["geo", "train", "--gps", f"{d}/train.csv", "--cells", f"{d}/cells.plc", "--tokens", f"{d}/xt.npy",
                 "--scenes", f"{d}/st.npy", "--out", f"{d}/m.pt"] + small) == 0
    assert main(["geo", "predict", "--model", f"{d}/m.pt", "--tokens", f"{d}/xe.npy", "--out", f"{d}/pred.csv"]) == 0
    assert read_latlon_csv(f"{d}/pred.csv").shape == test.shape
    assert main(["geo", "train", "--model", "gallery", "--gps", f"{d}/train.csv", "--embeddings", f"{d}/et.npy",
                 "--out", f"{d}/g.plc"]) == 0
    assert main(["geo", "predict", "--gallery", f"{d}/g.plc", "--embeddings", f"{d}/ee.npy", "--out",
                 f"{d}/gpred.csv"]) == 0
    capsys.readouterr()
    assert main(["geo", "eval", "--pred", f"{d}/gpred.csv", "--gt", f"{d}/test.csv", "--figure", f"{d}/map.png",
                 "--background", f"{d}/train.csv"]) == 0
    out = capsys.readouterr().out
    assert "acc@2500km" in out and (tmp_path / "map.png").stat().st_size > 10_000


def test_command_line_refuses_bad_files(data, tmp_path, capsys):
    from pylocalize.geo.cli import main, read_latlon_csv, write_latlon_csv

    _, train, _, _, _, xe, _ = data
    d = str(tmp_path)
    write_latlon_csv(tmp_path / "train.csv", train)
    np.save(tmp_path / "xe.npy", xe)
    assert main(["geo", "cells", "--gps", f"{d}/train.csv", "--out", f"{d}/cells.plc", "--max-images", "200", "60",
                 "--min-images", "5"]) == 0
    capsys.readouterr()
    assert main(["geo", "predict", "--model", f"{d}/cells.plc", "--tokens", f"{d}/xe.npy", "--out", f"{d}/x.csv"]) == 2
    err = capsys.readouterr().err
    assert "pylocalize geo predict: error: --model" in err and "not a pylocalize geo checkpoint" in err
    (tmp_path / "bad.csv").write_text("name,x,y\na,1,2\n")
    with pytest.raises(ValueError, match="call them lat"):
        read_latlon_csv(tmp_path / "bad.csv")
