"""Feature extraction of a map build over Ray Data (extra ``dist``): :class:`RayExtraction`.

The image files go through ``ray.data.from_items`` into ``map_batches`` on a fixed pool of
extractor actors, each of which creates its SIFT extractor once
(:class:`~pylocalize.features.SiftExtractor`) and writes each batch of images as one *feature
shard*: a pylocalize container (tag ``FeatureShard``) written atomically by the core, holding
the batch's image indices, keypoints, descriptors and the images it could not read. Only the
shard names travel back through Ray; the driver then reads the shards back in image order.

The features are those of the local extraction, image for image (the same reading, the same
extractor), and an image that cannot be read is reported as the local one reports it, so
:meth:`Map.from_images <pylocalize.localization.Map.from_images>` skips it with the same warning
and the posed-image builders stop with the same ``ValueError`` naming the file. A shard that is
missing or corrupt when it is read back is a ``FileNotFoundError`` or
:class:`pylocalize.FormatError` naming the shard and its file.

On a cluster, the image files and the shard folder must be at the same path on every node
(shared storage). Ray is imported when an extraction runs, never by ``import pylocalize``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import uuid
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator, List, NamedTuple, Optional, Sequence

import numpy as np

from pylocalize import _core
from pylocalize._core import FormatError
from pylocalize._log import quiet_colmap
from pylocalize.containers import LAYOUT_ERRORS, read_layout
from pylocalize.distributed._runtime import connect, ensure_ray
from pylocalize.features.sift import SiftExtractor, check_extractor
from pylocalize.localization.map import image_features
from pylocalize.runtime import set_num_threads

logger = logging.getLogger(__name__)

SHARD_TAG = "FeatureShard"
SHARD_LAYOUT = 1
# one shard per batch, named by the run and the batch's first image: a batch Ray Data retries
# writes the same file again
SHARD_NAME = "features-{run}-{first:07d}.pyloc"
REEXTRACT = "extract the features again (run the map build again)"
# kinds of an image's failure recorded in a shard: its file could not be read (the builders
# skip it or name it), or the extractor refused its pixels (raised, as locally)
UNREADABLE, EXTRACTION_ERROR = "unreadable", "error"


class FeatureShard(NamedTuple):
    """One shard file and the indices (into the extraction's images) of the images it holds."""

    path: Path
    indices: np.ndarray


class _Failure(NamedTuple):
    """An image a worker could not extract: its kind and the error's message."""

    kind: str
    message: str


class RayExtraction:
    """The features of a map build's images on Ray Data, for the builders' ``extraction``
    argument (:meth:`Map.from_images <pylocalize.localization.Map.from_images>`,
    :meth:`~pylocalize.localization.Map.from_views` and the builders on it): the same features
    as the local thread pool.

    Parameters
    ----------
    folder : path, optional
        Where each run writes its shards: a new temporary folder inside it (shared storage on a
        cluster), removed once the features are read back. Default: the system's temporary folder.
    actors : int, optional
        Extractor actors (one CPU each); default one per free CPU of the cluster, at most one per shard.
    images_per_shard : int, optional
        Images per batch, and so per shard file; default about four batches per actor, at most 64 images.
    address : str, optional
        The Ray cluster (:func:`~pylocalize.distributed.connect`); ignored when Ray is already
        initialized in this process.
    keep_shards : bool
        Leave the shard folder in place (its path is logged), e.g. to look at a failed run.
    start_timeout_s : float
        Seconds the actor pool may take to start (the cluster may lack free CPUs).
    """

    def __init__(self, folder=None, actors: Optional[int] = None, images_per_shard: Optional[int] = None,
                 address: Optional[str] = None, keep_shards: bool = False, start_timeout_s: float = 300.0):
        for name, value in (("actors", actors), ("images_per_shard", images_per_shard)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not start_timeout_s > 0:
            raise ValueError(f"start_timeout_s must be positive, got {start_timeout_s!r}")
        self.folder = None if folder is None else Path(folder)
        self.actors, self.images_per_shard, self.address = actors, images_per_shard, address
        self.keep_shards, self.start_timeout_s = keep_shards, start_timeout_s

    def __repr__(self) -> str:
        return f"RayExtraction(folder={self.folder}, actors={self.actors}, address={self.address!r})"

    def __call__(self, images: Sequence, max_features: int = 4000, extractor: str = "opencv",
                 progress: bool = False, desc: str = "features") -> Iterator:
        """Each image's features ``(keypoints, descriptors)``, or the ``ValueError`` reading its
        file raised, in image order (as :func:`~pylocalize.localization.map.image_features`);
        an error of the extractor itself is raised at its image, as the local pool raises it."""
        paths = _worker_paths(images)
        check_extractor(extractor)
        connect(self.address)
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
        run_dir = Path(tempfile.mkdtemp(prefix="pylocalize-features-", dir=self.folder))
        try:
            shards = write_feature_shards(paths, run_dir, max_features, extractor, actors=self.actors,
                                          images_per_shard=self.images_per_shard, progress=progress, desc=desc,
                                          start_timeout_s=self.start_timeout_s)
            yield from read_feature_shards(shards, images)
        finally:
            if self.keep_shards:
                logger.info("feature shards kept in %s", run_dir)
            else:
                shutil.rmtree(run_dir, ignore_errors=True)


def _worker_paths(images: Sequence) -> List[str]:
    """The images as the workers open them: absolute file paths (their working folder is not
    the caller's)."""
    paths = []
    for number, image in enumerate(images):
        if not isinstance(image, (str, os.PathLike)):
            raise ValueError(f"image {number} is an array: the Ray extraction reads image files on the workers; give "
                             "file paths (at the same path on every node), or extract locally (extraction=None)")
        paths.append(os.fspath(Path(image).absolute()))
    return paths


def write_feature_shards(images: Sequence, folder, max_features: int = 4000, extractor: str = "opencv", *,
                         actors: Optional[int] = None, images_per_shard: Optional[int] = None,
                         progress: bool = False, desc: str = "features",
                         start_timeout_s: float = 300.0) -> List[FeatureShard]:
    """Extracts the image files ``images`` on Ray Data's actor pool into feature shards in
    ``folder``; returns the shards, by their first image (Ray is started in this process if it has no
    session yet: :func:`connect` first to join a cluster).

    Raises
    ------
    RuntimeError
        Ray Data's run failed (a worker died for good, a shard could not be written), or
        its output does not account for every image once.
    """
    paths = _worker_paths(images)
    if not paths:
        return []
    check_extractor(extractor)
    folder = Path(folder).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    ray = ensure_ray()
    if actors is None:
        actors = max(1, int(ray.available_resources().get("CPU", 0)))
    per_shard = images_per_shard or max(1, min(64, math.ceil(len(paths) / (4 * actors))))
    num_shards = math.ceil(len(paths) / per_shard)
    run = uuid.uuid4().hex[:8]
    items = [{"index": i, "image": path} for i, path in enumerate(paths)]
    with _data_context(progress, start_timeout_s) as data:
        dataset = data.from_items(items, **_blocks_argument(data.from_items, num_shards)).map_batches(
            _ShardWriter, fn_constructor_args=(os.fspath(folder), run, max_features, extractor),
            batch_size=per_shard, batch_format="numpy", num_cpus=1,
            compute=data.ActorPoolStrategy(size=min(actors, num_shards)))
        names = _run(dataset, len(paths), progress, desc)
    return _manifest(folder, names, len(paths))


@contextmanager
def _data_context(progress: bool, start_timeout_s: float):
    """``ray.data`` for one run: a bound on the wait for the actor pool, and Ray Data quiet (its
    progress bars off, ours counts images; its log of each run's plan, and the deprecation
    warnings its context raises about itself, kept out of the caller's output)."""
    import ray.data

    data_log = logging.getLogger("ray.data")
    with warnings.catch_warnings():  # the context warns as its fields are set (copies of it too)
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ray.data.DataContext.get_current()
        old = context.enable_progress_bars, context.wait_for_min_actors_s, data_log.level
        context.enable_progress_bars, context.wait_for_min_actors_s = False, int(math.ceil(start_timeout_s))
        data_log.setLevel(logging.ERROR)  # Ray Data's failures come back as exceptions
        try:
            yield ray.data
        finally:
            context.enable_progress_bars, context.wait_for_min_actors_s = old[:2]
            data_log.setLevel(old[2])


def _blocks_argument(from_items, blocks: int) -> dict:
    """Ray Data's keyword for the number of input blocks (``parallelism`` before Ray 2.10)."""
    import inspect

    name = "override_num_blocks" if "override_num_blocks" in inspect.signature(from_items).parameters else "parallelism"
    return {name: blocks}


def _run(dataset, count: int, progress: bool, desc: str) -> np.ndarray:
    """Runs the dataset: the shard name of each image index."""
    from tqdm import tqdm

    names = np.full(count, None, dtype=object)
    try:
        with tqdm(total=count, desc=f"{desc} (Ray)", disable=not progress, leave=False) as bar:
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                index = np.asarray(batch["index"], np.int64)
                if len(index) and (index.min() < 0 or index.max() >= count or any(names[index] != None)):  # noqa: E711
                    raise RuntimeError("Ray Data returned an image twice or one that was not given")
                names[index] = [str(name) for name in batch["shard"]]
                bar.update(len(index))
    except RuntimeError:
        raise
    except Exception as error:  # Ray's wrapping of a worker's error: one line, and where to look
        raise RuntimeError(f"feature extraction on Ray Data failed: {type(error).__name__}: {_first_line(error)} "
                           "(see the Ray logs)") from error
    missing = np.flatnonzero(names == None)  # noqa: E711
    if len(missing):
        raise RuntimeError(f"feature extraction on Ray Data returned no shard for {len(missing)} images (e.g. image "
                           f"{missing[0]})")
    return names


def _manifest(folder: Path, names: np.ndarray, count: int) -> List[FeatureShard]:
    """The shards, by their first image, each with its image indices in index order."""
    shards = {}
    for index, name in enumerate(names):
        shards.setdefault(name, []).append(index)
    return sorted((FeatureShard(folder / name, np.array(indices, np.int64)) for name, indices in shards.items()),
                  key=lambda shard: shard.indices[0])


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class _ShardWriter:
    """A Ray Data actor: extracts each batch of images with the one extractor it made at its
    start, writes the batch as one feature shard, and returns each image's shard name."""

    def __init__(self, folder: str, run: str, max_features: int, extractor: str):
        set_num_threads(1)  # the one CPU Ray gave this actor
        self.folder, self.run, self.quiet = Path(folder), run, extractor == "colmap"
        with quiet_colmap() if self.quiet else nullcontext():  # pycolmap's SIFT logs its creation
            self.sift = SiftExtractor(max_features, extractor)

    def __call__(self, batch: dict) -> dict:
        indices = np.asarray(batch["index"], np.int64)
        paths = [str(path) for path in batch["image"]]
        features = []
        with quiet_colmap() if self.quiet else nullcontext():
            for path in paths:
                try:
                    result = image_features(path, self.sift)
                except ValueError as error:  # pixels the extractor refuses: raised at its image by the reader
                    result = _Failure(EXTRACTION_ERROR, str(error))
                features.append(_Failure(UNREADABLE, str(result)) if isinstance(result, ValueError) else result)
        order = np.argsort(indices, kind="stable")
        name = SHARD_NAME.format(run=self.run, first=int(indices[order[0]]))
        write_shard(self.folder / name, indices[order], [paths[k] for k in order], [features[k] for k in order])
        return {"index": indices, "shard": np.array([name] * len(indices))}


def write_shard(path: Path, indices: np.ndarray, paths: List[str], features: list) -> None:
    """One feature shard file, written atomically: per image its index, file, features or failure."""
    extracted = [f for f in features if not isinstance(f, _Failure)]
    info = {"images": paths, "failures": {str(k): list(f) for k, f in enumerate(features) if isinstance(f, _Failure)}}
    sections = {
        "image_index": np.ascontiguousarray(indices, np.int64),
        "counts": np.array([0 if isinstance(f, _Failure) else len(f[0]) for f in features], np.int64),
        "keypoints": [np.ascontiguousarray(f[0], np.float32) for f in extracted] or np.zeros((0, 2), np.float32),
        "descriptors": [np.ascontiguousarray(f[1], np.uint8) for f in extracted] or np.zeros((0, 128), np.uint8),
        "info": np.frombuffer(json.dumps(info).encode("utf-8"), np.uint8).copy(),
    }
    _core.write_container(os.fspath(path), SHARD_TAG, {"layout": SHARD_LAYOUT, "num_images": len(indices)}, sections)


def read_feature_shards(shards: Sequence[FeatureShard], images: Sequence) -> Iterator:
    """The features the shards hold, in image order: ``(keypoints, descriptors)``, or the
    ``ValueError`` reading an image's file raised (its message naming the image as given in
    ``images``, as the local extraction names it); an extractor's error is raised at its image.

    Raises
    ------
    FileNotFoundError, pylocalize.FormatError
        A shard missing, corrupt, or not the one written for these images: naming the shard.
    """
    results: list = [None] * len(images)
    for number, shard in enumerate(shards):
        for index, result in zip(shard.indices, _read_shard(number, len(shards), shard, images)):
            results[index] = result
    if any(r is None for r in results):
        raise ValueError(f"the {len(shards)} shards do not hold every one of the {len(images)} images; "
                         "give the shards write_feature_shards returned for these images")
    for result in results:
        if isinstance(result, _Failure):
            raise ValueError(result.message)
        yield result


def _read_shard(number: int, total: int, shard: FeatureShard, images: Sequence) -> list:
    """The features or failures of one shard's images, in its order, checked against the manifest."""
    name = f"feature shard {number + 1} of {total} ({shard.path})"
    try:
        _, sec = read_layout(shard.path, SHARD_TAG, "layout", SHARD_LAYOUT, "a feature shard", REEXTRACT)
    except FileNotFoundError:
        raise FileNotFoundError(f"{name} is missing: the extraction wrote it and it is gone; {REEXTRACT}, with the "
                                "shard folder on storage every node reads") from None
    except FormatError as error:
        raise FormatError(f"{name}: {error}; {REEXTRACT}") from None
    expected = [os.fspath(Path(images[i]).absolute()) for i in shard.indices]
    try:
        info, counts = json.loads(bytes(sec["info"]).decode("utf-8")), np.asarray(sec["counts"], np.int64)
        keypoints = np.asarray(sec["keypoints"], np.float32).reshape(-1, 2)
        descriptors = np.asarray(sec["descriptors"])
        descriptors = descriptors.reshape(len(keypoints), -1) if len(keypoints) else descriptors.reshape(0, 128)
        if not (np.array_equal(sec["image_index"], shard.indices) and info["images"] == expected
                and len(counts) == len(expected) and counts.min() >= 0 and counts.sum() == len(keypoints)
                and descriptors.dtype == np.uint8):
            raise ValueError("it holds other images or features")
        failures = {int(k): _Failure(*v) for k, v in info["failures"].items()}
        if any(f.kind not in (UNREADABLE, EXTRACTION_ERROR) for f in failures.values()):
            raise ValueError("unknown kind of failure")
    except LAYOUT_ERRORS as error:
        raise FormatError(f"{name}: not the shard written for these images ({error}); {REEXTRACT}") from None
    ends = np.cumsum(counts)
    out = []
    for k, (end, count) in enumerate(zip(ends, counts)):
        failure = failures.get(k)
        if failure is None:
            out.append((keypoints[end - count:end].copy(), descriptors[end - count:end].copy()))
        elif failure.kind == UNREADABLE:  # as the local reading named the file: the path as given
            given = str(images[shard.indices[k]])
            out.append(ValueError(failure.message.replace(expected[k], given) if expected[k] != given
                                  else failure.message))
        else:
            out.append(failure)
    return out


__all__ = ["FeatureShard", "RayExtraction", "read_feature_shards", "write_feature_shards"]
