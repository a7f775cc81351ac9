"""The live table: a pure function from device records to a rich Table, drawn by one Live.

:func:`render_line` builds a fresh :class:`~rich.table.Table` from the
records at a given instant (style.md, principle 10); :class:`LiveTable` is
the observer that owns the one :class:`~rich.live.Live` redrawing it.

Cost matters because the engine runs on the same interpreter: rich's
refresh thread competes with the event loop for the GIL. So the observer
calls do almost nothing (an append, a line printed on failure), redraws run
at a few per second, and each one is O(devices) with the number of rows
drawn capped to the terminal's height -- finished rows are the first to be
folded into a "not shown" line, while the totals row always counts every
device. The final frame, drawn once on exit, shows every row.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from types import TracebackType

from rich import box
from rich.console import Console, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from ..events import DeviceLog, DeviceRecord, DeviceState
from ..report import line_totals
from ._text import format_duration, format_mb, printable

__all__ = ("LiveTable", "render_line")

logger = logging.getLogger(__name__)

_STATE_STYLE: dict[DeviceState, str] = {
    DeviceState.FOUND: "dim",
    DeviceState.IDENTIFYING: "cyan",
    DeviceState.RESETTING: "yellow",
    DeviceState.SENDING_SDI: "blue",
    DeviceState.SENDING_WIM: "blue",
    DeviceState.AWAITING_STATUS: "magenta",
    DeviceState.BOOTED: "bold green",
    DeviceState.FAILED: "bold red",
}

#: Lines a frame needs besides the device rows: title, header, header
#: rule, section rule, totals, the "not shown" line, and one spare so a
#: log line printed above the table never pushes the totals off screen.
_FRAME_LINES = 7

_BAR_WIDTH = 12

#: Narrower terminals drop the unique-ID column (36 characters), so the
#: result (a failure reason) keeps about 30 characters ...
_IDS_MIN_WIDTH = 170
#: ... then the progress bar ...
_BAR_MIN_WIDTH = 120
#: ... then the bytes column, and names are cut shorter.
_MB_MIN_WIDTH = 95


def _result(record: DeviceRecord) -> Text:
    if record.state is DeviceState.BOOTED:
        return Text("booted", style="green")
    if record.state is DeviceState.FAILED:
        if record.error:
            reason = record.error
        elif record.status is not None:
            reason = f"status 0x{record.status & 0xFFFFFFFF:08x}"
        else:
            reason = "failed"
        return Text(printable(reason), style="red")
    return Text("")


def _bar(done: int, total: int, state: DeviceState) -> ProgressBar:
    if state is DeviceState.FAILED:
        style = "red"
    elif state is DeviceState.BOOTED:
        style = "green"
    else:
        style = "bar.complete"
    return ProgressBar(
        total=float(max(total, 1)),
        completed=float(min(done, total)) if total else 0.0,
        width=_BAR_WIDTH,
        complete_style=style,
        finished_style=style,
    )


def _device_row(
    record: DeviceRecord, now: float, show_ids: bool, show_bar: bool, show_mb: bool
) -> list[RenderableType]:
    state = record.state
    row: list[RenderableType] = [
        Text(printable(record.port)),
        Text(printable(record.name)) if record.name else Text("-", style="dim"),
    ]
    if show_ids:
        row.append(Text(printable(record.unique_id)) if record.unique_id else Text(""))
    eta = "" if state.finished else format_duration(record.eta(now))
    row.append(Text(state.value, style=_STATE_STYLE.get(state, "")))
    if show_bar:
        row.append(_bar(record.bytes_done, record.bytes_total, state))
    if show_mb:
        row.append(Text(f"{format_mb(record.bytes_done)}/{format_mb(record.bytes_total)}"))
    row += [
        Text(format_mb(record.rate(now))),
        Text(eta),
        _result(record),
    ]
    return row


def _choose_rows(
    records: Sequence[DeviceRecord], max_rows: int | None
) -> tuple[list[DeviceRecord], list[DeviceRecord]]:
    """Split *records* into (shown, hidden), at most *max_rows* shown.

    Rows still in progress are kept first, then failures, then booted ones;
    the shown rows stay in slot order.
    """
    if max_rows is None or len(records) <= max_rows:
        return list(records), []
    keep = max(0, max_rows - 1)  # one line says what is not shown

    def rank(item: tuple[int, DeviceRecord]) -> tuple[int, int]:
        index, record = item
        if not record.state.finished:
            return (0, index)
        return (1 if record.state is DeviceState.FAILED else 2, index)

    ranked = sorted(enumerate(records), key=rank)
    shown_idx = sorted(index for index, _ in ranked[:keep])
    shown_set = set(shown_idx)
    shown = [records[i] for i in shown_idx]
    hidden = [record for i, record in enumerate(records) if i not in shown_set]
    return shown, hidden


def _hidden_note(hidden: Sequence[DeviceRecord]) -> Text:
    booted = sum(1 for r in hidden if r.state is DeviceState.BOOTED)
    failed = sum(1 for r in hidden if r.state is DeviceState.FAILED)
    active = len(hidden) - booted - failed
    parts = [f"{booted} booted"] if booted else []
    if failed:
        parts.append(f"{failed} failed")
    if active:
        parts.append(f"{active} in progress")
    return Text(f"... {len(hidden)} devices not shown ({', '.join(parts)})", style="dim")


def render_line(
    records: Sequence[DeviceRecord],
    *,
    now: float,
    title: str | None = None,
    max_rows: int | None = None,
    width: int | None = None,
) -> RenderableType:
    """Build the table for *records* as they stand at monotonic time *now*.

    Pure: the same records and *now* give the same table. Every
    device-supplied string is passed through :func:`printable` and wrapped
    in :class:`~rich.text.Text`, so it can neither be read as markup nor
    reach the terminal as a control sequence.

    :param title: shown above the table (literally, like device strings)
    :param max_rows: at most this many device rows (the terminal's height);
        the rest are summed up in one line, finished devices first
    :param width: the terminal's width: the table fills it, and narrow
        screens drop the unique-ID column, then the progress bar;
        None draws every column at its natural width
    """
    snapshot = list(records)  # the engine may append while we draw
    totals = line_totals(snapshot, now=now)
    show_ids = width is None or width >= _IDS_MIN_WIDTH
    show_bar = width is None or width >= _BAR_MIN_WIDTH
    show_mb = width is None or width >= _MB_MIN_WIDTH
    table = Table(
        title=Text(printable(title), style="bold") if title else None,
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
        expand=width is not None,
    )
    table.add_column("Port", no_wrap=True, min_width=5, max_width=16, overflow="ellipsis")
    table.add_column(
        "Name", no_wrap=True, min_width=9, max_width=32 if show_mb else 20, overflow="ellipsis"
    )
    if show_ids:
        table.add_column("ID", no_wrap=True, width=36, overflow="ellipsis")
    table.add_column("State", no_wrap=True, width=15)
    if show_bar:
        table.add_column("Progress", no_wrap=True, width=_BAR_WIDTH)
    if show_mb:
        table.add_column("MB", justify="right", no_wrap=True, width=11)
    table.add_column("MB/s", justify="right", no_wrap=True, width=5)
    table.add_column("ETA", justify="right", no_wrap=True, width=5)
    table.add_column("Result", no_wrap=True, min_width=6, overflow="ellipsis", ratio=1)

    shown, hidden = _choose_rows(snapshot, max_rows)
    for record in shown:
        table.add_row(*_device_row(record, now, show_ids, show_bar, show_mb))
    if hidden:
        table.caption = _hidden_note(hidden)
        table.caption_justify = "left"

    table.add_section()
    state_summary = Text.assemble(
        (f"{totals.booted} booted", "green"),
        ", ",
        (f"{totals.failed} failed", "red" if totals.failed else ""),
        f" in {format_duration(totals.seconds)}",
    )
    etas = [record.eta(now) for record in snapshot if not record.state.finished]
    line_eta = "" if not etas else format_duration(
        None if any(eta is None for eta in etas) else max(e for e in etas if e is not None)
    )
    footer: list[RenderableType] = [
        Text("total", style="bold"),
        Text(f"{totals.devices} devices", style="bold"),
    ]
    if show_ids:
        footer.append(Text(""))
    footer += [
        Text(f"{totals.devices - totals.in_progress}/{totals.devices} done"),
    ]
    if show_bar:
        footer.append(_bar(totals.bytes_done, totals.bytes_total, DeviceState.SENDING_WIM))
    if show_mb:
        footer.append(Text(f"{format_mb(totals.bytes_done)}/{format_mb(totals.bytes_total)}"))
    footer += [
        Text(format_mb(totals.rate), style="bold"),
        Text(line_eta),
        state_summary,
    ]
    table.add_row(*footer)
    return table


class LiveTable:
    """A :class:`~parallel_flash.events.LineObserver` drawing the live table.

    Use it as a context manager around the run::

        with LiveTable(title="booting x.wim") as table:
            await engine.run(observer=table)

    Error Log packets (level <= 2) and failures are printed above the table
    (they stay in the scrollback); the table itself is redrawn by rich's
    refresh thread *refresh_per_second* times a second.
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
        self.records: list[DeviceRecord] = []
        self._clock = clock
        self._final = False
        self._render_failed = False
        self._live = Live(
            console=self.console,
            get_renderable=self.renderable,
            refresh_per_second=refresh_per_second,
            transient=False,
        )

    def renderable(self) -> RenderableType:
        """The current frame: rows capped to the terminal, or all rows at the end."""
        try:
            width, height = self.console.size
            max_rows = None if self._final else max(3, height - _FRAME_LINES)
            return render_line(
                self.records,
                now=self._clock(),
                title=self.title,
                max_rows=max_rows,
                width=width,
            )
        except Exception:  # a drawing bug must not take the line down
            if not self._render_failed:
                self._render_failed = True
                logger.exception("cannot draw the live table")
            return Text("(live table unavailable, see log)", style="red")

    def __enter__(self) -> LiveTable:
        self._final = False
        self._live.start(refresh=True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._final = True  # the last frame, left on screen, shows every row
        self._live.stop()

    # -- LineObserver --------------------------------------------------

    def device_added(self, record: DeviceRecord) -> None:
        self.records.append(record)

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
        if record.state is DeviceState.FAILED:
            self.console.log(
                Text.assemble(
                    (printable(record.port), "bold"),
                    " ",
                    printable(record.name or "-"),
                    ": ",
                    ("failed: ", "bold red"),
                    _result(record),
                )
            )
