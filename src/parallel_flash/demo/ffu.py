"""Build a small phone-like disk and its FFU, for ``demo --from-ffu``, tests and benchmarks.

The disk has the layout ImgToWIM expects: a GPT with EFIESP (FAT, made by
mkfs.vfat and filled with mtools), MainOS (NTFS, made by mkntfs and filled by
applying a wimlib capture of a file tree in NTFS-3G mode) and an unformatted
Data partition. Like a real MainOS, it has top-level junctions: ``Data`` and
``EFIESP`` lead to their volumes (ImgToWIM drops them), ``Documents and
Settings`` leads to ``C:\\Users`` (kept), and ``Users\\All Users`` is a nested
junction (kept: only top-level ones are considered).

Everything runs without root and without mounting anything.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import InputError
from ..formats.gpt import EFI_SYSTEM_TYPE, GptPartition, PartitionSpec, build_gpt
from ..img2wim import ntfs3g, wimlib
from .ffu_writer import StoreSource, write_ffu

__all__ = (
    "DEMO_JUNCTIONS",
    "DemoDisk",
    "build_demo_disk",
    "build_demo_ffu",
    "write_demo_tree",
)

logger = logging.getLogger(__name__)

MiB = 1 << 20
#: Top-level (and one nested) junctions made in MainOS; ``{Data}``/``{EFIESP}``
#: become the partitions' GUIDs.
DEMO_JUNCTIONS: dict[str, str] = {
    "/Data": "\\??\\Volume{{{Data}}}\\",
    "/EFIESP": "\\??\\Volume{{{EFIESP}}}\\",
    "/Documents and Settings": "\\??\\C:\\Users",
    "/Users/All Users": "\\??\\C:\\ProgramData",
}
_WORDS = (
    "device",
    "boot",
    "flash",
    "partition",
    "volume",
    "driver",
    "kernel",
    "registry",
    "service",
    "update",
    "package",
    "manifest",
    "catalog",
    "payload",
    "block",
    "chunk",
    "store",
    "sector",
    "junction",
    "image",
    "capture",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoDisk:
    path: Path  #: the raw disk image (sparse)
    tree: Path  #: the file tree MainOS was filled from
    partitions: tuple[GptPartition, ...]
    junctions: dict[str, str]  #: MainOS path -> junction target
    sector_size: int


def write_demo_tree(root: str | os.PathLike[str], *, size: int = 2 * MiB, seed: int = 1) -> Path:
    """A Windows-looking file tree of about ``size`` bytes: text-like and random files
    (so LZX has real work), nested directories, an empty file, and the empty
    directories that become junctions."""
    base = Path(root)
    rng = random.Random(seed)
    dirs = [
        "Windows/System32/drivers",
        "Windows/System32/config",
        "Windows/Fonts",
        "Program Files/Parallel Flash",
        "ProgramData/Microsoft",
        "Users/Public/Documents",
    ]
    for d in dirs:
        (base / d).mkdir(parents=True, exist_ok=True)
    for junction in DEMO_JUNCTIONS:
        (base / junction.lstrip("/")).mkdir(parents=True, exist_ok=True)
    (base / "Windows/System32/empty.log").write_bytes(b"")
    written = 0
    n = 0
    while written < size:
        folder = dirs[n % len(dirs)]
        n += 1
        length = min(size - written, rng.choice((300, 4096, 20000, 70000, 150000)))
        if n % 3 == 0:  # incompressible
            data = rng.randbytes(length)
            name = f"blob{n:03d}.bin"
        else:  # text-like, compressible
            text = " ".join(rng.choice(_WORDS) for _ in range(length // 6 + 1))
            data = text.encode()[:length]
            name = f"file{n:03d}.{'dll' if n % 2 else 'txt'}"
        (base / folder / name).write_bytes(data)
        written += length
    return base


def _run(argv: Sequence[str]) -> None:
    if shutil.which(argv[0]) is None:
        package = {"mkntfs": "ntfs-3g", "mkfs.vfat": "dosfstools"}.get(argv[0], "mtools")
        raise InputError(f"{argv[0]} not found: install Debian package {package}")
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise InputError(f"{' '.join(argv)} failed: {proc.stderr.strip() or proc.stdout.strip()}")


def _make_efiesp(path: Path, size: int, workdir: Path) -> None:
    with path.open("wb") as f:
        f.truncate(size)
    _run(["mkfs.vfat", "-n", "EFIESP", str(path)])
    boot = workdir / "bootarm.efi"
    boot.write_bytes(b"MZ" + bytes(510) + b"parallel-flash demo boot manager placeholder\n")
    env = ["-i", str(path)]
    _run(["mmd", *env, "::/EFI", "::/EFI/Microsoft", "::/EFI/Microsoft/Boot"])
    _run(["mcopy", *env, str(boot), "::/EFI/Microsoft/Boot/bootmgfw.efi"])
    boot.unlink()


def _make_mainos(path: Path, size: int, tree: Path, workdir: Path, targets: dict[str, str]) -> None:
    with path.open("wb") as f:
        f.truncate(size)
    _run(["mkntfs", "--quiet", "--fast", "--force", "--label", "MainOS", str(path)])
    staging = workdir / "mainos-tree.wim"
    wimlib.capture(tree, staging, image_name="MainOS tree", compression="none", boot=False)
    wimlib.apply(staging, path, ntfs=True)
    staging.unlink()
    for where, target in targets.items():
        ntfs3g.set_reparse_data(path, where, ntfs3g.mount_point_data(target))


def _copy_sparse(src: Path, dst_fd: int, offset: int) -> None:
    """Copy the data regions of ``src`` into ``dst_fd`` at ``offset``, leaving holes as holes."""
    zero = bytes(MiB)
    with src.open("rb") as f:
        pos = 0
        while True:
            piece = f.read(MiB)
            if not piece:
                break
            if piece != zero[: len(piece)]:
                os.pwrite(dst_fd, piece, offset + pos)
            pos += len(piece)


def build_demo_disk(
    workdir: str | os.PathLike[str],
    *,
    tree: str | os.PathLike[str] | None = None,
    tree_size: int = 2 * MiB,
    mainos_size: int = 16 * MiB,
    efiesp_size: int = 4 * MiB,
    data_size: int = 2 * MiB,
    mainos_fs: Literal["ntfs", "fat"] = "ntfs",
    partitions: Sequence[str] = ("EFIESP", "MainOS", "Data"),
) -> DemoDisk:
    """Lay out and fill the demo disk in ``workdir``; return where everything is.

    A given ``tree`` gets the (empty) junction directories added if missing.

    ``mainos_fs="fat"`` and ``partitions`` without EFIESP/MainOS make the
    images ImgToWIM must refuse (for tests).
    """
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    source = Path(tree) if tree is not None else write_demo_tree(work / "tree", size=tree_size)
    for junction in DEMO_JUNCTIONS:  # junctions are made from empty directories
        (source / junction.lstrip("/")).mkdir(parents=True, exist_ok=True)
    sizes = {"EFIESP": efiesp_size, "MainOS": mainos_size, "Data": data_size}
    specs = [
        PartitionSpec(name, sizes.get(name, 2 * MiB), EFI_SYSTEM_TYPE)
        if name == "EFIESP"
        else PartitionSpec(name, sizes.get(name, 2 * MiB))
        for name in partitions
    ]
    layout = build_gpt(specs)
    by_name = {p.name: p for p in layout.partitions}
    guids = {name: str(p.unique_guid) for name, p in by_name.items()}
    junctions = {
        path: target.format(**guids)
        for path, target in DEMO_JUNCTIONS.items()
        if all(f"{{{name}}}" not in target or name in guids for name in ("Data", "EFIESP"))
    }
    disk = work / "disk.img"
    fd = os.open(disk, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, layout.disk_size)
        os.pwrite(fd, layout.head, 0)
        os.pwrite(fd, layout.tail, layout.disk_size - len(layout.tail))
        for part in layout.partitions:
            image = work / f"{part.name}.img"
            if part.name == "EFIESP" or (part.name == "MainOS" and mainos_fs == "fat"):
                _make_efiesp(image, part.size, work)
            elif part.name == "MainOS":
                _make_mainos(image, part.size, source, work, junctions)
            else:
                continue  # Data: left unformatted, so the FFU never writes it
            _copy_sparse(image, fd, part.offset)
            image.unlink()
    finally:
        os.close(fd)
    logger.info("demo disk %s: %d bytes, partitions %s", disk, layout.disk_size, list(by_name))
    return DemoDisk(
        path=disk,
        tree=source,
        partitions=layout.partitions,
        junctions=junctions,
        sector_size=512,
    )


def build_demo_ffu(
    workdir: str | os.PathLike[str],
    *,
    mainos_size: int = 16 * MiB,
    version: Literal[1, 2] = 2,
    stores: int = 1,
    tree: str | os.PathLike[str] | None = None,
    tree_size: int = 2 * MiB,
) -> Path:
    """Build the demo disk in ``workdir`` and write it as ``workdir/demo.ffu``.

    With ``stores=2`` (v2 only) a second, small store is added, as a second
    LUN would be on a UFS device; MainOS stays in the first.
    """
    if stores < 1 or (version == 1 and stores != 1):
        raise ValueError("a v1 FFU has exactly one store; v2 has one or more")
    work = Path(workdir)
    disk = build_demo_disk(work, tree=tree, tree_size=tree_size, mainos_size=mainos_size)
    sources = [StoreSource(disk.path, device_path="VenHw(DEMO-LUN0)")]
    rng = random.Random(7)
    for n in range(1, stores):
        lun = work / f"lun{n}.img"
        with lun.open("wb") as f:
            f.truncate(MiB)
            f.write(rng.randbytes(200_000))
        sources.append(StoreSource(lun, device_path=f"VenHw(DEMO-LUN{n})"))
    ffu = work / "demo.ffu"
    write_ffu(sources, ffu, version=version)
    return ffu
