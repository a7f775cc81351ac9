"""Small text-layout rules the views share: shortening names, ordering and labelling ports.

Device names on a line share long prefixes (``Contoso.Simulated.001`` ..
``Contoso.Simulated.128``) and so do port paths (``1-1.4.1`` ..
``1-1.4.7``): cutting the end, as a terminal does, leaves every row
reading the same. These helpers keep the distinguishing tail instead.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.cells import cell_len, get_character_cell_size

from ...engine.records import DeviceRecord, DeviceState

__all__ = (
    "ELLIPSIS",
    "STATE_GLYPH",
    "STATE_STYLE",
    "percent",
    "port_labels",
    "shorten_middle",
)

ELLIPSIS = "…"

#: Colour of each state, in the table's State column and the grid's cells.
STATE_STYLE: dict[DeviceState, str] = {
    DeviceState.FOUND: "dim",
    DeviceState.IDENTIFYING: "cyan",
    DeviceState.RESETTING: "yellow",
    DeviceState.SENDING_SDI: "blue",
    DeviceState.SENDING_WIM: "blue",
    DeviceState.AWAITING_STATUS: "magenta",
    DeviceState.BOOTED: "bold green",
    DeviceState.FAILED: "bold red",
}

#: One glyph per state, so the grid reads without colour too (a log, a
#: screenshot, colour-blind operators).
STATE_GLYPH: dict[DeviceState, str] = {
    DeviceState.FOUND: "·",
    DeviceState.IDENTIFYING: "?",
    DeviceState.RESETTING: "↻",
    DeviceState.SENDING_SDI: "↑",
    DeviceState.SENDING_WIM: "↑",
    DeviceState.AWAITING_STATUS: "…",
    DeviceState.BOOTED: "✓",
    DeviceState.FAILED: "✗",
}

#: Characters a port path is split at (sysfs ``1-1.4.2``, simulated ``sim-12``).
_PORT_SEPARATORS = "-.:/"


def shorten_middle(text: str, width: int) -> str:
    """*text* cut to *width* terminal cells by dropping its middle, not its end.

    Two thirds of the room go to the tail, where names on one line differ
    (``Contoso.MSM…D301_ATT.3.2.1``).
    """
    if width <= 0:
        return ""
    if cell_len(text) <= width:
        return text
    if width == 1:
        return ELLIPSIS
    room = width - 1
    head_room = room // 3
    head, used = [], 0
    for char in text:
        size = get_character_cell_size(char)
        if used + size > head_room:
            break
        head.append(char)
        used += size
    tail_room = room - used
    tail: list[str] = []
    used = 0
    for char in reversed(text):
        size = get_character_cell_size(char)
        if used + size > tail_room:
            break
        tail.append(char)
        used += size
    return "".join(head) + ELLIPSIS + "".join(reversed(tail))


def port_labels(ports: Iterable[str]) -> tuple[str, dict[str, str]]:
    """(common prefix, {port: the rest}) for the grid's cells.

    The prefix ends at a separator, so ``sim-1`` and ``sim-12`` give
    ``sim-`` with labels ``1`` and ``12``, never ``sim-1`` and ``""``/``2``.
    """
    names = list(ports)
    if len(names) < 2:
        return "", {name: name for name in names}
    first, last = min(names), max(names)
    common = 0
    while common < min(len(first), len(last)) and first[common] == last[common]:
        common += 1
    prefix = first[:common]
    while prefix and prefix[-1] not in _PORT_SEPARATORS:
        prefix = prefix[:-1]
    if any(len(name) == len(prefix) for name in names):
        prefix = ""
    return prefix, {name: name[len(prefix) :] for name in names}


def percent(record: DeviceRecord) -> int:
    """Whole percent of the image sent; 100 only once every byte is."""
    if record.bytes_total <= 0:
        return 0
    return min(100, record.bytes_done * 100 // record.bytes_total)
