"""Presentation of a line: the rich live table and the plain-text output.

Both are :class:`~parallel_flash.events.LineObserver` implementations; the
engine never imports this package. :func:`printable` is the one place that
makes device-supplied strings safe to show.
"""

from ._plain import PlainOutput as PlainOutput
from ._table import LiveTable as LiveTable
from ._table import render_line as render_line
from ._text import printable as printable

__all__ = ("LiveTable", "PlainOutput", "printable", "render_line")
