"""JSON-lines files: append one whole line or none, read them back naming the bad line.

The report and the MQTT outbox both append to such files; the rules live here
once.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from typing import Any

from ..errors import FormatError

__all__ = ("append_json_line", "read_report")


def append_json_line(
    fd: int,
    entry: dict[str, Any],
    *,
    end: int,
    sync: bool,
    write: Callable[[int, memoryview], int] = os.write,
) -> int:
    """Append *entry* to *fd* as one JSON line, whole or not at all; returns the new length.

    The rule for every JSON-lines file this package appends to (the report,
    the MQTT outbox): a write cut short (a full disk, an I/O error) is cut
    back to *end*, the length before it, so no partial line is left for the
    next append to glue itself onto. ``sync`` also puts the line on disk.
    ASCII only (``ensure_ascii``): ``cat`` on the file cannot drive a terminal.

    :raises OSError: the write or the sync failed (the file is as it was)
    """
    data = (json.dumps(entry, ensure_ascii=True, separators=(",", ":")) + "\n").encode()
    try:
        view = memoryview(data)
        while view:  # a regular file takes it all unless the disk is full
            view = view[write(fd, view):]
        if sync:
            os.fsync(fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, end)
        raise
    return end + len(data)


def read_report(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Parse a JSON-lines report; blank lines are skipped.

    :raises ~parallel_flash.errors.FormatError: naming the line that is not
        a JSON object
    """
    name = os.fspath(path)
    entries: list[dict[str, Any]] = []
    with open(name, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise FormatError(name, f"line {number}", f"not valid JSON ({exc.msg})") from None
            if not isinstance(entry, dict):
                raise FormatError(name, f"line {number}", "not a JSON object")
            entries.append(entry)
    return entries
