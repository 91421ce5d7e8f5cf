"""``pylocalize bench TOPIC``: a benchmark at a small size, to check an install; the full runs
and their figures are in ``benchmarks/``.

``pylocalize/cli.py`` wires it in with ``add_parser(subparsers)``; a benchmark's peers
(faiss...) are imported only when it runs.
"""

from __future__ import annotations

import argparse


def _bench(args) -> int:
    if args.topic == "binary":
        from pylocalize.bench.binary import main as bench_main

        return bench_main(["--small"] + list(args.rest))
    raise SystemExit(f"unknown benchmark {args.topic!r}")


def add_parser(subparsers) -> None:
    """Adds the ``bench`` command to an argparse sub-parser set, as ``pylocalize.cli.build_parser``
    builds its commands."""
    p = subparsers.add_parser("bench", help="run a benchmark at a small size (full runs: benchmarks/)")
    p.add_argument("topic", choices=["binary"])
    p.add_argument("rest", nargs=argparse.REMAINDER, help="extra flags for the benchmark")
    p.set_defaults(func=_bench)


__all__ = ["add_parser"]
