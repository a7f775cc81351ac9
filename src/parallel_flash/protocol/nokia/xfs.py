"""NOKXFS: the FFU header and payload messages UFP's FlashFFU sends (RAM boot with options 0x40).

Four heads, from UFP's ``SendFfuHeaderV1/V2`` and ``SendFfuPayloadV1/V2``
(loaders.md A.1, "The NOKXFS messages"). Each head is followed by its data
in the same OUT transfer; bytes not named are 0. The protocol field at 0x06
differs between header v2 (2) and payload v2 (4): both values are what the
host code sends (see loaders.md on that field's history).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from construct import (
    Bytes,
    Const,
    ConstructError,
    Int8ub,
    Int16ub,
    Int32ub,
    Padding,
    Struct,
)

from ...errors import LocalProtocolError, RemoteProtocolError

__all__ = (
    "FLASH_TO_RAM",
    "HEAD_SIZES",
    "PROTOCOL_FIELD",
    "VERIFY_WRITE",
    "XFS_SIGNATURE",
    "FfuMessage",
    "XfsKind",
)

XFS_SIGNATURE = b"NOKXFS"
#: UFPTool FlashFlags: the only option RAM boot sends (0x48 with -VerifyWrite).
FLASH_TO_RAM = 0x40
VERIFY_WRITE = 0x08
_U32_MAX = 0xFFFF_FFFF


class XfsKind(enum.IntEnum):
    """The subblock type, which says which of the four messages this is."""

    HEADER_V1 = 0x0B
    PAYLOAD_V1 = 0x0C
    PAYLOAD_V2 = 0x1B
    HEADER_V2 = 0x21


#: Value of the protocol field each message carries (FfuProtocol values as UFP sends them).
PROTOCOL_FIELD = {
    XfsKind.HEADER_V1: 0x0001,
    XfsKind.PAYLOAD_V1: 0x0001,
    XfsKind.HEADER_V2: 0x0002,
    XfsKind.PAYLOAD_V2: 0x0004,
}

_Common = Struct(
    "signature"      / Const(XFS_SIGNATURE),
    "protocol"       / Int16ub,
    "progress"       / Int8ub,          # ignored by devices (and can wrap, see loaders.md)
    "padding"        / Padding(2),
    "subblock_count" / Int8ub,          # 1
    "subblock_type"  / Int32ub,         # XfsKind
    "subblock_length" / Int32ub,        # bytes from 0x14 to the end of the message
)  # fmt: skip

_HEADS = {
    XfsKind.HEADER_V1: Struct(
        "common"         / _Common,
        "header_type"    / Int32ub,     # 0
        "length"         / Int32ub,     # H: the whole FFU header, in this one message
        "options"        / Int8ub,      # 0x40 FlashToRAM (| 0x08 VerifyWrite)
        "padding"        / Padding(3),
    ),
    XfsKind.HEADER_V2: Struct(
        "common"         / _Common,
        "header_type"    / Int32ub,     # 0
        "total"          / Int32ub,     # H, the same in every part
        "options"        / Int8ub,
        "offset"         / Int32ub,     # of this part within the header (unaligned, 0x1D)
        "length"         / Int32ub,     # P (unaligned, 0x21)
        "erase"          / Int8ub,      # 0
        "padding"        / Bytes(22),
    ),
    XfsKind.PAYLOAD_V1: Struct(
        "common"         / _Common,
        "length"         / Int32ub,     # C, always a full chunk
        "options"        / Int8ub,      # data options: 0
        "padding"        / Padding(3),
    ),
    XfsKind.PAYLOAD_V2: Struct(
        "common"         / _Common,
        "length"         / Int32ub,     # P
        "options"        / Int8ub,      # data options: 0
        "padding"        / Padding(7),
    ),
}  # fmt: skip

#: Bytes in front of the data, per message.
HEAD_SIZES: dict[XfsKind, int] = {kind: int(head.sizeof()) for kind, head in _HEADS.items()}


@dataclass(frozen=True, slots=True, kw_only=True)
class FfuMessage:
    """The head of one NOKXFS message; its ``length`` data bytes follow in the same transfer."""

    kind: XfsKind
    length: int
    progress: int = 0
    #: Header messages: the options byte. Payload messages: the data options byte (0).
    options: int = 0
    #: Header v2: total header length H and this part's offset within it.
    total: int = 0
    offset: int = 0
    protocol: int | None = None
    subblock_count: int = 1
    subblock_length: int | None = None
    header_type: int = 0

    def __post_init__(self) -> None:
        for name in ("length", "total", "offset"):
            value = getattr(self, name)
            if not 0 <= value <= _U32_MAX:
                raise LocalProtocolError(f"NOKXFS {name} {value} does not fit in a u32")
        if not 0 <= self.progress <= 0xFF or not 0 <= self.options <= 0xFF:
            raise LocalProtocolError("NOKXFS progress and options are single bytes")

    @property
    def head_size(self) -> int:
        return HEAD_SIZES[self.kind]

    @property
    def message_length(self) -> int:
        return self.head_size + self.length

    @property
    def expected_subblock_length(self) -> int:
        """What the subblock length field must say: everything from 0x14 on."""
        return self.message_length - 0x14

    def encode_head(self) -> bytes:
        common = {
            "protocol": PROTOCOL_FIELD[self.kind] if self.protocol is None else self.protocol,
            "progress": self.progress,
            "subblock_count": self.subblock_count,
            "subblock_type": int(self.kind),
            "subblock_length": (
                self.expected_subblock_length
                if self.subblock_length is None
                else self.subblock_length
            ),
        }
        fields: dict[str, object] = {"common": common, "length": self.length}
        if self.kind in (XfsKind.HEADER_V1, XfsKind.HEADER_V2):
            fields.update(header_type=self.header_type, options=self.options)
        else:
            fields.update(options=self.options)
        if self.kind is XfsKind.HEADER_V2:
            fields.update(total=self.total, offset=self.offset, erase=0, padding=bytes(22))
        return bytes(_HEADS[self.kind].build(fields))

    @staticmethod
    def matches(data: bytes | memoryview) -> bool:
        return bytes(data[:6]) == XFS_SIGNATURE

    @classmethod
    def parse(cls, data: bytes | memoryview) -> FfuMessage:
        """Parse the head of a message; the receiver checks lengths against the message."""
        try:
            common = _Common.parse(bytes(data[:0x14]))
            kind = XfsKind(common.subblock_type)
        except (ConstructError, ValueError) as exc:
            raise RemoteProtocolError(
                f"malformed NOKXFS message ({len(data)} bytes): {str(exc).splitlines()[0]}"
            ) from None
        head = _HEADS[kind]
        if len(data) < head.sizeof():
            raise RemoteProtocolError(
                f"NOKXFS {kind.name} message is {len(data)} bytes, shorter than its "
                f"{head.sizeof()}-byte head"
            )
        raw = head.parse(bytes(data[: head.sizeof()]))
        return cls(
            kind=kind,
            length=raw.length,
            progress=common.progress,
            options=raw.options,
            total=getattr(raw, "total", 0),
            offset=getattr(raw, "offset", 0),
            protocol=common.protocol,
            subblock_count=common.subblock_count,
            subblock_length=common.subblock_length,
            header_type=getattr(raw, "header_type", 0),
        )
