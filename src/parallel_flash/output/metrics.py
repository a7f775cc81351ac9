"""Prometheus metrics of a station (``--metrics HOST:PORT``), with prometheus-client.

Labels are bounded: the loader, the result (booted / failed), the failure
reason (events.FailureReason, the same values as the report's ``reason``),
the in-progress state and the kind of USB error. A serial number or unique
ID is never a label: one time series per device would grow without end; the
per-device detail lives in the report and on MQTT.

Counters count devices finished by this process since it started, so a
Prometheus scrape equals the run's report totals. Gauges that depend on the
live records (devices in progress, bytes sent) are computed at scrape time
from the records, not pushed by the engine: the engine's only cost is the
observer call per state change.

docs/line.md lists every metric with example alert rules.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .. import __version__
from ..engine.records import DeviceLog, DeviceRecord, DeviceState, FailureReason
from ..errors import InputError
from ..protocol.selection import Loader

__all__ = ("BOOT_DURATION_BUCKETS", "LineMetrics", "parse_listen_address")

logger = logging.getLogger(__name__)

#: Seconds; a USB 2.0 boot of a few hundred MB takes 5-60 s, a slow line minutes.
BOOT_DURATION_BUCKETS = (2.5, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600)
#: Failure reasons that are USB errors, counted by kind as well.
_USB_ERROR_KINDS = (
    FailureReason.TIMEOUT,
    FailureReason.STALL,
    FailureReason.DISCONNECTED,
    FailureReason.USB_ERROR,
)
_IN_PROGRESS_STATES = tuple(state for state in DeviceState if not state.finished)


def parse_listen_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` (all interfaces) or ``[::1]:PORT``."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InputError(f"--metrics {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9464 or :9464")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port_text)


class _LiveCollector(Collector):
    """Values read from the records at scrape time."""

    def __init__(self, metrics: LineMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        metrics = self.metrics
        live = list(metrics.live)
        in_progress = GaugeMetricFamily(
            "parallel_flash_devices_in_progress",
            "Devices being booted now, by state",
            labels=["state"],
        )
        for state in _IN_PROGRESS_STATES:
            in_progress.add_metric([state.value], sum(r.state is state for r in live))
        yield in_progress
        sent = CounterMetricFamily(
            "parallel_flash_bytes_sent",
            "Image bytes sent to devices (SDI + WIM), finished or not",
        )
        sent.add_metric([], metrics.finished_bytes + sum(r.bytes_done for r in live))
        yield sent
        if metrics.mqtt_state is not None:
            connected, unacknowledged = metrics.mqtt_state()
            yield GaugeMetricFamily(
                "parallel_flash_mqtt_connected",
                "1 while the station is connected to its MQTT broker",
                value=int(connected),
            )
            yield GaugeMetricFamily(
                "parallel_flash_mqtt_unacknowledged",
                "Results the MQTT broker has not acknowledged yet",
                value=unacknowledged,
            )


class LineMetrics:
    """A LineObserver that keeps the station's metrics; :meth:`serve` exposes them."""

    def __init__(
        self,
        *,
        image_sha256: str | None,
        loaders: Iterable[str] = tuple(Loader),
        mqtt_state: Callable[[], tuple[bool, int]] | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.mqtt_state = mqtt_state
        #: Records not finished yet (read at scrape time).
        self.live: set[DeviceRecord] = set()
        self.finished_bytes = 0
        self._server: Any = None
        self.finished_total = Counter(
            "parallel_flash_devices_finished",
            "Devices finished, by loader, result and failure reason",
            ["loader", "result", "reason"],
            registry=self.registry,
        )
        self.boot_duration = Histogram(
            "parallel_flash_boot_duration_seconds",
            "Seconds from a device found to booted (booted devices only)",
            buckets=BOOT_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.usb_errors = Counter(
            "parallel_flash_usb_errors",
            "Devices failed by a USB error, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.station_info = Gauge(
            "parallel_flash_station_info",
            "Always 1; the labels say what this station runs",
            ["version", "image_sha256"],
            registry=self.registry,
        )
        self.last_finished = Gauge(
            "parallel_flash_last_finished_timestamp_seconds",
            "Unix time the last device finished (0 before the first)",
            registry=self.registry,
        )
        if image_sha256 is not None:
            self.image_hashed(image_sha256)
        # Every series exists from the start at 0, so rate() and absent() alerts work.
        for loader in loaders:
            self.finished_total.labels(loader, "booted", FailureReason.NONE.value)
            for reason in FailureReason:
                if reason is not FailureReason.NONE:
                    self.finished_total.labels(loader, "failed", reason.value)
        for kind in _USB_ERROR_KINDS:
            self.usb_errors.labels(kind.value)
        self.registry.register(_LiveCollector(self))

    # -- serving ------------------------------------------------------------------------

    def image_hashed(self, digest: str | None) -> None:
        """Name the image in ``station_info`` once it is hashed (any thread; None: unreadable).

        The image is hashed while the first devices stream, so a station does
        not wait for it; until then ``station_info`` is absent.
        """
        self.station_info.clear()
        self.station_info.labels(version=__version__, image_sha256=digest or "").set(1)

    def serve(self, host: str, port: int) -> None:
        """Expose /metrics on HOST:PORT (a daemon thread of prometheus-client)."""
        try:
            self._server, _thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise InputError(f"--metrics {host}:{port}: cannot listen: {exc.strerror}") from None
        logger.info("metrics on http://%s:%d/metrics", host, port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LineMetrics:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- LineObserver -------------------------------------------------------------------

    def device_added(self, record: DeviceRecord) -> None:
        self.live.add(record)

    def device_changed(self, record: DeviceRecord) -> None:
        pass

    def device_log(self, record: DeviceRecord, log: DeviceLog) -> None:
        pass

    def device_finished(self, record: DeviceRecord) -> None:
        if record not in self.live:
            return  # counted once (the set holds only devices under way: flat memory)
        self.live.discard(record)
        self.finished_bytes += record.bytes_done
        reason = record.reason if not record.ok else FailureReason.NONE
        result = "booted" if record.ok else "failed"
        self.finished_total.labels(record.loader, result, reason.value).inc()
        if record.ok:
            self.boot_duration.observe(record.elapsed())
        if reason in _USB_ERROR_KINDS:
            self.usb_errors.labels(reason.value).inc()
        self.last_finished.set(time.time())

    def finish_unfinished(self, records: Iterable[DeviceRecord]) -> None:
        """Count devices the engine never finished (the run was cut short) as interrupted."""
        for record in records:
            if record in self.live and not record.state.finished:
                self.live.discard(record)
                self.finished_bytes += record.bytes_done
                self.finished_total.labels(
                    record.loader, "failed", FailureReason.INTERRUPTED.value
                ).inc()
