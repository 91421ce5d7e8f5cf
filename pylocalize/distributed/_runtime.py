"""Ray for :mod:`pylocalize.distributed`, imported only when a distributed object is made.

Ray is the optional extra ``dist``: ``import pylocalize`` and ``import pylocalize.distributed``
work without it, and the first object that needs it says how to install it.
"""

from __future__ import annotations

INSTALL_HINT = 'pip install "pylocalize[dist]"'


def require_ray():
    """The ``ray`` module, or an ``ImportError`` that says how to install it."""
    try:
        import ray
    except ImportError as error:
        raise ImportError(f"pylocalize.distributed runs on Ray, which is not installed: {INSTALL_HINT} "
                          f"(or pip install 'ray>=2.9')") from error
    return ray


def ensure_ray():
    """``ray``, started if this process has no session yet (Ray's own default: the cluster of
    ``RAY_ADDRESS`` if set, else a local one)."""
    ray = require_ray()
    if not ray.is_initialized():
        ray.init(configure_logging=False, log_to_driver=False)
    return ray


def connect(address: str):
    """Joins the Ray cluster at ``address`` (the command line's ``--ray``) and returns ``ray``.

    ``"auto"`` is the cluster running on this machine (``ray start --head``) or named by
    ``RAY_ADDRESS``, ``"local"`` a new one-machine cluster inside this process, anything else a
    cluster's address (``HOST:PORT`` or ``ray://HOST:PORT``). A process that already has a Ray
    session keeps it.
    """
    ray = require_ray()
    if ray.is_initialized():
        return ray
    if address == "local":
        ray.init(include_dashboard=False, configure_logging=False, log_to_driver=False)
        return ray
    try:
        ray.init(address=address, configure_logging=False, log_to_driver=False)
    except ConnectionError as error:
        raise ConnectionError(f"--ray {address}: no Ray cluster to join ({error}); start one with "
                              "`ray start --head` and use --ray auto, or use --ray local") from None
    return ray


def node_id() -> str:
    """The id of the Ray node this process runs on (inside an actor or task)."""
    return require_ray().get_runtime_context().get_node_id()
