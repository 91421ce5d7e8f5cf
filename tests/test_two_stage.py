"""Two-stage search: SDC candidates in memory, exact re-ranking from a memory-mapped file."""

from __future__ import annotations

import numpy as np
import pytest

from pylocalize.datasets import clustered_queries, clustered_vectors
from pylocalize.index.two_stage import TwoStageIndex


def test_recall_memory_and_persistence(tmp_path):
    xb = clustered_vectors(20000, 64, seed=0)
    xq = clustered_queries(200, 64, seed=0)
    truth = np.argsort(-(xq @ xb.T), axis=1)[:, :10]
    index = TwoStageIndex(tmp_path / "idx", 64, bits_per_dim=2, candidates=100)
    index.add(xb[:12000])
    index.add(xb[12000:])  # vectors are appended to the file
    scores, ids = index.search(xq, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth)])
    assert recall >= 0.95
    np.testing.assert_allclose(scores, np.take_along_axis(xq @ xb.T, ids, 1), rtol=1e-5)  # exact scores
    assert index.memory_bytes * 16 == xb.nbytes  # 2 bits per dimension: 1/16 of float32
    index.save()
    loaded = TwoStageIndex.load(tmp_path / "idx")
    assert isinstance(loaded.vectors(), np.memmap) and len(loaded) == 20000
    np.testing.assert_array_equal(loaded.search(xq, 10)[1], ids)
    vectors_file, = (tmp_path / "idx").glob("vectors-*.f32")
    with open(vectors_file, "r+b") as f:  # a truncated vectors file is refused
        f.truncate(1000)
    with pytest.raises(ValueError, match="truncated"):
        TwoStageIndex.load(tmp_path / "idx")
    with pytest.raises(ValueError, match="not a saved TwoStageIndex"):
        TwoStageIndex.load(tmp_path)
    index.close()  # the folder's writer lets a new writer in
    fresh = TwoStageIndex(tmp_path / "idx", 64)  # a new index over an old folder starts empty
    assert len(fresh) == 0 and fresh.search(xq[:2], 3)[1].tolist() == [[-1] * 3] * 2
    with pytest.raises(ValueError, match=r"\(n, 64\)"):
        fresh.add(xb[:, :10])
    with pytest.raises(ValueError, match="finite"):
        fresh.add(np.full((2, 64), np.nan, np.float32))


def test_center_makes_non_negative_descriptors_searchable(tmp_path):
    # Non-negative vectors (like RootSIFT): raw signs are all positive, so uncentred
    # training-free codes cannot tell vectors apart; centring on the mean fixes that.
    xb = np.abs(clustered_vectors(5000, 32, seed=3))
    xq = np.abs(clustered_queries(100, 32, seed=3))
    truth = np.argsort(-(xq @ xb.T), axis=1)[:, :10]

    def recall(index):
        index.add(xb)
        ids = index.search(xq, 10)[1]
        return np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth)])

    raw = recall(TwoStageIndex(tmp_path / "raw", 32, bits_per_dim=1, candidates=50))
    centred = TwoStageIndex(tmp_path / "c", 32, bits_per_dim=1, candidates=50, center=xb.mean(0))
    assert recall(centred) > raw + 0.2
    centred.save()
    np.testing.assert_array_equal(TwoStageIndex.load(tmp_path / "c").center, xb.mean(0).astype(np.float32))
    with pytest.raises(ValueError, match="center must be 32"):
        TwoStageIndex(tmp_path / "bad", 32, center=np.zeros(3))


def test_save_to_another_folder_copies_the_index(tmp_path):
    xb = clustered_vectors(3000, 32, seed=1)
    xq = clustered_queries(50, 32, seed=1)
    index = TwoStageIndex(tmp_path / "a", 32, bits_per_dim=2, candidates=50, center=xb.mean(0))
    index.add(xb[:2000])
    index.save()
    index.add(xb[2000:])  # not committed in its own folder
    index.save(tmp_path / "b")
    index.save(tmp_path / "a")  # its own folder: a plain commit
    copy = TwoStageIndex.load(tmp_path / "b")
    assert len(copy) == 3000 and copy.candidates == 50
    np.testing.assert_array_equal(copy.center, index.center)
    np.testing.assert_array_equal(np.asarray(copy.vectors()), xb)
    for a, b in zip(index.search(xq, 10), copy.search(xq, 10)):
        np.testing.assert_array_equal(a, b)
    assert len(TwoStageIndex.load(tmp_path / "a")) == 3000
