"""FFU write descriptors: one bounded, linear walk over a store's descriptor region.

Each descriptor names payload blocks and the disk locations they are written
at (formats.md "FFU"). The walk is the one place the counts in a descriptor
are believed, so it checks them against the file first: the blocks named may
not exceed what the file holds, the writes not :data:`.MAX_WRITE_FANOUT`
times that, and locations are decoded only once they are known to fit.
"""

from __future__ import annotations

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

__all__ = ("iter_descriptors", "walk_descriptors")

#: Descriptors are read from the file in pieces of this size.
_DESCRIPTOR_READ = 1 << 20


def iter_descriptors(ffu: Ffu, store: Store) -> Iterator[WriteDescriptor]:
    """The store's write descriptors, read from the file as they are consumed."""
    with open_regular(ffu.path) as f:
        yield from walk_descriptors(f, ffu.path, store)


def walk_descriptors(f: BinaryIO, name: str, store: Store) -> Iterator[WriteDescriptor]:
    """Decode WRITE_DESCRIPTOR records with ``struct`` (construct takes ~25 us per record,
    which is seconds for a large image); tests check both decoders agree.

    Bounded by the file: the blocks named may not exceed ``store.payload_blocks``
    (what the file holds), nor the writes :data:`MAX_WRITE_FANOUT` times that,
    and each check comes before the locations are decoded.
    """
    window = _DescriptorWindow(f, store)
    budget = _WriteBudget(name, store)
    file_offset = store.payload_offset
    for index in range(store.descriptor_count):
        what = f"store {store.number} write descriptor {index}"
        head = window.take(8)
        if head is None:
            raise FormatError(
                name, what, "runs past the write descriptor region (write_descriptor_length)"
            )
        loc_count, block_count = DESCRIPTOR_HEAD.unpack(head)
        if block_count == 0 or loc_count == 0:
            raise FormatError(name, what, f"writes {block_count} blocks at {loc_count} locations")
        budget.spend(what, loc_count, block_count)
        raw = window.take(8 * loc_count)
        if raw is None:
            raise FormatError(
                name, what, f"has {loc_count} locations, which run past the write descriptor region"
            )
        yield WriteDescriptor(index, block_count, _locations(raw, name, what), file_offset)
        file_offset += block_count * store.block_size
    if window.consumed != store.descriptor_length:
        raise FormatError(
            name,
            f"store {store.number} header.write_descriptor_length",
            f"is {store.descriptor_length} but the {store.descriptor_count} descriptors take "
            f"{window.consumed} bytes",
        )


def _locations(raw: bytes, name: str, what: str) -> tuple[DiskLocation, ...]:
    locations = []
    for k, (method, block_index) in enumerate(LOCATION.iter_unpack(raw)):
        if method == AccessMethod.DISK_BEGIN:
            locations.append(DiskLocation(AccessMethod.DISK_BEGIN, block_index))
        elif method == AccessMethod.DISK_END:
            locations.append(DiskLocation(AccessMethod.DISK_END, block_index))
        else:
            raise FormatError(
                name,
                f"{what} location {k}.access_method",
                f"{method} is not 0 (from disk start) or 2 (from disk end)",
            )
    return tuple(locations)


class _WriteBudget:
    """Blocks and block writes a store's descriptors may name, from what the file holds."""

    def __init__(self, name: str, store: Store) -> None:
        self.name = name
        self.blocks_left = store.payload_blocks
        self.writes_left = MAX_WRITE_FANOUT * store.payload_blocks
        self.block_size = store.block_size

    def spend(self, what: str, loc_count: int, block_count: int) -> None:
        if block_count > self.blocks_left:
            raise FormatError(
                self.name,
                f"{what}.block_count",
                f"{block_count} blocks of {self.block_size} bytes run past the end of the file "
                f"(it holds {self.blocks_left} more): the file is truncated or the count is wrong",
            )
        if loc_count * block_count > self.writes_left:
            raise FormatError(
                self.name,
                f"{what}.location_count",
                f"{loc_count} locations x {block_count} blocks would write more than "
                f"{MAX_WRITE_FANOUT} times the blocks the file carries",
            )
        self.blocks_left -= block_count
        self.writes_left -= loc_count * block_count


class _DescriptorWindow:
    """Sequential reads from a store's descriptor region, never past its end."""

    def __init__(self, f: BinaryIO, store: Store) -> None:
        self.f = f
        self.next_read = store.descriptor_offset
        self.remaining = store.descriptor_length
        self.buf = b""
        self.pos = 0
        self.consumed = 0

    def take(self, size: int) -> bytes | None:
        """The next ``size`` bytes, or None when the region ends first."""
        if len(self.buf) - self.pos < size:
            if size - (len(self.buf) - self.pos) > self.remaining:
                return None
            want = min(max(_DESCRIPTOR_READ, size), self.remaining)
            self.f.seek(self.next_read)
            more = self.f.read(want)
            if len(more) != want:
                return None
            self.next_read += want
            self.remaining -= want
            self.buf = self.buf[self.pos :] + more
            self.pos = 0
        data = self.buf[self.pos : self.pos + size]
        self.pos += size
        self.consumed += size
        return data
