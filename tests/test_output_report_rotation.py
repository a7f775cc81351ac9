"""The report rotates at record boundaries: a strftime pattern (a file per day or shift) and
a reopen (logrotate moved the file). Every record lands in exactly one file, whole; each file
closes with a summary of its own records; every new file passes the first file's checks.

The clock is injected (``wall_clock``); the reopen through a real signal in a real
process is in tests/test_cli_report_rotation.py and tests/test_engine_station_emulated.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest

from parallel_flash.engine.records import DeviceRecord, DeviceState, FailureReason
from parallel_flash.errors import InputError
from parallel_flash.output.report import JsonlReport, expand_report_path, read_report
from parallel_flash.output.report_stats import summarize_reports
from test_output_record_schema import validator

SHA = hashlib.sha256(b"sdi+wim").hexdigest()
#: 2026-03-01 12:00 local time, and the following days.
DAY = time.mktime((2026, 3, 1, 12, 0, 0, 0, 0, -1))


class WallClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def open_report(
    path: Path | str, clock: WallClock, *, append: bool = False, wim: Path | None = None
) -> JsonlReport:
    return JsonlReport.open(
        path,
        wim=wim or "/images/boot.wim",
        sdi=None,
        image_sha256=SHA,
        image_bytes=1000,
        append=append,
        clock=lambda: 50.0,
        wall_clock=clock,
    )


def finished(slot: int, *, ok: bool = True) -> DeviceRecord:
    record = DeviceRecord(
        slot=slot,
        port=f"1-1.{slot}",
        name=f"Contoso.{slot}",
        unique_id=f"id-{slot}",
        started=10.0,
        wall_started=DAY,
        stream_started=11.0,
        bytes_total=1000,
        bytes_done=1000 if ok else 10,
    )
    record.state = DeviceState.BOOTED if ok else DeviceState.FAILED
    if not ok:
        record.error, record.status = "status -5", -5
        record.reason = FailureReason.DEVICE_STATUS
    record.finished = 20.0
    return record


def lines(path: Path) -> list[dict[str, Any]]:
    """Every line of *path* as a record: each one whole JSON (no split line anywhere)."""
    text = path.read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def slots(path: Path) -> list[int]:
    return [entry["slot"] for entry in lines(path) if entry["type"] == "device"]


def test_a_pattern_starts_a_new_file_when_its_value_changes(tmp_path: Path) -> None:
    clock = WallClock(DAY)
    pattern = str(tmp_path / "pf-%Y-%m-%d.jsonl")
    day1, day2, day3 = (tmp_path / f"pf-2026-03-0{n}.jsonl" for n in (1, 2, 3))
    report = open_report(pattern, clock)
    with report:
        assert report.path == str(day1) and day1.exists()
        report.device_finished(finished(1))
        report.device_finished(finished(2, ok=False))
        clock.now = DAY + 86_400  # midnight passed: the next record starts day 2
        under_way = finished(3)
        report.device_added(under_way)  # still running when the day changes
        report.device_finished(finished(4))
        assert report.path == str(day2)
        report.device_finished(under_way)
        clock.now = DAY + 2 * 86_400 + 60
    # The summary goes where the last record went: no file only for it.
    assert not day3.exists()
    assert report.files == [str(day1), str(day2)]
    assert slots(day1) == [1, 2] and slots(day2) == [4, 3]
    first, second = lines(day1)[-1], lines(day2)[-1]
    assert first["type"] == "summary" and first["continued"] is True
    assert (first["devices"], first["booted"], first["failed"], first["unfinished"]) == (2, 1, 1, 0)
    assert first["interrupted"] is False
    assert second["continued"] is False and second["devices"] == 2 and second["booted"] == 2
    check = validator()
    for path in (day1, day2):
        for entry in lines(path):
            check.validate(entry)
    digest = summarize_reports([day1, day2])
    assert digest.runs == 1 and len(digest.devices) == 4 and digest.failed == 1


def test_an_interrupted_run_marks_only_its_last_file(tmp_path: Path) -> None:
    clock = WallClock(DAY)
    report = open_report(str(tmp_path / "%d.jsonl"), clock)
    cut_off = finished(2)
    cut_off.state = DeviceState.SENDING_WIM
    cut_off.finished = None
    with pytest.raises(KeyboardInterrupt), report:
        report.device_finished(finished(1))
        report.device_added(cut_off)
        clock.now += 86_400
        raise KeyboardInterrupt
    first, last = tmp_path / "01.jsonl", tmp_path / "02.jsonl"
    assert lines(first)[-1]["interrupted"] is False and lines(first)[-1]["continued"] is True
    assert [e.get("error", e["type"]) for e in lines(last)] == ["interrupted", "summary"]
    assert lines(last)[-1]["interrupted"] is True


def test_reopen_after_the_file_was_moved_continues_at_the_same_path(tmp_path: Path) -> None:
    path = tmp_path / "station.jsonl"
    moved = tmp_path / "station.jsonl.1"
    report = open_report(path, WallClock(DAY))
    with report:
        report.device_finished(finished(1))
        path.rename(moved)  # logrotate
        report.request_reopen()
        assert report.rotate() is True  # the session calls it on the loop right after
        assert path.exists() and path.stat().st_size == 0
        report.device_finished(finished(2))
    assert slots(moved) == [1] and lines(moved)[-1]["continued"] is True
    assert slots(path) == [2] and lines(path)[-1]["continued"] is False


def test_reopen_appends_to_the_file_logrotate_created(tmp_path: Path) -> None:
    path = tmp_path / "station.jsonl"
    report = open_report(path, WallClock(DAY))  # no --append
    with report:
        report.device_finished(finished(1))
        path.rename(tmp_path / "old.jsonl")
        path.write_bytes(b"")  # logrotate's `create`
        report.request_reopen()
        report.device_finished(finished(2))
    assert slots(path) == [2]


def test_reopen_with_the_file_in_place_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "station.jsonl"
    report = open_report(path, WallClock(DAY))
    with report:
        report.device_finished(finished(1))
        report.request_reopen()
        assert report.rotate() is False
        report.device_finished(finished(2))
    assert [e["type"] for e in lines(path)] == ["device", "device", "summary"]


@pytest.mark.parametrize("kind", ["directory", "fifo", "exists", "input"])
def test_a_new_file_that_cannot_be_used_keeps_the_records_in_the_current_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    clock = WallClock(DAY)
    wim = tmp_path / "02.wim"
    wim.write_bytes(b"MSWIM")
    pattern = str(tmp_path / ("%d.wim" if kind == "input" else "%d.jsonl"))
    blocker = tmp_path / ("02.wim" if kind == "input" else "02.jsonl")
    if kind == "directory":
        blocker.mkdir()
    elif kind == "fifo":
        os.mkfifo(blocker)
    elif kind == "exists":
        blocker.write_text('{"type":"device"}\n')
    report = open_report(pattern, clock, wim=wim)
    first = Path(report.path)
    with caplog.at_level(logging.ERROR), report:
        report.device_finished(finished(1))
        clock.now += 86_400
        report.device_finished(finished(2))
        report.device_finished(finished(3))
    assert slots(first) == [1, 2, 3]
    assert lines(first)[-1]["continued"] is False
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors  # said once, not at every record
    assert str(blocker) in errors[0] and f"the records stay in {first}" in errors[0]
    if kind == "exists":
        assert "--append" in errors[0]
        assert blocker.read_text() == '{"type":"device"}\n'  # never touched


def test_the_rotation_is_tried_again_at_the_next_record(tmp_path: Path) -> None:
    clock = WallClock(DAY)
    blocker = tmp_path / "02.jsonl"
    blocker.mkdir()
    report = open_report(str(tmp_path / "%d.jsonl"), clock)
    with report:
        report.device_finished(finished(1))
        clock.now += 86_400
        report.device_finished(finished(2))
        blocker.rmdir()
        report.device_finished(finished(3))
    assert slots(tmp_path / "01.jsonl") == [1, 2] and slots(blocker) == [3]


def test_append_applies_to_each_new_file(tmp_path: Path) -> None:
    clock = WallClock(DAY)
    earlier = tmp_path / "02.jsonl"
    earlier.write_text('{"type":"device","slot":99}')  # a crashed run: no newline
    with open_report(str(tmp_path / "%d.jsonl"), clock, append=True) as report:
        report.device_finished(finished(1))
        clock.now += 86_400
        report.device_finished(finished(2))
    assert [e.get("slot") for e in read_report(earlier)][:2] == [99, 2]


def test_bad_patterns_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a strftime pattern"):
        expand_report_path("a\0%Y", DAY)
    with pytest.raises(InputError, match="not a file name"):
        expand_report_path(str(tmp_path) + "/%Y/", DAY)
    assert expand_report_path("plain.jsonl", DAY) == "plain.jsonl"
    assert expand_report_path("100%%-%Y.jsonl", DAY) == "100%-2026.jsonl"
    with pytest.raises(InputError, match="already exists"):
        (tmp_path / "2026.jsonl").touch()
        open_report(str(tmp_path / "%Y.jsonl"), WallClock(DAY))


def test_every_rotated_record_validates_and_no_file_loses_a_line(tmp_path: Path) -> None:
    """Many records, the pattern moving and reopens between them: each slot in exactly one file."""
    clock = WallClock(DAY)
    report = open_report(str(tmp_path / "r-%H%M.jsonl"), clock)
    with report:
        for slot in range(1, 201):
            if slot % 17 == 0:
                clock.now += 60
            if slot % 23 == 0:
                Path(report.path).rename(f"{report.path}.{slot}")
                report.request_reopen()
            report.device_finished(finished(slot, ok=slot % 5 != 0))
    files = sorted(tmp_path.iterdir())
    seen = [slot for path in files for slot in slots(path)]
    assert sorted(seen) == list(range(1, 201))
    check = validator()
    summaries = 0
    for path in files:
        entries = lines(path)
        for entry in entries:
            check.validate(entry)
        assert entries[-1]["type"] == "summary"  # each file reads as a whole
        assert entries[-1]["devices"] == len(entries) - 1
        summaries += 1
    assert summaries == len(files) > 10
    assert summarize_reports(files).runs == 1
