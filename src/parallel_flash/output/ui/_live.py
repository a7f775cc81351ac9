"""The live view: one rich Live redrawing :func:`render_line` at a paced rate.

Cost matters because the engine runs in the same interpreter: every frame
competes with the event loop for the GIL. Frames are paced by
:class:`_Refresher`, which keeps the view's share of CPU time under
:data:`MAX_DUTY` by drawing less often when a frame is expensive, instead
of rich's fixed-rate refresh thread. The observer calls do almost nothing
(a dict update; a line printed on a failure or a device error log).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType

from rich.console import Console, RenderableType
from rich.live import Live
from rich.text import Text

from ...engine.records import DeviceLog, DeviceRecord, DeviceState
from ._frame import render_line
from ._text import failure_reason, printable
from ._view import LineView

__all__ = ("MAX_DUTY", "LiveTable")

logger = logging.getLogger(__name__)

#: Largest share of one CPU the redraws may take. The refresh interval
#: stretches to keep to it (issue 2: the line keeps >= 97 % of its
#: throughput with the table on).
MAX_DUTY = 0.02


class _Refresher(threading.Thread):
    """Redraws the Live every *interval* s, or less often if frames are dear.

    After each frame the pause is stretched to ``frame CPU time / MAX_DUTY``
    so drawing never takes more than :data:`MAX_DUTY` of a CPU, however
    many devices the view shows or however slow the machine is.
    """

    def __init__(self, live: Live, interval: float) -> None:
        super().__init__(name="parallel-flash-live-table", daemon=True)
        self.live = live
        self.interval = interval
        self.done = threading.Event()
        #: frames drawn and CPU seconds spent drawing them (for benchmarks)
        self.frames = 0
        self.cpu = 0.0

    def run(self) -> None:
        pause = self.interval
        while not self.done.wait(pause):
            start = time.thread_time()
            self.live.refresh()
            cost = time.thread_time() - start
            self.frames += 1
            self.cpu += cost
            pause = max(self.interval, cost / MAX_DUTY)

    def stop(self) -> None:
        self.done.set()
        self.join()


class LiveTable:
    """A :class:`~parallel_flash.engine.records.LineObserver` drawing the live view.

    Use it as a context manager around the run::

        with LiveTable(title="booting x.wim") as table:
            await boot_line(links, image, observer=table)

    Error Log packets (level <= 2) and failures are printed above the view
    (they stay in the scrollback). The frame left on screen at the end has
    the totals and every failed device, not a row per device of the shift.
    """

    def __init__(
        self,
        *,
        console: Console | None = None,
        title: str | None = None,
        refresh_per_second: float = 4.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < refresh_per_second <= 30:
            raise ValueError(f"refresh_per_second must be in (0, 30], got {refresh_per_second}")
        self.console = console if console is not None else Console(log_path=False)
        self.title = title
        #: what the frames are drawn from (bounded over a shift)
        self.view = LineView(clock=clock)
        self.refresh_per_second = refresh_per_second
        self._clock = clock
        self._final = False
        self._render_failed = False
        self._refresher: _Refresher | None = None
        self._frames = 0
        self._cpu = 0.0
        self._live = Live(
            console=self.console,
            get_renderable=self.renderable,
            auto_refresh=False,  # _Refresher paces the frames
            transient=False,
        )

    def renderable(self) -> RenderableType:
        """The current frame, fitted to the terminal (the final one lists every failure)."""
        try:
            width, height = self.console.size
            return render_line(
                self.view,
                now=self._clock(),
                title=self.title,
                width=width,
                height=height,
                final=self._final,
            )
        except Exception:  # a drawing bug must not take the line down
            if not self._render_failed:
                self._render_failed = True
                logger.exception("cannot draw the live table")
            return Text("(live table unavailable, see log)", style="red")

    def statistics(self) -> tuple[int, float]:
        """(frames drawn, CPU seconds spent drawing them) by the refresh thread so far."""
        refresher = self._refresher
        if refresher is None:
            return self._frames, self._cpu
        return self._frames + refresher.frames, self._cpu + refresher.cpu

    def __enter__(self) -> LiveTable:
        self._final = False
        self._live.start(refresh=True)
        if self.console.is_terminal and self._refresher is None:
            self._refresher = _Refresher(self._live, 1 / self.refresh_per_second)
            self._refresher.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._refresher is not None:
            self._refresher.stop()
            self._frames += self._refresher.frames
            self._cpu += self._refresher.cpu
            self._refresher = None
        self._final = True  # the last frame, left on screen: totals and every failure
        self._live.stop()

    # -- LineObserver --------------------------------------------------

    def device_added(self, record: DeviceRecord) -> None:
        self.view.device_added(record)

    def device_changed(self, record: DeviceRecord) -> None:
        pass  # the next redraw reads the record

    def device_log(self, record: DeviceRecord, log: DeviceLog) -> None:
        if log.is_error:
            self.console.log(
                Text.assemble(
                    (printable(record.port), "bold"),
                    " ",
                    printable(record.name or "-"),
                    f": device log (level {log.level}, event {log.event_id}): ",
                    (printable(log.text), "yellow"),
                )
            )

    def device_finished(self, record: DeviceRecord) -> None:
        self.view.device_finished(record)
        if record.state is DeviceState.FAILED:
            self.console.log(
                Text.assemble(
                    (printable(record.port), "bold"),
                    " ",
                    printable(record.name or "-"),
                    ": ",
                    ("failed: ", "bold red"),
                    (failure_reason(record), "red"),
                )
            )
