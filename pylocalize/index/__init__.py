"""Search indexes over codes and vectors, backed by the C++ core."""

from pylocalize.index.binary import BinaryIndex, MultiBitIndex
from pylocalize.index.bow import InvertedFile
from pylocalize.index.cann import CANNIndex
from pylocalize.index.cann_pq import CANNPQIndex, ProductQuantizer
from pylocalize.index.knn import assign, kmeans
from pylocalize.index.pairs import read_pairs, write_pairs_hloc, write_pairs_kapture

__all__ = ["BinaryIndex", "CANNIndex", "CANNPQIndex", "InvertedFile", "MultiBitIndex", "ProductQuantizer", "assign",
           "kmeans", "read_pairs", "write_pairs_hloc", "write_pairs_kapture"]
