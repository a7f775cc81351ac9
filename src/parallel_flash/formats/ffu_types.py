"""FFU (Full Flash Update) declarations and value types, shared by the FFU modules.

The byte layouts (formats.md "FFU") as construct declarations, the limits a
header's fields are held to, and the frozen records the parser returns.
:mod:`.ffu` re-exports all of it; this module exists so the descriptor walk
and the payload pass can use the types without importing the header parser.
"""

from __future__ import annotations

import enum
import math
import struct
from dataclasses import dataclass, field

from construct import (
    Array,
    Bytes,
    Const,
    If,
    Int16ul,
    Int32ul,
    Int64ul,
    OneOf,
    Struct,
    this,
)

__all__ = (
    "DESCRIPTOR_HEAD",
    "HASH_ALG_SHA256",
    "IMAGE_HEADER",
    "IMAGE_SIGNATURE",
    "LOCATION",
    "MAX_READ_UNIT",
    "MAX_WRITE_FANOUT",
    "SECTOR_SIZES",
    "SECURITY_HEADER",
    "SECURITY_SIGNATURE",
    "STORE_HEADER",
    "STORE_HEADER_V1_SIZE",
    "TARGETING_LENGTHS",
    "VALIDATION_ENTRY",
    "WRITE_DESCRIPTOR",
    "AccessMethod",
    "DiskLocation",
    "Ffu",
    "Manifest",
    "Store",
    "ValidationEntry",
    "WriteDescriptor",
)

SECURITY_SIGNATURE = b"SignedImage "
IMAGE_SIGNATURE = b"ImageFlash  "
#: CALG_SHA_256, the only hash algorithm FFUs use.
HASH_ALG_SHA256 = 0x800C
STORE_HEADER_V1_SIZE = 248

#: The sector sizes a phone disk has: eMMC (512) and UFS (4096).
SECTOR_SIZES = (512, 4096)
#: The payload pass reads in multiples of lcm(chunk size, block sizes); a
#: header asking for a larger unit would have us allocate whatever it says.
MAX_READ_UNIT = 64 << 20
#: A payload block is written at this many disk locations at most, summed
#: over a store (writes <= MAX_WRITE_FANOUT x blocks the file holds). An FFU
#: describes each disk block once; the rare repeat (a block at the disk's start
#: and end) stays far below it, and a crafted file cannot turn a few MiB into
#: hours of writes.
MAX_WRITE_FANOUT = 4

#: A manifest is a few KiB of INI text; anything past this is not a manifest.
_MAX_MANIFEST = 16 << 20
#: Descriptors are read from the file in pieces of this size.
_DESCRIPTOR_READ = 1 << 20

# --- declarations (formats.md "FFU") ----------------------------------------

SECURITY_HEADER = Struct(
    "size"            / Const(32, Int32ul),
    "signature"       / Const(SECURITY_SIGNATURE),
    "chunk_size_kb"   / Int32ul,           # hashed chunk size, usually 128
    "hash_algorithm"  / Int32ul,           # 0x800C = SHA-256
    "catalog_size"    / Int32ul,
    "hash_table_size" / Int32ul,
)  # fmt: skip

IMAGE_HEADER = Struct(
    "size"             / OneOf(Int32ul, [24, 28]),
    "signature"        / Const(IMAGE_SIGNATURE),
    "manifest_length"  / Int32ul,
    "chunk_size_kb"    / Int32ul,
    "targeting_count"  / If(this.size == 28, Int32ul),  # device-targeting infos
)  # fmt: skip

#: Each device-targeting info: seven lengths, then that many ASCII characters each.
TARGETING_LENGTHS = Array(7, Int32ul)

STORE_HEADER = Struct(
    "update_type"              / Int32ul,
    "major_version"            / Int16ul,
    "minor_version"            / Int16ul,
    "full_flash_major"         / Int16ul,
    "full_flash_minor"         / Int16ul,
    "platform_id"              / Bytes(192),   # NUL-separated list
    "block_size"               / Int32ul,      # at 0xCC, usually 0x20000
    "write_descriptor_count"   / Int32ul,
    "write_descriptor_length"  / Int32ul,
    "validation_count"         / Int32ul,
    "validation_length"        / Int32ul,
    "initial_table_index"      / Int32ul,
    "initial_table_count"      / Int32ul,
    "flash_only_table_index"   / Int32ul,
    "flash_only_table_count"   / Int32ul,
    "final_table_index"        / Int32ul,
    "final_table_count"        / Int32ul,
    # v2 (major 2) only:
    "v2" / If(this.major_version == 2, Struct(
        "store_count"          / Int16ul,
        "store_index"          / Int16ul,      # 1-based
        "payload_size"         / Int64ul,      # payload bytes of this store
        "device_path_length"   / Int16ul,      # in UTF-16 units, no NUL
        "device_path"          / Bytes(this.device_path_length * 2),
    )),
)  # fmt: skip

VALIDATION_ENTRY = Struct(
    "sector_index"   / Int32ul,
    "sector_offset"  / Int32ul,
    "byte_count"     / Int32ul,
    "data"           / Bytes(this.byte_count),
)  # fmt: skip

WRITE_DESCRIPTOR = Struct(
    "location_count" / Int32ul,
    "block_count"    / Int32ul,
    "locations"      / Array(this.location_count, Struct(
        "access_method" / Int32ul,             # AccessMethod
        "block_index"   / Int32ul,
    )),
)  # fmt: skip

DESCRIPTOR_HEAD = struct.Struct("<II")
LOCATION = struct.Struct("<II")


class AccessMethod(enum.IntEnum):
    """Where a write descriptor's block index counts from."""

    DISK_BEGIN = 0
    DISK_SEQ = 1  #: defined by Microsoft, never seen in images; refused
    DISK_END = 2


# --- value types ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DiskLocation:
    method: AccessMethod
    block_index: int


@dataclass(frozen=True, slots=True)
class WriteDescriptor:
    """``block_count`` payload blocks, written at every location (ascending from each)."""

    index: int  #: 0-based within its store
    block_count: int
    locations: tuple[DiskLocation, ...]
    file_offset: int  #: where its first payload block is in the FFU


@dataclass(frozen=True, slots=True)
class ValidationEntry:
    sector_index: int
    sector_offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Manifest:
    """The image's INI manifest. Section names repeat ([Store], [Partition]), so
    sections are kept as an ordered list rather than a mapping."""

    sections: tuple[tuple[str, dict[str, str]], ...]

    def all(self, name: str) -> list[dict[str, str]]:
        return [values for section, values in self.sections if section.lower() == name.lower()]

    def first(self, name: str) -> dict[str, str]:
        found = self.all(name)
        return found[0] if found else {}


@dataclass(frozen=True, slots=True, kw_only=True)
class Store:
    """One store (one device disk) of an FFU: its header and where its parts lie."""

    number: int  #: 1-based, in file order
    update_type: int
    version: tuple[int, int, int, int]  #: major, minor, full-flash major, full-flash minor
    platform_ids: tuple[str, ...]
    block_size: int
    sector_size: int  #: from the manifest's [Store] SectorSize
    store_count: int
    device_path: str
    declared_payload_size: int | None  #: v2 only
    validation_entries: tuple[ValidationEntry, ...]
    gpt_tables: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
    descriptor_count: int
    descriptor_offset: int
    descriptor_length: int
    header_offset: int
    payload_offset: int
    payload_blocks: int

    @property
    def payload_size(self) -> int:
        return self.payload_blocks * self.block_size


@dataclass(frozen=True, slots=True, kw_only=True)
class Ffu:
    """Everything an FFU's headers say, and where each part lies in the file."""

    path: str
    file_size: int
    chunk_size: int
    hash_algorithm: int
    catalog_offset: int
    catalog_size: int
    hash_table_offset: int
    hash_table_size: int
    image_offset: int  #: start of the image header; hashing starts here
    image_header_size: int
    manifest_text: str
    manifest: Manifest
    targeting_count: int
    stores: tuple[Store, ...]
    payload_end: int
    warnings: tuple[str, ...] = field(default=())

    @property
    def version(self) -> int:
        return self.stores[0].version[0]

    @property
    def chunk_count(self) -> int:
        return math.ceil((self.file_size - self.image_offset) / self.chunk_size)

    @property
    def platform_ids(self) -> tuple[str, ...]:
        return self.stores[0].platform_ids
