"""Bag-of-words retrieval (index/bow.py and the core's inverted file) against numpy brute force."""

from __future__ import annotations

import numpy as np
import pytest

from pylocalize.index.bow import InvertedFile


def tfidf(counts: np.ndarray, idf: np.ndarray) -> np.ndarray:
    """Term frequency times idf, unit length: the scoring the inverted file must reproduce."""
    v = counts / np.maximum(counts.sum(-1, keepdims=True), 1e-12) * idf
    return (v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def brute_force(docs: np.ndarray, ids: np.ndarray, query: np.ndarray, k: int):
    """Scores and ids of the k best documents by dot product, ties to the smaller id."""
    scores = docs.astype(np.float64) @ query.astype(np.float64)
    order = np.lexsort((ids, -scores))[:k]
    return scores[order], ids[order]


def random_collection(rng, num_docs: int, num_words: int, words_per_doc: int = 30):
    """Word counts of documents drawing from a Zipf-like vocabulary, and their idf."""
    p = 1.0 / np.arange(1, num_words + 1)
    counts = np.stack([np.bincount(rng.choice(num_words, words_per_doc, p=p / p.sum()), minlength=num_words)
                       for _ in range(num_docs)]).astype(np.float32)
    idf = np.log(num_docs / np.maximum((counts > 0).sum(0), 1)).astype(np.float32)
    return counts, idf


def test_inverted_file_matches_dense_scoring():
    from pylocalize import _core

    rng = np.random.default_rng(3)
    docs = np.where(rng.random((50, 200)) < 0.05, rng.random((50, 200)), 0).astype(np.float32)
    index = _core.InvertedFile(200)
    for d, vector in enumerate(docs):
        words = np.flatnonzero(vector)
        index.add(words.astype(np.int64), vector[words], 100 + d)
    assert index.num_documents == 50 and index.num_entries == int((docs > 0).sum())
    for _ in range(5):
        query = np.where(rng.random(200) < 0.1, rng.random(200), 0).astype(np.float32)
        words = np.flatnonzero(query)
        scores, ids = index.search(words.astype(np.int64), query[words], 10)
        dense = docs @ query
        order = np.lexsort((np.arange(50), -dense))[:10]  # score descending, smaller id on ties
        np.testing.assert_array_equal(ids, 100 + order)
        np.testing.assert_allclose(scores, dense[order], rtol=1e-5)
    scores, ids = index.search(np.array([0], np.int64), np.array([1.0], np.float32), 60)
    assert ids[-1] == -1 and scores[-1] == -np.inf
    with pytest.raises(ValueError, match="outside"):
        index.add(np.array([200], np.int64), np.array([1.0], np.float32), 0)
    with pytest.raises(ValueError, match="differ in length"):
        index.search(np.array([1, 2], np.int64), np.array([1.0], np.float32), 3)
    assert index.num_documents == 50  # the failed add left the file unchanged


def test_tfidf_retrieval_matches_numpy():
    rng = np.random.default_rng(0)
    counts, idf = random_collection(rng, 120, 300)
    docs = tfidf(counts, idf)
    index = InvertedFile(300)
    index.add(docs)
    assert index.ntotal == len(index) == 120 and index.num_entries == int((docs != 0).sum())
    query_counts, _ = random_collection(rng, 8, 300)
    queries = tfidf(query_counts, idf)
    scores, ids = index.search(queries, 10)
    assert scores.shape == ids.shape == (8, 10) and scores.dtype == np.float32 and ids.dtype == np.int64
    for q in range(8):
        want_scores, want_ids = brute_force(docs, np.arange(120), queries[q], 10)
        np.testing.assert_allclose(scores[q], want_scores, rtol=1e-5, atol=1e-6)
        # an id may differ from brute force only where float32 sums tie within rounding
        differ = ids[q] != want_ids
        assert np.allclose(scores[q][differ], want_scores[differ], atol=1e-6)
    # a document is its own best match (unit vectors, cosine 1)
    _, self_ids = index.search(docs[:20], 1)
    np.testing.assert_array_equal(self_ids[:, 0], np.arange(20))


def test_ids_ties_and_padding():
    index = InvertedFile(6)
    vectors = np.array([[1, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]], np.float32)
    index.add(vectors, ids=np.array([7, 3, 5]))
    index.add(np.array([[0, 0, 2, 0, 0, 0]], np.float32))  # default id: after the largest so far
    scores, ids = index.search(np.array([[1, 0, 1, 0, 0, 0]], np.float32), 6)
    # 7 and 5 tie at 1: the smaller id first; two padded slots at the end
    np.testing.assert_array_equal(ids, [[8, 5, 7, 3, -1, -1]])
    np.testing.assert_array_equal(scores, [[2, 1, 1, 0, -np.inf, -np.inf]])
    # a query without words scores every document 0
    scores, ids = index.search(np.zeros((1, 6), np.float32), 2)
    np.testing.assert_array_equal(scores, [[0, 0]])
    np.testing.assert_array_equal(ids, [[3, 5]])
    # float64 and integer rows are accepted as float32
    scores, _ = index.search(np.array([[0, 0, 1, 0, 0, 0]]), 1)
    assert scores[0, 0] == 2


def test_argument_errors_say_the_fix():
    index = InvertedFile(5)
    with pytest.raises(ValueError, match=r"pass vectors\[None\]"):
        index.add(np.ones(5, np.float32))
    with pytest.raises(ValueError, match=r"shape \(n, 5\) \(one weight per vocabulary word\)"):
        index.add(np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="NaN or Inf: normalise"):
        index.add(np.full((1, 5), np.nan, np.float32))
    with pytest.raises(ValueError, match=r"ids must have shape \(2,\)"):
        index.add(np.ones((2, 5), np.float32), ids=np.array([1]))
    with pytest.raises(ValueError, match="ids must be >= 0"):
        index.add(np.ones((2, 5), np.float32), ids=np.array([1, -1]))
    with pytest.raises(ValueError, match="ids must be integers"):
        index.add(np.ones((1, 5), np.float32), ids=np.array([1.5]))
    assert index.ntotal == 0  # every refused add left the index empty
    with pytest.raises(ValueError, match="k must be >= 1"):
        index.search(np.ones((1, 5), np.float32), 0)
    with pytest.raises(ValueError, match="pass int"):
        index.search(np.ones((1, 5), np.float32), 2.0)
    with pytest.raises(ValueError, match="queries must have shape"):
        index.search(np.ones((1, 3), np.float32), 1)
    with pytest.raises(ValueError, match="num_words must be an int"):
        InvertedFile(5.0)
