"""The device model: what it checks, what it answers, and every injectable fault."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from _pair import drive
from parallel_flash.errors import TransferTimeout
from parallel_flash.protocol.device import (
    STATUS_INVALID_IMAGE_FORMAT,
    STATUS_NO_MEMORY,
    DeviceFaults,
    DeviceModel,
    OutResult,
)
from parallel_flash.protocol.host import WimBootHost
from parallel_flash.protocol.messages import IdReply, LogPacket, WimBootHeader, parse_status


@pytest.fixture
def image(small_sdi: Path, small_wim: Path) -> tuple[bytes, bytes]:
    return small_sdi.read_bytes(), small_wim.read_bytes()


def boot(device: DeviceModel, sdi: bytes, wim: bytes, **kw: object) -> WimBootHost:
    host = WimBootHost(
        sdi_length=len(sdi), wim_length=len(wim), max_packet_size=512, **kw  # type: ignore[arg-type]
    )
    drive(host, device, sdi + wim)
    return host


def test_good_image_boots_and_is_hashed(image: tuple[bytes, bytes]) -> None:
    sdi, wim = image
    device = DeviceModel()
    boot(device, sdi, wim)
    assert device.booted and device.rejection is None
    assert device.sha256 == hashlib.sha256(sdi + wim).hexdigest()
    summary = device.summary()
    assert summary["received_bytes"] == summary["expected_bytes"] == len(sdi) + len(wim)
    assert summary["status_sent"] == 0


def test_transcript_follows_protocol_md(image: tuple[bytes, bytes]) -> None:
    sdi, wim = image
    device = DeviceModel()
    boot(device, sdi, wim)
    t = device.transcript
    assert t[0] == ("control", 0x21, 0x22, 1, 0)
    assert t[1:5] == [("out", 1), ("in", t[2][1]), ("out", 1), ("out", 12)]
    data = t[5:-1]
    # SDI (73728 = 144 x 512) is one short transfer, then its ZLP; then the WIM.
    assert data[0] == ("out", len(sdi)) and data[1] == ("out", 0)
    sizes = [n for _, n in data[2:] if n]
    assert sizes[:-1] == [1 << 20] * (len(sizes) - 1)
    assert sum(sizes) == len(wim)
    assert t[-1] == ("in", 4)


def test_ram_limit_refuses_and_stops_reading(image: tuple[bytes, bytes]) -> None:
    sdi, wim = image
    device = DeviceModel(ram_limit=1000)
    device.control(0x21, 0x22, 1, 0)
    device.bulk_out(b"\x10")
    device.bulk_out(WimBootHeader(sdi_length=len(sdi), wim_length=len(wim),
                                  transfer_size=1 << 20).encode())
    assert device.bulk_out(sdi[:4096]) is OutResult.NAK
    reply = device.bulk_in(16376)
    assert reply is not None and parse_status(reply) == STATUS_NO_MEMORY
    assert "does not fit" in (device.rejection or "")


def test_corrupt_wim_header_is_rejected_with_negative_status(image: tuple[bytes, bytes]) -> None:
    sdi, wim = image
    bad = b"XXWIM\0\0\0" + wim[8:]
    device = DeviceModel()
    with pytest.raises(Exception, match="0xc000007b"):
        boot(device, sdi, bad)
    assert device.status_sent == STATUS_INVALID_IMAGE_FORMAT
    assert "magic" in (device.rejection or "")
    assert not device.booted


def test_sdi_without_wim_entry_at_its_end_is_rejected(image: tuple[bytes, bytes]) -> None:
    sdi, wim = image
    device = DeviceModel()
    with pytest.raises(Exception, match="WIM boot failure"):
        boot(device, sdi + b"\0" * 512, wim)   # the WIM entry no longer sits at the SDI's end
    assert "WIM" in (device.rejection or "")


def test_missing_zero_length_packet_is_noticed(image: tuple[bytes, bytes]) -> None:
    sdi, wim = image
    device = DeviceModel()
    device.control(0x21, 0x22, 1, 0)
    device.bulk_out(b"\x10")
    device.bulk_out(WimBootHeader(sdi_length=len(sdi), wim_length=len(wim),
                                  transfer_size=1 << 20).encode())
    device.bulk_out(sdi)            # 73728 bytes: a multiple of 512, so a ZLP is due
    device.bulk_out(wim[: 1 << 20])
    assert "zero-length packet" in (device.rejection or "")


def test_fault_negative_status(image: tuple[bytes, bytes]) -> None:
    sdi, wim = image
    device = DeviceModel(faults=DeviceFaults(status=-5))
    with pytest.raises(Exception, match="0xfffffffb"):
        boot(device, sdi, wim)
    assert device.received_bytes == len(sdi) + len(wim)
    assert not device.booted


def test_fault_stop_reading(image: tuple[bytes, bytes]) -> None:
    sdi, wim = image
    device = DeviceModel(faults=DeviceFaults(stop_reading_after=1 << 20))
    with pytest.raises(TransferTimeout, match="nak"):
        boot(device, sdi, wim)
    assert device.received_bytes == len(sdi) + (1 << 20)


def test_fault_disconnect(image: tuple[bytes, bytes]) -> None:
    sdi, wim = image
    device = DeviceModel(faults=DeviceFaults(disconnect_after=100_000))
    with pytest.raises(TransferTimeout, match="gone"):
        boot(device, sdi, wim)
    assert device.disconnected
    assert device.bulk_in(16376) is None
    assert not device.control(0x21, 0x22, 1, 0)


def test_fault_stale_position_cleared_by_reset(image: tuple[bytes, bytes]) -> None:
    sdi, wim = image
    device = DeviceModel(faults=DeviceFaults(stale_position=12345))
    host = boot(device, sdi, wim)
    assert host.reset_sent and device.resets == 1 and device.booted


def test_fault_refuse_reset() -> None:
    device = DeviceModel(faults=DeviceFaults(stale_position=7, refuse_reset=True))
    device.bulk_out(b"\x01")
    assert IdReply.parse(device.bulk_in(16376) or b"").cur_position == 7
    device.bulk_out(b"\x08")
    assert (device.bulk_in(16376) or b"")[:1] == b"\x06"
    device.bulk_out(b"\x01")
    assert IdReply.parse(device.bulk_in(16376) or b"").cur_position == 7


def test_fault_log_packets_before_every_reply() -> None:
    device = DeviceModel(faults=DeviceFaults(log_packets=2))
    device.bulk_out(b"\x01")
    replies = [device.bulk_in(16376) for _ in range(3)]
    assert [LogPacket.matches(r or b"") for r in replies] == [True, True, False]
    assert device.bulk_in(16376) is None


def test_fault_silent_status(image: tuple[bytes, bytes]) -> None:
    sdi, wim = image
    device = DeviceModel(faults=DeviceFaults(silent_status=True))
    with pytest.raises(TransferTimeout, match="boot status"):
        boot(device, sdi, wim)
    assert device.received_bytes == len(sdi) + len(wim)


def test_count_only_mode_skips_hashing(image: tuple[bytes, bytes]) -> None:
    sdi, wim = image
    device = DeviceModel(count_only=True)
    boot(device, sdi, wim)
    assert device.booted and device.sha256 is None and device.transcript == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("status=-5", DeviceFaults(status=-5)),
        ("stop-reading=0x100000,logs=2", DeviceFaults(stop_reading_after=1 << 20, log_packets=2)),
        ("stale=4096,refuse-reset", DeviceFaults(stale_position=4096, refuse_reset=True)),
        ("disconnect=10, silent-status", DeviceFaults(disconnect_after=10, silent_status=True)),
    ],
)
def test_fault_spec_round_trip(text: str, expected: DeviceFaults) -> None:
    assert DeviceFaults.parse(text) == expected
    assert DeviceFaults.parse(expected.describe()) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [("bogus=1", "unknown fault 'bogus'"), ("status", "needs a value"),
     ("refuse-reset=1", "takes no value"), ("logs=many", "not an integer")],
)
def test_fault_spec_errors_name_the_item(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DeviceFaults.parse(text)


@pytest.mark.parametrize("wim_length", [2_097_152, 2_000_000, 512, 1])
def test_status_follows_the_last_transfer_whatever_its_length(
    small_sdi: Path, small_wim: Path, wim_length: int
) -> None:
    """A last transfer that is a multiple of 512 ends with its ZLP; the status must follow it."""
    sdi = small_sdi.read_bytes()
    wim = small_wim.read_bytes()[:208] + bytes(max(0, wim_length - 208))
    wim = wim[:wim_length]
    device = DeviceModel(count_only=True)   # the header check needs the whole WIM; count only
    boot(device, sdi, wim)
    assert device.booted and device.received_bytes == len(sdi) + wim_length
