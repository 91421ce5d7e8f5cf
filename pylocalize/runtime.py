"""Process-wide settings of the core: threads, SIMD level, CUDA availability.

The SIMD level defaults to the best the CPU supports. ``PYLOCALIZE_SIMD`` (one of
``scalar``, ``avx2``, ``avx512bw``, ``avx512`` on x86-64, ``scalar``, ``neon`` on AArch64),
read when pylocalize is first imported, forces another supported level;
:func:`set_simd_level` changes it at run time. ``avx512bw`` is AVX-512 without VPOPCNTDQ
(Skylake-X), ``avx512`` adds VPOPCNTDQ/BITALG/VBMI.
"""

from __future__ import annotations

import os
import warnings

from pylocalize import _core

SIMD_LEVELS = ("scalar", "avx2", "avx512bw", "avx512", "neon")


def get_num_threads() -> int:
    """Number of threads the core uses (all cores unless set)."""
    return _core.get_num_threads()


def set_num_threads(n: int) -> None:
    """Sets the number of threads the core uses; ``-1`` means every core."""
    _core.set_num_threads(int(n))


def simd_level() -> str:
    """The SIMD level the kernels use now."""
    return _core.simd_level()


def detected_simd_level() -> str:
    """The best SIMD level this CPU supports."""
    return _core.detected_simd_level()


def supported_simd_levels() -> list[str]:
    """Every SIMD level this CPU supports, lowest first."""
    return list(_core.supported_simd_levels())


def set_simd_level(level: str) -> None:
    """Forces a SIMD level (one of :data:`SIMD_LEVELS` that the CPU supports).

    Raises
    ------
    ValueError
        If the name is unknown or the CPU lacks that instruction set.
    """
    _core.set_simd_level(str(level))


def has_cuda() -> bool:
    """Whether CUDA searches can run: the extension was built with the CUDA kernels
    (``-DPYLOCALIZE_CUDA=ON``, :func:`cuda_built`) and a CUDA device is usable now."""
    return _core.has_cuda()


def cuda_built() -> bool:
    """Whether the extension was built with the CUDA kernels (``-DPYLOCALIZE_CUDA=ON``),
    whatever the machine has; :func:`has_cuda` also needs a usable device."""
    return _core.cuda_built()


def _check_env() -> None:
    wanted = os.environ.get("PYLOCALIZE_SIMD", "").strip()
    if not wanted:
        return
    if wanted not in SIMD_LEVELS:
        warnings.warn(
            f"PYLOCALIZE_SIMD={wanted!r} is not a SIMD level; use one of {', '.join(SIMD_LEVELS)}."
            f" Using {simd_level()!r}.",
            RuntimeWarning,
            stacklevel=3,
        )
    elif wanted not in supported_simd_levels():
        warnings.warn(
            f"PYLOCALIZE_SIMD={wanted!r} is not supported by this CPU; using {simd_level()!r}.",
            RuntimeWarning,
            stacklevel=3,
        )


_check_env()
