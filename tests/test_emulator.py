"""The umockdev emulator, driven by python-libusb1 alone (no parallel-flash host code).

Each test starts an EmulatedLine and runs a client script from
``_emulator_clients`` under the preload; the client sees real USB devices
through the system's libusb.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import _emulator_clients as clients
from parallel_flash.emulator import DeviceSpec, EmulatedLine, PortPath, default_port

pytestmark = pytest.mark.umockdev


def run_client(line: EmulatedLine, script: str, *args: str, timeout: float = 120) -> Any:
    result = line.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def start_client(line: EmulatedLine, script: str, *args: str) -> subprocess.Popen[str]:
    process = line.popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    first = process.stdout.readline()
    assert first.strip() == "waiting", first + (process.stderr.read() if process.stderr else "")
    return process


def finish_client(process: subprocess.Popen[str]) -> Any:
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    return json.loads(stdout.strip().splitlines()[-1])


def expected_transcript(sdi: bytes, wim: bytes, size: int = 1 << 20) -> list[list[int | str]]:
    transcript: list[list[int | str]] = [["control", 0x21, 0x22, 1, 0], ["out", 1]]
    transcript += [["in", -1], ["out", 1], ["out", 12]]  # Id reply length checked apart
    for blob in (sdi, wim):
        for offset in range(0, len(blob), size):
            length = len(blob[offset : offset + size])
            transcript.append(["out", length])
            if length % 512 == 0:
                transcript.append(["out", 0])
    transcript.append(["in", 4])
    return transcript


def test_ports_follow_the_sysfs_form() -> None:
    assert str(default_port(0)) == "1-1.1"
    assert str(default_port(6)) == "1-1.7"
    assert str(default_port(7)) == "1-2.1"
    assert str(default_port(105)) == "2-1.1"
    port = PortPath.parse("1-1.4.2")
    assert (port.bus, port.ports, port.devpath) == (1, (1, 4, 2), "1.4.2")
    assert port.sysfs_path() == "/devices/usb1/1-1/1-1.4/1-1.4.2"
    for bad in ("1-", "1.4", "0-1", "1-32", "1-1.1.1.1.1.1.1.1", "usb1"):
        with pytest.raises(ValueError, match="port"):
            PortPath.parse(bad)


def test_eight_devices_enumerate_like_real_ones() -> None:
    with EmulatedLine(8) as line:
        assert line.ports == [str(default_port(i)) for i in range(8)]
        devices = run_client(line, clients.ENUMERATE)
    assert sorted(d["port"] for d in devices) == sorted(line.ports)
    for device in devices:
        assert device["bus"] == 1
        assert device["port"] == f"1-{'.'.join(map(str, device['ports']))}"
        assert len(device["ports"]) == 2
        assert device["speed"] == 3  # LIBUSB_SPEED_HIGH
        assert device["interfaces"] == [
            {"number": 0, "alternate": 0, "endpoints": [[0x81, 2, 512], [0x01, 2, 512]]}
        ]
        manufacturer, product, serial = device["strings"]
        assert manufacturer == "Microsoft"
        assert product == "Windows Phone (flashing mode)"
        assert len(serial) == 32


@pytest.mark.parametrize(("mode", "link_rate"), [("sync", None), ("async", None), ("async", 200.0)])
def test_protocol_sequence_reaches_the_device_model(
    small_sdi: Path, small_wim: Path, mode: str, link_rate: float | None
) -> None:
    sdi, wim = small_sdi.read_bytes(), small_wim.read_bytes()
    spec = DeviceSpec(
        name="Contoso.MSM8960.JD301_ATT.3.2.1",
        unique_id="00000011-f151-a509-0000-000000000000",
        port="1-3.2",
    )
    with EmulatedLine([spec], link_rate_mbps=link_rate) as line:
        result = run_client(line, clients.PROTOCOL, str(small_sdi), str(small_wim), "1-3.2", mode)
        summary = line.summaries(transcript=True)["1-3.2"]
        left = line.wait_for("unplugged", "1-3.2")
        back = line.wait_for("plugged", "1-3.2")
        after = line.summaries()["1-3.2"]
    assert result["error"] is None, result
    assert result["id"] == {
        "cur_position": 0,
        # .NET byte order: the first three fields little-endian.
        "unique_id": "1100000051f109a50000000000000000",
        "name": "Contoso.MSM8960.JD301_ATT.3.2.1",
    }
    assert result["status"] == 0
    assert summary["sha256"] == hashlib.sha256(sdi + wim).hexdigest()
    assert summary["received_bytes"] == summary["expected_bytes"] == len(sdi) + len(wim)
    assert summary["booted"] is True
    assert summary["rejection"] is None
    transcript = summary["transcript"]
    expected = expected_transcript(sdi, wim)
    assert transcript[2][0] == "in" and transcript[2][1] > 40
    expected[2] = transcript[2]
    assert transcript == expected
    # async: ZLPs come from USBDEVFS_URB_ZERO_PACKET; sync: explicit zero-length writes.
    zlps = sum(1 for entry in expected if entry == ["out", 0])
    assert summary["zlps_from_flag"] == (zlps if mode == "async" else 0)
    # Booted: the device leaves flashing mode and re-enumerates as the booted image.
    assert left["booted"] is True
    assert back["state"] == "booted-image"
    assert after["state"] == "booted-image" and after["booted"] is True


def test_count_only_line_skips_the_data_but_counts_it(small_sdi: Path, small_wim: Path) -> None:
    with EmulatedLine(1, verify_data=False) as line:
        port = line.ports[0]
        result = run_client(line, clients.PROTOCOL, str(small_sdi), str(small_wim), port, "async")
        summary = line.summaries(transcript=True)[port]
    total = small_sdi.stat().st_size + small_wim.stat().st_size
    assert result["status"] == 0
    assert summary["received_bytes"] == summary["expected_bytes"] == total
    assert summary["booted"] is True
    assert summary["sha256"] is None
    assert "transcript" not in summary or summary["transcript"] == []


def test_failed_boot_reappears_in_flashing_mode(small_sdi: Path, small_wim: Path) -> None:
    with EmulatedLine([DeviceSpec(faults="reappear-in-flashing")]) as line:
        port = line.ports[0]
        result = run_client(line, clients.PROTOCOL, str(small_sdi), str(small_wim), port, "sync")
        line.wait_for("unplugged", port)
        back = line.wait_for("plugged", port)
        devices = run_client(line, clients.ENUMERATE)
        summary = line.summaries()[port]
    assert result["status"] == 0
    assert back["state"] == "flashing"
    assert [d["port"] for d in devices] == [port]
    assert summary["plugs"] == 2
    assert summary["booted"] is False  # the fresh flashing-mode device
    assert summary["earlier"][0]["booted"] is True


def test_a_phone_does_not_come_back_to_a_port_another_phone_took(
    small_sdi: Path, small_wim: Path
) -> None:
    """Phone A boots and leaves; the operator plugs phone B into that port before A
    would have shown up booted; B bounces. What comes back in flashing mode is B:
    A, swapped out, never returns (a stale timer once brought it back, and the
    station took it for a new phone)."""
    first, second = "11111111-2222-3333-4444-555555555555", "66666666-7777-8888-9999-aaaaaaaaaaaa"
    with EmulatedLine(0, leave_delay=0.0, reappear_delay=3.0) as line:
        port = line.plug(DeviceSpec(unique_id=first))
        result_a = run_client(line, clients.PROTOCOL, str(small_sdi), str(small_wim), port, "sync")
        line.wait_for("unplugged", port)
        line.plug(DeviceSpec(port=port, unique_id=second, faults="reappear-in-flashing"))
        result_b = run_client(line, clients.PROTOCOL, str(small_sdi), str(small_wim), port, "sync")
        line.wait_for("unplugged", port)
        back = line.wait_for("plugged", port, timeout=15)
        summary = line.summaries()[port]
    assert result_a["status"] == result_b["status"] == 0
    assert back["state"] == "flashing"
    assert summary["unique_id"] == second
    assert [entry["unique_id"] for entry in summary["earlier"]] == [first, second]


def test_fault_set_while_running_fails_only_that_device(small_sdi: Path, small_wim: Path) -> None:
    with EmulatedLine(2) as line:
        bad, good = line.ports
        line.set_fault(bad, "status=-5")
        results = [
            run_client(line, clients.PROTOCOL, str(small_sdi), str(small_wim), port, "sync")
            for port in (bad, good)
        ]
        line.wait_for("unplugged", good)
        summaries = line.summaries()
        events = [e for e in line.events() if e.get("event") == "unplugged"]
    assert results[0]["status"] == -5 and results[0]["error"] is None
    assert summaries[bad]["booted"] is False and summaries[bad]["present"] is True
    assert summaries[bad]["faults"] == "status=-5"
    assert summaries[bad]["status_sent"] == -5
    assert results[1]["status"] == 0 and summaries[good]["booted"] is True
    assert all(e["port"] == good for e in events)


def test_nak_times_out_instead_of_hanging() -> None:
    with EmulatedLine([DeviceSpec(faults="stop-reading=0")]) as line:
        result = run_client(line, clients.NAK, line.ports[0])
        summary = line.summaries()[line.ports[0]]
    assert result == {"write": "timeout", "manufacturer": "Microsoft"}
    assert summary["naks"] == 1
    assert summary["discarded"] == 1
    assert summary["received_bytes"] == 0


def test_disconnect_fault_fails_the_transfer_with_no_device(
    small_sdi: Path, small_wim: Path
) -> None:
    with EmulatedLine(2, faults={0: "disconnect=1048576"}) as line:
        failing, healthy = line.ports
        result = run_client(line, clients.PROTOCOL, str(small_sdi), str(small_wim), failing, "sync")
        gone = line.wait_for("unplugged", failing)
        other = run_client(line, clients.PROTOCOL, str(small_sdi), str(small_wim), healthy, "sync")
        summaries = line.summaries()
    assert (result["error"], result["stage"]) == ("USBErrorNoDevice", "data")
    assert gone["booted"] is False
    assert summaries[failing]["disconnected"] is True
    assert summaries[failing]["present"] is False
    assert other["status"] == 0 and summaries[healthy]["booted"] is True


def test_unplug_fails_pending_transfer_and_fires_left() -> None:
    with EmulatedLine(2) as line:
        port = line.ports[1]
        process = start_client(line, clients.UNPLUG, port)
        try:
            _wait(lambda: line.summaries()[port]["in_urbs"] == 1)
            line.unplug(port)
        finally:
            result = finish_client(process)
        assert line.summaries()[port]["present"] is False
    assert result["read"] == "USBErrorNoDevice"
    assert result["write_after"] == "USBErrorNoDevice"
    assert result["events"] == [[2, 1, list(PortPath.parse(port).ports)]]  # LEFT = 2


def test_plug_after_start_fires_arrived() -> None:
    with EmulatedLine(1) as line:
        process = start_client(line, clients.ARRIVE)
        try:
            port = line.plug(DeviceSpec(port="1-4.3"))
        finally:
            events = finish_client(process)
        assert line.ports == [str(default_port(0)), "1-4.3"]
    flashing = [e for e in events if e["vid"] == 0x045E]
    assert flashing == [{"event": 1, "vid": 0x045E, "pid": 0x062A, "port": port}]  # ARRIVED = 1


def test_usbfs_cap_is_shared_by_all_devices() -> None:
    with EmulatedLine(2, usbfs_memory_mb=1) as line:
        result = run_client(line, clients.USBFS_CAP)
        stats = line.stats()
    assert result["cap_file"] == "1"
    # 256 KiB + kernel bookkeeping each: three fit in 1 MiB, the fourth does not.
    assert result["first_accepted"] == 3
    assert result["first_error"] in ("USBErrorNoMem", "USBErrorIO")
    assert result["cancelled_status"] == [3]  # LIBUSB_TRANSFER_CANCELLED
    # Cancelled and reaped transfers gave their memory back.
    assert result["second_accepted"] == 3
    assert stats["memory_refusals"] == 2
    assert stats["memory_used"] == 0


def test_a_killed_client_gives_its_usbfs_memory_back() -> None:
    with EmulatedLine(1, usbfs_memory_mb=1) as line:
        died = line.run(
            [sys.executable, "-c", clients.DIE_WITH_PENDING], capture_output=True, text=True
        )
        assert died.returncode == -9 and died.stdout == "submitted\n", died.stderr
        _wait(lambda: line.stats()["memory_used"] == 0)
        # The interface it claimed is free again: another process can use the device.
        again = run_client(line, clients.USBFS_CAP)
    assert again["first_accepted"] == 3


def test_unknown_fault_is_refused_before_start() -> None:
    with pytest.raises(ValueError, match=r"port 1-1\.1: bad fault spec 'stauts=-5'"):
        EmulatedLine(1, faults={"1-1.1": "stauts=-5"})
    with pytest.raises(ValueError, match="no device of the line sits there"):
        EmulatedLine(1, faults={"1-2.1": "status=-5"})


def test_line_refuses_bad_commands() -> None:
    from parallel_flash.errors import EmulatorError

    with EmulatedLine(1) as line:
        with pytest.raises(EmulatorError, match="already in use"):
            line.plug(DeviceSpec(port=line.ports[0]))
        with pytest.raises(EmulatorError, match=r"nothing is plugged in at port 1-9\.9"):
            line.unplug("1-9.9")
        with pytest.raises(EmulatorError, match="hub"):
            line.plug(DeviceSpec(port="1-1"))


def _wait(predicate: Any, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def test_worker_time_is_accounted_for_the_ceiling_column(small_sdi: Path, small_wim: Path) -> None:
    """bench_architectures' "occupied" column: handler wall >= its CPU, on one named thread."""
    import psutil

    with EmulatedLine(1, verify_data=False) as line:
        before = line.stats()["ioctls"]
        result = run_client(
            line, clients.PROTOCOL, str(small_sdi), str(small_wim), line.ports[0], "async"
        )
        after = line.stats()["ioctls"]
        host_pid = line.host_pid
        threads = {t.id for t in psutil.Process(host_pid).threads()}
    assert result["status"] == 0
    wall = after["handler_us"] - before.get("handler_us", 0)
    cpu = after["handler_cpu_us"] - before.get("handler_cpu_us", 0)
    assert after["submiturb"] > 0
    assert wall >= cpu > 0
    # Every submitted URB resolved client memory inside a handler: that time is on the clock.
    assert wall >= after["submiturb"]
    assert after["worker_tid"] in threads
    assert after["worker_tid"] != host_pid  # umockdev's worker, not the GLib main thread
