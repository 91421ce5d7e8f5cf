"""Search indexes over codes and vectors, backed by the C++ core."""

from pylocalize.index.binary import BinaryIndex, MultiBitIndex

__all__ = ["BinaryIndex", "MultiBitIndex"]
