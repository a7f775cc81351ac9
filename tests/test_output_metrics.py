"""Prometheus metrics: promtool checks the exposition; a real Prometheus scrapes it at 1 s."""

from __future__ import annotations

import io
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from _line_services import PROMTOOL, Prometheus, free_port, require
from parallel_flash.image import ImageBuffer
from parallel_flash.output.metrics import LineMetrics
from parallel_flash.output.report import read_report
from parallel_flash.protocol.device import DeviceFaults
from parallel_flash.session import Presentation, SimulatedLine, run_boot

pytestmark = pytest.mark.slow

FAILURE_REASONS = {"device-status", "timeout", "stall", "disconnected", "usb-error",
                   "protocol", "not-booted", "interrupted", "aborted", "refused"}


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text: str = response.read().decode()
        return text


def promtool_check(exposition: str) -> subprocess.CompletedProcess[str]:
    promtool = require(PROMTOOL, "prometheus")
    return subprocess.run([promtool, "check", "metrics"], input=exposition,
                          capture_output=True, text=True, timeout=60)


def test_exposition_passes_promtool_and_a_prometheus_scrape_equals_the_report(
    tmp_path: Path, small_wim: Path, small_sdi: Path
) -> None:
    port = free_port()
    with ImageBuffer.load(small_wim, small_sdi) as image:
        metrics = LineMetrics(image_sha256=image.sha256)
        metrics.serve("127.0.0.1", port)
        try:
            before = scrape(port)
            assert 'parallel_flash_devices_finished_total{loader="simpleio",reason="none",' \
                   'result="booted"} 0.0' in before, "series exist from the start"
            report = tmp_path / "run.jsonl"
            result = run_boot(
                image,
                SimulatedLine(count=6, rate=None, faults={
                    2: DeviceFaults(status=-5),
                    5: DeviceFaults(disconnect_after=100_000),
                }),
                report=report,
                presentation=Presentation(live=False, stream=io.StringIO()),
                extra_observers=[metrics],
            )
            assert (result.booted, result.failed) == (4, 2)
            exposition = scrape(port)
            check = promtool_check(exposition)
            assert check.returncode == 0, check.stdout + check.stderr

            prometheus = Prometheus(tmp_path, f"127.0.0.1:{port}")
            prometheus.start()
            try:
                deadline = time.monotonic() + 60
                while not prometheus.query("parallel_flash_station_info"):
                    assert time.monotonic() < deadline, "Prometheus never scraped the station"
                    time.sleep(0.5)
                summary = read_report(report)[-1]

                def value(expression: str) -> float:
                    found = prometheus.query(expression)
                    assert len(found) == 1, (expression, found)
                    return float(found[0]["value"][1])

                assert value('sum(parallel_flash_devices_finished_total{result="booted"})') == \
                    summary["booted"]
                assert value('sum(parallel_flash_devices_finished_total{result="failed"})') == \
                    summary["failed"]
                for reason in ("device-status", "disconnected"):
                    by_reason = f'sum(parallel_flash_devices_finished_total{{reason="{reason}"}})'
                    assert value(by_reason) == 1, reason
                assert value('parallel_flash_usb_errors_total{kind="disconnected"}') == 1
                assert value("parallel_flash_bytes_sent_total") == summary["bytes"]
                assert value("parallel_flash_boot_duration_seconds_count") == summary["booted"]
                assert value("sum(parallel_flash_devices_in_progress)") == 0
                info = prometheus.query("parallel_flash_station_info")[0]["metric"]
                assert info["image_sha256"] == image.sha256
                assert value("parallel_flash_last_finished_timestamp_seconds") > time.time() - 120
                labels = prometheus.query("parallel_flash_devices_finished_total")
                assert {m["metric"]["reason"] for m in labels} == FAILURE_REASONS | {"none"}
            finally:
                prometheus.stop()
        finally:
            metrics.close()


def _devices_written(report: Path) -> int:
    """Device records on disk so far (the report is created just after /metrics is up)."""
    try:
        return len([e for e in read_report(report) if e["type"] == "device"])
    except FileNotFoundError:
        return 0


def test_metrics_flag_serves_during_the_run_and_mqtt_gauges_with_mqtt(
    tmp_path: Path, small_wim: Path, small_sdi: Path
) -> None:
    port = free_port()
    report = tmp_path / "run.jsonl"
    unreachable = free_port()  # nothing listens there: the station keeps trying
    process = subprocess.Popen(
        [sys.executable, "-m", "parallel_flash", "boot", str(small_wim), "--sdi", str(small_sdi),
         "--sim", "2", "--sim-rate", "1", "--plain", "--report", str(report),
         "--metrics", f"127.0.0.1:{port}", "--mqtt", f"mqtt://127.0.0.1:{unreachable}",
         "--mqtt-outbox", str(tmp_path / "outbox.jsonl")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        exposition = ""
        while "parallel_flash_devices_in_progress" not in exposition:
            assert time.monotonic() < deadline and process.poll() is None
            try:
                exposition = scrape(port)
            except OSError:
                time.sleep(0.1)
        check = promtool_check(exposition)
        assert check.returncode == 0, check.stdout + check.stderr
        assert "parallel_flash_mqtt_connected 0.0" in exposition
        while _devices_written(report) < 2:
            assert time.monotonic() < deadline + 30 and process.poll() is None
            time.sleep(0.1)
        time.sleep(0.3)
        assert "parallel_flash_mqtt_unacknowledged 2.0" in scrape(port)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert "2 results not acknowledged by the broker; kept in" in stderr


def test_metrics_port_in_use_is_one_clear_error(
    tmp_path: Path, small_wim: Path, small_sdi: Path
) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = subprocess.run(
            [sys.executable, "-m", "parallel_flash", "boot", str(small_wim), "--sdi",
             str(small_sdi), "--sim", "1", "--plain", "--metrics", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=60,
        )
    assert run.returncode == 2
    assert run.stderr.strip() == (
        f"parallel-flash: error: --metrics 127.0.0.1:{port}: cannot listen: Address already in use"
    )
