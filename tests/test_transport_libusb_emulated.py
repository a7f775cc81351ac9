"""``parallel-flash boot`` through real libusb, against umockdev-emulated devices.

Every test runs the real CLI as a subprocess under umockdev's preload
(:meth:`EmulatedLine.run`/``popen``): python-libusb1, libusb-1.0 and its
usbfs backend are all the real thing; only the kernel's usbdevfs is
emulated (by :mod:`parallel_flash.emulator`). What each device received is
read back from the emulator: SHA-256 and the transfer transcript.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from parallel_flash.emulator import EmulatedLine
from parallel_flash.output.report import read_report
from parallel_flash.protocol.host import TransferPlan
from parallel_flash.transport.usbfs import SMALLEST_TRANSFER, UsbfsBudget

pytestmark = pytest.mark.umockdev

CLI = [sys.executable, "-m", "parallel_flash"]


def _boot_argv(
    wim: Path, sdi: Path, report: Path, *extra: str, verbose: bool = False
) -> list[str]:
    return [
        *CLI, *(["-v"] if verbose else []), "boot", str(wim), "--sdi", str(sdi),
        "--report", str(report), "--plain", *extra,
    ]


def _image_sha(wim: Path, sdi: Path) -> str:
    return hashlib.sha256(sdi.read_bytes() + wim.read_bytes()).hexdigest()


def expected_transcript(
    sdi_length: int, wim_length: int, *, transfer_size: int = 1 << 20, resets: int = 0
) -> list[tuple[Any, ...]]:
    """protocol.md "Sequence, per device", transfer by transfer; None = any IN length."""
    seq: list[tuple[Any, ...]] = [("control", 0x21, 0x22, 1, 0), ("out", 1), ("in", None)]
    for _ in range(resets):
        seq += [("out", 1), ("in", None), ("out", 1), ("in", None)]
    seq += [("out", 1), ("out", 12)]
    plan = TransferPlan(
        sdi_length=sdi_length,
        wim_length=wim_length,
        transfer_size=transfer_size,
        max_packet_size=512,
    )
    for _offset, length, zero_packet in plan:
        seq.append(("out", length))
        if zero_packet:
            seq.append(("out", 0))
    seq.append(("in", 4))
    return seq


def _normalise(transcript: list[list[Any]], *, skip_in: bool = False) -> list[tuple[Any, ...]]:
    out = []
    for entry in transcript:
        item = tuple(entry)
        if item[0] == "in" and item[1] != 4:
            item = ("in", None)
        out.append(item)
    return out


def _devices(report: Path) -> dict[str, dict[str, Any]]:
    return {r["port"]: r for r in read_report(report) if r["type"] == "device"}


# -- the whole line ------------------------------------------------------------------------


def test_eight_devices_boot_byte_exact(tmp_path: Path, small_wim: Path, small_sdi: Path) -> None:
    report = tmp_path / "r.jsonl"
    with EmulatedLine(8) as line:
        result = line.run(
            _boot_argv(small_wim, small_sdi, report), capture_output=True, text=True, timeout=120
        )
        summaries = line.summaries(transcript=True)
    assert result.returncode == 0, result.stderr
    assert len(summaries) == 8
    sha = _image_sha(small_wim, small_sdi)
    # Under the emulator's 16 MB cap, 8 devices get transfers that fit 2 each.
    size = UsbfsBudget(16 << 20).transfer_size_limit(1 << 20, 8)
    expected = expected_transcript(
        small_sdi.stat().st_size, small_wim.stat().st_size, transfer_size=size
    )
    for port, summary in summaries.items():
        assert summary["sha256"] == sha, port
        assert summary["booted"] is True and summary["rejection"] is None, port
        assert _normalise(summary["transcript"]) == expected, port
    devices = _devices(report)
    assert sorted(devices) == sorted(summaries)
    assert all(d["ok"] and d["status"] == 0 for d in devices.values())
    assert result.stdout.count("Found device:") == 8


def test_faults_fail_or_recover_only_their_own_device(
    tmp_path: Path, small_wim: Path, small_sdi: Path
) -> None:
    report = tmp_path / "r.jsonl"
    faults = {
        0: "status=-5",
        1: "stop-reading=1048576",
        2: "stale=4096",
        3: "logs=3",
        4: "refuse-reset,stale=8192",
        5: "silent-status",
    }
    with EmulatedLine(7, faults=faults) as line:
        ports = line.ports
        result = line.run(
            _boot_argv(
                small_wim, small_sdi, report,
                "--transfer-timeout", "0.5", "--status-timeout", "1",
            ),
            capture_output=True, text=True, timeout=120,
        )
        summaries = line.summaries(transcript=True)
    assert result.returncode == 1, result.stderr
    devices = _devices(report)
    sha = _image_sha(small_wim, small_sdi)
    status_port, stall_port, stale_port, logs_port, refuse_port, silent_port, good_port = ports

    assert devices[status_port]["error"] == "WIM boot failure status 0xfffffffb"
    assert devices[status_port]["status"] == -5
    assert "timed out" in devices[stall_port]["error"]
    assert "image data" in devices[stall_port]["error"]
    assert "reset refused" in devices[refuse_port]["error"]
    assert "timed out" in devices[silent_port]["error"]
    assert "status" in devices[silent_port]["error"]
    assert summaries[silent_port]["sha256"] == sha  # it got everything, then said nothing
    for port in (stale_port, logs_port, good_port):
        assert devices[port]["ok"], (port, devices[port])
        assert summaries[port]["booted"] and summaries[port]["sha256"] == sha
    # The stale device was Reset (08), then identified again, then booted.
    sizes = (small_sdi.stat().st_size, small_wim.stat().st_size)
    assert _normalise(summaries[stale_port]["transcript"]) == expected_transcript(
        *sizes, resets=1
    )
    # Three Log packets in front of the Id reply and of the status: read and skipped.
    ins = [entry for entry in summaries[logs_port]["transcript"] if entry[0] == "in"]
    assert len(ins) == 2 * (1 + 3)


def test_thirty_two_devices_share_the_usbfs_cap(
    tmp_path: Path, small_wim: Path, small_sdi: Path
) -> None:
    report = tmp_path / "r.jsonl"
    with EmulatedLine(32, usbfs_memory_mb=16, record_transcript=False) as line:
        result = line.run(
            _boot_argv(small_wim, small_sdi, report, verbose=True),
            capture_output=True, text=True, timeout=300,
        )
        summaries = line.summaries()
        stats = line.stats()
    print("emulator usbfs:", stats)
    assert result.returncode == 0, result.stderr[-4000:]
    sha = _image_sha(small_wim, small_sdi)
    assert len(summaries) == 32
    assert all(s["booted"] and s["sha256"] == sha for s in summaries.values())
    devices = _devices(report)
    assert len(devices) == 32 and all(d["ok"] for d in devices.values())
    assert "UsbfsMemoryError" not in result.stderr
    assert "refused" not in " ".join(str(d["error"]) for d in devices.values())


def test_devices_spread_over_several_event_threads_boot_byte_exact(
    tmp_path: Path, small_wim: Path, small_sdi: Path
) -> None:
    """Sharded completion handling (issue 10): 5 devices over 3 libusb contexts."""
    report = tmp_path / "r.jsonl"
    env = dict(os.environ, PARALLEL_FLASH_EVENT_THREADS="3")
    argv = _boot_argv(small_wim, small_sdi, report, verbose=True)
    argv.insert(len(CLI), "-v")  # -vv: debug lines name each device's event thread
    with EmulatedLine(5) as line:
        result = line.run(
            argv,
            capture_output=True, text=True, timeout=120, env=env,
        )
        summaries = line.summaries(transcript=True)
    assert result.returncode == 0, result.stderr[-4000:]
    opened_on = set(re.findall(r"on (parallel-flash-usb-events\S*),", result.stderr))
    assert opened_on == {
        "parallel-flash-usb-events", "parallel-flash-usb-events-2", "parallel-flash-usb-events-3"
    }
    sha = _image_sha(small_wim, small_sdi)
    expected = expected_transcript(small_sdi.stat().st_size, small_wim.stat().st_size)
    assert len(summaries) == 5
    for port, summary in summaries.items():
        assert summary["booted"] and summary["sha256"] == sha, port
        assert _normalise(summary["transcript"]) == expected, port


def test_a_one_megabyte_usbfs_cap_falls_back_to_smaller_transfers(
    tmp_path: Path, small_wim: Path, small_sdi: Path
) -> None:
    """Issue 7: a 1 MB cap cannot hold one 1 MiB transfer; devices boot with smaller ones."""
    report = tmp_path / "r.jsonl"
    with EmulatedLine(3, usbfs_memory_mb=1) as line:
        result = line.run(
            _boot_argv(small_wim, small_sdi, report, verbose=True),
            capture_output=True, text=True, timeout=120,
        )
        summaries = line.summaries(transcript=True)
    assert result.returncode == 0, result.stderr[-4000:]
    size = UsbfsBudget(1 << 20).transfer_size_limit(1 << 20, 3)
    assert SMALLEST_TRANSFER <= size < 1 << 20
    assert f"{size}-byte transfers instead of 1048576" in result.stderr
    sha = _image_sha(small_wim, small_sdi)
    expected = expected_transcript(
        small_sdi.stat().st_size, small_wim.stat().st_size, transfer_size=size
    )
    assert len(summaries) == 3
    for port, summary in summaries.items():
        assert summary["booted"] and summary["sha256"] == sha, port
        assert _normalise(summary["transcript"]) == expected, port
    assert all(d["ok"] for d in _devices(report).values())


def test_sigint_during_transfer_exits_130_quickly(
    tmp_path: Path, small_wim: Path, small_sdi: Path
) -> None:
    report = tmp_path / "r.jsonl"
    with EmulatedLine(4, link_rate_mbps=1) as line:
        process = line.popen(
            _boot_argv(small_wim, small_sdi, report),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            received = [s["received_bytes"] for s in line.summaries().values()]
            if all(count > 0 for count in received):
                break
            time.sleep(0.1)
        children = psutil.Process(process.pid).children(recursive=True)
        sent = time.monotonic()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
        elapsed = time.monotonic() - sent
        summaries = line.summaries()
    print(f"exit after SIGINT took {elapsed:.2f} s")
    assert process.returncode == 130, (out, err)
    assert all(0 < s["received_bytes"] < s["expected_bytes"] for s in summaries.values())
    devices = _devices(report)
    assert sorted(devices) == sorted(summaries)
    assert all(d["error"] == "interrupted" and not d["ok"] for d in devices.values())
    records = read_report(report)
    assert records[-1]["type"] == "summary" and records[-1]["interrupted"] is True
    assert not [c for c in children if c.is_running()]
    assert "Traceback" not in err
    assert elapsed < 5  # the target is 2 s; generous for a loaded machine (figure printed)


def test_a_device_without_the_simpleio_endpoints_is_refused_clearly(
    tmp_path: Path, small_wim: Path, small_sdi: Path
) -> None:
    """After a boot the emulated device re-enumerates as the booted image (PID 0a00, no
    endpoints on interface 0): pointing ``boot`` at that PID must say what is wrong."""
    with EmulatedLine(1, reappear_delay=0.1) as line:
        first = line.run(
            _boot_argv(small_wim, small_sdi, tmp_path / "a.jsonl"),
            capture_output=True, text=True, timeout=60,
        )
        assert first.returncode == 0, first.stderr
        line.wait_for("plugged", timeout=10)
        again = line.run(
            [*CLI, "boot", str(small_wim), "--sdi", str(small_sdi), "--pid", "0a00", "--plain"],
            capture_output=True, text=True, timeout=60,
        )
    assert again.returncode == 1
    # Every device found ends in a record: this one as FAILED, with the reason.
    assert "FAILED: cannot open the device" in again.stdout
    assert "interface 0 must have exactly one bulk IN and one bulk OUT endpoint" in again.stdout
    assert "it has none" in again.stdout


def test_boot_takes_only_the_devices_the_filters_name(
    tmp_path: Path, small_wim: Path, small_sdi: Path
) -> None:
    import uuid

    from parallel_flash.emulator import DeviceSpec

    report = tmp_path / "r.jsonl"
    wanted = uuid.UUID("00000011-f151-a509-0000-00000000000a")
    specs = [
        DeviceSpec(port="1-1.1", unique_id=uuid.uuid4()),
        DeviceSpec(port="1-1.2", unique_id=wanted),
        DeviceSpec(port="2-1", unique_id=uuid.uuid4()),
        DeviceSpec(port="2-2", unique_id=uuid.uuid4()),
    ]
    with EmulatedLine(specs) as line:
        by_id = line.run(
            _boot_argv(small_wim, small_sdi, report, "--id", str(wanted)),
            capture_output=True, text=True, timeout=60,
        )
        by_port = line.run(
            _boot_argv(small_wim, small_sdi, tmp_path / "p.jsonl", "--port", "2"),
            capture_output=True, text=True, timeout=60,
        )
        summaries = line.summaries()
    assert by_id.returncode == 0, by_id.stderr
    assert list(_devices(report)) == ["1-1.2"]
    assert by_port.returncode == 0, by_port.stderr
    assert sorted(_devices(tmp_path / "p.jsonl")) == ["2-1", "2-2"]
    assert not summaries["1-1.1"]["booted"] and summaries["1-1.1"]["received_bytes"] == 0
    assert all(summaries[p]["booted"] for p in ("1-1.2", "2-1", "2-2"))


#: argv: HOLD_AT HOLD_SECONDS, then the CLI's. Runs the real CLI in-process with
#: the image reader paused once at byte HOLD_AT; prints when it let go.
HELD_READER = r"""
import json, sys, time
from parallel_flash import image
from parallel_flash.cli import main

hold_at, hold_seconds = int(sys.argv[1]), float(sys.argv[2])
copy = image._Loader._copy
released = []

def copy_with_a_pause(self, stream, start, end):
    if start >= hold_at and not released:
        time.sleep(hold_seconds)
        released.append(time.time())
    return copy(self, stream, start, end)

image._READ_BLOCK = 64 << 10
image._Loader._copy = copy_with_a_pause
try:
    main(sys.argv[3:])
finally:
    print(json.dumps({"released_at": released[0] if released else None}))
"""


def test_streams_start_while_the_image_is_still_being_read(
    tmp_path: Path, small_wim: Path, small_sdi: Path
) -> None:
    """Issue 10: streams go out in segments as the image is read, byte-exact on the wire."""
    report = tmp_path / "r.jsonl"
    sdi_length, wim_length = small_sdi.stat().st_size, small_wim.stat().st_size
    hold_at = sdi_length + (64 << 10)  # after the headers loading checks
    assert wim_length > 2 * (64 << 10)
    size = 16 << 10
    argv = _boot_argv(small_wim, small_sdi, report, "--transfer-size", str(size))
    with EmulatedLine(3) as line:
        result = line.run(
            [sys.executable, "-c", HELD_READER, str(hold_at), "3.0", *argv[3:]],
            capture_output=True, text=True, timeout=120,
        )
        summaries = line.summaries(transcript=True)
    assert result.returncode == 0, result.stderr[-3000:]
    released_at = json.loads(result.stdout.strip().splitlines()[-1])["released_at"]
    assert released_at is not None
    sha = _image_sha(small_wim, small_sdi)
    expected = expected_transcript(sdi_length, wim_length, transfer_size=size)
    for port, summary in summaries.items():
        # The first image byte went out while the reader was still paused ...
        assert summary["image_started_at"] < released_at - 1.0, port
        # ... and the segments join into exactly the protocol's transfers.
        assert summary["booted"] and summary["sha256"] == sha, port
        assert _normalise(summary["transcript"]) == expected, port
    assert all(d["ok"] for d in _devices(report).values())
