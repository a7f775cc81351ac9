"""Summing up reports: totals, failures by reason, yield per port, and a CSV of every device.

A line's records pile up as JSON-lines files, a file per shift or per day
(``--report`` takes a strftime pattern), older ones gzip'd by logrotate
(read as they are). The questions asked of them are
always the same -- how many, how many failed and why, which port is bad --
and a spreadsheet wants CSV. :func:`summarize_reports` answers them for one
file or many; ``parallel-flash report`` prints the answer.

Files written by a run that crashed mid-line, or by an older version, are
read as far as they go: a line that is not a JSON record is counted and
named, never silently dropped, and fields a record lacks read as unknown.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import os
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any, TextIO

from ..errors import FormatError, InputError
from ..formats import open_regular
from ..transport.ports import port_sort_key

__all__ = ("CSV_COLUMNS", "PortYield", "ReportDigest", "summarize_reports", "write_csv")

#: Columns of the CSV export, in order: who, where, what, how it ended, numbers.
CSV_COLUMNS: tuple[str, ...] = (
    "station",
    "host",
    "port",
    "slot",
    "name",
    "unique_id",
    "ok",
    "state",
    "reason",
    "error",
    "status",
    "loader",
    "bytes",
    "bytes_total",
    "seconds",
    "stream_seconds",
    "mb_per_s",
    "started",
    "finished",
    "image_sha256",
    "version",
    "file",
)


@dataclass(slots=True)
class PortYield:
    """How one port (of one station) did."""

    station: str
    port: str
    devices: int = 0
    booted: int = 0

    @property
    def failed(self) -> int:
        return self.devices - self.booted

    @property
    def yield_percent(self) -> float:
        return 100.0 * self.booted / self.devices if self.devices else 0.0


@dataclass(slots=True)
class ReportDigest:
    """What a set of reports says, device records and run summaries alike."""

    files: list[str] = field(default_factory=list)
    #: every device record, in file order, with the file it came from
    devices: list[dict[str, Any]] = field(default_factory=list)
    runs: int = 0
    interrupted_runs: int = 0
    #: (file, line number, what is wrong) for each line that is not a record
    unreadable: list[tuple[str, int, str]] = field(default_factory=list)

    @property
    def booted(self) -> int:
        return sum(1 for record in self.devices if record.get("ok") is True)

    @property
    def failed(self) -> int:
        return len(self.devices) - self.booted

    @property
    def stations(self) -> list[str]:
        return sorted({_text(record.get("station")) for record in self.devices})

    def failures_by_reason(self) -> list[tuple[str, int]]:
        """(reason, count), most frequent first; records without a reason count as unknown."""
        counts = Counter(
            _text(record.get("reason"), "unknown")
            for record in self.devices
            if record.get("ok") is not True
        )
        return sorted(counts.items(), key=lambda item: (-item[1], item[0]))

    def port_yields(self) -> list[PortYield]:
        """A row per (station, port), in station then natural port order."""

        ports: dict[tuple[str, str], PortYield] = {}
        for record in self.devices:
            key = (_text(record.get("station")), _text(record.get("port")))
            row = ports.setdefault(key, PortYield(station=key[0], port=key[1]))
            row.devices += 1
            row.booted += record.get("ok") is True
        order = sorted(ports, key=lambda key: (key[0], port_sort_key(key[1])))
        return [ports[key] for key in order]


def _text(value: object, missing: str = "-") -> str:
    return value if isinstance(value, str) and value else missing


#: The first bytes of a gzip stream (logrotate's ``compress``).
_GZIP_MAGIC = b"\x1f\x8b"


def _open_lines(path: str, stack: contextlib.ExitStack) -> TextIO:
    """The text of a report: a regular file only (a FIFO would wait forever), gzip'd or not."""
    try:
        raw = stack.enter_context(open_regular(path, wanted="a report file"))
    except FormatError as exc:
        raise InputError(f"cannot read report {path}: {exc.problem}") from None
    compressed = raw.read(2) == _GZIP_MAGIC
    raw.seek(0)
    binary: IO[bytes] | gzip.GzipFile = raw
    if compressed:
        binary = stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))
    return stack.enter_context(io.TextIOWrapper(binary, encoding="utf-8", errors="replace"))


def _read_into(digest: ReportDigest, path: str) -> None:
    with contextlib.ExitStack() as stack:
        file = _open_lines(path, stack)
        number = 0
        try:
            for number, line in enumerate(file, 1):
                _read_line(digest, path, number, line)
        except (OSError, EOFError, zlib.error) as exc:
            # A compressed report cut short (a crash while logrotate compressed it):
            # the lines before the damage count, the rest is named.
            digest.unreadable.append(
                (path, number + 1, f"cannot read further: {getattr(exc, 'strerror', None) or exc}")
            )


def _read_line(digest: ReportDigest, path: str, number: int, line: str) -> None:
    """Count one line: a device record, a run's summary, or a line that is neither (named)."""
    if not line.strip():
        return
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as exc:
        digest.unreadable.append((path, number, f"not valid JSON ({exc.msg})"))
        return
    kind = entry.get("type") if isinstance(entry, dict) else None
    if kind == "device":
        digest.devices.append({**entry, "file": path})
    elif kind == "summary":
        # A rotated report closes each file with a summary; the run ends once.
        if entry.get("continued") is not True:
            digest.runs += 1
            digest.interrupted_runs += entry.get("interrupted") is True
    else:
        digest.unreadable.append((path, number, "not a device or summary record"))


def summarize_reports(paths: Iterable[str | os.PathLike[str]]) -> ReportDigest:
    """Read every report in *paths* (JSON lines, as ``--report`` writes them).

    :raises ~parallel_flash.errors.InputError: a file cannot be read, or no
        file was given
    """
    digest = ReportDigest()
    for path in paths:
        name = os.fspath(path)
        if os.path.isdir(name):
            raise InputError(f"{name} is a directory, not a report file")
        _read_into(digest, name)
        digest.files.append(name)
    if not digest.files:
        raise InputError("no report file given")
    return digest


def _cell(value: object) -> str | int | float:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return value
    return json.dumps(value, ensure_ascii=True)


def write_csv(digest: ReportDigest, stream: TextIO) -> int:
    """Write a CSV row per device record (header first); returns the rows written.

    Text is written as it was recorded (the report keeps device strings
    exactly); spreadsheet formula prefixes (= + - @) are quoted with a
    leading apostrophe so a device name cannot run as a formula.
    """
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for record in digest.devices:
        row = []
        for column in CSV_COLUMNS:
            value = _cell(record.get(column))
            if (
                isinstance(value, str)
                and value[:1] in ("=", "+", "-", "@")
                and column
                in (
                    "name",
                    "unique_id",
                    "error",
                    "port",
                    "station",
                    "host",
                )
            ):
                value = "'" + value
            row.append(value)
        writer.writerow(row)
    return len(digest.devices)
