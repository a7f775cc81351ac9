"""Issue 7 on the simulated line: retries, report write failures, the session's result."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest

from parallel_flash.engine.pipeline import BootOptions, StopReason, boot_line
from parallel_flash.engine.records import DeviceRecord, DeviceState, NullObserver
from parallel_flash.image import ImageBuffer
from parallel_flash.output.report import JsonlReport, read_report
from parallel_flash.protocol.device import DeviceFaults
from parallel_flash.session import Presentation, SimulatedLine, run_boot
from parallel_flash.transport.sim import simulated_line


@pytest.fixture
def image(small_wim: Path, small_sdi: Path) -> ImageBuffer:
    return ImageBuffer.load(small_wim, small_sdi)


@dataclass
class HeldReader:
    """The image's loader, paused once the SDI and the WIM's header are read."""

    hold_at: int
    held: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def held_reader(small_sdi: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldReader]:
    from parallel_flash import image as image_module

    monkeypatch.setattr(image_module, "_READ_BLOCK", 32 << 10)
    reader = HeldReader(hold_at=small_sdi.stat().st_size + (32 << 10))
    copy = image_module._Loader._copy

    def copy_then_hold(self, stream, start, end):  # type: ignore[no-untyped-def]
        if start >= reader.hold_at and not reader.release.is_set():
            reader.held.set()
            reader.release.wait(30)
        return copy(self, stream, start, end)

    monkeypatch.setattr(image_module._Loader, "_copy", copy_then_hold)
    yield reader
    reader.release.set()  # never leave the loader waiting after a failed test


class Seen(NullObserver):
    """Every record as its device is added (read from another thread)."""

    def __init__(self) -> None:
        self.records: list[DeviceRecord] = []

    def device_added(self, record: DeviceRecord) -> None:
        self.records.append(record)


def test_retries_only_before_any_image_byte_and_every_attempt_is_listed(
    image: ImageBuffer,
) -> None:
    faults = {
        1: DeviceFaults(stale_position=1, refuse_reset=True),  # fails before the image
        2: DeviceFaults(status=-5),  # negative status: never retried
    }
    links = simulated_line(3, rate=None, faults=faults)
    options = BootOptions(retries=2, status_timeout=1)
    records = anyio.run(lambda: boot_line(links, image, options=options))
    refused, negative, healthy = records
    assert refused.state is DeviceState.FAILED and "reset refused" in (refused.error or "")
    assert [a.number for a in refused.attempts] == [1, 2, 3]
    assert all("reset refused" in (a.error or "") and a.bytes_sent == 0 for a in refused.attempts)
    assert links[0].model.resets == 3
    assert negative.state is DeviceState.FAILED and negative.attempts == []
    assert negative.status == -5
    assert healthy.state is DeviceState.BOOTED and healthy.attempts == []


class _DiskFills:
    """Stands in for os.write at the report's file layer: the disk fills mid-line."""

    def __init__(self, room: int) -> None:
        self.room = room

    def __call__(self, fd: int, data: memoryview) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = os.write(fd, data[: self.room])
        self.room -= written
        return written


def test_a_full_disk_mid_run_is_loud_and_leaves_whole_records(
    tmp_path: Path, image: ImageBuffer, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "r.jsonl"
    disk = _DiskFills(room=10_000)
    monkeypatch.setattr(JsonlReport, "_write_fd", staticmethod(disk))
    line = SimulatedLine(count=40, rate=None)
    with open(os.devnull, "w") as quiet:
        result = run_boot(
            image, line, report=path, presentation=Presentation(live=False, stream=quiet)
        )
    assert result.stop is StopReason.REPORT_FAILED
    assert result.report_error is not None and "No space left on device" in result.report_error
    data = path.read_bytes()
    assert data.endswith(b"\n")  # the partial line was cut off again
    entries = read_report(path)
    assert 0 < len(entries) < 40 and all(e["type"] == "device" for e in entries)
    # The devices under way finished all the same; only their records are missing.
    assert result.totals.total == 40


def test_cli_exit_code_for_a_report_failure(
    tmp_path: Path, small_wim: Path, small_sdi: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from parallel_flash.cli import main

    monkeypatch.setattr(JsonlReport, "_write_fd", staticmethod(_DiskFills(room=2_000)))
    code = main([
        "boot", str(small_wim), "--sdi", str(small_sdi), "--sim", "8", "--plain",
        "--report", str(tmp_path / "r.jsonl"),
    ])
    err = capsys.readouterr().err
    assert code == 1
    assert "cannot write the report" in err and "No space left on device" in err


def test_an_image_that_cannot_be_read_mid_run_fails_every_device_on_record(
    tmp_path: Path, small_wim: Path, small_sdi: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk error once streaming began: each device fails saying so; no record is lost."""
    from parallel_flash import image as image_module
    from test_output_record_schema import validator

    monkeypatch.setattr(image_module, "_READ_BLOCK", 32 << 10)
    copy = image_module._Loader._copy
    fail_at = small_sdi.stat().st_size + (64 << 10)  # after the headers loading checks

    def copy_then_fail(self, stream, start, end):  # type: ignore[no-untyped-def]
        if start >= fail_at:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return copy(self, stream, start, end)

    monkeypatch.setattr(image_module._Loader, "_copy", copy_then_fail)
    path = tmp_path / "r.jsonl"
    with open(os.devnull, "w") as quiet, ImageBuffer.load(small_wim, small_sdi) as loaded:
        result = run_boot(
            loaded, SimulatedLine(count=3, rate=None), report=path,
            presentation=Presentation(live=False, stream=quiet),
        )
    assert [r.state for r in result.records] == [DeviceState.FAILED] * 3
    entries = read_report(path)
    devices = [e for e in entries if e["type"] == "device"]
    assert len(devices) == 3 and entries[-1]["type"] == "summary"
    for entry in devices:
        assert entry["reason"] == "aborted"
        assert entry["error"].startswith("the image could not be read: ")
        assert "Input/output error" in entry["error"] and entry["image_sha256"] is None
    check = validator()
    for entry in entries:
        check.validate(entry)


def test_devices_that_end_before_the_image_is_hashed_wait_off_the_loop(
    tmp_path: Path, small_wim: Path, small_sdi: Path, held_reader: HeldReader
) -> None:
    """A device that ends early waits for the digest without freezing the others.

    The reader is held after the headers. One device has too little RAM for it, one
    could not be opened; two stream. While the reader is held the two
    stream what is read (the event loop runs), and once it is released every
    record carries the image's digest. Asked on the loop, the refused and the
    unopened device's records would freeze the line until the release.
    """
    import contextlib
    import hashlib
    import time
    from collections.abc import AsyncIterator

    from parallel_flash.engine.pipeline import Unopened

    hold_at, held, release = held_reader.hold_at, held_reader.held, held_reader.release
    expected = hashlib.sha256(small_sdi.read_bytes() + small_wim.read_bytes()).hexdigest()
    seen = Seen()
    records = seen.records
    streamed_while_held: list[int] = []
    released_at: list[float] = []

    def watch() -> None:
        """Off the loop: note what the streaming devices got while held, then release."""
        try:
            held.wait(10)
            for _ in range(1000):  # up to 10 s
                streaming = [r for r in records if r.port in ("sim-1", "sim-3")]
                if len(streaming) == 2 and all(r.bytes_done > 0 for r in streaming):
                    streamed_while_held.extend(r.bytes_done for r in streaming)
                    return
                threading.Event().wait(0.01)
        finally:
            released_at.append(time.monotonic())
            release.set()

    links = simulated_line(3, rate=None, faults={2: DeviceFaults(ram=1024)})

    @contextlib.asynccontextmanager
    async def source() -> AsyncIterator[list[object]]:
        yield [*links, Unopened(port="usb-9", reason="busy: another program has it open")]

    watcher = threading.Thread(target=watch)
    path = tmp_path / "r.jsonl"
    with open(os.devnull, "w") as quiet, ImageBuffer.load(small_wim, small_sdi) as loaded:
        watcher.start()
        result = run_boot(
            loaded, source, report=path, extra_observers=[seen],  # type: ignore[arg-type]
            options=BootOptions(transfer_size=16 << 10),
            presentation=Presentation(live=False, stream=quiet),
        )
        watcher.join()
    assert len(streamed_while_held) == 2, "the line froze while the image was being read"
    assert all(0 < done <= hold_at for done in streamed_while_held)
    assert {r.port: r.state for r in result.records} == {
        "sim-1": DeviceState.BOOTED, "sim-2": DeviceState.FAILED,
        "sim-3": DeviceState.BOOTED, "usb-9": DeviceState.FAILED,
    }
    # The two that failed ended while the reader was held: their records keep
    # that end, not the moment the digest came.
    ends = {r.port: r.finished for r in result.records}
    assert ends["sim-2"] is not None and ends["sim-2"] < released_at[0]
    assert ends["usb-9"] is not None and ends["usb-9"] < released_at[0]
    devices = [e for e in read_report(path) if e["type"] == "device"]
    assert sorted(e["port"] for e in devices) == ["sim-1", "sim-2", "sim-3", "usb-9"]
    assert {e["image_sha256"] for e in devices} == {expected}


def test_an_interrupt_while_the_image_is_still_read_ends_at_once_and_on_record(
    tmp_path: Path, small_wim: Path, small_sdi: Path, held_reader: HeldReader
) -> None:
    """Ctrl-C while the image is still being read: the run ends without waiting for it.

    The reader is held after the headers and SIGINT comes while two devices
    stream what was read. The run returns while the reader is still held;
    each device is on record as interrupted and, the image never having been
    hashed, the records and the summary say image_sha256 null (as the schema
    allows for this case).
    """
    import signal

    from test_output_record_schema import validator

    held, release, returned = held_reader.held, held_reader.release, threading.Event()
    seen = Seen()
    records = seen.records
    returned_while_held: list[bool] = []

    def interrupt() -> None:
        try:
            held.wait(10)
            for _ in range(1000):  # up to 10 s for both to stream what was read
                if len(records) == 2 and all(r.bytes_done > 0 for r in records):
                    break
                threading.Event().wait(0.01)
            os.kill(os.getpid(), signal.SIGINT)
            returned_while_held.append(returned.wait(10))
        finally:
            release.set()

    watcher = threading.Thread(target=interrupt)
    path = tmp_path / "r.jsonl"
    with open(os.devnull, "w") as quiet, ImageBuffer.load(small_wim, small_sdi) as loaded:
        watcher.start()
        try:
            result = run_boot(
                loaded, SimulatedLine(count=2, rate=None), report=path,
                extra_observers=[seen], options=BootOptions(transfer_size=16 << 10),
                presentation=Presentation(live=False, stream=quiet),
            )
        finally:
            returned.set()
            watcher.join()
    assert returned_while_held == [True], "the interrupted run waited for the image"
    assert result.stop is StopReason.INTERRUPT
    assert [r.state for r in result.records] == [DeviceState.INTERRUPTED] * 2
    entries = read_report(path)
    assert [e["type"] for e in entries] == ["device", "device", "summary"]
    assert all(e["image_sha256"] is None for e in entries)
    check = validator()
    for entry in entries:
        check.validate(entry)
