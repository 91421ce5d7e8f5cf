"""Where an index searches: ``device="cpu"`` (the default) or ``"cuda"`` / ``"cuda:N"``.

A GPU search runs on a device copy of the index (``cpp/cuda``) that the index makes on its
first search there and drops when it changes; the CPU index stays the source of truth for
every other verb (add, remove, save, pickle). Results are the CPU index's, bit for bit.
"""

from __future__ import annotations

from typing import Optional, Union

from pylocalize import _core

Device = Union[str, int, None]


def parse_device(device: Device) -> Optional[int]:
    """The CUDA device ordinal named by ``device``, or ``None`` for the CPU.

    Raises
    ------
    ValueError
        For a name that is not ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``N``; for a CUDA device
        in a build without CUDA, on a machine without one, or past the last device.
    """
    if device is None or device == "cpu":
        return None
    if isinstance(device, int) and not isinstance(device, bool):
        ordinal = device
    elif isinstance(device, str) and (device == "cuda" or device.startswith("cuda:")):
        tail = device[5:] or "0"
        if not tail.isdigit():
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
        ordinal = int(tail)
    else:
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if not _core.cuda_built():
        raise ValueError("this pylocalize was built without CUDA: rebuild it with -DPYLOCALIZE_CUDA=ON "
                         "(docs/BUILDING.md), or use device='cpu'")
    count = _core.cuda_device_count()
    if count == 0:
        raise ValueError("no usable CUDA device (no GPU, or no driver for this build's CUDA): use device='cpu'")
    if not 0 <= ordinal < count:
        raise ValueError(f"CUDA device {ordinal} does not exist: this machine has devices 0..{count - 1}")
    return ordinal


def device_name(ordinal: Optional[int]) -> str:
    """``"cpu"`` or ``"cuda:N"``."""
    return "cpu" if ordinal is None else f"cuda:{ordinal}"


class OnDevice:
    """The device verbs an index face shares: ``device``, :meth:`to_gpu`, :meth:`to_cpu`.

    A face calls :meth:`_set_device` from its constructor, :meth:`_changed` after every
    change to its CPU index, and searches through :meth:`_device_copy` when ``device`` is
    not ``"cpu"``; it defines ``_make_device_copy(ordinal)``.
    """

    _ordinal: Optional[int] = None
    _copy = None

    @property
    def device(self) -> str:
        """Where searches run: ``"cpu"`` or ``"cuda:N"``."""
        return device_name(self._ordinal)

    def _set_device(self, device: Device) -> None:
        self._ordinal = parse_device(device)
        self._copy = None

    def to_gpu(self, device: Device = 0):
        """Searches on CUDA device ``device`` from now on (an ordinal or ``"cuda:N"``); returns
        the index. The device copy is made on the first search and again after a change."""
        self._set_device(device)
        return self

    def to_cpu(self):
        """Searches on the CPU from now on, freeing the device copy; returns the index."""
        self._set_device("cpu")
        return self

    def _changed(self) -> None:
        self._copy = None

    def _device_copy(self):
        copy = self._copy
        if copy is None:
            copy = self._copy = self._make_device_copy(self._ordinal)
        return copy

    def _make_device_copy(self, ordinal: int):
        raise NotImplementedError
