"""engine.discovery without a device: filters, ID parsing, arrival deduplication."""

from __future__ import annotations

import uuid

import pytest

from parallel_flash.cli._usb import filters_from_args
from parallel_flash.engine.discovery import (
    ArrivalDedup,
    DeviceFilters,
    HotplugEvent,
    parse_unique_id,
)
from parallel_flash.errors import InputError
from parallel_flash.transport.libusb import UsbDeviceInfo


def _device(port: str, address: int = 5, vid: int = 0x045E, pid: int = 0x062A) -> UsbDeviceInfo:
    bus = int(port.split("-")[0])
    return UsbDeviceInfo(
        port=port, bus=bus, address=address, vendor_id=vid, product_id=pid, device=None
    )


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
