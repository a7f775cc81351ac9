"""The sans-IO host: every step of protocol.md's sequence, against the device model."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from _pair import drive
from parallel_flash.errors import DeviceBootError, LocalProtocolError, RemoteProtocolError
from parallel_flash.protocol.device import DeviceFaults, DeviceModel
from parallel_flash.protocol.host import (
    DEFAULT_TIMEOUTS,
    Finished,
    HostPhase,
    ReadBulk,
    SendBulk,
    SendControl,
    StreamImage,
    TransferPlan,
    WimBootHost,
    needs_zero_packet,
)
from parallel_flash.protocol.messages import IdReply, LogPacket, encode_status


def id_reply(cur_position: int = 0, name: str = "Contoso.A1") -> bytes:
    return IdReply(
        cur_position=cur_position,
        capabilities=bytes(16),
        unique_id=uuid.UUID(int=7),
        friendly_name=name,
    ).encode()


def host_for(sdi: int = 100, wim: int = 1000, **kw: object) -> WimBootHost:
    return WimBootHost(sdi_length=sdi, wim_length=wim, max_packet_size=512, **kw)  # type: ignore[arg-type]


def test_sequence_actions_in_order() -> None:
    host = host_for()
    control = host.next_action()
    assert isinstance(control, SendControl)
    assert (control.request.request_type, control.request.request) == (0x21, 0x22)
    assert (control.request.value, control.request.index) == (1, 0)
    assert control.timeout == DEFAULT_TIMEOUTS.identify
    host.completed()
    assert host.next_action() == SendBulk(
        data=b"\x01", timeout=DEFAULT_TIMEOUTS.identify, zero_packet=False
    )
    host.completed()
    read = host.next_action()
    assert read == ReadBulk(size=16376, timeout=DEFAULT_TIMEOUTS.identify)
    host.received(id_reply())
    assert host.next_action() == SendBulk(data=b"\x10", timeout=1.0, zero_packet=False)
    host.completed()
    header = host.next_action()
    assert header == SendBulk(
        data=bytes.fromhex("64000000" "e8030000" "00001000"), timeout=1.0, zero_packet=False
    )
    host.completed()
    stream = host.next_action()
    assert isinstance(stream, StreamImage)
    assert stream.timeout == 1.0
    host.completed()
    assert host.next_action() == ReadBulk(size=16376, timeout=15.0)
    host.received(encode_status(0))
    assert host.next_action() == Finished(status=0)
    assert host.phase is HostPhase.DONE


def test_stale_position_sends_reset_and_identifies_again() -> None:
    host = host_for()
    host.completed()
    host.completed()
    host.received(id_reply(cur_position=4096))
    assert host.next_action() == SendBulk(data=b"\x08", timeout=5.0, zero_packet=False)
    host.completed()
    assert host.next_action() == ReadBulk(size=16376, timeout=5.0)
    host.received(LogPacket(text="resetting").encode())   # Log packets are skipped
    host.received(b"\x03\x00")                            # and so is anything not 06
    assert host.phase is HostPhase.READ_RESET
    host.received(b"\x06\x00\x00\x00\x00")
    assert host.next_action() == SendBulk(
        data=b"\x01", timeout=DEFAULT_TIMEOUTS.identify, zero_packet=False
    )
    host.completed()
    host.received(id_reply(cur_position=0))
    assert host.phase is HostPhase.SEND_WIM_OPCODE
    assert [log.text for log in host.pop_logs()] == ["resetting"]


def test_reset_refused_fails_the_device() -> None:
    host = host_for()
    host.completed()
    host.completed()
    host.received(id_reply(cur_position=1))
    host.completed()
    host.received(b"\x06")
    host.completed()
    with pytest.raises(RemoteProtocolError, match="busy, reset refused"):
        host.received(id_reply(cur_position=1))
    assert host.phase is HostPhase.ERROR
    with pytest.raises(LocalProtocolError):
        host.next_action()


def test_log_packets_anywhere_a_reply_is_expected() -> None:
    host = host_for()
    host.completed()
    host.completed()
    host.received(LogPacket(level=2, text="before id").encode())
    host.received(id_reply())
    for _ in range(3):
        host.completed()
    host.received(LogPacket(level=4, text="before status").encode())
    host.received(encode_status(1))
    assert isinstance(host.next_action(), Finished)
    assert [(log.level, log.text) for log in host.pop_logs()] == [
        (2, "before id"),
        (4, "before status"),
    ]
    assert host.pop_logs() == []


def test_negative_status_is_a_boot_error_with_the_seed_message() -> None:
    host = host_for()
    host.completed()
    host.completed()
    host.received(id_reply())
    for _ in range(3):
        host.completed()
    with pytest.raises(DeviceBootError, match=r"WIM boot failure status 0xc0000017"):
        host.received(encode_status(-0x3FFFFFE9))
    assert host.phase is HostPhase.ERROR


def test_legacy_loader_gets_16376_byte_transfers() -> None:
    host = host_for()
    host.completed()
    host.completed()
    host.received(id_reply(name="Nokia.MSM8960.P4301.foo"))
    assert host.transfer_size == 16376
    explicit = host_for(transfer_size=65536)
    explicit.completed()
    explicit.completed()
    explicit.received(id_reply(name="Nokia.MSM8960.P4301"))
    assert explicit.transfer_size == 65536


def test_replies_outside_a_read_are_refused() -> None:
    host = host_for()
    with pytest.raises(LocalProtocolError, match="no reply is expected"):
        host.received(encode_status(0))


def test_garbage_id_reply_fails() -> None:
    host = host_for()
    host.completed()
    host.completed()
    with pytest.raises(RemoteProtocolError, match="Id reply"):
        host.received(b"\x00\x01")


def test_inputs_over_four_gib_are_refused_up_front() -> None:
    with pytest.raises(LocalProtocolError, match="4 GiB"):
        host_for(sdi=3_170_304, wim=(1 << 32) - 3_170_304)


@pytest.mark.parametrize(
    ("sdi", "wim", "size", "expected"),
    [
        # SDI cut separately: its last transfer is short, the WIM starts afresh.
        (3_170_304, 2_500_000, 1 << 20,
         [(0, 1 << 20, True), (1 << 20, 1 << 20, True), (2 << 20, 1 << 20, True),
          (3 << 20, 24576, True),
          (3_170_304, 1 << 20, True), (3_170_304 + (1 << 20), 1 << 20, True),
          (3_170_304 + (2 << 20), 402_848, False)]),
        (0, 1000, 16376, [(0, 1000, False)]),
        (16376, 16376, 16376, [(0, 16376, False), (16376, 16376, False)]),
    ],
)
def test_transfer_plan_cuts_sdi_and_wim_separately(
    sdi: int, wim: int, size: int, expected: list[tuple[int, int, bool]]
) -> None:
    plan = TransferPlan(sdi_length=sdi, wim_length=wim, transfer_size=size, max_packet_size=512)
    assert list(plan) == expected
    assert len(plan) == len(expected)
    assert sum(length for _, length, _ in plan) == sdi + wim


def test_zero_packet_rule() -> None:
    assert needs_zero_packet(512, 512)
    assert needs_zero_packet(1 << 20, 512)
    assert not needs_zero_packet(0, 512)
    assert not needs_zero_packet(16376, 512)
    assert not needs_zero_packet(12, 512)


def test_back_to_back_with_the_device_model(small_wim, small_sdi) -> None:  # type: ignore[no-untyped-def]
    sdi, wim = small_sdi.read_bytes(), small_wim.read_bytes()
    image = sdi + wim
    device = DeviceModel(friendly_name="Contoso.Pair", faults=DeviceFaults(log_packets=1))
    host = WimBootHost(sdi_length=len(sdi), wim_length=len(wim), max_packet_size=512)
    drive(host, device, image)
    assert device.rejection is None
    assert device.booted
    assert device.received_bytes == len(image)
    assert device.sha256 == hashlib.sha256(image).hexdigest()
    assert len(host.pop_logs()) == 2  # one before the Id reply, one before the status
