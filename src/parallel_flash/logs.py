"""Logging helpers: a TRACE level for per-transfer lines and a lazy hex dump."""

from __future__ import annotations

import logging

__all__ = ("TRACE", "HexDump")

#: Below DEBUG: one line per USB transfer. Only enabled with ``-vvv``.
TRACE = 5
logging.addLevelName(TRACE, "TRACE")


class HexDump:
    """Formats bytes as hex only if the log record is actually emitted."""

    __slots__ = ("_data", "_limit")

    def __init__(self, data: bytes | memoryview, limit: int = 64) -> None:
        self._data = data
        self._limit = limit

    def __str__(self) -> str:
        head = bytes(self._data[: self._limit]).hex()
        more = len(self._data) - self._limit
        return f"{head}...(+{more} bytes)" if more > 0 else head
