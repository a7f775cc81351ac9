"""FFU (Full Flash Update) images: reading and checking the headers.

An FFU is what Microsoft's imaging tools produce for a whole device disk
(formats.md "FFU"): a security region (header, catalog, hash table), an image
region (header, INI manifest), one or more store headers with their write
descriptors, then the payload blocks in descriptor order. ImgToWIM reads one
partition out of it; so does :mod:`parallel_flash.img2wim.convert`.

Memory and time stay bounded by the file, never by its fields: every count,
length and size a header declares is checked against the bytes the file
actually holds before anything is read, allocated or looped over, and every
step is linear in the file. :func:`read_ffu` parses the headers and walks the
write descriptors once (counting, not keeping them); :func:`iter_descriptors`
re-reads them on demand; :mod:`.ffu_payload` reads the payload in one pass and
:mod:`.ffu_disk` finds partitions on the disk a store describes.

The catalog's signature is not verified (no Authenticode here); the hash table
is, which catches truncation and corruption but not a forger.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass, replace
from typing import Any, BinaryIO

from construct import ConstructError

from ..errors import FormatError
from ._files import open_regular
from .ffu_descriptors import count_blocks, iter_descriptors
from .ffu_types import (
    HASH_ALG_SHA256,
    IMAGE_HEADER,
    IMAGE_SIGNATURE,
    MAX_READ_UNIT,
    MAX_WRITE_FANOUT,
    SECTOR_SIZES,
    SECURITY_HEADER,
    SECURITY_SIGNATURE,
    STORE_HEADER,
    STORE_HEADER_V1_SIZE,
    TARGETING_LENGTHS,
    VALIDATION_ENTRY,
    WRITE_DESCRIPTOR,
    AccessMethod,
    DiskLocation,
    Ffu,
    Manifest,
    Store,
    ValidationEntry,
    WriteDescriptor,
)

__all__ = (
    "HASH_ALG_SHA256",
    "IMAGE_HEADER",
    "IMAGE_SIGNATURE",
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
    "iter_descriptors",
    "parse_manifest",
    "read_ffu",
)

# --- header parsing ---------------------------------------------------------

#: A manifest is a few KiB of INI text; anything past this is not a manifest.
_MAX_MANIFEST = 16 << 20
#: Device-targeting infos name device models; Microsoft's tools write a handful.
_MAX_TARGETING_INFOS = 1 << 16
#: One store per device disk (UFS logical unit); a phone has a few.
_MAX_STORES = 64
#: Validation entries are sector checks Microsoft's tools write none or a few of.
_MAX_VALIDATION_ENTRIES = 1 << 12
_TARGETING_LENGTHS = struct.Struct("<7I")
_VALIDATION_HEAD = struct.Struct("<III")


def _align(value: int, to: int) -> int:
    return -(-value // to) * to


def _parse(spec: Any, data: bytes, path: str, what: str) -> Any:
    """construct.parse, with failures as FormatError naming ``what`` and the field."""
    try:
        return spec.parse(data)
    except ConstructError as exc:
        inner = str(exc.path or "").replace("(parsing)", "").replace(" -> ", ".").strip(".")
        where = f"{what}.{inner}" if inner else what
        raise FormatError(path, where, _construct_problem(exc)) from None


def _construct_problem(exc: ConstructError) -> str:
    """construct's message in plain words (its own text quotes Python reprs)."""
    text = str(exc).splitlines()[-1] if str(exc) else type(exc).__name__
    if "stream read less than specified amount" in text or "could not read enough" in text:
        return "the data ends before this field"
    if "expected" in text and "parsed" in text:
        return "holds a value this field cannot have"
    return text.replace("Error in path", "").strip() or "cannot be parsed"


class _Reader:
    """Bounded reads from an open FFU: a read past the end is refused *before*
    anything is allocated, so a length field cannot size a buffer."""

    def __init__(self, f: BinaryIO, name: str, size: int) -> None:
        self.f = f
        self.name = name
        self.size = size

    def read(self, offset: int, size: int, what: str) -> bytes:
        if offset + size > self.size:
            raise FormatError(
                self.name,
                what,
                f"needs {size} bytes at offset 0x{offset:x} but the file ends at "
                f"0x{self.size:x} (truncated file?)",
            )
        self.f.seek(offset)
        data = self.f.read(size)
        if len(data) != size:
            raise FormatError(self.name, what, f"the file ended early at 0x{offset + len(data):x}")
        return data


def parse_manifest(text: str) -> Manifest:
    """Parse the manifest's INI text: ``[Section]`` lines and ``Key = Value`` pairs."""
    sections: list[tuple[str, dict[str, str]]] = []
    for raw in text.splitlines():
        line = raw.strip().strip("\0")
        if not line or line.startswith((";", "#")):
            continue
        if line.startswith("[") and line.endswith("]"):
            sections.append((line[1:-1].strip(), {}))
        elif "=" in line and sections:
            key, value = line.split("=", 1)
            sections[-1][1][key.strip()] = value.strip()
    return Manifest(tuple(sections))


@dataclass(frozen=True, slots=True)
class _Security:
    chunk: int
    hash_algorithm: int
    catalog_size: int
    hash_table_size: int
    hash_table_offset: int
    image_offset: int


@dataclass(frozen=True, slots=True)
class _ImageRegion:
    header_size: int
    manifest_text: str
    manifest: Manifest
    targeting_count: int
    store_offset: int


def read_ffu(path: str | os.PathLike[str]) -> Ffu:
    """Parse an FFU's headers and check that its parts fit together and in the file.

    Reads only the header regions and the write descriptors (streamed).

    :raises ~parallel_flash.errors.FormatError: naming the field that is wrong.
    """
    name = os.fspath(path)
    warnings: list[str] = []
    with open_regular(name) as f:
        reader = _Reader(f, name, os.fstat(f.fileno()).st_size)
        sec = _read_security(reader)
        image = _read_image_region(reader, sec)
        stores = _read_stores(reader, image.store_offset, image.manifest, warnings)
    payload_end = stores[-1].payload_offset + stores[-1].payload_size
    _check_extent(reader, sec, stores, payload_end, warnings)
    return Ffu(
        path=name,
        file_size=reader.size,
        chunk_size=sec.chunk,
        hash_algorithm=sec.hash_algorithm,
        catalog_offset=SECURITY_HEADER.sizeof(),
        catalog_size=sec.catalog_size,
        hash_table_offset=sec.hash_table_offset,
        hash_table_size=sec.hash_table_size,
        image_offset=sec.image_offset,
        image_header_size=image.header_size,
        manifest_text=image.manifest_text,
        manifest=image.manifest,
        targeting_count=image.targeting_count,
        stores=tuple(stores),
        payload_end=payload_end,
        warnings=tuple(warnings),
    )


def _read_security(reader: _Reader) -> _Security:
    name, what = reader.name, "security header"
    sec = _parse(SECURITY_HEADER, reader.read(0, SECURITY_HEADER.sizeof(), what), name, what)
    if sec.chunk_size_kb == 0 or sec.chunk_size_kb & (sec.chunk_size_kb - 1):
        raise FormatError(
            name, f"{what}.chunk_size_kb", f"{sec.chunk_size_kb} is not a power of two"
        )
    if sec.hash_algorithm != HASH_ALG_SHA256:
        raise FormatError(
            name, f"{what}.hash_algorithm", f"0x{sec.hash_algorithm:x} is not SHA-256 (0x800C)"
        )
    if sec.hash_table_size % 32:
        raise FormatError(
            name,
            f"{what}.hash_table_size",
            f"{sec.hash_table_size} is not a multiple of 32 (one SHA-256 per chunk)",
        )
    chunk = sec.chunk_size_kb * 1024
    hash_table_offset = SECURITY_HEADER.sizeof() + sec.catalog_size
    image_offset = _align(hash_table_offset + sec.hash_table_size, chunk)
    if image_offset >= reader.size:
        raise FormatError(
            name,
            what,
            f"catalog ({sec.catalog_size} bytes) and hash table ({sec.hash_table_size} bytes) "
            f"padded to {chunk}-byte chunks run past the end of the file ({reader.size} bytes)",
        )
    return _Security(
        chunk, sec.hash_algorithm, sec.catalog_size, sec.hash_table_size,
        hash_table_offset, image_offset,
    )  # fmt: skip


def _read_image_region(reader: _Reader, sec: _Security) -> _ImageRegion:
    name, at = reader.name, sec.image_offset
    img = _parse(IMAGE_HEADER, reader.read(at, 28, "image header"), name, "image header")
    if img.chunk_size_kb * 1024 != sec.chunk:
        raise FormatError(
            name,
            "image header.chunk_size_kb",
            f"{img.chunk_size_kb} KiB differs from the security header's {sec.chunk // 1024}",
        )
    if img.manifest_length > _MAX_MANIFEST:
        raise FormatError(
            name, "image header.manifest_length", f"{img.manifest_length} bytes is not plausible"
        )
    manifest_offset = at + img.size
    manifest_bytes = reader.read(manifest_offset, img.manifest_length, "manifest")
    manifest_text = manifest_bytes.decode("ascii", errors="replace")
    pos = manifest_offset + img.manifest_length
    targeting = img.targeting_count or 0
    if targeting > _MAX_TARGETING_INFOS:
        raise FormatError(
            name,
            "image header.targeting_count",
            f"{targeting} device-targeting infos is not plausible",
        )
    for i in range(targeting):
        lengths = _TARGETING_LENGTHS.unpack(reader.read(pos, 28, f"device targeting info {i}"))
        pos += 28 + sum(lengths)
    return _ImageRegion(
        img.size, manifest_text, parse_manifest(manifest_text), targeting, _align(pos, sec.chunk)
    )


def _check_extent(
    reader: _Reader, sec: _Security, stores: list[Store], payload_end: int, warnings: list[str]
) -> None:
    """The payload the descriptors describe, and the hash table, cover the file exactly."""
    name = reader.name
    if reader.size < payload_end:
        raise FormatError(
            name,
            "payload",
            f"the write descriptors need {payload_end} bytes but the file has {reader.size}: "
            "the file is truncated",
        )
    chunks = math.ceil((reader.size - sec.image_offset) / sec.chunk)
    if sec.hash_table_size // 32 != chunks:
        raise FormatError(
            name,
            "hash table",
            f"lists {sec.hash_table_size // 32} chunks but the file holds {chunks} chunks of "
            f"{sec.chunk} bytes after the security region (truncated or padded file?)",
        )
    unit = math.lcm(sec.chunk, *(s.block_size for s in stores))
    if unit > MAX_READ_UNIT:
        raise FormatError(
            name,
            "store header.block_size",
            f"blocks of {', '.join(str(s.block_size) for s in stores)} bytes with "
            f"{sec.chunk}-byte chunks need {unit}-byte reads (at most {MAX_READ_UNIT})",
        )
    if reader.size > payload_end:
        warnings.append(f"{reader.size - payload_end} bytes after the last payload block")


# --- stores -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _StoreHead:
    hdr: Any
    header_offset: int
    descriptors_at: int


def _read_stores(
    reader: _Reader, offset: int, manifest: Manifest, warnings: list[str]
) -> list[Store]:
    """Parse every store header; with v2, all headers come first, then all payloads."""
    heads, payload_at = _read_store_headers(reader, offset)
    store_sections = manifest.all("Store")
    stores: list[Store] = []
    for i, head in enumerate(heads):
        section = store_sections[i] if i < len(store_sections) else {}
        store = _build_store(reader, head, i + 1, len(heads), section, payload_at, warnings)
        stores.append(store)
        payload_at += store.payload_size
    return stores


def _read_store_headers(reader: _Reader, offset: int) -> tuple[list[_StoreHead], int]:
    """The store headers in file order, and where the first payload starts."""
    heads: list[_StoreHead] = []
    count = 1
    pos = offset
    while len(heads) < count:
        hdr, head_size = _read_store_header(reader, pos, len(heads) + 1)
        what = f"store {len(heads) + 1} header"
        if hdr.v2 is not None:
            if not heads:
                count = hdr.v2.store_count
                if not 1 <= count <= _MAX_STORES:
                    raise FormatError(
                        reader.name, f"{what}.store_count", f"is {count}, expected 1..{_MAX_STORES}"
                    )
            if hdr.v2.store_index != len(heads) + 1:
                raise FormatError(
                    reader.name,
                    f"{what}.store_index",
                    f"is {hdr.v2.store_index}, expected {len(heads) + 1}",
                )
        elif heads:
            raise FormatError(reader.name, f"{what}.major_version", "a v1 store after a v2 store")
        descriptors_at = pos + head_size + hdr.validation_length
        end = descriptors_at + hdr.write_descriptor_length
        if end > reader.size:
            raise FormatError(
                reader.name,
                what,
                f"validation entries and write descriptors run to offset 0x{end:x}, past the end "
                f"of the file (0x{reader.size:x})",
            )
        heads.append(_StoreHead(hdr, pos, descriptors_at))
        pos = _align(end, hdr.block_size)
    return heads, pos


def _read_store_header(reader: _Reader, pos: int, number: int) -> tuple[Any, int]:
    """One STORE_HEADER (v2: with its device path); returns it and its size."""
    name, what = reader.name, f"store {number} header"
    head_size = STORE_HEADER_V1_SIZE
    raw = reader.read(pos, head_size, what)
    hdr = _parse(STORE_HEADER, raw + bytes(14), name, what)
    if (hdr.major_version, hdr.full_flash_major) not in ((1, 2), (2, 2)):
        raise FormatError(
            name,
            f"{what}.major_version",
            f"version {hdr.major_version}.{hdr.minor_version} full flash "
            f"{hdr.full_flash_major}.{hdr.full_flash_minor} is not supported (v1 is 1/2, "
            "v2 is 2/2; 1/3 stores are compressed, which is not supported)",
        )
    if hdr.block_size == 0 or hdr.block_size % 512 or hdr.block_size > MAX_READ_UNIT:
        raise FormatError(
            name,
            f"{what}.block_size",
            f"{hdr.block_size} is not a multiple of 512 up to {MAX_READ_UNIT}",
        )
    if hdr.v2 is not None:
        head_size += 14
        raw = reader.read(pos, head_size, what)
        (path_length,) = struct.unpack_from("<H", raw, head_size - 2)  # device_path_length
        head_size += 2 * path_length
        hdr = _parse(STORE_HEADER, reader.read(pos, head_size, what), name, what)
    return hdr, head_size


def _build_store(
    reader: _Reader,
    head: _StoreHead,
    number: int,
    count: int,
    section: dict[str, str],
    payload_at: int,
    warnings: list[str],
) -> Store:
    hdr, name = head.hdr, reader.name
    validation_at = head.descriptors_at - hdr.validation_length
    store = Store(
        number=number,
        update_type=hdr.update_type,
        version=(hdr.major_version, hdr.minor_version, hdr.full_flash_major, hdr.full_flash_minor),
        platform_ids=tuple(
            p.decode("ascii", errors="replace") for p in hdr.platform_id.split(b"\0") if p
        ),
        block_size=hdr.block_size,
        sector_size=_sector_size(section, name, number, warnings),
        store_count=count,
        device_path=hdr.v2.device_path.decode("utf-16-le", errors="replace") if hdr.v2 else "",
        declared_payload_size=hdr.v2.payload_size if hdr.v2 else None,
        validation_entries=_read_validation(reader, hdr, validation_at, f"store {number}"),
        gpt_tables=(
            (hdr.initial_table_index, hdr.initial_table_count),
            (hdr.flash_only_table_index, hdr.flash_only_table_count),
            (hdr.final_table_index, hdr.final_table_count),
        ),
        descriptor_count=hdr.write_descriptor_count,
        descriptor_offset=head.descriptors_at,
        descriptor_length=hdr.write_descriptor_length,
        header_offset=head.header_offset,
        payload_offset=payload_at,
        payload_blocks=max(0, -(-(reader.size - payload_at) // hdr.block_size)),  # the most
    )
    blocks = count_blocks(reader.f, name, store)
    store = replace(store, payload_blocks=blocks)
    if (
        store.declared_payload_size is not None
        and store.declared_payload_size != store.payload_size
    ):
        raise FormatError(
            name,
            f"store {number} header.payload_size",
            f"says {store.declared_payload_size} bytes but the write descriptors hold "
            f"{blocks} blocks of {store.block_size} = {store.payload_size} bytes",
        )
    return store


def _sector_size(section: dict[str, str], name: str, number: int, warnings: list[str]) -> int:
    raw = section.get("SectorSize")
    if raw is None:
        warnings.append(f"manifest has no [Store] SectorSize for store {number}; assuming 512")
        return 512
    try:
        value = int(raw, 0)
    except ValueError:
        raise FormatError(name, "manifest [Store] SectorSize", f"{raw!r} is not a number") from None
    if value not in SECTOR_SIZES:
        raise FormatError(
            name,
            "manifest [Store] SectorSize",
            f"{value} is not a disk sector size (512 or 4096)",
        )
    return value


def _read_validation(
    reader: _Reader, hdr: Any, offset: int, what: str
) -> tuple[ValidationEntry, ...]:
    """Validation entries, parsed in one linear pass over their region."""
    name, count = reader.name, hdr.validation_count
    if count > min(_MAX_VALIDATION_ENTRIES, hdr.validation_length // _VALIDATION_HEAD.size):
        raise FormatError(
            name,
            f"{what} header.validation_count",
            f"{count} entries cannot fit in {hdr.validation_length} bytes "
            f"(or exceed {_MAX_VALIDATION_ENTRIES})",
        )
    data = memoryview(reader.read(offset, hdr.validation_length, f"{what} validation entries"))
    entries: list[ValidationEntry] = []
    pos = 0
    for i in range(count):
        if pos + _VALIDATION_HEAD.size > len(data):
            raise FormatError(name, f"{what} validation entry {i}", "runs past validation_length")
        sector_index, sector_offset, byte_count = _VALIDATION_HEAD.unpack_from(data, pos)
        pos += _VALIDATION_HEAD.size
        if pos + byte_count > len(data):
            raise FormatError(
                name,
                f"{what} validation entry {i}.byte_count",
                f"{byte_count} bytes run past validation_length ({len(data)})",
            )
        entries.append(
            ValidationEntry(sector_index, sector_offset, bytes(data[pos : pos + byte_count]))
        )
        pos += byte_count
    if pos != len(data):
        raise FormatError(
            name,
            f"{what} header.validation_length",
            f"is {len(data)} but the {count} entries take {pos} bytes",
        )
    return tuple(entries)
