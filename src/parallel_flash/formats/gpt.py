"""GUID Partition Tables: read one from a disk (or an FFU's blocks), and build one.

An FFU carries a whole disk; ImgToWIM finds MainOS by reading the GPT from
the FFU's blocks (formats.md "Finding a partition"). The sector size is not in
the GPT itself: it comes from the FFU manifest (512, or 4096 on UFS).

:func:`build_gpt` writes the protective MBR, primary and backup tables for the
tests' and the demo's disk images, so no partitioning tool is needed.
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from construct import Bytes, Const, Int32ul, Int64ul, Struct

from ..errors import FormatError

__all__ = (
    "BASIC_DATA_TYPE",
    "EFI_SYSTEM_TYPE",
    "GPT_ENTRY",
    "GPT_HEADER",
    "GPT_SIGNATURE",
    "MAX_DISK_BYTES",
    "Gpt",
    "GptPartition",
    "PartitionSpec",
    "build_gpt",
    "parse_gpt",
)

GPT_SIGNATURE = b"EFI PART"
EFI_SYSTEM_TYPE = uuid.UUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")
BASIC_DATA_TYPE = uuid.UUID("ebd0a0a2-b9e5-4433-87c0-68b6b72699c7")
_HEADER_SIZE = 92
_ENTRY_SIZE = 128
_ENTRY_COUNT = 128
#: Entry arrays beyond this are not a real GPT (the usual one is 16 KiB).
_MAX_ENTRY_BYTES = 1 << 20
#: No phone-class disk comes near this (the largest are 512 GB); a GPT that
#: claims more would have a partition copied into a sparse file of that size.
MAX_DISK_BYTES = 1 << 41

GPT_HEADER = Struct(
    "signature"         / Const(GPT_SIGNATURE),
    "revision"          / Int32ul,          # 0x00010000
    "header_size"       / Int32ul,          # 92
    "header_crc32"      / Int32ul,          # over header_size bytes, this field zeroed
    "reserved"          / Int32ul,
    "current_lba"       / Int64ul,
    "backup_lba"        / Int64ul,          # the disk's last LBA for the primary header
    "first_usable_lba"  / Int64ul,
    "last_usable_lba"   / Int64ul,
    "disk_guid"         / Bytes(16),        # mixed-endian GUID
    "entries_lba"       / Int64ul,
    "entry_count"       / Int32ul,
    "entry_size"        / Int32ul,
    "entries_crc32"     / Int32ul,
)  # fmt: skip

GPT_ENTRY = Struct(
    "type_guid"    / Bytes(16),
    "unique_guid"  / Bytes(16),
    "first_lba"    / Int64ul,
    "last_lba"     / Int64ul,               # inclusive
    "attributes"   / Int64ul,
    "name"         / Bytes(72),             # UTF-16LE, NUL padded
)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class GptPartition:
    index: int  #: 0-based slot in the entry array
    name: str
    type_guid: uuid.UUID
    unique_guid: uuid.UUID
    first_lba: int
    last_lba: int  #: inclusive
    attributes: int
    sector_size: int

    @property
    def offset(self) -> int:
        return self.first_lba * self.sector_size

    @property
    def size(self) -> int:
        return (self.last_lba - self.first_lba + 1) * self.sector_size


@dataclass(frozen=True, slots=True, kw_only=True)
class Gpt:
    sector_size: int
    disk_guid: uuid.UUID
    backup_lba: int
    first_usable_lba: int
    last_usable_lba: int
    partitions: tuple[GptPartition, ...]

    @property
    def disk_size(self) -> int:
        """The disk size the primary header implies (its backup header is the last LBA)."""
        return (self.backup_lba + 1) * self.sector_size

    def find(self, name: str) -> GptPartition | None:
        """The partition called ``name`` (case-insensitive, as Windows compares them)."""
        for part in self.partitions:
            if part.name.lower() == name.lower():
                return part
        return None


def parse_gpt(read: Callable[[int, int], bytes], sector_size: int, *, source: str) -> Gpt:
    """Read the primary GPT at LBA 1 through ``read(offset, size)``.

    :param source: names the disk in errors (the FFU path and store).
    :raises ~parallel_flash.errors.FormatError: no GPT, bad CRCs, entries outside the disk.
    """
    hdr = _read_header(read, sector_size, source)
    entries = read(hdr.entries_lba * sector_size, hdr.entry_count * hdr.entry_size)
    if zlib.crc32(entries) != hdr.entries_crc32:
        raise FormatError(
            source, "GPT header.entries_crc32", "does not match the partition entries"
        )
    parts: list[GptPartition] = []
    for i in range(hdr.entry_count):
        ent = GPT_ENTRY.parse(entries[i * hdr.entry_size : i * hdr.entry_size + _ENTRY_SIZE])
        if ent.type_guid != bytes(16):
            parts.append(_partition(ent, i, hdr.backup_lba, sector_size, source))
    return Gpt(
        sector_size=sector_size,
        disk_guid=uuid.UUID(bytes_le=hdr.disk_guid),
        backup_lba=hdr.backup_lba,
        first_usable_lba=hdr.first_usable_lba,
        last_usable_lba=hdr.last_usable_lba,
        partitions=tuple(parts),
    )


def _read_header(read: Callable[[int, int], bytes], sector_size: int, source: str) -> Any:
    """The primary header, checked (CRC, a disk size a device can have, a bounded
    entry array) before anything it points at is read."""
    raw = read(sector_size, sector_size)
    if raw[:8] != GPT_SIGNATURE:
        raise FormatError(
            source,
            "GPT header",
            f"no 'EFI PART' signature at LBA 1 (offset {sector_size}, sector size {sector_size})",
        )
    hdr = GPT_HEADER.parse(raw)
    if not _HEADER_SIZE <= hdr.header_size <= sector_size:
        raise FormatError(source, "GPT header.header_size", f"{hdr.header_size} is not plausible")
    check = bytearray(raw[: hdr.header_size])
    check[16:20] = b"\0\0\0\0"
    if zlib.crc32(check) != hdr.header_crc32:
        raise FormatError(source, "GPT header.header_crc32", "does not match the header")
    disk_size = (hdr.backup_lba + 1) * sector_size
    if disk_size > MAX_DISK_BYTES:
        raise FormatError(
            source,
            "GPT header.backup_lba",
            f"{hdr.backup_lba} puts the disk's end at {disk_size} bytes, beyond any device "
            f"disk ({MAX_DISK_BYTES} bytes)",
        )
    if not hdr.first_usable_lba <= hdr.last_usable_lba < hdr.backup_lba:
        raise FormatError(
            source,
            "GPT header",
            f"usable LBAs {hdr.first_usable_lba}..{hdr.last_usable_lba} do not lie before the "
            f"backup header at LBA {hdr.backup_lba}",
        )
    if hdr.entry_size < _ENTRY_SIZE or hdr.entry_count * hdr.entry_size > _MAX_ENTRY_BYTES:
        raise FormatError(
            source,
            "GPT header",
            f"{hdr.entry_count} entries of {hdr.entry_size} bytes is not a plausible entry array",
        )
    return hdr


def _partition(
    ent: Any, index: int, backup_lba: int, sector_size: int, source: str
) -> GptPartition:
    name = ent.name.decode("utf-16-le", errors="backslashreplace").split("\0", 1)[0]
    if ent.last_lba < ent.first_lba or ent.last_lba > backup_lba:
        raise FormatError(
            source,
            f"GPT entry {index} ({name!r})",
            f"LBAs {ent.first_lba}..{ent.last_lba} lie outside the disk (last LBA {backup_lba})",
        )
    return GptPartition(
        index=index,
        name=name,
        type_guid=uuid.UUID(bytes_le=ent.type_guid),
        unique_guid=uuid.UUID(bytes_le=ent.unique_guid),
        first_lba=ent.first_lba,
        last_lba=ent.last_lba,
        attributes=ent.attributes,
        sector_size=sector_size,
    )


@dataclass(frozen=True, slots=True)
class PartitionSpec:
    """A partition to lay out with :func:`build_gpt`."""

    name: str
    size: int  #: bytes, a multiple of the sector size
    type_guid: uuid.UUID = BASIC_DATA_TYPE
    unique_guid: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class GptLayout:
    disk_size: int
    head: bytes  #: protective MBR, primary header and entries, written at offset 0
    tail: bytes  #: backup entries and header, written at ``disk_size - len(tail)``
    partitions: tuple[GptPartition, ...]


def build_gpt(
    partitions: Sequence[PartitionSpec],
    *,
    sector_size: int = 512,
    align: int = 1 << 20,
    disk_guid: uuid.UUID | None = None,
) -> GptLayout:
    """Lay partitions out back to back, each starting on an ``align`` boundary."""
    entry_bytes = _ENTRY_COUNT * _ENTRY_SIZE
    entry_sectors = -(-entry_bytes // sector_size)
    lba = -(-max(align, (2 + entry_sectors) * sector_size) // sector_size)
    placed: list[GptPartition] = []
    for i, spec in enumerate(partitions):
        if spec.size % sector_size or spec.size <= 0:
            raise ValueError(f"partition {spec.name}: size {spec.size} is not a sector multiple")
        first = -(-lba * sector_size // align) * align // sector_size
        last = first + spec.size // sector_size - 1
        placed.append(
            GptPartition(
                index=i,
                name=spec.name,
                type_guid=spec.type_guid,
                unique_guid=spec.unique_guid or uuid.uuid4(),
                first_lba=first,
                last_lba=last,
                attributes=0,
                sector_size=sector_size,
            )
        )
        lba = last + 1
    # The disk ends on an ``align`` boundary too, so FFU blocks tile it exactly.
    disk_size = -(-(lba + entry_sectors + 1) * sector_size // align) * align
    backup_lba = disk_size // sector_size - 1
    last_usable = backup_lba - entry_sectors - 1
    entries = bytearray(entry_bytes)
    for p in placed:
        entries[p.index * _ENTRY_SIZE : (p.index + 1) * _ENTRY_SIZE] = GPT_ENTRY.build(
            {
                "type_guid": p.type_guid.bytes_le,
                "unique_guid": p.unique_guid.bytes_le,
                "first_lba": p.first_lba,
                "last_lba": p.last_lba,
                "attributes": p.attributes,
                "name": p.name.encode("utf-16-le").ljust(72, b"\0")[:72],
            }
        )
    guid = (disk_guid or uuid.uuid4()).bytes_le
    first_usable = 2 + entry_sectors

    def header(current: int, backup: int, entries_lba: int) -> bytes:
        fields = {
            "revision": 0x00010000,
            "header_size": _HEADER_SIZE,
            "header_crc32": 0,
            "reserved": 0,
            "current_lba": current,
            "backup_lba": backup,
            "first_usable_lba": first_usable,
            "last_usable_lba": last_usable,
            "disk_guid": guid,
            "entries_lba": entries_lba,
            "entry_count": _ENTRY_COUNT,
            "entry_size": _ENTRY_SIZE,
            "entries_crc32": zlib.crc32(entries),
        }
        fields["header_crc32"] = zlib.crc32(GPT_HEADER.build(fields))
        built: bytes = GPT_HEADER.build(fields)
        return built.ljust(sector_size, b"\0")

    mbr = bytearray(sector_size)
    # one protective partition of type 0xEE covering the disk (UEFI spec 5.2.3)
    mbr[446:462] = (
        bytes([0, 0, 2, 0, 0xEE, 0xFF, 0xFF, 0xFF])
        + (1).to_bytes(4, "little")
        + min(disk_size // sector_size - 1, 0xFFFFFFFF).to_bytes(4, "little")
    )
    mbr[510:512] = b"\x55\xaa"
    head = (
        bytes(mbr)
        + header(1, backup_lba, 2)
        + bytes(entries).ljust(entry_sectors * sector_size, b"\0")
    )
    tail = bytes(entries).ljust(entry_sectors * sector_size, b"\0") + header(
        backup_lba, 1, backup_lba - entry_sectors
    )
    return GptLayout(disk_size=disk_size, head=head, tail=tail, partitions=tuple(placed))
