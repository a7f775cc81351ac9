"""Presentation of a line: the live view (table or port grid) and the plain-text output.

Both are :class:`~parallel_flash.engine.records.LineObserver` implementations; the
engine never imports this package. :func:`printable` is the one place that
makes device-supplied strings safe to show; :class:`LineView` is what the
views know about a line (bounded over a shift, fed by observer calls).
"""

from ._frame import render_line as render_line
from ._live import LiveTable as LiveTable
from ._log import ConsoleLogHandler as ConsoleLogHandler
from ._log import logging_above as logging_above
from ._plain import PlainOutput as PlainOutput
from ._text import printable as printable
from ._view import FailedDevice as FailedDevice
from ._view import LineView as LineView
from ._view import ViewSnapshot as ViewSnapshot

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
