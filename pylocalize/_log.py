"""Telling the user what a long job is doing: a log line per phase with its duration, and
COLMAP's own log (glog, straight to stderr) kept quiet unless asked for.

Library modules log under ``logging.getLogger(__name__)`` (the ``pylocalize`` logger's
children); the command line shows INFO and up (``pylocalize/_cli.py``), a Python program
sees nothing unless it configures logging.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Iterator, Optional


class Phase:
    """What a phase found, said at its end (``phase.outcome = "26 of 28 images registered"``)."""

    def __init__(self) -> None:
        self.outcome = ""


@contextmanager
def phase(logger: logging.Logger, what: str) -> Iterator[Phase]:
    """Logs ``what: outcome (12.3 s)`` at INFO when the block ends without an error (a failed
    phase is reported by its exception); ``what ...`` at DEBUG when it starts."""
    logger.debug("%s ...", what)
    start = time.perf_counter()
    done = Phase()
    yield done
    seconds = time.perf_counter() - start
    logger.info("%s%s (%.1f s)", what, f": {done.outcome}" if done.outcome else "", seconds)


@contextmanager
def quiet_colmap(verbose: Optional[bool] = None) -> Iterator[None]:
    """COLMAP's log off for the block (only fatal errors, which also raise), restored after.

    ``verbose`` keeps it; by default it is kept when the ``pylocalize`` logger shows DEBUG
    (``pylocalize -v``). COLMAP's errors and warnings are about its own steps ("Failed to
    create any sparse model" before the next mapper succeeds, no CUDA for an optional GPU
    solver); the callers say what matters in their own log lines.
    """
    import pycolmap

    if verbose is None:
        verbose = logging.getLogger("pylocalize").isEnabledFor(logging.DEBUG)
    level = pycolmap.logging.minloglevel
    pycolmap.logging.minloglevel = 0 if verbose else 3  # glog levels: 0 INFO ... 3 FATAL
    try:
        yield
    finally:
        pycolmap.logging.minloglevel = level
