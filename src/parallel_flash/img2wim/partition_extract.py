"""Copy one partition of an FFU out into a sparse file.

To capture MainOS we need it as a volume image wimlib can open, but we do not
want to pay disk space for the parts of the partition the FFU leaves empty:
the temporary file is truncated to the partition size (one big hole) and only
the blocks that carry data are written into it, so its disk usage follows
the bytes the FFU carries (at most :data:`~parallel_flash.formats.ffu.MAX_WRITE_FANOUT`
times them), never the sizes its GPT claims. Finding partitions is
:mod:`parallel_flash.formats.ffu_disk`'s job.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import FormatError, InputError
from ..formats.ffu import Ffu, Store, WriteDescriptor
from ..formats.ffu_disk import StoreDisk
from ..formats.ffu_payload import scan_payload
from ..formats.gpt import Gpt, GptPartition

__all__ = ("ExtractedPartition", "extract_partition")

logger = logging.getLogger(__name__)


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
    disk: StoreDisk | None = None,
) -> ExtractedPartition:
    """Copy ``partition`` into the new sparse file ``dest`` in one verified pass over the FFU.

    Every chunk of the FFU is checked against the hash table (not only those
    holding the partition), so a corrupt FFU is refused whichever part is
    damaged.

    :raises ~parallel_flash.errors.FormatError: corrupt chunk, or a write
        descriptor pointing past the end of the disk.
    :raises ~parallel_flash.errors.InputError: ``dest`` cannot be written
        (no space, a file system that cannot hold the partition's size).
    """
    if disk is None:
        disk = StoreDisk(ffu, store, disk_size=gpt.disk_size)
    targets = _targets(ffu, store, gpt, partition, disk)
    path = Path(dest)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise InputError(
            f"{path}: cannot create the temporary MainOS image: {exc.strerror}"
        ) from None
    writer = _SparseWriter(fd, store, partition, targets)
    try:
        os.ftruncate(fd, partition.size)
        result = scan_payload(ffu, on_block=writer.on_block, progress=progress)
    except OSError as exc:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise InputError(
            f"{path}: cannot write the temporary MainOS image "
            f"({partition.size} bytes, sparse): {exc.strerror}"
        ) from None
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    logger.info(
        "extracted %s (%d bytes, %d written by the FFU, %d stored) to %s",
        partition.name, partition.size, writer.written, writer.stored, path,
    )  # fmt: skip
    return ExtractedPartition(
        path=path,
        partition=partition,
        store=store,
        size=partition.size,
        written=writer.written,
        stored=writer.stored,
        chunks_verified=result.chunks_verified,
    )


def _targets(
    ffu: Ffu, store: Store, gpt: Gpt, partition: GptPartition, disk: StoreDisk
) -> dict[int, list[int]]:
    """Per descriptor index, the disk offsets of its first block at every location
    that reaches into ``partition``; every location is checked to lie on the disk."""
    bs = store.block_size
    p0, p1 = partition.offset, partition.offset + partition.size
    targets: dict[int, list[int]] = {}
    disk.disk_size = gpt.disk_size
    for r in disk.ranges():
        if r.disk_offset < 0 or r.disk_end - bs >= gpt.disk_size:
            raise FormatError(
                ffu.path,
                f"store {store.number} write descriptor {r.descriptor} location {r.location}",
                f"block index {r.block_index} ({r.method.name}) lies outside the disk "
                f"({gpt.disk_size} bytes according to its GPT)",
            )
        if r.disk_offset < p1 and r.disk_end > p0:
            targets.setdefault(r.descriptor, []).append(r.disk_offset)
    return targets


class _SparseWriter:
    """Writes the blocks that land in the partition; all-zero pieces stay holes."""

    def __init__(
        self, fd: int, store: Store, partition: GptPartition, targets: dict[int, list[int]]
    ) -> None:
        self.fd = fd
        self.store = store
        self.p0 = partition.offset
        self.p1 = partition.offset + partition.size
        self.bs = store.block_size
        self.targets = targets
        self.zero = bytes(store.block_size)
        self.written = 0  #: bytes the FFU writes into the partition
        self.stored = 0  #: bytes actually written to the file

    def on_block(self, store: Store, desc: WriteDescriptor, k: int, data: memoryview) -> None:
        if store.number != self.store.number:
            return
        for base in self.targets.get(desc.index, ()):
            disk_off = base + k * self.bs
            lo, hi = max(disk_off, self.p0), min(disk_off + self.bs, self.p1)
            if lo >= hi:
                continue
            piece = data[lo - disk_off : hi - disk_off]
            self.written += hi - lo
            if piece == self.zero[: hi - lo]:
                continue  # the file is a hole there already
            os.pwrite(self.fd, piece, lo - self.p0)
            self.stored += hi - lo
