"""Partitions inside an FFU: find them, and copy one out into a sparse file.

An FFU describes a disk as blocks written at locations (formats.md "FFU");
blocks no descriptor names are never written. To capture MainOS we need it
as a volume image wimlib can open, but we do not want to pay disk space for
the parts of the partition the FFU leaves empty: the temporary file is
truncated to the partition size (one big hole) and only the blocks that carry
data are written into it, so its disk usage follows the written blocks.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import FormatError
from .formats.ffu import (
    AccessMethod,
    Ffu,
    Store,
    WriteDescriptor,
    iter_descriptors,
    scan_payload,
)
from .formats.gpt import Gpt, GptPartition, parse_gpt

__all__ = (
    "ExtractedPartition",
    "StoreDisk",
    "StoreTable",
    "extract_partition",
    "find_partition",
    "read_partition_tables",
    "written_bytes",
)

logger = logging.getLogger(__name__)


class StoreDisk:
    """Random access to the disk a store describes, for small reads like the GPT.

    Each read walks the store's write descriptors, so this is for a few
    sectors, not for copying partitions (use :func:`extract_partition`).
    """

    def __init__(self, ffu: Ffu, store: Store, *, disk_size: int | None = None) -> None:
        self.ffu = ffu
        self.store = store
        self.disk_size = disk_size

    def block_ranges(self, desc: WriteDescriptor) -> Iterator[tuple[int, int]]:
        """(disk offset, payload block number in ``desc``) of every block ``desc`` writes.

        A location addressed from the disk end is skipped while the disk size is unknown.
        """
        bs = self.store.block_size
        for loc in desc.locations:
            if loc.method == AccessMethod.DISK_BEGIN:
                base = loc.block_index * bs
            elif self.disk_size is not None:
                base = self.disk_size - (loc.block_index + 1) * bs
            else:
                continue
            for k in range(desc.block_count):
                yield base + k * bs, k

    def read(self, offset: int, size: int) -> bytes:
        out = bytearray(size)
        bs = self.store.block_size
        with open(self.ffu.path, "rb") as f:
            for desc in iter_descriptors(self.ffu, self.store):
                for disk_off, k in self.block_ranges(desc):
                    lo, hi = max(offset, disk_off), min(offset + size, disk_off + bs)
                    if lo >= hi:
                        continue
                    f.seek(desc.file_offset + k * bs + lo - disk_off)
                    out[lo - offset : hi - offset] = f.read(hi - lo)
        return bytes(out)


@dataclass(frozen=True, slots=True)
class StoreTable:
    """A store and the partition table read from its blocks (``gpt`` None if it has none)."""

    store: Store
    gpt: Gpt | None
    problem: str | None = None


def read_partition_tables(ffu: Ffu) -> list[StoreTable]:
    """Read the GPT of every store. A store without one is reported, not an error:
    secondary stores (other LUNs) often hold raw data."""
    tables: list[StoreTable] = []
    for store in ffu.stores:
        disk = StoreDisk(ffu, store)
        source = f"{ffu.path} (store {store.number})"
        try:
            gpt = parse_gpt(disk.read, store.sector_size, source=source)
        except FormatError as exc:
            tables.append(StoreTable(store, None, f"{exc.field}: {exc.problem}"))
            continue
        tables.append(StoreTable(store, gpt))
    return tables


def find_partition(tables: list[StoreTable], name: str) -> tuple[Store, Gpt, GptPartition] | None:
    """The first partition called ``name`` in store order."""
    for table in tables:
        if table.gpt is not None:
            part = table.gpt.find(name)
            if part is not None:
                return table.store, table.gpt, part
    return None


def written_bytes(ffu: Ffu, store: Store, gpt: Gpt) -> dict[int, int]:
    """Bytes the FFU writes into each partition (by entry index), from the descriptors alone."""
    disk = StoreDisk(ffu, store, disk_size=gpt.disk_size)
    bs = store.block_size
    totals = {p.index: 0 for p in gpt.partitions}
    for desc in iter_descriptors(ffu, store):
        for disk_off, _k in disk.block_ranges(desc):
            for p in gpt.partitions:
                lo, hi = max(disk_off, p.offset), min(disk_off + bs, p.offset + p.size)
                if lo < hi:
                    totals[p.index] += hi - lo
    return totals


@dataclass(frozen=True, slots=True, kw_only=True)
class ExtractedPartition:
    path: Path
    partition: GptPartition
    store: Store
    size: int  #: the partition's size (the file's apparent size)
    written: int  #: bytes the FFU writes into the partition
    stored: int  #: bytes actually written to the file (all-zero blocks are left as holes)
    chunks_verified: int

    @property
    def allocated(self) -> int:
        """Disk space the sparse file uses."""
        return os.stat(self.path).st_blocks * 512


def extract_partition(
    ffu: Ffu,
    store: Store,
    gpt: Gpt,
    partition: GptPartition,
    dest: str | os.PathLike[str],
    *,
    progress: Callable[[int, int], None] | None = None,
) -> ExtractedPartition:
    """Copy ``partition`` into the new sparse file ``dest`` in one verified pass over the FFU.

    Every chunk of the FFU is checked against the hash table (not only those
    holding the partition), so a corrupt FFU is refused whichever part is
    damaged.

    :raises ~parallel_flash.errors.FormatError: corrupt chunk, or a write
        descriptor pointing past the end of the disk.
    """
    bs = store.block_size
    p0, p1 = partition.offset, partition.offset + partition.size
    zero = bytes(bs)
    counts = {"written": 0, "stored": 0}
    path = Path(dest)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, partition.size)

        def on_block(blk_store: Store, desc: WriteDescriptor, k: int, data: memoryview) -> None:
            if blk_store is not store:
                return
            for loc_index, loc in enumerate(desc.locations):
                if loc.method == AccessMethod.DISK_BEGIN:
                    disk_off = (loc.block_index + k) * bs
                else:
                    disk_off = gpt.disk_size - (loc.block_index + 1) * bs + k * bs
                if disk_off < 0 or disk_off >= gpt.disk_size:
                    raise FormatError(
                        ffu.path,
                        f"store {store.number} write descriptor {desc.index} location {loc_index}",
                        f"block index {loc.block_index} ({loc.method.name}) lies outside the disk "
                        f"({gpt.disk_size} bytes according to its GPT)",
                    )
                lo, hi = max(disk_off, p0), min(disk_off + bs, p1)
                if lo >= hi:
                    continue
                piece = data[lo - disk_off : hi - disk_off]
                counts["written"] += hi - lo
                if piece.tobytes() == zero[: hi - lo]:
                    continue  # the file is a hole there already
                os.pwrite(fd, piece, lo - p0)
                counts["stored"] += hi - lo

        result = scan_payload(ffu, on_block=on_block, progress=progress)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    logger.info(
        "extracted %s (%d bytes, %d written by the FFU, %d stored) to %s",
        partition.name,
        partition.size,
        counts["written"],
        counts["stored"],
        path,
    )
    return ExtractedPartition(
        path=path,
        partition=partition,
        store=store,
        size=partition.size,
        written=counts["written"],
        stored=counts["stored"],
        chunks_verified=result.chunks_verified,
    )
