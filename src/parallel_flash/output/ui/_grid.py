"""The port grid: one small cell per port, for lines too long to read row by row.

From about 32 devices a row per device no longer fits a terminal, and an
operator scanning a line wants where, not what: which port is red. Each
cell is the port's distinguishing tail (the prefix common to all ports is
said once above the grid), a glyph and a colour for the state, and the
percentage sent. 128 ports fit 80x24 this way, 13 rows of 10 cells.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

from ...engine.records import DeviceRecord, DeviceState
from ._layout import STATE_GLYPH, STATE_STYLE, percent, port_labels, shorten_middle
from ._table import folded_note
from ._text import printable

__all__ = ("GRID_FROM", "grid_lines")

#: Ports from which the frame draws the grid instead of the table.
GRID_FROM = 32
#: Longest port label a cell shows (its tail is kept).
_LABEL_MAX = 8
_GAP = " "
_LEGEND = "✓ booted  ✗ failed  ↑ sending  … status  ↻ reset  ? identifying  · found"


def _cell(record: DeviceRecord, label: str, label_width: int) -> Text:
    style = STATE_STYLE.get(record.state, "")
    cell = Text(label.rjust(label_width))
    cell.append(STATE_GLYPH.get(record.state, " "), style=style)
    cell.append(str(percent(record)).rjust(3), style=style)
    return cell


def grid_lines(
    ports: Sequence[DeviceRecord], *, width: int | None, max_lines: int | None
) -> list[Text]:
    """A heading and the grid, in at most *max_lines* lines.

    When the cells do not fit, booted ports are folded into a count first,
    as the table does with its rows.
    """
    prefix, labels = port_labels(printable(record.port) for record in ports)
    shown_labels = {port: shorten_middle(label, _LABEL_MAX) for port, label in labels.items()}
    label_width = max([1, *(len(label) for label in shown_labels.values())])
    pitch = label_width + 4 + len(_GAP)
    per_row = max(1, ((width or 16 * pitch) + len(_GAP)) // pitch)

    heading = Text(no_wrap=True, overflow="ellipsis")
    heading.append(f"ports {prefix}*" if prefix else "ports", style="bold")
    heading.append(": port, state, % sent", style="dim")
    heading.append(f"  {_LEGEND}", style="dim")
    lines = [heading]

    cells = list(ports)
    folded: list[DeviceRecord] = []
    rows_needed = -(-len(cells) // per_row)
    if max_lines is not None and rows_needed > max_lines - 1:
        capacity = max(0, (max_lines - 2) * per_row)
        not_booted = [r for r in cells if r.state is not DeviceState.BOOTED]
        keep = set(map(id, not_booted[:capacity]))
        booted = [r for r in cells if r.state is DeviceState.BOOTED]
        keep.update(map(id, booted[: max(0, capacity - len(keep))]))
        folded = [r for r in cells if id(r) not in keep]
        cells = [r for r in cells if id(r) in keep]

    for start in range(0, len(cells), per_row):
        row = Text(no_wrap=True, overflow="crop")
        for index, record in enumerate(cells[start : start + per_row]):
            if index:
                row.append(_GAP)
            label = shown_labels[printable(record.port)]
            row.append_text(_cell(record, label, label_width))
        lines.append(row)
    if folded:
        lines.append(folded_note(folded, "ports"))
    return lines
