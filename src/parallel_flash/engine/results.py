"""What a run produced: its records, its counters by outcome, why it stopped.

Plain data shared by the one-shot run, the demo and station mode (and by the
session and the CLI that report on them).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from .records import DeviceRecord, Outcome

__all__ = ("LineCounters", "LineResult", "StopReason", "Unopened")


class StopReason(enum.Enum):
    """Why a run ended before its devices did (None in :class:`LineResult` = it did not)."""

    #: Ctrl-C: the operator interrupted the run (exit 130).
    INTERRUPT = "interrupted (SIGINT)"
    #: SIGTERM: the end of a shift (systemd stop); a normal end.
    TERMINATE = "end of shift (SIGTERM)"
    #: SIGHUP: the terminal or SSH session closed; a normal end.
    HANGUP = "terminal closed (SIGHUP)"
    #: The report could not be written: no new device was started.
    REPORT_FAILED = "the report could not be written"


@dataclass(frozen=True, slots=True)
class LineCounters:
    """The run so far, by outcome (what the operator's summary line says)."""

    booted: int = 0
    failed: int = 0
    interrupted: int = 0
    in_progress: int = 0
    #: Image bytes sent to every device counted, finished or not.
    bytes_sent: int = 0

    @property
    def total(self) -> int:
        return self.booted + self.failed + self.interrupted + self.in_progress

    def plus(self, record: DeviceRecord) -> LineCounters:
        """These counters with one more (finished) record."""
        outcome = record.outcome
        return LineCounters(
            booted=self.booted + (outcome is Outcome.BOOTED),
            failed=self.failed + (outcome is Outcome.FAILED),
            interrupted=self.interrupted + (outcome is Outcome.INTERRUPTED),
            in_progress=self.in_progress + (outcome is Outcome.IN_PROGRESS),
            bytes_sent=self.bytes_sent + record.bytes_done,
        )

    @classmethod
    def of(cls, records: Sequence[DeviceRecord]) -> LineCounters:
        """Counted from the records (the engine may append while this runs)."""
        counters = cls()
        for record in list(records):
            counters = counters.plus(record)
        return counters


@dataclass(slots=True)
class LineResult:
    """What a run produced: one-shot, demo and station alike."""

    #: Records still held (a station drops finished ones: the report is the history).
    records: list[DeviceRecord] = field(default_factory=list)
    stop: StopReason | None = None
    #: Counters over every device of the run, including records no longer held
    #: (kept by a station); None = count :attr:`records`.
    counters: LineCounters | None = None
    #: What went wrong with the report, if anything did.
    report_error: str | None = None

    @property
    def totals(self) -> LineCounters:
        if self.counters is not None:
            return self.counters
        return LineCounters.of(self.records)

    @property
    def interrupted(self) -> bool:
        return self.stop is not None

    @property
    def booted(self) -> int:
        return self.totals.booted

    @property
    def failed(self) -> int:
        return self.totals.failed

    @property
    def all_booted(self) -> bool:
        totals = self.totals
        return totals.total > 0 and totals.booted == totals.total


@dataclass(frozen=True, slots=True)
class Unopened:
    """A device that was found but could not be opened: it still gets a record."""

    port: str
    reason: str
