"""Making device-supplied strings safe to show, and the number formats the views share.

A device's friendly name, its unique ID and its Log packets are bytes some
firmware chose. Shown raw, an ESC or CSI would move the cursor or recolour
the terminal, a bidi override would reorder what the operator reads, and a
newline would break the table's rows. So every such string passes through
:func:`printable` before it reaches a terminal or a plain log: anything that
is not a printable character is replaced by its Python escape (``\\x1b``),
which reads the same in a terminal, a log file and a bug report.

rich's :class:`~rich.text.Text` keeps ``[bold]`` literal (it is not markup),
but it passes ESC and C1 controls straight through, hence both steps.
"""

from __future__ import annotations

import math
import unicodedata
from typing import TYPE_CHECKING

from ...errors import status_text

if TYPE_CHECKING:
    from ...engine.records import DeviceRecord

__all__ = ("failure_reason", "format_duration", "format_mb", "printable")

#: Longest device string shown in full; a device may send a Log text of
#: any length, and one line of output should stay one line.
MAX_SHOWN = 500


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str, *, limit: int = MAX_SHOWN) -> str:
    """Return *text* with every non-printable character written as an escape.

    Covers C0 and C1 controls (ESC, CSI 0x9b, BEL, CR, LF, TAB, DEL), format
    characters (bidi overrides and isolates U+202A..U+202E, U+2066..U+2069,
    marks U+200E/U+200F/U+061C, zero-width characters), line and paragraph
    separators, lone surrogates (undecodable bytes) and unassigned code
    points. Spaces other than U+0020 are kept: they are harmless. The result
    is cut to *limit* characters with a note of how many were left out.
    """
    if text.isprintable():
        safe = text
    else:
        safe = "".join(
            ch if ch.isprintable() or unicodedata.category(ch) == "Zs" else _escape(ch)
            for ch in text
        )
    if len(safe) > limit:
        return f"{safe[:limit]}...(+{len(safe) - limit} chars)"
    return safe


def format_mb(count: float) -> str:
    """Bytes as decimal megabytes (1 MB = 1,000,000 bytes), one decimal."""
    return f"{count / 1e6:.1f}"


def format_duration(seconds: float | None) -> str:
    """``m:ss`` (or ``h:mm:ss``) for an ETA or elapsed time; ``-:--`` if unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-:--"
    whole = int(seconds + 0.5)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def failure_reason(record: DeviceRecord) -> str:
    """Why a failed device failed, printable: its error, else its status code."""
    if record.error:
        return printable(record.error)
    if record.status is not None:
        return status_text(record.status)
    return "failed"
