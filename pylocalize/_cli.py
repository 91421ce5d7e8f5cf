"""What the command modules of the parts share: running one part's commands alone."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Optional, Sequence


def run_alone(add_parser: Callable, argv: Optional[Sequence[str]] = None, command: Optional[str] = None) -> int:
    """Runs one part's commands without the rest of the command line
    (``python -m pylocalize.<part>.cli ...``), exactly as ``pylocalize ...`` would.

    ``command`` is the part's own command when its commands sit under one (``objects``,
    ``posetext``), so that ``python -m pylocalize.objects.cli estimate ...`` needs no prefix.
    """
    parser = argparse.ArgumentParser(prog="pylocalize")
    add_parser(parser.add_subparsers(dest="command", required=True))
    words = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(([command] if command else []) + words)
    return args.func(args)
