"""The line's machine-readable record: one JSON object per device, then a summary.

Production lines keep these files as their records (field-notes.md, item 7),
so the report is written for a crash: each device's line is written and
flushed to disk (``fsync``) the moment that device finishes, so whatever
happens later -- another device wedging the host, Ctrl-C, a power cut --
loses no finished result. Devices that never finished get a record from
:meth:`JsonlReport.finish_unfinished` when the run is interrupted, and the
file ends with a ``{"type": "summary"}`` record.

An existing file is never overwritten: opening one raises
:class:`~parallel_flash.errors.InputError` unless ``append=True`` (the CLI's
``--append``), in which case the new run's records follow the old ones.

A station writes all shift, so the report can be rotated without a restart,
at record boundaries only (a record is never split between files):

* a path holding ``%`` directives is a :func:`time.strftime` pattern in
  local time (``/var/log/pf/%Y-%m-%d.jsonl``: a file per day); when its
  value changes, the next record starts the new file;
* :meth:`JsonlReport.request_reopen` (SIGUSR1, as nginx): logrotate has
  moved the file, the report is reopened at the same path.

The file left behind is closed with a summary of its own device records
marked ``"continued": true`` (the run goes on in the next file), so each
file reads as a whole. Every new file passes the same checks as the first
(a regular file, not an input, an existing one only with ``append``); one
that cannot be used is named in an error and the records stay in the file
in use -- nothing is lost, and the rotation is tried again at the next record.

Units: ``bytes`` are bytes; ``seconds`` are seconds; ``mb_per_s`` is
decimal megabytes per second, 1 MB/s = 1,000,000 bytes per second (the unit
USB bandwidth figures use: 480 Mbit/s = 60 MB/s).

JSON is written ASCII-only (``ensure_ascii``), so a device name holding an
escape sequence is stored as ``\\u001b`` and ``cat``-ing the report cannot
drive the terminal.

This module is an observer (engine/records.py); it imports nothing from the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import re
import socket
import stat
import sys
import time
import weakref
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from .._version import __version__
from ..engine.records import DeviceLog, DeviceRecord, FailureReason
from ..errors import InputError
from ..formats import check_output_path
from .jsonl import append_json_line as append_json_line
from .jsonl import read_report as read_report
from .names import default_station
from .totals import LineTally as LineTally
from .totals import LineTotals as LineTotals
from .totals import line_totals as line_totals

__all__ = (
    "MAX_LOGS_PER_DEVICE",
    "SCHEMA_VERSION",
    "JsonlReport",
    "LineTally",
    "LineTotals",
    "append_json_line",
    "default_station",
    "device_entry",
    "expand_report_path",
    "line_totals",
    "read_report",
)

logger = logging.getLogger(__name__)

#: Error logs kept per device in its record. A device may send Log packets
#: without end; the record must stay one readable line.
MAX_LOGS_PER_DEVICE = 100

_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def _check_sha256(text: str) -> str:
    if not _SHA256_RE.fullmatch(text):
        raise ValueError(f"image_sha256 must be 64 lowercase hex digits, got {text!r}")
    return text
#: ``--report -``: the records go to standard output.
STDOUT_REPORT = "-"

#: Version of the record layout (schemas/record.schema.json): raised only when a
#: field is removed, renamed or changes meaning; new fields come within a version.
SCHEMA_VERSION = 1


def expand_report_path(path: str, wall: float) -> str:
    """The file a report *path* names at wall-clock time *wall* (a strftime pattern or a name).

    ``%`` directives are expanded in local time (``%%`` is a literal ``%``);
    a path without ``%`` is returned as it is.

    :raises ~parallel_flash.errors.InputError: the pattern cannot be expanded
        or expands to nothing
    """
    if "%" not in path:
        return path
    try:
        name = time.strftime(path, time.localtime(wall))
    except (ValueError, OverflowError) as exc:
        raise InputError(f"report pattern {path!r}: not a strftime pattern ({exc})") from None
    if not name or name.endswith(os.sep):
        raise InputError(f"report pattern {path!r}: expands to {name!r}, not a file name")
    return name


def _iso(wall: float) -> str:
    return dt.datetime.fromtimestamp(wall, dt.UTC).isoformat(timespec="milliseconds")


def _log_entry(log: DeviceLog) -> dict[str, Any]:
    return {"level": log.level, "event_id": log.event_id, "text": log.text}


def device_entry(
    record: DeviceRecord,
    *,
    image_sha256: str | None,
    now: float,
    error: str | None = None,
    reason: FailureReason | None = None,
) -> dict[str, Any]:
    """The ``{"type": "device"}`` record for *record* at monotonic time *now*.

    *error* and *reason* override the record's own (used for devices that
    were interrupted before they finished).
    """
    stream_seconds = record.stream_seconds(now)
    error_logs = [log for log in record.logs if log.is_error]
    entry: dict[str, Any] = {
        "type": "device",
        "port": record.port,
        "slot": record.slot,
        "name": record.name,
        "unique_id": record.unique_id,
        "state": record.state.value,
        "ok": record.ok,
        "bytes": record.bytes_done,
        "bytes_total": record.bytes_total,
        "seconds": round(record.elapsed(now), 3),
        "stream_seconds": round(stream_seconds, 3),
        "mb_per_s": round(record.bytes_done / stream_seconds / 1e6, 3) if stream_seconds else 0.0,
        "status": record.status,
        "error": error if error is not None else record.error,
        "reason": (reason or record.reason).value,
        "loader": record.loader,
        "image_sha256": image_sha256,
        "started": _iso(record.wall_started),
        "finished": _iso(record.wall_started + record.elapsed(now)),
        "logs": [_log_entry(log) for log in error_logs[:MAX_LOGS_PER_DEVICE]],
    }
    dropped = max(0, len(error_logs) - MAX_LOGS_PER_DEVICE) + record.logs_dropped
    if dropped:
        entry["logs_dropped"] = dropped
    if record.attempts:
        entry["attempts"] = [
            {"attempt": a.number, "error": a.error, "bytes": a.bytes_sent, "seconds": a.seconds}
            for a in record.attempts
        ]
    if record.confirmed is not None:
        entry["confirmed"] = record.confirmed
        entry["confirm_seconds"] = record.confirm_seconds
    return entry


class JsonlReport:
    """A :class:`~parallel_flash.events.LineObserver` writing the JSON-lines report.

    Use :meth:`open` (a context manager): records are written in
    :meth:`device_finished`; leaving the ``with`` block because of an
    exception (Ctrl-C included) writes the unfinished devices as
    ``"interrupted"`` and then the summary. The file rotates at record
    boundaries (module doc): :attr:`path` is the file being written now,
    :attr:`pattern` what the caller gave.
    """

    def __init__(
        self,
        fd: int,
        path: str,
        *,
        wim: str,
        sdi: str | None,
        image_sha256: str | Callable[[], str | None],
        image_bytes: int,
        clock: Callable[[], float] = time.monotonic,
        station: str | None = None,
        pattern: str | None = None,
        append: bool = False,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._fd: int | None = fd
        self._durable = True  #: fsync after each record (not on a pipe or terminal)
        #: on every record, with the schema and tool versions and the host
        self.station = station or default_station()
        self.host = socket.gethostname()
        #: the file written now (a pattern's current value)
        self.path = path
        #: the path or strftime pattern the report was opened with
        self.pattern = pattern if pattern is not None else path
        self.append = append
        self.wim = wim
        self.sdi = sdi
        self._image_sha256: str | Callable[[], str | None] | None = image_sha256
        self.image_bytes = image_bytes
        self._clock = clock
        self._wall_clock = wall_clock
        self._wall_opened = wall_clock()
        #: Records added and not written yet (written ones are let go).
        self.records: list[DeviceRecord] = []
        self._written: weakref.WeakSet[DeviceRecord] = weakref.WeakSet()
        #: the device records of the current file, for its summary
        self._tally = LineTally()
        self.interrupted = False
        #: Called with each device entry right after its line is on disk
        #: (publishers: a result is only announced once it is on record).
        self.on_record: list[Callable[[dict[str, Any]], None]] = []
        #: The error of the write that failed; no write is tried after it.
        self.failed: OSError | None = None
        self._size = os.fstat(fd).st_size
        #: set by :meth:`request_reopen` (a signal handler): reopen at the next boundary
        self._reopen_requested = False
        #: the new file last refused, so the error is said once, not at every record
        self._refused: str | None = None
        #: every file this report has written to, in order
        self.files: list[str] = [path]

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        wim: str | os.PathLike[str],
        sdi: str | os.PathLike[str] | None,
        image_sha256: str | Callable[[], str | None],
        image_bytes: int,
        append: bool = False,
        clock: Callable[[], float] = time.monotonic,
        station: str | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> JsonlReport:
        """Create the report file at *path* (or append to it with *append*).

        :param path: a file, ``-`` (standard output), or a strftime pattern
            (``%`` directives, local time): a new file whenever its value changes
        :param wim: the WIM (or .secwim) path, recorded in the summary
        :param sdi: the SDI path, or None for a .secwim that holds its own
        :param image_sha256: SHA-256 (hex) of SDI + WIM as sent to devices, or a
            function that returns it once known and None until then, asked
            when a record needs it (the image is hashed in the background
            while devices stream; the report never waits for it)
        :param image_bytes: SDI + WIM length in bytes
        :param station: the station's name on every record (default: the host name)
        :param wall_clock: the time a pattern is expanded with (a seam for tests)
        :raises ~parallel_flash.errors.InputError: if *path* exists and
            *append* is false, or the file cannot be opened
        """
        name = os.fspath(path)
        if isinstance(image_sha256, str):
            _check_sha256(image_sha256)
        if name == STDOUT_REPORT:
            return cls._on_stdout(wim, sdi, image_sha256, image_bytes, clock, station)
        inputs = [os.fspath(p) for p in (wim, sdi) if p is not None]
        current = expand_report_path(name, wall_clock())
        fd = _open_report_file(current, inputs=inputs, append=append)
        logger.debug("report %s opened (append=%s)", current, append)
        return cls(
            fd,
            current,
            wim=os.fspath(wim),
            sdi=os.fspath(sdi) if sdi is not None else None,
            image_sha256=image_sha256,
            image_bytes=image_bytes,
            clock=clock,
            station=station,
            pattern=name,
            append=append,
            wall_clock=wall_clock,
        )

    @classmethod
    def _on_stdout(
        cls,
        wim: str | os.PathLike[str],
        sdi: str | os.PathLike[str] | None,
        image_sha256: str | Callable[[], str | None],
        image_bytes: int,
        clock: Callable[[], float],
        station: str | None,
    ) -> JsonlReport:
        """``--report -``: the records go to standard output (a duplicate of fd 1)."""
        sys.stdout.flush()
        fd = os.dup(sys.stdout.fileno())
        report = cls(
            fd,
            STDOUT_REPORT,
            wim=os.fspath(wim),
            sdi=os.fspath(sdi) if sdi is not None else None,
            image_sha256=image_sha256,
            image_bytes=image_bytes,
            clock=clock,
            station=station,
        )
        # fsync is for files; a pipe or terminal has nothing to sync (EINVAL).
        report._durable = stat.S_ISREG(os.fstat(fd).st_mode)
        return report

    # -- rotation ------------------------------------------------------

    @property
    def rotates(self) -> bool:
        """True when the report is a strftime pattern (a new file when its value changes)."""
        return "%" in self.pattern and self.path != STDOUT_REPORT

    def request_reopen(self) -> None:
        """Reopen the file at its path before the next record (safe in a signal handler).

        For logrotate: it moves the file, then signals; the records after
        that go to a new file at the same path. :meth:`rotate` does it at once.
        """
        self._reopen_requested = True

    def rotate(self) -> bool:
        """Start the next file now if a reopen was asked for or the pattern moved on.

        Called before each device record; returns True when a new file was
        started. Never raises: a new file that cannot be used is named in an
        error and the records stay in the current one.
        """
        if self._fd is None or self.failed is not None or self.path == STDOUT_REPORT:
            self._reopen_requested = False
            return False
        reopen, self._reopen_requested = self._reopen_requested, False
        target = self.path
        if self.rotates:
            try:
                target = expand_report_path(self.pattern, self._wall_clock())
            except InputError as exc:  # cannot happen for a pattern that expanded once
                logger.error("%s; records stay in %s", exc, self.path)
                return False
        if target == self.path and (not reopen or self._still_in_place()):
            return False
        return self._switch_to(target, reopen=reopen and target == self.path)

    def _still_in_place(self) -> bool:
        """True if the path still names the open file (a reopen then has nothing to do)."""
        assert self._fd is not None
        try:
            same = os.path.samestat(os.stat(self.path), os.fstat(self._fd))
        except OSError:
            return False
        if same:
            logger.info("report %s: still in place, nothing to reopen", self.path)
        return same

    def _switch_to(self, name: str, *, reopen: bool) -> bool:
        """Open *name*, close the current file with its summary, carry on in *name*."""
        assert self._fd is not None
        old_fd, old_path = self._fd, self.path
        try:
            # A reopen continues the same report: a file at the path is one logrotate's
            # ``create`` made for us. A pattern's new file follows --append like the first.
            fd = _open_report_file(name, inputs=self._inputs(), append=self.append or reopen)
        except InputError as exc:
            if self._refused != name:
                logger.error("%s; the records stay in %s", exc, old_path)
            self._refused = name
            return False
        self._refused = None
        try:
            self._write(self.summary_entry(continued=True))
        except OSError as exc:
            # That file's device records are whole (a failed write is cut back);
            # only its summary is missing. The new file is another disk's matter.
            logger.warning("report %s: its closing summary was not written: %s", old_path, exc)
            self.failed = None
        with contextlib.suppress(OSError):
            os.close(old_fd)
        self._fd, self.path = fd, name
        self._size = os.fstat(fd).st_size
        self._tally = LineTally()
        self._wall_opened = self._wall_clock()
        self.files.append(name)
        why = "reopened" if reopen else "rotated"
        logger.info("report %s: %s; records continue in %s", old_path, why, name)
        return True

    def _inputs(self) -> list[str]:
        return [path for path in (self.wim, self.sdi) if path is not None]

    @property
    def image_sha256(self) -> str | None:
        """The image's SHA-256 if it is known; never waits for the hash.

        Given as a callable, it is asked again until it answers (the image is
        hashed in the background). None while it is not known, and for good
        when the image could not be read (a disk error mid-run): the records
        are still written, every device's saying why it failed.
        """
        if callable(self._image_sha256):
            try:
                digest = self._image_sha256()
            except InputError as exc:
                logger.warning("report %s: no image SHA-256: %s", self.path, exc)
                self._image_sha256 = None
                return None
            if digest is None:
                return None
            self._image_sha256 = _check_sha256(digest)
        return self._image_sha256

    def _digest_for(self, record: DeviceRecord) -> str | None:
        """The digest of the file *record*'s device was sent; never waits.

        The engine awaits it (off the event loop) before a device ends, so
        only a record that ended before its file was hashed -- interrupted,
        or the file could not be read -- finds none, and says null.
        """
        if record.image_sha256 is not None:
            return record.image_sha256
        if record.image is not None:
            return record.image.sha256_if_known()
        return self.image_sha256

    # -- writing -------------------------------------------------------

    def _stamped(self, entry: dict[str, Any]) -> dict[str, Any]:
        """*entry* with what every record carries: schema, tool version, station, host."""
        return {
            "type": entry["type"],
            "schema_version": SCHEMA_VERSION,
            "version": __version__,
            "station": self.station,
            "host": self.host,
            **entry,
        }

    def _write(self, entry: dict[str, Any]) -> None:
        """Append one line and put it on disk; a failure leaves no partial line behind.

        :raises OSError: the write or the fsync failed (full disk, I/O error);
            the file is cut back to its last complete line and the report
            refuses further writes (:attr:`failed`).
        """
        if self._fd is None:
            raise ValueError(f"report {self.path} is closed")
        if self.failed is not None:
            raise OSError(self.failed.errno, f"report already failed: {self.failed.strerror}")
        try:
            # fsync puts the line on disk so a crash or power cut loses no finished device.
            self._size = append_json_line(
                self._fd, entry, end=self._size, sync=self._durable, write=self._write_fd
            )
        except OSError as exc:
            self.failed = exc
            logger.error("report %s: write failed: %s", self.path, exc.strerror or exc)
            raise

    #: The write call (a seam for tests injecting a full disk at the file layer).
    _write_fd = staticmethod(os.write)

    def write_device(
        self,
        record: DeviceRecord,
        *,
        error: str | None = None,
        reason: FailureReason | None = None,
    ) -> bool:
        """Write *record*'s line now, once; returns False if it was written already.

        A written record is let go (the file is the history; :class:`LineTally`
        keeps the sums for the summary), so memory stays flat over a shift.
        """
        if record in self._written:
            return False
        self.rotate()
        now = self._clock()
        entry = device_entry(
            record, image_sha256=self._digest_for(record), now=now, error=error, reason=reason
        )
        entry = self._stamped(entry)
        self._write(entry)
        self._written.add(record)
        self._tally.add(record, now)
        with contextlib.suppress(ValueError):
            self.records.remove(record)
        for listener in self.on_record:
            listener(entry)
        return True

    def finish_unfinished(
        self,
        records: Sequence[DeviceRecord] | None = None,
        *,
        reason: FailureReason = FailureReason.INTERRUPTED,
        error: str | None = None,
    ) -> int:
        """Write a record for every device that has none yet; returns how many.

        Called on Ctrl-C (and by ``__exit__`` on any exception) so a device
        cut off mid-stream still appears in the report: its ``state`` says
        where it stopped, ``ok`` is false, ``reason`` is *reason* and ``error``
        is *error* (default: the reason's own word). The records themselves
        are not changed (the engine owns them).
        """
        count = 0
        text = error or reason.value
        pending = list(self.records)
        if records is not None:
            pending += [record for record in records if record not in pending]
        for record in pending:
            if record in self._written:
                continue
            if record.state.finished:
                self.write_device(record)
            else:
                self.write_device(record, error=text, reason=reason)
            count += 1
        if count and reason is FailureReason.INTERRUPTED:
            self.interrupted = True
        return count

    def summary_entry(self, *, continued: bool = False) -> dict[str, Any]:
        """The ``{"type": "summary"}`` record of the current file's device records.

        *continued*: the run goes on in another file (rotation), so the
        devices under way are not this file's; they are counted where their
        records land.
        """
        pending = () if continued else self.records
        totals = line_totals(pending, now=self._clock(), tally=self._tally)
        summary = {
            "type": "summary",
            "devices": totals.devices,
            "booted": totals.booted,
            "failed": totals.failed,
            "interrupted_devices": totals.interrupted,
            "unfinished": totals.in_progress,
            "interrupted": self.interrupted and not continued,
            "continued": continued,
            "seconds": round(totals.seconds, 3),
            "stream_seconds": round(totals.stream_seconds, 3),
            "mb_per_s": round(totals.mb_per_s, 3),
            "bytes": totals.bytes_done,
            "bytes_total": totals.bytes_total,
            "image_sha256": self.image_sha256,
            "image_bytes": self.image_bytes,
            "wim": self.wim,
            "sdi": self.sdi,
            "version": __version__,
            "started": _iso(self._wall_opened),
            "finished": _iso(self._wall_clock()),
        }
        return self._stamped(summary)

    def close(self, *, interrupted: bool | None = None) -> None:
        """Write the summary record and close the file (idempotent).

        After a failed write no summary is attempted: the records that
        reached the disk stay as they are.
        """
        if self._fd is None:
            return
        if interrupted is not None:
            self.interrupted = self.interrupted or interrupted
        try:
            if self.failed is None:
                self._write(self.summary_entry())
        finally:
            self.abandon()
        logger.debug("report %s closed", self.path)

    def abandon(self) -> None:
        """Close the file without writing anything more (idempotent)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    @property
    def closed(self) -> bool:
        return self._fd is None

    def __enter__(self) -> JsonlReport:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is None:
            return
        if exc is None:
            self.close()
            return
        try:
            if isinstance(exc, KeyboardInterrupt | asyncio.CancelledError):
                self.finish_unfinished()
            else:
                self.finish_unfinished(
                    reason=FailureReason.ABORTED,
                    error=f"run aborted: {type(exc).__name__}: {exc}",
                )
        finally:
            self.close(interrupted=True)

    # -- LineObserver --------------------------------------------------

    def device_added(self, record: DeviceRecord) -> None:
        if record not in self.records and record not in self._written:
            self.records.append(record)

    def device_changed(self, record: DeviceRecord) -> None:
        pass

    def device_log(self, record: DeviceRecord, log: DeviceLog) -> None:
        pass

    def device_finished(self, record: DeviceRecord) -> None:
        if not self.write_device(record):
            logger.warning("%s: finished twice; report keeps the first record", record.port)


def _open_report_file(name: str, *, inputs: Sequence[str], append: bool) -> int:
    """Open (or create) one report file for appending; every rule of an output applies.

    :raises ~parallel_flash.errors.InputError: not a regular file, one of
        *inputs*, an existing file without *append*, or it cannot be opened
    """
    check_output_path(name, what="report file", inputs=inputs, overwrite=True, check_parent=False)
    # O_NONBLOCK: a FIFO swapped in after the check fails at once (ENXIO)
    # instead of waiting for a reader; a regular file ignores it.
    flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not append:
        flags |= os.O_EXCL
    try:
        fd = os.open(name, flags, 0o644)
    except FileExistsError:
        raise InputError(
            f"report file {name} already exists; pass --append to add this run's "
            "records to it, or choose another file"
        ) from None
    except OSError as exc:
        raise InputError(f"cannot open report file {name}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputError(f"report file {name}: is not a regular file (nothing was written)")
        size = os.fstat(fd).st_size
        # A run that died mid-line left no newline: start on a fresh line
        # so every complete record stays parseable.
        if size and os.pread(fd, 1, size - 1) != b"\n":
            os.write(fd, b"\n")
    except OSError as exc:
        os.close(fd)
        raise InputError(f"cannot use report file {name}: {exc.strerror}") from None
    except BaseException:
        os.close(fd)
        raise
    return fd
