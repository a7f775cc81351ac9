"""Byte-exact checks of every SimpleIO message (protocol.md, "Messages")."""

from __future__ import annotations

import uuid

import pytest

from parallel_flash.errors import LocalProtocolError, RemoteProtocolError
from parallel_flash.protocol.messages import (
    IdReply,
    LogPacket,
    Opcode,
    WimBootHeader,
    encode_status,
    parse_status,
)

SEED_ID = uuid.UUID("00000011-f151-a509-0000-000000000000")
SEED_NAME = "Contoso.MSM8960.JD301_ATT.3.2.1"

ID_REPLY = bytes.fromhex(
    "0000000000000000"                      # curPosition (s64) = 0
    "01000000000000000000000000000300"      # capabilities: [0]=1 FastFlash, [14]=3 -> client v4
    "1100000051f109a50000000000000000"      # GUID, .NET order: 00000011-f151-a509-0000-...
    "1f"                                    # LEB128 name length = 31
) + SEED_NAME.encode()


def test_id_reply_parses_the_seed_device() -> None:
    reply = IdReply.parse(ID_REPLY)
    assert reply.cur_position == 0
    assert reply.unique_id == SEED_ID
    assert reply.unique_id_text == "00000011-f151-a509-0000-000000000000"
    assert reply.friendly_name == SEED_NAME
    assert reply.fast_flash
    assert reply.client_version == 4


def test_id_reply_builds_the_same_bytes() -> None:
    reply = IdReply.parse(ID_REPLY)
    assert reply.encode() == ID_REPLY


def test_id_reply_long_name_uses_multibyte_leb128() -> None:
    name = "N" * 200
    data = IdReply(
        cur_position=-1, capabilities=bytes(16), unique_id=SEED_ID, friendly_name=name
    ).encode()
    assert data[:8] == b"\xff" * 8                 # s64 -1
    assert data[40:42] == bytes((0xC8, 0x01))      # 200 = 0x48 | 0x80, then 0x01
    assert IdReply.parse(data).friendly_name == name


@pytest.mark.parametrize(
    "data",
    [
        ID_REPLY[:30],                              # cut inside the GUID
        ID_REPLY[:-5],                              # name shorter than its length
        ID_REPLY[:40] + b"\x02\xff\xfe",            # not UTF-8
    ],
)
def test_malformed_id_reply_is_a_remote_error(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="Id reply"):
        IdReply.parse(data)


LOG_PACKET = bytes.fromhex(
    "05"                # opcode Log
    "3412"              # EventId s16 = 0x1234
    "01"                # Version
    "02"                # Channel
    "02"                # Level 2 = error
    "07"                # Opcode
    "feff"              # Task s16 = -2
    "0800000000000000"  # Keywords s64 = 8
    "05"                # LEB128 length 5
) + b"oops!"


def test_log_packet_round_trip() -> None:
    packet = LogPacket.parse(LOG_PACKET)
    assert (packet.event_id, packet.version, packet.channel) == (0x1234, 1, 2)
    assert (packet.level, packet.opcode, packet.task, packet.keywords) == (2, 7, -2, 8)
    assert packet.text == "oops!"
    assert packet.encode() == LOG_PACKET
    assert LogPacket.matches(LOG_PACKET)
    assert not LogPacket.matches(ID_REPLY)
    assert not LogPacket.matches(b"")


def test_truncated_log_packet_is_a_remote_error() -> None:
    with pytest.raises(RemoteProtocolError, match="Log packet"):
        LogPacket.parse(LOG_PACKET[:10])


def test_wim_header_is_twelve_little_endian_bytes() -> None:
    header = WimBootHeader(sdi_length=3_170_304, wim_length=0x01020304, transfer_size=1_048_576)
    assert header.encode() == bytes.fromhex(
        "00603000"  # SDI length 3,170,304
        "04030201"  # WIM length
        "00001000"  # transfer size 1 MiB
    )
    assert WimBootHeader.parse(header.encode()) == header


def test_wim_header_refuses_four_gib() -> None:
    with pytest.raises(LocalProtocolError, match="under 4 GiB"):
        WimBootHeader(sdi_length=1, wim_length=0xFFFF_FFFF, transfer_size=16376)
    with pytest.raises(LocalProtocolError, match="u32"):
        WimBootHeader(sdi_length=0, wim_length=1 << 32, transfer_size=16376)


def test_status_is_a_signed_32_bit_value() -> None:
    assert encode_status(0) == b"\x00\x00\x00\x00"
    assert encode_status(-5) == b"\xfb\xff\xff\xff"
    assert parse_status(b"\x17\x00\x00\xc0") == -0x3FFFFFE9
    with pytest.raises(RemoteProtocolError, match="expected 4"):
        parse_status(b"\x00\x00")


def test_opcodes_match_protocol_md() -> None:
    assert Opcode.ID.encode() == b"\x01"
    assert Opcode.RESET == 8
    assert Opcode.WIM == 16
    assert Opcode.ERR == 6
    assert Opcode.LOG == 5
    assert Opcode.QUERY_BITLOCKER_STATE == 29
