"""Torch models' files, one way for every module that trains one (torch extra).

A checkpoint is a plain dict of tensors, numbers and strings, saved with ``torch.save`` and
loaded with ``torch.load(weights_only=True)`` (no pickle of arbitrary objects), that names
its ``format`` (``"pylocalize.<Kind>"``) and ``version``. :func:`load_checkpoint` refuses a
corrupt, foreign or newer file with a ``ValueError`` that says which it is.
"""

from __future__ import annotations


def import_torch(what: str):
    """``torch``, or an ``ImportError`` saying how to install it for ``what``."""
    try:
        import torch
    except ImportError as error:
        raise ImportError(f"{what} needs torch: pip install 'pylocalize[torch]' (install torch==2.13.0 first on "
                          "CPU-only machines)") from error
    return torch


def load_checkpoint(path, kind: str, version: int = 1) -> dict:
    """The dict saved at ``path`` by a ``kind`` model of checkpoint ``version``.

    Raises
    ------
    ValueError
        The file is unreadable or corrupt, is not a ``kind`` checkpoint, or has another version.
    """
    torch = import_torch(f"loading a {kind}")
    try:
        data = torch.load(str(path), weights_only=True)
    except Exception as error:  # a corrupt or foreign file must be refused, never trusted
        raise ValueError(f"{path}: not a saved {kind} ({error})") from None
    if not isinstance(data, dict) or data.get("format") != f"pylocalize.{kind}":
        raise ValueError(f"{path}: not a saved {kind}")
    if data.get("version") != version:
        raise ValueError(f"{path}: {kind} checkpoint version {data.get('version')}; this pylocalize reads {version}")
    return data


__all__ = ["import_torch", "load_checkpoint"]
