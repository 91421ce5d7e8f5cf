"""What the public-benchmark scripts share: their command line (``--limit N`` first), the
map built from posed images, the batch of queries, the printed table.

Each script is ``python benchmarks/public/<dataset>.py DATASET_FOLDER ... [--limit N]``; it
runs with the command line's conventions (``pylocalize._cli``): one-line errors, ``-v`` /
``-q``, ``--threads``.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from pylocalize._cli import Parser, at_least, run
from pylocalize._log import phase, quiet_colmap

logger = logging.getLogger("pylocalize.benchmarks.public")


def make_parser(description: str, main: Callable, limit: Optional[str] = "queries per scene") -> Parser:
    """The parser of a script, with the options every benchmark shares; ``limit`` says what
    ``--limit`` counts in this dataset (None: a script that scores nothing takes no --limit)."""
    parser = Parser(description=description, prog=Path(sys.argv[0]).name)
    if limit is not None:
        parser.add_argument("--limit", type=at_least(1), default=None, metavar="N",
                            help=f"score at most N {limit} (evenly spaced), for a quick run; default: all")
    parser.set_defaults(func=main)
    return parser


def add_localization_options(parser: Parser, map_stride: bool = True) -> None:
    """Map and localization settings of the visual-localization scripts."""
    parser.add_argument("--max-features", type=at_least(16), default=4000, help="SIFT features per image")
    parser.add_argument("--k", type=at_least(1), default=10, help="database images retrieved per query")
    if map_stride:
        parser.add_argument("--map-stride", type=at_least(1), default=1,
                            help="build the map from every S-th training image (a quick run: 5-10 on video datasets)")
    parser.add_argument("--workers", type=at_least(1), default=None, help="queries localized at once")


def main_of(parser: Parser, argv: Optional[Sequence[str]] = None) -> int:
    """Runs a script's parser on ``argv`` with the command line's error handling."""
    return run(parser, argv)


def evenly(items: Sequence, limit: Optional[int]) -> list:
    """At most ``limit`` items, evenly spaced over the sequence (all when ``limit`` is None)."""
    items = list(items)
    if limit is None or limit >= len(items):
        return items
    return [items[i] for i in np.unique(np.linspace(0, len(items) - 1, limit).round().astype(int))]


def build_map(folder: Path, names: Sequence[str], cameras: Sequence, cam_from_world: Mapping[str, np.ndarray],
              args):
    """A pylocalize map of the posed images ``names`` (relative to ``folder``)."""
    from pylocalize.localization import Map
    from pylocalize.localization.map import image_path

    with phase(logger, f"map of {len(names)} images") as done, quiet_colmap():
        m = Map.from_views([image_path(folder, n) for n in names], list(cameras),
                           np.stack([cam_from_world[n] for n in names]), list(names),
                           max_features=args.max_features, progress=args.progress)
        done.outcome = f"{len(m.points3D)} points"
    return m


def localize(m, folder: Path, names: Sequence[str], cameras: Sequence, args) -> Dict[str, np.ndarray]:
    """``{query name: cam_from_world}`` of the queries that localized (the others are left out,
    and count as failures when scored)."""
    from pylocalize.localization.map import image_path

    with phase(logger, f"localize {len(names)} queries") as done:
        results = m.localize_many([image_path(folder, n) for n in names], list(cameras), workers=args.workers,
                                  progress=args.progress, k=args.k, covariance=False)
        poses = {n: r.cam_from_world for n, r in zip(names, results) if r.success}
        done.outcome = f"{len(poses)} of {len(names)} localized"
    for name, result in zip(names, results):
        if not result.success:
            logger.debug("%s: %s", name, result.reason)
    return poses


def print_table(rows: List[dict], columns: Sequence[Tuple[str, str, str]]) -> None:
    """Prints ``rows`` as a Markdown table; ``columns`` are ``(key, header, format)``."""
    cells = [[header for _, header, _ in columns]]
    for row in rows:
        cells.append([format(row[key], fmt) if key in row and row[key] is not None else "-"
                      for key, _, fmt in columns])
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |" for line in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print("\n".join(lines))


def write_json(path: Path, data) -> None:
    from pylocalize.containers import write_bytes_atomic

    write_bytes_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=float).encode("utf-8"))


def image_width(path) -> int:
    from pylocalize.io import image_size

    return image_size(path)[0]
