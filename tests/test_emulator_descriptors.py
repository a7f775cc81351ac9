"""Pure parts of the emulator: descriptors, standard requests, usbfs accounting, link booking."""

from __future__ import annotations

import pytest

from parallel_flash.emulator.descriptors import (
    DeviceIdentity,
    answer_standard_request,
    configuration_descriptor,
    device_descriptor,
    hub_descriptors,
    string_descriptor,
)
from parallel_flash.emulator.devio import LinkThrottle, UsbfsMemory

FLASHING = DeviceIdentity(serial="0123ABCD")

DEVICE_DESCRIPTOR = bytes.fromhex(
    "12"  # bLength
    "01"  # bDescriptorType: device
    "0002"  # bcdUSB 2.00
    "00" "00" "00"  # class, subclass, protocol: per interface
    "40"  # bMaxPacketSize0 64
    "5e04"  # idVendor 0x045E
    "2a06"  # idProduct 0x062A
    "0001"  # bcdDevice 1.00
    "01" "02" "03"  # iManufacturer, iProduct, iSerialNumber
    "01"  # bNumConfigurations
)  # fmt: skip

CONFIGURATION = bytes.fromhex(
    "09" "02" "2000" "01" "01" "00" "80" "fa"  # 32 bytes in all, 1 interface, config 1
    "09" "04" "00" "00" "02" "ff" "ff" "ff" "00"  # interface 0 alt 0, 2 endpoints, vendor class
    "07" "05" "81" "02" "0002" "00"  # bulk IN 0x81, 512 bytes
    "07" "05" "01" "02" "0002" "00"  # bulk OUT 0x01, 512 bytes
)  # fmt: skip


def test_device_descriptor_matches_the_annotated_bytes() -> None:
    assert device_descriptor(FLASHING) == DEVICE_DESCRIPTOR
    assert device_descriptor(DeviceIdentity())[16] == 0  # no serial, no iSerialNumber


def test_configuration_has_one_bulk_pair_on_interface_0() -> None:
    assert configuration_descriptor(FLASHING) == CONFIGURATION
    booted = configuration_descriptor(DeviceIdentity(bulk_endpoints=False))
    assert len(booted) == 18 and booted[13] == 0  # interface without endpoints


def test_string_descriptors_are_utf16_with_a_langid_table() -> None:
    assert string_descriptor(FLASHING, 0) == bytes.fromhex("04030904")
    assert string_descriptor(FLASHING, 1) == b"\x14\x03" + "Microsoft".encode("utf-16-le")
    assert string_descriptor(FLASHING, 3) == b"\x12\x03" + "0123ABCD".encode("utf-16-le")
    assert string_descriptor(DeviceIdentity(), 3) is None
    assert string_descriptor(FLASHING, 9) is None


def test_hub_descriptors_describe_a_hub() -> None:
    blob = hub_descriptors(ports=7)
    assert blob[4] == 0x09  # bDeviceClass: hub
    assert device_descriptor(DeviceIdentity(hub_ports=7)) == blob[:18]


@pytest.mark.parametrize(
    ("setup", "length", "answer"),
    [
        ((0x80, 6, 0x0100, 0), 18, DEVICE_DESCRIPTOR),
        ((0x80, 6, 0x0100, 0), 8, DEVICE_DESCRIPTOR[:8]),  # truncated to wLength
        ((0x80, 6, 0x0200, 0), 255, CONFIGURATION),
        ((0x80, 6, 0x0302, 0x0409), 255, string_descriptor(FLASHING, 2)),
        ((0x80, 6, 0x0309, 0x0409), 255, None),  # no such string: STALL
        ((0x80, 0, 0, 0), 2, b"\x00\x00"),
        ((0x80, 8, 0, 0), 1, b"\x01"),
        ((0x00, 9, 1, 0), 0, b""),
        ((0x01, 11, 0, 0), 0, b""),
        ((0x01, 11, 1, 0), 0, None),  # alternate setting 1 does not exist
        ((0x80, 99, 0, 0), 4, None),
    ],
)
def test_standard_requests(
    setup: tuple[int, int, int, int], length: int, answer: bytes | None
) -> None:
    assert answer_standard_request(FLASHING, *setup, length) == answer


def test_standard_request_refuses_class_requests() -> None:
    with pytest.raises(ValueError, match="not a standard request"):
        answer_standard_request(FLASHING, 0x21, 0x22, 1, 0, 0)


def test_usbfs_memory_charges_like_the_kernel() -> None:
    # Buffer + struct async/urb bookkeeping + one scatterlist entry per 16 KiB.
    assert UsbfsMemory.charge_for(16) == 16 + 512
    assert UsbfsMemory.charge_for(1 << 20) == (1 << 20) + 512 + 64 * 32
    memory = UsbfsMemory(1)
    quarter = UsbfsMemory.charge_for(256 * 1024)
    assert [memory.try_charge(quarter) for _ in range(4)] == [True, True, True, False]
    memory.release(quarter)
    assert memory.try_charge(quarter) and memory.refused == 1
    unlimited = UsbfsMemory(0)
    assert all(unlimited.try_charge(1 << 30) for _ in range(8))
    with pytest.raises(ValueError, match="usbfs_memory_mb"):
        UsbfsMemory(-1)


def test_link_books_transfers_back_to_back() -> None:
    link = LinkThrottle(40e6)
    first = link.book(10.0, 1_000_000)
    second = link.book(10.0, 1_000_000)  # queued behind the first
    assert first == pytest.approx(10.025)
    assert second == pytest.approx(10.050)
    assert link.book(20.0, 400_000) == pytest.approx(20.010)  # idle link starts at once
    with pytest.raises(ValueError, match="link rate"):
        LinkThrottle(0)


def test_the_emulator_uses_the_protocol_ids() -> None:
    """descriptors.py repeats protocol/messages.py's IDs (it runs before construct loads)."""
    from parallel_flash.emulator import descriptors
    from parallel_flash.protocol import messages

    assert (descriptors.MICROSOFT_VID, descriptors.FLASHING_PID) == (
        messages.MICROSOFT_VID,
        messages.FLASHING_PID,
    )
