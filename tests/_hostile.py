"""Crafted hostile inputs, built byte by byte (never shipped), for tests and bench_hostile.

:func:`craft_ffu` lays out a v1 FFU with every field under the caller's
control and a correct hash table, so a case reaches exactly the check it is
aimed at. :data:`CASES` are the amplification attacks issue 8 lists: each is a
small (or at most 64 MiB) file whose *fields* ask for unbounded work, memory
or disk. ``run_case`` runs ``parallel-flash`` on one in a fresh interpreter and
reports its wall time and peak resident memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: What issue 8 allows any hostile input of up to 64 MiB: refused or described
#: within this many seconds and this much resident memory.
BUDGET_SECONDS = 5.0
BUDGET_RSS_MB = 256.0

SECTOR = 512
Location = tuple[int, int]  # (access method, block index)


@dataclass
class Descriptor:
    locations: Sequence[Location]
    data: bytes  #: block_count x block size bytes
    block_count: int | None = None  #: override the count written to the file


@dataclass
class FfuSpec:
    descriptors: list[Descriptor] = field(default_factory=list)
    block_size: int = 4096
    chunk_kb: int = 16
    manifest: str = "[FullFlash]\r\nVersion = 2.0\r\n[Store]\r\nSectorSize = 512\r\n"
    validation: bytes = b""
    validation_count: int = 0
    descriptor_count: int | None = None  #: override
    raw_descriptors: bytes | None = None  #: replace the descriptor region
    targeting_count: int | None = None  #: a 28-byte image header with this count
    extra_payload: bytes = b""


def _align(value: int, to: int) -> int:
    return -(-value // to) * to


def craft_ffu(spec: FfuSpec) -> bytes:
    """The FFU ``spec`` describes, hash table included."""
    bs, chunk = spec.block_size, spec.chunk_kb * 1024
    if spec.targeting_count is None:
        image_header = struct.pack(
            "<I12sII", 24, b"ImageFlash  ", len(spec.manifest), spec.chunk_kb
        )
    else:
        image_header = struct.pack(
            "<I12sIII", 28, b"ImageFlash  ", len(spec.manifest), spec.chunk_kb, spec.targeting_count
        )
    image = image_header + spec.manifest.encode("ascii")
    descriptors = spec.raw_descriptors
    if descriptors is None:
        descriptors = b"".join(
            struct.pack("<II", len(d.locations), d.block_count or len(d.data) // bs)
            + b"".join(struct.pack("<II", m, i) for m, i in d.locations)
            for d in spec.descriptors
        )
    count = len(spec.descriptors) if spec.descriptor_count is None else spec.descriptor_count
    store = struct.pack("<IHHHH", 0, 1, 0, 2, 0) + b"Hostile.Platform".ljust(192, b"\0")
    store += struct.pack(
        "<IIIII6I", bs, count, len(descriptors), spec.validation_count, len(spec.validation),
        0, 0, 0, 0, 0, 0,
    )  # fmt: skip
    store_region = store + spec.validation + descriptors
    payload = b"".join(d.data for d in spec.descriptors) + spec.extra_payload
    catalog = bytes.fromhex("300b06092a864886f70d010702")
    chunks = 1
    while True:
        security_size = _align(32 + len(catalog) + 32 * chunks, chunk)
        body = (
            image.ljust(_align(len(image), chunk), b"\0")
            + store_region.ljust(_align(len(store_region), bs), b"\0")
            + payload
        )
        # the image region is chunk-aligned, the store region block-aligned from there
        need = -(-len(body) // chunk)
        if need == chunks:
            break
        chunks = need
    table = b"".join(
        hashlib.sha256(body[i * chunk : (i + 1) * chunk]).digest() for i in range(chunks)
    )
    security = struct.pack("<I12sIIII", 32, b"SignedImage ", spec.chunk_kb, 0x800C,
                           len(catalog), len(table))  # fmt: skip
    head = (security + catalog + table).ljust(security_size, b"\0")
    return head + body


def gpt_disk_head(
    partitions: Sequence[tuple[str, int, int]], *, backup_lba: int, sector: int = SECTOR
) -> bytes:
    """Protective MBR, GPT header and a 16 KiB entry array, CRCs right (34 sectors at 512)."""
    entries = bytearray(128 * 128)
    for i, (name, first, last) in enumerate(partitions):
        entries[i * 128 : (i + 1) * 128] = (
            os.urandom(16) + os.urandom(16) + struct.pack("<QQQ", first, last, 0)
            + name.encode("utf-16-le").ljust(72, b"\0")[:72]
        )  # fmt: skip
    entry_sectors = len(entries) // sector
    fields = [
        b"EFI PART", 0x10000, 92, 0, 0, 1, backup_lba, 2 + entry_sectors,
        backup_lba - entry_sectors - 1, os.urandom(16), 2, 128, 128, zlib.crc32(entries),
    ]  # fmt: skip
    fmt = "<8sIIIIQQQQ16sQIII"
    crc = zlib.crc32(struct.pack(fmt, *fields))
    fields[3] = crc
    header = struct.pack(fmt, *fields).ljust(sector, b"\0")
    mbr = bytearray(sector)
    mbr[510:512] = b"\x55\xaa"
    return bytes(mbr) + header + bytes(entries)


def ntfs_boot_sector() -> bytes:
    """A boot sector that says NTFS and nothing else that holds up."""
    sector = bytearray(SECTOR)
    sector[0:3] = b"\xeb\x52\x90"
    sector[3:11] = b"NTFS    "
    sector[11:13] = struct.pack("<H", 512)
    sector[13] = 8
    sector[0x28:0x30] = struct.pack("<Q", (1 << 31) - 1)  # total sectors: a whole disk
    sector[0x30:0x38] = struct.pack("<Q", 1 << 30)  # $MFT far away, in a hole
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def phone_disk(
    backup_lba: int,
    mainos: tuple[int, int],
    *,
    ntfs: bool = True,
    names: tuple[str, str] = ("EFIESP", "MainOS"),
) -> FfuSpec:
    """GPT at the disk's start (blocks 0..), an NTFS boot sector at MainOS's first LBA."""
    head = gpt_disk_head(
        [(names[0], 2048, 4095), (names[1], mainos[0], mainos[1])], backup_lba=backup_lba
    )
    spec = FfuSpec()
    bs = spec.block_size
    spec.descriptors.append(Descriptor([(0, 0)], head.ljust(_align(len(head), bs), b"\0")))
    if ntfs:
        block = ntfs_boot_sector().ljust(bs, b"\0")
        spec.descriptors.append(Descriptor([(0, mainos[0] * SECTOR // bs)], block))
    return spec


# -- the cases ------------------------------------------------------------------------


def huge_mainos() -> bytes:
    """A 640 KiB-class FFU whose GPT declares a disk of 2^50 bytes and a MainOS to match."""
    last = (1 << 50) // SECTOR - 1
    return craft_ffu(phone_disk(last, (1 << 20, last - 64)))


def big_sparse_mainos() -> bytes:
    """A MainOS of ~1 TiB (within the disk limit) holding a bogus NTFS: a sparse temp file."""
    last = (1 << 40) // SECTOR - 1
    return craft_ffu(phone_disk(last, (1 << 20, last - 64)))


def sector_size(value: int) -> Callable[[], bytes]:
    def build() -> bytes:
        spec = phone_disk(1 << 20, (8192, 16383))
        spec.manifest = f"[FullFlash]\r\n[Store]\r\nSectorSize = {value}\r\n"
        return craft_ffu(spec)

    return build


def many_validation_entries() -> bytes:
    """4.8 MB of empty validation entries (400,000 of them): once quadratic."""
    spec = phone_disk(1 << 20, (8192, 16383))
    count = 400_000
    spec.validation = struct.pack("<III", 1, 0, 0) * count
    spec.validation_count = count
    return craft_ffu(spec)


def write_fanout() -> bytes:
    """One block written at 300,000 locations: a 2.4 MB FFU asking for 1.2 GB of writes."""
    spec = phone_disk(1 << 20, (8192, 16383))
    spec.descriptors.append(
        Descriptor([(0, 4096 + i) for i in range(300_000)], os.urandom(spec.block_size))
    )
    return craft_ffu(spec)


def descriptor_count() -> bytes:
    spec = phone_disk(1 << 20, (8192, 16383))
    spec.descriptor_count = 0xFFFFFFFF
    return craft_ffu(spec)


def block_count() -> bytes:
    spec = phone_disk(1 << 20, (8192, 16383))
    spec.descriptors[-1].block_count = 0xFFFFFFFF
    return craft_ffu(spec)


def targeting_count() -> bytes:
    spec = phone_disk(1 << 20, (8192, 16383))
    spec.targeting_count = 0xFFFFFFFF
    return craft_ffu(spec)


def max_descriptors() -> bytes:
    """A 64 MiB FFU that is valid: 512-byte blocks, one descriptor each (the most work
    a sound file of that size can ask for)."""
    spec = phone_disk(1 << 20, (8192, 1 << 19))
    spec.block_size = 512
    head = spec.descriptors[0].data
    spec.descriptors = [Descriptor([(0, i)], head[i * 512 : (i + 1) * 512])
                        for i in range(len(head) // 512)]  # fmt: skip
    spec.descriptors.append(Descriptor([(0, 8192)], ntfs_boot_sector()))
    filler = os.urandom(512)
    blocks = (63 << 20) // (512 + 16)  # with the headers, just under 64 MiB
    spec.descriptors += [Descriptor([(0, 8193 + i)], filler) for i in range(blocks)]
    return craft_ffu(spec)


def wim_integrity_bomb(small_wim: Path) -> Callable[[], bytes]:
    """A real WIM, extended to 64 MiB, whose integrity table claims 60 MiB of entries."""

    def build() -> bytes:
        data = bytearray(small_wim.read_bytes())
        size = 64 << 20
        table_at = len(data)
        table_size = size - table_at
        data += struct.pack("<III", table_size, 0xFFFFFFFF, 1) + bytes(table_size - 12)
        resource = (table_size | (0 << 56)).to_bytes(8, "little")
        data[0x7C : 0x7C + 24] = resource + struct.pack("<QQ", table_at, table_size)
        return bytes(data)

    return build


def sdi_blob_bomb() -> bytes:
    """A 64 MiB SDI whose eight blobs each claim 2^63 bytes at the far end of the disk."""
    from parallel_flash.formats.sdi import build_sdi

    data = bytearray(build_sdi(part_size=0x4000))
    for entry in range(8):
        at = 0x400 + 64 * entry
        data[at : at + 8] = b"PART".ljust(8, b"\0")
        data[at + 16 : at + 32] = struct.pack("<QQ", (1 << 63) - 4096, (1 << 63) - 1)
    return bytes(data.ljust(64 << 20, b"\xa5"))


def secwim_catalog_bomb(small_wim: Path) -> Callable[[], bytes]:
    """A .secwim whose trailer claims a catalog of 4 GiB - 1."""

    def build() -> bytes:
        from parallel_flash.formats.sdi import build_sdi
        from parallel_flash.formats.secwim import build_secwim

        data = bytearray(build_secwim(build_sdi(part_size=0x4000), small_wim.read_bytes()))
        data[-4:] = struct.pack("<I", 0xFFFFFFFF)
        return bytes(data)

    return build


#: name -> (builder, the command after ``parallel-flash``, "{path}" being the file)
CASES: dict[str, tuple[Callable[[], bytes], tuple[str, ...]]] = {
    "GPT: a 2^50-byte disk": (huge_mainos, ("info", "{path}")),
    "SectorSize 2^62": (sector_size(1 << 62), ("info", "{path}")),
    "SectorSize 1 GiB": (sector_size(1 << 30), ("info", "{path}")),
    "400k validation entries": (many_validation_entries, ("info", "{path}")),
    "1 block x 300k locations": (write_fanout, ("info", "{path}")),
    "descriptor count 2^32-1": (descriptor_count, ("info", "{path}")),
    "block count 2^32-1": (block_count, ("info", "{path}")),
    "targeting count 2^32-1": (targeting_count, ("info", "{path}")),
    "64 MiB of valid descriptors": (max_descriptors, ("info", "{path}")),
    "SDI: 8 blobs of 2^63 bytes": (sdi_blob_bomb, ("info", "{path}")),
}


@dataclass(frozen=True)
class Measured:
    exit_code: int
    seconds: float  #: wall time
    cpu_seconds: float  #: user + system: what the work costs, whatever the machine's load
    peak_rss_mb: float
    stderr: str


_RUNNER = """
import json, os, sys, time
from parallel_flash.cli import main
t, c = time.monotonic(), os.times()
code = main(sys.argv[1:])
seconds = time.monotonic() - t
e = os.times()
cpu = (e.user - c.user) + (e.system - c.system)
# VmHWM, not ru_maxrss: the latter keeps the forking parent's peak across exec
with open("/proc/self/status") as status:
    rss = next(int(l.split()[1]) for l in status if l.startswith("VmHWM:")) / 1024
print(json.dumps({"code": code, "seconds": seconds, "cpu": cpu, "rss": rss}), file=sys.stderr)
"""


def run_case(args: Sequence[str], *, timeout: float = 120.0) -> Measured:
    """``parallel-flash ARGS`` in a fresh interpreter: exit code, time, peak RSS."""
    proc = subprocess.run(
        [sys.executable, "-c", _RUNNER, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = proc.stderr.strip().splitlines()
    stats = json.loads(lines[-1])
    return Measured(
        stats["code"], stats["seconds"], stats["cpu"], stats["rss"], "\n".join(lines[:-1])
    )
