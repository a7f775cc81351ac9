"""Plain line-by-line output for when stdout is not a terminal (a log file, CI, a pipe).

Modelled on what Microsoft's ffutool prints for ``-WIM``::

    Found device:
      Name: Contoso.MSM8960.JD301_ATT.3.2.1
      ID: 00000011-f151-a509-0000-000000000000
    Booting WIM: C:\\images\\boot.wim
    WIM transfer completed in 12 seconds.

ffutool talks to one device at a time; here many devices interleave, so
every per-device line starts with the device's port (``1-1.4: ...``) and
each device's lines can be pulled out with ``grep``. Progress is reported in
coarse steps (every 25 % by default) so a log of 256 devices stays readable.
Quiet (``-q``) keeps what someone must act on: each failed or interrupted
device as it ends, then the summary and the recap of the failures.

The engine only calls observers on state changes; byte counts move without
a call. Progress steps are therefore checked on every call *and* by a small
polling thread (while used as a context manager), which reads the records
the same way the live table's refresh thread does.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

from ...engine.records import DeviceLog, DeviceRecord, DeviceState
from ...errors import status_text
from ._text import failure_reason, format_mb, printable
from ._view import LineView

__all__ = ("PlainOutput",)


def _seconds(value: float) -> str:
    """One decimal, as ffutool prints, but never a bare 0.0 for a short transfer."""
    return f"{value:.1f}" if value >= 1 else f"{value:.2f}"


class _Seen:
    """What has been printed for one device already."""

    __slots__ = ("booting", "completed", "found", "step")

    def __init__(self) -> None:
        self.found = False
        self.booting = False
        self.completed = False
        self.step = 0


class PlainOutput:
    """A :class:`~parallel_flash.events.LineObserver` printing plain text lines.

    :param wim: the image path, printed as ``Booting WIM: <wim>``
    :param stream: where lines go (default ``sys.stdout``); flushed per line
    :param step: progress is printed every *step* percent (1..100)
    :param poll_interval: seconds between progress checks of the polling
        thread run inside ``with``; None for no thread
    :param quiet: only the devices that did not boot, the summary and the recap
    """

    def __init__(
        self,
        wim: str | os.PathLike[str],
        *,
        stream: TextIO | None = None,
        step: int = 25,
        poll_interval: float | None = 0.5,
        clock: Callable[[], float] = time.monotonic,
        quiet: bool = False,
    ) -> None:
        if not 1 <= step <= 100:
            raise ValueError(f"progress step must be 1..100 percent, not {step}")
        self.wim = os.fspath(wim)
        self.stream = stream if stream is not None else sys.stdout
        self.step = step
        self.poll_interval = poll_interval if not quiet else None
        self.quiet = quiet
        #: what the summary is drawn from (bounded over a shift)
        self.view = LineView(clock=clock)
        self.interrupted = False
        self._clock = clock
        self._seen: dict[DeviceRecord, _Seen] = {}
        # Observer calls come from the event loop, polls from our thread.
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- output ------------------------------------------------------------------

    def _progress_line(self, record: DeviceRecord, *lines: str) -> None:
        """A line about a device on its way (found, streaming, a step): none when quiet."""
        if not self.quiet:
            self._emit(record, *lines)

    def _emit(self, record: DeviceRecord | None, *lines: str) -> None:
        prefix = f"{printable(record.port)}: " if record is not None else ""
        self.stream.write("".join(f"{prefix}{line}\n" for line in lines))
        self.stream.flush()

    def _seen_for(self, record: DeviceRecord) -> _Seen:
        seen = self._seen.get(record)
        if seen is None:
            seen = self._seen[record] = _Seen()
        return seen

    def _catch_up(self, record: DeviceRecord) -> None:
        """Print whatever this device has reached and not been printed yet."""
        seen = self._seen_for(record)
        if not seen.found and (record.name or record.unique_id):
            seen.found = True
            self._progress_line(
                record,
                "Found device:",
                f"  Name: {printable(record.name)}",
                f"  ID: {printable(record.unique_id)}",
            )
        streaming = record.stream_started is not None or record.state in (
            DeviceState.SENDING_SDI,
            DeviceState.SENDING_WIM,
            DeviceState.AWAITING_STATUS,
        )
        if not seen.booting and streaming:
            seen.booting = True
            self._progress_line(record, f"Booting WIM: {printable(self.wim)}")
        self._progress(record, seen)
        if (
            not seen.completed
            and record.stream_finished is not None
            and record.bytes_total
            and record.bytes_done >= record.bytes_total
        ):
            seen.completed = True
            seconds = record.stream_seconds()
            self._progress_line(
                record, f"WIM transfer completed in {_seconds(seconds)} seconds."
            )

    def _progress(self, record: DeviceRecord, seen: _Seen) -> None:
        total = record.bytes_total
        if total <= 0 or record.stream_started is None:
            return
        percent = min(100, record.bytes_done * 100 // total)
        step = percent // self.step * self.step
        if step > seen.step:
            seen.step = step
            now = self._clock()
            self._progress_line(
                record,
                f"{step}% ({format_mb(record.bytes_done)} of {format_mb(total)} MB, "
                f"{format_mb(record.rate(now))} MB/s)",
            )

    def poll(self) -> None:
        """Print progress steps reached since the last call (thread-safe)."""
        with self._lock:
            for record in self.view.active:
                if not record.state.finished:
                    self._progress(record, self._seen_for(record))

    def summary(self) -> str:
        """The closing line: counts and aggregate throughput (MB = 1e6 bytes)."""
        totals = self.view.snapshot(self._clock()).totals
        text = (
            f"Summary: {totals.devices} device{'' if totals.devices == 1 else 's'}, "
            f"{totals.booted} booted, "
            f"{totals.failed} failed"
        )
        if totals.interrupted:
            text += f", {totals.interrupted} interrupted"
        if totals.in_progress:
            text += f", {totals.in_progress} unfinished"
        text += (
            f"; {format_mb(totals.bytes_done)} MB sent in {_seconds(totals.seconds)} seconds, "
            f"{format_mb(totals.rate)} MB/s aggregate"
        )
        if self.interrupted:
            text += " (interrupted)"
        return text + "."

    def recap(self) -> list[str]:
        """Every failed device (port, name, ID, reason): what the operator acts on."""
        failures = self.view.snapshot(self._clock()).failures
        if not failures:
            return []
        lines = [f"Failed devices ({len(failures)}):"]
        for failure in failures:
            lines.append(
                f"  {printable(failure.port)}  {printable(failure.name) or '-'}  "
                f"{printable(failure.unique_id) or '-'}  {failure.reason}"
            )
        return lines

    # -- LineObserver --------------------------------------------------------------

    def device_added(self, record: DeviceRecord) -> None:
        with self._lock:
            self.view.device_added(record)
            self._seen_for(record)

    def device_changed(self, record: DeviceRecord) -> None:
        with self._lock:
            if record.state.finished and record not in self._seen:
                return  # a late call for a device already finished and forgotten
            self._catch_up(record)

    def device_log(self, record: DeviceRecord, log: DeviceLog) -> None:
        if not log.is_error or self.quiet:  # the record keeps them
            return
        with self._lock:
            self._emit(
                record,
                f"Device log (level {log.level}, event {log.event_id}): {printable(log.text)}",
            )

    def device_finished(self, record: DeviceRecord) -> None:
        with self._lock:
            self._catch_up(record)
            self.view.device_finished(record)
            self._seen.pop(record, None)  # nothing more to print for it
            if record.state is DeviceState.BOOTED:
                status = f" ({status_text(record.status)})" if record.status is not None else ""
                self._progress_line(
                    record, f"Booted{status} in {_seconds(record.elapsed())} seconds."
                )
            elif record.state is DeviceState.INTERRUPTED:
                self._emit(record, f"INTERRUPTED: {printable(record.error or 'interrupted')}")
            else:
                self._emit(record, f"FAILED: {failure_reason(record)}")

    # -- lifetime --------------------------------------------------------------------

    def _poll_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.poll()

    def __enter__(self) -> PlainOutput:
        if self.poll_interval is not None and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._poll_loop,
                args=(self.poll_interval,),
                name="parallel-flash-plain-progress",
                daemon=True,
            )
            self._thread.start()
        return self

    def close(self, *, interrupted: bool = False) -> None:
        """Stop polling and print the summary line and the failures (once).

        :param interrupted: the run was cut short (Ctrl-C); said in the summary
        """
        self.interrupted = self.interrupted or interrupted
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._emit(None, self.summary(), *self.recap())

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(interrupted=isinstance(exc, KeyboardInterrupt))
