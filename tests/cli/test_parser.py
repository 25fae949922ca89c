"""The command line parser built for one command (``build_parser(command)``, what every
``mlpipe`` invocation uses) accepts exactly what the whole parser accepts."""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlpipe_jupyter.cli.main import build_parser


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps its subparsers here, and nowhere public
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


FULL = build_parser()
COMMANDS = sorted(_commands(FULL))


def _outcome(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[str, str]:
    """What parsing ``argv`` gives: the namespace (functions by name), or the exit and its
    message."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            namespace = parser.parse_args(argv)
    except SystemExit as stop:
        return f"exit {stop.code}", out.getvalue() + err.getvalue()
    values = {key: getattr(value, "__name__", value) for key, value in vars(namespace).items()}
    return "parsed", repr(sorted(values.items()))


@pytest.mark.parametrize("command", COMMANDS)
def test_each_commands_own_parser_is_the_one_in_the_whole_parser(command: str) -> None:
    alone = _commands(build_parser(command))
    assert list(alone) == [command]
    assert alone[command].format_help() == _commands(FULL)[command].format_help()


WORDS = st.sampled_from(["latest", "x.ipynb", "-p", "n=1", "--json", "--limit", "3", "list",
                         "show", "add", "--version", "2", "-q", "--step", "a", "--help", "name"])


@settings(max_examples=300, deadline=None)
@given(command=st.sampled_from(COMMANDS + ["nosuch", "-h", "--bogus"]),
       rest=st.lists(WORDS, max_size=5))
def test_any_command_line_parses_alike_with_either_parser(command: str, rest: list[str]) -> None:
    argv = [command, *rest]
    named = command if not command.startswith("-") else None
    assert _outcome(build_parser(named), argv) == _outcome(FULL, argv)
