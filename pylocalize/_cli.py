"""What the command modules of the parts share: the parser (every option's default in its
help), the options every command takes (``--threads``, ``--verbose``, ``--quiet``,
``--debug``), logging, and running a command so that a mistake reads as one line
(``run``), for the whole command line or one part's commands alone (``run_alone``).

A command reports what went wrong by raising: ``SystemExit("message")`` for options that do
not go together (exit 2, as argparse's own usage errors), ``ValueError`` (``FormatError``
included), ``OSError`` (``FileNotFoundError`` included) or ``RuntimeError`` for inputs the job
cannot use (exit 1). Each becomes one line ``pylocalize <command>: error: <message>`` on
stderr; the message says what is wrong and how to fix it. ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from typing import Callable, Optional, Sequence

# The package's logger: library modules log under it (``logging.getLogger(__name__)``) and the
# command line shows its records on stderr at INFO (--verbose: DEBUG, --quiet: WARNING).
LOGGER_NAME = "pylocalize"

# Exceptions that mean the input is wrong or cannot serve the job: one line, exit 1.
# FormatError is a ValueError and FileNotFoundError an OSError.
INPUT_ERRORS = (ValueError, OSError, RuntimeError, MemoryError)


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to the help of every option that has a default worth saying
    (not None, not a flag's), unless its help already gives it with ``%(default)s``."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("%(default)" in text or default is None or default is argparse.SUPPRESS or action.nargs == 0
                or not (action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE))):
            return text
        # a list as the option takes it: words for nargs, else a comma-separated value
        sep = "," if action.nargs in (None, argparse.OPTIONAL) else " "
        shown = sep.join(map(str, default)) if isinstance(default, (list, tuple)) else "%(default)s"
        return f"{text} (default: {shown})" if text else f"default: {shown}"


class Parser(argparse.ArgumentParser):
    """The parser of ``pylocalize`` and of each of its commands: defaults shown in every help,
    the common options on every command (so ``pylocalize localize ... --quiet`` works as
    ``pylocalize --quiet localize ...``), and a usage error in one line."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)
        # the innermost command's parser sets this last: the name errors are reported under
        self.set_defaults(command_name=self.prog)
        _add_common_options(self, top_level=not getattr(self, "_is_command", False))

    def add_subparsers(self, **kwargs):
        kwargs.setdefault("metavar", "COMMAND")
        kwargs.setdefault("parser_class", _CommandParser)
        return super().add_subparsers(**kwargs)

    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


class _CommandParser(Parser):
    _is_command = True


def _add_common_options(parser: argparse.ArgumentParser, top_level: bool) -> None:
    """--threads, --verbose, --quiet, --debug. On a command's parser they default to
    SUPPRESS, so that a value given before the command is not overwritten by its absence after."""
    default = (lambda value: value) if top_level else (lambda value: argparse.SUPPRESS)
    group = parser.add_argument_group("common options")
    group.add_argument("--threads", type=int, default=default(None), help="threads for the core (-1 = all cores)")
    loudness = group.add_mutually_exclusive_group()
    loudness.add_argument("-v", "--verbose", action="store_true", default=default(False),
                          help="log details, COLMAP's own log included")
    loudness.add_argument("-q", "--quiet", action="store_true", default=default(False),
                          help="only warnings and errors: no progress bars or phase timings")
    group.add_argument("--debug", action="store_true", default=default(False),
                       help="show the full traceback of an error")


def at_least(low: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer of at least ``low`` (a count of views, features...),
    so that 0 or -1 is a usage error naming the option rather than a failure deep inside."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


class _LevelFormatter(logging.Formatter):
    """Plain messages for INFO and below; ``warning: ...`` / ``error: ...`` above."""

    def format(self, record):
        message = super().format(record)
        return message if record.levelno <= logging.INFO else f"{record.levelname.lower()}: {message}"


def configure_logging(verbose: bool = False, quiet: bool = False) -> Callable[[], None]:
    """Shows the ``pylocalize`` logger's records on stderr at the level the flags ask for;
    returns the function that undoes it (the command line calls it when the command ends)."""
    logger = logging.getLogger(LOGGER_NAME)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LevelFormatter("%(message)s"))
    old_level = logger.level
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    logger.addHandler(handler)  # records still propagate: a program's (or pytest's) root handlers see them

    def restore() -> None:
        logger.removeHandler(handler)
        logger.setLevel(old_level)

    return restore


def run(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> int:
    """Parses ``argv`` and runs the chosen command; returns its exit status.

    Usage errors exit 2 with one line (argparse's and a command's ``SystemExit("...")``);
    :data:`INPUT_ERRORS` and a missing extra (an ``ImportError`` that says what to
    ``pip install``) give one line and 1; anything else is a bug in pylocalize: one line
    asking for a report, and 1. ``--debug`` prints the traceback as well.
    """
    import pylocalize

    args = parser.parse_args(argv)
    args.progress = not args.quiet  # what commands pass on as progress=... (tqdm bars)
    if args.threads is not None:
        pylocalize.set_num_threads(args.threads)
    restore = configure_logging(args.verbose, args.quiet)
    try:
        return args.func(args)
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            raise
        return _report(args, str(stop.code), 2)
    except KeyboardInterrupt:
        return _report(args, "interrupted", 130)
    except INPUT_ERRORS as error:
        return _report(args, _message(error, args), 1)
    except ImportError as error:  # a missing extra says how to install it (checkpoints.import_torch)
        if "pip install" in str(error):
            return _report(args, str(error), 1)
        return _internal_error(args, error)
    except Exception as error:  # a bug: say so in one line rather than drown the user in a traceback
        return _internal_error(args, error)
    finally:
        restore()


def _internal_error(args, error: Exception) -> int:
    return _report(args, f"internal error ({type(error).__name__}: {error}); please report it with the "
                         "output of the same command with --debug", 1)


def _message(error: Exception, args) -> str:
    """The error's message; for an operating-system error on a file (``open`` of a missing
    path: "[Errno 2] No such file or directory: 'x'"), the option that named the file and the fix."""
    if not (isinstance(error, OSError) and error.filename and error.strerror):
        return str(error) or type(error).__name__
    name = str(error.filename)
    option = next((f"--{dest.replace('_', '-')} " for dest, value in vars(args).items()
                   if name in ([str(v) for v in value] if isinstance(value, list) else [str(value)])), "")
    fix = {FileNotFoundError: "check the path", IsADirectoryError: "give a file, not a folder",
           NotADirectoryError: "give a folder", PermissionError: "check the file's permissions"}
    hint = next((text for kind, text in fix.items() if isinstance(error, kind)), "")
    return f"{option}{name}: {error.strerror.lower()}" + (f"; {hint}" if hint else "")


def _report(args, message: str, status: int) -> int:
    if args.debug and sys.exc_info()[0] is not None:
        traceback.print_exc()
    sys.stderr.write(f"{args.command_name}: error: {message}\n")
    return status


def run_alone(add_parser: Callable, argv: Optional[Sequence[str]] = None, command: Optional[str] = None) -> int:
    """Runs one part's commands without the rest of the command line
    (``python -m pylocalize.<part>.cli ...``), exactly as ``pylocalize ...`` would.

    ``command`` is the part's own command when its commands sit under one (``objects``,
    ``posetext``), so that ``python -m pylocalize.objects.cli estimate ...`` needs no prefix.
    """
    parser = Parser(prog="pylocalize")
    add_parser(parser.add_subparsers(dest="command", required=True))
    words = list(sys.argv[1:] if argv is None else argv)
    return run(parser, ([command] if command else []) + words)
