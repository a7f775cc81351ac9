"""The NOK framing both newer loaders share: NOKV, NOKXFR, short commands, status replies.

Field tables follow ../shared/docs/loaders.md (A.1 "NOKV request and reply",
A.2 "Sequence"). Everything is big-endian. Requests are whole messages in one
bulk OUT transfer; a reply is whatever one bulk IN read of at least
:data:`REPLY_BUFFER_SIZE` bytes returns.

Parsers take bytes from a device, so every failure is a
:class:`~parallel_flash.errors.RemoteProtocolError` naming the message and
what was wrong; construct's exceptions never escape. Where the public host
code would crash on a reply (a short NOKV subblock, a 4-byte NOKU where a
status was due), we raise that error instead.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from construct import (
    Array,
    Bytes,
    ConstructError,
    GreedyBytes,
    Int8ub,
    Int16ub,
    Int32ub,
    Int64ub,
    Prefixed,
    Rebuild,
    Struct,
    len_,
    this,
)

from ...errors import LocalProtocolError, RemoteProtocolError
from ..messages import MICROSOFT_VID

__all__ = (
    "LABEL_MODE_IDS",
    "LABEL_MODE_PID",
    "LUMIA_FLASH_IDS",
    "LUMIA_PID",
    "MICROSOFT_VID",
    "NOKIA_VID",
    "NOKU",
    "REPLY_BUFFER_SIZE",
    "STATUS_MEANINGS",
    "UFP_FLASH_IDS",
    "UFP_PID",
    "AppType",
    "Command",
    "NokInfo",
    "ParamReply",
    "ProtocolMask",
    "SubblockId",
    "encode_param_reply",
    "encode_status_reply",
    "param_request",
    "parse_param_request",
    "parse_status_reply",
    "status_meaning",
)

NOKIA_VID = 0x0421
#: The usual product IDs of each kind (the device models default to them).
LUMIA_PID = 0x066E
LABEL_MODE_PID = 0x0660
UFP_PID = 0x0658

#: Lumia flash-app devices (loaders.md A.0 / A.2, WPinternals' PhoneNotifier).
LUMIA_FLASH_IDS: frozenset[tuple[int, int]] = frozenset(
    {(NOKIA_VID, LUMIA_PID), (NOKIA_VID, 0x0714), (MICROSOFT_VID, 0x0A02), (NOKIA_VID, 0x05EE)}
)
#: Where a Lumia comes back after booting MMOS: Label mode (loaders.md A.2 step 7).
LABEL_MODE_IDS: frozenset[tuple[int, int]] = frozenset(
    {(NOKIA_VID, LABEL_MODE_PID), (NOKIA_VID, 0x0713), (MICROSOFT_VID, 0x0A01)}
)
#: UFP ("Thor") devices (loaders.md A.0).
UFP_FLASH_IDS: frozenset[tuple[int, int]] = frozenset({(MICROSOFT_VID, UFP_PID)})

#: Replies are read into a buffer this large (UFP's ExecuteRawMethod; loaders.md A.1),
#: a multiple of every wMaxPacketSize, never wMaxPacketSize itself.
REPLY_BUFFER_SIZE = 0xF000

#: The 4-byte answer of an app that does not know the command.
NOKU = b"NOKU"


class Command(bytes, enum.Enum):
    """Requests that are a fixed signature and nothing else."""

    #: Phone info (the NOKV reply below).
    INFO = b"NOKV"
    #: Disable the flash app's reboot timeout; reply read and ignored (WPI, on arrival).
    DISABLE_TIMEOUT = b"NOKD"
    #: Switch to the MMOS context once the MMOS image is loaded (loaders.md A.2 step 5).
    SWITCH_TO_MMOS = b"NOKXCBA"
    #: Reboot; written with no read (loaders.md A.2 step 6).
    REBOOT = b"NOKR"


class AppType(enum.IntEnum):
    """NOKV byte 5: which application answers (WPI ``FlashAppType``)."""

    BOOT_MANAGER = 1
    FLASH_APP = 2
    PHONE_INFO_APP = 3


class ProtocolMask(enum.IntFlag):
    """SecureFfuSupportedProtocolMask, NOKV subblock 0x10 bytes 1-2."""

    SYNC_V1 = 1
    ASYNC_V1 = 2
    SYNC_V2 = 4
    ASYNC_V2 = 8
    ASYNC_V3 = 16


class SubblockId(enum.IntEnum):
    """NOKV subblocks a host reads (loaders.md A.1, "Subblocks the UFP host parses")."""

    TRANSFER_SIZE = 0x01
    WRITE_BUFFER_SIZE = 0x02
    EMMC_SECTORS = 0x03
    SD_SECTORS = 0x04
    PLATFORM_ID = 0x05
    ASYNC = 0x0D
    SECURITY = 0x0F
    SECURE_FFU = 0x10
    MMOS_OVER_USB = 0x1F
    CRC_HEADER = 0x20
    LARGEST_MEMORY_REGION = 0x24
    APP_TYPE = 0x25


# -- NOKV ---------------------------------------------------------------------------

_Subblock = Struct(
    "id"      / Int8ub,
    "payload" / Prefixed(Int16ub, GreedyBytes),  # u16 BE len, then len bytes
)  # fmt: skip

_NokvReply = Struct(
    "signature"      / Bytes(4),      # only checked for not being "NOKU"
    "reserved"       / Int8ub,        # not parsed by any host
    "app_type"       / Int8ub,        # AppType
    "protocol_major" / Int8ub,        # parsed only when app_type = 2
    "protocol_minor" / Int8ub,
    "app_major"      / Int8ub,
    "app_minor"      / Int8ub,
    "subblock_count" / Rebuild(Int8ub, len_(this.subblocks)),
    "subblocks"      / Array(this.subblock_count, _Subblock),
)  # fmt: skip

_U16 = Int16ub
_U32 = Int32ub
_U64 = Int64ub


def _need(payload: bytes, size: int, name: str, ident: int) -> None:
    if len(payload) < size:
        raise RemoteProtocolError(
            f"NOKV subblock 0x{ident:02X} ({name}) is {len(payload)} bytes; it needs {size}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class NokInfo:
    """A device's NOKV reply: versions, and its subblocks in the order sent.

    The properties decode the subblocks the loaders act on; ``None`` means
    the device did not send that subblock.
    """

    app_type: int
    protocol_version: tuple[int, int] = (0, 0)
    app_version: tuple[int, int] = (0, 0)
    subblocks: tuple[tuple[int, bytes], ...] = ()
    signature: bytes = Command.INFO.value
    reserved: int = 0

    def _payload(self, ident: int) -> bytes | None:
        for found, payload in self.subblocks:
            if found == ident:
                return payload
        return None

    def _u(self, ident: SubblockId, size: int, name: str) -> int | None:
        payload = self._payload(ident)
        if payload is None:
            return None
        _need(payload, size, name, ident)
        return int.from_bytes(payload[:size], "big")

    @property
    def app_name(self) -> str:
        try:
            return AppType(self.app_type).name.replace("_", " ").title().replace(" ", "")
        except ValueError:
            return f"app type {self.app_type}"

    @property
    def transfer_size(self) -> int | None:
        return self._u(SubblockId.TRANSFER_SIZE, 4, "TransferSize")

    @property
    def write_buffer_size(self) -> int | None:
        return self._u(SubblockId.WRITE_BUFFER_SIZE, 4, "WriteBufferSize")

    @property
    def largest_memory_region(self) -> int | None:
        return self._u(SubblockId.LARGEST_MEMORY_REGION, 8, "LargestMemoryRegion")

    @property
    def protocol_mask(self) -> ProtocolMask | None:
        payload = self._payload(SubblockId.SECURE_FFU)
        if payload is None:
            return None
        _need(payload, 3, "SecureFfu", SubblockId.SECURE_FFU)
        return ProtocolMask(int.from_bytes(payload[1:3], "big"))

    @property
    def mmos_over_usb(self) -> bool | None:
        """Subblock 0x1F byte 0 == 1 (its length field is ignored, as WPI does)."""
        payload = self._payload(SubblockId.MMOS_OVER_USB)
        if payload is None:
            return None
        _need(payload, 1, "MmosOverUsb", SubblockId.MMOS_OVER_USB)
        return payload[0] == 1

    @property
    def mmos_flag(self) -> int | None:
        payload = self._payload(SubblockId.MMOS_OVER_USB)
        return payload[0] if payload else None

    @property
    def platform_id(self) -> str | None:
        payload = self._payload(SubblockId.PLATFORM_ID)
        if payload is None:
            return None
        return payload.decode("ascii", errors="replace").strip(" \0")

    @property
    def unsupported(self) -> bool:
        """The device answered NOKU: the app in charge does not know NOKV."""
        return self.signature == NOKU

    @classmethod
    def parse(cls, data: bytes | memoryview) -> NokInfo:
        raw_bytes = bytes(data)
        if raw_bytes == NOKU:
            return cls(app_type=0, signature=NOKU)
        try:
            raw = _NokvReply.parse(raw_bytes)
        except ConstructError as exc:
            raise RemoteProtocolError(
                f"malformed NOKV reply ({len(raw_bytes)} bytes): {_first_line(exc)}"
            ) from None
        info = cls(
            signature=bytes(raw.signature),
            reserved=raw.reserved,
            app_type=raw.app_type,
            protocol_version=(raw.protocol_major, raw.protocol_minor),
            app_version=(raw.app_major, raw.app_minor),
            subblocks=tuple((block.id, bytes(block.payload)) for block in raw.subblocks),
        )
        # Decode what the loaders use now, so a short subblock fails here,
        # at the NOKV reply, and not half-way through a boot.
        _ = (info.write_buffer_size, info.largest_memory_region, info.protocol_mask)
        _ = (info.mmos_over_usb, info.transfer_size)
        return info

    def encode(self) -> bytes:
        if self.signature == NOKU:
            return NOKU
        for ident, payload in self.subblocks:
            if not 0 <= ident <= 0xFF or len(payload) > 0xFFFF:
                raise LocalProtocolError(f"NOKV subblock 0x{ident:X} cannot be encoded")
        return bytes(
            _NokvReply.build(
                {
                    "signature": self.signature,
                    "reserved": self.reserved,
                    "app_type": self.app_type,
                    "protocol_major": self.protocol_version[0],
                    "protocol_minor": self.protocol_version[1],
                    "app_major": self.app_version[0],
                    "app_minor": self.app_version[1],
                    "subblocks": [{"id": i, "payload": p} for i, p in self.subblocks],
                }
            )
        )

    @classmethod
    def build(
        cls,
        *,
        app_type: int = AppType.FLASH_APP,
        protocol_version: tuple[int, int] = (2, 41),
        app_version: tuple[int, int] = (2, 75),
        write_buffer_size: int | None = None,
        transfer_size: int | None = None,
        protocol_mask: int | None = None,
        mmos_over_usb: int | None = None,
        largest_memory_region: int | None = None,
        platform_id: str | None = None,
        security_flags: bytes | None = None,
        extra: Iterable[tuple[int, bytes]] = (),
    ) -> NokInfo:
        """A reply carrying the given subblocks (None = leave the subblock out).

        Defaults are the versions from a real Lumia 950 XL log (loaders.md A.1).
        """
        blocks: list[tuple[int, bytes]] = []
        if transfer_size is not None:
            blocks.append((SubblockId.TRANSFER_SIZE, _U32.build(transfer_size)))
        if write_buffer_size is not None:
            blocks.append((SubblockId.WRITE_BUFFER_SIZE, _U32.build(write_buffer_size)))
        if platform_id is not None:
            blocks.append((SubblockId.PLATFORM_ID, platform_id.encode("ascii")))
        if security_flags is not None:
            blocks.append((SubblockId.SECURITY, security_flags))
        if protocol_mask is not None:
            blocks.append((SubblockId.SECURE_FFU, b"\x01" + _U16.build(protocol_mask)))
        if mmos_over_usb is not None:
            blocks.append((SubblockId.MMOS_OVER_USB, bytes((mmos_over_usb,))))
        if largest_memory_region is not None:
            blocks.append((SubblockId.LARGEST_MEMORY_REGION, _U64.build(largest_memory_region)))
        blocks.extend(extra)
        return cls(
            app_type=app_type,
            protocol_version=protocol_version,
            app_version=app_version,
            subblocks=tuple((int(i), bytes(p)) for i, p in blocks),
        )

    def describe(self) -> dict[str, object]:
        """What ``parallel-flash list`` shows for a NOK device (JSON-able)."""
        mask = self.protocol_mask
        return {
            "app": self.app_name,
            "app_version": f"{self.app_version[0]}.{self.app_version[1]}",
            "protocol_version": f"{self.protocol_version[0]}.{self.protocol_version[1]}",
            "protocol_mask": None if mask is None else int(mask),
            "write_buffer_size": self.write_buffer_size,
            "largest_memory_region": self.largest_memory_region,
            "mmos_over_usb": self.mmos_over_usb,
            "platform_id": self.platform_id,
        }


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


# -- NOKXFR (read a parameter) ---------------------------------------------------------

_PARAM_REQUEST = b"NOKXFR"
#: Reply layout in front of the value is not public (G): we answer with the
#: signature, a u16 status, the parameter name, zeros up to 0x10.
_PARAM_VALUE_AT = 0x11


def param_request(name: str) -> bytes:
    """``NOKXFR`` + 0x00 + a 4-character name: 11 bytes (loaders.md A.2 step 1)."""
    raw = name.encode("ascii")
    if len(raw) != 4:
        raise LocalProtocolError(f"parameter name {name!r} must be 4 ASCII characters")
    return _PARAM_REQUEST + b"\x00" + raw


def parse_param_request(data: bytes | memoryview) -> str | None:
    """The parameter name of a NOKXFR request, or None when ``data`` is not one."""
    raw = bytes(data)
    if len(raw) != 11 or not raw.startswith(_PARAM_REQUEST) or raw[6] != 0:
        return None
    return raw[7:].decode("ascii", errors="replace")


@dataclass(frozen=True, slots=True)
class ParamReply:
    """A NOKXFR reply: the value, or None when the reply is too short to hold one."""

    value: bytes | None = field(default=None)

    @classmethod
    def parse(cls, data: bytes | memoryview, *, name: str) -> ParamReply:
        raw = bytes(data)
        if len(raw) <= 0x10:
            # WPI: shorter than 0x10 is "no value"; exactly 0x10 crashes it.
            return cls(None)
        length = raw[0x10]
        end = _PARAM_VALUE_AT + length
        if end > len(raw):
            raise RemoteProtocolError(
                f"NOKXFR {name} reply says its value is {length} bytes, "
                f"but only {len(raw) - _PARAM_VALUE_AT} follow"
            )
        return cls(raw[_PARAM_VALUE_AT:end])


def encode_param_reply(name: str, value: bytes) -> bytes:
    if len(value) > 0xFF:
        raise LocalProtocolError(f"NOKXFR {name} value of {len(value)} bytes does not fit a u8")
    head = _PARAM_REQUEST + b"\x00\x00" + name.encode("ascii")
    return head + bytes(0x10 - len(head)) + bytes((len(value),)) + value


# -- status replies -------------------------------------------------------------------

#: Meanings of reply status codes (ThrowFlashError in UFP and WPI; loaders.md A.1).
STATUS_MEANINGS: dict[int, str] = {
    0x0001: "couldn't allocate memory",
    0x0002: "flash read failed",
    0x0004: "flash write failed",
    0x0008: "unsupported protocol / invalid options",
    0x0009: "locate protocol failed",
    0x000D: "flash verify failed",
    0x000E: "invalid sub block type",
    0x000F: "invalid sub block count",
    0x0010: "invalid sub block length",
    0x0012: "authentication required",
    0x0013: "failed async message",
    0x1000: "invalid header type",
    0x1001: "FFU header contains unknown extra data",
    0x1003: "hash mismatch",
    0x1004: "security header import missing / not all FFU headers imported",
    0x1005: "data not aligned correctly",
    0x1006: "couldn't find hash from security header for index",
    0x1007: "payload data does not contain all data",
    0x1008: "internal error",
    0x100B: "too much payload data, all data already written",
    0x1100: "invalid signature",
    0x1101: "invalid struct size",
    0x1102: "unsupported algorithm",
    0x1103: "invalid chunk size",
    0x1104: "invalid catalog size",
    0x1105: "invalid hash table size",
    0x1106: "security header validation failed",
    0x1202: "invalid struct size",
    0x1203: "unsupported algorithm",
    0x1204: "invalid chunk size",
    0x1301: "invalid update type",
    0x1302: "unsupported struct version",
    0x1303: "unsupported FFU version",
    0x1304: "invalid platform ID",
    0x1305: "invalid block size",
    0x1306: "invalid write descriptor info",
    0x1307: "invalid write descriptor info",
}

_StatusReply = Struct(
    "signature" / Bytes(6),   # G: the request's signature echoed ("NOKXFS", "NOKXFL", ...)
    "status"    / Int16ub,    # 0 = OK, else STATUS_MEANINGS
    "rest"      / GreedyBytes,
)  # fmt: skip


def status_meaning(status: int) -> str:
    return STATUS_MEANINGS.get(status, "unknown status")


def parse_status_reply(data: bytes | memoryview, *, request: str) -> int | None:
    """The u16 status at bytes 6-7 of a reply; None for a bare ``NOKU``.

    The reference hosts read the status without checking the signature; so
    do we. A reply too short to hold a status is a remote error (the
    reference hosts crash on it).
    """
    raw = bytes(data)
    if raw[:4] == NOKU and len(raw) < 8:
        return None
    if len(raw) < 8:
        raise RemoteProtocolError(
            f"{request} reply is {len(raw)} bytes"
            + (f" ({raw.hex()})" if raw else "")
            + "; a status reply is at least 8"
        )
    return int(_StatusReply.parse(raw).status)


def encode_status_reply(signature: bytes, status: int) -> bytes:
    """What our device models answer: the request's 6-byte signature, then the status."""
    if len(signature) != 6:
        raise LocalProtocolError(f"status reply signature {signature!r} must be 6 bytes")
    return bytes(_StatusReply.build({"signature": signature, "status": status, "rest": b""}))
