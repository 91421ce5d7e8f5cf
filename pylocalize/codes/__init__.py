"""Binary and multi-bit codes: bit packing, training-free binarization, reconstruction.

Bit layout, shared by every code in pylocalize: bit ``j`` of a code is bit ``j % 8``
(least significant first) of byte ``j // 8``, i.e. ``np.packbits(..., bitorder="little")``.

Multi-bit codes (``bits_per_dim = u``) are ``u`` bit planes, plane-major, each plane
``ceil(dim / 8)`` bytes: plane 0 holds the signs, plane ``p`` the signs of the residual
left by the planes before it (recurrent binarization, "Binary Embedding-based Retrieval
at Tencent", Gan et al., KDD 2023). The reconstruction, up to a per-vector scale, is
``sum_p 2**-p * (2 * b_p - 1)``; :class:`pylocalize.MultiBitIndex` scores pairs of codes
by the cosine of their reconstructions (symmetric distance calculation).
"""

from __future__ import annotations

import numpy as np

from pylocalize import _core

__all__ = ["pack_bits", "unpack_bits", "binarize", "reconstruct"]


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Packs a boolean array ``(n, nbits)`` into codes ``uint8 (n, nbits / 8)``.

    Parameters
    ----------
    bits : numpy.ndarray of bool, shape (n, nbits)
        ``nbits`` must be a multiple of 8. A 1-D array is treated as one row.

    Returns
    -------
    numpy.ndarray of uint8, shape (n, nbits // 8)
    """
    bits = np.asarray(bits)
    if bits.dtype != np.bool_:
        raise ValueError(f"bits must be a bool array, got {bits.dtype}; use x > 0 or x.astype(bool)")
    if bits.ndim == 1:
        bits = bits[None, :]
    if bits.ndim != 2:
        raise ValueError(f"bits must be 2-D (n, nbits), got shape {bits.shape}")
    if bits.shape[1] % 8 != 0:
        raise ValueError(
            f"nbits = {bits.shape[1]} is not a multiple of 8; pad each row with zeros to a multiple of 8"
        )
    return np.ascontiguousarray(np.packbits(bits, axis=1, bitorder="little"))


def unpack_bits(codes: np.ndarray, nbits: int | None = None) -> np.ndarray:
    """Unpacks codes ``uint8 (n, code_size)`` into booleans ``(n, nbits)``.

    Parameters
    ----------
    codes : numpy.ndarray of uint8, shape (n, code_size)
    nbits : int, optional
        Number of bits to keep per row (default ``8 * code_size``).
    """
    codes = np.asarray(codes)
    if codes.dtype != np.uint8:
        raise ValueError(f"codes must be uint8, got {codes.dtype}; use codes.astype(np.uint8)")
    if codes.ndim != 2:
        raise ValueError(f"codes must be 2-D (n, code_size), got shape {codes.shape}")
    total = 8 * codes.shape[1]
    if nbits is None:
        nbits = total
    if not 0 < nbits <= total:
        raise ValueError(f"nbits must be in 1..{total} for codes of {codes.shape[1]} bytes, got {nbits}")
    return np.unpackbits(codes, axis=1, count=nbits, bitorder="little").astype(bool)


def binarize(x: np.ndarray, bits_per_dim: int) -> np.ndarray:
    """Training-free recurrent binarization of float vectors into multi-bit codes.

    Per vector, with ``alpha = mean(|x|)``: plane 0 is ``x >= 0``; plane ``p`` is the sign
    of ``x - alpha * sum_{i<p} 2**-i * s_i`` where ``s_i = 2 b_i - 1``. With
    ``bits_per_dim = 1`` these are plain sign codes.

    Parameters
    ----------
    x : numpy.ndarray of float32, shape (n, dim)
    bits_per_dim : int
        1 to 4.

    Returns
    -------
    numpy.ndarray of uint8, shape (n, bits_per_dim * ceil(dim / 8))
        Plane-major codes in the layout :class:`pylocalize.MultiBitIndex` takes.
    """
    return _core.binarize(x, int(bits_per_dim))


def reconstruct(codes: np.ndarray, dim: int, bits_per_dim: int) -> np.ndarray:
    """Decodes multi-bit codes to their unit-scale reconstructions ``float32 (n, dim)``.

    The cosine of two reconstructions is the SDC score :class:`pylocalize.MultiBitIndex`
    ranks by.
    """
    codes = np.asarray(codes)
    plane_bytes = (int(dim) + 7) // 8
    if codes.ndim != 2 or codes.shape[1] != bits_per_dim * plane_bytes:
        raise ValueError(
            f"codes must have shape (n, {bits_per_dim * plane_bytes}) for dim={dim}, "
            f"bits_per_dim={bits_per_dim}; got {codes.shape}"
        )
    out = np.zeros((codes.shape[0], dim), dtype=np.float32)
    for p in range(bits_per_dim):
        plane = unpack_bits(np.ascontiguousarray(codes[:, p * plane_bytes:(p + 1) * plane_bytes]), dim)
        out += np.float32(2.0 ** -p) * (2.0 * plane - 1.0).astype(np.float32)
    return out
