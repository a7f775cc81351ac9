"""Presentation of a line: the live view (table or port grid) and the plain-text output.

Both are :class:`~parallel_flash.engine.records.LineObserver` implementations; the
engine never imports this package. :func:`printable` is the one place that
makes device-supplied strings safe to show; :class:`LineView` is what the
views know about a line (bounded over a shift, fed by observer calls).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._plain import PlainOutput as PlainOutput
from ._text import printable as printable
from ._view import FailedDevice as FailedDevice
from ._view import LineView as LineView
from ._view import ViewSnapshot as ViewSnapshot

if TYPE_CHECKING:
    from ._frame import render_line as render_line
    from ._live import LiveTable as LiveTable
    from ._log import ConsoleLogHandler as ConsoleLogHandler
    from ._log import logging_above as logging_above

__all__ = (
    "ConsoleLogHandler",
    "FailedDevice",
    "LineView",
    "LiveTable",
    "PlainOutput",
    "ViewSnapshot",
    "logging_above",
    "printable",
    "render_line",
)

#: Loaded on first use: only the live view needs rich.console (a third of
#: start-up's imports; ``--plain`` and the other commands do without).
_LAZY = {
    "ConsoleLogHandler": "._log",
    "LiveTable": "._live",
    "logging_above": "._log",
    "render_line": "._frame",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
