"""Run a whole line: inputs checked, presentation and report wired, Ctrl-C handled.

This is what ``parallel-flash boot`` and ``parallel-flash demo`` do, as a
Python API: :func:`run_boot` takes an already loaded :class:`ImageBuffer`
and a *link source* -- an async context manager yielding the devices to boot
(the simulated line, or devices found on real USB) -- and returns a
:class:`~parallel_flash.engine.pipeline.LineResult`.

Order matters for the factory line: the image and the report file are
checked before any device is touched (bad input exits 2 with nothing
contacted), and every finished device is on disk before the next one ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, TextIO

import anyio

from .engine.pipeline import BootOptions, LineResult, boot_line, run_interruptible
from .engine.records import DeviceRecord, LineObserver, ObserverGroup
from .image import ImageBuffer, ImageSet
from .output.line import LineIntegration, LineOptions
from .protocol.models import AnyFaults
from .transport.base import Link
from .transport.sim import SimLink, simulated_line

__all__ = (
    "LinkSource",
    "Presentation",
    "SimulatedLine",
    "run_boot",
)

logger = logging.getLogger(__name__)

#: Opens the devices to boot and closes whatever is left at the end.
LinkSource = Callable[[], AbstractAsyncContextManager[Sequence[Link]]]


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulatedLine:
    """A :data:`LinkSource` for ``count`` simulated devices (``boot --sim``, ``demo``)."""

    count: int
    #: Per-device link rate in bytes/s; None = unthrottled.
    rate: float | None = 40e6
    #: Shared per-bus ceiling in bytes/s; None = no shared ceiling.
    bus_rate: float | None = None
    faults: dict[int, AnyFaults] | None = None
    count_only: bool = False
    #: Slot -> kind of device (``lumia``, ``ufp-v1``, ``ufp-v2``); SimpleIO when not named.
    kinds: dict[int, str] | None = None

    def links(self) -> list[SimLink]:
        return simulated_line(
            self.count,
            rate=self.rate,
            bus_rate=self.bus_rate,
            faults=self.faults,
            count_only=self.count_only,
            kinds=self.kinds,
        )

    @contextlib.asynccontextmanager
    async def __call__(self) -> AsyncIterator[Sequence[Link]]:
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

    def observer(
        self, image: ImageBuffer | ImageSet
    ) -> contextlib.AbstractContextManager[LineObserver]:
        stream = self.stream or sys.stdout
        live = self.live if self.live is not None else stream.isatty()
        if live:
            from rich.console import Console

            from .output.ui import LiveTable

            table = LiveTable(console=Console(file=stream, log_path=False), title=self.title)
            return _logging_through(table.console, table)
        from .output.ui import PlainOutput

        return PlainOutput(image.wim_path, stream=stream)


@contextlib.contextmanager
def _logging_through(console: Any, table: Any) -> Iterator[LineObserver]:
    """While the live table is up, log records print above it instead of tearing it."""
    from rich.logging import RichHandler

    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [RichHandler(console=console, show_path=False, markup=False)]
    try:
        with table:
            yield table
    finally:
        root.handlers = saved


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
    """Boot every device the source yields; returns once all have finished or on Ctrl-C.

    :param line: publish to the line's MQTT broker, serve Prometheus metrics,
        run a result hook (output/line.py)
    :raises ~parallel_flash.errors.InputError: the report file exists (and
        ``append_report`` is false) or cannot be created, or the line's
        settings cannot work -- before any device is touched.
    """
    from .output.report import JsonlReport

    options = options or BootOptions()
    presentation = presentation or Presentation()
    if line is not None:
        line.check(report)
    with contextlib.ExitStack() as stack:
        # Entered first, closed last: the last results go out after the report has them.
        integration = (
            stack.enter_context(LineIntegration(line, image))
            if line is not None and line.active
            else None
        )
        observers: list[LineObserver] = list(extra_observers)
        report_file = None
        if report is not None:
            report_file = JsonlReport.open(
                report,
                wim=image.wim_path,
                sdi=image.sdi_path,
                image_sha256=image.sha256,
                image_bytes=image.total_length,
                append=append_report,
            )
            stack.enter_context(report_file)
            observers.append(report_file)
        if integration is not None:
            integration.attach(report_file)
            observers.extend(integration.observers)
        presenter = stack.enter_context(presentation.observer(image))
        observers.append(presenter)
        group = ObserverGroup(*observers)
        records: list[DeviceRecord] = []

        async def work() -> None:
            async with source() as links:
                if not links:
                    logger.warning("no device to boot")
                await boot_line(links, image, options=options, observer=group, records=records)

        _, interrupted = anyio.run(run_interruptible, work)
        result = LineResult(records=records, interrupted=interrupted)
        close = getattr(presenter, "close", None)
        if interrupted and callable(close):
            close(interrupted=True)   # PlainOutput says so in its summary line
        if report_file is not None:
            report_file.finish_unfinished(records, reason="interrupted")
            report_file.close(interrupted=interrupted)
        if integration is not None:
            integration.close(records, interrupted=interrupted)
        group.check()
    return result
