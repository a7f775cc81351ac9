"""SDI (System Deployment Image): the boot.sdi sent ahead of the WIM.

The device gets the SDI and the WIM back to back and finds the WIM through the
SDI's table of contents: its ``WIM`` entry must point at the byte right after
the SDI (formats.md "SDI"). So the one check that matters before sending is
:func:`check_sdi_for_wim_boot`.

Microsoft's boot.sdi is Microsoft's file and is never shipped or downloaded
here; :func:`build_sdi` makes the project's own small SDI with the same
structure for tests and the demo, and :func:`read_sdi_info` recognises
Microsoft's file by size and SHA-256 so ``info`` can say what the user has.

Layout sources: Sergii Kolisnyk's "SDI file format specification" (header
fields, TOC at 0x400, 64-byte records, blobs aligned to pages) and DiscUtils
(``FileHeader.cs``, ``SectionRecord.cs``).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Any

from construct import (
    Array,
    Bytes,
    Const,
    ConstructError,
    Default,
    FixedSized,
    GreedyBytes,
    Int64sl,
    Int64ul,
    Padding,
    Struct,
)

from ..errors import FormatError
from ._files import open_regular

__all__ = (
    "KNOWN_BLOB_TYPES",
    "MICROSOFT_BOOT_SDI_SHA256",
    "MICROSOFT_BOOT_SDI_SIZE",
    "SDI_HEAD",
    "SDI_HEADER",
    "SDI_HEAD_SIZE",
    "SDI_MAGIC",
    "SDI_TOC_ENTRY",
    "SDI_TOC_OFFSET",
    "SdiBlob",
    "SdiInfo",
    "build_sdi",
    "check_sdi_for_wim_boot",
    "parse_sdi",
    "read_sdi_info",
    "sdi_checksum",
)

logger = logging.getLogger(__name__)

SDI_MAGIC = b"$SDI0001"
SDI_HEADER_SIZE = 0x200
SDI_TOC_OFFSET = 0x400
SDI_TOC_ENTRIES = 8
SDI_TOC_ENTRY_SIZE = 64
#: What :func:`parse_sdi` needs: header, gap, table of contents.
SDI_HEAD_SIZE = SDI_TOC_OFFSET + SDI_TOC_ENTRIES * SDI_TOC_ENTRY_SIZE
#: Blobs are aligned to pages of 4 KiB times the header's page alignment.
SDI_PAGE = 4096
#: Where Microsoft's boot.sdi (and ours) puts its PART blob.
PART_OFFSET = 0x2000

MICROSOFT_BOOT_SDI_SIZE = 3_170_304
MICROSOFT_BOOT_SDI_SHA256 = "cd2c00ce027687ce4a8bdc967f26a8ab82f651c9becd703658ba282ec49702bd"
KNOWN_BLOB_TYPES = frozenset({"PART", "WIM", "BOOT", "LOAD", "DISK"})

#: Files up to this size are hashed by :func:`read_sdi_info` (boot.sdi is 3 MiB).
_HASH_LIMIT = 64 << 20
_FILLER = b"parallel-flash SDI PART filler: deterministic bytes, not a file system.\n"

# formats.md "SDI": 512-byte header (Kolisnyk; DiscUtils FileHeader.cs).
SDI_HEADER = Struct(
    "magic"            / Const(SDI_MAGIC)              * "$SDI0001",
    "type"             / Default(Int64ul, 0)           * "MDB type: 0 unspecified, 1 RAM, 2 ROM",
    "boot_code_offset" / Default(Int64ul, 0)           * "copy of the BOOT blob's offset",
    "boot_code_size"   / Default(Int64ul, 0)           * "copy of the BOOT blob's size",
    "vendor_id"        / Default(Int64ul, 0)           * "PCI vendor id",
    "device_id"        / Default(Int64ul, 0)           * "PCI device id",
    "device_model"     / Default(Bytes(16), bytes(16)) * "GUID",
    "device_role"      / Default(Int64ul, 0)           * "",
    "reserved1"        / Padding(8)                    * "",
    "runtime_guid"     / Default(Bytes(16), bytes(16)) * "GUID",
    "runtime_oem_rev"  / Default(Int64ul, 0)           * "",
    "reserved2"        / Padding(8)                    * "",
    "page_alignment"   / Default(Int64sl, 1)           * "blob alignment in 4 KiB pages",
    "reserved3"        / Padding(0x1F8 - 0x78)         * "",
    "checksum"         / Default(Int64ul, 0)           * "header bytes sum to 0 mod 256",
)  # fmt: skip

# formats.md "Table of contents at 0x400": 64-byte records.
SDI_TOC_ENTRY = Struct(
    "type"         / Default(FixedSized(8, GreedyBytes), b"") * "ASCII, NUL padded; 0 = end",
    "attributes"   / Default(Int64ul, 0)                      * "",
    "offset"       / Default(Int64ul, 0)                      * "file offset of the blob",
    "size"         / Default(Int64ul, 0)                      * "0 for WIM = to the file's end",
    "base_address" / Default(Int64ul, 0)                      * "PART: file system (7 NTFS)",
    "reserved"     / Padding(24)                              * "",
)  # fmt: skip

_EMPTY_TOC: list[dict[str, Any] | None] = [{}] * SDI_TOC_ENTRIES

SDI_HEAD = Struct(
    "header" / SDI_HEADER,
    "gap"    / Padding(SDI_TOC_OFFSET - SDI_HEADER_SIZE),
    "toc"    / Default(Array(SDI_TOC_ENTRIES, SDI_TOC_ENTRY), _EMPTY_TOC),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SdiBlob:
    """One table-of-contents entry."""

    index: int
    type: str
    attributes: int
    offset: int
    size: int
    base_address: int

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True, slots=True)
class SdiInfo:
    """What an SDI file holds, and whether it is Microsoft's boot.sdi."""

    path: str
    file_size: int
    blobs: tuple[SdiBlob, ...]
    #: The first ``WIM`` entry, or None.
    wim_blob: SdiBlob | None
    #: Hex SHA-256 of the whole file, when it was read whole.
    sha256: str | None
    is_microsoft_boot_sdi: bool
    page_alignment: int
    #: Whether the header's bytes sum to 0 mod 256 (the XP Embedded rule).
    checksum_ok: bool
    warnings: tuple[str, ...] = ()


def sdi_checksum(header: bytes) -> int:
    """The checksum byte that makes the 512-byte header sum to 0 mod 256.

    Rule from Kolisnyk's SDI notes (an empty header with alignment 1 gives
    0x3A); the checksum field itself counts as zero here.
    """
    body = header[:0x1F8] + bytes(8) + header[0x200:SDI_HEADER_SIZE]
    return -sum(body) & 0xFF


def parse_sdi(
    data: bytes | memoryview, *, path: str = "<sdi>", file_size: int | None = None
) -> SdiInfo:
    """Parse an SDI's header and table of contents.

    :param data: the file's first bytes, at least ``SDI_HEAD_SIZE`` (0x600);
        when it is the whole file its SHA-256 is computed too.
    :param file_size: the file's length; defaults to ``len(data)``.
    :raises ~parallel_flash.errors.FormatError: on bad magic, truncation, or a
        blob outside the file (a ``WIM`` entry of size 0 is exempt: it means
        "from its offset to the end of what follows").
    """
    size = len(data) if file_size is None else file_size
    head = bytes(data[:SDI_HEAD_SIZE])
    if len(head) >= len(SDI_MAGIC) and head[: len(SDI_MAGIC)] != SDI_MAGIC:
        raise FormatError(path, "magic", f"{head[:8].hex(' ')} is not $SDI0001: not an SDI file")
    if len(head) < SDI_HEAD_SIZE:
        raise FormatError(
            path,
            "header",
            f"truncated: {len(head)} bytes, but an SDI header and table of contents "
            f"take {SDI_HEAD_SIZE} bytes",
        )
    try:
        raw = SDI_HEAD.parse(head)
    except ConstructError as exc:  # lengths are checked above; never leak construct's errors
        raise FormatError(path, "header", f"cannot be parsed: {exc}") from None

    warnings: list[str] = []
    blobs = _blobs(raw.toc, size, path, warnings)
    wim_blobs = [blob for blob in blobs if blob.type == "WIM"]
    if len(wim_blobs) > 1:
        warnings.append(f"toc: {len(wim_blobs)} WIM entries; the first one counts")
    sha256 = None
    if len(data) == size and size <= _HASH_LIMIT:
        sha256 = hashlib.sha256(data).hexdigest()
    return SdiInfo(
        path=path,
        file_size=size,
        blobs=blobs,
        wim_blob=wim_blobs[0] if wim_blobs else None,
        sha256=sha256,
        is_microsoft_boot_sdi=(
            size == MICROSOFT_BOOT_SDI_SIZE and sha256 == MICROSOFT_BOOT_SDI_SHA256
        ),
        page_alignment=raw.header.page_alignment,
        checksum_ok=sum(head[:SDI_HEADER_SIZE]) & 0xFF == 0,
        warnings=tuple(warnings),
    )


def read_sdi_info(path: str | os.PathLike[str]) -> SdiInfo:
    """Parse an SDI file, hashing it whole when it is small enough.

    :raises ~parallel_flash.errors.FormatError: as :func:`parse_sdi`, or when
        the file cannot be read.
    """
    name = os.fspath(path)
    try:
        with open_regular(name) as f:
            size = os.fstat(f.fileno()).st_size
            data = f.read(size if size <= _HASH_LIMIT else SDI_HEAD_SIZE)
    except OSError as exc:
        raise FormatError(name, "file", f"cannot be read: {exc.strerror or exc}") from None
    return parse_sdi(data, path=name, file_size=size)


def check_sdi_for_wim_boot(info: SdiInfo) -> None:
    """Require the ``WIM`` entry that makes the device find the WIM after the SDI.

    :raises ~parallel_flash.errors.FormatError: when there is no ``WIM`` entry
        or its offset is not the SDI's length.
    """
    blob = info.wim_blob
    if blob is None:
        found = ", ".join(b.type for b in info.blobs) or "none"
        raise FormatError(
            info.path,
            "toc",
            f"no WIM entry (entries: {found}); an SDI for WIM boot needs a WIM entry "
            f"at offset {info.file_size} (0x{info.file_size:x}), the SDI's length",
        )
    if blob.offset != info.file_size:
        raise FormatError(
            info.path,
            f"toc[{blob.index}] (WIM)",
            f"offset {blob.offset} (0x{blob.offset:x}), expected {info.file_size} "
            f"(0x{info.file_size:x}), the SDI's length: the device looks for the WIM "
            f"right after the SDI",
        )


def build_sdi(*, part_size: int = 0x10000) -> bytes:
    """Build the project's own SDI with the structure of Microsoft's boot.sdi.

    A PART blob of ``part_size`` deterministic filler bytes at 0x2000, padded
    to a 4 KiB page, then a ``WIM`` entry of size 0 at the end of the file.
    The filler is not a file system: the result is a valid input for
    :func:`check_sdi_for_wim_boot` and for the wire protocol, not something a
    real phone would boot Windows from.
    """
    if part_size < 1:
        raise ValueError(f"part_size must be at least 1, not {part_size}")
    wim_offset = _align(PART_OFFSET + part_size, SDI_PAGE)
    toc: list[dict[str, Any]] = [
        {"type": b"PART", "offset": PART_OFFSET, "size": part_size},
        {"type": b"WIM", "offset": wim_offset, "size": 0},
    ]
    toc += [{}] * (SDI_TOC_ENTRIES - len(toc))
    head = bytearray(SDI_HEAD.build({"header": {}, "toc": toc}))
    head[0x1F8:0x200] = sdi_checksum(bytes(head[:SDI_HEADER_SIZE])).to_bytes(8, "little")
    filler = (_FILLER * (part_size // len(_FILLER) + 1))[:part_size]
    image = bytearray(wim_offset)
    image[: len(head)] = head
    image[PART_OFFSET : PART_OFFSET + part_size] = filler
    return bytes(image)


def _blobs(toc: Any, file_size: int, path: str, warnings: list[str]) -> tuple[SdiBlob, ...]:
    blobs: list[SdiBlob] = []
    for index, entry in enumerate(toc):
        if entry.type == bytes(8):
            break
        kind = _blob_type(entry.type, index, path)
        blob = SdiBlob(
            index=index,
            type=kind,
            attributes=entry.attributes,
            offset=entry.offset,
            size=entry.size,
            base_address=entry.base_address,
        )
        field = f"toc[{index}] ({kind})"
        if kind not in KNOWN_BLOB_TYPES:
            warnings.append(f"{field}: unknown blob type")
        if blob.size and blob.offset < SDI_HEAD_SIZE:
            raise FormatError(
                path,
                field,
                f"offset {blob.offset} (0x{blob.offset:x}) lies inside the SDI header "
                f"and table of contents",
            )
        if not (kind == "WIM" and blob.size == 0) and blob.end > file_size:
            raise FormatError(
                path,
                field,
                f"offset 0x{blob.offset:x} + size 0x{blob.size:x} ends at byte {blob.end}, "
                f"past the end of the {file_size}-byte file",
            )
        blobs.append(blob)
    return tuple(blobs)


def _blob_type(raw: bytes, index: int, path: str) -> str:
    text = raw.rstrip(b"\0")
    if b"\0" in text or not all(0x20 < c < 0x7F for c in text):
        raise FormatError(path, f"toc[{index}].type", f"{raw.hex(' ')} is not an ASCII blob type")
    return text.decode("ascii")


def _align(value: int, to: int) -> int:
    return -(-value // to) * to
