"""Torch models' files, one way for every module that trains one (torch extra).

A checkpoint is a plain dict of tensors, numbers and strings that names its ``format``
(``"pylocalize.<Kind>"``) and ``version``. :func:`save_checkpoint` serializes it with
``torch.save`` into memory and writes those bytes as the one section of a pylocalize
container (tag ``"TorchCheckpoint"``) through the core's atomic writer: a crash while
saving leaves the old file or the new one, and the container's CRC-32 covers every byte,
so a flipped bit is refused instead of loading as different weights.

:func:`load_checkpoint` reads such a container, or a checkpoint saved before containers
(a plain ``torch.save`` zip file, whose members' CRC-32s are checked first), and unpickles
it with ``torch.load(weights_only=True)``: nothing but tensors, numbers, strings and
containers of them, never code. Every bad file (corrupt, truncated, foreign, newer, or
holding other objects) is refused with a :class:`pylocalize.FormatError` that says which;
:func:`load_model` extends that to the model built from the dict (missing keys, wrong
shapes).
"""

from __future__ import annotations

import io
import os
import pickle
import re
import zipfile
import zlib
from typing import Callable, TypeVar

import numpy as np

from pylocalize import _core
from pylocalize._core import FormatError
from pylocalize.containers import LAYOUT_ERRORS, read_layout

CHECKPOINT_TAG = "TorchCheckpoint"
# Layout of the container around the torch bytes (meta key "checkpoint_version").
CHECKPOINT_LAYOUT = 1
_ZIP_MAGIC = b"PK\x03\x04"  # checkpoints saved before containers: torch's zip format

T = TypeVar("T")


def import_torch(what: str):
    """``torch``, or an ``ImportError`` saying how to install it for ``what``."""
    try:
        import torch
    except ImportError as error:
        raise ImportError(f"{what} needs torch: pip install 'pylocalize[torch]' (install torch==2.13.0 first on "
                          "CPU-only machines)") from error
    return torch


def save_checkpoint(data: dict, path) -> None:
    """Writes the checkpoint dict ``data`` to ``path`` all-or-nothing, CRC-protected."""
    torch = import_torch("saving a checkpoint")
    buffer = io.BytesIO()
    torch.save(data, buffer)
    payload = np.frombuffer(buffer.getbuffer(), np.uint8)
    try:
        _core.write_container(os.fspath(path), CHECKPOINT_TAG, {"checkpoint_version": CHECKPOINT_LAYOUT},
                              {"torch": payload})
    finally:
        del payload  # releases the buffer's export


def _verify_zip(path, kind: str) -> None:
    """Reads every member of a pre-container (zip) checkpoint so that zipfile checks its
    CRC-32: torch itself writes the CRCs but never checks them."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError, OverflowError) as error:
        raise FormatError(f"{path}: a damaged {kind} checkpoint ({error})") from None
    if bad is not None:
        raise FormatError(f"{path}: a damaged {kind} checkpoint (member {bad} fails its CRC-32)")


def _torch_source(path, kind: str):
    """What ``torch.load`` should read for the checkpoint at ``path``, once verified."""
    with open(path, "rb") as f:  # FileNotFoundError for a missing file, as documented
        head = f.read(len(_ZIP_MAGIC))
    if head == _ZIP_MAGIC:
        _verify_zip(path, kind)
        return os.fspath(path)
    try:
        _, sections = read_layout(path, CHECKPOINT_TAG, "checkpoint_version", CHECKPOINT_LAYOUT, f"a {kind} checkpoint",
                                  f"upgrade pylocalize or save the {kind} again")
    except FormatError as error:  # truncated, corrupt (CRC-32), another kind or layout
        raise FormatError(f"{path}: not a saved {kind} ({error})") from None
    payload = np.asarray(sections.get("torch", np.zeros(0, np.int32)))
    if "torch" not in sections or payload.dtype != np.uint8 or payload.ndim != 1:
        raise FormatError(f"{path}: not a saved {kind} (its torch section is not bytes)")
    return io.BytesIO(payload.tobytes())


def read_checkpoint(path, kind: str = "checkpoint") -> dict:
    """The verified dict at ``path``, whatever model saved it (see :func:`load_checkpoint`;
    ``kind`` only words the messages)."""
    torch = import_torch(f"loading a {kind}")
    source = _torch_source(path, kind)
    try:
        data = torch.load(source, weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message advises retrying with weights_only=False, which would run the
        # file's code: never pass that on, say what the file holds and that it is refused
        needed = re.search(r"GLOBAL ([\w.]+)", str(error))
        raise FormatError(f"{path}: refused: the file holds objects other than tensors, numbers and strings"
                          f"{' (' + needed.group(1) + ')' if needed else ''}, and pylocalize never runs code "
                          f"from a file; it is not a saved {kind}") from None
    except Exception as error:  # a corrupt or foreign file must be refused, never trusted
        raise FormatError(f"{path}: not a saved {kind} ({type(error).__name__}: {error})") from None
    if not isinstance(data, dict):
        raise FormatError(f"{path}: not a saved {kind}")
    return data


def load_checkpoint(path, kind: str, version: int = 1) -> dict:
    """The dict saved at ``path`` by a ``kind`` model of checkpoint ``version``.

    Raises
    ------
    pylocalize.FormatError
        The file is corrupt or truncated, is not a ``kind`` checkpoint, has another
        version, or holds objects other than tensors, numbers and strings.
    FileNotFoundError
        No file at ``path``.
    """
    data = read_checkpoint(path, kind)
    if data.get("format") != f"pylocalize.{kind}":
        raise FormatError(f"{path}: not a saved {kind}")
    if data.get("version") != version:
        raise FormatError(f"{path}: {kind} checkpoint version {data.get('version')}; this pylocalize reads {version}")
    return data


def load_model(path, kind: str, build: Callable[[dict], T], version: int = 1) -> T:
    """``build(load_checkpoint(path, kind, version))``, the model made from a checkpoint.

    A dict that passed the checks can still not make a model (a key missing, a tensor of
    the wrong shape, a setting out of range): whatever ``build`` raises for that becomes
    the same :class:`pylocalize.FormatError` as any other bad file, here for every model.
    """
    data = load_checkpoint(path, kind, version)
    try:
        return build(data)
    except FormatError:
        raise
    except LAYOUT_ERRORS + (RuntimeError,) as error:  # RuntimeError: torch's load_state_dict
        raise FormatError(f"{path}: a damaged {kind} checkpoint; its contents do not make a {kind} "
                          f"({type(error).__name__}: {error})") from None


__all__ = ["import_torch", "load_checkpoint", "load_model", "read_checkpoint", "save_checkpoint"]
