"""pylocalize beyond one machine, on Ray (the ``dist`` extra: ``pip install "pylocalize[dist]"``).

- :class:`ShardedBinaryIndex`, :class:`ShardedMultiBitIndex`, :class:`ShardedCANNIndex`: an
  index split into shard files, each served by a Ray actor that memory-maps it; searches fan
  out and merge to the results of one index (exact searches: identically, ties included).
  :func:`shard_index` writes the shard files and the layout file; :func:`open_sharded` opens a
  layout file of any kind. ``pylocalize index shard`` does it from the command line.
- :func:`localize_many_ray`: a batch of queries localized on a pool of Ray actors, each
  memory-mapping the saved map (``pylocalize localize --ray``), one result per query in order.
- :class:`RayExtraction`: a map build's feature extraction on Ray Data (an actor pool writing
  feature shards), the local features exactly (``pylocalize map build --ray``).
- :class:`RayExecutor`: ``Executor.map`` as Ray tasks, e.g. object onboarding's templates
  (``pylocalize objects onboard --ray``).

Ray is imported only when a distributed object is made, so this package imports without it;
the first use without Ray raises an ``ImportError`` that says how to install it.
"""

from pylocalize.distributed._runtime import INSTALL_HINT, connect, require_ray
from pylocalize.distributed.batch import localize_many_ray
from pylocalize.distributed.executor import RayExecutor
from pylocalize.distributed.extract import RayExtraction
from pylocalize.distributed.layout import ShardLayout
from pylocalize.distributed.sharded import (
    ShardedBinaryIndex,
    ShardedCANNIndex,
    ShardedMultiBitIndex,
    open_sharded,
    shard_index,
)

__all__ = ["INSTALL_HINT", "RayExecutor", "RayExtraction", "ShardLayout", "ShardedBinaryIndex", "ShardedCANNIndex",
           "ShardedMultiBitIndex", "connect", "localize_many_ray", "open_sharded", "require_ray", "shard_index"]
