"""FFU (Full Flash Update) images: the headers, and one streaming pass over the payload.

An FFU is what Microsoft's imaging tools produce for a whole device disk
(formats.md "FFU"): a security region (header, catalog, hash table), an image
region (header, INI manifest), one or more store headers with their write
descriptors, then the payload blocks in descriptor order. ImgToWIM reads one
partition out of it; so does :mod:`parallel_flash.img2wim`.

Memory stays bounded whatever the FFU size: :func:`read_ffu` parses the
headers and walks the write descriptors once (counting, not keeping them);
:func:`iter_descriptors` re-reads them from the file on demand; and
:func:`scan_payload` reads the file front to back in :data:`READ_SIZE` pieces,
checking every chunk against the hash table *before* handing its blocks on.

The catalog's signature is not verified (no Authenticode here); the hash table
is, which catches truncation and corruption but not a forger.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import math
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, BinaryIO

from construct import (
    Array,
    Bytes,
    Const,
    ConstructError,
    If,
    Int16ul,
    Int32ul,
    Int64ul,
    OneOf,
    Struct,
    this,
)

from ..errors import FormatError

if TYPE_CHECKING:
    from ..inspect import FileDescription

__all__ = (
    "HASH_ALG_SHA256",
    "IMAGE_HEADER",
    "IMAGE_SIGNATURE",
    "READ_SIZE",
    "SECURITY_HEADER",
    "SECURITY_SIGNATURE",
    "STORE_HEADER",
    "STORE_HEADER_V1_SIZE",
    "VALIDATION_ENTRY",
    "WRITE_DESCRIPTOR",
    "AccessMethod",
    "DiskLocation",
    "Ffu",
    "Manifest",
    "ScanResult",
    "Store",
    "ValidationEntry",
    "WriteDescriptor",
    "describe_ffu",
    "iter_descriptors",
    "parse_manifest",
    "read_ffu",
    "scan_payload",
)

logger = logging.getLogger(__name__)

SECURITY_SIGNATURE = b"SignedImage "
IMAGE_SIGNATURE = b"ImageFlash  "
#: CALG_SHA_256, the only hash algorithm FFUs use.
HASH_ALG_SHA256 = 0x800C
STORE_HEADER_V1_SIZE = 248

#: Bytes read per step of the payload pass: big enough for sequential-read
#: throughput, small enough to keep memory flat. Rounded up to a multiple of
#: the chunk and block sizes so chunks never straddle two reads.
READ_SIZE = 4 << 20

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

_DESCRIPTOR_HEAD = struct.Struct("<II")
_LOCATION = struct.Struct("<II")


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


@dataclass(frozen=True, slots=True)
class ScanResult:
    chunks_verified: int
    bytes_read: int
    blocks: int


# --- header parsing ---------------------------------------------------------


def _align(value: int, to: int) -> int:
    return -(-value // to) * to


def _parse(spec: Any, data: bytes, path: str, what: str) -> Any:
    """construct.parse, with failures as FormatError naming ``what`` and the field."""
    try:
        return spec.parse(data)
    except ConstructError as exc:
        inner = str(exc.path or "").replace("(parsing)", "").replace(" -> ", ".").strip(".")
        where = f"{what}.{inner}" if inner else what
        problem = str(exc).splitlines()[-1]
        raise FormatError(path, where, problem) from None


def _read_at(f: BinaryIO, offset: int, size: int, path: str, what: str) -> bytes:
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
        raise FormatError(
            path,
            what,
            f"needs {size} bytes at offset 0x{offset:x} but the file ends at "
            f"0x{offset + len(data):x} (truncated file?)",
        )
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


def read_ffu(path: str | os.PathLike[str]) -> Ffu:
    """Parse an FFU's headers and check that its parts fit together and in the file.

    Reads only the header regions and the write descriptors (streamed).

    :raises ~parallel_flash.errors.FormatError: naming the field that is wrong.
    """
    name = os.fspath(path)
    warnings: list[str] = []
    try:
        f = open(name, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise FormatError(name, "file", exc.strerror or str(exc)) from None
    with f:
        file_size = os.fstat(f.fileno()).st_size
        sec = _parse(
            SECURITY_HEADER,
            _read_at(f, 0, SECURITY_HEADER.sizeof(), name, "security header"),
            name,
            "security header",
        )
        if sec.chunk_size_kb == 0 or sec.chunk_size_kb & (sec.chunk_size_kb - 1):
            raise FormatError(
                name, "security header.chunk_size_kb", f"{sec.chunk_size_kb} is not a power of two"
            )
        if sec.hash_algorithm != HASH_ALG_SHA256:
            raise FormatError(
                name,
                "security header.hash_algorithm",
                f"0x{sec.hash_algorithm:x} is not SHA-256 (0x800C)",
            )
        chunk = sec.chunk_size_kb * 1024
        if sec.hash_table_size % 32:
            raise FormatError(
                name,
                "security header.hash_table_size",
                f"{sec.hash_table_size} is not a multiple of 32 (one SHA-256 per chunk)",
            )
        catalog_offset = 32
        hash_table_offset = catalog_offset + sec.catalog_size
        image_offset = _align(hash_table_offset + sec.hash_table_size, chunk)
        if image_offset >= file_size:
            raise FormatError(
                name,
                "security header",
                f"catalog ({sec.catalog_size} bytes) and hash table ({sec.hash_table_size} bytes) "
                f"run past the end of the file ({file_size} bytes)",
            )

        img = _parse(
            IMAGE_HEADER, _read_at(f, image_offset, 28, name, "image header"), name, "image header"
        )
        if img.chunk_size_kb != sec.chunk_size_kb:
            raise FormatError(
                name,
                "image header.chunk_size_kb",
                f"{img.chunk_size_kb} KiB differs from the security header's {sec.chunk_size_kb}",
            )
        if img.manifest_length > _MAX_MANIFEST:
            raise FormatError(
                name,
                "image header.manifest_length",
                f"{img.manifest_length} bytes is not plausible",
            )
        manifest_offset = image_offset + img.size
        manifest_bytes = _read_at(f, manifest_offset, img.manifest_length, name, "manifest")
        manifest_text = manifest_bytes.decode("ascii", errors="replace")
        manifest = parse_manifest(manifest_text)
        pos = manifest_offset + img.manifest_length
        targeting = img.targeting_count or 0
        for i in range(targeting):
            lengths = _parse(
                TARGETING_LENGTHS,
                _read_at(f, pos, 28, name, f"device targeting info {i}"),
                name,
                f"device targeting info {i}",
            )
            pos += 28 + sum(lengths)
        store_offset = _align(pos, chunk)

        stores = _read_stores(f, name, store_offset, manifest, file_size, warnings)
        payload_end = stores[-1].payload_offset + stores[-1].payload_size

    if file_size < payload_end:
        raise FormatError(
            name,
            "payload",
            f"the write descriptors need {payload_end} bytes but the file has {file_size}: "
            "the file is truncated",
        )
    chunks = math.ceil((file_size - image_offset) / chunk)
    if sec.hash_table_size // 32 != chunks:
        raise FormatError(
            name,
            "hash table",
            f"lists {sec.hash_table_size // 32} chunks but the file holds {chunks} chunks of "
            f"{chunk} bytes after the security region (truncated or padded file?)",
        )
    if file_size > payload_end:
        warnings.append(f"{file_size - payload_end} bytes after the last payload block")

    return Ffu(
        path=name,
        file_size=file_size,
        chunk_size=chunk,
        hash_algorithm=sec.hash_algorithm,
        catalog_offset=catalog_offset,
        catalog_size=sec.catalog_size,
        hash_table_offset=hash_table_offset,
        hash_table_size=sec.hash_table_size,
        image_offset=image_offset,
        image_header_size=img.size,
        manifest_text=manifest_text,
        manifest=manifest,
        targeting_count=targeting,
        stores=tuple(stores),
        payload_end=payload_end,
        warnings=tuple(warnings),
    )


def _read_stores(
    f: BinaryIO, name: str, offset: int, manifest: Manifest, file_size: int, warnings: list[str]
) -> list[Store]:
    """Parse every store header; with v2, all headers come first, then all payloads."""
    store_sections = manifest.all("Store")
    headers: list[tuple[Any, int, int, int]] = []  # header, header offset, descriptors offset, end
    count = 1
    pos = offset
    while len(headers) < count:
        what = f"store {len(headers) + 1} header"
        head_size = STORE_HEADER_V1_SIZE
        raw = _read_at(f, pos, head_size, name, what)
        hdr = _parse(STORE_HEADER, raw + bytes(14), name, what)
        version = (hdr.major_version, hdr.full_flash_major)
        if version not in ((1, 2), (2, 2)):
            raise FormatError(
                name,
                f"{what}.major_version",
                f"version {hdr.major_version}.{hdr.minor_version} full flash "
                f"{hdr.full_flash_major}.{hdr.full_flash_minor} is not supported (v1 is 1/2, "
                "v2 is 2/2; 1/3 stores are compressed, which is not supported)",
            )
        if hdr.block_size == 0 or hdr.block_size % 512:
            raise FormatError(
                name, f"{what}.block_size", f"{hdr.block_size} is not a multiple of 512"
            )
        if hdr.v2 is not None:
            head_size += 14
            raw = _read_at(f, pos, head_size, name, what)
            (path_length,) = struct.unpack_from("<H", raw, head_size - 2)  # device_path_length
            head_size += 2 * path_length
            hdr = _parse(STORE_HEADER, _read_at(f, pos, head_size, name, what), name, what)
            if not headers:
                count = hdr.v2.store_count
                if count < 1:
                    raise FormatError(name, f"{what}.store_count", "is 0")
            if hdr.v2.store_index != len(headers) + 1:
                raise FormatError(
                    name,
                    f"{what}.store_index",
                    f"is {hdr.v2.store_index}, expected {len(headers) + 1}",
                )
        elif headers:
            raise FormatError(name, f"{what}.major_version", "a v1 store after a v2 store")
        descriptors_at = pos + head_size + hdr.validation_length
        end = descriptors_at + hdr.write_descriptor_length
        if end > file_size:
            raise FormatError(
                name,
                what,
                f"validation entries and write descriptors run to offset 0x{end:x}, past the end "
                f"of the file (0x{file_size:x})",
            )
        headers.append((hdr, pos, descriptors_at, end))
        pos = _align(end, hdr.block_size)

    stores: list[Store] = []
    payload_at = pos
    for i, (hdr, header_offset, descriptors_at, _end) in enumerate(headers):
        number = i + 1
        what = f"store {number}"
        validation = _read_validation(f, name, hdr, descriptors_at - hdr.validation_length, what)
        section = store_sections[i] if i < len(store_sections) else {}
        sector_size = _sector_size(section, name, number, warnings)
        platform_ids = tuple(
            p.decode("ascii", errors="replace") for p in hdr.platform_id.split(b"\0") if p
        )
        store = Store(
            number=number,
            update_type=hdr.update_type,
            version=(
                hdr.major_version,
                hdr.minor_version,
                hdr.full_flash_major,
                hdr.full_flash_minor,
            ),
            platform_ids=platform_ids,
            block_size=hdr.block_size,
            sector_size=sector_size,
            store_count=len(headers),
            device_path=hdr.v2.device_path.decode("utf-16-le", errors="replace") if hdr.v2 else "",
            declared_payload_size=hdr.v2.payload_size if hdr.v2 else None,
            validation_entries=validation,
            gpt_tables=(
                (hdr.initial_table_index, hdr.initial_table_count),
                (hdr.flash_only_table_index, hdr.flash_only_table_count),
                (hdr.final_table_index, hdr.final_table_count),
            ),
            descriptor_count=hdr.write_descriptor_count,
            descriptor_offset=descriptors_at,
            descriptor_length=hdr.write_descriptor_length,
            header_offset=header_offset,
            payload_offset=payload_at,
            payload_blocks=0,
        )
        blocks = 0
        for desc in _walk_descriptors(f, name, store):
            blocks += desc.block_count
        store = replace(store, payload_blocks=blocks)
        if (
            store.declared_payload_size is not None
            and store.declared_payload_size != store.payload_size
        ):
            raise FormatError(
                name,
                f"{what} header.payload_size",
                f"says {store.declared_payload_size} bytes but the write descriptors hold "
                f"{blocks} blocks of {store.block_size} = {store.payload_size} bytes",
            )
        stores.append(store)
        payload_at += store.payload_size
    return stores


def _sector_size(section: dict[str, str], name: str, number: int, warnings: list[str]) -> int:
    raw = section.get("SectorSize")
    if raw is None:
        warnings.append(f"manifest has no [Store] SectorSize for store {number}; assuming 512")
        return 512
    try:
        value = int(raw, 0)
    except ValueError:
        raise FormatError(name, "manifest [Store] SectorSize", f"{raw!r} is not a number") from None
    if value < 512 or value & (value - 1):
        raise FormatError(
            name, "manifest [Store] SectorSize", f"{value} is not a power of two >= 512"
        )
    return value


def _read_validation(
    f: BinaryIO, name: str, hdr: Any, offset: int, what: str
) -> tuple[ValidationEntry, ...]:
    data = _read_at(f, offset, hdr.validation_length, name, f"{what} validation entries")
    entries: list[ValidationEntry] = []
    pos = 0
    for i in range(hdr.validation_count):
        ent = _parse(VALIDATION_ENTRY, data[pos:], name, f"{what} validation entry {i}")
        entries.append(ValidationEntry(ent.sector_index, ent.sector_offset, ent.data))
        pos += 12 + ent.byte_count
    if pos != len(data):
        raise FormatError(
            name,
            f"{what} header.validation_length",
            f"is {len(data)} but the {hdr.validation_count} entries take {pos} bytes",
        )
    return tuple(entries)


def iter_descriptors(ffu: Ffu, store: Store) -> Iterator[WriteDescriptor]:
    """The store's write descriptors, read from the file as they are consumed."""
    with open(ffu.path, "rb") as f:
        yield from _walk_descriptors(f, ffu.path, store)


def _walk_descriptors(f: BinaryIO, name: str, store: Store) -> Iterator[WriteDescriptor]:
    """Decode WRITE_DESCRIPTOR records with ``struct`` (construct takes ~25 us per record,
    which is seconds for a large image); tests check both decoders agree."""
    what = f"store {store.number} write descriptor"
    buf = b""
    pos = 0  # within buf
    consumed = 0  # bytes of the descriptor region before buf[0]
    file_offset = store.payload_offset
    remaining_region = store.descriptor_length
    next_read = store.descriptor_offset
    for index in range(store.descriptor_count):
        if len(buf) - pos < 8 + 8 * 64 and remaining_region:
            take = min(_DESCRIPTOR_READ, remaining_region)
            f.seek(next_read)
            more = f.read(take)
            next_read += len(more)
            remaining_region -= len(more)
            consumed += pos
            buf = buf[pos:] + more
            pos = 0
        if len(buf) - pos < 8:
            raise FormatError(
                name,
                f"{what} {index}",
                "runs past the write descriptor region (write_descriptor_length)",
            )
        loc_count, block_count = _DESCRIPTOR_HEAD.unpack_from(buf, pos)
        need = 8 + 8 * loc_count
        while len(buf) - pos < need and remaining_region:
            take = min(max(_DESCRIPTOR_READ, need), remaining_region)
            f.seek(next_read)
            more = f.read(take)
            next_read += len(more)
            remaining_region -= len(more)
            buf += more
        if len(buf) - pos < need:
            raise FormatError(
                name,
                f"{what} {index}",
                f"has {loc_count} locations, which run past the write descriptor region",
            )
        locations = []
        for k in range(loc_count):
            method, block_index = _LOCATION.unpack_from(buf, pos + 8 + 8 * k)
            if method not in (AccessMethod.DISK_BEGIN, AccessMethod.DISK_END):
                raise FormatError(
                    name,
                    f"{what} {index} location {k}.access_method",
                    f"{method} is not 0 (from disk start) or 2 (from disk end)",
                )
            locations.append(DiskLocation(AccessMethod(method), block_index))
        if block_count == 0 or not locations:
            raise FormatError(
                name, f"{what} {index}", f"writes {block_count} blocks at {loc_count} locations"
            )
        yield WriteDescriptor(index, block_count, tuple(locations), file_offset)
        file_offset += block_count * store.block_size
        pos += need
    if consumed + pos != store.descriptor_length:
        raise FormatError(
            name,
            f"store {store.number} header.write_descriptor_length",
            f"is {store.descriptor_length} but the {store.descriptor_count} descriptors take "
            f"{consumed + pos} bytes",
        )


# --- the payload pass -------------------------------------------------------

BlockSink = Callable[[Store, WriteDescriptor, int, memoryview], None]
ProgressSink = Callable[[int, int], None]


def _read_size(ffu: Ffu) -> int:
    unit = math.lcm(ffu.chunk_size, *(s.block_size for s in ffu.stores))
    return _align(max(READ_SIZE, unit), unit)


def scan_payload(
    ffu: Ffu,
    *,
    on_block: BlockSink | None = None,
    progress: ProgressSink | None = None,
    verify: bool = True,
) -> ScanResult:
    """Read the FFU once from the image header to the end.

    Every chunk is checked against the hash table before any block in it is
    given to ``on_block(store, descriptor, block_number_in_descriptor, data)``;
    ``data`` is only valid during the call. ``progress(done, total)`` gets
    file bytes.

    :raises ~parallel_flash.errors.FormatError: at the first chunk that does not
        match (naming its index and file offset), or if the file is shorter than
        its headers say.
    """
    read_size = _read_size(ffu)
    total = ffu.file_size - ffu.image_offset
    cursor = _BlockCursor(ffu) if on_block is not None else None
    buf = bytearray(read_size)
    view = memoryview(buf)
    chunks = 0
    blocks = 0
    with open(ffu.path, "rb", buffering=0) as f, open(ffu.path, "rb") as table:
        pos = ffu.image_offset
        f.seek(pos)
        table.seek(ffu.hash_table_offset)
        while pos < ffu.file_size:
            want = min(read_size, ffu.file_size - pos)
            got = _read_fully(f, view[:want])
            if got != want:
                raise FormatError(
                    ffu.path,
                    "payload",
                    f"file ended at 0x{pos + got:x}, expected 0x{ffu.file_size:x}",
                )
            data = view[:want]
            if verify:
                chunks += _verify_chunks(ffu, table, data, pos)
            if cursor is not None and on_block is not None:
                blocks += cursor.feed(data, pos, on_block)
            pos += want
            if progress is not None:
                progress(pos - ffu.image_offset, total)
    return ScanResult(chunks_verified=chunks, bytes_read=total, blocks=blocks)


def _read_fully(f: BinaryIO, view: memoryview) -> int:
    got = 0
    while got < len(view):
        n = f.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            break
        got += n
    return got


def _verify_chunks(ffu: Ffu, table: BinaryIO, data: memoryview, pos: int) -> int:
    first = (pos - ffu.image_offset) // ffu.chunk_size
    count = math.ceil(len(data) / ffu.chunk_size)
    expected = table.read(32 * count)
    if len(expected) != 32 * count:
        raise FormatError(ffu.path, "hash table", f"has no entry for chunk {first + count - 1}")
    for i in range(count):
        piece = data[i * ffu.chunk_size : (i + 1) * ffu.chunk_size]
        if hashlib.sha256(piece).digest() != expected[32 * i : 32 * i + 32]:
            index = first + i
            offset = pos + i * ffu.chunk_size
            raise FormatError(
                ffu.path,
                f"hash table entry {index}",
                f"chunk {index} (file offset 0x{offset:x}, {len(piece)} bytes) does not match "
                "its SHA-256: the file is corrupt",
            )
    return count


class _BlockCursor:
    """Walks (store, descriptor, block) in payload order alongside the byte stream."""

    def __init__(self, ffu: Ffu) -> None:
        self._ffu = ffu
        self._blocks = self._iter_blocks()
        self._next = next(self._blocks, None)
        self._carry = bytearray()

    def _iter_blocks(self) -> Iterator[tuple[Store, WriteDescriptor, int]]:
        for store in self._ffu.stores:
            for desc in iter_descriptors(self._ffu, store):
                for k in range(desc.block_count):
                    yield store, desc, k

    def feed(self, data: memoryview, pos: int, sink: BlockSink) -> int:
        """Hand on every block that ends inside ``data`` (which starts at file offset ``pos``)."""
        emitted = 0
        end = pos + len(data)
        while self._next is not None:
            store, desc, k = self._next
            start = desc.file_offset + k * store.block_size
            stop = start + store.block_size
            if stop > end:
                if start < end:  # block straddles two reads: keep its head
                    self._carry += data[max(start, pos) - pos :]
                return emitted
            if start >= pos and not self._carry:
                sink(store, desc, k, data[start - pos : stop - pos])
            else:
                self._carry += data[max(start, pos) - pos : stop - pos]
                sink(store, desc, k, memoryview(self._carry))
                self._carry = bytearray()
            emitted += 1
            self._next = next(self._blocks, None)
        return emitted


# --- info -------------------------------------------------------------------


def describe_ffu(path: str | os.PathLike[str]) -> FileDescription:
    """``parallel-flash info`` for an FFU: headers, stores, partition tables, hash check.

    Reads the whole file once to check the hash table; a corrupt or truncated
    FFU raises FormatError, as img2wim would refuse it.
    """
    # Imported here: inspect dispatches to this module, and partition_extract
    # is built on it.
    from ..inspect import FileDescription, format_size
    from ..partition_extract import read_partition_tables, written_bytes

    ffu = read_ffu(path)
    full_flash = ffu.manifest.first("FullFlash")
    stores = len(ffu.stores)
    rows: list[tuple[str, str]] = [
        ("type", f"FFU v{ffu.version} ({stores} store{'s' if stores > 1 else ''})"),
        ("size", format_size(ffu.file_size)),
        ("platform id", ", ".join(ffu.platform_ids) or "(none)"),
        ("chunk size", format_size(ffu.chunk_size)),
        ("block size", ", ".join(sorted({format_size(s.block_size) for s in ffu.stores}))),
        ("hash algorithm", "SHA-256" if ffu.hash_algorithm == HASH_ALG_SHA256 else "?"),
        ("catalog", f"{format_size(ffu.catalog_size)}, signature not verified"),
    ]
    for key in ("Version", "OSVersion", "Description"):
        if key in full_flash:
            rows.append((f"manifest {key}", full_flash[key]))
    if ffu.targeting_count:
        rows.append(("device targeting infos", str(ffu.targeting_count)))
    for table in read_partition_tables(ffu):
        s = table.store
        label = f"store {s.number}"
        detail = [
            f"sector size {s.sector_size}",
            f"{s.descriptor_count} write descriptors",
            f"{s.payload_blocks} blocks ({_human(s.payload_size)})",
            f"{len(s.validation_entries)} validation entries",
        ]
        if s.device_path:
            detail.insert(0, f"device {s.device_path}")
        rows.append((label, ", ".join(detail)))
        if table.gpt is None:
            rows.append((f"{label} partitions", f"no GPT ({table.problem})"))
            continue
        written = written_bytes(ffu, s, table.gpt)
        rows.append((f"{label} disk", format_size(table.gpt.disk_size)))
        for part in table.gpt.partitions:
            amount = written[part.index]
            state = f"{_human(amount)} written" if amount else "not written"
            rows.append(
                (
                    f"{label} partition {part.index + 1}",
                    f"{part.name}: LBA {part.first_lba}-{part.last_lba}, "
                    f"{_human(part.size)}, {state}",
                )
            )
    result = scan_payload(ffu)
    rows.append(("hash check", f"OK: all {result.chunks_verified} chunks match the hash table"))
    return FileDescription(
        path=ffu.path,
        kind="ffu",
        title=f"{ffu.path}: FFU",
        rows=tuple(rows),
        warnings=ffu.warnings,
    )


def _human(size: int) -> str:
    """``4.0 MiB``: the short form for sizes inside a row."""
    scaled, unit = float(size), "bytes"
    for larger in ("KiB", "MiB", "GiB", "TiB"):
        if scaled < 1024:
            break
        scaled, unit = scaled / 1024, larger
    return f"{size} bytes" if unit == "bytes" else f"{scaled:.1f} {unit}"
