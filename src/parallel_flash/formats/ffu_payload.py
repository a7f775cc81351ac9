"""The FFU payload pass: the file read once, every chunk hashed before its blocks are used.

:func:`scan_payload` reads the file front to back in :data:`READ_SIZE` pieces
(memory stays flat whatever the FFU's size), checks each chunk against the
hash table *before* handing its blocks on, and walks (store, descriptor,
block) alongside the bytes so a consumer sees every block in payload order.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from ..errors import FormatError
from ._files import open_regular
from .ffu_descriptors import iter_descriptors
from .ffu_types import Ffu, Store, WriteDescriptor

__all__ = ("READ_SIZE", "BlockSink", "ProgressSink", "ScanResult", "scan_payload")

#: Bytes read per step of the payload pass: big enough for sequential-read
#: throughput, small enough to keep memory flat. Rounded up to a multiple of
#: the chunk and block sizes so chunks never straddle two reads.
READ_SIZE = 4 << 20


@dataclass(frozen=True, slots=True)
class ScanResult:
    chunks_verified: int
    bytes_read: int
    blocks: int


def _align(value: int, to: int) -> int:
    return -(-value // to) * to


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
    with open_regular(ffu.path) as f, open_regular(ffu.path) as table:
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
