"""Write FFU images from raw disk images: for the tests, the demo and the benchmark.

Real FFUs come signed from Microsoft's imaging tools; these are the same
layout (formats.md "FFU") with an unsigned placeholder catalog, so only the
hash table protects them -- which is all :mod:`parallel_flash.formats.ffu`
checks anyway. Like Microsoft's tools, only blocks holding data are written
(all-zero blocks are left out and stay unwritten on the device), and the disk's
last block (the backup GPT) is addressed from the disk end (access method 2).

Several stores (v2 only) are several device disks, e.g. the LUNs of a UFS
part: all store headers come first, then the payloads in store order.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import struct
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from ..errors import InputError
from ..formats.ffu import (
    HASH_ALG_SHA256,
    IMAGE_HEADER,
    SECURITY_HEADER,
    STORE_HEADER,
    VALIDATION_ENTRY,
    AccessMethod,
)
from ..formats.gpt import parse_gpt

__all__ = ("PLACEHOLDER_CATALOG", "FfuWriteResult", "StoreSource", "write_ffu")

logger = logging.getLogger(__name__)

#: DER for SEQUENCE { OID 1.2.840.113549.1.7.2 (PKCS#7 signedData) } with no
#: content: shaped like the start of a catalog, signed by nobody.
PLACEHOLDER_CATALOG = bytes.fromhex("300b06092a864886f70d010702")
DEFAULT_PLATFORM = "ParallelFlash.Demo.Platform"
_READ = 4 << 20


@dataclass(frozen=True, slots=True)
class StoreSource:
    """One device disk to put in the FFU."""

    image: Path
    device_path: str = ""  #: v2 only, e.g. "VenHw(860845C1-BE09-4355-8BC1-30D64FF8E63A)"
    sector_size: int = 512
    #: (sector index, offset in the sector, bytes) the device must hold before flashing
    validation: tuple[tuple[int, int, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class FfuWriteResult:
    path: Path
    version: int
    file_size: int
    blocks_per_store: tuple[int, ...]  #: payload blocks written for each store
    block_size: int
    chunk_size: int


@dataclass(slots=True)
class _Plan:
    source: StoreSource
    disk_size: int
    runs: list[tuple[int, int]]  # (first disk block, block count), file order
    end_blocks: set[int]  # disk blocks addressed from the disk end
    header: bytes = b""

    @property
    def blocks(self) -> int:
        return sum(count for _, count in self.runs)


def write_ffu(
    sources: Sequence[str | os.PathLike[str] | StoreSource],
    ffu_path: str | os.PathLike[str],
    *,
    version: Literal[1, 2] = 2,
    chunk_size: int = 128 << 10,
    block_size: int = 128 << 10,
    platform_id: str = DEFAULT_PLATFORM,
    max_run_blocks: int = 1,
) -> FfuWriteResult:
    """Write ``sources`` (raw disk images) as an FFU at ``ffu_path``.

    :param version: 1 (one store only) or 2.
    :param max_run_blocks: consecutive data blocks one write descriptor may
        cover; Microsoft's tools use 1.
    """
    stores = [s if isinstance(s, StoreSource) else StoreSource(Path(s)) for s in sources]
    if not stores:
        raise ValueError("no store to write")
    if version == 1 and len(stores) != 1:
        raise ValueError("a v1 FFU holds exactly one store")
    if chunk_size % 1024 or block_size % 512:
        raise ValueError("chunk size must be whole KiB, block size whole sectors")
    plans = [_plan(s, block_size, max_run_blocks) for s in stores]
    manifest = _manifest(plans, version, platform_id).encode("ascii")
    for i, plan in enumerate(plans):
        plan.header = _store_header(plan, i, len(plans), version, block_size, platform_id)

    # Where everything goes: the security region's size depends on the hash
    # table's, which depends on the file size; iterate to the fixed point.
    chunks = 1
    while True:
        sec_size = _align(32 + len(PLACEHOLDER_CATALOG) + 32 * chunks, chunk_size)
        image_end = _align(sec_size + 24 + len(manifest), chunk_size)
        pos = image_end
        for plan in plans:
            pos = _align(pos + len(plan.header), block_size)
        payload_at = pos
        file_size = payload_at + sum(p.blocks for p in plans) * block_size
        need = -(-(file_size - sec_size) // chunk_size)
        if need == chunks:
            break
        chunks = need

    target = Path(ffu_path)
    partial = target.with_name(f".{target.name}.partial")
    try:
        with partial.open("wb") as out:
            out.seek(sec_size)
            hasher = _ChunkHasher(out, chunk_size)
            hasher.write(IMAGE_HEADER.build({"size": 24, "manifest_length": len(manifest),
                                             "chunk_size_kb": chunk_size // 1024,
                                             "targeting_count": None}))  # fmt: skip
            hasher.write(manifest)
            hasher.pad_to(image_end)
            for plan in plans:
                hasher.write(plan.header)
                hasher.pad_to(_align(hasher.pos, block_size))
            for plan in plans:
                for block in _payload(plan, block_size):
                    hasher.write(block)
            if hasher.pos != file_size:
                raise AssertionError(f"layout mismatch: wrote {hasher.pos}, planned {file_size}")
            digests = hasher.finish()
            assert len(digests) == chunks * 32
            out.seek(0)
            out.write(
                SECURITY_HEADER.build(
                    {
                        "chunk_size_kb": chunk_size // 1024,
                        "hash_algorithm": HASH_ALG_SHA256,
                        "catalog_size": len(PLACEHOLDER_CATALOG),
                        "hash_table_size": len(digests),
                    }
                )
            )
            out.write(PLACEHOLDER_CATALOG)
            out.write(digests)
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise
    logger.info("wrote %s: v%d, %d store(s), %d bytes", target, version, len(plans), file_size)
    return FfuWriteResult(
        path=target,
        version=version,
        file_size=file_size,
        blocks_per_store=tuple(p.blocks for p in plans),
        block_size=block_size,
        chunk_size=chunk_size,
    )


def _align(value: int, to: int) -> int:
    return -(-value // to) * to


def _plan(source: StoreSource, block_size: int, max_run: int) -> _Plan:
    """Find the blocks of ``source`` that hold data, skipping holes cheaply."""
    try:
        disk_size = source.image.stat().st_size
    except OSError as exc:
        raise InputError(f"{source.image}: {exc.strerror}") from None
    data_blocks = _data_blocks(source.image, disk_size, block_size)
    runs: list[tuple[int, int]] = []
    for b in data_blocks:
        if runs and runs[-1][0] + runs[-1][1] == b and runs[-1][1] < max_run:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((b, 1))
    end_blocks: set[int] = set()
    last = disk_size // block_size - 1
    if disk_size % block_size == 0 and runs and runs[-1] == (last, 1):
        end_blocks.add(last)  # the backup GPT: addressed from the disk end
    return _Plan(source, disk_size, runs, end_blocks)


def _data_blocks(image: Path, size: int, block_size: int) -> list[int]:
    found: list[int] = []
    zero = bytes(block_size)
    with image.open("rb") as f:
        fd = f.fileno()
        pos = 0
        while pos < size:
            try:
                data_at = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: nothing but holes from here
                break
            start = data_at - data_at % block_size
            try:
                end = os.lseek(fd, data_at, os.SEEK_HOLE)
            except OSError:
                end = size
            end = min(_align(end, block_size), _align(size, block_size))
            f.seek(start)
            b = start // block_size
            while start < end:
                piece = f.read(min(_READ, end - start))
                if not piece:
                    break
                for off in range(0, len(piece), block_size):
                    block = piece[off : off + block_size]
                    if block != zero[: len(block)]:
                        found.append(b)
                    b += 1
                start += len(piece)
            pos = max(end, start)
    return found


def _manifest(plans: Sequence[_Plan], version: int, platform_id: str) -> str:
    lines = [
        "[FullFlash]",
        f"Version = {version}.0",
        "OSVersion = 10.0.0.0",
        "Description = Unsigned FFU written by parallel-flash",
        f"DevicePlatformId0 = {platform_id}",
        "",
    ]
    for i, plan in enumerate(plans):
        src = plan.source
        lines += [
            "[Store]",
            f"SectorSize = {src.sector_size}",
            f"MinSectorCount = {plan.disk_size // src.sector_size}",
        ]
        if version == 2:
            lines += [
                f"StoreId = {{{uuid.uuid4()}}}",
                f"IsMainOSStore = {'True' if i == 0 else 'False'}",
                f"DevicePath = {src.device_path}",
            ]
        lines.append("")
        with contextlib.suppress(Exception), src.image.open("rb") as f:

            def read(offset: int, size: int, f: BinaryIO = f) -> bytes:
                f.seek(offset)
                return f.read(size)

            gpt = parse_gpt(read, src.sector_size, source=str(src.image))
            for part in gpt.partitions:
                lines += [
                    "[Partition]",
                    f"Name = {part.name}",
                    f"Type = {{{part.type_guid}}}",
                    f"FirstSector = {part.first_lba}",
                    f"TotalSectors = {part.last_lba - part.first_lba + 1}",
                    "",
                ]
    return "\r\n".join(lines)


def _store_header(
    plan: _Plan, index: int, count: int, version: int, block_size: int, platform_id: str
) -> bytes:
    validation = b"".join(
        VALIDATION_ENTRY.build(
            {"sector_index": s, "sector_offset": o, "byte_count": len(d), "data": d}
        )
        for s, o, d in plan.source.validation
    )
    descriptors = bytearray()
    for first, n in plan.runs:
        if first in plan.end_blocks:
            method, block_index = AccessMethod.DISK_END, plan.disk_size // block_size - 1 - first
        else:
            method, block_index = AccessMethod.DISK_BEGIN, first
        descriptors += struct.pack("<IIII", 1, n, method, block_index)
    path = plan.source.device_path.encode("utf-16-le")
    header = STORE_HEADER.build(
        {
            "update_type": 0,  # full flash
            "major_version": version,
            "minor_version": 0,
            "full_flash_major": 2,
            "full_flash_minor": 0,
            "platform_id": platform_id.encode("ascii").ljust(192, b"\0")[:192],
            "block_size": block_size,
            "write_descriptor_count": len(plan.runs),
            "write_descriptor_length": len(descriptors),
            "validation_count": len(plan.source.validation),
            "validation_length": len(validation),
            "initial_table_index": 0,
            "initial_table_count": 0,
            "flash_only_table_index": 0,
            "flash_only_table_count": 0,
            "final_table_index": 0,
            "final_table_count": 1 if plan.runs else 0,
            "v2": {
                "store_count": count,
                "store_index": index + 1,
                "payload_size": plan.blocks * block_size,
                "device_path_length": len(path) // 2,
                "device_path": path,
            }
            if version == 2
            else None,
        }
    )
    return bytes(header) + validation + bytes(descriptors)


def _payload(plan: _Plan, block_size: int) -> Iterator[bytes]:
    with plan.source.image.open("rb") as f:
        for first, n in plan.runs:
            f.seek(first * block_size)
            data = f.read(n * block_size)
            yield data.ljust(n * block_size, b"\0")


class _ChunkHasher:
    """Writes sequentially and keeps one SHA-256 per chunk of what it wrote."""

    def __init__(self, out: BinaryIO, chunk_size: int) -> None:
        self.out = out
        self.pos = out.tell()
        self.chunk_size = chunk_size
        self._sha = hashlib.sha256()
        self._filled = 0
        self._digests = bytearray()

    def write(self, data: bytes) -> None:
        self.out.write(data)
        self.pos += len(data)
        view = memoryview(data)
        while view:
            take = min(len(view), self.chunk_size - self._filled)
            self._sha.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == self.chunk_size:
                self._digests += self._sha.digest()
                self._sha = hashlib.sha256()
                self._filled = 0

    def pad_to(self, offset: int) -> None:
        if offset > self.pos:
            self.write(bytes(offset - self.pos))

    def finish(self) -> bytes:
        if self._filled:
            self._digests += self._sha.digest()
        return bytes(self._digests)
