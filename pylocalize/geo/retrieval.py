"""Retrieval geo-localization: kNN of an image embedding in a geotagged gallery.

A query takes the GPS its nearest gallery images agree on. The ``k`` neighbours (exact
float kNN through the core's :func:`pylocalize.assign` on L2-normalised embeddings, or
Hamming kNN through :class:`pylocalize.BinaryIndex` on sign codes) vote with weights
``w_j = exp((s_j - s_max) / temperature)`` of their cosine similarity ``s_j``; each
neighbour's location is scored by the weighted kernel density of the neighbours around it,
``score_i = sum_j w_j exp(kappa (u_i . u_j - 1))``, a von Mises–Fisher kernel on the unit
sphere with ``kappa = (R / bandwidth)^2`` (a Gaussian of the great-circle distance with
standard deviation ``bandwidth`` near the mode). The best-scoring neighbour is the mode;
one mean-shift step (the kernel-weighted mean on the sphere) refines it. With ``k = 1``
this is plain nearest-neighbour GPS (Im2GPS; Hays and Efros, CVPR 2008); the density vote
is what Vo et al. (ICCV 2017) and GeoCLIP's gallery do in spirit, not a copy of either.

The similarity of sign codes is estimated as ``1 - 2 h / nbits`` from the Hamming distance
``h``, which ranks like the cosine only roughly: binary search trades accuracy for 32x
smaller galleries.
"""

from __future__ import annotations

import json
import os
from typing import Tuple

import numpy as np

from pylocalize import _core
from pylocalize._core import FormatError
from pylocalize.codes import pack_bits
from pylocalize.containers import LAYOUT_ERRORS
from pylocalize.geo.cells import check_latlon, latlon_to_xyz, xyz_to_latlon
from pylocalize.geo.metrics import EARTH_RADIUS_KM
from pylocalize.index import BinaryIndex

FORMAT_TAG = "GeoGallery"
# Layout version of a saved gallery; bumped when sections or meta change.
GALLERY_VERSION = 1


def _check_embeddings(x, name: str, dim=None, normalize: bool = True) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or (dim is not None and x.shape[1] != dim):
        want = f"(n, {dim})" if dim is not None else "(n, dim)"
        raise ValueError(f"{name} must be {want} float embeddings, got shape {x.shape}")
    if x.dtype.kind != "f":
        raise ValueError(f"{name} must be floating point, got {x.dtype}; convert with .astype(np.float32)")
    x = np.ascontiguousarray(x, np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contain NaN or Inf; drop or recompute those embeddings")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError(f"{name} has all-zero rows, which have no direction; drop them")
    # a saved gallery is already unit length; normalising again would move the last bit
    return np.ascontiguousarray(x / norms) if normalize else x


def kernel_mode(neighbour_latlon: np.ndarray, similarities: np.ndarray, valid: np.ndarray,
                bandwidth_km: float = 25.0, temperature: float = 0.05, refine: bool = True) -> np.ndarray:
    """The kernel-weighted mode on the sphere of each row of neighbour locations.

    Parameters
    ----------
    neighbour_latlon : float (n, k, 2)
        Degrees.
    similarities : float (n, k)
        Cosine similarities of the neighbours (higher is closer).
    valid : bool (n, k)
        Neighbours that exist (kNN rows may be padded).
    bandwidth_km, temperature : float
    refine : bool
        One mean-shift step from the best neighbour.

    Returns
    -------
    float64 (n, 2)
        Latitude, longitude degrees; NaN for rows without a valid neighbour.
    """
    n, k = similarities.shape
    u = latlon_to_xyz(neighbour_latlon.reshape(-1, 2)).reshape(n, k, 3)
    s = np.where(valid, similarities, -np.inf)
    s_max = s.max(1, keepdims=True)
    w = np.where(valid, np.exp((s - np.where(np.isfinite(s_max), s_max, 0)) / temperature), 0.0)
    kappa = (EARTH_RADIUS_KM / bandwidth_km) ** 2
    kernel = np.exp(kappa * (np.einsum("nid,njd->nij", u, u) - 1.0))
    score = np.einsum("nij,nj->ni", kernel, w)
    score = np.where(valid, score, -np.inf)
    best = np.argmax(score, 1)
    rows = np.arange(n)
    if refine:
        weight = kernel[rows, best] * w
        point = np.einsum("nj,njd->nd", weight, u)
    else:
        point = u[rows, best]
    out = xyz_to_latlon(point)
    out[~valid.any(1)] = np.nan
    return out


class GeoGallery:
    """A geotagged gallery of image embeddings that geo-localizes queries by kNN.

    Parameters
    ----------
    embeddings : float (n, dim)
        Gallery embeddings; L2-normalised here.
    latlon : float (n, 2)
        Their GPS, latitude and longitude degrees.
    binary : bool
        Search sign codes (``dim`` bits, padded to a multiple of 8) with
        :class:`pylocalize.BinaryIndex` instead of float vectors.
    """

    def __init__(self, embeddings, latlon, binary: bool = False):
        self._init(_check_embeddings(embeddings, "gallery embeddings"), latlon, binary)

    def _init(self, embeddings: np.ndarray, latlon, binary: bool) -> None:
        self.embeddings = embeddings
        self.latlon = check_latlon(latlon)
        if len(self.latlon) != len(self.embeddings):
            raise ValueError(f"{len(self.embeddings)} embeddings but {len(self.latlon)} GPS rows: give one per image")
        if len(self.embeddings) == 0:
            raise ValueError("an empty gallery cannot localize anything: give at least one image")
        self.binary = bool(binary)
        self.dim = int(self.embeddings.shape[1])
        self._index = None
        if self.binary:
            self._index = BinaryIndex(self.nbits)
            self._index.add(self._codes(self.embeddings))

    @property
    def nbits(self) -> int:
        """Bits per sign code (``dim`` rounded up to a multiple of 8)."""
        return -(-self.dim // 8) * 8

    def __len__(self) -> int:
        return len(self.embeddings)

    def __repr__(self) -> str:
        return f"GeoGallery({len(self)} images, dim={self.dim}, {'binary' if self.binary else 'float'})"

    def _codes(self, x: np.ndarray) -> np.ndarray:
        return pack_bits(np.pad(x > 0, ((0, 0), (0, self.nbits - self.dim))))

    def search(self, query_embeddings, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar gallery images of each query.

        Returns
        -------
        similarities : float32 (nq, k)
            Cosine similarity (float search) or its Hamming estimate (binary search),
            best first; ``-inf`` in padded slots.
        ids : int64 (nq, k)
            Gallery rows, ``-1`` in padded slots.
        """
        q = _check_embeddings(query_embeddings, "query embeddings", self.dim)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        if self.binary:
            dist, ids = self._index.search(self._codes(q), int(k))
            sim = (1.0 - 2.0 * dist.astype(np.float32) / self.nbits).astype(np.float32)
        else:
            kk = min(int(k), len(self))
            ids, d2 = _core.assign(q, self.embeddings, kk)
            sim = (1.0 - 0.5 * d2).astype(np.float32)  # unit vectors: |a - b|^2 = 2 - 2 cos
            if kk < k:
                ids = np.pad(ids, ((0, 0), (0, k - kk)), constant_values=-1)
                sim = np.pad(sim, ((0, 0), (0, k - kk)), constant_values=-np.inf)
        sim = np.where(ids >= 0, sim, -np.inf).astype(np.float32)
        return sim, ids.astype(np.int64)

    def predict(self, query_embeddings, k: int = 10, bandwidth_km: float = 25.0, temperature: float = 0.05,
                refine: bool = True) -> np.ndarray:
        """GPS ``float64 (nq, 2)`` of each query: the kernel-weighted mode of its ``k``
        neighbours' locations (see the module docstring)."""
        if bandwidth_km <= 0 or temperature <= 0:
            raise ValueError(f"bandwidth_km and temperature must be positive, got {bandwidth_km}, {temperature}")
        sim, ids = self.search(query_embeddings, k)
        valid = ids >= 0
        neighbours = self.latlon[np.maximum(ids, 0)]
        return kernel_mode(neighbours, np.where(valid, sim, 0.0), valid, bandwidth_km, temperature, refine)

    # ------------------------------------------------------------------ files

    def save(self, path) -> None:
        """Writes the gallery as one versioned pylocalize container, atomically."""
        info = {"kind": "geotagged embeddings"}
        sections = {"info": np.frombuffer(json.dumps(info).encode("utf-8"), np.uint8).copy(),
                    "embeddings": self.embeddings, "latlon": self.latlon}
        meta = {"gallery_version": GALLERY_VERSION, "binary": int(self.binary), "dim": self.dim}
        _core.write_container(os.fspath(path), FORMAT_TAG, meta, sections)

    @classmethod
    def load(cls, path) -> "GeoGallery":
        """Reads :meth:`save` output; a corrupt file, another version or another kind of file
        raises :class:`pylocalize.FormatError`."""
        tag, _, meta, sec = _core.read_container(os.fspath(path))
        if tag != FORMAT_TAG:
            raise FormatError(f"{path} holds a {tag}, not a {FORMAT_TAG}")
        if meta.get("gallery_version", 0) != GALLERY_VERSION:
            raise FormatError(f"{path} is a gallery of version {meta.get('gallery_version', 0)}; this pylocalize "
                              f"reads version {GALLERY_VERSION}: build the gallery again")
        try:
            if sec["embeddings"].shape[1:] != (meta["dim"],):
                raise ValueError(f"embeddings of shape {sec['embeddings'].shape}, dim {meta['dim']}")
            gallery = cls.__new__(cls)
            gallery._init(_check_embeddings(sec["embeddings"], "saved embeddings", normalize=False), sec["latlon"],
                          bool(meta["binary"]))
            return gallery
        except LAYOUT_ERRORS as error:
            raise FormatError(f"{path}: not a valid {FORMAT_TAG} ({error})") from error


__all__ = ["GeoGallery", "kernel_mode"]
