"""The live table under a real pseudo-terminal: tmux's screen, and the raw pty byte stream.

A script drives :class:`LiveTable` with real DeviceRecords progressing for
about a second (no engine needed), one of them named with rich markup and an
escape sequence. tmux is a real terminal emulator: if the device's ESC
reached it, the screen would show red text instead of ``\\x1b[31m``.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
import time
import uuid
from pathlib import Path

import pytest

SCRIPT = r'''
import sys, time
from parallel_flash.engine.records import DeviceLog, DeviceRecord, DeviceState
from parallel_flash.output.ui import LiveTable

EVIL = "[bold]x[/bold]\x1b[31mred"
MB = 1_000_000
names = ["Contoso.MSM8960.JD301_ATT.3.2.1", EVIL, "Contoso.Other.3", "Contoso.Other.4"]
records = [DeviceRecord(slot=i, port=f"1-1.{i}") for i in range(1, 5)]
with LiveTable(title="booting demo.wim", refresh_per_second=10) as table:
    for record in records:
        table.device_added(record)
        record.state = DeviceState.IDENTIFYING
        table.device_changed(record)
    time.sleep(0.2)
    for i, record in enumerate(records, 1):
        record.name = names[i - 1]
        record.unique_id = f"00000011-f151-a509-0000-{i:012x}"
        record.bytes_total = 40 * MB
        record.state = DeviceState.SENDING_WIM
        record.stream_started = time.monotonic()
        table.device_changed(record)
    table.device_log(records[1], DeviceLog(level=1, event_id=3, text="loader says \x1b[41mno"))
    for step in range(1, 11):
        time.sleep(0.1)
        for record in records:
            record.bytes_done = step * 4 * MB
    now = time.monotonic()
    for record in records:
        record.stream_finished = record.finished = now
        record.state = DeviceState.BOOTED
    records[2].state = DeviceState.FAILED
    records[2].error = "WIM boot failure status 0xc0000017"
    for record in records:
        table.device_finished(record)
    time.sleep(0.3)
with open(sys.argv[1], "w") as marker:
    marker.write("done")
'''

WIDTH, HEIGHT = 180, 40


def _write_script(tmp_path: Path) -> Path:
    script = tmp_path / "live_table_demo.py"
    script.write_text(SCRIPT)
    return script


def _wait_for(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    # The shell creates the file before it writes to it: wait for its content.
    while not path.exists() or not path.stat().st_size:
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.05)


def _check_screen(text: str) -> None:
    assert "booting demo.wim" in text
    for name in ("Contoso.MSM8960.JD301_ATT.3.2.1", "Contoso.Other.3", "Contoso.Other.4"):
        assert name in text
    assert "00000011-f151-a509-0000-000000000001" in text
    # the malicious name, literally
    assert "[bold]x[/bold]\\x1b[31mred" in text
    assert "loader says \\x1b[41mno" in text
    assert "failed: WIM boot failure status 0xc0000017" in text
    assert "booted" in text and "100%" in text
    assert "4 devices: 3 booted, 1 failed" in text
    assert "40.0/40.0" in text and "160.0/160.0 MB" in text


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_live_table_on_a_tmux_screen(tmp_path: Path) -> None:
    script = _write_script(tmp_path)
    marker, rc_file, stderr = tmp_path / "done", tmp_path / "rc", tmp_path / "stderr"
    socket = f"pf-test-{uuid.uuid4().hex[:12]}"  # a private server: nobody else's sessions
    tmux = ["tmux", "-L", socket, "-f", "/dev/null"]
    # stdout stays on the pane; the shell keeps the pane open for the capture
    command = f"{sys.executable} {script} {marker} 2>{stderr}; echo $? >{rc_file}; sleep 60"
    subprocess.run(
        [*tmux, "new-session", "-d", "-x", str(WIDTH), "-y", str(HEIGHT), "-s", "t", command],
        check=True,
        env={**os.environ, "TERM": "xterm-256color"},
    )
    try:
        _wait_for(rc_file, timeout=60)
        assert rc_file.read_text().strip() == "0", stderr.read_text()

        def capture(*options: str) -> str:
            return subprocess.run(
                [*tmux, "capture-pane", "-p", "-t", "t", "-S", "-200", *options],
                check=True,
                capture_output=True,
                text=True,
            ).stdout

        screen, styled = capture(), capture("-e")  # -e: with the cells' colours as SGR
    finally:
        subprocess.run([*tmux, "kill-server"], check=False, capture_output=True)
    _check_screen(screen)
    assert marker.exists()
    # Had the device's ESC reached the emulator, "red" would be in red cells.
    assert "\x1b[31mred" not in styled and "\x1b[41mno" not in styled
    assert "\\x1b[31mred" in styled
    # failures are logged above the table, whose final frame stays on screen
    assert screen.index("failed: WIM boot failure") < screen.rindex("4 devices: ")


def test_live_table_raw_pty_stream(tmp_path: Path) -> None:
    script = _write_script(tmp_path)
    marker = tmp_path / "done"
    pid, master = pty.fork()
    if pid == 0:  # child: stdio is the pty's slave side
        # An explicit environment: readline (imported by the test runner)
        # may have put COLUMNS/LINES into the C-level environment behind
        # os.environ's back, and rich would believe them over the pty.
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        env["TERM"] = "xterm-256color"
        # Size the terminal before rich asks for it.
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", HEIGHT, WIDTH, 0, 0))
        os.execve(sys.executable, [sys.executable, str(script), str(marker)], env)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the slave side
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    raw = b"".join(chunks).decode("utf-8", "replace")
    # It really ran live: rich hid the cursor and redrew in place.
    assert "\x1b[?25l" in raw and "\x1b[2K" in raw
    # rich's own colours split phrases; drop SGR sequences to read the text
    _check_screen(re.sub(r"\x1b\[[0-9;]*m", "", raw))
    # The device's own sequences never reached the terminal.
    assert "\x1b[31mred" not in raw
    assert "\x1b[41mno" not in raw
