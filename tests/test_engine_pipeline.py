"""The engine over the simulated line: parallel boots, fault isolation, cancellation."""

from __future__ import annotations

import hashlib
from pathlib import Path

import anyio
import pytest

from parallel_flash.engine.pipeline import BootOptions, boot_line
from parallel_flash.engine.records import DeviceRecord, DeviceState, FailureReason
from parallel_flash.errors import InputError
from parallel_flash.image import ImageBuffer
from parallel_flash.protocol.device import DeviceFaults
from parallel_flash.transport.sim import simulated_line


@pytest.fixture
def image(small_wim: Path, small_sdi: Path) -> ImageBuffer:
    return ImageBuffer.load(small_wim, small_sdi)


class Recorder:
    """A LineObserver keeping every call, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def device_added(self, record: DeviceRecord) -> None:
        self.calls.append(("added", record.port, record.state.value))

    def device_changed(self, record: DeviceRecord) -> None:
        self.calls.append(("changed", record.port, record.state.value))

    def device_log(self, record: DeviceRecord, log: object) -> None:
        self.calls.append(("log", record.port, record.state.value))

    def device_finished(self, record: DeviceRecord) -> None:
        self.calls.append(("finished", record.port, record.state.value))


async def test_eight_devices_boot_and_receive_exactly_the_image(image: ImageBuffer) -> None:
    links = simulated_line(8, rate=None)
    recorder = Recorder()
    records = await boot_line(links, image, observer=recorder)
    expected = hashlib.sha256(bytes(image.view)).hexdigest()
    assert image.sha256 == expected
    assert [r.state for r in records] == [DeviceState.BOOTED] * 8
    for record, link in zip(records, links, strict=True):
        assert link.model.booted
        assert link.model.sha256 == expected
        assert record.bytes_done == record.bytes_total == image.total_length
        assert record.name == link.model.friendly_name
        assert record.unique_id == str(link.model.unique_id)
        assert link.closed
    states = [state for kind, port, state in recorder.calls if port == "sim-1"]
    # The status may be read while the last transfer's completion is still due:
    # then the device goes straight from "sending WIM" to "booted".
    if "awaiting status" not in states:
        states.insert(-1, "awaiting status")
    assert states == [
        "found",
        "identifying",
        "identifying",      # the Id reply named the device
        "sending SDI",
        "sending WIM",
        "sending WIM",      # the stream completed
        "awaiting status",
        "booted",
    ]


FAULTS = {
    2: (DeviceFaults(status=-5), "WIM boot failure status 0xfffffffb", "device-status"),
    3: (DeviceFaults(stop_reading_after=1 << 20), "stopped reading after", "timeout"),
    4: (DeviceFaults(disconnect_after=100_000), "disconnected while waiting for", "disconnected"),
    5: (DeviceFaults(stale_position=1, refuse_reset=True), "busy, reset refused", "protocol"),
    6: (DeviceFaults(silent_status=True), "timed out waiting for the boot status", "timeout"),
}


async def test_each_fault_fails_only_its_own_device(image: ImageBuffer) -> None:
    faults = {slot: fault for slot, (fault, _, _) in FAULTS.items()}
    faults[7] = DeviceFaults(stale_position=4096, log_packets=2)  # recovers
    links = simulated_line(8, rate=None, faults=faults)
    options = BootOptions(transfer_timeout=0.2, status_timeout=0.5)
    records = await boot_line(links, image, options=options)
    for record in records:
        if record.slot in FAULTS:
            assert record.state is DeviceState.FAILED, record
            assert FAULTS[record.slot][1] in (record.error or ""), record.error
            assert record.reason == FAULTS[record.slot][2], record
        else:
            assert record.state is DeviceState.BOOTED, record.error
            assert record.reason is FailureReason.NONE
            assert links[record.slot - 1].model.sha256 == image.sha256
    assert records[1].status == -5
    assert len(records[6].logs) == 2 * 4  # two before each reply: Id, Reset, Id again, status
    assert links[6].model.resets == 1


async def test_ram_limit_failure_reports_the_device_status(image: ImageBuffer) -> None:
    links = simulated_line(2, rate=None, ram_limit=image.total_length - 1)
    records = await boot_line(links, image, options=BootOptions(transfer_timeout=0.1))
    for record in records:
        assert record.state is DeviceState.FAILED
        assert record.status is not None and record.status < 0
        assert "0xc0000017" in (record.error or "")
        assert record.reason is FailureReason.DEVICE_STATUS


async def test_cancellation_marks_every_device_interrupted(image: ImageBuffer) -> None:
    links = simulated_line(4, rate=1e6)  # slow enough to be mid-stream
    records: list[DeviceRecord] = []
    recorder = Recorder()
    with anyio.move_on_after(0.3):
        await boot_line(links, image, observer=recorder, records=records)
    assert len(records) == 4
    for record in records:
        assert record.state is DeviceState.INTERRUPTED
        assert record.error == "interrupted"
        assert record.reason is FailureReason.INTERRUPTED
        assert 0 < record.bytes_done < record.bytes_total
    assert sum(1 for kind, _, _ in recorder.calls if kind == "finished") == 4
    assert all(link.closed for link in links)


async def test_a_device_is_never_slowed_by_a_stalled_neighbour(image: ImageBuffer) -> None:
    links = simulated_line(
        3, rate=20e6, faults={1: DeviceFaults(stop_reading_after=0)}
    )
    options = BootOptions(transfer_timeout=1.0)
    records = await boot_line(links, image, options=options)
    assert records[0].state is DeviceState.FAILED
    for record in records[1:]:
        assert record.state is DeviceState.BOOTED
        # 20 MB/s link: the healthy devices finish long before the stalled one gives up.
        assert record.finished is not None and records[0].finished is not None
        assert record.finished < records[0].finished


def test_boot_options_are_validated() -> None:
    with pytest.raises(InputError, match="transfers in flight"):
        BootOptions(in_flight=0)
    with pytest.raises(InputError, match="transfer timeout"):
        BootOptions(transfer_timeout=-1)
    with pytest.raises(InputError, match="transfer size"):
        BootOptions(transfer_size=1 << 32)
    with pytest.raises(InputError, match="retries"):
        BootOptions(retries=-1)
