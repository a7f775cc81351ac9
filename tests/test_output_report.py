"""The JSON-lines report: on disk per device, never overwritten silently, summary at the end."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from parallel_flash import __version__
from parallel_flash.engine.pipeline import boot_line
from parallel_flash.engine.records import DeviceLog, DeviceRecord, DeviceState, ObserverGroup
from parallel_flash.errors import FormatError, InputError
from parallel_flash.image import ImageBuffer
from parallel_flash.output.report import MAX_LOGS_PER_DEVICE, JsonlReport, line_totals, read_report
from parallel_flash.protocol.device import DeviceFaults
from parallel_flash.transport.sim import simulated_line

SHA = hashlib.sha256(b"sdi+wim").hexdigest()
MB = 1_000_000
NOW = 100.0


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def open_report(path: Path, *, append: bool = False) -> JsonlReport:
    return JsonlReport.open(
        path,
        wim="/images/boot.wim",
        sdi="/images/boot.sdi",
        image_sha256=SHA,
        image_bytes=100 * MB,
        append=append,
        clock=FakeClock(NOW),
    )


def device(slot: int, state: DeviceState = DeviceState.SENDING_WIM) -> DeviceRecord:
    record = DeviceRecord(
        slot=slot,
        port=f"1-1.{slot}",
        name=f"Contoso.{slot}",
        unique_id=f"00000011-f151-a509-0000-{slot:012x}",
        started=NOW - 12,
        wall_started=1_700_000_000.0,
        stream_started=NOW - 10,
        bytes_total=100 * MB,
        bytes_done=40 * MB,
    )
    record.state = state
    return record


def booted(record: DeviceRecord) -> DeviceRecord:
    record.bytes_done = record.bytes_total
    record.stream_finished = NOW - 5  # 100 MB in 5 s
    record.finished = NOW - 4
    record.status = 0
    record.state = DeviceState.BOOTED
    return record


def test_each_record_is_on_disk_as_soon_as_its_device_finishes(tmp_path: Path) -> None:
    path = tmp_path / "line.jsonl"
    with open_report(path) as report:
        first, second = device(1), device(2)
        report.device_added(first)
        report.device_added(second)
        assert path.read_text() == ""
        report.device_finished(booted(first))
        # read through a separate file object while the report is still open
        on_disk = read_report(path)
        assert len(on_disk) == 1
        entry = on_disk[0]
        assert entry == {
            "type": "device",
            "schema_version": 1,
            "version": __version__,
            "station": socket.gethostname().split(".")[0],
            "host": socket.gethostname(),
            "port": "1-1.1",
            "slot": 1,
            "name": "Contoso.1",
            "unique_id": "00000011-f151-a509-0000-000000000001",
            "state": "booted",
            "ok": True,
            "bytes": 100 * MB,
            "bytes_total": 100 * MB,
            "seconds": 8.0,
            "stream_seconds": 5.0,
            "mb_per_s": 20.0,
            "status": 0,
            "error": None,
            "reason": "none",
            "loader": "simpleio",
            "image_sha256": SHA,
            "started": "2023-11-14T22:13:20.000+00:00",
            "finished": "2023-11-14T22:13:28.000+00:00",
            "logs": [],
        }
        second.logs.append(DeviceLog(level=4, event_id=1, text="info only"))
        second.logs.append(DeviceLog(level=1, event_id=2, text="RAM test failed"))
        second.state, second.status, second.finished = DeviceState.FAILED, -0x3FFFFFE9, NOW
        second.error = "WIM boot failure status 0xc0000017"
        report.device_finished(second)
        assert len(read_report(path)) == 2
    entries = read_report(path)
    failed = entries[1]
    assert failed["ok"] is False and failed["state"] == "failed"
    assert failed["status"] == -0x3FFFFFE9
    assert failed["error"] == "WIM boot failure status 0xc0000017"
    assert failed["logs"] == [{"level": 1, "event_id": 2, "text": "RAM test failed"}]
    assert failed["mb_per_s"] == 4.0  # 40 MB in the 10 s since its stream started

    summary = entries[-1]
    assert summary["type"] == "summary"
    assert summary["devices"] == 2 and summary["booted"] == 1 and summary["failed"] == 1
    assert summary["unfinished"] == 0 and summary["interrupted"] is False
    assert summary["bytes"] == 140 * MB and summary["bytes_total"] == 200 * MB
    assert summary["seconds"] == 12.0 and summary["stream_seconds"] == 10.0
    assert summary["mb_per_s"] == 14.0
    assert summary["image_sha256"] == SHA and summary["image_bytes"] == 100 * MB
    assert summary["wim"] == "/images/boot.wim" and summary["sdi"] == "/images/boot.sdi"
    assert summary["version"] == __version__
    dt.datetime.fromisoformat(summary["started"])
    assert report.closed


def test_an_existing_report_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "line.jsonl"
    path.write_text('{"type": "summary", "devices": 8}\n')
    with pytest.raises(InputError) as caught:
        open_report(path)
    assert str(path) in str(caught.value)
    assert "--append" in str(caught.value)
    assert path.read_text() == '{"type": "summary", "devices": 8}\n'


def test_append_adds_after_the_old_run(tmp_path: Path) -> None:
    path = tmp_path / "line.jsonl"
    path.write_text('{"type": "summary", "devices": 8}')  # a crash left no newline
    with open_report(path, append=True) as report:
        report.device_finished(booted(device(1)))
    entries = read_report(path)
    assert [entry["type"] for entry in entries] == ["summary", "device", "summary"]
    assert entries[0] == {"type": "summary", "devices": 8}


def test_append_creates_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "new.jsonl"
    with open_report(path, append=True) as report:
        report.device_finished(booted(device(1)))
    assert [entry["type"] for entry in read_report(path)] == ["device", "summary"]


def test_unusable_paths_name_the_file(tmp_path: Path) -> None:
    missing_dir = tmp_path / "no" / "such" / "dir" / "line.jsonl"
    with pytest.raises(InputError, match=r"cannot open report file .*line\.jsonl"):
        open_report(missing_dir)
    with pytest.raises(InputError, match=str(tmp_path)):
        open_report(tmp_path, append=True)  # a directory


def test_bad_image_hash_is_a_caller_bug(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="image_sha256"):
        JsonlReport.open(
            tmp_path / "r.jsonl", wim="w", sdi=None, image_sha256="abc", image_bytes=1
        )
    assert not (tmp_path / "r.jsonl").exists()


def test_interrupted_devices_get_records_and_the_summary_says_so(tmp_path: Path) -> None:
    path = tmp_path / "line.jsonl"
    done, streaming, identifying = booted(device(1)), device(2), device(3)
    identifying.state = DeviceState.IDENTIFYING
    identifying.bytes_done, identifying.stream_started = 0, None
    report = open_report(path)
    for record in (done, streaming, identifying):
        report.device_added(record)
    report.device_finished(done)
    assert report.finish_unfinished([done, streaming, identifying]) == 2
    assert report.finish_unfinished() == 0  # never twice
    report.close()

    entries = read_report(path)
    assert [entry.get("port") for entry in entries] == ["1-1.1", "1-1.2", "1-1.3", None]
    cut = entries[1]
    assert cut["state"] == "sending WIM" and cut["ok"] is False
    assert cut["error"] == "interrupted" and cut["bytes"] == 40 * MB
    assert cut["reason"] == "interrupted"
    assert entries[2]["state"] == "identifying" and entries[2]["error"] == "interrupted"
    assert entries[3]["interrupted"] is True and entries[3]["unfinished"] == 2
    # the engine's records are left as they were
    assert streaming.state is DeviceState.SENDING_WIM and streaming.error is None


def test_leaving_the_block_on_ctrl_c_writes_everything(tmp_path: Path) -> None:
    path = tmp_path / "line.jsonl"
    with pytest.raises(KeyboardInterrupt), open_report(path) as report:
        report.device_added(device(1))
        raise KeyboardInterrupt
    entries = read_report(path)
    assert entries[0]["error"] == "interrupted"
    assert entries[1]["type"] == "summary" and entries[1]["interrupted"] is True


def test_leaving_the_block_on_an_error_names_it(tmp_path: Path) -> None:
    path = tmp_path / "line.jsonl"
    with pytest.raises(RuntimeError), open_report(path) as report:
        report.device_added(device(1))
        raise RuntimeError("boom")
    entries = read_report(path)
    assert entries[0]["error"] == "run aborted: RuntimeError: boom"
    assert entries[1]["interrupted"] is True


def test_finished_twice_keeps_the_first_record(tmp_path: Path) -> None:
    path = tmp_path / "line.jsonl"
    with open_report(path) as report:
        record = booted(device(1))
        report.device_finished(record)
        report.device_finished(record)
    assert [entry["type"] for entry in read_report(path)] == ["device", "summary"]


def test_device_strings_are_stored_ascii_and_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "line.jsonl"
    record = booted(device(1))
    record.name = "[bold]x[/bold]\x1b[31mred \u202e\x9b caf\u00e9"
    with open_report(path) as report:
        report.device_finished(record)
    raw = path.read_bytes()
    assert raw.isascii() and b"\x1b" not in raw
    assert b"\\u001b[31mred" in raw
    assert read_report(path)[0]["name"] == record.name


def test_error_logs_are_capped(tmp_path: Path) -> None:
    path = tmp_path / "line.jsonl"
    record = booted(device(1))
    record.logs.extend(DeviceLog(level=1, event_id=n, text="e") for n in range(150))
    with open_report(path) as report:
        report.device_finished(record)
    entry = read_report(path)[0]
    assert len(entry["logs"]) == MAX_LOGS_PER_DEVICE
    assert entry["logs_dropped"] == 150 - MAX_LOGS_PER_DEVICE


def test_read_report_names_a_broken_line(tmp_path: Path) -> None:
    path = tmp_path / "line.jsonl"
    path.write_text('{"type": "device"}\n\n{"type": "dev\n')
    with pytest.raises(FormatError, match=r"line\.jsonl: line 3: not valid JSON"):
        read_report(path)
    path.write_text("[1, 2]\n")
    with pytest.raises(FormatError, match="line 1: not a JSON object"):
        read_report(path)


def test_line_totals_counts_every_device() -> None:
    records = [booted(device(1)), device(2), device(3, DeviceState.FAILED)]
    records[2].finished = NOW - 1
    totals = line_totals(records, now=NOW)
    assert (totals.devices, totals.booted, totals.failed, totals.in_progress) == (3, 1, 1, 1)
    assert totals.bytes_done == 180 * MB and totals.bytes_total == 300 * MB
    assert totals.seconds == 12.0 and totals.stream_seconds == 10.0
    assert totals.mb_per_s == 18.0
    empty = line_totals([], now=NOW)
    assert empty.devices == 0 and empty.mb_per_s == 0.0


def test_a_simulated_line_writes_one_record_per_device(
    tmp_path: Path, small_sdi: Path, small_wim: Path
) -> None:
    """End to end with the real engine: 3 devices, one with a failing status."""
    from parallel_flash.formats.secwim import build_secwim

    bundle = build_secwim(small_sdi.read_bytes(), small_wim.read_bytes())
    image = ImageBuffer.from_bytes(bundle, wim_path="line.secwim")
    size = len(bundle)
    links = simulated_line(3, rate=None, faults={2: DeviceFaults(status=-0x3FFFFFE9)})
    path = tmp_path / "line.jsonl"
    with JsonlReport.open(
        path, wim="line.secwim", sdi=None, image_sha256=image.sha256, image_bytes=size
    ) as report:
        group = ObserverGroup(report)
        anyio.run(lambda: boot_line(links, image, observer=group))
        group.check()
        assert len(read_report(path)) == 3  # all on disk before the summary
    entries = read_report(path)
    devices = sorted((e for e in entries if e["type"] == "device"), key=lambda e: e["slot"])
    assert [(e["port"], e["ok"]) for e in devices] == [
        ("sim-1", True),
        ("sim-2", False),
        ("sim-3", True),
    ]
    assert devices[1]["error"] == "WIM boot failure status 0xc0000017"
    assert devices[1]["status"] == -0x3FFFFFE9
    assert all(e["bytes"] == size and e["image_sha256"] == image.sha256 for e in devices)
    assert devices[0]["name"] == "Contoso.Simulated.001"
    summary = entries[-1]
    assert (summary["devices"], summary["booted"], summary["failed"]) == (3, 2, 1)
    assert json.dumps(summary).isascii()
    image.close()


#: Fills a file up to a size limit the kernel enforces (RLIMIT_FSIZE), as a full disk does:
#: a write across the limit is cut short, the next one fails (EFBIG). Run in a subprocess.
_FULL_DISK = """
import json, os, resource, signal, sys
from parallel_flash.output.outbox import Outbox, PendingResult

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a core dump
path, limit = sys.argv[1], int(sys.argv[2])
outbox = Outbox(path)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
failed = 0
for n in range(50):
    try:
        outbox.add(PendingResult(f"st-{n:04d}", "/r.jsonl", "1-1.2", n, "2026-12-02T00:00:00Z"))
    except OSError:
        failed += 1
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
outbox.add(PendingResult("st-last", "/r.jsonl", "1-1.2", 99, "2026-12-02T00:00:00Z"))
outbox.close()
print(failed)
"""


def test_a_full_disk_leaves_whole_lines_in_the_outbox_too(tmp_path: Path) -> None:
    """The report's append rule (whole lines or none) is the outbox's: the disk frees up,
    the next pointer starts on its own line instead of completing a cut one."""
    path = tmp_path / "outbox.jsonl"
    done = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, str(path), "1000"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 0  # the limit was hit
    lines = path.read_text().splitlines()
    assert all(json.loads(line)["pending"].startswith("st-") for line in lines)
    assert lines[-1].startswith('{"pending":"st-last"')
    assert path.stat().st_size <= 1000 + len(lines[-1]) + 1
