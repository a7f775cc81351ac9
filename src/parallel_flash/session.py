"""One run of a line, wired: report, presentation and signals around the engine.

This is the one place that does it, for one-shot ``boot`` (simulated or on
USB), ``demo`` and station mode alike:

* the report is opened before any device is touched (bad path: InputError,
  nothing contacted) and every finished device is on disk before the next
  one ends; a write that fails is loud at once: no new device starts, the
  ones under way finish, the operator is told on screen and in the log, and
  the run ends with :attr:`~parallel_flash.engine.StopReason.REPORT_FAILED`
  (the records that reached the disk stay intact, without a truncated line);
* signals: the first SIGINT, SIGTERM or SIGHUP cancels every device under
  way (each recorded as interrupted) and the run ends with that
  :class:`~parallel_flash.engine.StopReason`; a second one while the records
  are written only says so; a third exits at once (status 128 + signal) with
  what is on disk. Never a traceback. SIGUSR1 reopens the report file at its
  path before the next record (logrotate, as for nginx), and ends nothing.

Exit codes are the CLI's business: :class:`~parallel_flash.engine.LineResult`
carries the facts (counters, stop reason, report error).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

import anyio

from .engine.digest import image_digest
from .engine.pipeline import BootOptions, LineResult, StopReason, Unopened, boot_line
from .engine.records import LineObserver, ObserverGroup
from .image import ImageBuffer, ImageSet, primary_image
from .output.line import LineOptions
from .output.report import STDOUT_REPORT
from .transport.base import Link
from .transport.sim_limits import USB2_DEVICE_RATE

if TYPE_CHECKING:
    from .output.line_integration import LineIntegration
    from .output.ui import LiveTable
    from .protocol.models import AnyFaults
    from .transport.sim import SimLink

__all__ = (
    "LinkSource",
    "Presentation",
    "SignalGuard",
    "SimulatedLine",
    "run_boot",
    "run_usb",
)

logger = logging.getLogger(__name__)

#: Opens the devices to boot and closes whatever is left at the end.
LinkSource = Callable[[], AbstractAsyncContextManager[Sequence[Link | Unopened]]]

#: Reopen the report file (logrotate's postrotate: ``kill -USR1``).
REOPEN_SIGNAL = signal.SIGUSR1

_STOP_BY_SIGNAL = {
    signal.SIGINT: StopReason.INTERRUPT,
    signal.SIGTERM: StopReason.TERMINATE,
    signal.SIGHUP: StopReason.HANGUP,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulatedLine:
    """A :data:`LinkSource` for ``count`` simulated devices (``boot --sim``, ``demo``)."""

    count: int
    #: Per-device link rate in bytes/s; None = unthrottled.
    rate: float | None = USB2_DEVICE_RATE
    #: Shared per-bus ceiling in bytes/s; None = no shared ceiling.
    bus_rate: float | None = None
    faults: dict[int, AnyFaults] | None = None
    count_only: bool = False
    #: Slot -> kind of device (``lumia``, ``ufp-v1``, ``ufp-v2``); SimpleIO when not named.
    kinds: dict[int, str] | None = None

    def links(self) -> list[SimLink]:
        # The simulated line and its device models load only when a run uses them.
        from .transport.sim import simulated_line

        return simulated_line(
            self.count,
            rate=self.rate,
            bus_rate=self.bus_rate,
            faults=self.faults,
            count_only=self.count_only,
            kinds=self.kinds,
        )

    @contextlib.asynccontextmanager
    async def __call__(self) -> AsyncIterator[Sequence[Link | Unopened]]:
        links = self.links()
        try:
            yield links
        finally:
            for link in links:
                await link.aclose()


@dataclass(frozen=True, slots=True, kw_only=True)
class Presentation:
    """How a run shows itself: the live table on a terminal, plain lines otherwise."""

    #: True = live table, False = plain lines, None = decide by whether stdout is a terminal.
    live: bool | None = None
    stream: TextIO | None = None
    title: str | None = None
    #: Only what someone must act on (``-q``): failed devices, the summary, the recap.
    #: A live table is not drawn unless asked for (``live=True``).
    quiet: bool = False

    def observer(
        self, image: ImageBuffer | ImageSet
    ) -> contextlib.AbstractContextManager[LineObserver]:
        stream = self.stream or sys.stdout
        live = self.live if self.live is not None else stream.isatty() and not self.quiet
        if live:
            from rich.console import Console

            from .output.ui import LiveTable

            table = LiveTable(console=Console(file=stream, log_path=False), title=self.title)
            return _logging_above(table)
        from .output.ui import PlainOutput

        return PlainOutput(image.wim_path, stream=stream, quiet=self.quiet)


@contextlib.contextmanager
def _logging_above(table: LiveTable) -> Iterator[LineObserver]:
    """While the live table is up, log records print above it instead of tearing it."""
    from .output.ui import logging_above

    with logging_above(table.console), table:
        yield table


# -- signals -----------------------------------------------------------------------------


class SignalGuard:
    """SIGINT, SIGTERM and SIGHUP for one run: cancel once, wait, then exit at once.

    Installed with :func:`signal.signal` for the whole run (not only while the
    event loop runs), so a signal while the report is being closed is handled
    the same way. Only in the main thread; elsewhere the caller cancels.

    SIGUSR1 calls *on_reopen* (the report's reopen, for logrotate) and ends
    nothing; without one it is only logged, never the default action (which
    would kill the station in the middle of a shift).
    """

    def __init__(self, on_reopen: Callable[[], None] | None = None) -> None:
        self.stop: StopReason | None = None
        self.received = 0
        self._first_signal = 0
        self._cancel: Callable[[], None] | None = None
        self._on_reopen = on_reopen
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for signum in _STOP_BY_SIGNAL:
                self._saved[signum] = signal.signal(signum, self._handle)
            self._saved[REOPEN_SIGNAL] = signal.signal(REOPEN_SIGNAL, self._handle_reopen)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)
        self._saved.clear()

    def attach(self, cancel: Callable[[], None] | None) -> None:
        """What to call on the first signal (None: the loop has ended)."""
        self._cancel = cancel
        if cancel is not None and self.stop is not None:
            cancel()

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.received += 1
        name = signal.Signals(signum).name
        if self.received == 1:
            self.stop = _STOP_BY_SIGNAL[signal.Signals(signum)]
            self._first_signal = signum
            if signum == signal.SIGHUP:
                logging.raiseExceptions = False  # the terminal is gone: never a traceback
            _say(f"received {name}: cancelling every device under way and writing its record")
            if self._cancel is not None:
                self._cancel()
        elif self.received == 2:
            _say(
                f"received {name} again: still writing the records of the devices under way; "
                "send it once more to exit at once with what is on disk"
            )
        else:
            _say(f"received {name} a third time: exiting now; records on disk are kept")
            os._exit(128 + self._first_signal)


    def _handle_reopen(self, _signum: int, _frame: FrameType | None) -> None:
        # No I/O here: the handler may run between two bytes of a record's write.
        if self._on_reopen is not None:
            self._on_reopen()


def _say(text: str) -> None:
    """One line on stderr from a signal handler (no locks, no buffering); never raises."""
    with contextlib.suppress(OSError):
        os.write(2, f"parallel-flash: {text}\n".encode())


# -- the session ------------------------------------------------------------------------


class _Session:
    """Report + presentation + signals around one piece of async work."""

    def __init__(
        self,
        image: ImageBuffer | ImageSet,
        *,
        report: str | os.PathLike[str] | None,
        append_report: bool,
        presentation: Presentation,
        extra_observers: Sequence[LineObserver],
        line: LineOptions | None = None,
    ) -> None:
        if line is not None:
            line.check(report)
        self.line = line
        self.image = image
        self.report_path = report
        self.append_report = append_report
        self.presentation = presentation
        self.extra_observers = list(extra_observers)
        self.result = LineResult()
        self.on_report_failure: Callable[[str], None] | None = None
        self._report: Any = None
        self._presenter: LineObserver | None = None
        self._other_error: BaseException | None = None

    def _observer_failed(self, observer: LineObserver, exc: BaseException) -> None:
        if observer is self._report and isinstance(exc, OSError):
            if self.result.report_error is None:
                path = getattr(observer, "path", self.report_path)
                message = f"cannot write the report {path}: {exc.strerror or exc}"
                self.result.report_error = message
                if self.result.stop is None:
                    self.result.stop = StopReason.REPORT_FAILED
                logger.error("%s; no new device is started, those under way finish", message)
                if self.on_report_failure is not None:
                    self.on_report_failure(message)
            return
        if observer is self._presenter and isinstance(exc, OSError):
            # The terminal is gone (SIGHUP) or the pipe closed: the report still has everything.
            logger.debug("presentation failed: %s", exc)
            return
        if self._other_error is None:
            self._other_error = exc

    def run(self, work: Callable[[LineObserver], Awaitable[None]]) -> LineResult:
        from .output.report import JsonlReport

        image = self.image
        with contextlib.ExitStack() as stack:
            # Entered first, closed last: the last results go out after the report has them.
            line = self.line
            integration: LineIntegration | None = None
            if line is not None and line.active:
                # MQTT, its outbox and the hooks load only for a station that publishes.
                from .output.line_integration import LineIntegration

                integration = stack.enter_context(LineIntegration(line, image))
            observers: list[LineObserver] = list(self.extra_observers)
            if self.report_path is not None:
                self._report = JsonlReport.open(
                    self.report_path,
                    wim=image.wim_path,
                    sdi=image.sdi_path,
                    # Hashed in the background; each record's is awaited by the engine.
                    image_sha256=image.sha256_if_known,
                    image_bytes=image.total_length,
                    append=self.append_report,
                    station=self.line.station if self.line is not None else None,
                )
                stack.enter_context(self._report)
                observers.append(self._report)
            if integration is not None:
                integration.attach(self._report)
                observers.extend(integration.observers)
            self._presenter = stack.enter_context(self.presentation.observer(image))
            observers.append(self._presenter)
            group = ObserverGroup(*observers, on_error=self._observer_failed)
            guard = stack.enter_context(SignalGuard(on_reopen=self._reopen_report))
            anyio.run(self._main, guard, work, group)
            self.result.stop = guard.stop or self.result.stop
            self._close(guard)
            if integration is not None:
                integration.close(self.result.records, interrupted=self.result.stop is not None)
        if self._other_error is not None:
            raise self._other_error
        return self.result

    def _reopen_report(self) -> None:
        """SIGUSR1 (in the signal handler): reopen before the next record, and soon.

        The flag makes the next record go to the new file; the call on the
        loop opens it now, between two records, even if no device finishes
        for a while (logrotate may compress the old file next).
        """
        report = self._report
        if report is None or report.path == STDOUT_REPORT:
            return
        report.request_reopen()
        _call_soon(self._rotate_report)

    def _rotate_report(self) -> None:
        """On the loop, between two records: a failure there is the report's, never a traceback."""
        try:
            self._report.rotate()
        except OSError as exc:
            self._observer_failed(self._report, exc)

    async def _main(
        self,
        guard: SignalGuard,
        work: Callable[[LineObserver], Awaitable[None]],
        group: ObserverGroup,
    ) -> None:
        with anyio.CancelScope() as scope:
            guard.attach(lambda: _call_soon(scope.cancel))
            try:
                await work(group)
                # The summary names the image: its digest, awaited off the loop
                # (bounded by the loader's stall time; skipped if interrupted).
                await image_digest(primary_image(self.image))
            finally:
                guard.attach(None)

    def _close(self, guard: SignalGuard) -> None:
        from .output.ui import PlainOutput

        interrupted = self.result.stop is not None
        if isinstance(self._presenter, PlainOutput) and interrupted:
            with contextlib.suppress(OSError):
                self._presenter.close(interrupted=True)
        report = self._report
        if report is not None:
            try:
                report.finish_unfinished(self.result.records)
                report.close(interrupted=interrupted)
            except OSError as exc:
                self._observer_failed(report, exc)
                report.abandon()


def _call_soon(call: Callable[[], object]) -> None:
    """Run *call* on the loop from a signal handler, never inline; nothing if it has ended."""
    import asyncio

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    loop.call_soon_threadsafe(call)


def run_boot(
    image: ImageBuffer | ImageSet,
    source: LinkSource,
    *,
    options: BootOptions | None = None,
    report: str | os.PathLike[str] | None = None,
    append_report: bool = False,
    presentation: Presentation | None = None,
    extra_observers: Sequence[LineObserver] = (),
    line: LineOptions | None = None,
) -> LineResult:
    """Boot every device the source yields; returns once all have finished or on a signal.

    :param line: publish to the line's MQTT broker, serve Prometheus metrics,
        run a result hook (output/line.py)

    :raises ~parallel_flash.errors.InputError: the report file exists (and
        ``append_report`` is false) or cannot be created -- before any device
        is touched.
    """
    options = options or BootOptions()
    session = _Session(
        image,
        report=report,
        append_report=append_report,
        presentation=presentation or Presentation(),
        extra_observers=extra_observers,
        line=line,
    )

    async def work(observer: LineObserver) -> None:
        async with source() as links:
            if not links:
                logger.warning("no device to boot")
            await boot_line(
                links, image, options=options, observer=observer,
                records=session.result.records,
            )

    return session.run(work)


def run_usb(
    image: ImageBuffer | ImageSet,
    *,
    filters: Any = None,
    options: BootOptions | None = None,
    station: bool = False,
    count: int | None = None,
    confirmation: Any = None,
    polling: bool | None = None,
    report: str | os.PathLike[str] | None = None,
    append_report: bool = False,
    presentation: Presentation | None = None,
    extra_observers: Sequence[LineObserver] = (),
    on_ready: Callable[[], None] | None = None,
    line: LineOptions | None = None,
) -> LineResult:
    """Boot devices on real USB: the ones present now, or (``station``) each one plugged in.

    ``filters`` is a :class:`~parallel_flash.discovery.DeviceFilters`,
    ``confirmation`` a :class:`~parallel_flash.station.Confirmation` (None = no
    confirmation). A report write failure stops the intake of new devices.
    """
    from .engine.station import Intake, run_station

    session = _Session(
        image,
        report=report,
        append_report=append_report,
        presentation=presentation or Presentation(),
        extra_observers=extra_observers,
        line=line,
    )
    intake = Intake()
    session.on_report_failure = intake.stop

    async def work(observer: LineObserver) -> None:
        await run_station(
            image,
            filters=filters,
            options=options,
            observer=observer,
            count=count,
            confirmation=confirmation,
            once=not station,
            polling=polling,
            result=session.result,
            intake=intake,
            on_ready=on_ready,
        )

    return session.run(work)

