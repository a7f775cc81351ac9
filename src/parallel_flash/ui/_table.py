"""The live table: a pure function from device records to a renderable, drawn by one Live.

:func:`render_line` builds a fresh frame from the records at a given
instant (style.md, principle 10); :class:`LiveTable` is the observer that
owns the one :class:`~rich.live.Live` redrawing it.

Cost matters because the engine runs in the same interpreter: every frame
competes with the event loop for the GIL. Hence:

* The frame is a :class:`~rich.console.Group` of one :class:`~rich.text.Text`
  per row, with the columns laid out here, not a :class:`rich.table.Table`:
  rich's Table pads, measures and wraps every cell separately, which costs
  about 0.1 ms per cell -- 37 ms for a 43-row frame against 7 ms this way
  (benchmarks/bench_live_table.py prints the figures).
* Rows drawn are capped to the terminal's height; finished rows are the
  first folded into a "not shown" line, while the totals count every device.
  The final frame, drawn once on exit, shows every row.
* Frames are paced by :class:`_Refresher`, which keeps the table's share of
  CPU time under :data:`MAX_DUTY` by drawing less often when a frame is
  expensive, instead of rich's fixed-rate refresh thread.
* The observer calls themselves do almost nothing (an append; a line printed
  on a failure or a device error log).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType

from rich.align import AlignMethod
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from ..events import DeviceLog, DeviceRecord, DeviceState
from ..report import line_totals
from ._text import format_duration, format_mb, printable

__all__ = ("MAX_DUTY", "LiveTable", "render_line")

logger = logging.getLogger(__name__)

#: Largest share of one CPU the redraws may take. The refresh interval
#: stretches to keep to it (issue 2: the line keeps >= 97 % of its
#: throughput with the table on).
MAX_DUTY = 0.02

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

#: Lines a live frame needs besides the device rows: title, header, rule,
#: rule, totals, the "not shown" line, and one spare so a line logged
#: above the table never pushes the totals off screen.
_FRAME_LINES = 7
_GAP = "  "
_BAR_WIDTH = 12
_STATE_WIDTH = max(len(state.value) for state in DeviceState)
_ID_WIDTH = 36
_PORT_MAX = 16
_NAME_MAX = 32
_NAME_MAX_NARROW = 20
_RESULT_MIN = 6
#: Narrower terminals drop the unique-ID column, so the result (a failure
#: reason) keeps about 30 characters ...
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


def _bar(done: int, total: int, state: DeviceState) -> Text:
    """A progress bar in half-cell steps, like rich's ProgressBar without its cost."""
    if state is DeviceState.FAILED:
        style = "red"
    elif state is DeviceState.BOOTED:
        style = "green"
    else:
        style = "bar.complete"
    halves = int(_BAR_WIDTH * 2 * min(done, total) / total) if total > 0 else 0
    full, half = divmod(halves, 2)
    bar = Text("━" * full, style=style)
    if half:
        bar.append("╸", style=style)
    bar.append("━" * (_BAR_WIDTH - full - half), style="bar.back")
    return bar


class _Columns:
    """Which columns this frame has, from the terminal's width."""

    __slots__ = ("bar", "ids", "mb", "name_max")

    def __init__(self, width: int | None) -> None:
        self.ids = width is None or width >= _IDS_MIN_WIDTH
        self.bar = width is None or width >= _BAR_MIN_WIDTH
        self.mb = width is None or width >= _MB_MIN_WIDTH
        self.name_max = _NAME_MAX if self.mb else _NAME_MAX_NARROW

    def header(self) -> list[str]:
        names = ["Port", "Name"]
        if self.ids:
            names.append("ID")
        names.append("State")
        if self.bar:
            names.append("Progress")
        if self.mb:
            names.append("MB")
        return [*names, "MB/s", "ETA", "Result"]

    def justify(self) -> list[AlignMethod]:
        right = {"MB", "MB/s", "ETA"}
        return ["right" if name in right else "left" for name in self.header()]


def _device_cells(record: DeviceRecord, now: float, cols: _Columns) -> list[Text]:
    state = record.state
    cells = [
        Text(printable(record.port)),
        Text(printable(record.name)) if record.name else Text("-", style="dim"),
    ]
    if cols.ids:
        cells.append(Text(printable(record.unique_id)))
    cells.append(Text(state.value, style=_STATE_STYLE.get(state, "")))
    if cols.bar:
        cells.append(_bar(record.bytes_done, record.bytes_total, state))
    if cols.mb:
        cells.append(Text(f"{format_mb(record.bytes_done)}/{format_mb(record.bytes_total)}"))
    eta = "" if state.finished else format_duration(record.eta(now))
    cells += [Text(format_mb(record.rate(now))), Text(eta), _result(record)]
    return cells


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


def _widths(rows: list[list[Text]], cols: _Columns, width: int | None) -> list[int]:
    header = cols.header()
    widths = [len(name) for name in header]
    for row in rows:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], cell.cell_len)
    caps = {"Port": _PORT_MAX, "Name": cols.name_max, "ID": _ID_WIDTH, "State": _STATE_WIDTH}
    for index, name in enumerate(header):
        if name in caps:
            widths[index] = min(widths[index], caps[name])
    if width is not None:  # the result takes what is left, and nothing more
        used = sum(widths[:-1]) + len(_GAP) * (len(widths) - 1)
        widths[-1] = max(_RESULT_MIN, width - used)
    return widths


def _line(cells: list[Text], widths: list[int], justify: list[AlignMethod]) -> Text:
    line = Text(no_wrap=True, overflow="ellipsis", end="\n")
    last = len(cells) - 1
    for index, cell in enumerate(cells):
        cell.overflow = "ellipsis"
        if index == last:
            cell.truncate(widths[index])  # no trailing padding
        else:
            cell.align(justify[index], widths[index])
        line.append_text(cell)
        if index != last:
            line.append(_GAP)
    return line


def render_line(
    records: Sequence[DeviceRecord],
    *,
    now: float,
    title: str | None = None,
    max_rows: int | None = None,
    width: int | None = None,
) -> RenderableType:
    """Build the frame for *records* as they stand at monotonic time *now*.

    One row per device (port, friendly name, unique ID, state, progress bar,
    MB done/total, MB/s, ETA, result) and a totals row (done, booted and
    failed counts, aggregate MB/s over all devices, total bytes).

    Pure: the same records and *now* give the same frame. Every
    device-supplied string is passed through :func:`printable` and wrapped
    in :class:`~rich.text.Text`, so it can neither be read as markup nor
    reach the terminal as a control sequence. MB is 1,000,000 bytes.

    :param title: shown above the table (literally, like device strings)
    :param max_rows: at most this many device rows (the terminal's height);
        the rest are summed up in one line, finished devices first
    :param width: the terminal's width: the result column fills it, and
        narrow screens drop the unique-ID column, then the progress bar,
        then the bytes; None draws every column at its natural width
    """
    snapshot = list(records)  # the engine may append while we draw
    totals = line_totals(snapshot, now=now)
    cols = _Columns(width)
    shown, hidden = _choose_rows(snapshot, max_rows)

    rows = [_device_cells(record, now, cols) for record in shown]
    etas = [record.eta(now) for record in snapshot if not record.state.finished]
    line_eta = ""
    if etas:
        line_eta = format_duration(
            None if any(eta is None for eta in etas) else max(e for e in etas if e is not None)
        )
    plural = "" if totals.devices == 1 else "s"
    footer = [Text("total", style="bold"), Text(f"{totals.devices} device{plural}", style="bold")]
    if cols.ids:
        footer.append(Text(""))
    footer.append(Text(f"{totals.devices - totals.in_progress}/{totals.devices} done"))
    if cols.bar:
        footer.append(_bar(totals.bytes_done, totals.bytes_total, DeviceState.SENDING_WIM))
    if cols.mb:
        footer.append(Text(f"{format_mb(totals.bytes_done)}/{format_mb(totals.bytes_total)}"))
    footer += [
        Text(format_mb(totals.rate), style="bold"),
        Text(line_eta),
        Text.assemble(
            (f"{totals.booted} booted", "green"),
            ", ",
            (f"{totals.failed} failed", "red" if totals.failed else ""),
            f" in {format_duration(totals.seconds)}",
        ),
    ]

    header = [Text(name, style="bold") for name in cols.header()]
    widths = _widths([header, *rows, footer], cols, width)
    justify = cols.justify()
    table_width = sum(widths) + len(_GAP) * (len(widths) - 1)
    rule = Text("─" * table_width, style="dim", no_wrap=True, overflow="crop")

    lines: list[RenderableType] = []
    if title:
        heading = Text(printable(title), style="bold", no_wrap=True, overflow="ellipsis")
        heading.align("center", table_width)
        lines.append(heading)
    lines += [_line(header, widths, justify), rule]
    lines += [_line(row, widths, justify) for row in rows]
    lines += [rule, _line(footer, widths, justify)]
    if hidden:
        lines.append(_hidden_note(hidden))
    return Group(*lines)


class _Refresher(threading.Thread):
    """Redraws the Live every *interval* s, or less often if frames are dear.

    After each frame the pause is stretched to ``frame CPU time / MAX_DUTY``
    so drawing never takes more than :data:`MAX_DUTY` of a CPU, however
    many devices the table shows or however slow the machine is.
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
    """A :class:`~parallel_flash.events.LineObserver` drawing the live table.

    Use it as a context manager around the run::

        with LiveTable(title="booting x.wim") as table:
            await boot_line(links, image, observer=table)

    Error Log packets (level <= 2) and failures are printed above the table
    (they stay in the scrollback); the table itself is redrawn up to
    *refresh_per_second* times a second, less often when a frame is
    expensive (see :data:`MAX_DUTY`).
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
