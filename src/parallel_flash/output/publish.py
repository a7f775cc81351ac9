"""Publishing a line's results and live state without ever slowing the engine.

:class:`LinePublisher` is a :class:`~parallel_flash.engine.records.LineObserver` and
the JSONL report's listener. Everything it does on the engine's side is
O(1) and never waits: it notes a record, or hands a finished device's
record (already on disk) to the publisher's own thread, which runs its own
asyncio loop with the MQTT connection (output/mqtt.py) and the result hook
(output/hooks.py). A dead broker, a slow TLS handshake or a hanging hook
therefore costs the boot nothing.

The outgoing queue (:class:`OutQueue`) is bounded and drained by one task:

* results are never dropped: they stay queued (and pointed to from the
  outbox on disk, output/outbox.py) until the broker acknowledges them;
* retained messages (port states, status, summary) keep only the latest per
  topic -- a port that changed three times while the broker was away is sent
  once, as it is now -- and beyond ``max_retained`` topics the oldest is
  dropped and counted.

Port states are sampled from the records by a ticker, at most once per
``port_interval`` (1 s) per port, so a transfer's byte counter never causes
a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..engine.records import DeviceLog, DeviceRecord
from .line import DEFAULT_DRAIN_TIMEOUT
from .mqtt import MqttConnection, MqttSettings, port_topic, topic_root
from .outbox import Outbox, PendingResult
from .outqueue import Message, OutQueue
from .report import JsonlReport, default_station
from .totals import LineTally, line_totals

if TYPE_CHECKING:
    from .hooks import ResultHook

__all__ = (
    "LinePublisher",
    "StationIdentity",
    "default_station",
    "new_run_id",
)

logger = logging.getLogger(__name__)

#: A port's state is published at most this often (seconds).
PORT_INTERVAL = 1.0
_TICK = 0.25
#: Seconds between fsyncs of the outbox (what a power cut may lose of its pointers).
OUTBOX_SYNC_INTERVAL = 1.0


def _iso(wall: float) -> str:
    return dt.datetime.fromtimestamp(wall, dt.UTC).isoformat(timespec="milliseconds")


def new_run_id() -> str:
    """Sortable and unique per station: UTC start time plus 24 random bits."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def _status_message(payload: dict[str, Any]) -> Message:
    """The retained ``status`` message of a :meth:`StationIdentity.status` payload."""
    return Message("status", _json(payload), qos=1, retain=True)


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, ensure_ascii=True, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True, kw_only=True)
class StationIdentity:
    """Who is talking: the line, the station, this run and the image it boots."""

    line: str
    station: str
    image_name: str
    #: The digest, or where to ask for it without waiting (None until the
    #: image is hashed: the status is said again then, see image_hashed).
    image_sha256: str | Callable[[], str | None]
    image_bytes: int
    loaders: tuple[str, ...] = ("simpleio",)
    run_id: str = field(default_factory=new_run_id)
    version: str = __version__
    host: str = field(default_factory=socket.gethostname)

    def record_id(self, slot: int) -> str:
        """Unique per station, run and device (slots are unique within a run)."""
        return f"{self.station}:{self.run_id}:{slot}"

    def status(self, state: str, *, reason: str | None = None, since: float) -> dict[str, Any]:
        digest = self.image_sha256
        return {
            "state": state,
            "reason": reason,
            "line": self.line,
            "station": self.station,
            "host": self.host,
            "version": self.version,
            "run_id": self.run_id,
            "image": {
                "name": self.image_name,
                "sha256": digest() if callable(digest) else digest,
                "bytes": self.image_bytes,
            },
            "loaders": list(self.loaders),
            "pid": os.getpid(),
            "since": _iso(since),
        }


def port_state(record: DeviceRecord, *, now: float) -> dict[str, Any]:
    """The retained ``port/{port}/state`` payload for *record* at monotonic *now*."""
    eta = record.eta(now)
    return {
        "slot": record.slot,
        "port": record.port,
        "state": record.state.value,
        "name": record.name,
        "unique_id": record.unique_id,
        "bytes_done": record.bytes_done,
        "bytes_total": record.bytes_total,
        "mb_per_s": round(record.rate(now) / 1e6, 3),
        "eta_seconds": round(eta, 1) if eta is not None else None,
        "at": _iso(time.time()),
    }


class LinePublisher:
    """Publishes a line to MQTT and runs the result hook, from a thread of its own.

    Use as a context manager (or :meth:`start` / :meth:`close`); attach it to
    the report with :meth:`attach` and add it to the engine's observers.
    """

    def __init__(
        self,
        identity: StationIdentity,
        *,
        mqtt: MqttSettings | None = None,
        outbox: str | os.PathLike[str] | None = None,
        hook: ResultHook | None = None,
        summary_interval: float | None = None,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
        port_interval: float = PORT_INTERVAL,
    ) -> None:
        self.identity = identity
        self.hook = hook
        self.summary_interval = summary_interval
        self.drain_timeout = drain_timeout
        self.port_interval = port_interval
        self._port_topic = port_topic
        self._started_wall = time.time()
        # Devices under way, and a tally of the finished ones: the summary
        # needs totals, not the shift's records (memory stays flat all shift).
        # The engine's thread writes these, the publisher's thread reads them.
        self._live: dict[int, DeviceRecord] = {}
        self._done = LineTally()
        self._tally_lock = threading.Lock()
        self._ports: dict[str, DeviceRecord] = {}
        #: Per port: what was last published, and when (monotonic).
        self._published_ports: dict[str, tuple[object, ...]] = {}
        self._sent_at: dict[str, float] = {}
        #: where each result's record is (its file changes when the report rotates)
        self._report: JsonlReport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._queue: OutQueue | None = None
        self._interrupted = False
        #: The last ``online`` went out before the image was hashed (said again then).
        self._online_unnamed = False
        self.outbox: Outbox | None = None
        self.connection: MqttConnection | None = None
        #: Results not handed to the broker when the publisher closed.
        self.left_unacknowledged = 0
        if mqtt is not None:
            self.connection = MqttConnection(
                mqtt,
                root=topic_root(identity.line, identity.station),
                client_id=f"parallel-flash-{identity.line}-{identity.station}",
                online=self._online,
                will=lambda: self._status("offline", reason="lost"),
                on_acknowledged=self._acknowledged,
            )
            if outbox is not None:
                self.outbox = Outbox(outbox)

    # -- lifetime -------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._thread_main, name="parallel-flash publisher", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(30) or self._failure is not None:
            raise RuntimeError(f"the publisher did not start: {self._failure}")

    def image_hashed(self, _digest: str | None) -> None:
        """The image's digest is known now (any thread): say ``online`` again, naming it.

        A station connects while its image is still being read; its first
        status names no digest rather than hold the line up for the hash.
        """
        loop, queue, stop = self._loop, self._queue, self._stop
        if self.connection is None or loop is None or queue is None or stop is None:
            return  # not started yet: the first status will name it

        def again() -> None:
            # Only if an ``online`` went out without it; a later one names it anyway.
            if self._online_unnamed and not stop.is_set():
                queue.put_retained(self._online())

        with contextlib.suppress(RuntimeError):  # the publisher's loop has ended
            loop.call_soon_threadsafe(again)

    def attach(self, report: JsonlReport) -> None:
        """Publish each device's record once the report has it on disk."""
        self._report = report
        report.on_record.append(self.result)

    def close(self, *, interrupted: bool = False) -> None:
        """Say goodbye: draining, last results, final summary, ports emptied, offline.

        Waits at most about ``drain_timeout`` seconds; what the broker has not
        acknowledged by then stays in the outbox for the next start.
        """
        self._interrupted = self._interrupted or interrupted
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None or loop is None or stop is None:
            return
        with contextlib.suppress(RuntimeError):  # loop already gone
            loop.call_soon_threadsafe(stop.set)
        thread.join(self._drain_budget + 15)
        if thread.is_alive():
            logger.error("publisher: did not stop within %.0f s", self._drain_budget + 15)
        self._thread = None
        if self.outbox is not None:
            self.outbox.close()

    @property
    def _drain_budget(self) -> float:
        """Seconds the goodbye may wait: enough for a result hook under way to finish."""
        hook_time = self.hook.timeout + 2 if self.hook is not None else 0.0
        return max(self.drain_timeout, hook_time)

    def __enter__(self) -> LinePublisher:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(interrupted=exc is not None)

    # -- state for metrics ------------------------------------------------------------

    @property
    def mqtt_connected(self) -> bool:
        return self.connection is not None and self.connection.connected

    @property
    def unacknowledged(self) -> int:
        queue = self._queue
        return queue.unacknowledged if queue is not None else 0

    # -- LineObserver (engine's thread: O(1), never waits) ------------------------------

    def device_added(self, record: DeviceRecord) -> None:
        with self._tally_lock:
            self._live[id(record)] = record
        self._ports[record.port] = record

    def device_changed(self, record: DeviceRecord) -> None:
        pass  # sampled by the port ticker

    def device_log(self, record: DeviceRecord, log: DeviceLog) -> None:
        pass

    def device_finished(self, record: DeviceRecord) -> None:
        # The result goes out from the report's listener, once it is on disk;
        # here the record only moves from the live set into the tally.
        with self._tally_lock:
            if self._live.pop(id(record), None) is not None:
                self._done.add(record, time.monotonic())

    # -- results ------------------------------------------------------------------------

    def result(self, entry: dict[str, Any]) -> None:
        """A device record that is on disk: publish it and run the hook (never raises)."""
        try:
            slot = int(entry["slot"])
            record_id = self.identity.record_id(slot)
            payload = {
                **entry,
                "record_id": record_id,
                "line": self.identity.line,
                "station": self.identity.station,
            }
            if self.outbox is not None and self._report is not None:
                # Called right after the line is written: path is the file that holds it.
                self.outbox.add(
                    PendingResult(
                        record_id=record_id,
                        report=os.path.abspath(self._report.path),
                        port=str(entry["port"]),
                        slot=slot,
                        started=str(entry["started"]),
                    )
                )
            loop = self._loop
            if loop is None:
                raise RuntimeError("the publisher is not running")
            loop.call_soon_threadsafe(self._accept_result, payload)
        except Exception as exc:
            logger.error("publisher: result of %s not handed over: %s", entry.get("port"), exc)

    def _accept_result(self, payload: dict[str, Any]) -> None:
        if self._queue is not None and self.connection is not None:
            self._queue.put_result(
                Message("result", _json(payload), qos=1, record_id=str(payload["record_id"]))
            )
        if self.hook is not None:
            self.hook.submit(payload)

    def _acknowledged(self, message: Message) -> None:
        if self.outbox is not None and message.record_id is not None:
            self.outbox.acknowledge(message.record_id)

    # -- the publisher's thread ---------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start() or logged
            self._failure = exc
            self._ready.set()
            logger.error("publisher stopped: %s: %s", type(exc).__name__, exc)

    def _online(self) -> Message:
        """The ``online`` status (each connection says it first); notes if it named no image."""
        payload = self.identity.status("online", since=self._started_wall)
        self._online_unnamed = payload["image"]["sha256"] is None
        return _status_message(payload)

    def _status(self, state: str, *, reason: str | None = None) -> Message:
        return _status_message(
            self.identity.status(state, reason=reason, since=self._started_wall)
        )

    def _summary(self, *, final: bool) -> Message:
        with self._tally_lock:
            live, done = list(self._live.values()), self._done.copy()
        totals = line_totals(live, now=time.monotonic(), tally=done)
        payload = {
            "line": self.identity.line,
            "station": self.identity.station,
            "run_id": self.identity.run_id,
            "final": final,
            "interrupted": self._interrupted,
            "devices": totals.devices,
            "booted": totals.booted,
            "failed": totals.failed,
            "in_progress": totals.in_progress,
            "bytes": totals.bytes_done,
            "bytes_total": totals.bytes_total,
            "seconds": round(totals.seconds, 3),
            "mb_per_s": round(totals.mb_per_s, 3),
            "hook_failures": self.hook.failures if self.hook is not None else 0,
            "at": _iso(time.time()),
        }
        return Message("summary", _json(payload), qos=1, retain=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        queue = self._queue = OutQueue()
        finishing = asyncio.Event()
        if self.outbox is not None:
            for pending, entry in await asyncio.to_thread(self.outbox.recover):
                payload = {**entry, "record_id": pending.record_id,
                           "line": self.identity.line, "station": self.identity.station}
                queue.put_result(Message("result", _json(payload), record_id=pending.record_id))
            if queue.unacknowledged:
                logger.warning(
                    "MQTT: sending again %d results the broker never acknowledged",
                    queue.unacknowledged,
                )
        tasks: list[asyncio.Task[None]] = []
        if self.connection is not None:
            tasks.append(asyncio.create_task(self.connection.run(queue, finishing)))
            tasks.append(asyncio.create_task(self._tick_ports(queue)))
            if self.summary_interval:
                tasks.append(asyncio.create_task(self._tick_summary(queue)))
            if self.outbox is not None:
                tasks.append(asyncio.create_task(self._tick_outbox(self.outbox)))
        if self.hook is not None:
            tasks.append(asyncio.create_task(self.hook.run()))
        self._ready.set()
        await self._stop.wait()
        await self._finish(queue, finishing, tasks)

    async def _finish(
        self, queue: OutQueue, finishing: asyncio.Event, tasks: list[asyncio.Task[None]]
    ) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.drain_timeout
        hook_deadline = started + self._drain_budget
        connection = self.connection
        if connection is not None:
            queue.put_retained(self._status("draining"))
            # Each port's final state goes out before the port is emptied below.
            self._publish_ports(queue, final=True)

        def waiting() -> bool:
            now = loop.time()
            broker = connection is not None and not queue.idle and now < deadline
            hooks = self.hook is not None and self.hook.busy and now < hook_deadline
            return broker or hooks

        # Two things to wait for (the broker, hooks), each bounded by its deadline.
        while waiting():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if connection is not None:
            queue.put_retained(self._summary(final=True))
            for port in self._published_ports:
                queue.put_retained(Message(self._port_topic(port), b"", retain=True))
            queue.put_retained(self._status("offline", reason="exit"))
            queue.closed = True
            finishing.set()
            connection_task = tasks[0]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.shield(connection_task), max(1.0, deadline - loop.time())
                )
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.left_unacknowledged = queue.unacknowledged
        if self.left_unacknowledged:
            outbox = self.outbox
            where = f"; kept in {outbox.path} and sent at the next start" if outbox else ""
            logger.warning(
                "MQTT: %d results not acknowledged by the broker%s",
                self.left_unacknowledged, where,
            )
        if self.hook is not None:
            self.hook.report_unfinished()

    # -- port states and summaries ------------------------------------------------------

    def _publish_ports(self, queue: OutQueue, *, final: bool = False) -> None:
        now = time.monotonic()
        sent_at = self._sent_at
        for port, record in list(self._ports.items()):
            snapshot = (record.slot, record.state, record.bytes_done, record.name)
            if self._published_ports.get(port) == snapshot:
                continue
            if not final and now - sent_at.get(port, -1e9) < self.port_interval:
                continue
            queue.put_retained(
                Message(self._port_topic(port), _json(port_state(record, now=now)), retain=True)
            )
            self._published_ports[port] = snapshot
            sent_at[port] = now

    async def _tick_ports(self, queue: OutQueue) -> None:
        while True:
            self._publish_ports(queue)
            await asyncio.sleep(_TICK)

    async def _tick_outbox(self, outbox: Outbox) -> None:
        """The engine's thread appends to the outbox; this puts it on disk, off that thread."""
        while True:
            await asyncio.sleep(OUTBOX_SYNC_INTERVAL)
            await asyncio.to_thread(outbox.sync)

    async def _tick_summary(self, queue: OutQueue) -> None:
        assert self.summary_interval is not None
        while True:
            await asyncio.sleep(self.summary_interval)
            queue.put_retained(self._summary(final=False))
