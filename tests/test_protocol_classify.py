"""Replies are classified by the phase that expects them and by length, never by byte 0 alone.

Byte-exact: each reply below is written out in hex, as the device puts it on
the wire (protocol.md, "Messages"), and each starts with 0x05 -- the Log
opcode -- without being a Log packet.
"""

from __future__ import annotations

import anyio
import pytest

from parallel_flash.engine.pipeline import BootOptions, boot_line
from parallel_flash.engine.records import DeviceState
from parallel_flash.errors import DeviceBootError, RemoteProtocolError
from parallel_flash.image import ImageBuffer
from parallel_flash.protocol.device import DeviceFaults
from parallel_flash.protocol.host import (
    DEFAULT_TIMEOUTS,
    Finished,
    HostPhase,
    HostStage,
    WimBootHost,
)
from parallel_flash.protocol.messages import LogPacket
from parallel_flash.transport.sim import simulated_line

#: A Log packet: 05, EventId 1, Version 0, Channel 0, Level 4, Opcode 0, Task 0,
#: Keywords 0, then "hi" (LEB128 length 2).
LOG = bytes.fromhex("05" "0100" "00" "00" "04" "00" "0000" "0000000000000000" "02" "6869")
#: The unique ID 00000011-f151-a509-0000-000000000007 in .NET byte order, then
#: the name "A1" (LEB128 length 2).
ID_TAIL = bytes.fromhex("11000000" "51f1" "09a5" "0000000000000007") + b"\x02A1"


def id_reply(cur_position_hex: str) -> bytes:
    """curPosition (8 bytes LE) + 16 capability bytes + unique ID + name."""
    return bytes.fromhex(cur_position_hex) + bytes(16) + ID_TAIL


def host() -> WimBootHost:
    return WimBootHost(sdi_length=100, wim_length=1000, max_packet_size=512)


def to_read(machine: WimBootHost, phase: HostPhase) -> None:
    """Drive ``machine`` to ``phase`` with a fresh device's answers."""
    while machine.phase is not phase:
        if machine.phase is HostPhase.READ_ID:
            machine.received(id_reply("0000000000000000"))
        else:
            machine.completed()


def test_the_test_bytes_are_what_they_claim() -> None:
    assert LogPacket.parse_exact(LOG) == LogPacket(event_id=1, level=4, text="hi")
    reply = id_reply("0500000000000000")
    assert len(reply) == 43  # 8 + 16 + 16 + LEB128 length + "A1"
    from parallel_flash.protocol.messages import IdReply

    parsed = IdReply.parse(reply)
    assert str(parsed.unique_id) == "00000011-f151-a509-0000-000000000007"
    assert (parsed.cur_position, parsed.friendly_name) == (5, "A1")


@pytest.mark.parametrize(
    ("wire", "status"),
    [
        ("05000000", 5),
        ("fbffffff", -5),
        ("05ffffff", -0xFB),  # 0xffffff05
        ("05050505", 0x05050505),
    ],
)
def test_a_four_byte_reply_is_the_status_whatever_its_first_byte(wire: str, status: int) -> None:
    machine = host()
    to_read(machine, HostPhase.READ_STATUS)
    machine.received(LOG)  # a Log packet first: kept, not fatal
    assert machine.phase is HostPhase.READ_STATUS
    data = bytes.fromhex(wire)
    if status >= 0:
        machine.received(data)
        assert machine.next_action() == Finished(status=status)
    else:
        with pytest.raises(DeviceBootError) as error:
            machine.received(data)
        assert error.value.status == status
        assert f"0x{status & 0xFFFFFFFF:08x}" in str(error.value)
    assert [log.text for log in machine.pop_logs()] == ["hi"]


@pytest.mark.parametrize(
    ("wire", "position"),
    [("0500000000000000", 5), ("0501000000000000", 0x105)],
)
def test_an_id_reply_whose_cur_position_starts_with_05_is_an_id_reply(
    wire: str, position: int
) -> None:
    machine = host()
    to_read(machine, HostPhase.READ_ID)
    machine.received(LOG)
    machine.received(id_reply(wire))
    assert machine.identity is not None and machine.identity.cur_position == position
    assert machine.phase is HostPhase.SEND_RESET  # stale: Reset, then identify again
    machine.completed()
    machine.received(LOG)  # Log packets before the 06 reply
    machine.received(bytes.fromhex("0600000000"))
    assert machine.phase is HostPhase.SEND_ID
    machine.completed()
    machine.received(LOG)
    machine.received(id_reply("0000000000000000"))
    assert machine.phase is HostPhase.SEND_WIM_OPCODE
    assert machine.log_count == 3


def test_a_reply_of_the_wrong_length_is_refused_by_name() -> None:
    machine = host()
    to_read(machine, HostPhase.READ_STATUS)
    with pytest.raises(RemoteProtocolError, match="status reply is 5 bytes"):
        machine.received(bytes.fromhex("0500000000"))
    machine = host()
    to_read(machine, HostPhase.READ_ID)
    with pytest.raises(RemoteProtocolError, match="Id reply is 3 bytes"):
        machine.received(b"\x05\x00\x00")


def test_each_wait_belongs_to_a_stage_with_its_deadline() -> None:
    machine = host()
    assert (machine.stage, machine.stage_timeout) == (
        HostStage.IDENTIFY,
        DEFAULT_TIMEOUTS.identify,
    )
    to_read(machine, HostPhase.STREAM)
    assert (machine.stage, machine.stage_timeout) == (HostStage.STREAM, None)
    machine.completed()
    assert (machine.stage, machine.stage_timeout) == (HostStage.STATUS, 15.0)


# -- end to end over the simulated link -------------------------------------------------


@pytest.fixture
def image(small_wim, small_sdi) -> ImageBuffer:  # type: ignore[no-untyped-def]
    return ImageBuffer.load(small_wim, small_sdi)


def test_status_5_boots_and_cur_position_5_is_reset_and_boots(image: ImageBuffer) -> None:
    faults = {
        1: DeviceFaults(status=5, log_packets=1),
        2: DeviceFaults(stale_position=5, log_packets=1),
        3: DeviceFaults(stale_position=0x105),
    }
    links = simulated_line(3, rate=None, faults=faults)
    records = anyio.run(lambda: boot_line(links, image))
    assert [r.state for r in records] == [DeviceState.BOOTED] * 3, [r.error for r in records]
    assert records[0].status == 5
    assert links[1].model.resets == 1 and links[2].model.resets == 1
    assert all(link.model.sha256 == image.sha256 for link in links)


def test_endless_log_packets_fail_within_their_stage_deadline(image: ImageBuffer) -> None:
    faults = {
        1: DeviceFaults(stale_position=4096, logs_after_reset=True),
        2: DeviceFaults(logs_for_status=True),
    }
    links = simulated_line(3, rate=None, faults=faults)
    options = BootOptions(reset_timeout=0.5, status_timeout=0.5)
    records = anyio.run(lambda: boot_line(links, image, options=options))
    reset, status, healthy = records
    assert reset.state is DeviceState.FAILED
    assert "Reset recovery exceeded its deadline of 0.5 s" in (reset.error or "")
    assert status.state is DeviceState.FAILED
    assert "the status exceeded its deadline of 0.5 s" in (status.error or "")
    assert healthy.state is DeviceState.BOOTED
    for record, link in ((reset, links[0]), (status, links[1])):
        assert record.elapsed() < 3.0
        assert link.model.chatter_sent > 100  # it really babbled
        # The record keeps the first and the last ones and counts the rest.
        assert len(record.logs) == 32 and record.logs_dropped == link.model.chatter_sent - 32


def test_a_header_refusal_ends_the_stream_before_the_image_is_sent(image: ImageBuffer) -> None:
    faults = {1: DeviceFaults(ram=1 << 20)}
    links = simulated_line(2, rate=5e6, faults=faults)
    options = BootOptions(transfer_timeout=5.0)
    records = anyio.run(lambda: boot_line(links, image, options=options))
    refused, healthy = records
    assert refused.state is DeviceState.FAILED
    assert "0xc0000017" in (refused.error or "")
    assert "refused the image after 0 of" in (refused.error or "")
    assert links[0].model.received_bytes == 0
    # Ended at once: long before a stalled stream would have given up (4 x 5 s).
    assert refused.elapsed() < 2.0
    assert healthy.state is DeviceState.BOOTED
