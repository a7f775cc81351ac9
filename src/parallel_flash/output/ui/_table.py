"""The device table: one row per port, for lines small enough to read row by row.

Every column has a fixed width, chosen from the terminal's width and the
line's ports and image size, never from the numbers being drawn: a row
does not shift sideways as a rate goes from 9.9 to 10.0 MB/s. Narrow
terminals drop the unique-ID column, then the progress bar, then the
bytes; the percentage is always there, and names lose their middle, not
the tail that tells ``...3.2.1`` from ``...3.2.7``.

Rows are :class:`~rich.text.Text` laid out here, not a rich Table: a Table
measures and wraps every cell, about 0.1 ms a cell, and the frames share
the interpreter with the engine (benchmarks/bench_live_table.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich.cells import cell_len
from rich.text import Text

from ...engine.records import DeviceRecord, DeviceState
from ._layout import STATE_STYLE, percent, shorten_middle
from ._text import failure_reason, format_duration, format_mb, printable

__all__ = ("choose_rows", "table_lines")

_BAR_WIDTH = 12
_STATE_WIDTH = max(len(state.value) for state in DeviceState)
_ID_WIDTH = 36
_PORT_MAX = 16
_RESULT_MIN = 6
#: Terminal widths from which the table shows the unique-ID column ...
_IDS_MIN_WIDTH = 170
#: ... the progress bar ...
_BAR_MIN_WIDTH = 120
#: ... and the bytes column; below it names get shorter and gaps narrower.
_MB_MIN_WIDTH = 100
#: Name column width by terminal width (widest first).
_NAME_WIDTHS = ((150, 32), (_MB_MIN_WIDTH, 24), (0, 16))


def _bar(record: DeviceRecord) -> Text:
    """A progress bar in half-cell steps, like rich's ProgressBar without its cost."""
    state = record.state
    style = {DeviceState.FAILED: "red", DeviceState.BOOTED: "green"}.get(state, "bar.complete")
    total = record.bytes_total
    halves = int(_BAR_WIDTH * 2 * min(record.bytes_done, total) / total) if total > 0 else 0
    full, half = divmod(halves, 2)
    bar = Text("━" * full, style=style)
    if half:
        bar.append("╸", style=style)
    bar.append("━" * (_BAR_WIDTH - full - half), style="bar.back")
    return bar


def _result(record: DeviceRecord) -> Text:
    if record.state is DeviceState.BOOTED:
        return Text("booted", style="green")
    if record.state is DeviceState.FAILED:
        return Text(failure_reason(record), style="red")
    if record.state is DeviceState.INTERRUPTED:
        return Text(printable(record.error or "interrupted"), style="yellow")
    return Text("")


@dataclass(frozen=True, slots=True)
class _Column:
    title: str
    width: int
    right: bool
    cell: Callable[[DeviceRecord, float], Text]


def _columns(ports: Sequence[DeviceRecord], width: int | None) -> list[_Column]:
    """The columns for this terminal width, each with its fixed width."""
    wide = width is None
    port_width = min(_PORT_MAX, max([4, *(len(printable(r.port)) for r in ports)]))
    name_cap = next(w for limit, w in _NAME_WIDTHS if wide or (width or 0) >= limit)
    # as wide as the longest name, up to the cap: it grows as devices appear, never as they run
    name_width = min(name_cap, max([len("Name"), *(cell_len(printable(r.name)) for r in ports)]))
    total = max([0, *(r.bytes_total for r in ports)])
    mb_width = max(len("MB"), 2 * len(format_mb(total)) + 1)

    def name(record: DeviceRecord, now: float) -> Text:
        if not record.name:
            return Text("-", style="dim")
        return Text(shorten_middle(printable(record.name), name_width))

    def state(record: DeviceRecord, now: float) -> Text:
        return Text(record.state.value, style=STATE_STYLE.get(record.state, ""))

    def eta(record: DeviceRecord, now: float) -> Text:
        return Text("" if record.state.finished else format_duration(record.eta(now)))

    columns = [
        _Column("Port", port_width, False, lambda r, now: Text(printable(r.port))),
        _Column("Name", name_width, False, name),
    ]
    if any(r.loader != "simpleio" for r in ports):
        # Lumia and UFP devices on the line: say which loader each device speaks.
        loader_width = max(len("Loader"), *(len(r.loader) for r in ports))
        columns.append(_Column("Loader", loader_width, False, lambda r, now: Text(r.loader)))
    if wide or (width or 0) >= _IDS_MIN_WIDTH:
        columns.append(_Column("ID", _ID_WIDTH, False, lambda r, now: Text(printable(r.unique_id))))
    columns.append(_Column("State", _STATE_WIDTH, False, state))
    if wide or (width or 0) >= _BAR_MIN_WIDTH:
        columns.append(_Column("Progress", _BAR_WIDTH, False, lambda r, now: _bar(r)))
    columns.append(_Column("%", 4, True, lambda r, now: Text(f"{percent(r)}%")))
    if wide or (width or 0) >= _MB_MIN_WIDTH:
        columns.append(
            _Column(
                "MB",
                mb_width,
                True,
                lambda r, now: Text(f"{format_mb(r.bytes_done)}/{format_mb(r.bytes_total)}"),
            )
        )
    columns.append(_Column("MB/s", 6, True, lambda r, now: Text(format_mb(r.rate(now)))))
    columns.append(_Column("ETA", 7, True, eta))
    columns.append(_Column("Result", _RESULT_MIN, False, lambda r, now: _result(r)))
    return columns


def _line(cells: list[Text], columns: list[_Column], widths: list[int], gap: str) -> Text:
    line = Text(no_wrap=True, overflow="ellipsis", end="\n")
    last = len(cells) - 1
    for index, (cell, column) in enumerate(zip(cells, columns, strict=True)):
        cell.overflow = "ellipsis"
        if index == last:
            cell.truncate(widths[index])  # no trailing padding
        else:
            cell.align("right" if column.right else "left", widths[index])
            cell.append(gap)
        line.append_text(cell)
    return line


def choose_rows(
    ports: Sequence[DeviceRecord], max_rows: int | None
) -> tuple[list[DeviceRecord], list[DeviceRecord]]:
    """Split *ports* into (shown, folded), at most *max_rows* lines in all.

    Failed and in-progress devices come first, then booted ones; one line
    is kept for the count of the folded rest, and the shown rows stay in
    port order.
    """
    if max_rows is None or len(ports) <= max_rows:
        return list(ports), []
    keep = max(0, max_rows - 1)

    def rank(item: tuple[int, DeviceRecord]) -> tuple[int, int]:
        index, record = item
        return (1 if record.state is DeviceState.BOOTED else 0, index)

    ranked = sorted(enumerate(ports), key=rank)
    shown_index = sorted(index for index, _ in ranked[:keep])
    shown_set = set(shown_index)
    shown = [ports[i] for i in shown_index]
    folded = [record for i, record in enumerate(ports) if i not in shown_set]
    return shown, folded


def folded_note(folded: Sequence[DeviceRecord], what: str) -> Text:
    """``... 29 more (27 booted, 2 in progress)``: what the frame had no room for."""
    booted = sum(1 for r in folded if r.state is DeviceState.BOOTED)
    failed = sum(1 for r in folded if r.state is DeviceState.FAILED)
    active = len(folded) - booted - failed
    parts = [f"{booted} booted"] if booted else []
    if failed:
        parts.append(f"{failed} failed")
    if active:
        parts.append(f"{active} in progress")
    return Text(
        f"... {len(folded)} more {what} not shown ({', '.join(parts)})",
        style="dim",
        no_wrap=True,
        overflow="ellipsis",
    )


def table_lines(
    ports: Sequence[DeviceRecord], *, now: float, width: int | None, max_rows: int | None
) -> list[Text]:
    """Header, rule and one row per port (folded to *max_rows* device lines)."""
    columns = _columns(ports, width)
    gap = "  " if width is None or width >= _MB_MIN_WIDTH else " "
    widths = [column.width for column in columns]
    if width is not None:  # the result takes what is left, and nothing more
        used = sum(widths[:-1]) + len(gap) * (len(widths) - 1)
        widths[-1] = max(_RESULT_MIN, width - used)
    else:
        widths[-1] = max(
            [_RESULT_MIN, *(_result(r).cell_len for r in ports)],
        )
    shown, folded = choose_rows(ports, max_rows)
    header = [Text(column.title, style="bold") for column in columns]
    table_width = min(sum(widths) + len(gap) * (len(widths) - 1), width or 10**6)
    lines = [
        _line(header, columns, widths, gap),
        Text("─" * table_width, style="dim", no_wrap=True, overflow="crop"),
    ]
    for record in shown:
        lines.append(_line([column.cell(record, now) for column in columns], columns, widths, gap))
    if folded:
        lines.append(folded_note(folded, "devices"))
    return lines
