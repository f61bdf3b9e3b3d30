"""Every option, positional and subcommand of the CLI says what it is for; --version works."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from fedsilo.cli.main import _parser, main


def _walk(parser: argparse.ArgumentParser, name: str) -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        yield name, action
        if isinstance(action, argparse._SubParsersAction):
            yield from ((name, choice) for choice in action._choices_actions)
            for sub_name, sub in action.choices.items():
                yield from _walk(sub, f"{name} {sub_name}")


def test_every_action_has_help():
    walked = list(_walk(_parser(), "fedsilo"))
    missing = [f"{cmd}: {a.option_strings or a.dest or a.metavar}" for cmd, a in walked
               if not (a.help or "").strip() or a.help == argparse.SUPPRESS]
    assert not missing, f"no help text: {missing}"
    commands = {cmd for cmd, _ in walked}
    # the walk reached every subcommand, nested ones included
    assert {"fedsilo run", "fedsilo demo", "fedsilo provision", "fedsilo server",
            "fedsilo client", "fedsilo audit verify", "fedsilo dashboard"} <= commands


def test_version_flag(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"fedsilo {version('fedsilo')}"
