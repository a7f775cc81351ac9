"""What the views know about a line: its ports, its running totals and its failures.

A station runs for a whole shift, and the engine may forget a device once
it has finished (its memory stays flat). The views must not keep every
record ever either, nor count from a list that is no longer complete. So
:class:`LineView` is fed by the observer calls alone and keeps:

* the latest device on each port (bounded by the ports of the line);
* running totals, with finished devices folded into counters;
* every failed device, for the recap at the end (a line's failures are
  what the operator has to act on; its successes are a number), as the few
  strings the recap shows (:class:`FailedDevice`), not the whole record with
  its Log packets and attempts: a shift's failures then cost a few hundred
  bytes each.

Observer calls come from the event loop, frames are drawn on another
thread; a lock guards the containers, never any I/O.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ...engine.records import DeviceLog, DeviceRecord, DeviceState
from ...transport.ports import port_sort_key
from ..totals import LineTally, LineTotals
from ._text import failure_reason

__all__ = ("FailedDevice", "LineView", "ViewSnapshot")


@dataclass(frozen=True, slots=True)
class FailedDevice:
    """A failed device as the recap lists it: where, which phone, and why."""

    port: str
    name: str
    unique_id: str
    reason: str

    @classmethod
    def of(cls, record: DeviceRecord) -> FailedDevice:
        return cls(record.port, record.name, record.unique_id, failure_reason(record))


@dataclass(frozen=True, slots=True)
class ViewSnapshot:
    """The line at one instant, as a frame is drawn from it."""

    #: the latest device on each port, ports in natural order
    ports: tuple[DeviceRecord, ...]
    #: every device seen so far, finished ones included
    totals: LineTotals
    #: every failed device, in the order they failed
    failures: tuple[FailedDevice, ...]
    #: seconds until the last active device is done; None if unknown
    eta: float | None
    #: devices still in progress
    active: tuple[DeviceRecord, ...] = field(default=())


class LineView:
    """A :class:`~parallel_flash.events.LineObserver` that keeps what the views draw.

    Memory is bounded by the ports of the line plus its failures, however
    many devices a shift boots.
    """

    def __init__(
        self,
        records: Iterable[DeviceRecord] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._ports: dict[str, DeviceRecord] = {}
        self._active: dict[int, DeviceRecord] = {}
        self._done = LineTally()
        self._failures: list[FailedDevice] = []
        for record in records:
            self.device_added(record)
            if record.state.finished:
                self.device_finished(record)

    def snapshot(self, now: float) -> ViewSnapshot:
        """The line as it stands at monotonic time *now* (O(ports + active devices))."""
        with self._lock:
            ports = sorted(self._ports.values(), key=lambda record: port_sort_key(record.port))
            active = list(self._active.values())
            tally = self._done.copy()
            failures = tuple(self._failures)
        etas = []
        for record in active:
            tally.add(record, now)
            etas.append(record.eta(now))
        eta: float | None = 0.0
        if any(value is None for value in etas):
            eta = None
        elif etas:
            eta = max(value for value in etas if value is not None)
        return ViewSnapshot(
            ports=tuple(ports),
            totals=tally.totals(),
            failures=failures,
            eta=eta,
            active=tuple(active),
        )

    @property
    def active(self) -> list[DeviceRecord]:
        """The devices in progress now."""
        with self._lock:
            return list(self._active.values())

    def device_finished(self, record: DeviceRecord) -> None:
        now = self._clock()
        with self._lock:
            if self._active.pop(id(record), None) is None:
                if self._ports.get(record.port) is record:
                    return  # finished twice: counted once
                self._ports[record.port] = record  # finished without being added
            self._done.add(record, now)
            if record.state is DeviceState.FAILED:
                self._failures.append(FailedDevice.of(record))

    # -- LineObserver --------------------------------------------------

    def device_added(self, record: DeviceRecord) -> None:
        with self._lock:
            self._active[id(record)] = record
            self._ports[record.port] = record

    def device_changed(self, record: DeviceRecord) -> None:
        pass  # frames read the record itself

    def device_log(self, record: DeviceRecord, log: DeviceLog) -> None:
        pass
