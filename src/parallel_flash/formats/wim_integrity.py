"""A WIM's integrity table: re-hash the file and compare (``info --verify-integrity``).

The table holds one SHA-1 per chunk of bytes [208, end of blob table)
(formats.md "Integrity table"; wimlib integrity.c). Its own header is checked
against the resource header and the bytes it covers before the table is read,
so a hostile table cannot make us read or hash more than the file holds.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import BinaryIO

from construct import Int32ul, Struct

from ..errors import FormatError
from ._files import open_regular
from .wim import WIM_HEADER_SIZE, read_wim_info

__all__ = ("INTEGRITY_TABLE_HEADER", "verify_integrity")

logger = logging.getLogger(__name__)

#: Smaller integrity chunks would make verifying a hostile table cost one hash per
#: few bytes; real tables use 10 MiB.
_MIN_INTEGRITY_CHUNK = 4096
_READ_BLOCK = 1 << 20

# formats.md "Integrity table": followed by entry_count SHA-1 digests.
INTEGRITY_TABLE_HEADER = Struct(
    "size"        / Int32ul * "bytes of the whole table, 12 + 20 * entry_count",
    "entry_count" / Int32ul * "SHA-1 digests that follow",
    "chunk_size"  / Int32ul * "bytes hashed per digest (wimlib: 10 MiB)",
)  # fmt: skip


def verify_integrity(path: str | os.PathLike[str]) -> None:
    """Re-hash the WIM and compare against its integrity table.

    The table holds one SHA-1 per chunk of bytes [208, end of blob table)
    (formats.md "Integrity table"; wimlib integrity.c).

    :raises ~parallel_flash.errors.FormatError: naming the chunk and its byte
        range on a mismatch, or when the table is absent or malformed.
    """
    name = os.fspath(path)
    info = read_wim_info(name)
    table = info.integrity_table
    if not table.present:
        raise FormatError(
            name,
            "integrity_table",
            "absent, nothing to verify (wimlib-imagex optimize --check adds one)",
        )
    if table.compressed:
        raise FormatError(name, "integrity_table", "compressed; an integrity table never is")
    if table.size_in_wim < INTEGRITY_TABLE_HEADER.sizeof():
        raise FormatError(
            name, "integrity_table", f"{table.size_in_wim} bytes, too small for its own header"
        )
    checked_end = info.blob_table.end
    checked = checked_end - WIM_HEADER_SIZE
    try:
        with open_regular(name) as f:
            # The 12-byte header first: its sizes are checked against the
            # resource header and the bytes it covers before the table is read.
            f.seek(table.offset)
            head = f.read(INTEGRITY_TABLE_HEADER.sizeof())
            chunk_size = _check_integrity_header(head, table.size_in_wim, checked, name)
            raw_table = head + f.read(table.size_in_wim - len(head))
            digests = _integrity_digests(raw_table, table.size_in_wim, checked, name)
            f.seek(WIM_HEADER_SIZE)
            for index, expected in enumerate(digests):
                start = WIM_HEADER_SIZE + index * chunk_size
                length = min(chunk_size, checked_end - start)
                actual = _sha1_of(f, length)
                if actual != expected:
                    raise FormatError(
                        name,
                        "integrity_table",
                        f"chunk {index} of {len(digests)} (bytes {start}..{start + length}) "
                        f"has SHA-1 {actual.hex()}, the table says {expected.hex()}: "
                        f"the file is damaged",
                    )
    except OSError as exc:
        raise FormatError(name, "file", f"cannot be read: {exc.strerror or exc}") from None
    logger.info("%s: integrity table verified, %d chunks", name, len(digests))


def _check_integrity_header(raw: bytes, size_in_wim: int, checked: int, path: str) -> int:
    """Validate the integrity table's own header, as wimlib does; return its chunk size."""
    if len(raw) < INTEGRITY_TABLE_HEADER.sizeof():
        raise FormatError(path, "integrity_table", "truncated: the file ends inside it")
    head = INTEGRITY_TABLE_HEADER.parse(raw)
    if head.size != size_in_wim:
        raise FormatError(
            path,
            "integrity_table",
            f"says it is {head.size} bytes, its resource header says {size_in_wim}",
        )
    if head.size != 12 + 20 * head.entry_count:
        raise FormatError(
            path,
            "integrity_table",
            f"{head.size} bytes cannot hold {head.entry_count} entries "
            f"(expected {12 + 20 * head.entry_count})",
        )
    if head.chunk_size < _MIN_INTEGRITY_CHUNK:
        raise FormatError(
            path,
            "integrity_table",
            f"chunk size {head.chunk_size} is below {_MIN_INTEGRITY_CHUNK} bytes "
            "(wimlib writes 10 MiB chunks)",
        )
    expected = -(-checked // head.chunk_size)
    if head.entry_count != expected:
        raise FormatError(
            path,
            "integrity_table",
            f"{head.entry_count} entries, but {checked} bytes from the header to the end "
            f"of the blob table need {expected} with a chunk size of {head.chunk_size}",
        )
    return int(head.chunk_size)


def _integrity_digests(raw_table: bytes, size_in_wim: int, checked: int, path: str) -> list[bytes]:
    """Split a table whose header :func:`_check_integrity_header` accepted."""
    if len(raw_table) < size_in_wim:
        raise FormatError(path, "integrity_table", "truncated: the file ends inside it")
    count = (size_in_wim - 12) // 20
    return [raw_table[12 + 20 * i : 32 + 20 * i] for i in range(count)]


def _sha1_of(f: BinaryIO, length: int) -> bytes:
    digest = hashlib.sha1(usedforsecurity=False)
    remaining = length
    while remaining:
        block = f.read(min(remaining, _READ_BLOCK))
        if not block:
            raise OSError("the file ended early")
        digest.update(block)
        remaining -= len(block)
    return digest.digest()
