"""Log lines go above the live table: the console handler is diverted, nothing swapped."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from rich.console import Console

from parallel_flash.output.ui import ConsoleLogHandler, logging_above

log = logging.getLogger("parallel_flash.test_log")


@pytest.fixture
def root() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    root.setLevel(logging.INFO)
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def _console() -> tuple[Console, io.StringIO]:
    text = io.StringIO()
    return Console(file=text, width=100, force_terminal=False), text


def test_the_console_handler_writes_above_the_table_then_to_its_stream(
    root: logging.Logger,
) -> None:
    stream = io.StringIO()
    handler = ConsoleLogHandler(stream)
    root.addHandler(handler)
    console, drawn = _console()
    with logging_above(console):
        log.warning("during the table")
        assert handler in root.handlers  # diverted, never removed
    log.warning("after the table")
    assert "during the table" in drawn.getvalue()
    assert "during the table" not in stream.getvalue()
    assert "after the table" in stream.getvalue()
    assert "after the table" not in drawn.getvalue()


def test_a_library_caller_gets_one_handler_for_the_run_only(root: logging.Logger) -> None:
    own = logging.StreamHandler(io.StringIO())  # the application's: left alone
    root.addHandler(own)
    before = list(root.handlers)
    console, drawn = _console()
    with logging_above(console):
        assert len(root.handlers) == len(before) + 1
        log.warning("shown above")
    assert root.handlers == before
    assert "shown above" in drawn.getvalue()
