"""FFU write descriptors: one bounded, linear walk over a store's descriptor region.

Each descriptor names payload blocks and the disk locations they are written
at (formats.md "FFU"). The walk is the one place the counts in a descriptor
are believed, so it checks them against the file first: the blocks named may
not exceed what the file holds, the writes not :data:`.MAX_WRITE_FANOUT`
times that, and locations are decoded only once they are known to fit.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

from ..errors import FormatError
from ._files import open_regular
from .ffu_types import (
    DESCRIPTOR_HEAD,
    LOCATION,
    MAX_WRITE_FANOUT,
    AccessMethod,
    DiskLocation,
    Ffu,
    Store,
    WriteDescriptor,
)

__all__ = ("RawDescriptor", "count_blocks", "iter_descriptors", "walk_descriptors", "walk_raw")

#: Descriptors are read from the file in pieces of this size.
_DESCRIPTOR_READ = 1 << 20


#: (index, block count, the locations' raw bytes, file offset of its first block)
RawDescriptor = tuple[int, int, bytes, int]
_ONE_LOCATION_METHODS = (b"\0\0\0\0", b"\2\0\0\0")


def iter_descriptors(ffu: Ffu, store: Store) -> Iterator[WriteDescriptor]:
    """The store's write descriptors, read from the file as they are consumed."""
    with open_regular(ffu.path) as f:
        yield from walk_descriptors(f, ffu.path, store)


def walk_descriptors(f: BinaryIO, name: str, store: Store) -> Iterator[WriteDescriptor]:
    """Decode WRITE_DESCRIPTOR records with ``struct`` (construct takes ~25 us per record,
    which is seconds for a large image); tests check both decoders agree."""
    for index, block_count, raw, file_offset in walk_raw(f, name, store):
        locations = tuple(
            DiskLocation(AccessMethod(method), block_index)
            for method, block_index in LOCATION.iter_unpack(raw)
        )
        yield WriteDescriptor(index, block_count, locations, file_offset)


def count_blocks(f: BinaryIO, name: str, store: Store) -> int:
    """Payload blocks the store's descriptors name (checking every descriptor)."""
    return sum(block_count for _, block_count, _, _ in walk_raw(f, name, store))


def walk_raw(f: BinaryIO, name: str, store: Store) -> Iterator[RawDescriptor]:
    """The descriptors as raw records, checked, with no per-location objects.

    Bounded by the file: the blocks named may not exceed ``store.payload_blocks``
    (what the file holds), nor the writes :data:`MAX_WRITE_FANOUT` times that;
    both are checked before a descriptor's locations are read.
    """
    region = _Region(f, store)
    blocks_left = store.payload_blocks
    writes_left = MAX_WRITE_FANOUT * store.payload_blocks
    file_offset = store.payload_offset
    unpack_head = DESCRIPTOR_HEAD.unpack_from
    buf, pos = b"", 0
    for index in range(store.descriptor_count):
        if len(buf) - pos < 8:
            buf, pos = region.refill(buf, pos, 8)
            if len(buf) - pos < 8:
                raise FormatError(
                    name,
                    _what(store, index),
                    "runs past the write descriptor region (write_descriptor_length)",
                )
        loc_count, block_count = unpack_head(buf, pos)
        if block_count == 0 or loc_count == 0 or block_count > blocks_left:
            _refuse_counts(name, store, index, loc_count, block_count, blocks_left)
        if loc_count * block_count > writes_left:
            raise FormatError(
                name,
                f"{_what(store, index)}.location_count",
                f"{loc_count} locations x {block_count} blocks would write more than "
                f"{MAX_WRITE_FANOUT} times the blocks the file carries",
            )
        need = 8 + 8 * loc_count
        if len(buf) - pos < need:
            buf, pos = region.refill(buf, pos, need)
            if len(buf) - pos < need:
                raise FormatError(
                    name,
                    _what(store, index),
                    f"has {loc_count} locations, which run past the write descriptor region",
                )
        raw = buf[pos + 8 : pos + need]
        if loc_count > 1 or raw[:4] not in _ONE_LOCATION_METHODS:
            _check_methods(raw, name, _what(store, index))
        yield index, block_count, raw, file_offset
        pos += need
        region.consumed += need
        blocks_left -= block_count
        writes_left -= loc_count * block_count
        file_offset += block_count * store.block_size
    if region.consumed != store.descriptor_length:
        raise FormatError(
            name,
            f"store {store.number} header.write_descriptor_length",
            f"is {store.descriptor_length} but the {store.descriptor_count} descriptors take "
            f"{region.consumed} bytes",
        )


def _what(store: Store, index: int) -> str:
    return f"store {store.number} write descriptor {index}"


def _refuse_counts(
    name: str, store: Store, index: int, loc_count: int, block_count: int, blocks_left: int
) -> None:
    what = _what(store, index)
    if block_count == 0 or loc_count == 0:
        raise FormatError(name, what, f"writes {block_count} blocks at {loc_count} locations")
    raise FormatError(
        name,
        f"{what}.block_count",
        f"{block_count} blocks of {store.block_size} bytes run past the end of the file "
        f"(it holds {blocks_left} more): the file is truncated or the count is wrong",
    )


def _check_methods(raw: bytes, name: str, what: str) -> None:
    values = struct.unpack(f"<{len(raw) // 4}I", raw)
    if set(values[0::2]) <= {AccessMethod.DISK_BEGIN, AccessMethod.DISK_END}:
        return
    for k, method in enumerate(values[0::2]):
        if method not in (AccessMethod.DISK_BEGIN, AccessMethod.DISK_END):
            raise FormatError(
                name,
                f"{what} location {k}.access_method",
                f"{method} is not 0 (from disk start) or 2 (from disk end)",
            )


class _Region:
    """Sequential reads from a store's descriptor region, never past its end."""

    def __init__(self, f: BinaryIO, store: Store) -> None:
        self.f = f
        self.next_read = store.descriptor_offset
        self.remaining = store.descriptor_length
        self.consumed = 0

    def refill(self, buf: bytes, pos: int, need: int) -> tuple[bytes, int]:
        """``buf[pos:]`` plus enough of the region to hold ``need`` bytes, if it has them."""
        short = need - (len(buf) - pos)
        if short > self.remaining:
            return buf[pos:], 0
        want = min(max(_DESCRIPTOR_READ, short), self.remaining)
        self.f.seek(self.next_read)
        more = self.f.read(want)
        self.next_read += len(more)
        self.remaining -= len(more)
        return buf[pos:] + more, 0
