"""The MQTT outbox: which results the broker has not acknowledged yet, kept on disk.

At-least-once delivery across a broker outage *and* a station restart needs
to know, at the next start, which results never got their PUBACK. The
results themselves are already on disk in the JSONL report (the record of
truth), so the outbox holds only pointers: one ``pending`` line per result
(record id, report path, and the fields that find its line again) and one
``acked`` line per acknowledgement. At start the unacknowledged results are
read back *from their report* and sent again; the file is then compacted.

The pending line is appended without ``fsync`` from the thread that wrote
the report line (a process killed with SIGKILL keeps it: it is in the page
cache), and the publisher thread ``fsync``s the outbox in the background so a
power cut loses at most the pointers of the last second.

One station process per outbox: the file is locked (``flock``); a second
process publishing as the same line and station is refused at start.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from .jsonl import append_json_line, read_report

__all__ = ("Outbox", "PendingResult")

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PendingResult:
    """A result the broker has not acknowledged: its id and where its record lives."""

    record_id: str
    report: str
    port: str
    slot: int
    started: str

    def matches(self, entry: dict[str, Any]) -> bool:
        return (
            entry.get("type") == "device"
            and entry.get("port") == self.port
            and entry.get("slot") == self.slot
            and entry.get("started") == self.started
        )


class Outbox:
    """An append-only journal of pending and acknowledged result ids (see module doc)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        directory = os.path.dirname(self.path) or "."
        try:
            os.makedirs(directory, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise InputError(f"cannot open MQTT outbox {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise InputError(
                f"MQTT outbox {self.path} is in use by another parallel-flash process "
                "(two stations publishing as the same --line and --station?)"
            ) from None
        self._fd: int | None = fd
        self._lock = threading.Lock()
        self._dirty = False

    # -- reading back ---------------------------------------------------------------

    def unacknowledged(self) -> list[PendingResult]:
        """Results recorded as pending and never acknowledged, oldest first."""
        with open(self.path, encoding="utf-8", errors="replace") as file:
            lines = file.read().splitlines()
        pending: dict[str, PendingResult] = {}
        for line in lines:
            try:
                item = json.loads(line)
                if "acked" in item:
                    pending.pop(str(item["acked"]), None)
                else:
                    result = PendingResult(
                        record_id=str(item["pending"]),
                        report=str(item["report"]),
                        port=str(item["port"]),
                        slot=int(item["slot"]),
                        started=str(item["started"]),
                    )
                    pending[result.record_id] = result
            except (ValueError, KeyError, TypeError):
                # A line cut short by a crash: the others still count.
                logger.warning("MQTT outbox %s: skipping a damaged line: %.80s", self.path, line)
        return list(pending.values())

    def recover(self) -> list[tuple[PendingResult, dict[str, Any]]]:
        """The unacknowledged results with their records, read back from their reports.

        A result whose report is gone or no longer holds its line cannot be
        sent again; each is named in a warning and dropped from the outbox.
        """
        found: list[tuple[PendingResult, dict[str, Any]]] = []
        by_report: dict[str, list[PendingResult]] = {}
        for result in self.unacknowledged():
            by_report.setdefault(result.report, []).append(result)
        for report, results in by_report.items():
            try:
                entries = read_report(report)
            except (OSError, InputError) as exc:
                for result in results:
                    logger.warning(
                        "MQTT outbox: result %s cannot be sent again: report %s unreadable: %s",
                        result.record_id, report, exc,
                    )
                continue
            for result in results:
                entry = next((e for e in reversed(entries) if result.matches(e)), None)
                if entry is None:
                    logger.warning(
                        "MQTT outbox: result %s cannot be sent again: not found in report %s",
                        result.record_id, report,
                    )
                else:
                    found.append((result, entry))
        self.compact(result for result, _ in found)
        return found

    def compact(self, still_pending: Iterable[PendingResult]) -> None:
        """Rewrite the journal as just the *still_pending* results."""
        with self._lock:
            fd = self._require_fd()
            os.ftruncate(fd, 0)
            for result in still_pending:
                self._append(fd, self._pending_line(result))
            os.fsync(fd)
            self._dirty = False

    # -- writing --------------------------------------------------------------------

    @staticmethod
    def _pending_line(result: PendingResult) -> dict[str, Any]:
        return {
            "pending": result.record_id,
            "report": result.report,
            "port": result.port,
            "slot": result.slot,
            "started": result.started,
        }

    def add(self, result: PendingResult) -> None:
        """Note a result as pending (before it is handed to the publisher)."""
        with self._lock:
            self._append(self._require_fd(), self._pending_line(result))

    def acknowledge(self, record_id: str) -> None:
        with self._lock:
            if self._fd is not None:
                self._append(self._fd, {"acked": record_id})

    def sync(self) -> None:
        """Put what was appended on disk (called off the engine's thread)."""
        with self._lock:
            if self._fd is not None and self._dirty:
                os.fsync(self._fd)
                self._dirty = False

    def close(self) -> None:
        with self._lock:
            if self._fd is None:
                return
            try:
                os.fsync(self._fd)
            finally:
                os.close(self._fd)  # releases the lock
                self._fd = None

    def _require_fd(self) -> int:
        if self._fd is None:
            raise ValueError(f"MQTT outbox {self.path} is closed")
        return self._fd

    def _append(self, fd: int, item: dict[str, Any]) -> None:
        # Whole lines only: a pointer cut short by a full disk is cut back, not glued
        # to the next one (which would lose both).
        append_json_line(fd, item, end=os.fstat(fd).st_size, sync=False)
        self._dirty = True
