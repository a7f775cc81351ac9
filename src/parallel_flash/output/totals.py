"""A line's running totals: counts and throughput, one rule for every view of them.

The live table's totals row, the plain summary line, the report's summary
record and the line's publishers all read :class:`LineTotals`, so they always
agree; :class:`LineTally` keeps the sums so finished records can be let go
(memory flat over a shift).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..engine.records import DeviceRecord, Outcome

__all__ = ("LineTally", "LineTotals", "line_totals")


@dataclass(frozen=True, slots=True)
class LineTotals:
    """Counts and throughput over all devices of a line at one instant.

    Shared by the live table's totals row, the plain summary line and the
    report's summary record, so the three always agree.
    """

    #: devices seen
    devices: int
    #: devices in :attr:`DeviceState.BOOTED`
    booted: int
    #: devices in :attr:`DeviceState.FAILED`
    failed: int
    #: devices not finished yet
    in_progress: int
    #: bytes streamed so far, all devices
    bytes_done: int
    #: bytes announced, all devices
    bytes_total: int
    #: first device found -> last device finished (or now)
    seconds: float
    #: first stream started -> last stream finished (or now)
    stream_seconds: float
    #: devices cut off by a signal (:attr:`DeviceState.INTERRUPTED`): not failures
    interrupted: int = 0

    @property
    def rate(self) -> float:
        """Aggregate stream rate, bytes per second."""
        return self.bytes_done / self.stream_seconds if self.stream_seconds > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        """Aggregate stream rate in MB/s (1 MB/s = 1e6 bytes per second)."""
        return self.rate / 1e6


class LineTally:
    """Running sums behind :class:`LineTotals`, so finished records can be let go.

    A station runs all shift: the report keeps this tally of the records it
    wrote instead of the records themselves (memory stays flat).
    """

    __slots__ = (
        "booted", "bytes_done", "bytes_total", "devices", "failed", "first_found",
        "first_stream", "interrupted", "last_end", "last_stream_end",
    )

    def __init__(self) -> None:
        self.devices = self.booted = self.failed = self.interrupted = 0
        self.bytes_done = self.bytes_total = 0
        self.first_found: float | None = None
        self.last_end: float | None = None
        self.first_stream: float | None = None
        self.last_stream_end: float | None = None

    def copy(self) -> LineTally:
        other = LineTally()
        for name in self.__slots__:
            setattr(other, name, getattr(self, name))
        return other

    def add(self, record: DeviceRecord, now: float) -> None:
        self.devices += 1
        outcome = record.outcome
        if outcome is Outcome.BOOTED:
            self.booted += 1
        elif outcome is Outcome.FAILED:
            self.failed += 1
        elif outcome is Outcome.INTERRUPTED:
            self.interrupted += 1
        self.bytes_done += record.bytes_done
        self.bytes_total += record.bytes_total
        if self.first_found is None or record.started < self.first_found:
            self.first_found = record.started
        end = record.finished if record.finished is not None else now
        if self.last_end is None or end > self.last_end:
            self.last_end = end
        if record.stream_started is not None:
            if self.first_stream is None or record.stream_started < self.first_stream:
                self.first_stream = record.stream_started
            # The status wait after the last transfer is not streaming time.
            stream_end = record.stream_finished or end
            if self.last_stream_end is None or stream_end > self.last_stream_end:
                self.last_stream_end = stream_end

    def totals(self) -> LineTotals:
        seconds = (
            max(0.0, self.last_end - self.first_found)
            if self.last_end is not None and self.first_found is not None
            else 0.0
        )
        stream_seconds = (
            max(0.0, self.last_stream_end - self.first_stream)
            if self.last_stream_end is not None and self.first_stream is not None
            else 0.0
        )
        return LineTotals(
            devices=self.devices,
            booted=self.booted,
            failed=self.failed,
            in_progress=self.devices - self.booted - self.failed - self.interrupted,
            bytes_done=self.bytes_done,
            bytes_total=self.bytes_total,
            seconds=seconds,
            stream_seconds=stream_seconds,
            interrupted=self.interrupted,
        )


def line_totals(
    records: Iterable[DeviceRecord], *, now: float, tally: LineTally | None = None
) -> LineTotals:
    """Sum up *records* (plus an earlier *tally*) at monotonic time *now* (O(devices))."""
    total = tally.copy() if tally is not None else LineTally()
    for record in records:
        total.add(record, now)
    return total.totals()
