"""Byte-exact checks of every NOK message, both ways (loaders.md A.1 and A.2 tables)."""

from __future__ import annotations

import pytest

from parallel_flash.errors import LocalProtocolError, RemoteProtocolError
from parallel_flash.protocol.nokia.messages import (
    NOKU,
    AppType,
    Command,
    NokInfo,
    ParamReply,
    ProtocolMask,
    encode_param_reply,
    encode_status_reply,
    param_request,
    parse_param_request,
    parse_status_reply,
    status_meaning,
)
from parallel_flash.protocol.nokia.xfl import MmosPiece
from parallel_flash.protocol.nokia.xfs import FfuMessage, XfsKind

# -- commands ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "wire"),
    [
        (Command.INFO, bytes.fromhex("4e4f4b56")),               # "NOKV"
        (Command.DISABLE_TIMEOUT, bytes.fromhex("4e4f4b44")),    # "NOKD"
        (Command.SWITCH_TO_MMOS, bytes.fromhex("4e4f4b58434241")),  # "NOKXCBA", 7 bytes
        (Command.REBOOT, bytes.fromhex("4e4f4b52")),             # "NOKR"
    ],
)
def test_fixed_commands(command: Command, wire: bytes) -> None:
    assert command.value == wire
    assert Command(wire) is command


# -- NOKV reply ----------------------------------------------------------------------

NOKV_REPLY = bytes.fromhex(
    "4e4f4b56"          # signature "NOKV" (the host only checks it is not "NOKU")
    "00"                # not parsed
    "02"                # app type 2: flash app
    "02" "29"           # protocol version 2.41
    "02" "4b"           # app version 2.75
    "05"                # 5 subblocks
    "02" "0004" "00240000"          # 0x02 WriteBufferSize = 0x240000
    "05" "0006" "4c756d696100"      # 0x05 PlatformID "Lumia" + NUL (trimmed)
    "10" "0003" "01" "0005"         # 0x10 version 1, mask 0x0005 = SyncV1 | SyncV2
    "1f" "0001" "01"                # 0x1F MMOS over USB supported
    "24" "0008" "0000000080000000"  # 0x24 LargestMemoryRegion = 2 GiB
)  # fmt: skip


def test_nokv_reply_parses_every_field() -> None:
    info = NokInfo.parse(NOKV_REPLY)
    assert info.signature == b"NOKV" and not info.unsupported
    assert info.app_type == AppType.FLASH_APP and info.app_name == "FlashApp"
    assert info.protocol_version == (2, 41) and info.app_version == (2, 75)
    assert info.write_buffer_size == 0x240000
    assert info.platform_id == "Lumia"
    assert info.protocol_mask == ProtocolMask.SYNC_V1 | ProtocolMask.SYNC_V2
    assert info.mmos_over_usb is True and info.mmos_flag == 1
    assert info.largest_memory_region == 0x8000_0000
    assert info.transfer_size is None
    assert info.describe()["protocol_mask"] == 5


def test_nokv_reply_builds_the_same_bytes() -> None:
    assert NokInfo.parse(NOKV_REPLY).encode() == NOKV_REPLY
    built = NokInfo.build(
        write_buffer_size=0x240000,
        protocol_mask=5,
        mmos_over_usb=1,
        largest_memory_region=0x8000_0000,
        extra=[],
    )
    # build() orders subblocks by id; the platform id is left out here.
    assert NokInfo.parse(built.encode()).subblocks == tuple(
        block for block in NokInfo.parse(NOKV_REPLY).subblocks if block[0] != 0x05
    )


def test_nokv_absent_subblocks_are_none() -> None:
    info = NokInfo.parse(bytes.fromhex("4e4f4b56" "00" "01" "0000" "0102" "00"))
    assert info.app_type == AppType.BOOT_MANAGER and info.app_version == (1, 2)
    assert info.write_buffer_size is None and info.protocol_mask is None
    assert info.mmos_over_usb is None and info.largest_memory_region is None


def test_nokv_noku_reply() -> None:
    info = NokInfo.parse(NOKU)
    assert info.unsupported
    assert info.encode() == b"NOKU"


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (NOKV_REPLY[:9], "malformed NOKV"),                          # cut in the header
        (NOKV_REPLY[:16], "malformed NOKV"),                         # cut in a subblock
        (bytes.fromhex("4e4f4b56000202290000" "01" "02000200ff"), "0x02 .* is 2 bytes"),
        (bytes.fromhex("4e4f4b56000202290000" "01" "1000020100"), "0x10 .* is 2 bytes"),
        (bytes.fromhex("4e4f4b56000202290000" "01" "24000400000001"), "0x24 .* is 4 bytes"),
    ],
)
def test_malformed_nokv_is_a_remote_error(data: bytes, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        NokInfo.parse(data)


# -- NOKXFR ---------------------------------------------------------------------------

FVER_REQUEST = bytes.fromhex("4e4f4b584652" "00" "46564552")  # "NOKXFR", 0, "FVER": 11 bytes
FVER_REPLY = bytes.fromhex(
    "4e4f4b584652"      # "NOKXFR" (G: our models' layout in front of the value)
    "0000"              # status 0
    "46564552"          # "FVER"
    "00000000"          # zeros up to 0x10
    "04"                # [0x10] value length
    "332e3430"          # value "3.40"
)  # fmt: skip


def test_param_request_both_ways() -> None:
    assert param_request("FVER") == FVER_REQUEST
    assert parse_param_request(FVER_REQUEST) == "FVER"
    assert parse_param_request(b"NOKV") is None
    with pytest.raises(LocalProtocolError):
        param_request("TOOLONG")


def test_param_reply_both_ways() -> None:
    assert encode_param_reply("FVER", b"3.40") == FVER_REPLY
    assert ParamReply.parse(FVER_REPLY, name="FVER").value == b"3.40"
    assert ParamReply.parse(FVER_REPLY[:0x10], name="FVER").value is None  # WPI: null
    with pytest.raises(RemoteProtocolError, match="says its value is 4 bytes"):
        ParamReply.parse(FVER_REPLY[:-1], name="FVER")


# -- status replies -------------------------------------------------------------------


def test_status_reply_both_ways() -> None:
    wire = bytes.fromhex("4e4f4b584653" "1304")  # "NOKXFS", status 0x1304
    assert encode_status_reply(b"NOKXFS", 0x1304) == wire
    assert parse_status_reply(wire, request="NOKXFS") == 0x1304
    assert parse_status_reply(wire + b"extra", request="NOKXFS") == 0x1304
    assert parse_status_reply(b"NOKU", request="NOKXFS") is None
    assert status_meaning(0x1304) == "invalid platform ID"
    assert status_meaning(0x7777) == "unknown status"
    with pytest.raises(RemoteProtocolError, match="NOKXFL reply is 6 bytes"):
        parse_status_reply(wire[:6], request="NOKXFL")


# -- NOKXFL (Lumia MMOS piece) --------------------------------------------------------

XFL_HEAD = bytes.fromhex(
    "4e4f4b58464c"      # "NOKXFL"
    "00"                # no protocol field
    "01"                # subblock count 1
    "0000001e"          # subblock id 0x1E: load MMOS binary
    "00240010"          # subblock length = P + 0x10
    "00500000"          # L, the whole file (5 MiB)
    "00240000"          # offset of this piece
    "00"                # skip-MMOS-support-check: always 0
    "000000"            # zeros
    "00240000"          # P = 0x240000
)  # fmt: skip


def test_xfl_head_both_ways() -> None:
    piece = MmosPiece(total_length=0x500000, offset=0x240000, piece_length=0x240000)
    assert piece.encode_head() == XFL_HEAD
    assert piece.message_length == 0x240020
    parsed = MmosPiece.parse(XFL_HEAD + b"data")
    assert (parsed.total_length, parsed.offset) == (0x500000, 0x240000)
    assert parsed.piece_length == 0x240000
    assert (parsed.subblock_count, parsed.subblock_id) == (1, 0x1E)
    assert parsed.subblock_length == 0x240010
    assert MmosPiece.matches(XFL_HEAD)


def test_xfl_rejects_other_messages() -> None:
    with pytest.raises(RemoteProtocolError, match="NOKXFL"):
        MmosPiece.parse(b"NOKXFS" + bytes(26))
    with pytest.raises(LocalProtocolError):
        MmosPiece(total_length=1 << 32, offset=0, piece_length=1)


# -- NOKXFS (UFP FFU messages) ----------------------------------------------------------

HEADER_V1 = bytes.fromhex(
    "4e4f4b584653"      # "NOKXFS"
    "0001"              # protocol 1
    "21"                # progress 33 (1 of 3 messages)
    "0000"              # zeros
    "01"                # subblock count
    "0000000b"          # subblock 0x0B: header v1
    "0006000c"          # subblock length H + 0x0C
    "00000000"          # header type 0
    "00060000"          # H
    "40"                # options 0x40: FlashToRAM
    "000000"
)  # fmt: skip

HEADER_V2 = bytes.fromhex(
    "4e4f4b584653"      # "NOKXFS"
    "0002"              # protocol 2 (UFP 34605cd)
    "32"                # progress 50
    "0000"
    "01"
    "00000021"          # subblock 0x21: header v2
    "00020028"          # P + 0x28
    "00000000"          # header type 0
    "00060000"          # H, the same in every part
    "40"                # options
    "00040000"          # offset of this part (unaligned, 0x1D)
    "00020000"          # P (unaligned, 0x21)
    "00"                # erase 0
) + bytes(22)  # fmt: skip

PAYLOAD_V1 = bytes.fromhex(
    "4e4f4b584653"
    "0001"              # protocol 1
    "64"                # progress 100
    "0000"
    "01"
    "0000000c"          # subblock 0x0C: payload v1
    "00020008"          # C + 0x08
    "00020000"          # C
    "00"                # data options 0
    "000000"
)  # fmt: skip

PAYLOAD_V2 = bytes.fromhex(
    "4e4f4b584653"
    "0004"              # protocol 4 (SyncV2)
    "ff"                # progress wraps as a byte
    "0000"
    "01"
    "0000001b"          # subblock 0x1B: payload v2
    "0010000c"          # P + 0x0C
    "00100000"          # P
    "00"                # data options 0
) + bytes(7)  # fmt: skip


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (HEADER_V1, FfuMessage(kind=XfsKind.HEADER_V1, length=0x60000, progress=33, options=0x40)),
        (
            HEADER_V2,
            FfuMessage(
                kind=XfsKind.HEADER_V2, length=0x20000, progress=50, options=0x40,
                total=0x60000, offset=0x40000,
            ),
        ),
        (PAYLOAD_V1, FfuMessage(kind=XfsKind.PAYLOAD_V1, length=0x20000, progress=100)),
        (PAYLOAD_V2, FfuMessage(kind=XfsKind.PAYLOAD_V2, length=0x100000, progress=255)),
    ],
    ids=["header-v1", "header-v2", "payload-v1", "payload-v2"],
)
def test_xfs_heads_both_ways(wire: bytes, message: FfuMessage) -> None:
    assert len(wire) == {0x0B: 0x20, 0x21: 0x3C, 0x0C: 0x1C, 0x1B: 0x20}[message.kind]
    assert message.encode_head() == wire
    parsed = FfuMessage.parse(wire + bytes(message.length))
    assert parsed.kind is message.kind
    assert (parsed.length, parsed.progress, parsed.options) == (
        message.length, message.progress, message.options,
    )
    assert (parsed.total, parsed.offset, parsed.header_type) == (message.total, message.offset, 0)
    assert parsed.subblock_length == message.expected_subblock_length
    assert parsed.protocol == int.from_bytes(wire[6:8], "big")


def test_xfs_unknown_subblock_is_a_remote_error() -> None:
    with pytest.raises(RemoteProtocolError, match="NOKXFS"):
        FfuMessage.parse(PAYLOAD_V2[:12] + bytes.fromhex("0000001d") + PAYLOAD_V2[16:])
    with pytest.raises(RemoteProtocolError, match="shorter than its 60-byte head"):
        FfuMessage.parse(HEADER_V2[:40])
