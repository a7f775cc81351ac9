"""Run a command on a real terminal emulator (a private tmux server) and read its screen."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

__all__ = ("Screen", "run_on_terminal")


@dataclass(frozen=True)
class Screen:
    """What the terminal showed once the command had ended."""

    returncode: int
    #: the visible screen, one string per row
    visible: str
    #: scrollback and screen, lines the terminal wrapped joined again (``-J``)
    history: str
    stderr: str


def run_on_terminal(
    argv: list[str], *, width: int, height: int, workdir: Path, timeout: float = 120
) -> Screen:
    """Run *argv* in a *width* x *height* tmux pane; return its screen when it exits.

    The server is private (its own socket) and killed afterwards, so no
    other session is touched. Standard error goes to a file, so the pane
    holds only what the command drew on standard output.
    """
    rc_file, stderr = workdir / "rc", workdir / "stderr"
    rc_file.unlink(missing_ok=True)
    socket = f"pf-test-{uuid.uuid4().hex[:12]}"
    tmux = ["tmux", "-L", socket, "-f", "/dev/null"]
    # the shell keeps the pane open for the capture
    command = f"{shlex.join(argv)} 2>{stderr}; echo $? >{rc_file}; sleep 600"
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "TMUX")}
    env.update(TERM="xterm-256color", LC_ALL="C.UTF-8")
    subprocess.run(
        [*tmux, "new-session", "-d", "-x", str(width), "-y", str(height), "-s", "t", command],
        check=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + timeout
        while not rc_file.exists() or not rc_file.read_text().strip():
            if time.monotonic() > deadline:
                raise AssertionError(f"{argv[:4]} did not finish within {timeout} s")
            time.sleep(0.1)

        def capture(*options: str) -> str:
            return subprocess.run(
                [*tmux, "capture-pane", "-p", "-t", "t", *options],
                check=True,
                capture_output=True,
                text=True,
                env=env,
            ).stdout

        visible, history = capture(), capture("-J", "-S", "-")
    finally:
        subprocess.run([*tmux, "kill-server"], check=False, capture_output=True)
    return Screen(
        returncode=int(rc_file.read_text()),
        visible=visible,
        history=history,
        stderr=stderr.read_text(errors="replace") if stderr.exists() else "",
    )
