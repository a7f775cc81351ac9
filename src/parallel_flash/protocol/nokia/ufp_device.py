"""A UFP device RAM-booting an FFU (loaders.md A.1, "A device emulator for UFP RAM boot").

``IDLE -> HEADER (v1: one message, v2: parts) -> PAYLOAD -> BOOTED``. Each
NOKXFS message is checked field by field (count 0x000F, type 0x000E,
lengths 0x0010, protocol and options 0x0008, header type 0x1000, order
0x1005). The complete header is parsed as a device would (security header
0x1106, store version 0x1303, platform 0x1304, size against RAM 0x0001), and
every chunk from the image header on -- header and payload -- is checked
against the FFU's hash table (0x1003). After the last expected byte the
device answers 0 and leaves the bus to boot.
"""

from __future__ import annotations

import enum
import hashlib
import struct
import uuid
from dataclasses import dataclass

from construct import ConstructError

from .device import NokDeviceModel
from .faults import NokFaults
from .messages import MICROSOFT_VID, NOKU, UFP_PID, ProtocolMask
from .xfs import FLASH_TO_RAM, HEAD_SIZES, PROTOCOL_FIELD, XFS_SIGNATURE, FfuMessage, XfsKind

__all__ = ("UFP_PID", "UfpDeviceModel")

_V1_MASK = int(ProtocolMask.SYNC_V1)
_V2_MASK = int(ProtocolMask.SYNC_V1 | ProtocolMask.SYNC_V2)
#: A length field claiming more than this is a broken head, not a message to wait for.
_MAX_MESSAGE = 512 << 20


class _Phase(enum.Enum):
    IDLE = "idle"
    HEADER = "receiving FFU header"
    PAYLOAD = "receiving FFU payload"
    BOOTED = "RAM booting"


class _HeaderRefused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True, slots=True)
class _Layout:
    """What the device learnt from the FFU header."""

    chunk_size: int
    image_offset: int
    hashes: bytes
    payload_length: int
    platform_ids: tuple[str, ...]


def _align(value: int, to: int) -> int:
    return -(-value // to) * to


def _parse_header(header: bytes) -> _Layout:
    """Parse a complete FFU header the way a device must before it takes the payload."""
    from ...formats.ffu import IMAGE_HEADER, SECURITY_HEADER, STORE_HEADER, TARGETING_LENGTHS

    try:
        sec = SECURITY_HEADER.parse(header)
    except ConstructError as exc:
        raise _HeaderRefused(0x1106, f"security header: {str(exc).splitlines()[0]}") from None
    chunk = sec.chunk_size_kb * 1024
    if chunk == 0 or chunk & (chunk - 1):
        raise _HeaderRefused(0x1103, f"chunk size {sec.chunk_size_kb} KiB")
    if sec.hash_algorithm != 0x800C:
        raise _HeaderRefused(0x1102, f"hash algorithm 0x{sec.hash_algorithm:x}")
    table_at = 32 + sec.catalog_size
    hashes = header[table_at : table_at + sec.hash_table_size]
    if len(hashes) != sec.hash_table_size or sec.hash_table_size % 32:
        raise _HeaderRefused(0x1105, f"hash table of {sec.hash_table_size} bytes")
    image_at = _align(table_at + sec.hash_table_size, chunk)
    try:
        img = IMAGE_HEADER.parse(header[image_at:])
        pos = image_at + img.size + img.manifest_length
        for _ in range(img.targeting_count or 0):
            pos += 28 + sum(TARGETING_LENGTHS.parse(header[pos : pos + 28]))
        pos = _align(pos, chunk)
        payload = 0
        platforms: tuple[str, ...] = ()
        count, index = 1, 0
        while index < count:
            store = STORE_HEADER.parse(header[pos:] + bytes(14))
            if (store.major_version, store.full_flash_major) not in ((1, 2), (2, 2)):
                raise _HeaderRefused(0x1303, f"store version {store.major_version}")
            if store.block_size == 0 or store.block_size % 512:
                raise _HeaderRefused(0x1305, f"block size {store.block_size}")
            size = 248
            if store.v2 is not None:
                size += 14 + 2 * store.v2.device_path_length
                if index == 0:
                    count = store.v2.store_count
            if index == 0:
                platforms = tuple(
                    p.decode("ascii", "replace") for p in store.platform_id.split(b"\0") if p
                )
            desc = pos + size + store.validation_length
            end = desc + store.write_descriptor_length
            if end > len(header):
                raise _HeaderRefused(0x1306, "write descriptors run past the header")
            for _ in range(store.write_descriptor_count):
                locations, blocks = struct.unpack_from("<II", header, desc)
                payload += blocks * store.block_size
                desc += 8 + 8 * locations
            if desc != end:
                raise _HeaderRefused(0x1306, "write descriptor lengths disagree")
            pos = _align(end, store.block_size)
            index += 1
    except (ConstructError, struct.error) as exc:
        raise _HeaderRefused(0x1001, f"FFU header: {str(exc).splitlines()[0]}") from None
    if pos != len(header):
        raise _HeaderRefused(
            0x1001, f"the headers end at {pos} but the host sent {len(header)} header bytes"
        )
    return _Layout(chunk, image_at, bytes(hashes), payload, platforms)


class UfpDeviceModel(NokDeviceModel):
    """A UFP device (045E:0658) whose flash app RAM-boots FFUs.

    :param protocol_version: 1 reports SyncV1 only, 2 reports SyncV1 | SyncV2.
    """

    loader = "ufp"

    def __init__(
        self,
        *,
        name: str = "UFP.Emulated",
        pid: int = UFP_PID,
        vid: int = MICROSOFT_VID,
        protocol_version: int = 2,
        write_buffer_size: int = 0x0010_0000,
        ram_limit: int = 1 << 31,
        platform_id: str | None = None,
        faults: NokFaults | None = None,
        unique_id: uuid.UUID | None = None,
        count_only: bool = False,
        record_transcript: bool = True,
        max_packet_size: int = 512,
    ) -> None:
        faults = faults or NokFaults()
        if protocol_version not in (1, 2):
            raise ValueError(f"UFP protocol version must be 1 or 2, not {protocol_version}")
        super().__init__(
            name=name,
            ids=(vid, pid),
            unique_id=unique_id,
            faults=faults,
            count_only=count_only,
            record_transcript=record_transcript,
            max_packet_size=max_packet_size,
            write_buffer_size=write_buffer_size,
            protocol_mask=_V2_MASK if protocol_version == 2 else _V1_MASK,
            mmos_over_usb=1,
            largest_memory_region=ram_limit,
            platform_id=platform_id,
        )
        self.ram_limit = self.info.largest_memory_region or ram_limit
        self._phase = _Phase.IDLE
        self._header = bytearray()
        self._header_total = 0
        self._layout: _Layout | None = None
        self._chunk = bytearray()
        self._chunk_index = 0
        self._leave_after_reply = False

    def _phase_name(self) -> str:
        return self._phase.value

    # -- messages ---------------------------------------------------------------------

    def _message_length(self, data: bytes | memoryview) -> int | None:
        if FfuMessage.matches(data) and len(data) >= 0x14:
            # the subblock length at 0x10 counts from 0x14 to the end of the message
            return min(0x14 + int.from_bytes(data[0x10:0x14], "big"), _MAX_MESSAGE)
        return None

    def _loader_message(self, data: bytes | memoryview) -> bytes | None:
        if not FfuMessage.matches(data):
            return None
        if len(data) < 0x14:
            return self._status(XFS_SIGNATURE, 0x0010)
        message = FfuMessage.parse(data)
        if self.faults.noku_v2 and message.kind is XfsKind.HEADER_V2:
            return NOKU
        return self._status(XFS_SIGNATURE, self._message(message, memoryview(data)))

    def _message(self, message: FfuMessage, data: memoryview) -> int:
        kind = message.kind
        if message.subblock_count != 1:
            return 0x000F
        body = data[HEAD_SIZES[kind] :]
        if message.subblock_length != message.expected_subblock_length or len(body) != (
            message.length
        ):
            self._reject(
                f"NOKXFS {kind.name} says {message.length} bytes (subblock length "
                f"{message.subblock_length}), carries {len(body)}"
            )
            return 0x0010
        if self.rejection is not None:
            return self.VIOLATION_STATUS
        mask = int(self.info.protocol_mask or 0)
        v2 = kind in (XfsKind.HEADER_V2, XfsKind.PAYLOAD_V2)
        if message.protocol != PROTOCOL_FIELD[kind] or (v2 and not mask & ProtocolMask.SYNC_V2):
            return 0x0008
        if kind in (XfsKind.HEADER_V1, XfsKind.HEADER_V2):
            if self._phase not in (_Phase.IDLE, _Phase.HEADER):
                return 0x000E
            return self._header_part(message, body)
        if self._phase is not _Phase.PAYLOAD:
            return 0x000E if self._phase is not _Phase.BOOTED else 0x100B
        return self._payload(message, body)

    def _header_part(self, message: FfuMessage, body: memoryview) -> int:
        if message.header_type != 0:
            return 0x1000
        if not message.options & FLASH_TO_RAM:
            return 0x0008  # this model only RAM-boots
        if message.kind is XfsKind.HEADER_V1:
            if self._phase is not _Phase.IDLE:
                return 0x000E
            total, offset = message.length, 0
        else:
            total, offset = message.total, message.offset
            if self._phase is _Phase.HEADER and total != self._header_total:
                return 0x0010
        if offset != len(self._header):
            return 0x1005
        if offset + len(body) > total:
            return 0x0010
        injected = self._fault_status(offset, len(body))
        if injected is not None:
            return injected
        self._phase = _Phase.HEADER
        self._header_total = total
        self._header += body
        self._count(body)
        if len(self._header) < total:
            return 0
        return self._header_complete()

    def _header_complete(self) -> int:
        header = bytes(self._header)
        try:
            layout = _parse_header(header)
        except _HeaderRefused as exc:
            self._reject(f"FFU header refused: {exc}")
            return exc.status
        if self.platform_id is not None and self.platform_id not in layout.platform_ids:
            self._reject(f"FFU platforms {layout.platform_ids} do not include {self.platform_id}")
            return 0x1304
        self.expected_bytes = len(header) + layout.payload_length
        if self.expected_bytes > self.ram_limit:
            self._reject(f"FFU of {self.expected_bytes} bytes does not fit {self.ram_limit}")
            return 0x0001
        self._layout = layout
        if not self.count_only:
            status = self._verify(memoryview(header)[layout.image_offset :])
            if status:
                return status
        self._phase = _Phase.PAYLOAD
        return self._finish_if_complete()

    def _payload(self, message: FfuMessage, body: memoryview) -> int:
        assert self._layout is not None
        left = self.expected_bytes - self.received_bytes
        if message.kind is XfsKind.PAYLOAD_V1:
            if len(body) != self._layout.chunk_size:
                return 0x0010
            body = body[:left]  # the last v1 chunk is padded to a full chunk
        elif len(body) > left:
            return 0x100B
        injected = self._fault_status(self.received_bytes, len(body))
        if injected is not None:
            return injected
        self._count(body)
        if not self.count_only:
            status = self._verify(body)
            if status:
                return status
        return self._finish_if_complete()

    def _finish_if_complete(self) -> int:
        if self.received_bytes < self.expected_bytes:
            return 0
        if self._chunk and not self.count_only:
            status = self._check_chunk(bytes(self._chunk))
            if status:
                return status
        self._phase = _Phase.BOOTED
        self.booted = True
        self._leave_after_reply = True
        return 0

    # -- the hash table -----------------------------------------------------------------

    def _verify(self, data: memoryview) -> int:
        """Check every complete chunk in ``data`` (after what is pending) against the table."""
        assert self._layout is not None
        size = self._layout.chunk_size
        if self._chunk:
            need = size - len(self._chunk)
            self._chunk += data[:need]
            data = data[need:]
            if len(self._chunk) < size:
                return 0
            status = self._check_chunk(bytes(self._chunk))
            self._chunk.clear()
            if status:
                return status
        whole = len(data) - len(data) % size
        for start in range(0, whole, size):
            status = self._check_chunk(data[start : start + size])
            if status:
                return status
        self._chunk += data[whole:]
        return 0

    def _check_chunk(self, chunk: bytes | memoryview) -> int:
        assert self._layout is not None
        index = self._chunk_index
        self._chunk_index += 1
        want = self._layout.hashes[32 * index : 32 * index + 32]
        if hashlib.sha256(chunk).digest() != want:
            self._reject(f"chunk {index} does not match the FFU's hash table")
            return 0x1003
        return 0

    def _reply_read(self) -> None:
        if self._leave_after_reply:
            # RAM boot: the flash app hands over and leaves the bus.
            self._leave_after_reply = False
            self.disconnect()
