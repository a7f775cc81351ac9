"""A broker as a line runs it: TLS with a private CA, one account per station."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _line_services import Mosquitto, Subscriber, free_port, make_certificates, require
from parallel_flash.engine.records import DeviceRecord
from parallel_flash.output.mqtt import MqttSettings
from parallel_flash.output.publish import LinePublisher, StationIdentity
from parallel_flash.output.report import read_report

pytestmark = pytest.mark.slow

ROOT = "parallel-flash/v1/L1/st1"


@pytest.fixture
def secure_broker(tmp_path: Path) -> tuple[Mosquitto, int, Path]:
    workdir = tmp_path / "broker"
    workdir.mkdir()
    ca, cert, key = make_certificates(workdir)
    passwd = require(shutil.which("mosquitto_passwd"), "mosquitto")
    subprocess.run([passwd, "-c", "-b", str(workdir / "passwd"), "st1", "s3cret"], check=True)
    subprocess.run([passwd, "-b", str(workdir / "passwd"), "reader", "r3ad"], check=True)
    tls_port = free_port()
    broker = Mosquitto(workdir, extra_config=(
        "per_listener_settings false\nallow_anonymous false\n"
        f"password_file {workdir / 'passwd'}\n"
        f"listener {tls_port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
    ))
    broker.start()
    yield broker, tls_port, ca
    broker.stop()


def test_tls_and_a_password_from_a_file(
    secure_broker: tuple[Mosquitto, int, Path], tmp_path: Path, small_wim: Path, small_sdi: Path
) -> None:
    broker, tls_port, ca = secure_broker
    subscriber = Subscriber(broker, f"{ROOT}/result", auth=("reader", "r3ad"))
    subscriber.start()
    time.sleep(0.3)
    password = tmp_path / "mqtt.pw"
    password.write_text("s3cret\n")
    report = tmp_path / "run.jsonl"
    run = subprocess.run(
        [sys.executable, "-m", "parallel_flash", "boot", str(small_wim), "--sdi", str(small_sdi),
         "--sim", "2", "--sim-rate", "0", "--plain", "--report", str(report),
         "--mqtt", f"mqtts://st1@127.0.0.1:{tls_port}", "--mqtt-password-file", str(password),
         "--mqtt-ca", str(ca), "--line", "L1", "--station", "st1",
         "--mqtt-outbox", str(tmp_path / "outbox.jsonl")],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "unreachable" not in run.stderr
    messages = subscriber.wait_for(lambda ms: len(ms) >= 2)
    subscriber.stop()
    recorded = {e["port"] for e in read_report(report) if e["type"] == "device"}
    assert {m["data"]["port"] for m in messages} == recorded


def test_a_refused_login_keeps_the_results_and_never_fails_the_line(
    secure_broker: tuple[Mosquitto, int, Path], tmp_path: Path, small_wim: Path, small_sdi: Path
) -> None:
    broker, _, _ = secure_broker
    report = tmp_path / "run.jsonl"
    run = subprocess.run(
        [sys.executable, "-m", "parallel_flash", "boot", str(small_wim), "--sdi", str(small_sdi),
         "--sim", "2", "--sim-rate", "0", "--plain", "--report", str(report),
         "--mqtt", f"mqtt://st1:wrong@127.0.0.1:{broker.port}",
         "--mqtt-outbox", str(tmp_path / "outbox.jsonl")],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PARALLEL_FLASH_MQTT_PASSWORD": "s3cret"},  # the URL's wins
    )
    assert run.returncode == 0, run.stderr
    assert "unreachable" in run.stderr and "wrong" not in run.stderr  # never the password
    assert "2 results not acknowledged by the broker; kept in" in run.stderr


def test_station_mode_publishes_a_retained_summary_every_interval(
    tmp_path: Path,
) -> None:
    workdir = tmp_path / "broker"
    workdir.mkdir()
    broker = Mosquitto(workdir)
    broker.start()
    try:
        subscriber = Subscriber(broker, f"{ROOT}/summary")
        subscriber.start()
        identity = StationIdentity(line="L1", station="st1", image_name="mmos.wim",
                                   image_sha256="0" * 64, image_bytes=100)
        publisher = LinePublisher(identity, mqtt=MqttSettings.from_url(broker.url),
                                  outbox=tmp_path / "outbox.jsonl", summary_interval=0.5)
        with publisher:
            record = DeviceRecord(slot=1, port="1-1", bytes_total=100)
            publisher.device_added(record)
            messages = subscriber.wait_for(lambda ms: len(ms) >= 3)
            assert all(m["data"]["final"] is False and m["data"]["in_progress"] == 1
                       for m in messages)
        messages = subscriber.wait_for(lambda ms: ms[-1]["data"]["final"] is True)
        subscriber.stop()
    finally:
        broker.stop()
