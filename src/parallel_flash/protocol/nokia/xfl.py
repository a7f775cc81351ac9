"""NOKXFL subblock 0x1E, "load MMOS binary": one piece of a .secwim per message.

Layout from WPinternals' ``LoadMmosBinary`` (loaders.md A.2 step 4). The
0x20-byte head is followed by the piece itself in the same OUT transfer.
"""

from __future__ import annotations

from dataclasses import dataclass

from construct import Const, ConstructError, Int8ub, Int32ub, Padding, Struct

from ...errors import LocalProtocolError, RemoteProtocolError

__all__ = (
    "DEFAULT_MMOS_PIECE",
    "MMOS_SUBBLOCK",
    "XFL_HEAD_SIZE",
    "XFL_SIGNATURE",
    "MmosPiece",
)

XFL_SIGNATURE = b"NOKXFL"
#: Subblock id of "load MMOS binary".
MMOS_SUBBLOCK = 0x1E
#: The piece size WPinternals used before it read WriteBufferSize (2019, 5dae1da),
#: and the size it still uses when a device does not report one.
DEFAULT_MMOS_PIECE = 0x240000
XFL_HEAD_SIZE = 0x20
_U32_MAX = 0xFFFF_FFFF

_XflHead = Struct(
    "signature"       / Const(XFL_SIGNATURE),
    "reserved"        / Const(0, Int8ub),        # no protocol field, unlike NOKXFS
    "subblock_count"  / Int8ub,                  # 1
    "subblock_id"     / Int32ub,                 # 0x1E
    "subblock_length" / Int32ub,                 # piece length + 0x10
    "total_length"    / Int32ub,                 # the whole file, in every piece
    "offset"          / Int32ub,                 # of this piece in the file
    "skip_mmos_check" / Int8ub,                  # the host always sends 0
    "padding"         / Padding(3),
    "piece_length"    / Int32ub,                 # the piece follows in the same transfer
)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class MmosPiece:
    """The 0x20-byte head of one NOKXFL message (the piece itself follows it)."""

    total_length: int
    offset: int
    piece_length: int
    skip_mmos_check: int = 0
    subblock_count: int = 1
    subblock_id: int = MMOS_SUBBLOCK
    subblock_length: int | None = None

    def __post_init__(self) -> None:
        for name in ("total_length", "offset", "piece_length"):
            value = getattr(self, name)
            if not 0 <= value <= _U32_MAX:
                raise LocalProtocolError(f"NOKXFL {name} {value} does not fit in a u32")

    @property
    def message_length(self) -> int:
        return XFL_HEAD_SIZE + self.piece_length

    def encode_head(self) -> bytes:
        """The 0x20 bytes in front of the piece."""
        length = self.subblock_length
        return bytes(
            _XflHead.build(
                {
                    "subblock_count": self.subblock_count,
                    "subblock_id": self.subblock_id,
                    "subblock_length": self.piece_length + 0x10 if length is None else length,
                    "total_length": self.total_length,
                    "offset": self.offset,
                    "skip_mmos_check": self.skip_mmos_check,
                    "piece_length": self.piece_length,
                }
            )
        )

    @staticmethod
    def matches(data: bytes | memoryview) -> bool:
        return bytes(data[:6]) == XFL_SIGNATURE

    @classmethod
    def parse(cls, data: bytes | memoryview) -> MmosPiece:
        """Parse the head of a message; the receiver checks the lengths against the message."""
        try:
            raw = _XflHead.parse(bytes(data[:XFL_HEAD_SIZE]))
        except ConstructError as exc:
            raise RemoteProtocolError(
                f"malformed NOKXFL message ({len(data)} bytes): {str(exc).splitlines()[0]}"
            ) from None
        return cls(
            total_length=raw.total_length,
            offset=raw.offset,
            piece_length=raw.piece_length,
            skip_mmos_check=raw.skip_mmos_check,
            subblock_count=raw.subblock_count,
            subblock_id=raw.subblock_id,
            subblock_length=raw.subblock_length,
        )
