"""Argument checks shared by the index wrappers: integers stay integers.

``int(5.7)`` and ``np.asarray(ids, dtype=np.int64)`` truncate floats without a word, so a
search for ``k=5.7`` or a removal of id ``1.7`` would silently act on something else.
These helpers accept Python and numpy integers (of any integer dtype that fits int64) and
refuse floats and booleans with a message that says the fix.
"""

from __future__ import annotations

import numpy as np


def int_scalar(value, name: str) -> int:
    """``value`` as an int, refusing bools, floats and other non-integers."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {type(value).__name__} {value!r}; "
                         f"pass int({name}) if truncating it is what you mean")
    return int(value)


def as_ids(values, name: str = "ids") -> np.ndarray:
    """``values`` (a sequence or array of integers) as a C-contiguous int64 array.

    Integer dtypes are converted only when every value fits in int64; floats and booleans
    are refused. An empty sequence gives an empty array. The shape is kept: the core
    checks it.
    """
    a = np.asarray(values)
    if a.size == 0:  # np.asarray([]) is float64: nothing there to truncate
        return np.zeros(0, np.int64)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name} must be integers, got dtype {a.dtype}; convert with "
                         f"np.asarray({name}).astype(np.int64) if truncating them is what you mean")
    if a.dtype.kind == "u" and a.dtype.itemsize >= 8 and a.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} must fit in int64, got {a.max()}")
    return np.ascontiguousarray(a.astype(np.int64, copy=False))
