"""Bag-of-words retrieval: an inverted file over sparse word-weight vectors (tf-idf).

Documents (object templates, database images) are vectors over a visual vocabulary; most
of their entries are zero. The core keeps one posting list per word and scores a query by
the dot product, visiting only the lists of the words the query holds, so a search costs
what the query's words cost rather than what the whole collection costs. With tf-idf
vectors normalised to unit length (:meth:`pylocalize.objects.BagOfWords.tfidf`) the dot
product is the cosine similarity of the bags of words.

The verbs follow the other indexes (:class:`pylocalize.BinaryIndex`): ``add`` rows with
optional ids, ``search`` ``k`` per query, best first, ties to the smaller id, padded with
``(-inf, -1)``.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from pylocalize import _core
from pylocalize.index._args import as_ids
from pylocalize.index._args import int_scalar as _int_scalar


def _as_rows(x, num_words: int, name: str) -> np.ndarray:
    """``x`` as float32 ``(n, num_words)``, refusing other shapes and NaN or Inf."""
    a = np.asarray(x)
    if a.dtype.kind not in "fiu":
        raise ValueError(f"{name} must hold numbers, got dtype {a.dtype}")
    a = a.astype(np.float32, copy=False)
    if a.ndim == 1:
        raise ValueError(f"{name} must have shape (n, {num_words}), got {a.shape}; "
                         f"pass {name}[None] for a single vector")
    if a.ndim != 2 or a.shape[1] != num_words:
        raise ValueError(f"{name} must have shape (n, {num_words}) (one weight per vocabulary word), got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds NaN or Inf: normalise with a floor on the norm, e.g. "
                         f"v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)")
    return a


def _sparse(row: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    words = np.flatnonzero(row)
    return words.astype(np.int64), np.ascontiguousarray(row[words], dtype=np.float32)


class InvertedFile:
    """Dot-product retrieval over bag-of-words vectors (the core's ``InvertedFile``).

    Parameters
    ----------
    num_words : int
        Vocabulary size: every vector has one weight per word.

    Notes
    -----
    Vectors are given dense, ``float32 (n, num_words)``, as tf-idf code produces them; only
    their non-zero entries are stored. Thread safety: searches may run concurrently with
    each other and with ``add`` (the core serialises changes, and a search sees a document
    entirely or not at all).

    Examples
    --------
    >>> import numpy as np
    >>> from pylocalize.index.bow import InvertedFile
    >>> index = InvertedFile(4)
    >>> index.add(np.array([[1, 0, 0, 0], [0.6, 0.8, 0, 0]], np.float32))
    >>> scores, ids = index.search(np.array([[0, 1, 0, 0]], np.float32), k=2)
    >>> ids.tolist()
    [[1, 0]]
    """

    def __init__(self, num_words: int):
        self._impl = _core.InvertedFile(_int_scalar(num_words, "num_words"))
        self._next_id = 0

    @property
    def num_words(self) -> int:
        """Vocabulary size."""
        return self._impl.num_words

    @property
    def ntotal(self) -> int:
        """Number of documents in the index."""
        return self._impl.num_documents

    @property
    def num_entries(self) -> int:
        """Stored (document, word) pairs: the non-zero weights of every document."""
        return self._impl.num_entries

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        return f"InvertedFile(num_words={self.num_words}, ntotal={self.ntotal}, num_entries={self.num_entries})"

    def add(self, vectors: np.ndarray, ids: Optional[np.ndarray] = None) -> None:
        """Adds documents.

        Parameters
        ----------
        vectors : float32 (n, num_words)
            Word weights of each document (e.g. tf-idf); zeros are not stored.
        ids : int64 (n,), optional
            Ids returned by searches, ``>= 0`` (``-1`` marks empty result slots). Default:
            consecutive ids after the largest id added so far (0, 1, 2, ... when fresh).

        Every row and id is checked before the first is added, so a refused call leaves the
        index unchanged.
        """
        vectors = _as_rows(vectors, self.num_words, "vectors")
        if ids is None:
            ids = np.arange(self._next_id, self._next_id + len(vectors), dtype=np.int64)
        else:
            ids = as_ids(ids)
            if ids.shape != (len(vectors),):
                raise ValueError(f"ids must have shape ({len(vectors)},), one per vector, got {ids.shape}")
            if len(ids) and ids.min() < 0:
                raise ValueError(f"ids must be >= 0 (-1 marks empty result slots), got {ids.min()}")
        for row, doc_id in zip(vectors, ids):
            words, weights = _sparse(row)
            self._impl.add(words, weights, int(doc_id))
        if len(ids):
            self._next_id = max(self._next_id, int(ids.max()) + 1)

    def search(self, queries: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """The ``k`` documents with the largest dot product with each query.

        Parameters
        ----------
        queries : float32 (nq, num_words)
        k : int
            Number of results, ``>= 1``; may exceed ``ntotal``.

        Returns
        -------
        scores : float32 (nq, k)
            Dot products, descending; ``-inf`` in padded slots.
        ids : int64 (nq, k)
            Document ids, ties to the smaller id; ``-1`` in padded slots.
        """
        queries = _as_rows(queries, self.num_words, "queries")
        k = _int_scalar(k, "k")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        scores = np.empty((len(queries), k), np.float32)
        ids = np.empty((len(queries), k), np.int64)
        for i, row in enumerate(queries):
            words, weights = _sparse(row)
            scores[i], ids[i] = self._impl.search(words, weights, k)
        return scores, ids
