"""One frame of the live view: a pure function of the line's state, the clock and the terminal.

The frame fits the terminal it is drawn on, whatever the line's size::

    title
    the devices: a table (a row per port) below GRID_FROM ports, else the port grid
    ─────
    totals: devices, booted, failed, in progress, %, MB, MB/s, ETA, elapsed
    Failed (N): port  name  ID  reason, one line each

What does not fit is folded into a count, booted devices first, so failed
and in-progress ones stay on screen; the totals line is always drawn. The
final frame (``final=True``, left on screen when the run ends) lists every
failed device in full, and never the whole shift's successes.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.text import Text

from ...engine.records import DeviceRecord
from ..totals import LineTotals
from ._grid import GRID_FROM, grid_lines
from ._layout import shorten_middle
from ._table import table_lines
from ._text import format_duration, format_mb, printable
from ._view import FailedDevice, LineView, ViewSnapshot

__all__ = ("FRAME_OVERHEAD", "render_line")

#: Lines a frame takes besides the devices and the failures: the rule and
#: the totals, plus one spare so a line logged above the live view never
#: pushes the totals off screen.
FRAME_OVERHEAD = 3
#: Fewest lines the devices get, however many failures there are.
_MIN_DEVICE_LINES = 4
_NAME_MAX = 32


def _totals_line(snap: ViewSnapshot, width: int | None, final: bool) -> Text:
    """One line, its least useful parts dropped first when the terminal is narrow."""
    totals: LineTotals = snap.totals
    plural = "" if totals.devices == 1 else "s"
    counts = Text(f"{totals.devices} device{plural}: ", style="bold")
    counts.append(f"{totals.booted} booted", style="green")
    counts.append(", ")
    counts.append(f"{totals.failed} failed", style="bold red" if totals.failed else "")
    if totals.in_progress:
        counts.append(f", {totals.in_progress} {'unfinished' if final else 'in progress'}")
    share = totals.bytes_done * 100 // totals.bytes_total if totals.bytes_total else 0
    # (priority, text): the lowest priority goes first when room is short
    parts: list[tuple[int, Text]] = [
        (5, counts),
        (4, Text(f"{min(100, share)}%")),
        (3, Text(f"{format_mb(totals.rate)} MB/s", style="bold")),
    ]
    if totals.in_progress and not final:
        parts.append((2, Text(f"ETA {format_duration(snap.eta)}")))
    parts.append((1, Text(f"in {format_duration(totals.seconds)}")))
    parts.append((0, Text(f"{format_mb(totals.bytes_done)}/{format_mb(totals.bytes_total)} MB")))
    while True:
        line = Text("  ").join(text for _, text in parts)
        if width is None or line.cell_len <= width or len(parts) == 1:
            break
        parts.remove(min(parts, key=lambda part: part[0]))
    line.no_wrap = True
    line.overflow = "ellipsis"
    return line


def _failure_lines(
    failures: Sequence[FailedDevice], *, cap: int | None, final: bool, width: int | None
) -> list[Text]:
    """``Failed (N):`` and each failure: port, name, ID, reason.

    While live, a failure is one line cut at the terminal's edge, so what
    the operator acts on (where, why) comes first and the ID last; the
    newest failures are kept when capped. The final recap loses nothing:
    the reason goes on a line of its own when the whole does not fit.
    """
    if not failures:
        return []
    lines = [Text(f"Failed ({len(failures)}):", style="bold red")]
    shown = list(failures)
    if cap is not None and len(shown) > cap - 1:
        room = max(1, cap - 2)
        lines.append(
            Text(f"... {len(shown) - room} earlier failures not shown", style="dim", no_wrap=True)
        )
        shown = shown[-room:]
    for failure in shown:
        name = shorten_middle(printable(failure.name), _NAME_MAX) if failure.name else "-"
        unique_id = printable(failure.unique_id) or "-"
        reason = Text(failure.reason, style="red")
        line = Text("✗ ", style="bold red", no_wrap=not final, overflow="ellipsis")
        line.append(printable(failure.port), style="bold")
        line.append(f"  {name}  ")
        if not final:
            line.append_text(reason)
            line.append(f"  {unique_id}", style="dim")
            lines.append(line)
            continue
        line.append(unique_id, style="dim")
        if width is None or line.cell_len + 2 + reason.cell_len <= width:
            line.append("  ")
            line.append_text(reason)
            lines.append(line)
        else:
            lines += [line, Text("    ").append_text(reason)]
    return lines


def render_line(
    line: LineView | Sequence[DeviceRecord],
    *,
    now: float,
    title: str | None = None,
    width: int | None = None,
    height: int | None = None,
    final: bool = False,
) -> RenderableType:
    """Build the frame for *line* as it stands at monotonic time *now*.

    Pure: the same state, *now* and terminal size give the same frame.
    Every device-supplied string goes through :func:`printable` into a
    :class:`~rich.text.Text`, so it can neither be read as markup nor reach
    the terminal as a control sequence. MB is 1,000,000 bytes.

    :param line: the view's state, or the records of a line (a one-off frame)
    :param title: shown above the devices (literally, like device strings)
    :param width: the terminal's width; no line of the frame is wider.
        None draws every column at its natural width
    :param height: the terminal's height; a live frame is never taller.
        None draws every device
    :param final: the frame left on screen at the end: every failure is
        listed in full (it may be taller than *height*; it stays in the
        scrollback)
    """
    view = line if isinstance(line, LineView) else LineView(line)
    snap = view.snapshot(now)
    lines: list[Text] = []
    if title:
        lines.append(Text(printable(title), style="bold", no_wrap=True, overflow="ellipsis"))
    grid = len(snap.ports) >= GRID_FROM
    # In the table failures are rows (and their reason a column) while live.
    show_failures = final or grid
    budget = None if height is None else height - len(lines) - FRAME_OVERHEAD
    failure_cap = None
    if budget is not None and show_failures and not final:
        failure_cap = max(2, min(len(snap.failures) + 1, (budget - _MIN_DEVICE_LINES)))
        failure_cap = max(2, min(failure_cap, budget // 3 + 1))
    failures = (
        _failure_lines(snap.failures, cap=failure_cap, final=final, width=width)
        if show_failures
        else []
    )
    device_lines = None
    if budget is not None:  # the final frame's failures may run past the screen's end
        device_lines = max(_MIN_DEVICE_LINES, budget - (0 if final else len(failures)))
    if grid:
        lines += grid_lines(snap.ports, width=width, max_lines=device_lines)
    else:
        rows = None if device_lines is None else device_lines - 2  # header and rule
        lines += table_lines(snap.ports, now=now, width=width, max_rows=rows)
    rule_width = width if width is not None else max(line.cell_len for line in lines)
    lines.append(Text("─" * rule_width, style="dim", no_wrap=True, overflow="crop"))
    lines.append(_totals_line(snap, width, final))
    lines += failures
    return Group(*lines)
