"""The libusb package's pure parts: error mapping, the ZLP rule, the event-thread setting.

These need no device: python-libusb1's exception classes and status codes
are real, and so is a libusb context on a machine without USB.
"""

from __future__ import annotations

import logging
import threading

import pytest
import usb1

from parallel_flash.errors import (
    DeviceDisconnected,
    TransferCancelled,
    TransferStall,
    TransferTimeout,
    TransportError,
    UsbfsMemoryError,
)
from parallel_flash.transport.libusb.errors import is_memory_refusal, status_error, submit_error
from parallel_flash.transport.libusb.events import (
    DEFAULT_EVENT_THREADS,
    DEVICES_PER_EVENT_THREAD,
    EVENT_THREAD_NAME,
    EVENT_THREADS_ENV,
    EventThread,
    Shards,
    event_threads_setting,
)
from parallel_flash.transport.libusb.transfer import milliseconds, writable
from parallel_flash.transport.libusb.zero_packet import EMPTY, ZeroPacketMode
from parallel_flash.transport.usbfs import UsbfsBudget

CAPPED = UsbfsBudget(16 << 20)
UNCAPPED = UsbfsBudget(0)


@pytest.mark.parametrize(
    ("exc", "kind", "words"),
    [
        (usb1.USBErrorNoDevice(), DeviceDisconnected, "disconnected"),
        (usb1.USBErrorNoMem(), UsbfsMemoryError, "usbfs_memory_mb"),
        (usb1.USBErrorPipe(), TransferStall, "stalled"),
        (usb1.USBErrorTimeout(), TransferTimeout, "timed out"),
        (usb1.USBErrorAccess(), TransportError, "udev rule"),
        (usb1.USBErrorBusy(), TransportError, "another program"),
        (usb1.USBErrorOverflow(), TransportError, "USB error"),
    ],
)
def test_submission_errors_name_the_fault_and_what_to_do(
    exc: usb1.USBError, kind: type[TransportError], words: str
) -> None:
    error = submit_error(exc, "bulk OUT of 4 bytes", CAPPED)
    assert type(error) is kind
    assert words in str(error) and "bulk OUT of 4 bytes" in str(error)


def test_an_io_error_is_a_memory_refusal_only_under_a_cap() -> None:
    assert is_memory_refusal(usb1.USBErrorIO(), CAPPED)
    assert not is_memory_refusal(usb1.USBErrorIO(), UNCAPPED)
    assert is_memory_refusal(usb1.USBErrorNoMem(), UNCAPPED)
    assert type(submit_error(usb1.USBErrorIO(), "x", UNCAPPED)) is TransportError


@pytest.mark.parametrize(
    ("status", "kind", "words"),
    [
        (usb1.TRANSFER_TIMED_OUT, TransferTimeout, "within 1.5 s"),
        (usb1.TRANSFER_STALL, TransferStall, "stalled"),
        (usb1.TRANSFER_NO_DEVICE, DeviceDisconnected, "disconnected"),
        (usb1.TRANSFER_CANCELLED, TransferCancelled, "cancelled"),
        (usb1.TRANSFER_OVERFLOW, TransportError, "more data"),
        (usb1.TRANSFER_ERROR, TransportError, "I/O error"),
    ],
)
def test_completion_statuses_map_to_errors(
    status: int, kind: type[TransportError], words: str
) -> None:
    error = status_error(status, "bulk IN", 1.5)
    assert type(error) is kind and words in str(error) and "bulk IN" in str(error)


def test_zero_length_packets_by_flag_until_refused(caplog: pytest.LogCaptureFixture) -> None:
    mode = ZeroPacketMode("1-1.2")
    data = bytearray(512)
    assert mode.pieces(data, True) == ((data, True),)
    assert mode.pieces(data, False) == ((data, False),)
    with caplog.at_level(logging.INFO):
        mode.refused()
        mode.refused()  # said once
    assert caplog.text.count("separate zero-length transfers") == 1
    assert mode.pieces(data, True) == ((data, False), (EMPTY, False))
    assert mode.pieces(data, False) == ((data, False),)


def test_buffers_and_timeouts_for_libusb() -> None:
    assert milliseconds(0.0001) == 1 and milliseconds(2.5) == 2500  # never 0 = forever
    writable_view = memoryview(bytearray(4))
    assert writable(writable_view) is writable_view
    array = bytearray(b"ab")
    assert writable(array) is array
    copied = writable(b"ab")
    assert isinstance(copied, bytearray) and copied == b"ab"
    assert isinstance(writable(memoryview(b"ab")), bytearray)


@pytest.mark.parametrize(
    ("text", "expected"), [("", None), ("4", 4), ("0", 1), ("-3", 1)]
)
def test_event_threads_setting(
    monkeypatch: pytest.MonkeyPatch, text: str, expected: int | None
) -> None:
    monkeypatch.setenv(EVENT_THREADS_ENV, text)
    assert event_threads_setting() == expected


def test_a_bad_event_threads_setting_warns_and_uses_the_default(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(EVENT_THREADS_ENV, "many")
    with caplog.at_level(logging.WARNING):
        assert event_threads_setting() is None
    assert "'many' is not a number" in caplog.text


def _names() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith(EVENT_THREAD_NAME))


def test_shards_grow_to_their_limit_least_loaded_first_and_stop() -> None:
    shards = Shards(2)
    try:
        first = shards.assign()
        assert first is shards.primary  # nothing loaded yet: no new thread
        first.links += 1
        second = shards.assign()
        assert second is not first and second.name == f"{EVENT_THREAD_NAME}-2"
        second.links += 1
        third = shards.assign()  # at the limit: the least loaded of the two
        assert third in (first, second)
        assert _names() == [EVENT_THREAD_NAME, f"{EVENT_THREAD_NAME}-2"]
        assert first.find(255, 255) is None  # no such device here
    finally:
        shards.close()
    assert _names() == []


def test_by_default_a_new_thread_starts_only_when_every_thread_is_full() -> None:
    shards = Shards(DEFAULT_EVENT_THREADS, DEVICES_PER_EVENT_THREAD)
    try:
        for _ in range(DEVICES_PER_EVENT_THREAD):
            assert shards.assign() is shards.primary
            shards.primary.links += 1
        second = shards.assign()
        assert second is not shards.primary and len(shards.threads) == 2
    finally:
        shards.close()
    assert _names() == []


def test_an_event_thread_stops_when_interrupted() -> None:
    thread = EventThread(f"{EVENT_THREAD_NAME}-test")
    assert thread.close() is True
    assert f"{EVENT_THREAD_NAME}-test" not in _names()
