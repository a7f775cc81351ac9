"""Conventions every command-line tool keeps: --version, -v/-q anywhere, help everywhere."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from parallel_flash import __version__
from parallel_flash.cli import build_parser, verbosity


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "parallel_flash", *args], capture_output=True, text=True, timeout=60
    )


def test_version() -> None:
    done = cli("--version")
    assert done.returncode == 0
    assert done.stdout == f"parallel-flash {__version__}\n"


@pytest.mark.parametrize(
    ("argv", "level"),
    [
        (["list"], 0),
        (["-v", "list"], 1),
        (["list", "-v"], 1),
        (["-v", "list", "-vv"], 3),
        (["list", "-q"], -1),
        (["-q", "demo", "--devices", "2"], -1),
        (["-vv", "boot", "x.wim", "-q"], 1),
    ],
)
def test_verbosity_before_or_after_the_command(argv: list[str], level: int) -> None:
    assert verbosity(build_parser().parse_args(argv)) == level


def test_quiet_keeps_warnings_out() -> None:
    done = cli("demo", "--devices", "1", "--wim-size", "1MiB", "--plain", "-q", "--rate", "0")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_option_has_help() -> None:
    parser = build_parser()
    missing = []
    for name, sub in {"": parser, **_subparsers(parser)}.items():
        for action in sub._actions:
            if action.help in (None, "") and not isinstance(action, argparse._SubParsersAction):
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, missing
