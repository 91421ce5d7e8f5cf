"""The command line as a newcomer meets it: one-line errors that say the fix, exit statuses,
logging and progress, defaults in every help, queries keyed by their relative path.

Every test runs the real commands (``pylocalize.cli.main``, or a child process where stderr
must be seen whole) on small generated data.
"""

from __future__ import annotations

import argparse

import pytest

from pylocalize.cli import build_parser, main


def _parsers(parser: argparse.ArgumentParser, path=("pylocalize",)):
    """Every parser of the command line with its command words."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, path + (name,))


def test_every_option_with_a_default_shows_it_in_help():
    checked = 0
    for path, parser in _parsers(build_parser()):
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            default = action.default
            if not action.option_strings or default in (None, False, argparse.SUPPRESS) or action.nargs == 0:
                continue
            shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
            assert f"default: {shown})" in text, f"{' '.join(path)} {action.option_strings[0]}: default {shown!r}"
            checked += 1
    assert checked > 40  # every part's commands were walked


def test_top_level_help_lists_every_command_with_its_help(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    (_, top), = [(p, s) for p, s in _parsers(build_parser()) if p == ("pylocalize",)]
    commands = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    assert len(commands._choices_actions) >= 10
    for choice in commands._choices_actions:
        assert choice.help, choice.dest
        line = next(line for line in text.splitlines() if line.split()[:1] == [choice.dest])
        assert line.split()[1] == choice.help.split()[0]
