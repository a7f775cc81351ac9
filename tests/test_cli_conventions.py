"""Conventions every command-line tool keeps: --version, -v/-q anywhere, help everywhere."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

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


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_plain_output_keeps_only_what_needs_acting_on(
    small_wim: Path, small_sdi: Path, where: str
) -> None:
    """Not a terminal: -q drops the found/booting/progress/booted lines, never a failure."""
    argv = ["boot", str(small_wim), "--sdi", str(small_sdi), "--sim", "4", "--sim-rate", "0",
            "--sim-fault", "2:status=-5,logs=2"]
    loud = cli(*argv)
    quiet = cli(*(["-q", *argv] if where == "before" else [*argv, "-q"]))
    assert loud.returncode == quiet.returncode == 1
    assert "Found device:" in loud.stdout and "Booted" in loud.stdout
    failed, summary, *recap = quiet.stdout.splitlines()
    assert failed == "sim-2: FAILED: WIM boot failure status 0xfffffffb"
    assert summary.startswith("Summary: 4 devices, 3 booted, 1 failed")
    assert recap == loud.stdout.splitlines()[-2:] and recap[0] == "Failed devices (1):"
    assert quiet.stderr == ""


def test_quiet_on_a_terminal_draws_no_live_table(tmp_path: Path) -> None:
    from _terminal import run_on_terminal

    argv = [sys.executable, "-m", "parallel_flash", "-q", "demo", "--devices", "3",
            "--wim-size", "1MiB", "--rate", "0", "--workdir", str(tmp_path / "demo")]
    screen = run_on_terminal(argv, width=100, height=30, workdir=tmp_path)
    assert screen.returncode == 0, screen.stderr
    lines = [line for line in screen.history.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Summary: 3 devices, 3 booted, 0 failed")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_option_has_help_and_says_its_default() -> None:
    parser = build_parser()
    missing, undocumented_default = [], []
    for name, sub in {"": parser, **_subparsers(parser)}.items():
        for action in sub._actions:
            where = f"{name} {'/'.join(action.option_strings) or action.dest}"
            if isinstance(action, argparse._SubParsersAction):
                continue
            if not action.help:
                missing.append(where)
            elif (
                action.option_strings
                and action.default not in (None, False, 0, [], argparse.SUPPRESS)
                and "default" not in action.help
            ):
                undocumented_default.append(where)
    assert not missing, missing
    assert not undocumented_default, undocumented_default


def test_bash_completion_completes_commands_and_options() -> None:
    script = cli("completion", "bash")
    assert script.returncode == 0, script.stderr
    probe = (
        script.stdout
        + "\ncomplete -p parallel-flash"
        + "\nCOMP_WORDS=(parallel-flash ud); COMP_CWORD=1; COMP_LINE='parallel-flash ud';"
        + ' COMP_POINT=${#COMP_LINE}; _shtab_parallel_flash; echo "commands: ${COMPREPLY[*]}"'
        + "\nCOMP_WORDS=(parallel-flash udev-rule --acc); COMP_CWORD=2;"
        + " COMP_LINE='parallel-flash udev-rule --acc'; COMP_POINT=${#COMP_LINE};"
        + ' _shtab_parallel_flash; echo "options: ${COMPREPLY[*]}"\n'
    )
    done = subprocess.run(["bash", "--norc", "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "complete " in done.stdout and "parallel-flash" in done.stdout
    assert "commands: udev-rule" in done.stdout
    assert "options: --access" in done.stdout


def test_other_shells_get_a_script() -> None:
    zsh = cli("completion", "zsh")
    assert zsh.returncode == 0 and "udev-rule" in zsh.stdout and "--status-timeout" in zsh.stdout
    tcsh = cli("completion", "tcsh")  # shtab completes commands only for tcsh
    assert tcsh.returncode == 0 and "udev-rule" in tcsh.stdout


def test_manpage_lists_every_command_and_option() -> None:
    done = cli("manpage")
    assert done.returncode == 0, done.stderr
    page = done.stdout
    assert page.startswith('.TH PARALLEL\\-FLASH "1"')
    assert f"parallel\\-flash {__version__}" in page
    for command in _subparsers(build_parser()):
        assert command.replace("-", "\\-") in page, command
    assert "\\-\\-status\\-timeout" in page and "\\-\\-usbfs\\-mb" in page
    groff = shutil.which("groff")
    if groff:  # it renders as a manual page, without complaint
        shown = subprocess.run(
            [groff, "-man", "-Tutf8", "-ww"], input=page, capture_output=True, text=True
        )
        assert shown.returncode == 0 and not shown.stderr, shown.stderr
        assert "udev-rule" in shown.stdout.replace("\u2010", "-")


def test_an_ffu_given_to_boot_points_to_img2wim(tmp_path: Path) -> None:
    from parallel_flash.demo.ffu import build_demo_ffu

    ffu = build_demo_ffu(tmp_path, mainos_size=4 << 20, tree_size=1 << 20)
    report = tmp_path / "r.jsonl"
    done = cli("boot", str(ffu), "--sim", "2", "--plain", "--report", str(report))
    assert done.returncode == 1  # SimpleIO devices take no FFU: both refused
    for record in (json.loads(line) for line in report.read_text().splitlines()):
        if record["type"] == "device":
            assert record["reason"] == "refused"
            assert record["error"].endswith(
                "is an FFU: convert the FFU to a WIM with parallel-flash img2wim"
            ), record["error"]
    assert done.stderr.strip().endswith(
        f"parallel-flash: hint: to boot these devices from {ffu}, convert its MainOS first: "
        f"parallel-flash img2wim {ffu} OUT.wim"
    ), done.stderr
    assert "Traceback" not in done.stderr


def test_an_ffu_a_ufp_device_takes_brings_no_hint(tmp_path: Path) -> None:
    from parallel_flash.demo.ffu import build_demo_ffu

    ffu = build_demo_ffu(tmp_path, mainos_size=4 << 20, tree_size=1 << 20)
    done = cli("boot", str(ffu), "--sim", "2", "--sim-mix", "ufp-v2=2", "--plain",
               "--sim-rate", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "img2wim" not in done.stdout + done.stderr


def test_a_wim_given_to_img2wim_says_what_to_do(tmp_path: Path) -> None:
    from parallel_flash.demo.inputs import demo_inputs

    wim, sdi = demo_inputs(tmp_path / "demo", wim_size=1 << 20)
    done = cli("img2wim", str(wim), str(tmp_path / "out.wim"))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"parallel-flash: error: {wim}: is a WIM already: boot it as it is "
        f"(parallel-flash boot {wim} --sdi boot.sdi)"
    )
    assert not (tmp_path / "out.wim").exists()
    done = cli("img2wim", str(sdi), str(tmp_path / "out.wim"))
    assert done.returncode == 2 and "is an SDI, not an FFU" in done.stderr
