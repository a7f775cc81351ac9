"""The disk a store describes: where its blocks land, its GPT, and the MainOS ImgToWIM wants.

An FFU describes a disk as blocks written at locations (formats.md "FFU");
blocks no descriptor names are never written. Everything here works on
*ranges* (one per descriptor location: a run of consecutive blocks), never
per block, so the work is linear in the descriptors the file holds whatever
sizes its GPT claims.

:func:`find_mainos` is the one statement of what ImgToWIM requires of an
FFU; ``img2wim`` refuses with its message and ``info`` shows the same one.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass

from ..errors import FormatError
from ._files import open_regular
from .ffu_descriptors import iter_descriptors
from .ffu_types import AccessMethod, Ffu, Store
from .gpt import GPT_SIGNATURE, Gpt, GptPartition, parse_gpt

__all__ = (
    "REQUIRED_PARTITIONS",
    "MainOs",
    "StoreDisk",
    "StoreTable",
    "WriteRange",
    "find_mainos",
    "find_partition",
    "read_partition_tables",
    "written_bytes",
)

#: ImgToWIM refuses an FFU without these (no EFIESP: it is not a phone image).
REQUIRED_PARTITIONS = ("EFIESP", "MainOS")


@dataclass(frozen=True, slots=True)
class WriteRange:
    """Consecutive payload blocks written at one disk location."""

    disk_offset: int
    length: int
    file_offset: int  #: where the first of these bytes is in the FFU
    descriptor: int  #: index of the write descriptor
    location: int  #: index of the location within it
    method: AccessMethod
    block_index: int

    @property
    def disk_end(self) -> int:
        return self.disk_offset + self.length


class StoreDisk:
    """Random access to the disk a store describes, for small reads like the GPT.

    The store's descriptors are walked once into :meth:`ranges`; a read then
    costs one pass over the ranges, not over blocks.
    """

    def __init__(self, ffu: Ffu, store: Store, *, disk_size: int | None = None) -> None:
        self.ffu = ffu
        self.store = store
        self.disk_size = disk_size
        self._ranges: list[WriteRange] | None = None

    def ranges(self) -> list[WriteRange]:
        """Every location's range, in descriptor order. A location counted from the
        disk end is left out while the disk size is unknown."""
        if self._ranges is None:
            self._ranges = list(self._walk())
        return self._ranges

    def _walk(self) -> list[WriteRange]:
        bs = self.store.block_size
        out: list[WriteRange] = []
        for desc in iter_descriptors(self.ffu, self.store):
            length = desc.block_count * bs
            for k, loc in enumerate(desc.locations):
                if loc.method == AccessMethod.DISK_BEGIN:
                    start = loc.block_index * bs
                elif self.disk_size is not None:
                    start = self.disk_size - (loc.block_index + 1) * bs
                else:
                    continue
                out.append(
                    WriteRange(start, length, desc.file_offset, desc.index, k, loc.method,
                               loc.block_index)
                )  # fmt: skip
        return out

    def read(self, offset: int, size: int) -> bytes:
        """``size`` bytes of the disk at ``offset`` (unwritten bytes read as zeros)."""
        out = bytearray(size)
        end = offset + size
        with open_regular(self.ffu.path) as f:
            for r in self.ranges():
                lo, hi = max(offset, r.disk_offset), min(end, r.disk_end)
                if lo < hi:
                    f.seek(r.file_offset + lo - r.disk_offset)
                    out[lo - offset : hi - offset] = f.read(hi - lo).ljust(hi - lo, b"\0")
        return bytes(out)


@dataclass(frozen=True, slots=True)
class StoreTable:
    """A store and the partition table read from its blocks (``gpt`` None if it has none)."""

    store: Store
    gpt: Gpt | None
    problem: str | None = None


def read_partition_tables(ffu: Ffu) -> list[StoreTable]:
    """Read the GPT of every store.

    A store without a GPT signature is reported, not an error: secondary
    stores (other LUNs) often hold raw data. A GPT that is there but damaged
    (bad CRC, entries off the disk, a size no disk has) is an error.

    :raises ~parallel_flash.errors.FormatError: naming the store and the GPT field.
    """
    tables: list[StoreTable] = []
    for store in ffu.stores:
        disk = StoreDisk(ffu, store)
        lba1 = disk.read(store.sector_size, len(GPT_SIGNATURE))
        if lba1 != GPT_SIGNATURE:
            problem = f"no GPT: no 'EFI PART' signature at LBA 1 (sector size {store.sector_size})"
            tables.append(StoreTable(store, None, problem))
            continue
        source = f"{ffu.path} (store {store.number})"
        tables.append(StoreTable(store, parse_gpt(disk.read, store.sector_size, source=source)))
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
    """Bytes the FFU writes into each partition (by entry index), from the descriptors alone.

    The ranges are merged first, so a byte written twice counts once and each
    partition costs a binary search, not a walk over the ranges.
    """
    merged = _merge(StoreDisk(ffu, store, disk_size=gpt.disk_size).ranges())
    starts = [start for start, _ in merged]
    before = [0, *itertools.accumulate(end - start for start, end in merged)]
    totals: dict[int, int] = {}
    for p in gpt.partitions:
        lo, hi = p.offset, p.offset + p.size
        first = max(bisect.bisect_right(starts, lo) - 1, 0)
        last = bisect.bisect_left(starts, hi)  # ranges [first, last) may overlap
        if first >= last:
            totals[p.index] = 0
            continue
        total = before[last] - before[first]
        total -= max(0, min(lo, merged[first][1]) - merged[first][0])  # head before lo
        total -= max(0, merged[last - 1][1] - max(hi, merged[last - 1][0]))  # tail after hi
        totals[p.index] = max(total, 0)
    return totals


def _merge(ranges: list[WriteRange]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted((r.disk_offset, r.disk_end) for r in ranges):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


@dataclass(frozen=True, slots=True)
class MainOs:
    """The partition ImgToWIM captures, with the store and GPT it lives in."""

    store: Store
    gpt: Gpt
    partition: GptPartition


def find_mainos(ffu: Ffu, tables: list[StoreTable]) -> MainOs:
    """What ImgToWIM requires: EFIESP and MainOS partitions, and an NTFS MainOS.

    :raises ~parallel_flash.errors.FormatError: the one message both
        ``img2wim`` (refusing) and ``info`` (noting it) show.
    """
    found = {name: find_partition(tables, name) for name in REQUIRED_PARTITIONS}
    for name, hit in found.items():
        if hit is None:
            raise FormatError(
                ffu.path,
                "partition table",
                f"no {name} partition: only FFUs with EFIESP and MainOS partitions can be "
                f"converted (found: {_partition_names(tables)})",
            )
    main = found["MainOS"]
    assert main is not None
    store, gpt, partition = main
    _check_ntfs(ffu, StoreDisk(ffu, store, disk_size=gpt.disk_size), partition)
    return MainOs(store, gpt, partition)


def _partition_names(tables: list[StoreTable]) -> str:
    names = [p.name for t in tables if t.gpt is not None for p in t.gpt.partitions]
    if names:
        return ", ".join(names)
    return "; ".join(f"store {t.store.number}: {t.problem}" for t in tables) or "no stores"


def _check_ntfs(ffu: Ffu, disk: StoreDisk, part: GptPartition) -> None:
    """Refuse a MainOS that is not NTFS before spending a pass over the file on it."""
    boot = disk.read(part.offset, 512)
    if boot[3:11] == b"NTFS    ":
        return
    if not any(boot):
        what = "its first sector is empty (no file system)"
    elif boot[0x52:0x5A].startswith(b"FAT32") or boot[0x36:0x3E].startswith(b"FAT"):
        what = "it holds a FAT file system"
    else:
        what = f"its boot sector has OEM id {boot[3:11].hex(' ')}"
    raise FormatError(
        ffu.path,
        "MainOS partition",
        f"is not NTFS ({what}); ImgToWIM can only capture an NTFS MainOS",
    )
