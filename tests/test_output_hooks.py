"""``--on-result CMD``: every record on the hook's stdin; a bad hook never stops the line."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from parallel_flash.output.report import read_report

pytestmark = pytest.mark.slow

HOOK = """
import json, os, sys, time
record = json.load(sys.stdin)
with open(sys.argv[1], "a") as out:
    out.write(json.dumps(record) + "\\n")
assert os.environ["PARALLEL_FLASH_RECORD_ID"] == record["record_id"]
if record["slot"] == 2:
    print("label printer out of paper", flush=True)
    sys.exit(3)
if record["slot"] == 3:
    time.sleep(120)
"""


def test_hook_gets_every_record_and_its_failures_never_fail_a_device(
    tmp_path: Path, small_wim: Path, small_sdi: Path
) -> None:
    script = tmp_path / "hook.py"
    script.write_text(HOOK)
    received = tmp_path / "received.jsonl"
    report = tmp_path / "run.jsonl"
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "parallel_flash", "boot", str(small_wim), "--sdi", str(small_sdi),
         "--sim", "5", "--sim-rate", "0", "--plain", "--report", str(report),
         "--on-result", f"{sys.executable} {script} {received}", "--on-result-timeout", "2"],
        capture_output=True, text=True, timeout=120,
    )
    assert time.monotonic() - started < 60, "the hanging hook was killed, not waited for"
    assert run.returncode == 0, run.stderr  # every device booted: hooks do not change that
    recorded = [e for e in read_report(report) if e["type"] == "device"]
    hooked = [json.loads(line) for line in received.read_text().splitlines()]
    assert len(hooked) == 5
    by_slot = {r["slot"]: r for r in hooked}
    for entry in recorded:
        got = dict(by_slot[entry["slot"]])
        assert got.pop("record_id") and got.pop("line") == "default"
        assert got["station"]  # the report's record names it too
        assert got == entry
    assert all(entry["ok"] for entry in recorded)
    assert "hook for sim-2" in run.stderr and "exited with status 3: label printer out of paper" \
        in run.stderr
    assert "hook for sim-3" in run.stderr and "still running after 2 s; killed" in run.stderr


def test_hook_that_cannot_start_is_logged_and_the_line_goes_on(
    tmp_path: Path, small_wim: Path, small_sdi: Path
) -> None:
    report = tmp_path / "run.jsonl"
    run = subprocess.run(
        [sys.executable, "-m", "parallel_flash", "boot", str(small_wim), "--sdi", str(small_sdi),
         "--sim", "2", "--sim-rate", "0", "--plain", "--report", str(report),
         "--on-result", str(tmp_path / "no-such-program")],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("--on-result hook for sim-") == 2
    assert "exited with status 127" in run.stderr  # sh: not found
