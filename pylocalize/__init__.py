"""pylocalize: visual localization and geometric retrieval on a fast C++ core.

The core (``pylocalize._core``) holds the search kernels; this package names the public
API. Main names:

- :class:`CANNIndex` — image retrieval from local features (constrained nearest neighbours).
- :class:`CANNPQIndex` — the same over product-quantized features (32-byte codes).
- :class:`BinaryIndex` — exact Hamming k-NN / range search over binary codes.
- :class:`MultiBitIndex`, :func:`binarize` — multi-bit codes scored by symmetric
  distance calculation (SDC), with optional exact re-ranking.
- :func:`pack_bits`, :func:`unpack_bits` — bit packing in the core's layout.
- :func:`set_num_threads`, :func:`get_num_threads`, :func:`simd_level`, :func:`has_cuda`,
  :func:`cuda_built`.
- :class:`FormatError` — a file that is not a valid pylocalize container.
"""

from pylocalize._core import FormatError, __version__
from pylocalize.codes import binarize, pack_bits, reconstruct, unpack_bits
from pylocalize.index import BinaryIndex, CANNIndex, CANNPQIndex, MultiBitIndex, assign, kmeans
from pylocalize.runtime import (
    cuda_built,
    detected_simd_level,
    get_num_threads,
    has_cuda,
    set_num_threads,
    set_simd_level,
    simd_level,
    supported_simd_levels,
)

__all__ = [
    "BinaryIndex",
    "CANNIndex",
    "CANNPQIndex",
    "FormatError",
    "MultiBitIndex",
    "__version__",
    "assign",
    "binarize",
    "cuda_built",
    "detected_simd_level",
    "get_num_threads",
    "has_cuda",
    "kmeans",
    "pack_bits",
    "reconstruct",
    "set_num_threads",
    "set_simd_level",
    "simd_level",
    "supported_simd_levels",
    "unpack_bits",
]
