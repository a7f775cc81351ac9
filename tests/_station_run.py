"""Running the station (``boot --watch``) under the emulator, for the tests that drive it.

One way to start it and wait for it to be ready, stop it, read its records and
wait for a device to stream, shared by the station and line-trust tests.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from parallel_flash.emulator import EmulatedLine
from parallel_flash.output.report import read_report

#: What the station logs once it is watching for devices.
READY = "station ready"


def start_station(line: EmulatedLine, argv: list[str], **kwargs: Any) -> subprocess.Popen[str]:
    """Start ``argv`` under the line's preload and return once it is watching (30 s at most)."""
    process = line.popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    )
    assert process.stderr is not None
    deadline = time.monotonic() + 30
    seen: list[str] = []
    while time.monotonic() < deadline:
        text = process.stderr.readline()
        if not text:
            break
        seen.append(text)
        if READY in text:
            return process
    process.kill()
    pytest.fail("station never became ready:\n" + "".join(seen))


def finish_station(process: subprocess.Popen[str], timeout: float = 60) -> tuple[str, str]:
    """Its output once it has ended (killed and failed if it does not within ``timeout``)."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"station did not stop:\n{out}\n{err}")


def device_records(report: Path) -> list[dict[str, Any]]:
    return [r for r in read_report(report) if r["type"] == "device"]


def wait_streaming(line: EmulatedLine, port: str, timeout: float = 30) -> None:
    """Until the device on ``port`` has received image bytes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if line.summaries().get(port, {}).get("received_bytes", 0) > 0:
            return
        time.sleep(0.05)
    pytest.fail(f"{port} never started streaming")
