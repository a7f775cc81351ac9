"""FFU reader and writer: declarations both ways, layouts, and every refusal."""

from __future__ import annotations

import hashlib
import os
import random
import struct
from pathlib import Path

import pytest
from construct import GreedyRange

from parallel_flash.demo.ffu_writer import PLACEHOLDER_CATALOG, StoreSource, write_ffu
from parallel_flash.errors import FormatError
from parallel_flash.formats import ffu as ffu_mod
from parallel_flash.formats import ffu_payload
from parallel_flash.formats.ffu import (
    IMAGE_HEADER,
    SECURITY_HEADER,
    STORE_HEADER,
    WRITE_DESCRIPTOR,
    AccessMethod,
    iter_descriptors,
    parse_manifest,
    read_ffu,
)
from parallel_flash.formats.ffu_descriptors import walk_descriptors
from parallel_flash.formats.ffu_payload import scan_payload
from parallel_flash.formats.gpt import PartitionSpec, build_gpt

BLOCK = 128 << 10

# --- declarations, both directions -------------------------------------------

SECURITY_BYTES = bytes.fromhex(
    "20000000"  # cbSize = 32
    "5369676e6564496d61676520"  # "SignedImage "
    "80000000"  # chunk size 128 KiB
    "0c800000"  # CALG_SHA_256
    "0d000000"  # catalog 13 bytes
    "40000000"  # hash table 64 bytes (2 chunks)
)
IMAGE_BYTES_28 = bytes.fromhex(
    "1c000000"  # cbSize = 28
    "496d616765466c6173682020"  # "ImageFlash  "
    "00010000"  # manifest 256 bytes
    "80000000"  # chunk size 128 KiB
    "01000000"  # one device-targeting info
)
DESCRIPTOR_BYTES = bytes.fromhex(
    "02000000"  # two locations
    "01000000"  # one block
    "00000000" "05000000"  # DISK_BEGIN, block 5
    "02000000" "00000000"  # DISK_END, block 0 (the last)
)  # fmt: skip


def test_security_header_both_ways() -> None:
    hdr = SECURITY_HEADER.parse(SECURITY_BYTES)
    assert (hdr.chunk_size_kb, hdr.hash_algorithm, hdr.catalog_size, hdr.hash_table_size) == (
        128,
        0x800C,
        13,
        64,
    )
    built = SECURITY_HEADER.build(
        {"chunk_size_kb": 128, "hash_algorithm": 0x800C, "catalog_size": 13, "hash_table_size": 64}
    )
    assert built == SECURITY_BYTES


def test_image_header_24_and_28_bytes() -> None:
    hdr = IMAGE_HEADER.parse(IMAGE_BYTES_28)
    assert (hdr.size, hdr.manifest_length, hdr.chunk_size_kb, hdr.targeting_count) == (
        28,
        256,
        128,
        1,
    )
    assert IMAGE_HEADER.build(dict(hdr)) == IMAGE_BYTES_28
    short = IMAGE_HEADER.build(
        {"size": 24, "manifest_length": 9, "chunk_size_kb": 64, "targeting_count": None}
    )
    assert len(short) == 24 and IMAGE_HEADER.parse(short).targeting_count is None


def test_store_header_v1_and_v2_layout() -> None:
    fields = {
        "update_type": 0,
        "major_version": 1,
        "minor_version": 0,
        "full_flash_major": 2,
        "full_flash_minor": 0,
        "platform_id": b"Qualcomm.MSM8960\0Other.Id".ljust(192, b"\0"),
        "block_size": 0x20000,
        "write_descriptor_count": 3,
        "write_descriptor_length": 48,
        "validation_count": 0,
        "validation_length": 0,
        "initial_table_index": 0,
        "initial_table_count": 0,
        "flash_only_table_index": 0,
        "flash_only_table_count": 0,
        "final_table_index": 2,
        "final_table_count": 1,
        "v2": None,
    }
    v1 = STORE_HEADER.build(fields)
    assert len(v1) == 248
    assert struct.unpack_from("<I", v1, 0xCC)[0] == 0x20000  # block size at 0xCC
    path = "VenHw(1)".encode("utf-16-le")
    v2 = STORE_HEADER.build(
        fields
        | {
            "major_version": 2,
            "v2": {
                "store_count": 2,
                "store_index": 1,
                "payload_size": 3 * 0x20000,
                "device_path_length": 8,
                "device_path": path,
            },
        }
    )
    assert len(v2) == 248 + 14 + 16
    assert v2[248:262] == struct.pack("<HHQH", 2, 1, 3 * 0x20000, 8)
    assert STORE_HEADER.parse(v2).v2.device_path == path


def test_write_descriptor_decoders_agree() -> None:
    desc = WRITE_DESCRIPTOR.parse(DESCRIPTOR_BYTES)
    assert desc.block_count == 1
    assert [(loc.access_method, loc.block_index) for loc in desc.locations] == [(0, 5), (2, 0)]
    # the fast struct decoder must read a run of mixed descriptors exactly as construct does
    rng = random.Random(3)
    blob = b""
    for _ in range(200):
        locs = [(rng.choice((0, 2)), rng.randrange(1 << 20)) for _ in range(rng.randint(1, 3))]
        blob += struct.pack("<II", len(locs), rng.randint(1, 4))
        blob += b"".join(struct.pack("<II", *loc) for loc in locs)
    expected = GreedyRange(WRITE_DESCRIPTOR).parse(blob)
    store = ffu_mod.Store(
        number=1, update_type=0, version=(1, 0, 2, 0), platform_ids=(), block_size=BLOCK,
        sector_size=512, store_count=1, device_path="", declared_payload_size=None,
        validation_entries=(), gpt_tables=((0, 0), (0, 0), (0, 0)),
        descriptor_count=200, descriptor_offset=0, descriptor_length=len(blob),
        header_offset=0, payload_offset=0, payload_blocks=1000,  # the budget: blocks the file holds
    )  # fmt: skip
    import io

    got = list(walk_descriptors(io.BytesIO(blob), "mem", store))  # type: ignore[arg-type]
    assert len(got) == len(expected) == 200
    for g, e in zip(got, expected, strict=True):
        assert g.block_count == e.block_count
        assert [(int(x.method), x.block_index) for x in g.locations] == [
            (x.access_method, x.block_index) for x in e.locations
        ]


def test_manifest_keeps_repeated_sections() -> None:
    m = parse_manifest(
        "[FullFlash]\r\nVersion = 2.0\r\n; comment\r\n[Store]\r\nSectorSize = 4096\r\n"
        "[Store]\r\nSectorSize=512\r\n[Partition]\r\nName = MainOS\r\n\0\0"
    )
    assert m.first("FullFlash") == {"Version": "2.0"}
    assert [s["SectorSize"] for s in m.all("store")] == ["4096", "512"]
    assert m.first("Partition")["Name"] == "MainOS"
    assert m.first("Missing") == {}


# --- writer -> reader -----------------------------------------------------------


def _disk(path: Path, *, seed: int = 5, size_mib: int = 6) -> Path:
    """A GPT disk with data in a few places (and zero blocks that must be skipped)."""
    layout = build_gpt([PartitionSpec("EFIESP", 1 << 20), PartitionSpec("MainOS", 3 << 20)])
    rng = random.Random(seed)
    with path.open("wb") as f:
        f.truncate(layout.disk_size)
        f.write(layout.head)
        f.seek(layout.disk_size - len(layout.tail))
        f.write(layout.tail)
        main = layout.partitions[1]
        f.seek(main.offset + 1000)
        f.write(rng.randbytes(300_000))
        f.seek(main.offset + main.size - 5000)
        f.write(b"end of MainOS" * 100)
    return path


def _rebuild(ffu_path: Path, store_number: int, disk_size: int) -> bytes:
    """Reassemble a store's disk from the FFU's blocks, independently of partition_extract."""
    ffu = read_ffu(ffu_path)
    out = bytearray(disk_size)

    def on_block(store, desc, k, data) -> None:  # type: ignore[no-untyped-def]
        if store.number != store_number:
            return
        for loc in desc.locations:
            if loc.method == AccessMethod.DISK_BEGIN:
                off = (loc.block_index + k) * store.block_size
            else:
                off = disk_size - (loc.block_index + 1) * store.block_size + k * store.block_size
            out[off : off + len(data)] = data

    scan_payload(ffu, on_block=on_block)
    return bytes(out)


@pytest.mark.parametrize("max_run", [1, 3])
def test_v1_round_trip(tmp_path: Path, max_run: int) -> None:
    disk = _disk(tmp_path / "disk.img")
    result = write_ffu([disk], tmp_path / "x.ffu", version=1, max_run_blocks=max_run)
    ffu = read_ffu(result.path)
    assert ffu.version == 1 and len(ffu.stores) == 1 and ffu.file_size == result.file_size
    store = ffu.stores[0]
    assert store.block_size == BLOCK and store.sector_size == 512
    assert store.platform_ids == ("ParallelFlash.Demo.Platform",)
    assert ffu.chunk_count * 32 == ffu.hash_table_size
    descriptors = list(iter_descriptors(ffu, store))
    # only blocks holding data: GPT head, MainOS data (3 blocks + 1 at the end), backup GPT
    assert sum(d.block_count for d in descriptors) == store.payload_blocks < 48
    assert descriptors[-1].locations[0].method == AccessMethod.DISK_END
    if max_run > 1:
        assert any(d.block_count > 1 for d in descriptors)
    assert _rebuild(result.path, 1, disk.stat().st_size) == disk.read_bytes()
    with result.path.open("rb") as f:
        f.seek(32)
        assert f.read(len(PLACEHOLDER_CATALOG)) == PLACEHOLDER_CATALOG


def test_v2_two_stores_round_trip(tmp_path: Path) -> None:
    disk = _disk(tmp_path / "disk.img")
    lun = tmp_path / "lun1.img"
    lun.write_bytes(random.Random(9).randbytes(300_000) + bytes(400_000))
    check = ((1, 0, b"EFI PART"), (7, 3, b"xyz"))
    result = write_ffu(
        [StoreSource(disk, "VenHw(A)", validation=check), StoreSource(lun, "VenHw(BB)")],
        tmp_path / "x.ffu",
    )
    ffu = read_ffu(result.path)
    assert ffu.version == 2
    first, second = ffu.stores
    assert (first.store_count, second.store_count) == (2, 2)
    assert (first.device_path, second.device_path) == ("VenHw(A)", "VenHw(BB)")
    assert first.declared_payload_size == first.payload_size
    assert [(v.sector_index, v.sector_offset, v.data) for v in first.validation_entries] == list(
        check
    )
    assert second.validation_entries == ()
    # all store headers first, then the payloads in store order
    assert first.header_offset < second.header_offset < first.payload_offset
    assert second.payload_offset == first.payload_offset + first.payload_size
    assert second.payload_blocks == 3  # 300,000 bytes of data -> 3 blocks
    assert _rebuild(result.path, 1, disk.stat().st_size) == disk.read_bytes()
    assert _rebuild(result.path, 2, 6 * BLOCK)[: lun.stat().st_size] == lun.read_bytes()


def test_scan_hands_blocks_over_after_verifying(tmp_path: Path) -> None:
    result = write_ffu([_disk(tmp_path / "disk.img")], tmp_path / "x.ffu", version=1)
    ffu = read_ffu(result.path)
    reports: list[tuple[int, int]] = []
    seen: list[int] = []
    res = scan_payload(
        ffu,
        on_block=lambda s, d, k, data: seen.append(d.file_offset + k * s.block_size),
        progress=lambda done, total: reports.append((done, total)),
    )
    assert res.chunks_verified == ffu.chunk_count
    assert seen == sorted(seen) and len(seen) == res.blocks == ffu.stores[0].payload_blocks
    assert reports[-1] == (ffu.file_size - ffu.image_offset,) * 2


def test_odd_block_and_chunk_sizes(tmp_path: Path) -> None:
    """Chunk 64 KiB with 192 KiB blocks: blocks straddle reads and chunk boundaries."""
    disk = _disk(tmp_path / "disk.img")
    result = write_ffu([disk], tmp_path / "x.ffu", chunk_size=64 << 10, block_size=192 << 10)
    ffu = read_ffu(result.path)
    assert ffu.chunk_size == 64 << 10 and ffu.stores[0].block_size == 192 << 10
    original = ffu_payload.READ_SIZE
    try:
        ffu_payload.READ_SIZE = 1  # force the smallest read: lcm(64K, 192K)
        rebuilt = _rebuild(result.path, 1, disk.stat().st_size)
    finally:
        ffu_payload.READ_SIZE = original
    assert rebuilt[: 4 << 20] == disk.read_bytes()[: 4 << 20]


# --- refusals ----------------------------------------------------------------------


@pytest.fixture
def good_ffu(tmp_path: Path) -> Path:
    return write_ffu([_disk(tmp_path / "disk.img")], tmp_path / "good.ffu", version=1).path


def _patch(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(data)


def test_bad_security_signature(good_ffu: Path) -> None:
    _patch(good_ffu, 4, b"SignedImagX ")
    with pytest.raises(FormatError) as err:
        read_ffu(good_ffu)
    assert err.value.field == "security header.signature"
    assert str(good_ffu) in str(err.value)


def test_bad_image_signature_and_hash_algorithm(good_ffu: Path) -> None:
    ffu = read_ffu(good_ffu)
    _patch(good_ffu, ffu.image_offset + 4, b"ImageFlesh  ")
    with pytest.raises(FormatError, match=r"image header\.signature"):
        read_ffu(good_ffu)
    _patch(good_ffu, 20, struct.pack("<I", 0x8004))
    with pytest.raises(FormatError, match="not SHA-256"):
        read_ffu(good_ffu)


def test_truncated_payload(good_ffu: Path) -> None:
    size = good_ffu.stat().st_size
    os.truncate(good_ffu, size - BLOCK // 2)
    with pytest.raises(FormatError, match="truncated") as err:
        read_ffu(good_ffu)
    assert err.value.field == "payload"


def test_truncated_headers(good_ffu: Path) -> None:
    os.truncate(good_ffu, 20)
    with pytest.raises(FormatError, match="security header"):
        read_ffu(good_ffu)


def test_flipped_byte_names_chunk_and_offset(good_ffu: Path) -> None:
    ffu = read_ffu(good_ffu)
    offset = ffu.stores[0].payload_offset + 2 * BLOCK + 777
    with good_ffu.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x40]))
    chunk = (offset - ffu.image_offset) // ffu.chunk_size
    with pytest.raises(FormatError) as err:
        scan_payload(read_ffu(good_ffu))
    assert err.value.field == f"hash table entry {chunk}"
    assert f"file offset 0x{ffu.image_offset + chunk * ffu.chunk_size:x}" in err.value.problem


def test_descriptor_past_the_end(good_ffu: Path) -> None:
    ffu = read_ffu(good_ffu)
    store = ffu.stores[0]
    _patch(good_ffu, store.descriptor_offset + 4, struct.pack("<I", 500))  # block count
    with pytest.raises(FormatError, match="truncated"):
        read_ffu(good_ffu)


def test_unknown_access_method_and_store_version(good_ffu: Path) -> None:
    ffu = read_ffu(good_ffu)
    store = ffu.stores[0]
    _patch(good_ffu, store.descriptor_offset + 8, struct.pack("<I", 1))
    with pytest.raises(FormatError, match="access_method"):
        read_ffu(good_ffu)
    _patch(good_ffu, store.header_offset + 8, struct.pack("<H", 3))  # full-flash major
    with pytest.raises(FormatError, match="compressed"):
        read_ffu(good_ffu)


def test_missing_file() -> None:
    with pytest.raises(FormatError, match="does not exist"):
        read_ffu("/nonexistent/x.ffu")


def test_hash_table_digest_matches_written_data(good_ffu: Path) -> None:
    ffu = read_ffu(good_ffu)
    with good_ffu.open("rb") as f:
        f.seek(ffu.image_offset)
        first_chunk = f.read(ffu.chunk_size)
        f.seek(ffu.hash_table_offset)
        assert f.read(32) == hashlib.sha256(first_chunk).digest()
