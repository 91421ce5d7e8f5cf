"""Independent jobs as Ray tasks (extra ``dist``): :class:`RayExecutor`, whose ``map`` is
``concurrent.futures.Executor.map`` over a Ray cluster, for code that takes an executor
(:func:`pylocalize.objects.onboard`'s template rendering and patch features:
``pylocalize objects onboard --ray``).

The function goes into Ray's object store once (with what it holds: a mesh, an extractor) and
the items are split into chunks, one Ray task each, a few per CPU of the cluster so that a slow
chunk does not hold the others back. Each task runs the core on one thread, the CPU Ray gave
it. Results come back in item order; an exception of the function is raised as it was raised
in the task (not Ray's wrapping of it). Ray is imported when ``map`` runs.

Tasks are never cancelled: in Ray 2.60 ``ray.cancel`` of a task whose reply is on its way
aborts the driver process (a failed check, "Tried to complete task that was not pending", in
the core worker's task manager; 30 maps that raise reproduce it). So at most twice the
cluster's task slots are in flight, and a map that stops early (the function raised, or the
caller left the generator) submits no more and lets those few finish unobserved.
"""

from __future__ import annotations

import collections
import functools
import math
from typing import Callable, Iterable, Iterator, Optional

from pylocalize.distributed._runtime import connect
from pylocalize.runtime import set_num_threads


def _apply(function: Callable, chunk: list) -> list:
    """A task: ``function`` of each item of one chunk, on the one core thread Ray gave it."""
    set_num_threads(1)
    return [function(item) for item in chunk]


@functools.lru_cache(maxsize=None)
def _remote_apply(ray, num_cpus: float):
    """:func:`_apply` as a Ray remote function (made once per process and CPU count)."""
    return ray.remote(num_cpus=num_cpus)(_apply)


class RayExecutor:
    """``map(function, items)`` as Ray tasks, results in item order.

    Parameters
    ----------
    address : str, optional
        The Ray cluster (:func:`~pylocalize.distributed.connect`); ignored when Ray is already
        initialized in this process.
    chunks_per_cpu : int
        Tasks per CPU of the cluster the items are split into.
    num_cpus : float
        CPUs each task reserves.
    """

    def __init__(self, address: Optional[str] = None, chunks_per_cpu: int = 2, num_cpus: float = 1):
        if isinstance(chunks_per_cpu, bool) or not isinstance(chunks_per_cpu, int) or chunks_per_cpu < 1:
            raise ValueError(f"chunks_per_cpu must be an integer >= 1, got {chunks_per_cpu!r}")
        if not num_cpus > 0:
            raise ValueError(f"num_cpus must be positive, got {num_cpus!r}")
        self.address, self.chunks_per_cpu, self.num_cpus = address, chunks_per_cpu, num_cpus

    def __repr__(self) -> str:
        return f"RayExecutor(address={self.address!r}, chunks_per_cpu={self.chunks_per_cpu})"

    @property
    def num_workers(self) -> int:
        """Tasks the cluster runs at once (its CPUs over each task's), joining it if needed."""
        ray = connect(self.address)
        return max(1, int(ray.cluster_resources().get("CPU", 1) // self.num_cpus))

    def map(self, function: Callable, items: Iterable) -> Iterator:
        """``function(item)`` of every item, computed as Ray tasks; yields the results in order.

        Chunks are submitted as earlier ones are read, at most twice the cluster's task slots
        ahead; a generator left early submits no more (see the module's note on cancelling).
        """
        items = list(items)
        return self._results(function, items) if items else iter(())

    def _results(self, function: Callable, items: list) -> Iterator:
        from ray.exceptions import RayTaskError

        ray = connect(self.address)
        workers = self.num_workers
        size = math.ceil(len(items) / (workers * self.chunks_per_cpu))
        function_ref = ray.put(function)
        remote = _remote_apply(ray, self.num_cpus)
        starts = iter(range(0, len(items), size))
        in_flight = collections.deque()
        for start in starts:
            in_flight.append(remote.remote(function_ref, items[start:start + size]))
            if len(in_flight) == 2 * workers:
                break
        while in_flight:
            try:
                chunk = ray.get(in_flight.popleft())
            except RayTaskError as error:  # the function's own exception, as it raised it
                cause = getattr(error, "cause", None)
                raise (cause if isinstance(cause, Exception) else error) from None
            start = next(starts, None)
            if start is not None:
                in_flight.append(remote.remote(function_ref, items[start:start + size]))
            yield from chunk


__all__ = ["RayExecutor"]
