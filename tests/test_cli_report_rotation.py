"""``--report`` rotation through the CLI in a real process: a strftime pattern, and SIGUSR1
sent while records are being written (logrotate moving the file again and again).

Every device ends in exactly one record in exactly one file, and every line is whole.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from test_output_record_schema import validator

CLI = [sys.executable, "-m", "parallel_flash"]
LOGROTATE = shutil.which("logrotate") or (
    "/usr/sbin/logrotate" if Path("/usr/sbin/logrotate").exists() else None
)


def _whole_lines(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    assert not text or text.endswith("\n"), f"{path.name} ends mid-line"
    return [json.loads(line) for line in text.splitlines()]


def test_sigusr1_while_records_are_written_loses_and_splits_nothing(
    tmp_path: Path, small_wim: Path, small_sdi: Path
) -> None:
    devices = 40
    report = tmp_path / "r.jsonl"
    process = subprocess.Popen(
        [*CLI, "boot", str(small_wim), "--sdi", str(small_sdi), "--sim", str(devices),
         "--sim-rate", "2", "--sim-bus-rate", "20", "--report", str(report), "--plain"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while not report.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    rotations = 0
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if report.exists():  # logrotate: move the file, then tell the process
                rotations += 1
                report.rename(tmp_path / f"r.jsonl.{rotations}")
            process.send_signal(signal.SIGUSR1)
            time.sleep(0.02)
        _out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "Traceback" not in err
    files = sorted(tmp_path.glob("r.jsonl*"))
    assert rotations > 5 and len(files) > 5
    slots: list[int] = []
    final = []
    holding = 0
    check = validator()
    for path in files:
        entries = _whole_lines(path)
        for entry in entries:
            check.validate(entry)
        found = [entry["slot"] for entry in entries if entry["type"] == "device"]
        slots += found
        holding += bool(found)
        summaries = [entry for entry in entries if entry["type"] == "summary"]
        if summaries:
            assert entries[-1] is summaries[-1] and len(summaries) == 1, path.name
            final += [s for s in summaries if not s["continued"]]
    assert sorted(slots) == list(range(1, devices + 1))  # each device exactly once
    print(f"{rotations} rotations: {len(files)} files, {holding} with device records")
    assert holding > 1  # the records crossed rotations
    assert len(final) == 1 and final[0]["interrupted"] is False


def test_a_pattern_names_the_file_and_a_bad_one_is_one_line(
    tmp_path: Path, small_wim: Path, small_sdi: Path
) -> None:
    pattern = str(tmp_path / "line-%Y%m%d.jsonl")
    before = time.strftime(pattern)
    done = subprocess.run(
        [*CLI, "boot", str(small_wim), "--sdi", str(small_sdi), "--sim", "3", "--sim-rate", "0",
         "--report", pattern, "--plain"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    names = {before, time.strftime(pattern)}  # a run across midnight writes either
    written = [path for path in tmp_path.iterdir() if str(path) in names]
    assert written and sum(
        entry["type"] == "device" for path in written for entry in _whole_lines(path)
    ) == 3
    bad = subprocess.run(
        [*CLI, "boot", str(small_wim), "--sdi", str(small_sdi), "--sim", "1",
         "--report", str(tmp_path / "x-%Y") + "/"],
        capture_output=True, text=True, timeout=60,
    )
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "not a file name" in bad.stderr, bad.stderr


def _docs_logrotate_snippet() -> str:
    """The logrotate configuration docs/station.md gives the user, as written there."""
    text = (Path(__file__).parent.parent / "docs" / "station.md").read_text()
    start = text.index("```\n/var/log/parallel-flash/station.jsonl {") + 4
    return text[start : text.index("```", start)]


@pytest.mark.skipif(LOGROTATE is None, reason="needs logrotate (scripts/run.sh installs it)")
def test_the_docs_logrotate_snippet_rotates_a_running_report(
    tmp_path: Path, small_wim: Path, small_sdi: Path
) -> None:
    """Real logrotate, the docs' configuration: the file moved, USR1, the same path reopened."""
    report = tmp_path / "station.jsonl"
    process = subprocess.Popen(
        [*CLI, "boot", str(small_wim), "--sdi", str(small_sdi), "--sim", "3", "--sim-rate", "0.5",
         "--sim-fault", "1:disconnect=1", "--report", str(report), "--plain"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while '"slot":1' not in (report.read_text() if report.exists() else ""):
            assert time.monotonic() < deadline and process.poll() is None, "no first record"
            time.sleep(0.02)
        snippet = _docs_logrotate_snippet()
        # Only what ties it to a real station changes: the path, the account, the reload.
        for old, new in (
            ("/var/log/parallel-flash/station.jsonl", str(report)),
            ("create 0644 flash flash", "create 0644"),
            ("systemctl reload parallel-flash.service", f"kill -USR1 {process.pid}"),
        ):
            assert old in snippet
            snippet = snippet.replace(old, new)
        config = tmp_path / "logrotate.conf"
        config.write_text(snippet)
        rotated = subprocess.run(
            [LOGROTATE, "--force", "--state", str(tmp_path / "state"), str(config)],
            capture_output=True, text=True, timeout=60,
        )
        assert rotated.returncode == 0, rotated.stderr
        _out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # slots 2 and 3 stream for 6 s: logrotate has long done its work when they finish
    assert process.returncode == 1, err  # slot 1 failed on purpose
    old = _whole_lines(tmp_path / "station.jsonl.1")  # delaycompress: left as it is
    new = _whole_lines(report)
    assert [e.get("slot") for e in old] == [1, None] and old[-1]["continued"] is True
    assert sorted(e["slot"] for e in new if e["type"] == "device") == [2, 3]
    assert new[-1]["type"] == "summary" and new[-1]["continued"] is False
    assert "Traceback" not in err


def test_sigusr1_outside_a_run_neither_kills_nor_leaks_into_children() -> None:
    """Before and after a run there is nothing to reopen: SIGUSR1 is caught, not ignored,
    so the commands the tool starts (hooks, the emulator, mkntfs) keep its default."""
    script = (
        "import os, signal, subprocess\n"
        "from parallel_flash.cli import main\n"
        "main(['udev-rule'])\n"
        "os.kill(os.getpid(), signal.SIGUSR1)\n"
        "status = subprocess.run(['cat', '/proc/self/status'], capture_output=True, text=True)\n"
        "print([l for l in status.stdout.splitlines() if l.startswith('SigIgn:')][0])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr  # alive after the signal
    ignored = int(done.stdout.splitlines()[-1].split()[1], 16)
    assert not ignored & (1 << (signal.SIGUSR1 - 1)), done.stdout
