"""Lumia and UFP devices through real libusb, against umockdev-emulated devices (issue 11).

The real CLI runs under umockdev's preload; python-libusb1, libusb-1.0 and
its usbfs backend are the real thing. What each device received comes back
from the emulator, hashed: it must be the input file byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from _nok_pair import FfuInput
from parallel_flash.emulator import DeviceSpec, EmulatedLine
from parallel_flash.output.report import read_report

pytestmark = pytest.mark.umockdev

CLI = [sys.executable, "-m", "parallel_flash"]


def _boot(line: EmulatedLine, images: list[Path], report: Path) -> Any:
    return line.run(
        [*CLI, "boot", *map(str, images), "--report", str(report), "--plain"],
        capture_output=True, text=True, timeout=240,
    )


def _devices(report: Path) -> dict[str, dict[str, Any]]:
    return {e["port"]: e for e in read_report(report) if e.get("type") == "device"}


def test_four_lumias_boot_a_secwim_and_come_back_in_label_mode(
    secwim: Path, tmp_path: Path
) -> None:
    report = tmp_path / "lumia.jsonl"
    specs = [DeviceSpec(kind="lumia") for _ in range(4)]
    with EmulatedLine(specs) as line:
        result = _boot(line, [secwim], report)
        summaries = line.summaries(transcript=True)
        listed = line.run([*CLI, "list", "--json"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    digest = hashlib.sha256(secwim.read_bytes()).hexdigest()
    devices = _devices(report)
    assert len(devices) == 4
    for port, summary in summaries.items():
        assert devices[port]["state"] == "booted" and devices[port]["loader"] == "lumia"
        assert summary["sha256"] == digest and summary["booted"]
        assert summary["returns_as"] == "0421:0660" and summary["state"] == "booted-image"
        assert summary["rejection"] is None
        outs = [entry for entry in summary["transcript"] if entry[0] == "out"]
        assert all(entry[1] > 0 for entry in outs)  # no zero-length packets
    # back in Label mode, not in flashing mode: list finds nothing to boot
    assert listed.returncode == 0 and json.loads(listed.stdout) == []


def test_ufp_v1_and_v2_devices_ram_boot_an_ffu(ffu: FfuInput, tmp_path: Path) -> None:
    report = tmp_path / "ufp.jsonl"
    specs = [DeviceSpec(kind=kind) for kind in ("ufp-v1", "ufp-v1", "ufp-v2", "ufp-v2")]
    with EmulatedLine(specs) as line:
        result = _boot(line, [ffu.path], report)
        summaries = line.summaries()
    assert result.returncode == 0, result.stdout + result.stderr
    digest = hashlib.sha256(ffu.data).hexdigest()
    devices = _devices(report)
    for port, summary in summaries.items():
        assert devices[port]["state"] == "booted" and devices[port]["loader"] == "ufp"
        assert summary["sha256"] == digest and summary["booted"], summary
        assert summary["rejection"] is None


def test_a_mixed_line_boots_a_secwim_and_an_ffu_in_one_run(
    secwim: Path, ffu: FfuInput, tmp_path: Path
) -> None:
    kinds = ["simpleio", "lumia", "ufp-v1", "ufp-v2", "lumia", "simpleio"]
    specs = [DeviceSpec(kind=kind) for kind in kinds]
    specs[4].faults = "no-mmos"
    report = tmp_path / "mixed.jsonl"
    with EmulatedLine(specs) as line:
        listed = line.run([*CLI, "list"], capture_output=True, text=True, timeout=60)
        result = _boot(line, [secwim, ffu.path], report)
        summaries = line.summaries()
    assert result.returncode == 1, result.stdout + result.stderr  # the no-mmos Lumia failed
    ports = list(summaries)
    rows = {row.split()[0]: row for row in listed.stdout.splitlines()[1:]}
    assert "lumia" in rows[ports[1]] and "MMOS yes" in rows[ports[1]]
    assert "W 0x240000" in rows[ports[1]] and "MMOS -" in rows[ports[4]]
    assert "ufp" in rows[ports[2]] and "mask 0x0001" in rows[ports[2]]
    assert "mask 0x0005" in rows[ports[3]] and "LMR 0x80000000" in rows[ports[3]]

    devices = _devices(report)
    secwim_sha = hashlib.sha256(secwim.read_bytes()).hexdigest()
    ffu_sha = hashlib.sha256(ffu.data).hexdigest()
    expected = {"simpleio": secwim_sha, "lumia": secwim_sha, "ufp-v1": ffu_sha, "ufp-v2": ffu_sha}
    for port, kind in zip(ports, kinds, strict=True):
        if port == ports[4]:
            continue
        assert devices[port]["state"] == "booted", devices[port]
        assert devices[port]["loader"] == kind.split("-")[0]
        assert summaries[port]["sha256"] == expected[kind]
        assert devices[port]["image_sha256"] == expected[kind]  # its own file's
    assert devices[ports[4]]["reason"] == "refused"
    assert devices[ports[4]]["image_sha256"] == secwim_sha  # the file it was to take
    assert "subblock 0x1F is absent" in devices[ports[4]]["error"]
    assert summaries[ports[4]]["received_bytes"] == 0


#: (kind, fault, counted reason, what the record's error must say); issue 11's refusal cases.
REFUSALS = [
    ("lumia", "no-mmos", "refused", "refused before sending any image byte: .*subblock 0x1F is "
     "absent"),
    ("lumia", "wbs=0", "refused", "refused before sending any image byte: .*WriteBufferSize 0"),
    ("ufp-v2", "memory=4096", "refused", "refused before sending any image byte: .*"
     "LargestMemoryRegion of 4096 bytes"),
    ("ufp-v1", "mask=0", "refused", "refused before sending any image byte: .*has neither "
     "SyncV1"),
    ("ufp-v2", "noku-v2", "refused", "refused before the device took any image byte: .*"
     "flash protocol v2 not supported"),
    ("lumia", "status=0x1003", "device-status", r"0x1003 \(hash mismatch\)"),
    ("ufp-v2", "status=0x1304", "device-status", r"0x1304 \(invalid platform ID\)"),
    ("lumia", "disconnect=4096", "disconnected", "disconnected while waiting for"),
    ("ufp-v1", "stop-reading=0x10000", "timeout", "timed out waiting for the device to take an "
     "FFU payload message"),
]


def test_each_refusal_fails_only_its_device_through_libusb(
    secwim: Path, ffu: FfuInput, tmp_path: Path
) -> None:
    """Every refusal case on one line, beside a healthy device of each loader."""
    specs = [DeviceSpec(kind=kind, faults=fault) for kind, fault, _, _ in REFUSALS]
    specs += [DeviceSpec(kind="lumia"), DeviceSpec(kind="ufp-v2"), DeviceSpec(kind="simpleio")]
    report = tmp_path / "refusals.jsonl"
    with EmulatedLine(specs) as line:
        result = line.run(
            [*CLI, "boot", str(secwim), str(ffu.path), "--report", str(report), "--plain",
             "--nok-send-timeout", "1", "--nok-reply-timeout", "2"],
            capture_output=True, text=True, timeout=240,
        )
        summaries = line.summaries()
    assert result.returncode == 1, result.stdout + result.stderr
    devices = _devices(report)
    ports = list(summaries)
    for port, (kind, fault, reason, match) in zip(ports, REFUSALS, strict=False):
        device, summary = devices[port], summaries[port]
        assert device["loader"] == kind.split("-")[0]
        assert device["state"] == "failed" and device["reason"] == reason, (fault, device)
        assert re.search(match, device["error"]), (fault, device["error"])
        if reason == "refused":
            # Refused before any image byte: the device took none, the record counts none.
            assert summary["received_bytes"] == 0 and device["bytes"] == 0, fault
            assert summary["messages"] == (2 if fault == "noku-v2" else 1), fault
    for port in ports[len(REFUSALS):]:
        assert devices[port]["state"] == "booted", devices[port]


def test_emulate_mix_hosts_lumia_and_ufp_devices(secwim: Path, tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    done = subprocess.run(
        [*CLI, "emulate", "--devices", "3", "--mix", "lumia=1,ufp-v2=1", "--summary", str(summary),
         "--fault", "3:wbs=0", "--", *CLI, "boot", str(secwim), "--plain"],
        capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 1, done.stdout + done.stderr  # the UFP device needs an FFU
    devices = json.loads(summary.read_text())["devices"]
    loaders = {port: d.get("loader", "simpleio") for port, d in devices.items()}
    assert sorted(loaders.values()) == ["lumia", "simpleio", "ufp"]
    digest = hashlib.sha256(secwim.read_bytes()).hexdigest()
    for port, device in devices.items():
        if loaders[port] == "ufp":
            assert device["received_bytes"] == 0 and device["faults"] == "wbs=0"
        else:
            assert device["booted"] and device["sha256"] == digest
    assert "a ufp device needs an FFU" in done.stdout
    bad = subprocess.run(
        [*CLI, "emulate", "--devices", "1", "--mix", "lumia=1", "--fault", "1:logs=2",
         "--", "true"], capture_output=True, text=True, timeout=60,
    )
    assert bad.returncode == 2 and "unknown fault 'logs'" in bad.stderr


def test_station_mode_boots_lumia_and_ufp_devices_as_they_arrive(
    secwim: Path, ffu: FfuInput, tmp_path: Path
) -> None:
    """--watch with a .secwim and an FFU: each arrival boots through its own loader."""
    report = tmp_path / "shift.jsonl"
    with EmulatedLine([DeviceSpec(kind="lumia")]) as line:
        process = line.popen(
            [*CLI, "boot", str(secwim), str(ffu.path), "--watch", "--count", "2", "--poll",
             "--report", str(report), "--plain"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        time.sleep(1.0)  # the UFP device arrives while the station runs
        line.plug(DeviceSpec(kind="ufp-v1"))
        out, err = process.communicate(timeout=120)
        summaries = line.summaries()
    assert process.returncode == 0, out + err
    devices = list(_devices(report).values())
    assert sorted(d["loader"] for d in devices) == ["lumia", "ufp"]
    assert all(d["state"] == "booted" for d in devices), devices
    assert all(s["booted"] for s in summaries.values())


def test_station_confirmation_takes_a_lumia_back_in_label_mode_as_its_confirmation(
    secwim: Path, tmp_path: Path
) -> None:
    """--confirm with --expect (a SimpleIO line's booted image): a Lumia never shows up as
    that image; its own return in Label mode on its port is the confirmation."""
    report = tmp_path / "shift.jsonl"
    with EmulatedLine([DeviceSpec(kind="lumia"), DeviceSpec(kind="simpleio")]) as line:
        process = line.popen(
            [*CLI, "boot", str(secwim), "--watch", "--count", "2", "--poll",
             "--confirm", "20", "--expect", "045E:0A00", "--report", str(report), "--plain"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        out, err = process.communicate(timeout=120)
    assert process.returncode == 0, out + err
    devices = {d["loader"]: d for d in _devices(report).values()}
    assert set(devices) == {"lumia", "simpleio"}
    assert all(d["state"] == "booted" and d["confirmed"] is True for d in devices.values())


def test_a_lumia_that_comes_back_in_flashing_mode_is_not_booted(
    secwim: Path, tmp_path: Path
) -> None:
    """The emulator's reappear-in-flashing: the phone returns as a Lumia, not in Label mode."""
    report = tmp_path / "back.jsonl"
    with EmulatedLine([DeviceSpec(kind="lumia", faults="reappear-in-flashing")]) as line:
        result = _boot(line, [secwim], report)
        summaries = line.summaries()
    assert result.returncode == 1, result.stdout + result.stderr
    [device] = _devices(report).values()
    assert "came back as 0421:066e, not in Label mode" in device["error"]
    [summary] = summaries.values()
    assert summary["plugs"] == 2 and summary["state"] == "flashing"
