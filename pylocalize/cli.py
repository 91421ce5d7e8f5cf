"""The ``pylocalize`` command line: maps and localization, object pose, geo-localization,
pose-text retrieval, demos and benchmarks.

Its first paragraph is ``pylocalize --help``'s description. Each part of the package registers
its own commands with ``add_parser(subparsers)`` (``localization/cli.py``, ``objects/cli.py``,
``geo/cli.py``...); this module only builds the top-level parser and dispatches through
``_cli.run`` (the common options, logging, one-line errors and exit statuses). The command
modules import nothing heavy at module level (torch, pycolmap and the renderer load when a
command runs), so ``pylocalize --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys

import pylocalize
from pylocalize._cli import Parser, run
from pylocalize.bench.cli import add_parser as add_bench
from pylocalize.demo import add_parser as add_demo
from pylocalize.distributed.cli import add_parser as add_index
from pylocalize.geo.cli import add_parser as add_geo
from pylocalize.io import IMAGE_SUFFIXES  # noqa: F401 (its old path, before pylocalize/io.py)
from pylocalize.localization.cli import add_parser as add_localization
from pylocalize.localization.track_cli import add_parser as add_track
from pylocalize.objects.cli import add_parser as add_objects
from pylocalize.posetext.cli import add_parser as add_posetext
from pylocalize.render.cli import add_parser as add_render


def _info(args) -> int:
    from pylocalize import _core

    print(f"pylocalize {pylocalize.__version__}")
    print(f"simd: {pylocalize.simd_level()} (detected {pylocalize.detected_simd_level()}; "
          f"supported {', '.join(pylocalize.supported_simd_levels())})")
    print(f"threads: {pylocalize.get_num_threads()} of {_core.num_cores()} cores"
          f" (OpenMP {'on' if _core.has_openmp() else 'off'})")
    if not _core.cuda_built():
        print("cuda: no (built without -DPYLOCALIZE_CUDA=ON)")
    else:
        devices = _core.cuda_device_count()
        print(f"cuda: {'yes' if devices else 'no'} (built with CUDA; {devices} usable device(s))")
    return 0


# The commands in the order `pylocalize --help` lists them: the package first, then the
# demo, then each task's commands (the localization ones side by side), sharded indexes, benchmarks last.
COMMANDS = (add_demo, add_render, add_localization, add_track, add_objects, add_geo, add_posetext, add_index, add_bench)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="pylocalize", description=__doc__.split("\n\n")[0].replace("``", ""),
                    epilog="'pylocalize COMMAND --help' tells more about a command.")
    sub = parser.add_subparsers(dest="command", required=True, title="commands")
    sub.add_parser("info", help="version, SIMD level, threads, CUDA").set_defaults(func=_info)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv=None) -> int:
    """Runs ``pylocalize`` with ``argv`` (default: the process's arguments); returns the exit
    status (0 done, 1 the input could not serve the command, 2 a usage error)."""
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
