"""The one timer of the benchmark scripts (``benchmarks/`` is not a package: scripts import
it from their own folder)."""

from __future__ import annotations

import time


def best_of(fn, repeats: int, warmup: bool = False):
    """``(fastest seconds, result of the last call)`` of ``repeats`` calls of ``fn``; with
    ``warmup``, one untimed call first (lazy initialisation, caches)."""
    if warmup:
        fn()
    best, out = float("inf"), None
    for _ in range(max(1, int(repeats))):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out
