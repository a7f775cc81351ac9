"""GPT: what build_gpt writes, parse_gpt reads (and gdisk agrees); damaged tables refused."""

from __future__ import annotations

import shutil
import struct
import subprocess
import uuid
from pathlib import Path

import pytest

from parallel_flash.errors import FormatError
from parallel_flash.formats.gpt import (
    BASIC_DATA_TYPE,
    EFI_SYSTEM_TYPE,
    GPT_HEADER,
    PartitionSpec,
    build_gpt,
    parse_gpt,
)

SPECS = [
    PartitionSpec("EFIESP", 4 << 20, EFI_SYSTEM_TYPE),
    PartitionSpec("MainOS", 8 << 20),
    PartitionSpec("Data", 1 << 20),
]


def _disk_bytes(sector_size: int = 512) -> tuple[bytearray, object]:
    layout = build_gpt(SPECS, sector_size=sector_size, disk_guid=uuid.UUID(int=7))
    disk = bytearray(layout.disk_size)
    disk[: len(layout.head)] = layout.head
    disk[layout.disk_size - len(layout.tail) :] = layout.tail
    return disk, layout


@pytest.mark.parametrize("sector_size", [512, 4096])
def test_build_then_parse(sector_size: int) -> None:
    disk, _layout = _disk_bytes(sector_size)
    gpt = parse_gpt(lambda o, n: bytes(disk[o : o + n]), sector_size, source="mem")
    assert gpt.disk_guid == uuid.UUID(int=7)
    assert gpt.disk_size == len(disk) and len(disk) % (1 << 20) == 0
    assert [p.name for p in gpt.partitions] == ["EFIESP", "MainOS", "Data"]
    assert [p.size for p in gpt.partitions] == [s.size for s in SPECS]
    assert gpt.partitions[0].type_guid == EFI_SYSTEM_TYPE
    assert gpt.partitions[1].type_guid == BASIC_DATA_TYPE
    assert all(p.offset % (1 << 20) == 0 for p in gpt.partitions)  # 1 MiB aligned
    assert gpt.find("mainos") is gpt.partitions[1]  # case-insensitive, as Windows
    assert gpt.find("DPP") is None
    # the backup header points back at the primary
    backup = GPT_HEADER.parse(disk[len(disk) - sector_size :])
    assert (backup.current_lba, backup.backup_lba) == (gpt.backup_lba, 1)


@pytest.mark.skipif(shutil.which("sgdisk") is None, reason="needs sgdisk (gdisk)")
def test_gdisk_accepts_our_tables(tmp_path: Path) -> None:
    disk, _ = _disk_bytes()
    image = tmp_path / "disk.img"
    image.write_bytes(disk)
    out = subprocess.run(["sgdisk", "-v", str(image)], capture_output=True, text=True, check=True)
    assert "No problems found" in out.stdout
    listing = subprocess.run(["sgdisk", "-p", str(image)], capture_output=True, text=True).stdout
    assert "EFIESP" in listing and "MainOS" in listing


def test_missing_signature() -> None:
    disk, _ = _disk_bytes()
    with pytest.raises(FormatError, match="EFI PART") as err:
        parse_gpt(lambda o, n: bytes(disk[o : o + n]), 4096, source="disk.img")
    assert err.value.path == "disk.img"


def test_header_crc_mismatch() -> None:
    disk, _ = _disk_bytes()
    disk[512 + 0x28] ^= 1  # first usable LBA
    with pytest.raises(FormatError) as err:
        parse_gpt(lambda o, n: bytes(disk[o : o + n]), 512, source="d")
    assert err.value.field == "GPT header.header_crc32"


def test_entries_crc_mismatch() -> None:
    disk, _ = _disk_bytes()
    disk[1024 + 0x38] ^= 1  # a byte of the first partition's name
    with pytest.raises(FormatError) as err:
        parse_gpt(lambda o, n: bytes(disk[o : o + n]), 512, source="d")
    assert err.value.field == "GPT header.entries_crc32"


def test_partition_outside_disk() -> None:
    import zlib

    disk, _ = _disk_bytes()
    struct.pack_into("<Q", disk, 1024 + 0x28, 10**9)  # last LBA of entry 0
    entries = bytes(disk[1024 : 1024 + 128 * 128])
    struct.pack_into("<I", disk, 512 + 0x58, zlib.crc32(entries))
    struct.pack_into("<I", disk, 512 + 0x10, 0)
    struct.pack_into("<I", disk, 512 + 0x10, zlib.crc32(bytes(disk[512 : 512 + 92])))
    with pytest.raises(FormatError, match="outside the disk") as err:
        parse_gpt(lambda o, n: bytes(disk[o : o + n]), 512, source="d")
    assert "EFIESP" in err.value.field
