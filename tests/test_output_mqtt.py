"""A station on the line's MQTT broker: a real Mosquitto and mosquitto_sub on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _line_services import Mosquitto, Subscriber
from parallel_flash.cli import main
from parallel_flash.output.report import read_report

pytestmark = pytest.mark.slow

ROOT = "parallel-flash/v1/L1/st1"
#: The engine's order of states (events.DeviceState); a port is sampled at 1 Hz,
#: so it may skip some, never go back.
ORDER = ["found", "identifying", "resetting", "sending SDI", "sending WIM",
         "awaiting status", "booted", "failed"]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    workdir = tmp_path / "broker"
    workdir.mkdir()
    server = Mosquitto(workdir)
    server.start()
    yield server
    server.stop()


def station(
    broker: Mosquitto, tmp_path: Path, wim: Path, sdi: Path, *args: str, report: Path,
    devices: int = 8, rate: str = "0",
) -> list[str]:
    return [
        sys.executable, "-m", "parallel_flash", "boot", str(wim), "--sdi", str(sdi),
        "--sim", str(devices), "--sim-rate", rate, "--plain", "--report", str(report),
        "--mqtt", broker.url, "--line", "L1", "--station", "st1",
        "--mqtt-outbox", str(tmp_path / "outbox.jsonl"), *args,
    ]


def devices_of(report: Path) -> list[dict[str, Any]]:
    return [entry for entry in read_report(report) if entry["type"] == "device"]


def results(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m["data"] for m in messages if m["topic"] == f"{ROOT}/result"]


def without_line_fields(result: dict[str, Any]) -> dict[str, Any]:
    # the report's own record names the station already: only these are added
    return {k: v for k, v in result.items() if k not in ("record_id", "line")}


def retained(broker: Mosquitto, topic: str = f"{ROOT}/#") -> list[dict[str, Any]]:
    """What a subscriber arriving now is told: the retained messages."""
    late = Subscriber(broker, topic)
    late.start()
    try:
        time.sleep(1.0)  # retained messages are delivered right after SUBACK
        return [m for m in late.snapshot() if m["retain"]]
    finally:
        late.stop()


def test_boot_publishes_status_port_states_results_and_summary(
    broker: Mosquitto, tmp_path: Path, small_wim: Path, small_sdi: Path
) -> None:
    subscriber = Subscriber(broker, "parallel-flash/v1/#")
    subscriber.start()
    time.sleep(0.3)
    report = tmp_path / "run.jsonl"
    run = subprocess.run(
        station(broker, tmp_path, small_wim, small_sdi, report=report, rate="1.5",
                devices=8),
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    messages = subscriber.wait_for(
        lambda ms: any(m["topic"] == f"{ROOT}/status" and m["data"]["state"] == "offline"
                       for m in ms)
    )
    subscriber.stop()

    statuses = [m["data"] for m in messages if m["topic"] == f"{ROOT}/status"]
    # A station may connect before its image is hashed: that first ``online``
    # names no digest, and it says ``online`` again, naming it, once hashed.
    if len(statuses) == 4 and statuses[0]["image"]["sha256"] is None:
        statuses = statuses[1:]
    assert [s["state"] for s in statuses] == ["online", "draining", "offline"]
    assert statuses[-1]["reason"] == "exit"
    online = statuses[0]
    assert online["image"]["name"] == small_wim.name and online["loaders"] == ["simpleio"]
    assert online["line"] == "L1" and online["station"] == "st1" and online["version"]

    recorded = devices_of(report)
    assert len(recorded) == 8
    assert online["image"]["sha256"] == recorded[0]["image_sha256"]
    published = results(messages)
    assert len(published) == 8  # exactly one per device
    by_port = {r["port"]: r for r in published}
    for entry in recorded:
        result = by_port[entry["port"]]
        assert without_line_fields(result) == entry  # the JSONL line, exactly
        assert (result["line"], result["station"]) == ("L1", "st1")
        assert result["record_id"].startswith(f"st1:{online['run_id']}:")
    assert len({r["record_id"] for r in published}) == 8

    for entry in recorded:
        topic = f"{ROOT}/port/{entry['port']}/state"
        states = [m["data"] for m in messages if m["topic"] == topic]
        assert states[-1] is None, "the port is emptied at the end"
        seen = [s["state"] for s in states[:-1]]
        assert seen[-1] == "booted" and len(seen) >= 2, seen
        assert [ORDER.index(s) for s in seen] == sorted(ORDER.index(s) for s in seen), seen
        done = [s["bytes_done"] for s in states[:-1]]
        assert done == sorted(done) and done[-1] == entry["bytes_total"]
        assert states[-2]["unique_id"] == entry["unique_id"] and states[-2]["slot"] == entry["slot"]
        sent_at = [m["tst"] for m in messages if m["topic"] == topic]
        assert len(sent_at) <= 2 + 8, "at most about one state a second"

    summary = [m["data"] for m in messages if m["topic"] == f"{ROOT}/summary"][-1]
    recorded_summary = read_report(report)[-1]
    assert summary["final"] is True
    for key in ("devices", "booted", "failed", "bytes", "bytes_total"):
        assert summary[key] == recorded_summary[key], key

    # A subscriber arriving later sees the station offline, its last summary, no ports.
    late = retained(broker)
    topics = {m["topic"]: m["data"] for m in late}
    assert topics[f"{ROOT}/status"]["state"] == "offline"
    assert topics[f"{ROOT}/summary"]["booted"] == 8
    assert not [t for t in topics if "/port/" in t]


def test_broker_killed_and_restarted_mid_run_loses_no_result(
    broker: Mosquitto, tmp_path: Path, small_wim: Path, small_sdi: Path
) -> None:
    archive = Subscriber(broker, f"{ROOT}/result", session="archiver")
    archive.start()
    archive.wait_for(lambda ms: True, timeout=1)
    time.sleep(1.5)  # the broker saves the archiver's session (autosave_interval 1)
    report = tmp_path / "run.jsonl"
    process = subprocess.Popen(
        station(broker, tmp_path, small_wim, small_sdi, "--sim-fault", "2:status=-5",
                report=report, rate="1", devices=6),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not report.exists() or not report.read_text():
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
        # The first result (the failed device) is out; the others are still streaming.
        broker.stop(signal.SIGKILL)
        archive.stop()
        while len(devices_of(report)) < 6:
            assert time.monotonic() < deadline + 30 and process.poll() is None
            time.sleep(0.1)
        time.sleep(1)  # results are waiting in the station's queue
        broker.start()
        archive.start()
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 1, stderr  # device 2 failed, as injected
    assert "unreachable" in stderr and "connected to" in stderr
    recorded = devices_of(report)
    messages = archive.wait_for(
        lambda ms: {m["data"]["port"] for m in ms} >= {e["port"] for e in recorded}
    )
    archive.stop()
    by_id: dict[str, dict[str, Any]] = {}
    for result in (m["data"] for m in messages):
        earlier = by_id.setdefault(result["record_id"], result)
        assert earlier == result, "a duplicate is the same result"
    assert len(by_id) == 6
    assert sorted(without_line_fields(r) == e for r, e in zip(
        sorted(by_id.values(), key=lambda r: r["slot"]), recorded, strict=True))
    outbox = tmp_path / "outbox.jsonl"
    pending = {json.loads(line).get("pending") for line in outbox.read_text().splitlines()}
    acked = {json.loads(line).get("acked") for line in outbox.read_text().splitlines()}
    assert pending - {None} <= acked


def test_results_left_unacknowledged_are_sent_at_the_next_start(
    broker: Mosquitto, tmp_path: Path, small_wim: Path, small_sdi: Path
) -> None:
    broker.stop()  # the broker is down for the whole first run
    report = tmp_path / "shift.jsonl"
    first = subprocess.Popen(
        station(broker, tmp_path, small_wim, small_sdi, report=report, devices=3),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        # The report has every record (and its summary): the station waits for the broker.
        while '"type":"summary"' not in (report.read_text() if report.exists() else ""):
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)  # the PC is switched off while it waits
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    earlier = devices_of(report)
    assert len(earlier) == 3

    broker.start()
    archive = Subscriber(broker, f"{ROOT}/result")
    archive.start()
    time.sleep(0.3)
    second = subprocess.run(
        station(broker, tmp_path, small_wim, small_sdi, "--append", report=report, devices=1),
        capture_output=True, text=True, timeout=60,
    )
    assert second.returncode == 0, second.stderr
    assert "sending again 3 results" in second.stderr
    messages = archive.wait_for(lambda ms: len(ms) >= 4)
    archive.stop()
    published = [m["data"] for m in messages]
    run_ids = {r["record_id"].split(":")[1] for r in published}
    assert len(run_ids) == 2, "three results of the first run, one of the second"
    recorded = devices_of(report)
    assert len(recorded) == 4
    assert sorted(json.dumps(without_line_fields(r), sort_keys=True) for r in published) == \
        sorted(json.dumps(e, sort_keys=True) for e in recorded)


def test_a_station_killed_with_sigkill_is_offline_for_a_late_subscriber(
    broker: Mosquitto, tmp_path: Path, small_wim: Path, small_sdi: Path
) -> None:
    watcher = Subscriber(broker, f"{ROOT}/status")
    watcher.start()
    report = tmp_path / "run.jsonl"
    process = subprocess.Popen(
        station(broker, tmp_path, small_wim, small_sdi, report=report, rate="0.5", devices=2),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        watcher.wait_for(lambda ms: any(m["data"]["state"] == "online" for m in ms))
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # The broker notices the dead connection and publishes the will.
    watcher.wait_for(lambda ms: ms[-1]["data"]["state"] == "offline")
    watcher.stop()
    late = retained(broker, f"{ROOT}/status")
    assert len(late) == 1
    assert late[0]["data"]["state"] == "offline" and late[0]["data"]["reason"] == "lost"


def test_mqtt_options_are_checked_before_any_device(
    tmp_path: Path, small_wim: Path, small_sdi: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["boot", str(small_wim), "--sdi", str(small_sdi), "--sim", "2", "--plain"]
    report = ["--report", str(tmp_path / "r.jsonl")]
    cases = {
        ("--mqtt", "mqtt://127.0.0.1:1883"): "--mqtt sends each result once it is on record",
        ("--mqtt", "http://broker", *report): "is not a broker URL",
        ("--mqtt", "mqtt://broker:99999", *report): "the port must be a number",
        ("--mqtt", "mqtt://b", "--line", "a/b", *report): "--line 'a/b' must be",
        ("--line", "L1", *report): "--line is an --mqtt option",
        ("--mqtt", "mqtts://b", "--mqtt-ca", "/nonexistent", *report): "--mqtt-ca /nonexistent",
        ("--mqtt", "mqtt://b", "--mqtt-password-file", "/nonexistent", *report):
            "--mqtt-password-file /nonexistent",
        ("--metrics", "nowhere", *report): "--metrics 'nowhere': expected HOST:PORT",
        ("--on-result", "true"): "--on-result sends each result once it is on record",
        ("--on-result-timeout", "3", *report): "--on-result-timeout is an --on-result option",
        ("--mqtt", "mqtt://b", "--report", "-"): "give --report a file, not -",
    }
    for args, message in cases.items():
        assert main([*base, *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err, (args, err)
        assert len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "r.jsonl").exists(), "nothing touched"


@pytest.mark.umockdev
def test_station_mode_publishes_every_device_of_the_shift(
    broker: Mosquitto, tmp_path: Path, small_wim: Path, small_sdi: Path
) -> None:
    import urllib.request

    from _line_services import free_port
    from parallel_flash.emulator import EmulatedLine

    subscriber = Subscriber(broker, f"{ROOT}/#")
    subscriber.start()
    report = tmp_path / "shift.jsonl"
    metrics_port = free_port()
    with EmulatedLine(0) as line:
        process = line.popen(
            [sys.executable, "-m", "parallel_flash", "boot", str(small_wim), "--sdi",
             str(small_sdi), "--watch", "--count", "3", "--report", str(report), "--plain",
             "--mqtt", broker.url, "--line", "L1", "--station", "st1",
             "--mqtt-outbox", str(tmp_path / "outbox.jsonl"),
             "--metrics", f"127.0.0.1:{metrics_port}",
             # Station mode confirms each boot (issue 7); the booted image's ID makes it quick.
             "--expect", "045E:0A00"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        try:
            subscriber.wait_for(lambda ms: any(m["topic"] == f"{ROOT}/status" for m in ms))
            first = line.plug()
            subscriber.wait_for(lambda ms: len(results(ms)) == 1)
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as response:
                exposition = response.read().decode()
            assert ('parallel_flash_devices_finished_total{loader="simpleio",reason="none",'
                    'result="booted"} 1.0') in exposition
            ports = [first, line.plug(), line.plug()]
            _, stderr = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 0, stderr
    messages = subscriber.wait_for(
        lambda ms: any(m["topic"] == f"{ROOT}/status" and m["data"]["state"] == "offline"
                       for m in ms)
    )
    subscriber.stop()
    recorded = devices_of(report)
    published = results(messages)
    assert sorted(r["port"] for r in published) == sorted(ports)
    by_port = {r["port"]: without_line_fields(r) for r in published}
    assert all(by_port[e["port"]] == e for e in recorded)
    summary = [m["data"] for m in messages if m["topic"] == f"{ROOT}/summary"][-1]
    assert (summary["final"], summary["devices"], summary["booted"]) == (True, 3, 3)


def test_a_station_names_its_image_once_hashed_without_waiting_for_it(
    broker: Mosquitto, small_wim: Path, small_sdi: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Status and metrics come up while the image is still read; they name it once hashed.

    The image's reader is held after the headers. The station's first
    ``online`` and its metrics are there at once (nothing waits for the
    hash); once the reader is released, ``online`` is said again with the
    digest, and ``station_info`` carries it.
    """
    import hashlib
    import threading
    import urllib.request

    from _line_services import free_port
    from parallel_flash import image as image_module
    from parallel_flash.image import ImageBuffer
    from parallel_flash.output.line import LineOptions
    from parallel_flash.output.line_integration import LineIntegration
    from parallel_flash.output.mqtt import MqttSettings

    monkeypatch.setattr(image_module, "_READ_BLOCK", 32 << 10)
    hold_at = small_sdi.stat().st_size + (32 << 10)
    copy = image_module._Loader._copy
    release = threading.Event()

    def copy_then_hold(self, stream, start, end):  # type: ignore[no-untyped-def]
        if start >= hold_at:
            release.wait(30)
        return copy(self, stream, start, end)

    monkeypatch.setattr(image_module._Loader, "_copy", copy_then_hold)
    expected = hashlib.sha256(small_sdi.read_bytes() + small_wim.read_bytes()).hexdigest()
    subscriber = Subscriber(broker, f"{ROOT}/status")
    subscriber.start()
    port = free_port()
    options = LineOptions(
        mqtt=MqttSettings.from_url(broker.url), line="L1", station="st1",
        metrics=("127.0.0.1", port), outbox=None,
    )

    def station_info() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            text: str = reply.read().decode()
        return "".join(line for line in text.splitlines()
                       if line.startswith("parallel_flash_station_info{"))

    try:
        with ImageBuffer.load(small_wim, small_sdi) as image, \
                LineIntegration(options, image) as integration:
            first = subscriber.wait_for(lambda ms: len(ms) >= 1)[0]["data"]
            assert first["state"] == "online" and first["image"]["sha256"] is None
            assert image.loaded_length < image.total_length, "the reader was not held"
            assert station_info() == ""
            release.set()
            messages = subscriber.wait_for(lambda ms: len(ms) >= 2)
            again = messages[1]["data"]
            assert again["state"] == "online" and again["image"]["sha256"] == expected
            assert again["run_id"] == first["run_id"]
            assert f'image_sha256="{expected}"' in station_info()
            integration.close()
    finally:
        release.set()
        subscriber.stop()
    states = [m["data"]["state"] for m in subscriber.snapshot()]
    assert states == ["online", "online", "draining", "offline"]
