"""The libusb context, its event thread and device filtering -- no device needed.

These run against the machine's real libusb (no USB devices here), so they
check the lifecycle: one shared context, one event thread, nothing left
behind, no hang at interpreter exit even when a caller forgets to close.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
import uuid

import anyio
import pytest

from parallel_flash.cli._usb import filters_from_args
from parallel_flash.engine.discovery import (
    ArrivalDedup,
    DeviceFilters,
    HotplugEvent,
    find_devices,
    parse_unique_id,
)
from parallel_flash.errors import InputError
from parallel_flash.transport.libusb import UsbContext, UsbDeviceInfo

EVENT_THREAD = "parallel-flash-usb-events"


def _event_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == EVENT_THREAD]


def _device(port: str, address: int = 5, vid: int = 0x045E, pid: int = 0x062A) -> UsbDeviceInfo:
    bus = int(port.split("-")[0])
    return UsbDeviceInfo(
        port=port, bus=bus, address=address, vendor_id=vid, product_id=pid, device=None
    )


# -- lifecycle ---------------------------------------------------------------------------


async def test_context_starts_and_stops_one_event_thread() -> None:
    assert not _event_threads()
    async with UsbContext() as first:
        assert len(_event_threads()) == 1
        assert _event_threads()[0].daemon is False
        async with UsbContext() as second:
            assert len(_event_threads()) == 1  # shared: one libusb context per process
            assert second.devices() == first.devices()
        assert len(_event_threads()) == 1
    assert not _event_threads()


async def test_closed_context_says_so() -> None:
    ctx = UsbContext()
    with pytest.raises(RuntimeError, match="not open"):
        ctx.devices()
    async with ctx:
        pass
    with pytest.raises(RuntimeError, match="not open"):
        ctx.devices()
    await ctx.aclose()  # twice is fine


async def test_hotplug_registration_without_devices() -> None:
    async with UsbContext() as ctx, ctx.hotplug() as events:
        with anyio.move_on_after(0.2):
            async for event in events:
                pytest.fail(f"no device exists here, got {event}")
    assert not _event_threads()


async def test_find_devices_and_enumerate_on_an_empty_bus() -> None:
    async with UsbContext() as ctx:
        assert find_devices(ctx, DeviceFilters()) == []
        assert await ctx.enumerate() == []


@pytest.mark.parametrize("close", [True, False])
def test_interpreter_exit_never_hangs(close: bool) -> None:
    """Even a context left open (a caller's bug) must not keep the process alive."""
    script = textwrap.dedent(
        f"""
        import anyio
        from parallel_flash.transport.libusb import UsbContext

        async def main():
            ctx = UsbContext()
            await ctx.__aenter__()
            if {close}:
                await ctx.aclose()

        anyio.run(main)
        print("main done", flush=True)
        """
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "main done" in result.stdout
    print(f"exit took {elapsed:.2f} s (close={close})")


# -- filters -------------------------------------------------------------------------------


def test_parse_unique_id() -> None:
    guid = "00000011-f151-a509-0000-000000000000"
    assert parse_unique_id(guid) == uuid.UUID(guid)
    assert parse_unique_id("{" + guid.upper() + "}") == uuid.UUID(guid)
    with pytest.raises(InputError, match="unique ID 'nope': expected a GUID"):
        parse_unique_id("nope")


@pytest.mark.parametrize(
    ("prefixes", "port", "expected"),
    [
        ((), "1-1.4.2", True),
        (("1-1.4",), "1-1.4", True),
        (("1-1.4",), "1-1.4.2", True),
        (("1-1.4",), "1-1.40", False),  # uuu's separator-less form would confuse these
        (("1-1.4",), "1-1", False),
        (("1",), "1-1.4.2", True),
        (("1",), "11-1", False),
        (("2-1", "1-1.4"), "1-1.4.7", True),
    ],
)
def test_port_prefix_filter(prefixes: tuple[str, ...], port: str, expected: bool) -> None:
    assert DeviceFilters(ports=prefixes).matches(_device(port)) is expected


def test_vid_pid_filter() -> None:
    filters = DeviceFilters()  # every loader's flashing-mode IDs
    assert filters.matches(_device("1-1"))
    assert filters.matches(_device("1-1", pid=0x0658))                # UFP
    assert filters.matches(_device("1-1", vid=0x0421, pid=0x066E))    # Lumia flash app
    assert not filters.matches(_device("1-1", vid=0x0421, pid=0x0660))  # Label mode
    assert not filters.matches(_device("1-1", pid=0x0A00))
    other = DeviceFilters(vendor_id=0x0421, product_id=0x066E)
    assert other.matches(_device("1-1", vid=0x0421, pid=0x066E))
    assert not other.matches(_device("1-1"))
    assert other.describe() == "0421:066e"
    assert DeviceFilters(product_id=0x0658).describe() == "*:0658"
    with pytest.raises(InputError, match="not a 16-bit USB ID"):
        DeviceFilters(vendor_id=0x10000)


def test_filters_from_arguments() -> None:
    import argparse

    from parallel_flash.cli._usb import add_usb_arguments

    parser = argparse.ArgumentParser()
    add_usb_arguments(parser)
    guid = "00000011-f151-a509-0000-000000000001"
    args = parser.parse_args(["--port", "1-1.4", "--port", "2", "--id", guid, "--pid", "0658"])
    filters = filters_from_args(args)
    assert [str(port) for port in filters.ports] == ["1-1.4", "2"]
    assert filters.unique_ids == (uuid.UUID(guid),)
    assert filters.product_id == 0x0658 and filters.vendor_id is None  # any VID
    assert filters.needs_identity and filters.matches_id(uuid.UUID(guid))
    assert not filters.matches_id(uuid.uuid4())
    with pytest.raises(SystemExit):
        parser.parse_args(["--vid", "xyz"])


# -- arrival deduplication ---------------------------------------------------------------------


def test_dedup_drops_repeats_and_unpaired_departures() -> None:
    dedup = ArrivalDedup(DeviceFilters())
    a = _device("1-1.2", address=5)
    assert dedup.feed(HotplugEvent(True, a)) == [HotplugEvent(True, a)]
    assert dedup.feed(HotplugEvent(True, a)) == []  # repeated
    assert dedup.feed(HotplugEvent(False, _device("1-1.3"))) == []  # never arrived
    assert dedup.feed(HotplugEvent(False, a)) == [HotplugEvent(False, a)]
    assert dedup.feed(HotplugEvent(False, a)) == []  # repeated departure
    assert dedup.present() == []


def test_dedup_infers_a_missed_departure_from_a_new_enumeration() -> None:
    dedup = ArrivalDedup(DeviceFilters())
    old, new = _device("1-1.2", address=5), _device("1-1.2", address=9)
    dedup.feed(HotplugEvent(True, old))
    assert dedup.feed(HotplugEvent(True, new)) == [
        HotplugEvent(False, old),
        HotplugEvent(True, new),
    ]
    # The stale departure of the old enumeration no longer matters.
    assert dedup.feed(HotplugEvent(False, old)) == []
    assert dedup.present() == [new]


def test_dedup_applies_the_filters() -> None:
    dedup = ArrivalDedup(DeviceFilters(ports=("1-1.4",)))
    assert dedup.feed(HotplugEvent(True, _device("1-1.5"))) == []
    assert dedup.feed(HotplugEvent(True, _device("1-1.4.1", pid=0x0001))) == []
    assert len(dedup.feed(HotplugEvent(True, _device("1-1.4.1")))) == 1
