"""Batch localization over a Ray cluster (extra ``dist``): the queries of
:meth:`Map.localize_many <pylocalize.localization.Map.localize_many>` on a pool of Ray actors.

Each actor loads the saved map itself with :meth:`Map.load` (memory-mapped), so the map never
travels through the object store and is not copied per actor: the actors of one node share its
pages through the page cache, and a restarted actor is back after one map load. The map folder,
and query images given as file paths, must therefore be at the same path on every node (shared
storage); queries given as pixels travel through the object store.

A query is one actor task, given to the next free actor; the results come back one per query in
input order. Each actor runs its query through :meth:`Map.localize_many`, so a query that fails
gets its own ``success=False`` result with the reason, exactly as locally, and the others go on.

Faults: an actor whose process dies is restarted (``max_restarts``) and the query it held is
retried on it (``max_task_retries``), with the same result; a query whose actor died more often
than that fails alone, with the reason, and the batch goes on with the other actors. A map that
is missing or corrupt is an error raised before any query runs, as is a pool that cannot start
(``start_timeout_s``): never a hang.

Ray is imported when a function here runs, never by ``import pylocalize``.
"""

from __future__ import annotations

import inspect
import logging
import os
import uuid
import warnings
from collections import deque
from contextlib import nullcontext
from pathlib import Path
from typing import List, Optional, Sequence

from pylocalize._log import phase, quiet_colmap
from pylocalize.distributed._runtime import connect, node_id
from pylocalize.localization.map import MAP_FILE, LocalizationResult, Map, _per_item

logger = logging.getLogger(__name__)

# Name of each pool actor: ACTOR_PREFIX-<batch id>-<k> (so an operator, or a test, can find them
# with ray.util.list_named_actors and ray.get_actor)
ACTOR_PREFIX = "pylocalize-localize"
# Map.localize's keywords a batch passes on to every query
LOCALIZE_OPTIONS = tuple(p for p in inspect.signature(Map.localize).parameters if p not in ("self", "image", "camera"))


class _Localizer:
    """A pool actor's state: one memory-mapped map, localizing one query per call.

    A map that does not load is kept as the error :meth:`ready` returns, so that the driver
    raises it as it is (FileNotFoundError, FormatError) rather than reading a dead actor.
    """

    def __init__(self, map_path: str, threads: int, options: dict):
        import ray

        from pylocalize.runtime import set_num_threads

        set_num_threads(threads)  # the CPUs Ray gave this actor, not every core of the node
        self.map, self.error, self.options, self.busy = None, None, options, 0
        try:
            self.map = Map.load(map_path, mmap=True)
        except Exception as error:  # any load failure is the caller's to see, as it is
            self.error = error
        with warnings.catch_warnings():  # Ray's property reads its own deprecated actor_id
            warnings.simplefilter("ignore", DeprecationWarning)
            self.restarted = ray.get_runtime_context().was_current_actor_reconstructed

    def ready(self):
        """None once the map is loaded, else the error loading it raised."""
        return self.error

    def in_progress(self) -> int:
        """Queries being localized now (the actor runs this beside a query: max_concurrency 2)."""
        return self.busy

    def node(self) -> str:
        """The id of the Ray node this actor runs on (which node a loss would take it with)."""
        return node_id()

    def localize(self, image, camera):
        """``(LocalizationResult, whether this actor is a restart)`` of one query.

        Through :meth:`Map.localize_many`, so that a query that raises becomes its own failed
        result, with the reason the local batch gives (RANSAC is seeded per query, so the pose
        is the local run's whatever this actor ran before).
        """
        self.busy += 1
        try:  # pycolmap's SIFT logs each extractor it creates, as the command line keeps quiet
            with quiet_colmap() if self.map.extractor == "colmap" else nullcontext():
                result, = self.map.localize_many([image], [camera], workers=1, **self.options)
        finally:
            self.busy -= 1
        return result, self.restarted


def _check_arguments(map_path, options: dict, start_timeout_s: float, **counts) -> Path:
    """The map's absolute path, once the localization options, the counts (``name=(value,
    lowest)``, None for a default) and the timeout are right and the map file is there: before
    any actor starts."""
    unknown = sorted(set(options) - set(LOCALIZE_OPTIONS))
    if unknown:
        raise TypeError(f"unknown localization options {', '.join(unknown)}: Map.localize takes "
                        f"{', '.join(LOCALIZE_OPTIONS)}")
    for name, (value, low) in counts.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if not start_timeout_s > 0:
        raise ValueError(f"start_timeout_s must be positive, got {start_timeout_s!r}")
    map_path = Path(map_path).absolute()
    if not (map_path / MAP_FILE if map_path.is_dir() else map_path).is_file():
        raise FileNotFoundError(f"{map_path}: no map here (expected a directory with {MAP_FILE}); give a folder "
                                "written by `pylocalize map build` or Map.save")
    return map_path


def _as_query(image):
    """A query as an actor on another node can take it: a file path made absolute (the actors'
    working folder is not the caller's), pixels as they are."""
    return os.fspath(Path(image).absolute()) if isinstance(image, (str, os.PathLike)) else image


def localize_many_ray(map_path, images: Sequence, cameras=None, address: Optional[str] = None,
                      actors: Optional[int] = None, threads: int = 1, max_restarts: int = 3,
                      max_task_retries: int = 3, start_timeout_s: float = 300.0, progress: bool = False,
                      **options) -> List[LocalizationResult]:
    """Localizes a batch of queries in the map saved at ``map_path`` on a pool of Ray actors:
    the same results as :meth:`Map.localize_many` of the loaded map, one per query in input order.

    Parameters
    ----------
    map_path : path
        A map folder written by :meth:`Map.save`, at this path on every node (shared storage).
    images : sequence of uint8 (H, W, 3) or (H, W) arrays or file paths
        The queries; files must be readable at their (absolute) path on every node.
    cameras : optional
        One camera for every query or one per query, as :meth:`Map.localize_many` takes them
        (None: each query's :meth:`Map.query_camera`, found by the actor).
    address : str, optional
        The Ray cluster (see :func:`connect`); ignored when Ray is already initialized here.
    actors : int, optional
        Actors in the pool; default one per ``threads`` CPUs free in the cluster, at most one
        per query.
    threads : int
        CPUs each actor reserves and the core's threads it localizes with.
    max_restarts, max_task_retries : int
        Restarts of an actor whose process died, and retries of the query it held.
    start_timeout_s : float
        Seconds the pool may take to start (the cluster may lack free CPUs).
    progress : bool
        A tqdm bar over the queries.
    **options
        :meth:`Map.localize`'s keywords (``k``, ``ratio``, ``min_inliers``...), for every query.

    Raises
    ------
    FileNotFoundError, pylocalize.FormatError
        The map is missing or corrupt (also when only the actors cannot read it).
    TimeoutError
        The actors did not start within ``start_timeout_s``.
    ImportError
        Ray is not installed.
    """
    map_path = _check_arguments(map_path, options, start_timeout_s, actors=(actors, 1), threads=(threads, 1),
                                max_restarts=(max_restarts, 0), max_task_retries=(max_task_retries, 0))
    queries = list(zip(map(_as_query, images), _per_item(cameras, len(images), "queries")))
    if not queries:
        return []
    ray = connect(address)
    if actors is None:
        actors = max(1, int(ray.available_resources().get("CPU", 0)) // threads)
    pool = _start_pool(ray, map_path, min(actors, len(queries)), threads, max_restarts, max_task_retries,
                       start_timeout_s, options)
    try:
        with phase(logger, f"localize {len(queries)} queries on {len(pool)} Ray actors") as done:
            results, restarted = _run_pool(ray, pool, queries, progress)
            done.outcome = f"{sum(r.success for r in results)} localized"
    finally:
        for actor in pool:
            ray.kill(actor, no_restart=True)
    if restarted:
        logger.info("%d Ray actor(s) were restarted during the batch; their queries were retried", restarted)
    return results


def _start_pool(ray, map_path: Path, count: int, threads: int, max_restarts: int, max_task_retries: int,
                start_timeout_s: float, options: dict) -> list:
    """``count`` actors, each with the map loaded; raises the error of a map that does not load
    (after killing the pool), or ``TimeoutError`` when the pool does not start in time."""
    remote = ray.remote(num_cpus=threads, max_restarts=max_restarts, max_task_retries=max_task_retries,
                        max_concurrency=2)(_Localizer)
    batch = uuid.uuid4().hex[:8]
    pool = [remote.options(name=f"{ACTOR_PREFIX}-{batch}-{k}").remote(os.fspath(map_path), threads, options)
            for k in range(count)]
    try:
        refs = [actor.ready.remote() for actor in pool]
        done, waiting = ray.wait(refs, num_returns=len(refs), timeout=start_timeout_s)
        if waiting:
            free = ray.available_resources().get("CPU", 0)
            raise TimeoutError(f"{len(waiting)} of {count} Ray actors did not start within {start_timeout_s:.0f} s "
                               f"({free:g} CPUs free in the cluster, {threads} per actor): give fewer actors, or "
                               "free the cluster")
        for ref in done:
            error = _get_or_reason(ray, ref)
            if isinstance(error, str):
                raise RuntimeError(f"a Ray actor died loading the map {map_path}: {error}")
            if isinstance(error, FileNotFoundError):  # the caller sees the map: this node does not
                raise FileNotFoundError(f"{error} (on a Ray node: the map must be at the same path on every node, "
                                        "on shared storage)")
            if error is not None:
                raise error
    except BaseException:
        for actor in pool:
            ray.kill(actor, no_restart=True)
        raise
    return pool


def _get_or_reason(ray, ref):
    """``ray.get(ref)``, or the first line of the Ray error that stood in its place."""
    from ray.exceptions import RayError

    try:
        return ray.get(ref)
    except RayError as error:
        return f"{type(error).__name__}: {_first_line(error)}"


def _run_pool(ray, pool: list, queries: list, progress: bool):
    """``(results in input order, how many actors were restarted)``: each query on the next free
    actor; an actor that died for good leaves the pool, its query failed with the reason."""
    from ray import exceptions
    from tqdm import tqdm

    died = getattr(exceptions, "ActorDiedError", exceptions.RayActorError)  # older Ray has only the latter

    results: List[Optional[LocalizationResult]] = [None] * len(queries)
    todo, idle, running, restarted = deque(range(len(queries))), list(range(len(pool))), {}, set()
    with tqdm(total=len(queries), desc="localize (Ray)", disable=not progress, leave=False) as bar:
        while todo or running:
            while idle and todo:
                k, i = idle.pop(), todo.popleft()
                running[pool[k].localize.remote(*queries[i])] = (k, i)
            if not running:  # every actor died for good
                for i in todo:
                    results[i] = LocalizationResult(False, reason="every Ray actor of the batch died more often than "
                                                                  "max_restarts: see the Ray logs")
                break
            (ref,), _ = ray.wait(list(running), num_returns=1)
            k, i = running.pop(ref)
            bar.update()
            try:
                results[i], was_restarted = ray.get(ref)
            except died as error:  # restarts used up: the actor stays out of the pool
                results[i] = LocalizationResult(False, reason=f"its Ray actor died more often than max_restarts "
                                                              f"({_first_line(error)})")
                continue
            except Exception as error:  # one query's Ray error must not end the batch
                results[i] = LocalizationResult(False, reason=f"{type(error).__name__}: {_first_line(error)}")
                was_restarted = False
            idle.append(k)
            if was_restarted:
                restarted.add(k)
    return results, len(restarted)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
