"""Station mode (``boot WIM --watch``) through real libusb against umockdev devices.

Devices are plugged and unplugged while the station runs, as on a
production line; hotplug comes from libusb (udev events umockdev emulates)
or, with ``--poll``, from polling the device list.
"""

from __future__ import annotations

import contextlib
import hashlib
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from _station_run import device_records as _devices
from _station_run import finish_station as _finish
from _station_run import start_station
from _station_run import wait_streaming as _wait_streaming
from parallel_flash.emulator import DeviceSpec, EmulatedLine
from parallel_flash.output.report import read_report

pytestmark = pytest.mark.umockdev


def _station(
    line: EmulatedLine, wim: Path, sdi: Path, report: Path, *extra: str
) -> subprocess.Popen[str]:
    return start_station(
        line,
        [
            sys.executable, "-m", "parallel_flash", "-v", "boot", str(wim), "--sdi", str(sdi),
            "--watch", "--report", str(report), "--plain", *extra,
        ],
    )


@pytest.mark.parametrize("mode", ["hotplug", "poll"])
def test_devices_plugged_after_start_are_booted(
    tmp_path: Path, small_wim: Path, small_sdi: Path, mode: str
) -> None:
    report = tmp_path / "r.jsonl"
    extra = ["--poll"] if mode == "poll" else []
    with EmulatedLine(0) as line:
        process = _station(
            line, small_wim, small_sdi, report, "--count", "3", "--expect", "045E:0A00", *extra
        )
        ports = []
        for _ in range(3):
            ports.append(line.plug())
            time.sleep(0.3)
        _out, err = _finish(process)
        summaries = line.summaries()
    assert process.returncode == 0, err
    sha = hashlib.sha256(small_sdi.read_bytes() + small_wim.read_bytes()).hexdigest()
    assert sorted(summaries) == sorted(ports)
    assert all(s["booted"] and s["sha256"] == sha for s in summaries.values())
    devices = _devices(report)
    assert sorted(d["port"] for d in devices) == sorted(ports)
    assert all(d["ok"] for d in devices)
    assert "3 booted, 0 failed" in err


def test_unplug_mid_transfer_fails_only_that_device_and_frees_its_port(
    tmp_path: Path, small_wim: Path, small_sdi: Path
) -> None:
    report = tmp_path / "r.jsonl"
    with EmulatedLine(3, link_rate_mbps=2) as line:
        process = _station(line, small_wim, small_sdi, report, "--count", "4", "--confirm", "0")
        victim = line.ports[1]
        _wait_streaming(line, victim)
        line.unplug(victim)
        # A new device on the same port, as soon as the old one is out.
        line.plug(DeviceSpec(port=victim, name="Contoso.Replacement"))
        _out, err = _finish(process)
        summaries = line.summaries()
    assert process.returncode == 1, err
    devices = _devices(report)
    assert len(devices) == 4
    on_victim = [d for d in devices if d["port"] == victim]
    assert [d["ok"] for d in on_victim] == [False, True]
    assert on_victim[0]["error"].startswith("disconnected"), on_victim[0]
    assert on_victim[1]["name"] == "Contoso.Replacement"
    others = [d for d in devices if d["port"] != victim]
    assert len(others) == 2 and all(d["ok"] for d in others)
    assert summaries[victim]["booted"]  # the replacement
    assert "3 booted, 1 failed" in err


def test_count_stops_the_run(tmp_path: Path, small_wim: Path, small_sdi: Path) -> None:
    report = tmp_path / "r.jsonl"
    with EmulatedLine(3) as line:
        process = _station(line, small_wim, small_sdi, report, "--count", "2", "--confirm", "0")
        _out, err = _finish(process)
        summaries = line.summaries(transcript=True)
    assert process.returncode == 0, err
    booted = [port for port, s in summaries.items() if s["booted"]]
    untouched = [port for port, s in summaries.items() if not s["transcript"]]
    assert len(booted) == 2 and len(untouched) == 1
    assert len(_devices(report)) == 2


def test_filters_by_port_and_unique_id(tmp_path: Path, small_wim: Path, small_sdi: Path) -> None:
    report = tmp_path / "r.jsonl"
    wanted = uuid.UUID("00000011-f151-a509-0000-000000000002")
    specs = [
        DeviceSpec(port="1-1.1", unique_id=uuid.UUID(int=1)),
        DeviceSpec(port="1-1.2", unique_id=wanted),
        DeviceSpec(port="1-2.1", unique_id=uuid.UUID(int=3)),
    ]
    with EmulatedLine(specs) as line:
        process = _station(
            line, small_wim, small_sdi, report,
            "--count", "1", "--port", "1-1", "--id", str(wanted).upper(), "--confirm", "0",
        )
        _out, err = _finish(process)
        summaries = line.summaries(transcript=True)
    assert process.returncode == 0, err
    assert summaries["1-1.2"]["booted"]
    # 1-1.1 was at most asked for its Id (the control request, 01, the reply) and left alone.
    assert [entry[0] for entry in summaries["1-1.1"]["transcript"]] in (
        [], ["control", "out", "in"]
    )
    assert summaries["1-2.1"]["transcript"] == []  # not on port 1-1: never opened
    assert [d["port"] for d in _devices(report)] == ["1-1.2"]


def test_wait_boot_fails_a_device_that_comes_back_in_flashing_mode(
    tmp_path: Path, small_wim: Path, small_sdi: Path
) -> None:
    report = tmp_path / "r.jsonl"
    with EmulatedLine(2, faults={1: "reappear-in-flashing"}) as line:
        good, bad = line.ports
        process = _station(
            line, small_wim, small_sdi, report, "--count", "2", "--wait-boot", "3"
        )
        _out, err = _finish(process)
    assert process.returncode == 1, err
    devices = {d["port"]: d for d in _devices(report)}
    assert devices[good]["ok"] is True
    assert devices[bad]["ok"] is False
    assert "came back in flashing mode" in devices[bad]["error"]
    assert devices[bad]["reason"] == "not-booted"


def test_sigint_stops_the_station_with_a_record_per_device(
    tmp_path: Path, small_wim: Path, small_sdi: Path
) -> None:
    report = tmp_path / "r.jsonl"
    with EmulatedLine(2, link_rate_mbps=1) as line:
        process = _station(line, small_wim, small_sdi, report)
        for port in line.ports:
            _wait_streaming(line, port)
        sent = time.monotonic()
        process.send_signal(signal.SIGINT)
        _out, err = _finish(process, timeout=30)
        elapsed = time.monotonic() - sent
    print(f"station exit after SIGINT took {elapsed:.2f} s")
    assert process.returncode == 130, err
    devices = _devices(report)
    assert len(devices) == 2 and all(d["error"] == "interrupted" for d in devices)
    assert all(d["state"] == "interrupted" for d in devices)
    assert read_report(report)[-1]["interrupted"] is True
    assert "Traceback" not in err
    assert elapsed < 5


def _wait_devices(report: Path, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            text = report.read_text()
            whole = text[: text.rfind("\n") + 1].splitlines()
            if sum('"type":"device"' in line for line in whole) >= count:
                return
        time.sleep(0.05)
    pytest.fail(f"{report.name} never held {count} device records")


def test_sigusr1_reopens_the_report_logrotate_moved_and_sighup_still_ends_the_shift(
    tmp_path: Path, small_wim: Path, small_sdi: Path
) -> None:
    report = tmp_path / "station.jsonl"
    rotated = tmp_path / "station.jsonl.1"
    with EmulatedLine(0) as line:
        process = _station(line, small_wim, small_sdi, report, "--confirm", "0")
        process.send_signal(signal.SIGUSR1)  # nothing moved yet: nothing to do, no harm
        first = line.plug()
        _wait_devices(report, 1)
        report.rename(rotated)  # logrotate's rotation, then its postrotate `kill -USR1`
        process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not report.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert report.exists(), "not reopened before the next record"
        second = line.plug()
        _wait_devices(report, 1)
        process.send_signal(signal.SIGHUP)
        _out, err = _finish(process, timeout=30)
    assert process.returncode == 0, err
    assert "Traceback" not in err
    old, new = read_report(rotated), read_report(report)
    assert [(e["type"], e.get("port")) for e in old] == [("device", first), ("summary", None)]
    assert old[-1]["continued"] is True and old[-1]["devices"] == 1
    assert [(e["type"], e.get("port")) for e in new] == [("device", second), ("summary", None)]
    assert new[-1]["continued"] is False and new[-1]["booted"] == 1
    assert all(e["ok"] for e in old + new if e["type"] == "device")
    assert f"records continue in {report}" in err
