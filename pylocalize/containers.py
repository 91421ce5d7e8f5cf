"""Reading the project's versioned containers from Python: one check of kind and layout.

Every file pylocalize writes is a container (``_core.write_container``: magic, version,
CRC-32, sections), written all-or-nothing by the core's one writer (:func:`write_bytes_atomic`
for bytes made in Python). Python-level objects (maps, object representations, cell hierarchies)
add a *layout* version in their meta, bumped when their sections change. A file of another
kind or layout is refused with a :class:`pylocalize.FormatError` that says how to rebuild
it, never read as something it is not.
"""

from __future__ import annotations

import os

import numpy as np

from pylocalize import _core
from pylocalize._core import FormatError

# What reading a container with the right tag and layout but missing or malformed sections
# or meta can raise while the object is rebuilt from it: loaders turn these into FormatError.
LAYOUT_ERRORS = (KeyError, IndexError, TypeError, ValueError, AttributeError)


def read_layout(source, tag: str, version_key: str, version, what: str, rebuild: str, *,
                mmap: bool = False, missing_version: int = 0):
    """``(meta, sections)`` of the container ``source`` (a path, or bytes as ``uint8``).

    Parameters
    ----------
    tag : str
        The container's type tag.
    version_key, version : str, int or tuple of int
        Meta key of the layout version, and the one (or ones) this pylocalize reads; the
        file's layout is ``meta[version_key]``.
    what : str
        The kind of file, for messages ("a map", "a cell hierarchy").
    rebuild : str
        How to make a current file, for messages.
    missing_version : int
        The layout a file without ``version_key`` has (files older than the key).

    Raises
    ------
    pylocalize.FormatError
        A corrupt file, another kind of file, or another layout version.
    """
    array = isinstance(source, np.ndarray)
    found, _, meta, sections = _core.read_container(source if array else os.fspath(source), mmap=mmap)
    name = "data" if array else os.fspath(source)
    if found != tag:
        raise FormatError(f"{name} holds a {found}, not a {tag}")
    layout = meta.get(version_key, missing_version)
    versions = tuple(version) if isinstance(version, (tuple, list)) else (version,)
    if layout not in versions:
        readable = " and ".join(str(v) for v in versions)
        raise FormatError(f"{name} is {what} of layout version {layout}; this pylocalize reads version {readable}: "
                          f"{rebuild}")
    return meta, sections


def write_bytes_atomic(path, data) -> None:
    """Writes ``data`` (bytes or a contiguous array) to ``path`` all-or-nothing.

    The core's one writer (``cpp/pylocalize/util/atomic_file.h``): a temporary file in the
    same folder, ``fsync``, rename over ``path``, ``fsync`` of the folder. After a crash at
    any moment ``path`` holds its old bytes or the new ones; temporary files of killed
    writers are removed by the next write of the same target. Every file pylocalize writes
    goes through it (containers, torch checkpoints, JSON and manifest files).
    """
    _core.write_file_atomic(os.fspath(path), data)


__all__ = ["LAYOUT_ERRORS", "read_layout", "write_bytes_atomic"]
