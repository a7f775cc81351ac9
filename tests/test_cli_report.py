"""``parallel-flash report FILE...``: totals, failures by reason, yield per port, CSV export."""

from __future__ import annotations

import csv
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from parallel_flash.output.report_stats import CSV_COLUMNS, summarize_reports


def device(port: str, ok: bool, *, station: str = "st1", reason: str = "none", **extra: Any) -> str:
    entry = {
        "type": "device", "schema_version": 1, "version": "0.1.0", "station": station,
        "host": station, "port": port, "slot": 1, "name": "Contoso.Simulated.001",
        "unique_id": "00000011-f151-a509-0000-000000000001", "ok": ok,
        "state": "booted" if ok else "failed", "reason": reason,
        "error": None if ok else f"{reason} happened", "status": 0 if ok else -5,
        "bytes": 10, "bytes_total": 10,
    }  # fmt: skip
    entry.update(extra)
    return json.dumps(entry)


def summary(*, interrupted: bool = False) -> str:
    return json.dumps({"type": "summary", "devices": 3, "interrupted": interrupted})


def write_reports(tmp_path: Path) -> tuple[Path, Path]:
    first = tmp_path / "shift-1.jsonl"
    first.write_text(
        "\n".join(
            [
                device("1-1.2", True),
                device("1-1.10", False, reason="disconnected"),
                device("1-1.2", False, reason="device-status"),
                summary(),
                device("1-1.10", True),
                '{"type":"device","port":"1-1.',  # a run that died mid-line
                summary(interrupted=True),
            ]
        )
        + "\n"
    )
    second = tmp_path / "shift-2.jsonl"
    second.write_text(
        "\n".join(
            [
                device(
                    "1-1.2",
                    False,
                    station="st2",
                    reason="disconnected",
                    name='=HYPERLINK("http://x")',
                ),
                # an older record: no station, no reason
                json.dumps({"type": "device", "port": "1-1.3", "ok": False, "error": "x"}),
                summary(),
            ]
        )
        + "\n"
    )
    return first, second


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "parallel_flash", "report", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_totals_reasons_and_port_yield(tmp_path: Path) -> None:
    first, second = write_reports(tmp_path)
    done = cli(str(first), str(second))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.splitlines()[0] == (
        "2 reports, 3 runs (1 interrupted), 3 stations: 6 devices, 2 booted, 4 failed, yield 33.3 %"
    )
    assert f"warning: {first} line 6: not valid JSON" in out
    reasons = out[out.index("Failures by reason:") : out.index("Yield per port:")].splitlines()
    assert reasons[1].split() == ["disconnected", "2", "50.0", "%"]
    assert {tuple(line.split()[:2]) for line in reasons[2:4]} == {
        ("device-status", "1"),
        ("unknown", "1"),
    }
    ports = out[out.index("Yield per port:") :].splitlines()[2:]
    # station, then natural port order: 1-1.2 before 1-1.10
    names = [line.split()[0] for line in ports]
    assert names == ["-/1-1.3", "st1/1-1.2", "st1/1-1.10", "st2/1-1.2"]
    assert ports[1].split()[1:] == ["2", "1", "1", "50.0", "%"]


def test_csv_export_has_a_row_per_device(tmp_path: Path) -> None:
    first, second = write_reports(tmp_path)
    target = tmp_path / "out.csv"
    done = cli(str(first), str(second), "--csv", str(target))
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(target.read_text().splitlines()))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert len(rows) == 6
    assert rows[0]["port"] == "1-1.2" and rows[0]["ok"] == "true" and rows[0]["status"] == "0"
    assert rows[0]["file"] == str(first)
    assert rows[4]["name"].startswith("'=HYPERLINK")  # never a live formula
    # to standard output, with the summary on standard error
    piped = cli(str(first), "--csv", "-")
    assert piped.stdout.splitlines()[0] == ",".join(CSV_COLUMNS)
    assert "4 devices" in piped.stderr
    again = cli(str(first), "--csv", str(target))  # never overwrites
    assert again.returncode == 2 and "already exists" in again.stderr


def test_missing_or_wrong_files_are_one_line_errors(tmp_path: Path) -> None:
    for args, message in (
        ([str(tmp_path / "nope.jsonl")], "cannot read report"),
        ([str(tmp_path)], "is a directory"),
    ):
        done = cli(*args)
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def test_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "station.jsonl"
    os.mkfifo(fifo)
    done = cli(str(fifo))  # bounded by cli()'s timeout: open() on a FIFO waits for a writer
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        f"parallel-flash: error: cannot read report {fifo}: is a FIFO (named pipe), "
        "not a regular file; give a report file"
    )


def test_reports_logrotate_compressed_are_read_as_they_are(tmp_path: Path) -> None:
    first, second = write_reports(tmp_path)
    packed = tmp_path / "station.jsonl.2.gz"
    packed.write_bytes(gzip.compress(first.read_bytes()))
    plain, compressed = cli(str(first), str(second)), cli(str(packed), str(second))
    assert compressed.returncode == 0, compressed.stderr
    assert compressed.stdout == plain.stdout.replace(str(first), str(packed))
    # One cut short (a crash while logrotate compressed it): the lines before count.
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(packed.read_bytes()[:-40])
    digest = summarize_reports([cut])
    assert 0 < len(digest.devices) <= 4
    assert digest.unreadable[-1][0] == str(cut)
    assert digest.unreadable[-1][2].startswith("cannot read further")
    done = cli(str(cut))
    assert done.returncode == 0 and "Traceback" not in done.stderr
    assert f"warning: {cut} line" in done.stdout


def test_library_reads_the_same(tmp_path: Path) -> None:
    first, _ = write_reports(tmp_path)
    digest = summarize_reports([first])
    assert (len(digest.devices), digest.booted, digest.failed, digest.runs) == (4, 2, 2, 2)
    (unreadable,) = digest.unreadable
    assert unreadable[:2] == (str(first), 6) and unreadable[2].startswith("not valid JSON")
