"""Ray for :mod:`pylocalize.distributed`, imported only when a distributed object is made.

Ray is the optional extra ``dist``: ``import pylocalize`` and ``import pylocalize.distributed``
work without it, and the first object that needs it says how to install it.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

INSTALL_HINT = 'pip install "pylocalize[dist]"'
RAY_MISSING = f"pylocalize.distributed runs on Ray, which is not installed: {INSTALL_HINT}"


def require_ray():
    """The ``ray`` module, or an ``ImportError`` that says how to install it."""
    try:
        import ray
    except ImportError as error:
        raise ImportError(RAY_MISSING) from error
    return ray


@contextmanager
def install_hint(option: str = "--ray"):
    """For a command's ``option``: Ray missing becomes one line (a ``RuntimeError``, which the
    command line prints as ``pylocalize <command>: error: --ray: ... pip install ...``)."""
    try:
        yield
    except ImportError as error:
        if str(error) != RAY_MISSING:
            raise
        raise RuntimeError(f"{option}: {error}") from None


def ensure_ray():
    """``ray``, started if this process has no session yet (as :func:`connect` with ``None``)."""
    return connect()


def connect(address: Optional[str] = None):
    """Joins a Ray cluster (the command line's ``--ray``) and returns ``ray``; a process that
    already has a Ray session keeps it.

    ``None`` or ``"auto"``: the cluster running on this machine (``ray start --head``, or
    ``RAY_ADDRESS``), else a new one inside this process; ``"local"``: always a new one-machine
    cluster inside this process; anything else a cluster's address (``HOST:PORT`` or
    ``ray://HOST:PORT``), checked to answer first (``ray.init`` retries an address where
    nothing listens for minutes, silently). Raises ``ConnectionError`` when nothing answers.
    """
    ray = require_ray()
    if ray.is_initialized():
        return ray
    if address == "local":
        with _from_package_folder():
            ray.init(address="local", include_dashboard=False, configure_logging=False, log_to_driver=False)
        return ray
    if address not in (None, "auto"):
        address = _check_cluster_answers(address)
    try:
        with _from_package_folder():
            ray.init(address=None if address in (None, "auto") else address, configure_logging=False,
                     log_to_driver=False)
    except ConnectionError as error:
        raise ConnectionError(f"--ray {address}: no Ray cluster to join ({error}); start one with "
                              "`ray start --head` there, or use --ray auto or --ray local") from None
    return ray


@contextmanager
def _from_package_folder():
    """Runs ``ray.init`` from the folder that holds the imported ``pylocalize`` package.

    Ray puts the driver's working folder first on its workers' import path: started from a
    source checkout of an installed package (whose ``pylocalize/`` has no compiled core), the
    workers would import the checkout instead of the package this process runs, and every
    actor would die on an import error that names neither. From the package's own folder they
    import what this process imports.
    """
    import pylocalize

    here = os.getcwd()
    os.chdir(Path(pylocalize.__file__).resolve().parents[1])
    try:
        yield
    finally:
        os.chdir(here)


def _check_cluster_answers(address, timeout_s: float = 10.0) -> str:
    """``address`` (``HOST:PORT`` or ``ray://HOST:PORT``) once something listens there."""
    import socket

    if not isinstance(address, str):
        raise ValueError(f"Ray address {address!r}: give 'auto', 'local' or the cluster's HOST:PORT")
    address = address.strip()
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"Ray address {address!r}: give 'auto', 'local' or the cluster's HOST:PORT "
                         "(e.g. 10.0.0.5:6379)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise ConnectionError(f"no Ray cluster answers at {address} ({error}); start one there with "
                              "`ray start --head`, or use --ray auto to start Ray in this process") from None
    return address


def node_id() -> str:
    """The id of the Ray node this process runs on (inside an actor or task)."""
    return require_ray().get_runtime_context().get_node_id()
