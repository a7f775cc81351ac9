"""Partitions out of an FFU: GPT from the blocks, sparse extraction that matches the disk."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from parallel_flash.demo.ffu_writer import StoreSource, write_ffu
from parallel_flash.errors import FormatError
from parallel_flash.formats.ffu import read_ffu
from parallel_flash.formats.ffu_disk import (
    StoreDisk,
    find_partition,
    read_partition_tables,
    written_bytes,
)
from parallel_flash.formats.gpt import EFI_SYSTEM_TYPE, PartitionSpec, build_gpt
from parallel_flash.img2wim.partition_extract import extract_partition

MiB = 1 << 20


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    """EFIESP, an 8 MiB MainOS with data in three scattered places, an empty Data."""
    layout = build_gpt(
        [
            PartitionSpec("EFIESP", 2 * MiB, EFI_SYSTEM_TYPE),
            PartitionSpec("MainOS", 8 * MiB),
            PartitionSpec("Data", 2 * MiB),
        ]
    )
    rng = random.Random(42)
    path = tmp_path / "disk.img"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, layout.disk_size)
        os.pwrite(fd, layout.head, 0)
        os.pwrite(fd, layout.tail, layout.disk_size - len(layout.tail))
        efiesp, mainos, _data = layout.partitions
        os.pwrite(fd, b"EFI stuff" * 50, efiesp.offset)
        os.pwrite(fd, rng.randbytes(200_000), mainos.offset)
        os.pwrite(fd, rng.randbytes(10_000), mainos.offset + 3 * MiB + 5)
        os.pwrite(fd, b"tail" * 1000, mainos.offset + mainos.size - 4000)
    finally:
        os.close(fd)
    return path


@pytest.mark.parametrize("sector_size", [512, 4096])
def test_partition_table_and_sparse_extraction(disk: Path, tmp_path: Path, sector_size: int):
    if sector_size == 4096:  # the same layout seen by a UFS-style 4 KiB-sector reader
        layout = build_gpt(
            [PartitionSpec("EFIESP", 2 * MiB, EFI_SYSTEM_TYPE), PartitionSpec("MainOS", 8 * MiB)],
            sector_size=4096,
        )
        with disk.open("r+b") as f:
            f.write(bytes(64 << 10))
            f.seek(0)
            f.write(layout.head)
            f.seek(layout.disk_size - len(layout.tail))
            f.write(layout.tail)
    ffu = read_ffu(
        write_ffu([StoreSource(disk, sector_size=sector_size)], tmp_path / "d.ffu", version=1).path
    )
    tables = read_partition_tables(ffu)
    assert tables[0].gpt is not None and tables[0].gpt.sector_size == sector_size
    hit = find_partition(tables, "MAINOS")
    assert hit is not None
    store, gpt, mainos = hit
    written = written_bytes(ffu, store, gpt)
    assert written[mainos.index] > 0
    if sector_size == 512:
        assert written[2] == 0  # Data: never written

    dest = tmp_path / "mainos.img"
    reports: list[tuple[int, int]] = []
    out = extract_partition(
        ffu, store, gpt, mainos, dest, progress=lambda d, t: reports.append((d, t))
    )
    assert dest.stat().st_size == mainos.size == out.size
    with disk.open("rb") as f:
        f.seek(mainos.offset)
        assert dest.read_bytes() == f.read(mainos.size)
    assert out.written == written[mainos.index]
    assert out.stored <= out.written
    assert out.allocated <= out.written < mainos.size // 2  # disk use follows written blocks
    assert out.chunks_verified == ffu.chunk_count
    assert reports[-1][0] == reports[-1][1]


def test_store_disk_reads_both_ends(disk: Path, tmp_path: Path) -> None:
    ffu = read_ffu(write_ffu([disk], tmp_path / "d.ffu", version=1).path)
    size = disk.stat().st_size
    raw = disk.read_bytes()
    start = StoreDisk(ffu, ffu.stores[0])
    assert start.read(0, 40_000) == raw[:40_000]
    # the backup GPT sits in a block addressed from the disk end (access method 2):
    assert start.read(size - 512, 512) == bytes(512)  # unknown disk size: not placed
    both = StoreDisk(ffu, ffu.stores[0], disk_size=size)
    assert both.read(size - 20_000, 20_000) == raw[-20_000:]


def test_second_store_without_gpt_is_reported(disk: Path, tmp_path: Path) -> None:
    lun = tmp_path / "lun.img"
    lun.write_bytes(b"\x01" * 4096)
    ffu = read_ffu(write_ffu([disk, lun], tmp_path / "d.ffu").path)
    first, second = read_partition_tables(ffu)
    assert first.gpt is not None
    assert second.gpt is None and second.problem is not None and "EFI PART" in second.problem


def test_extraction_removes_its_file_on_error(disk: Path, tmp_path: Path) -> None:
    path = write_ffu([disk], tmp_path / "d.ffu", version=1).path
    ffu = read_ffu(path)
    with path.open("r+b") as f:
        f.seek(ffu.file_size - 1000)
        f.write(b"X")
    ffu = read_ffu(path)
    hit = find_partition(read_partition_tables(ffu), "MainOS")
    assert hit is not None
    dest = tmp_path / "mainos.img"
    with pytest.raises(FormatError, match="does not match its SHA-256"):
        extract_partition(ffu, *hit, dest)
    assert not dest.exists()
