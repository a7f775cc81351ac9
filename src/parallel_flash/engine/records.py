"""Per-device state the engine keeps, and the observer interface it reports through.

The engine owns one :class:`DeviceRecord` per device and mutates it in place
(a byte counter bump per transfer is the only hot-path cost). Presentation
layers -- the rich live table, plain output, the JSON-lines report -- are
:class:`LineObserver` implementations: they get a call on every state
change and read byte counts from the records whenever they redraw. Nothing
in here imports rich or USB code.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ..errors import (
    DeviceBootError,
    DeviceDisconnected,
    DeviceRefused,
    ProtocolError,
    TransferStall,
    TransferTimeout,
)

if TYPE_CHECKING:
    from ..image import ImageBuffer

__all__ = (
    "MAX_KEPT_LOGS",
    "Attempt",
    "DeviceLog",
    "DeviceRecord",
    "DeviceState",
    "FailureReason",
    "LineObserver",
    "NullObserver",
    "ObserverGroup",
    "Outcome",
    "failure_reason",
)

#: Log packets a record keeps: the first half and the last half of this many;
#: the rest are counted (a device may send Log packets without end).
MAX_KEPT_LOGS = 32


class DeviceState(enum.StrEnum):
    """Where one device is in the boot sequence (protocol.md, "Sequence")."""

    FOUND = "found"
    IDENTIFYING = "identifying"
    RESETTING = "resetting"
    SENDING_SDI = "sending SDI"
    SENDING_WIM = "sending WIM"
    AWAITING_STATUS = "awaiting status"
    BOOTED = "booted"
    FAILED = "failed"
    #: Cancelled by the operator or the end of a shift; not a failure of the device.
    INTERRUPTED = "interrupted"

    @property
    def finished(self) -> bool:
        return self in (DeviceState.BOOTED, DeviceState.FAILED, DeviceState.INTERRUPTED)


class FailureReason(enum.StrEnum):
    """Why a device ended where it did: a fixed set, so it can be counted.

    The report's ``reason`` field and the Prometheus label
    ``parallel_flash_devices_finished_total{reason}`` carry these values
    (never free text: a label with unbounded values breaks a time-series
    database). The human-readable detail stays in the record's ``error``.
    """

    #: booted
    NONE = "none"
    #: the device answered the whole exchange and reported a failure status
    DEVICE_STATUS = "device-status"
    #: a transfer made no progress in time
    TIMEOUT = "timeout"
    #: an endpoint answered STALL
    STALL = "stall"
    #: the device went away mid-boot
    DISCONNECTED = "disconnected"
    #: any other USB failure (cannot open, kernel refused a transfer...)
    USB_ERROR = "usb-error"
    #: the device broke the protocol's rules
    PROTOCOL = "protocol"
    #: booted, but the image did not come up (station ``--wait-boot``)
    NOT_BOOTED = "not-booted"
    #: the run was stopped (Ctrl-C, SIGTERM) before the device finished
    INTERRUPTED = "interrupted"
    #: the run died of an error outside the device (recorded by the report)
    ABORTED = "aborted"
    #: the device's own description ruled it out before any image byte was sent
    #: (a missing capability, too little RAM, a loader that needs another file)
    REFUSED = "refused"


def failure_reason(exc: Exception) -> FailureReason:
    """The counted reason for a failure a pipeline caught."""
    if isinstance(exc, DeviceRefused):
        return FailureReason.REFUSED
    if isinstance(exc, DeviceBootError):
        return FailureReason.DEVICE_STATUS
    if isinstance(exc, ProtocolError):
        return FailureReason.PROTOCOL
    if isinstance(exc, DeviceDisconnected):
        return FailureReason.DISCONNECTED
    if isinstance(exc, TransferTimeout):
        return FailureReason.TIMEOUT
    if isinstance(exc, TransferStall):
        return FailureReason.STALL
    return FailureReason.USB_ERROR


class Outcome(enum.StrEnum):
    """How a device's record ends, for counters and exit codes."""

    BOOTED = "booted"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    IN_PROGRESS = "in progress"


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """One try at booting a device (``--retries`` may make several)."""

    number: int
    #: None = the attempt booted the device.
    error: str | None
    #: Image bytes the device took during this attempt.
    bytes_sent: int
    seconds: float

@dataclass(frozen=True, slots=True)
class DeviceLog:
    """A Log packet the device sent (protocol.md, "Log packet")."""

    level: int
    event_id: int
    text: str

    @property
    def is_error(self) -> bool:
        return self.level <= 2


@dataclass(slots=True, eq=False, weakref_slot=True)
class DeviceRecord:
    """Everything known about one device during one boot attempt.

    Times are ``time.monotonic()`` values; ``wall_started`` is a wall-clock
    timestamp for the report.
    """

    slot: int
    port: str
    name: str = ""
    unique_id: str = ""
    state: DeviceState = DeviceState.FOUND
    bytes_total: int = 0
    bytes_done: int = 0
    started: float = field(default_factory=time.monotonic)
    wall_started: float = field(default_factory=time.time)
    stream_started: float | None = None
    #: When the last data transfer completed (the status wait is not streaming).
    stream_finished: float | None = None
    finished: float | None = None
    status: int | None = None
    error: str | None = None
    #: Set with ``error`` when the device fails; NONE while it has not failed.
    reason: FailureReason = FailureReason.NONE
    #: Which loader generation the host spoke to (a bounded metrics label).
    loader: str = "simpleio"
    #: SHA-256 of the file this device was sent (set by the engine before the
    #: record is finished, awaited off the event loop); None until then, and
    #: after a read failure or an interruption that came before the hash.
    image_sha256: str | None = None
    #: The file this device was sent (None before its loader chose one).
    image: ImageBuffer | None = field(default=None, repr=False)
    #: The first and the last Log packets (see :meth:`add_log`); ``logs_dropped`` counts the rest.
    logs: list[DeviceLog] = field(default_factory=list)
    logs_dropped: int = 0
    #: Earlier attempts that failed (``--retries``); the record's own fields are the last one.
    attempts: list[Attempt] = field(default_factory=list)
    #: Boot confirmation (``--confirm``): None = not asked for, else whether it was confirmed.
    confirmed: bool | None = None
    #: Seconds from the status to the confirmation (or to giving up).
    confirm_seconds: float | None = None

    @property
    def ok(self) -> bool:
        return self.state is DeviceState.BOOTED and self.confirmed is not False

    @property
    def outcome(self) -> Outcome:
        state = self.state
        if state is DeviceState.INTERRUPTED:
            return Outcome.INTERRUPTED
        if state is DeviceState.FAILED:
            return Outcome.FAILED
        if state is DeviceState.BOOTED:
            return Outcome.BOOTED if self.confirmed is not False else Outcome.FAILED
        return Outcome.IN_PROGRESS

    def add_log(self, log: DeviceLog) -> bool:
        """Keep ``log`` if it is among the first or the last ones; False = only counted."""
        logs = self.logs
        half = MAX_KEPT_LOGS // 2
        if len(logs) < MAX_KEPT_LOGS:
            logs.append(log)
            return True
        # Full: the oldest of the "last" half makes room; the first half stays.
        del logs[half]
        logs.append(log)
        self.logs_dropped += 1
        return True

    def elapsed(self, now: float | None = None) -> float:
        """Seconds since the device was found (frozen once it finished)."""
        end = self.finished if self.finished is not None else (now or time.monotonic())
        return max(0.0, end - self.started)

    def stream_seconds(self, now: float | None = None) -> float:
        """Seconds spent streaming SDI + WIM so far (0 before the stream)."""
        if self.stream_started is None:
            return 0.0
        end = self.stream_finished or self.finished or now or time.monotonic()
        return max(0.0, end - self.stream_started)

    def rate(self, now: float | None = None) -> float:
        """Average stream rate in bytes per second."""
        seconds = self.stream_seconds(now)
        return self.bytes_done / seconds if seconds > 0 else 0.0

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left at the current rate, or None when unknown."""
        if self.state.finished:
            return 0.0
        rate = self.rate(now)
        if rate <= 0 or self.bytes_total <= 0:
            return None
        return (self.bytes_total - self.bytes_done) / rate


class LineObserver(Protocol):
    """What the engine tells the presentation layers. Calls never block."""

    def device_added(self, record: DeviceRecord) -> None: ...

    def device_changed(self, record: DeviceRecord) -> None: ...

    def device_log(self, record: DeviceRecord, log: DeviceLog) -> None: ...

    def device_finished(self, record: DeviceRecord) -> None: ...


class NullObserver:
    """An observer that ignores everything (for API callers and benchmarks)."""

    def device_added(self, record: DeviceRecord) -> None:
        pass

    def device_changed(self, record: DeviceRecord) -> None:
        pass

    def device_log(self, record: DeviceRecord, log: DeviceLog) -> None:
        pass

    def device_finished(self, record: DeviceRecord) -> None:
        pass


class ObserverGroup:
    """Fans every call out to several observers (table + report, say).

    An observer that raises must not take the line down with it, but it
    must not be silent either: ``on_error(observer, exc)`` hears of it at
    once (the session stops the intake when the report cannot be written);
    without ``on_error`` the first error is kept and re-raised by
    :meth:`check` once the run is over.
    """

    def __init__(
        self,
        *observers: LineObserver,
        on_error: Callable[[LineObserver, BaseException], None] | None = None,
    ) -> None:
        self.observers = list(observers)
        self.error: BaseException | None = None
        self.on_error = on_error

    def _each(self, method: str, *args: object) -> None:
        for observer in self.observers:
            try:
                getattr(observer, method)(*args)
            except Exception as exc:  # isolated here, reported to on_error or check()
                if self.on_error is not None:
                    self.on_error(observer, exc)
                elif self.error is None:
                    self.error = exc

    def device_added(self, record: DeviceRecord) -> None:
        self._each("device_added", record)

    def device_changed(self, record: DeviceRecord) -> None:
        self._each("device_changed", record)

    def device_log(self, record: DeviceRecord, log: DeviceLog) -> None:
        self._each("device_log", record, log)

    def device_finished(self, record: DeviceRecord) -> None:
        self._each("device_finished", record)

    def check(self) -> None:
        """Re-raise the first error an observer raised, if any."""
        if self.error is not None:
            raise self.error
