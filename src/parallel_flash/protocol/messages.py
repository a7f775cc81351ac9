"""SimpleIO messages used by the WIM boot, declared with construct.

Field tables follow ../shared/docs/protocol.md ("Messages"). Every parser here
takes bytes that came from a device, so every failure becomes a
:class:`~parallel_flash.errors.RemoteProtocolError` naming the message and
what was wrong -- construct's own exceptions never escape.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from typing import Any

from construct import (
    Bytes,
    ConstructError,
    Int8ul,
    Int16sl,
    Int32sl,
    Int32ul,
    Int64sl,
    PascalString,
    StreamError,
    Struct,
    Terminated,
    VarInt,
)

from ..errors import LocalProtocolError, RemoteProtocolError

__all__ = (
    "CONTROL_REQUEST",
    "FLASHING_PID",
    "ID_REPLY_MIN_LENGTH",
    "LEGACY_LOADER_NAME",
    "LEGACY_TRANSFER_SIZE",
    "MICROSOFT_VID",
    "REPLY_BUFFER_SIZE",
    "STANDARD_TRANSFER_SIZE",
    "STATUS_LENGTH",
    "ControlRequest",
    "IdReply",
    "LogPacket",
    "Opcode",
    "WimBootHeader",
    "encode_status",
    "needs_zero_packet",
    "parse_status",
)

MICROSOFT_VID = 0x045E
#: Microsoft flashing mode ("SimpleIO").
FLASHING_PID = 0x062A

#: Replies are read into a buffer at least this large, never wMaxPacketSize.
REPLY_BUFFER_SIZE = 16376
#: Microsoft's current transfer size for the data stream.
STANDARD_TRANSFER_SIZE = 1_048_576
#: What older hosts always used, and what the legacy loader still needs.
LEGACY_TRANSFER_SIZE = 16376
#: A friendly name containing this selects the legacy transfer size.
LEGACY_LOADER_NAME = "Nokia.MSM8960.P4301"


def needs_zero_packet(length: int, max_packet_size: int) -> bool:
    """protocol.md step 7: a ZLP follows every non-empty multiple of wMaxPacketSize.

    The one rule for both sides: the host's plan and single transfers, the
    device model's check, the transports' ways of sending it.
    """
    return length > 0 and length % max_packet_size == 0


class Opcode(enum.IntEnum):
    """Command opcodes (u8), sent as a one-byte bulk OUT transfer."""

    ID = 1
    FLASH = 2
    ACK = 3
    NACK = 4
    LOG = 5
    ERR = 6
    SKIP = 7
    RESET = 8
    FILE = 9
    REBOOT = 10
    MASS_STORAGE = 11
    GET_DISK_INFO = 12
    READ_DISK = 13
    WRITE_DISK = 14
    CLEAR_ID_OVERRIDE = 15
    WIM = 16
    SERIAL_NUMBER = 17
    EXTERNAL_WIM = 18
    SET_BOOT_MODE = 19
    FAST_FLASH = 20
    DEVICE_PARAMS = 21
    DEVICE_VERSION = 22
    QUERY_FOR_CMD = 23
    GET_UPDATE_LOGS = 24
    QUERY_DEVICE_UNLOCK_ID = 25
    RELOCK_DEVICE_UNLOCK_ID = 26
    QUERY_UNLOCK_TOKEN_FILES = 27
    WRITE_UNLOCK_TOKEN_FILE = 28
    QUERY_BITLOCKER_STATE = 29

    def encode(self) -> bytes:
        return bytes((self.value,))


@dataclass(frozen=True, slots=True)
class ControlRequest:
    """The class request sent after every open (protocol.md, step 1)."""

    request_type: int = 0x21
    request: int = 0x22
    value: int = 1
    index: int = 0


CONTROL_REQUEST = ControlRequest()

# The friendly name: LEB128 ("7-bit encoded", .NET BinaryWriter) byte length, then UTF-8.
_DotNetString = PascalString(VarInt, "utf8")

_IdReplyStruct = Struct(
    "cur_position"  / Int64sl,     # bytes of an earlier transfer still held; 0 = idle
    "capabilities"  / Bytes(16),   # [0] FastFlash, [14] client version - 1, [15] compat FastFlash
    "unique_id"     / Bytes(16),   # GUID, .NET byte order
    "friendly_name" / _DotNetString,
)

_LogPacketStruct = Struct(
    "opcode"   / Int8ul,           # 05
    "event_id" / Int16sl,
    "version"  / Int8ul,
    "channel"  / Int8ul,
    "level"    / Int8ul,           # <= 2 is an error message
    "log_op"   / Int8ul,
    "task"     / Int16sl,
    "keywords" / Int64sl,
    "text"     / _DotNetString,
)

_WimHeaderStruct = Struct(
    "sdi_length"    / Int32ul,     # 0 for a .secwim that already holds its SDI
    "wim_length"    / Int32ul,
    "transfer_size" / Int32ul,     # size of every data transfer that follows
)

_StatusStruct = Struct("status" / Int32sl)

# Exact layouts: the whole transfer is the message, nothing before or after.
# A reply is classified by the phase that expects it and by these layouts,
# never by its first byte alone (an Id reply whose curPosition has low byte 5,
# or a status of 5, starts with the Log opcode too).
_IdReplyExact = Struct(*_IdReplyStruct.subcons, Terminated)
_LogPacketExact = Struct(*_LogPacketStruct.subcons, Terminated)

#: curPosition + capabilities + DeviceUniqueID + a name length of one byte.
ID_REPLY_MIN_LENGTH = 41
#: The status is one s32, alone in its transfer.
STATUS_LENGTH = 4

_U32_MAX = 0xFFFF_FFFF


def _remote(message: str, data: bytes | memoryview, exc: Exception) -> RemoteProtocolError:
    """The device's fault in plain words: which field, and what was wrong with it
    (construct's own message quotes its internals, which mean nothing to a user)."""
    path = str(getattr(exc, "path", "") or "")
    field = path.replace("(parsing)", "").replace(" -> ", ".").strip(" .")
    if isinstance(exc, StreamError):
        problem = "the reply ends before this field is complete"
    elif isinstance(exc, UnicodeDecodeError) or "decode" in str(exc).lower():
        problem = "the text is not valid in its encoding"
    else:
        problem = "the field holds a value it cannot have"
    where = f", field {field}" if field else ""
    return RemoteProtocolError(f"malformed {message} ({len(data)} bytes{where}): {problem}")


@dataclass(frozen=True, slots=True, kw_only=True)
class IdReply:
    """What the device says about itself in answer to ``01``."""

    cur_position: int
    capabilities: bytes
    unique_id: uuid.UUID
    friendly_name: str

    @classmethod
    def parses_exactly(cls, data: bytes | memoryview) -> bool:
        """Whether *data* is an Id reply with nothing after the friendly name."""
        if len(data) < ID_REPLY_MIN_LENGTH:
            return False
        try:
            _IdReplyExact.parse(bytes(data))
        except (ConstructError, UnicodeDecodeError):
            return False
        return True

    @property
    def fast_flash(self) -> bool:
        return self.capabilities[0] >= 1 or self.capabilities[15] == 1

    @property
    def client_version(self) -> int | None:
        return self.capabilities[14] + 1 if self.capabilities[14] >= 1 else None

    @property
    def unique_id_text(self) -> str:
        return str(self.unique_id)

    @classmethod
    def parse(cls, data: bytes | memoryview) -> IdReply:
        try:
            raw = _IdReplyStruct.parse(bytes(data))
        except (ConstructError, UnicodeDecodeError) as exc:
            raise _remote("Id reply", data, exc) from None
        return cls(
            cur_position=raw.cur_position,
            capabilities=bytes(raw.capabilities),
            unique_id=uuid.UUID(bytes_le=bytes(raw.unique_id)),
            friendly_name=raw.friendly_name,
        )

    def encode(self) -> bytes:
        if len(self.capabilities) != 16:
            raise LocalProtocolError("Id reply capabilities must be 16 bytes")
        return bytes(_IdReplyStruct.build(
            {
                "cur_position": self.cur_position,
                "capabilities": self.capabilities,
                "unique_id": self.unique_id.bytes_le,
                "friendly_name": self.friendly_name,
            }
        ))


@dataclass(frozen=True, slots=True, kw_only=True)
class LogPacket:
    """A device log line; may arrive wherever a reply is expected."""

    event_id: int = 0
    version: int = 0
    channel: int = 0
    level: int = 4
    opcode: int = 0
    task: int = 0
    keywords: int = 0
    text: str = ""

    @staticmethod
    def matches(data: bytes | memoryview) -> bool:
        """Whether *data* is exactly a Log packet (opcode 05 alone is not enough)."""
        return LogPacket.parse_exact(data) is not None

    @classmethod
    def parse_exact(cls, data: bytes | memoryview) -> LogPacket | None:
        """The Log packet *data* holds, or None when it does not have that exact layout."""
        if len(data) < 18 or data[0] != Opcode.LOG:
            return None
        try:
            raw = _LogPacketExact.parse(bytes(data))
        except (ConstructError, UnicodeDecodeError):
            return None
        return cls._from_raw(raw)

    @classmethod
    def parse(cls, data: bytes | memoryview) -> LogPacket:
        try:
            raw = _LogPacketStruct.parse(bytes(data))
        except (ConstructError, UnicodeDecodeError) as exc:
            raise _remote("Log packet", data, exc) from None
        if raw.opcode != Opcode.LOG:
            raise RemoteProtocolError(f"Log packet starts with {raw.opcode:#04x}, expected 0x05")
        return cls._from_raw(raw)

    @classmethod
    def _from_raw(cls, raw: Any) -> LogPacket:
        return cls(
            event_id=raw.event_id,
            version=raw.version,
            channel=raw.channel,
            level=raw.level,
            opcode=raw.log_op,
            task=raw.task,
            keywords=raw.keywords,
            text=raw.text,
        )

    def encode(self) -> bytes:
        return bytes(_LogPacketStruct.build(
            {
                "opcode": Opcode.LOG,
                "event_id": self.event_id,
                "version": self.version,
                "channel": self.channel,
                "level": self.level,
                "log_op": self.opcode,
                "task": self.task,
                "keywords": self.keywords,
                "text": self.text,
            }
        ))


@dataclass(frozen=True, slots=True, kw_only=True)
class WimBootHeader:
    """The 12 bytes sent right after the ``10`` opcode."""

    sdi_length: int
    wim_length: int
    transfer_size: int

    SIZE = 12

    def __post_init__(self) -> None:
        for name in ("sdi_length", "wim_length", "transfer_size"):
            value = getattr(self, name)
            if not 0 <= value <= _U32_MAX:
                raise LocalProtocolError(f"WIM header {name} {value} does not fit in a u32")
        if self.transfer_size == 0:
            raise LocalProtocolError("WIM header transfer_size must not be 0")
        if self.sdi_length + self.wim_length > _U32_MAX:
            raise LocalProtocolError(
                f"SDI + WIM is {self.sdi_length + self.wim_length} bytes; it must stay under 4 GiB"
            )

    @property
    def total_length(self) -> int:
        return self.sdi_length + self.wim_length

    def encode(self) -> bytes:
        return bytes(_WimHeaderStruct.build(
            {
                "sdi_length": self.sdi_length,
                "wim_length": self.wim_length,
                "transfer_size": self.transfer_size,
            }
        ))

    @classmethod
    def parse(cls, data: bytes | memoryview) -> WimBootHeader:
        if len(data) != cls.SIZE:
            raise RemoteProtocolError(f"WIM header is {len(data)} bytes, expected {cls.SIZE}")
        raw = _WimHeaderStruct.parse(bytes(data))
        try:
            return cls(
                sdi_length=raw.sdi_length,
                wim_length=raw.wim_length,
                transfer_size=raw.transfer_size,
            )
        except LocalProtocolError as exc:
            raise RemoteProtocolError(str(exc)) from None


def encode_status(status: int) -> bytes:
    """The device's 4-byte s32 status (>= 0 success)."""
    return bytes(_StatusStruct.build({"status": status}))


def parse_status(data: bytes | memoryview) -> int:
    if len(data) != STATUS_LENGTH:
        raise RemoteProtocolError(
            f"status reply is {len(data)} bytes, expected 4"
            + (f" (starts {bytes(data[:8]).hex()})" if data else "")
        )
    return int(_StatusStruct.parse(bytes(data)).status)
