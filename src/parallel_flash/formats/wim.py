"""The WIM header: parse it, and refuse a WIM no device could boot.

A device in flashing mode loads the WIM we stream into RAM and boots it; it
cannot tell us *why* a bad WIM failed (a negative status is all we get, see
protocol.md "Status"). So every problem we can see from the header is caught
here, before any device is touched, with the file, the field and what is wrong
(formats.md "Checks before a WIM is sent"). wimlib's ``read_wim_header`` and
``wim_chunk_size_valid`` are the reference for what a WIM reader accepts.

Only the 208-byte header is needed for the checks; :func:`read_wim_info`
additionally reads the XML data resource for image names;
:mod:`.wim_integrity` re-hashes the file against its integrity table.
"""

from __future__ import annotations

import enum
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, BinaryIO

from construct import (
    Bytes,
    BytesInteger,
    Const,
    ConstructError,
    Default,
    FlagsEnum,
    Int8ul,
    Int16ul,
    Int32ul,
    Int64ul,
    Padding,
    Peek,
    Struct,
)

from ..errors import FormatError
from ._files import open_regular

__all__ = (
    "MAX_BOOT_PAYLOAD",
    "PIPABLE_WIM_MAGIC",
    "RESOURCE_HEADER",
    "RESOURCE_HEADER_SIZE",
    "WIM_HEADER",
    "WIM_HEADER_SIZE",
    "WIM_MAGIC",
    "WIM_VERSION_DEFAULT",
    "WIM_VERSION_SOLID",
    "HeaderFlag",
    "Resource",
    "ResourceFlag",
    "WimInfo",
    "check_boot_payload",
    "parse_wim_header",
    "read_wim_info",
    "with_image_names",
)

logger = logging.getLogger(__name__)

WIM_MAGIC = b"MSWIM\0\0\0"
#: wimlib's pipable WIM: header and resources are laid out for a one-pass
#: read from a pipe, which WIMGAPI (and so the device) does not understand.
PIPABLE_WIM_MAGIC = b"WLPWM\0\0\0"
WIM_HEADER_SIZE = 208
RESOURCE_HEADER_SIZE = 24
WIM_VERSION_DEFAULT = 0x10D00
#: Version of WIMs holding solid (LZMS) resources, usually named .esd.
WIM_VERSION_SOLID = 0xE00
#: The SimpleIO WIM header carries both lengths as u32 (protocol.md "WIM header").
MAX_BOOT_PAYLOAD = 1 << 32
#: The largest XML data resource read for image names; real ones are a few KiB.
_MAX_XML_SIZE = 64 << 20

#: wimlib writes image names verbatim, control characters included, which XML
#: 1.0 forbids; they are parked in a private-use block for the parse and put
#: back afterwards, so a name is returned exactly as stored.
_XML_CONTROLS = [c for c in range(0x20) if c not in (0x09, 0x0A, 0x0D)]
_XML_CONTROL_TO_PRIVATE = {c: 0xF700 + c for c in _XML_CONTROLS}
_PRIVATE_TO_XML_CONTROL = {0xF700 + c: c for c in _XML_CONTROLS}


class HeaderFlag(enum.IntFlag):
    """WIM header flags (formats.md "Header flags"; wimlib header.h)."""

    RESERVED = 0x1
    COMPRESSION = 0x2
    READONLY = 0x4
    SPANNED = 0x8
    RESOURCE_ONLY = 0x10
    METADATA_ONLY = 0x20
    WRITE_IN_PROGRESS = 0x40
    RP_FIX = 0x80
    COMPRESS_RESERVED = 0x10000
    XPRESS = 0x20000
    LZX = 0x40000
    LZMS = 0x80000
    XPRESS_2 = 0x200000


class ResourceFlag(enum.IntFlag):
    """Flags byte of a resource header (formats.md "Resource header")."""

    FREE = 0x1
    METADATA = 0x2
    COMPRESSED = 0x4
    SPANNED = 0x8
    SOLID = 0x10


#: The compression-type flags, with the name shown for each.
_COMPRESSION_TYPES: tuple[tuple[HeaderFlag, str], ...] = (
    (HeaderFlag.XPRESS, "XPRESS"),
    (HeaderFlag.LZX, "LZX"),
    (HeaderFlag.LZMS, "LZMS"),
    (HeaderFlag.XPRESS_2, "XPRESS_2"),
)
#: Chunk sizes a WIM reader accepts per compression type (wimlib wim.c
#: ``wim_ctype_info``). XPRESS_2 is absent: nothing public says.
_CHUNK_SIZE_RANGE = {
    "XPRESS": (1 << 12, 1 << 16),
    "LZX": (1 << 15, 1 << 21),
    "LZMS": (1 << 15, 1 << 30),
}

# formats.md "Resource header": where a blob lives in the file, 24 bytes.
RESOURCE_HEADER = Struct(
    "size_in_wim"   / BytesInteger(7, swapped=True)   * "bytes it takes in the file (56 bits)",
    "flags"         / FlagsEnum(Int8ul, ResourceFlag) * "ResourceFlag",
    "offset"        / Int64ul                         * "file offset of its first byte",
    "original_size" / Int64ul                         * "size once decompressed",
)  # fmt: skip

_NO_RESOURCE = {"size_in_wim": 0, "flags": 0, "offset": 0, "original_size": 0}

# formats.md "WIM header (208 bytes at offset 0)"; wimlib struct wim_header_disk.
WIM_HEADER = Struct(
    "magic"           / Const(WIM_MAGIC)                        * "MSWIM\\0\\0\\0",
    "header_size"     / Default(Int32ul, WIM_HEADER_SIZE)      * "208",
    "version"         / Default(Int32ul, WIM_VERSION_DEFAULT)  * "0x10d00, 0xe00 when solid",
    "raw_flags"       / Peek(Default(Int32ul, 0))              * "the flags as one integer",
    "flags"           / FlagsEnum(Int32ul, HeaderFlag)         * "HeaderFlag",
    "chunk_size"      / Default(Int32ul, 0)                    * "0 when uncompressed",
    "guid"            / Default(Bytes(16), bytes(16))          * "GUID, .NET byte order",
    "part_number"     / Default(Int16ul, 1)                    * "1-based part of a split WIM",
    "total_parts"     / Default(Int16ul, 1)                    * "parts of a split WIM",
    "image_count"     / Int32ul                                * "images in the WIM",
    "blob_table"      / Default(RESOURCE_HEADER, _NO_RESOURCE) * "blob (lookup) table",
    "xml_data"        / Default(RESOURCE_HEADER, _NO_RESOURCE) * "UTF-16LE XML",
    "boot_metadata"   / Default(RESOURCE_HEADER, _NO_RESOURCE) * "metadata of the boot image",
    "boot_index"      / Default(Int32ul, 0)                    * "1-based, 0 = none",
    "integrity_table" / Default(RESOURCE_HEADER, _NO_RESOURCE) * "SHA-1 per chunk, optional",
    "unused"          / Padding(60)                            * "zero",
)  # fmt: skip



@dataclass(frozen=True, slots=True)
class Resource:
    """One resource header: where a blob sits in the WIM file."""

    offset: int
    size_in_wim: int
    original_size: int
    flags: ResourceFlag

    @property
    def present(self) -> bool:
        """An absent resource is all zeros in the header (e.g. no integrity table)."""
        return self.offset != 0 or self.size_in_wim != 0

    @property
    def end(self) -> int:
        return self.offset + self.size_in_wim

    @property
    def compressed(self) -> bool:
        return ResourceFlag.COMPRESSED in self.flags


@dataclass(frozen=True, slots=True)
class WimInfo:
    """What the header says about a WIM that passed every boot check."""

    path: str
    #: Length of the file, or None when the caller parsed a header alone.
    file_size: int | None
    version: int
    flags: int
    flag_names: tuple[str, ...]
    #: "none", "XPRESS", "LZX", "LZMS" or "XPRESS_2".
    compression: str
    chunk_size: int
    guid: uuid.UUID
    part_number: int
    total_parts: int
    image_count: int
    boot_index: int
    boot_metadata_size: int
    has_integrity: bool
    warnings: tuple[str, ...]
    blob_table: Resource
    xml_data: Resource
    boot_metadata: Resource
    integrity_table: Resource
    #: Image names from the XML data, index order; empty if not read.
    image_names: tuple[str, ...] = ()

    @property
    def solid(self) -> bool:
        return self.version == WIM_VERSION_SOLID


def parse_wim_header(
    data: bytes | memoryview, *, path: str = "<wim>", file_size: int | None = None
) -> WimInfo:
    """Parse the 208-byte WIM header and run every check for a bootable WIM.

    :param data: the file's first bytes (at least 208; more is ignored).
    :param path: names the file in error messages.
    :param file_size: the file's length; when given, every resource must lie
        inside it and the WIM must fit the protocol's u32 length.
    :raises ~parallel_flash.errors.FormatError: naming the field that fails.
    :return: the header's contents; soft problems are in ``warnings``.
    """
    head = bytes(data[:WIM_HEADER_SIZE])
    if len(head) >= len(WIM_MAGIC):
        _check_magic(head[: len(WIM_MAGIC)], path)
    if len(head) < WIM_HEADER_SIZE:
        raise FormatError(
            path,
            "header",
            f"truncated: {len(head)} bytes, but a WIM header is {WIM_HEADER_SIZE} bytes",
        )
    try:
        raw = WIM_HEADER.parse(head)
    except ConstructError as exc:  # only reachable through a construct bug; never leak it
        raise FormatError(path, "header", f"cannot be parsed: {exc}") from None

    flags = HeaderFlag(raw.raw_flags)
    resources = {
        name: _resource(raw[name])
        for name in ("blob_table", "xml_data", "boot_metadata", "integrity_table")
    }
    warnings: list[str] = []
    _check_identity(raw, path)
    compression = _check_compression(flags, raw.chunk_size, path, warnings)
    _check_images(raw, resources["boot_metadata"], path, warnings)
    _check_resources(resources, file_size, path, warnings)
    _check_size_and_parts(flags, file_size, path, warnings)
    return WimInfo(
        path=path,
        file_size=file_size,
        version=raw.version,
        flags=int(flags),
        flag_names=_flag_names(flags),
        compression=compression,
        chunk_size=raw.chunk_size,
        guid=uuid.UUID(bytes_le=raw.guid),
        part_number=raw.part_number,
        total_parts=raw.total_parts,
        image_count=raw.image_count,
        boot_index=raw.boot_index,
        boot_metadata_size=resources["boot_metadata"].size_in_wim,
        has_integrity=resources["integrity_table"].present,
        warnings=tuple(warnings),
        blob_table=resources["blob_table"],
        xml_data=resources["xml_data"],
        boot_metadata=resources["boot_metadata"],
        integrity_table=resources["integrity_table"],
    )


def check_boot_payload(sdi_length: int, wim_length: int, *, path: str) -> None:
    """Refuse an SDI + WIM pair the protocol cannot announce (formats.md).

    :raises ~parallel_flash.errors.FormatError: when the sum reaches 4 GiB.
    """
    total = sdi_length + wim_length
    if total >= MAX_BOOT_PAYLOAD:
        raise FormatError(
            path,
            "file_size",
            f"SDI ({sdi_length} bytes) + WIM ({wim_length} bytes) = {total} bytes; "
            f"the protocol's u32 lengths need SDI + WIM under 4 GiB",
        )


def read_wim_info(path: str | os.PathLike[str]) -> WimInfo:
    """Check a WIM file's header and read its image names from the XML data.

    Reads the header and the XML data resource only, never the whole file.

    :raises ~parallel_flash.errors.FormatError: for any failed check, or when
        the file cannot be read.
    """
    name = os.fspath(path)
    try:
        with open_regular(name) as f:
            file_size = os.fstat(f.fileno()).st_size
            info = parse_wim_header(f.read(WIM_HEADER_SIZE), path=name, file_size=file_size)
            return with_image_names(info, lambda offset, size: _read_at(f, offset, size))
    except OSError as exc:
        raise FormatError(name, "file", f"cannot be read: {exc.strerror or exc}") from None


def with_image_names(info: WimInfo, read_at: Callable[[int, int], bytes]) -> WimInfo:
    """``info`` with image names from the WIM's XML data resource.

    :param read_at: returns ``size`` bytes at ``offset`` of the WIM (so a WIM
        inside a .secwim can be read through a view of the bundle).
    :return: a copy with ``image_names`` set; an unreadable XML resource only
        adds a warning, since names are for people, not for booting.
    """
    names, warnings = _image_names(info, read_at)
    return replace(info, image_names=names, warnings=info.warnings + warnings)


# -- checks -------------------------------------------------------------------


def _check_size_and_parts(
    flags: HeaderFlag, file_size: int | None, path: str, warnings: list[str]
) -> None:
    """Under the protocol's 4 GiB, and holding both file data and metadata."""
    if file_size is not None and file_size >= MAX_BOOT_PAYLOAD:
        raise FormatError(
            path,
            "file_size",
            f"{file_size} bytes; the protocol sends lengths as u32, so the WIM "
            f"must stay under 4 GiB",
        )
    for flag, why in (
        (HeaderFlag.METADATA_ONLY, "the file data is not in this WIM"),
        (HeaderFlag.RESOURCE_ONLY, "the image metadata is not in this WIM"),
    ):
        if flag in flags:
            warnings.append(f"flags: {flag.name} is set: {why}; the device will probably fail")


def _check_magic(magic: bytes, path: str) -> None:
    if magic == WIM_MAGIC:
        return
    if magic == PIPABLE_WIM_MAGIC:
        raise FormatError(
            path,
            "magic",
            "WLPWM\\0\\0\\0: pipable WIM cannot be booted; convert it with "
            "wimlib-imagex optimize/export (`wimlib-imagex optimize FILE --not-pipable`)",
        )
    raise FormatError(path, "magic", f"{magic.hex(' ')} is not MSWIM\\0\\0\\0: not a WIM file")


def _check_identity(hdr: Any, path: str) -> None:
    """Header size, version, single part, and a finished write."""
    if hdr.header_size != WIM_HEADER_SIZE:
        raise FormatError(path, "header_size", f"{hdr.header_size}, expected {WIM_HEADER_SIZE}")
    if hdr.version not in (WIM_VERSION_DEFAULT, WIM_VERSION_SOLID):
        raise FormatError(
            path,
            "version",
            f"0x{hdr.version:x} is unknown; expected 0x{WIM_VERSION_DEFAULT:x} "
            f"(or 0x{WIM_VERSION_SOLID:x} for a solid WIM)",
        )
    part, total = hdr.part_number, hdr.total_parts
    if part == 0 or total == 0 or part > total:
        raise FormatError(path, "part_number", f"invalid: part {part} of {total}")
    if total != 1:
        raise FormatError(
            path,
            "part_number",
            f"part {part} of {total} of a split WIM; a device boots one whole WIM: "
            f"join the parts with `wimlib-imagex join`",
        )
    if HeaderFlag.SPANNED & hdr.raw_flags:
        raise FormatError(
            path,
            "flags",
            "SPANNED is set: this is part of a split WIM; join the parts with `wimlib-imagex join`",
        )
    if HeaderFlag.WRITE_IN_PROGRESS & hdr.raw_flags:
        raise FormatError(
            path,
            "flags",
            "WRITE_IN_PROGRESS is set: the WIM was never finished (an interrupted "
            "capture or append); write it again",
        )


def _check_compression(flags: HeaderFlag, chunk_size: int, path: str, warnings: list[str]) -> str:
    types = [name for flag, name in _COMPRESSION_TYPES if flag in flags]
    if len(types) > 1:
        raise FormatError(
            path,
            "flags",
            f"{len(types)} compression types set ({', '.join(types)}); at most one is allowed",
        )
    if HeaderFlag.COMPRESSION not in flags:
        if types:
            warnings.append(
                f"flags: {types[0]} is set without COMPRESSION; resources are read as uncompressed"
            )
        return "none"
    if not types:
        raise FormatError(
            path,
            "flags",
            "COMPRESSION is set but no compression type (XPRESS, LZX, LZMS, XPRESS_2) is",
        )
    compression = types[0]
    low, high = _CHUNK_SIZE_RANGE.get(compression, (1, 1 << 31))
    if chunk_size & (chunk_size - 1) or not low <= chunk_size <= high:
        raise FormatError(
            path,
            "chunk_size",
            f"{chunk_size} is not valid for {compression}: expected a power of two "
            f"from {low} to {high}",
        )
    return compression


def _check_images(raw: Any, boot_metadata: Resource, path: str, warnings: list[str]) -> None:
    count = raw.image_count
    boot = raw.boot_index
    if count < 1:
        raise FormatError(path, "image_count", "0: the WIM holds no image to boot")
    if boot == 0:
        warnings.append(
            "boot_index: 0 (no boot image set): the device will not know which image to "
            "boot; set one with `wimlib-imagex info FILE 1 --boot`"
        )
        return
    if boot > count:
        raise FormatError(
            path,
            "boot_index",
            f"{boot} is out of range: the WIM holds {count} image(s), expected 1..{count}",
        )
    if boot_metadata.size_in_wim == 0:
        raise FormatError(
            path,
            "boot_metadata",
            f"empty, but boot index {boot} names an image: the device would find no "
            f"metadata to boot",
        )


def _check_resources(
    resources: dict[str, Resource], file_size: int | None, path: str, warnings: list[str]
) -> None:
    if resources["blob_table"].size_in_wim == 0:
        raise FormatError(path, "blob_table", "empty: the WIM's images and files cannot be found")
    if not resources["xml_data"].present:
        warnings.append("xml_data: absent; image names and sizes are unknown")
    for name, res in resources.items():
        if not res.present:
            continue
        if res.offset < WIM_HEADER_SIZE:
            raise FormatError(
                path,
                name,
                f"starts at offset {res.offset}, inside the {WIM_HEADER_SIZE}-byte header",
            )
        if file_size is not None and res.end > file_size:
            raise FormatError(
                path,
                name,
                f"ends at byte {res.end} (offset {res.offset} + {res.size_in_wim} bytes), "
                f"past the end of the {file_size}-byte file: the WIM is truncated or damaged",
            )


# -- helpers ------------------------------------------------------------------


def _resource(raw: Any) -> Resource:
    flags = ResourceFlag(0)
    for flag in ResourceFlag:
        if raw.flags[flag.name]:
            flags |= flag
    return Resource(
        offset=raw.offset,
        size_in_wim=raw.size_in_wim,
        original_size=raw.original_size,
        flags=flags,
    )


def _flag_names(flags: HeaderFlag) -> tuple[str, ...]:
    names = [flag.name for flag in HeaderFlag if flag in flags and flag.name]
    unknown = int(flags) & ~sum(HeaderFlag)
    if unknown:
        names.append(f"0x{unknown:x}")
    return tuple(names)


def _image_names(
    info: WimInfo, read_at: Callable[[int, int], bytes]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Image names from the XML data resource; problems become warnings.

    Names are shown to the user only, so a WIM whose XML we cannot read is
    still bootable and only loses its names.
    """
    xml = info.xml_data
    if not xml.present:
        return (), ()
    if xml.compressed:
        return (), ("xml_data: compressed; image names not read",)
    if xml.size_in_wim > _MAX_XML_SIZE:
        return (), (f"xml_data: {xml.size_in_wim} bytes, too large to read image names",)
    # Loaded here, not with the module: a WIM boot checks the header only (issue 10).
    import xml.etree.ElementTree as ElementTree

    raw = read_at(xml.offset, xml.size_in_wim)
    try:
        text = raw.decode("utf-16-le").lstrip("\ufeff")
        root = ElementTree.fromstring(text.translate(_XML_CONTROL_TO_PRIVATE))
    except (UnicodeDecodeError, ElementTree.ParseError) as exc:
        return (), (f"xml_data: not readable UTF-16LE XML ({exc}); image names unknown",)
    images: list[tuple[int, str]] = []
    for image in root.iter("IMAGE"):
        try:
            index = int(image.get("INDEX", "0"))
        except ValueError:
            index = 0
        name = (image.findtext("NAME") or "").translate(_PRIVATE_TO_XML_CONTROL)
        images.append((index, name.strip()))
    images.sort()
    warnings: tuple[str, ...] = ()
    if len(images) != info.image_count:
        warnings = (
            f"xml_data: describes {len(images)} image(s), the header says {info.image_count}",
        )
    return tuple(name for _, name in images), warnings


def _read_at(f: BinaryIO, offset: int, size: int) -> bytes:
    f.seek(offset)
    return f.read(size)
