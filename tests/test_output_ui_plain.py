"""PlainOutput: ffutool-style lines, one prefix per device, nothing a terminal would interpret."""

from __future__ import annotations

import io
import re
import time

from parallel_flash.engine.records import DeviceLog, DeviceRecord, DeviceState
from parallel_flash.output.ui import PlainOutput

MB = 1_000_000
NOW = 500.0


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def new_output(**kwargs: object) -> tuple[PlainOutput, io.StringIO]:
    stream = io.StringIO()
    output = PlainOutput(
        "/images/boot [x].wim",
        stream=stream,
        poll_interval=None,
        clock=FakeClock(NOW),
        **kwargs,  # type: ignore[arg-type]
    )
    return output, stream


def device(slot: int) -> DeviceRecord:
    return DeviceRecord(slot=slot, port=f"1-1.{slot}", started=NOW - 20, wall_started=1.7e9)


def identify(output: PlainOutput, record: DeviceRecord, name: str, unique_id: str) -> None:
    record.state = DeviceState.IDENTIFYING
    output.device_changed(record)
    record.name, record.unique_id = name, unique_id
    output.device_changed(record)


def start_stream(output: PlainOutput, record: DeviceRecord, total: int = 100 * MB) -> None:
    record.state = DeviceState.SENDING_SDI
    record.bytes_total = total
    record.stream_started = NOW - 10
    output.device_changed(record)


def finish_stream(output: PlainOutput, record: DeviceRecord) -> None:
    record.bytes_done = record.bytes_total
    record.stream_finished = NOW - 2
    record.state = DeviceState.AWAITING_STATUS
    output.device_changed(record)


def test_one_device_like_ffutool() -> None:
    output, stream = new_output()
    record = device(4)
    output.device_added(record)
    name, unique_id = "Contoso.MSM8960.JD301_ATT.3.2.1", "00000011-f151-a509-0000-000000000000"
    identify(output, record, name, unique_id)
    start_stream(output, record)
    for done in (10, 30, 49, 50, 80, 99):
        record.bytes_done = done * MB
        output.poll()
    record.state = DeviceState.SENDING_WIM
    output.device_changed(record)
    finish_stream(output, record)
    record.status = 0
    record.state = DeviceState.BOOTED
    record.finished = NOW
    output.device_finished(record)
    output.close()

    assert stream.getvalue().splitlines() == [
        "1-1.4: Found device:",
        "1-1.4:   Name: Contoso.MSM8960.JD301_ATT.3.2.1",
        "1-1.4:   ID: 00000011-f151-a509-0000-000000000000",
        "1-1.4: Booting WIM: /images/boot [x].wim",
        # every 25 %, with the average rate since the stream started (10 s ago)
        "1-1.4: 25% (30.0 of 100.0 MB, 3.0 MB/s)",
        "1-1.4: 50% (50.0 of 100.0 MB, 5.0 MB/s)",
        "1-1.4: 75% (80.0 of 100.0 MB, 8.0 MB/s)",
        "1-1.4: 100% (100.0 of 100.0 MB, 12.5 MB/s)",
        "1-1.4: WIM transfer completed in 8.0 seconds.",
        "1-1.4: Booted (status 0x00000000) in 20.0 seconds.",
        "Summary: 1 device, 1 booted, 0 failed; 100.0 MB sent in 20.0 seconds, "
        "12.5 MB/s aggregate.",
    ]


def test_failures_logs_and_interleaved_devices_stay_attributable() -> None:
    output, stream = new_output(step=50)
    first, second, third = device(1), device(2), device(3)
    for record in (first, second, third):
        output.device_added(record)
    identify(output, first, "Contoso.A", "00000011-f151-a509-0000-000000000001")
    identify(output, second, "Contoso.B", "00000011-f151-a509-0000-000000000002")
    start_stream(output, first)
    start_stream(output, second)
    output.device_log(second, DeviceLog(level=2, event_id=9, text="out of memory"))
    output.device_log(second, DeviceLog(level=4, event_id=10, text="chatter"))
    first.bytes_done = second.bytes_done = 60 * MB
    output.poll()
    second.state = DeviceState.FAILED
    second.error = "disconnected while waiting for the image data"
    second.finished = NOW
    output.device_finished(second)
    # a device that fails before it is identified is still named by its port
    third.state = DeviceState.FAILED
    third.error = "timed out waiting for the Id reply"
    third.finished = NOW
    output.device_finished(third)
    finish_stream(output, first)
    first.state, first.status, first.finished = DeviceState.BOOTED, 0, NOW
    output.device_finished(first)
    output.close()
    lines = stream.getvalue().splitlines()

    assert "1-1.2: Device log (level 2, event 9): out of memory" in lines
    assert not any("chatter" in line for line in lines)
    assert "1-1.2: FAILED: disconnected while waiting for the image data" in lines
    assert "1-1.3: FAILED: timed out waiting for the Id reply" in lines
    assert not any(line.startswith("1-1.3: Found device") for line in lines)
    assert "1-1.1: 50% (60.0 of 100.0 MB, 6.0 MB/s)" in lines
    assert "1-1.2: 50% (60.0 of 100.0 MB, 6.0 MB/s)" in lines
    assert "1-1.1: WIM transfer completed in 8.0 seconds." in lines
    # the summary, then every failed device with its port, name, ID and reason
    assert lines[-4].startswith("Summary: 3 devices, 1 booted, 2 failed; 160.0 MB sent")
    assert lines[-3:] == [
        "Failed devices (2):",
        "  1-1.2  Contoso.B  00000011-f151-a509-0000-000000000002  "
        "disconnected while waiting for the image data",
        "  1-1.3  -  -  timed out waiting for the Id reply",
    ]
    per_device = lines[:-4]
    assert all(re.match(r"1-1\.[123]: ", line) for line in per_device)


def test_state_jumps_print_what_was_skipped_once() -> None:
    """A device that went from identifying straight to booted still gets every line."""
    output, stream = new_output()
    record = device(1)
    output.device_added(record)
    record.name, record.unique_id = "Contoso.A", "00000011-f151-a509-0000-000000000001"
    record.bytes_total = record.bytes_done = 10 * MB
    record.stream_started, record.stream_finished, record.finished = NOW - 3, NOW - 1, NOW
    record.state, record.status = DeviceState.BOOTED, 0
    output.device_finished(record)
    output.device_changed(record)  # a late duplicate prints nothing new
    text = stream.getvalue()
    for line in ("Found device:", "Booting WIM:", "100% (10.0 of 10.0 MB", "completed in 2.0"):
        assert text.count(line) == 1, line


def test_device_strings_are_escaped() -> None:
    output, stream = new_output()
    record = device(1)
    output.device_added(record)
    identify(output, record, "[bold]x[/bold]\x1b[31mred", "\u202eevil\x9b2J")
    output.device_log(record, DeviceLog(level=1, event_id=1, text="bell\x07\r\nnext"))
    record.state, record.error, record.finished = DeviceState.FAILED, "bad \x1b]0;t\x07", NOW
    output.device_finished(record)
    output.close()
    text = stream.getvalue()
    assert "  Name: [bold]x[/bold]\\x1b[31mred" in text
    assert "  ID: \\u202eevil\\x9b2J" in text
    assert "bell\\x07\\x0d\\x0anext" in text
    assert "FAILED: bad \\x1b]0;t\\x07" in text
    assert all(ch.isprintable() for ch in text.replace("\n", ""))


def test_polling_thread_reports_progress_between_state_changes() -> None:
    stream = io.StringIO()
    record = device(1)
    with PlainOutput("x.wim", stream=stream, poll_interval=0.01) as output:
        output.device_added(record)
        start_stream(output, record)
        record.bytes_done = 60 * MB  # no observer call: only the thread can see it
        for _ in range(500):
            if "50%" in stream.getvalue():
                break
            time.sleep(0.01)
    assert "1-1.1: 50% (60.0 of 100.0 MB" in stream.getvalue()
    assert stream.getvalue().splitlines()[-1].startswith("Summary: 1 device,")


def test_interrupted_run_says_so() -> None:
    output, stream = new_output()
    record = device(1)
    output.device_added(record)
    start_stream(output, record)
    record.bytes_done = 5 * MB
    output.close(interrupted=True)
    output.close()  # once only
    summary = stream.getvalue().splitlines()[-1]
    assert summary.startswith("Summary: 1 device, 0 booted, 0 failed, 1 unfinished;")
    assert summary.endswith("(interrupted).")
    assert stream.getvalue().count("Summary") == 1
