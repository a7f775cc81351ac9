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
from .ffu_descriptors import walk_raw
from .ffu_types import LOCATION, AccessMethod, Ffu, Store
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

    The store's descriptors are walked once (:meth:`ranges` is cached, and
    locations counted from the disk's end are resolved when ``disk_size`` is
    set); a read then costs a binary search over the ranges, not a walk.
    """

    def __init__(self, ffu: Ffu, store: Store, *, disk_size: int | None = None) -> None:
        self.ffu = ffu
        self.store = store
        self._disk_size = disk_size
        self._raw: list[tuple[int, int, int, int, int, int]] | None = None
        self._ranges: list[WriteRange] | None = None
        self._starts: list[int] = []
        self._longest = 0

    @property
    def disk_size(self) -> int | None:
        return self._disk_size

    @disk_size.setter
    def disk_size(self, size: int | None) -> None:
        if size != self._disk_size:
            self._disk_size = size
            self._ranges = None  # disk-end locations move

    def _raw_locations(self) -> list[tuple[int, int, int, int, int, int]]:
        """(method, block index, length, file offset, descriptor, location), walked once."""
        if self._raw is None:
            bs = self.store.block_size
            raw: list[tuple[int, int, int, int, int, int]] = []
            with open_regular(self.ffu.path) as f:
                for index, count, locations, file_offset in walk_raw(f, self.ffu.path, self.store):
                    for k, (method, block) in enumerate(LOCATION.iter_unpack(locations)):
                        raw.append((method, block, count * bs, file_offset, index, k))
            self._raw = raw
        return self._raw

    def ranges(self) -> list[WriteRange]:
        """Every location's range, sorted by disk offset. A location counted from the
        disk end is left out while the disk size is unknown."""
        if self._ranges is None:
            bs, size = self.store.block_size, self._disk_size
            out = []
            for method, block, length, file_offset, index, k in self._raw_locations():
                if method == AccessMethod.DISK_BEGIN:
                    start = block * bs
                elif size is not None:
                    start = size - (block + 1) * bs
                else:
                    continue
                out.append(
                    WriteRange(start, length, file_offset, index, k, AccessMethod(method), block)
                )
            out.sort(key=lambda r: r.disk_offset)
            self._ranges = out
            self._starts = [r.disk_offset for r in out]
            self._longest = max((r.length for r in out), default=0)
        return self._ranges

    def read(self, offset: int, size: int) -> bytes:
        """``size`` bytes of the disk at ``offset`` (unwritten bytes read as zeros)."""
        ranges = self.ranges()
        out = bytearray(size)
        end = offset + size
        first = bisect.bisect_left(self._starts, offset - self._longest + 1)
        last = bisect.bisect_left(self._starts, end)
        with open_regular(self.ffu.path) as f:
            # in payload order, as the device writes them: a later write of a byte wins
            for r in sorted(ranges[first:last], key=lambda r: (r.descriptor, r.location)):
                lo, hi = max(offset, r.disk_offset), min(end, r.disk_end)
                if lo < hi:
                    f.seek(r.file_offset + lo - r.disk_offset)
                    out[lo - offset : hi - offset] = f.read(hi - lo).ljust(hi - lo, b"\0")
        return bytes(out)


@dataclass(frozen=True, slots=True)
class StoreTable:
    """A store, its disk, and the partition table read from it (``gpt`` None if none)."""

    store: Store
    gpt: Gpt | None
    problem: str | None = None
    disk: StoreDisk | None = None


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
            tables.append(StoreTable(store, None, problem, disk))
            continue
        source = f"{ffu.path} (store {store.number})"
        gpt = parse_gpt(disk.read, store.sector_size, source=source)
        disk.disk_size = gpt.disk_size
        tables.append(StoreTable(store, gpt, None, disk))
    return tables


def find_partition(tables: list[StoreTable], name: str) -> tuple[Store, Gpt, GptPartition] | None:
    """The first partition called ``name`` in store order."""
    for table in tables:
        if table.gpt is not None:
            part = table.gpt.find(name)
            if part is not None:
                return table.store, table.gpt, part
    return None


def written_bytes(
    ffu: Ffu, store: Store, gpt: Gpt, *, disk: StoreDisk | None = None
) -> dict[int, int]:
    """Bytes the FFU writes into each partition (by entry index), from the descriptors alone.

    The ranges are merged first, so a byte written twice counts once and each
    partition costs a binary search, not a walk over the ranges.
    """
    if disk is None:
        disk = StoreDisk(ffu, store, disk_size=gpt.disk_size)
    merged = _merge(disk.ranges())
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
    disk: StoreDisk


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
    disk = next((t.disk for t in tables if t.store is store and t.disk is not None), None)
    if disk is None:
        disk = StoreDisk(ffu, store, disk_size=gpt.disk_size)
    _check_ntfs(ffu, disk, partition)
    return MainOs(store, gpt, partition, disk)


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
