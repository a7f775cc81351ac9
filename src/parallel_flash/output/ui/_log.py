"""Log lines while the live table is drawn: above it, never through it.

A log line written straight to the terminal tears the live table (rich
redraws it in place). The command line installs :class:`ConsoleLogHandler`
as its one console handler; :func:`logging_above` diverts that handler into
the table's console for as long as the table is up, and back afterwards.
Nothing else about the application's logging is touched: no handler is
removed from the root logger or put back. A library caller that did not
install :class:`ConsoleLogHandler` gets one extra handler on the root logger
for the run, removed when the table goes.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, ClassVar, TextIO

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ("ConsoleLogHandler", "logging_above")


class ConsoleLogHandler(logging.StreamHandler[TextIO]):
    """The command line's console handler: lines on stderr, or above the live table."""

    #: Where records go instead while a live table is drawn (None = the stream).
    #: One for the process: there is one terminal.
    _diverted: ClassVar[logging.Handler | None] = None

    def emit(self, record: logging.LogRecord) -> None:
        target = ConsoleLogHandler._diverted
        if target is None:
            super().emit(record)
        else:
            target.handle(record)

    @classmethod
    @contextlib.contextmanager
    def diverted_to(cls, handler: logging.Handler) -> Iterator[None]:
        """Every ConsoleLogHandler hands its records to ``handler`` inside the block."""
        previous, cls._diverted = cls._diverted, handler
        try:
            yield
        finally:
            cls._diverted = previous


@contextlib.contextmanager
def logging_above(console: Console) -> Iterator[None]:
    """Inside the block, log records print above the live view drawn on ``console``."""
    from rich.logging import RichHandler  # rich only with the live view (start-up)

    handler = RichHandler(console=console, show_path=False, markup=False)
    root = logging.getLogger()
    if any(isinstance(h, ConsoleLogHandler) for h in root.handlers):
        with ConsoleLogHandler.diverted_to(handler):
            yield
        return
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
