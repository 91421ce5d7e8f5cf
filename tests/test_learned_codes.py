"""Learned recurrent binarization (torch extra): layout, training, persistence, errors."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pylocalize  # noqa: E402
from pylocalize.codes.learned import BinarizerOptions, RecurrentBinarizer, fit_binarizer  # noqa: E402
from pylocalize.index.metrics import recall_at  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def anisotropic(n, dim, seed):
    """Clustered vectors with a decaying spectrum, rotated and off-centre: raw signs waste bits."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(100, dim))
    x = centres[rng.integers(0, 100, n)] + 0.5 * rng.normal(size=(n, dim))
    x = x * np.exp(-np.arange(dim) / (dim / 5))
    q, _ = np.linalg.qr(np.random.default_rng(99).normal(size=(dim, dim)))
    return (x @ q + 0.3).astype(np.float32)


def cosine_truth(xb, xq, k=10):
    a = xb / np.linalg.norm(xb, axis=1, keepdims=True)
    b = xq / np.linalg.norm(xq, axis=1, keepdims=True)
    return np.argsort(-(b @ a.T), axis=1)[:, :k]


def search(codes_b, codes_q, dim, bits):
    index = pylocalize.MultiBitIndex(dim, bits)
    index.add(codes_b)
    return index.search(codes_q, 10)[1]


@pytest.mark.slow
def test_trained_one_bit_codes_beat_sign_codes():
    x = anisotropic(8000, 32, seed=0)
    xb, xq = x[:7500], x[7500:]
    truth = cosine_truth(xb, xq)
    sign = recall_at(10, search(pylocalize.binarize(xb, 1), pylocalize.binarize(xq, 1), 32, 1), truth)
    model = RecurrentBinarizer(32, 32, 1, hidden=64, seed=0).fit(xb, epochs=10, batch_size=256, seed=0)
    learned = recall_at(10, search(model.encode(xb), model.encode(xq), 32, 1), truth)
    assert learned > sign + 0.03, (learned, sign)
    assert len(model.history) >= 1 and np.isfinite(model.history).all()


@pytest.mark.slow
def test_layout_and_persistence(tmp_path):
    x = anisotropic(600, 24, seed=1)
    model = RecurrentBinarizer(24, 20, 3, hidden=32, seed=2)  # out_dim not a multiple of 8
    codes = model.encode(x)
    assert codes.shape == (600, 3 * 3) and codes.dtype == np.uint8
    # the padding bits of every plane stay zero, as in pack_bits of 20 bits padded to 24
    planes = pylocalize.unpack_bits(codes).reshape(600, 3, 24)
    assert not planes[:, :, 20:].any()
    index = pylocalize.MultiBitIndex(20, 3)
    index.add(codes)
    _, ids = index.search(codes[:5], 1)
    assert (ids[:, 0] == np.arange(5)).all() or len(np.unique(codes[:5], axis=0)) < 5
    model.fit(x, epochs=1, batch_size=128)
    model.save(tmp_path / "b.pt")
    loaded = RecurrentBinarizer.load(tmp_path / "b.pt")
    np.testing.assert_array_equal(loaded.encode(x), model.encode(x))


def test_bad_inputs_and_files_need_no_training(tmp_path):
    x = anisotropic(600, 24, seed=1)
    model = RecurrentBinarizer(24, 20, 3, hidden=32, seed=2)
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a saved RecurrentBinarizer"):
        RecurrentBinarizer.load(tmp_path / "junk.pt")
    with pytest.raises(ValueError, match=r"\(n, 24\)"):
        model.encode(x[:, :10])
    with pytest.raises(ValueError, match="floating point"):
        model.encode(x.astype(np.int32))
    with pytest.raises(ValueError, match="bits_per_dim"):
        RecurrentBinarizer(24, 24, 5)
    with pytest.raises(ValueError, match="out_dim"):
        RecurrentBinarizer(24, 32, 1)
    # compatible training: the old model's layout and rows are checked before any work
    xb = anisotropic(600, 16, seed=4)
    old = RecurrentBinarizer(16, 16, 2, hidden=32, seed=0)
    with pytest.raises(ValueError, match="share a layout"):
        RecurrentBinarizer(16, 8, 2).fit(xb, epochs=1, compatible_with=old)
    with pytest.raises(ValueError, match="row for row"):
        RecurrentBinarizer(16, 16, 2).fit(xb, epochs=1, compatible_with=old, old_x=xb[:10])
    # layouts of a code length: refused before any layout is fitted
    xb = anisotropic(600, 32, seed=8)
    with pytest.raises(ValueError, match="no layout"):
        fit_binarizer(xb, 12)
    with pytest.raises(ValueError, match="no layout"):
        fit_binarizer(xb, 256)  # 4 bits x 32 dims is the most
    with pytest.raises(ValueError, match="old model's layout"):
        fit_binarizer(xb, 64, compatible_with=RecurrentBinarizer(32, 32, 2, hidden=32, seed=0))


BAD_OPTIONS = [(dict(init="pca"), "init must be"), (dict(objective="triplet"), "objective must be"),
               (dict(neighbours=5, per_anchor=6), "per_anchor"), (dict(teacher_temperature=0), "temperatures"),
               (dict(temperature=-0.1), "temperatures"), (dict(compatibility_weight=0), "compatibility_weight"),
               (dict(lr=0.0), "lr must be"), (dict(epochs=-1), "epochs must be"), (dict(batch_size=0), "batch_size"),
               (dict(validation=1.0), "validation must be")]


@pytest.mark.parametrize("bad, message", BAD_OPTIONS, ids=[m for _, m in BAD_OPTIONS])
def test_bad_options_fail_before_any_work(bad, message, monkeypatch):
    from pylocalize.codes import learned

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the options were checked")

    # the principal components, the ITQ start and the neighbour mining are the first work
    monkeypatch.setattr(np.linalg, "svd", no_work)
    monkeypatch.setattr(learned, "assign", no_work)
    monkeypatch.setattr(RecurrentBinarizer, "_check", no_work)  # not even the embeddings are read
    model = RecurrentBinarizer(32, 16, 2, hidden=8, seed=0)
    with pytest.raises(ValueError, match=message):
        BinarizerOptions(**bad)
    with pytest.raises(ValueError, match=message):
        model.fit(anisotropic(600, 32, seed=0), **bad)
    with pytest.raises(ValueError, match=message):
        model.fit(anisotropic(600, 32, seed=0), BinarizerOptions(epochs=2), **bad)
    with pytest.raises(ValueError, match=message):
        fit_binarizer(anisotropic(600, 32, seed=0), 64, **bad)
    assert model.history == [] and not model.mean.any()


def test_options_object_and_keywords_fit_the_same():
    x = anisotropic(800, 16, seed=11)
    options = BinarizerOptions(epochs=1, batch_size=128, seed=3, objective="reconstruction")
    by_object = RecurrentBinarizer(16, 8, 2, hidden=16, seed=0).fit(x, options)
    by_keywords = RecurrentBinarizer(16, 8, 2, hidden=16, seed=0).fit(x, epochs=1, batch_size=128, seed=3,
                                                                     objective="reconstruction")
    overridden = RecurrentBinarizer(16, 8, 2, hidden=16, seed=0).fit(x, BinarizerOptions(epochs=5), epochs=1,
                                                                     batch_size=128, seed=3, objective="reconstruction")
    assert by_object.history == by_keywords.history == overridden.history
    np.testing.assert_array_equal(by_object.encode(x), by_keywords.encode(x))
    np.testing.assert_array_equal(by_object.encode(x), overridden.encode(x))
    assert options.learning_rate == 2e-3 and options.code_temperature == 0.05
    assert BinarizerOptions().learning_rate == 1e-4 and BinarizerOptions(lr=0.5).learning_rate == 0.5
    with pytest.raises(TypeError):
        RecurrentBinarizer(16, 8, 2).fit(x, epoch=3)  # a misspelt option is refused, not ignored
    with pytest.raises(ValueError, match="BinarizerOptions"):
        RecurrentBinarizer(16, 8, 2).fit(x, {"epochs": 3})


@pytest.mark.slow
def test_two_stage_index_with_learned_codes(tmp_path):
    from pylocalize.index.two_stage import TwoStageIndex

    x = anisotropic(3000, 32, seed=3)
    model = RecurrentBinarizer(32, 24, 2, hidden=32, seed=0)
    index = TwoStageIndex(tmp_path / "idx", 32, bits_per_dim=2, binarizer=model, candidates=300)
    index.add(x)
    scores, ids = index.search(x[:20], 5)
    # re-ranked scores are the exact inner products, best first
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", x[:20], x[ids]), rtol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()
    index.save()
    loaded = TwoStageIndex.load(tmp_path / "idx")
    assert loaded.binarizer is not None and loaded.codes.dim == 24
    np.testing.assert_array_equal(loaded.search(x[:20], 5)[1], index.search(x[:20], 5)[1])
    with pytest.raises(ValueError, match="binarizer maps"):
        TwoStageIndex(tmp_path / "other", 64, bits_per_dim=2, binarizer=model)


@pytest.mark.slow
def test_compatible_training_searches_the_old_index():
    # The embedding model changed: new embeddings are the old ones in another basis. The
    # old index holds the old binarizer's codes of old embeddings; queries come as new
    # embeddings through a new binarizer.
    old_x = anisotropic(2600, 16, seed=4)
    rotation, _ = np.linalg.qr(np.random.default_rng(5).normal(size=(16, 16)))
    new_x = (old_x @ rotation).astype(np.float32)
    truth = cosine_truth(old_x[:2400], old_x[2400:])
    fit = dict(epochs=30, batch_size=128, lr=5e-3, seed=1)
    old = RecurrentBinarizer(16, 16, 2, hidden=32, seed=0).fit(old_x[:2400], **fit)
    old_codes = old.encode(old_x[:2400])
    same = recall_at(10, search(old_codes, old.encode(old_x[2400:]), 16, 2), truth)
    alone = RecurrentBinarizer(16, 16, 2, hidden=32, seed=1).fit(new_x[:2400], **fit)
    lost = recall_at(10, search(old_codes, alone.encode(new_x[2400:]), 16, 2), truth)
    compatible = RecurrentBinarizer(16, 16, 2, hidden=32, seed=1).fit(
        new_x[:2400], compatible_with=old, old_x=old_x[:2400], **fit)
    kept = recall_at(10, search(old_codes, compatible.encode(new_x[2400:]), 16, 2), truth)
    # stated margin: new queries on the old index keep >= 80 % of the old model's own recall (88 % measured)
    assert kept >= 0.8 * same and kept > lost + 0.2, (kept, same, lost)


@pytest.mark.slow
def test_itq_start_is_the_training_free_code_of_rotated_data_and_beats_it():
    x = anisotropic(6000, 32, seed=6)
    xb, xq = x[:5600], x[5600:]
    # epochs=0: the ITQ start itself, which is exactly binarize() of the rotated data,
    # centred by the picked share of the mean
    model = RecurrentBinarizer(32, 32, 2, hidden=32, seed=0).fit(xb, epochs=0, batch_size=256, seed=0)
    weight = model.net.encoders[0].linear.weight.detach().numpy()
    np.testing.assert_allclose(weight @ weight.T, np.eye(32), atol=1e-5)  # a rotation
    assert model.centring in (0.0, 0.25, 0.5, 0.75, 1.0)
    rotated = ((xb - model.centring * model.mean) @ weight.T).astype(np.float32)
    assert 1.0 <= float(model.net.threshold) <= 1.4  # the split point picked on held-out recall
    model.net.threshold.fill_(1.0)  # the training-free rule's split point
    assert (model.encode(xb) != pylocalize.binarize(rotated, 2)).mean() < 1e-3  # float rounding at zero only
    truth = cosine_truth(xb, xq)
    centred = xb.mean(0)
    free = recall_at(10, search(pylocalize.binarize(xb - centred, 2), pylocalize.binarize(xq - centred, 2), 32, 2),
                     truth)
    trained = RecurrentBinarizer(32, 32, 2, hidden=32, seed=0).fit(xb, epochs=4, batch_size=256, seed=0)
    learned = recall_at(10, search(trained.encode(xb), trained.encode(xq), 32, 2), truth)
    # uncentred random init used to land far below training-free codes; the ITQ start does not
    assert learned > free, (learned, free)


@pytest.mark.slow
def test_neighbour_distillation_improves_on_the_start_and_reconstruction_does_not():
    x = anisotropic(6000, 32, seed=6)
    xb, xq = x[:5600], x[5600:]
    truth = cosine_truth(xb, xq)

    def fitted(**kw):
        model = RecurrentBinarizer(32, 32, 2, hidden=32, seed=0).fit(xb, batch_size=256, seed=0, **kw)
        return model, recall_at(10, search(model.encode(xb), model.encode(xq), 32, 2), truth)

    start, at_start = fitted(epochs=0)
    distilled, after = fitted(epochs=8, objective="neighbours")
    # measured 0.584 -> 0.608 on the held-out queries, 0.721 -> 0.748 on the held-out split
    assert after > at_start + 0.01, (after, at_start)
    assert max(distilled.history) > distilled.history[0] + 0.01
    # the reconstruction loss only lowers held-out recall from this start: early stopping keeps the start
    recon, kept = fitted(epochs=4, objective="reconstruction")
    assert max(recon.history[1:]) < recon.history[0] and kept == at_start


@pytest.mark.slow
def test_fit_binarizer_spends_the_code_length_on_the_best_layout():
    # a decaying spectrum: 64 bits are better spent as 16 dims x 4 bits than 32 x 2
    x = anisotropic(6000, 32, seed=8)
    xb, xq = x[:5600], x[5600:]
    truth = cosine_truth(xb, xq)
    model = fit_binarizer(xb, 64, hidden=32, epochs=0, batch_size=256)
    assert set(model.layout_scores) == {(32, 2), (16, 4)}  # 64 x 1 exceeds the 32 input dims
    assert (model.out_dim, model.bits_per_dim) == max(model.layout_scores, key=model.layout_scores.get)
    codes = model.encode(xb)
    assert codes.shape == (len(xb), 8)  # 64 bits, whole bytes
    chosen = recall_at(10, search(codes, model.encode(xq), model.out_dim, model.bits_per_dim), truth)
    full = RecurrentBinarizer(32, 32, 2, hidden=32, seed=0).fit(xb, epochs=0, batch_size=256)
    full_recall = recall_at(10, search(full.encode(xb), full.encode(xq), 32, 2), truth)
    free = recall_at(10, search(pylocalize.binarize(xb - xb.mean(0), 2), pylocalize.binarize(xq - xb.mean(0), 2),
                                32, 2), truth)
    assert chosen > full_recall > free, (chosen, full_recall, free)


@pytest.mark.slow
def test_centring_is_picked_for_cosine_truth_of_uncentred_embeddings():
    # unit embeddings whose projections on a common direction vary from item to item (as
    # sentence embeddings' do), ranked by raw cosine: subtracting the whole mean ranks by a
    # different quantity, and the fit picks a partial centring that recalls more
    rng = np.random.default_rng(9)
    x = rng.normal(size=(6000, 32)) * np.exp(-np.arange(32) / 10)
    common = rng.normal(size=32)
    common /= np.linalg.norm(common)
    x -= np.outer(x @ common, common)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    share = rng.uniform(0, 0.9, size=(6000, 1))
    x = (x * np.sqrt(1 - share ** 2) + share * common).astype(np.float32)
    xb, xq = x[:5600], x[5600:]
    truth = cosine_truth(xb, xq)
    model = RecurrentBinarizer(32, 32, 2, hidden=32, seed=0).fit(xb, epochs=0, batch_size=256)
    picked = recall_at(10, search(model.encode(xb), model.encode(xq), 32, 2), truth)
    first = model.net.encoders[0].linear
    with torch.no_grad():  # the same start, fully centred
        first.bias.copy_(first.bias - (1 - model.centring) * (first.weight @ torch.from_numpy(model.mean)))
    centred = recall_at(10, search(model.encode(xb), model.encode(xq), 32, 2), truth)
    assert model.centring < 1.0 and picked > centred + 0.01, (model.centring, picked, centred)


@pytest.mark.slow
def test_compatible_update_on_the_same_embeddings_starts_from_the_old_codes():
    x = anisotropic(4000, 16, seed=10)
    old = RecurrentBinarizer(16, 16, 2, hidden=32, seed=0).fit(x[:1500], epochs=2, batch_size=128)
    start = RecurrentBinarizer(16, 16, 2, hidden=32, seed=3).fit(x[:3600], epochs=0, batch_size=128,
                                                                compatible_with=old)
    np.testing.assert_array_equal(start.encode(x), old.encode(x))  # no old_x: a copy of the old model
    new = RecurrentBinarizer(16, 16, 2, hidden=32, seed=3).fit(x[:3600], epochs=3, batch_size=128,
                                                              compatible_with=old)
    truth = cosine_truth(x[:3600], x[3600:])
    old_codes = old.encode(x[:3600])
    same = recall_at(10, search(old_codes, old.encode(x[3600:]), 16, 2), truth)
    kept = recall_at(10, search(old_codes, new.encode(x[3600:]), 16, 2), truth)
    assert kept >= 0.95 * same, (kept, same)
