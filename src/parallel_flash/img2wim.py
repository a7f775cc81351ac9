"""ImgToWIM: turn an FFU into a bootable WIM of its MainOS partition.

Microsoft's ``ImgToWIM <FFUFileName> <WIMFileName>`` is the first half of the
MMOS flow; this is the open equivalent (formats.md, end of "FFU"):

1. read the FFU's headers and the GPT from its blocks; refuse an image with no
   EFIESP or no MainOS partition, or whose MainOS is not NTFS;
2. in one pass over the file, check every chunk against the hash table and
   copy MainOS's written blocks into a sparse temporary volume image;
3. capture that volume with wimlib in NTFS-3G mode (ACLs, short names, named
   streams and reparse points kept), LZX, image name "MainOS", boot index 1,
   without the top-level junctions that lead to other partitions;
4. write the WIM beside the target and rename it into place, so a failure or
   Ctrl-C never leaves a partial WIM.

The catalog's signature is *not* verified. The engine reports progress and
milestones through callbacks and never imports rich; the CLI draws them.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from . import ntfs3g, wimlib
from .errors import FormatError, InputError
from .formats.ffu import Ffu, read_ffu
from .formats.gpt import GptPartition
from .partition_extract import (
    StoreDisk,
    extract_partition,
    find_partition,
    read_partition_tables,
)

__all__ = (
    "IMAGE_NAME",
    "REQUIRED_PARTITIONS",
    "Img2WimProgress",
    "Img2WimResult",
    "img2wim",
    "leads_to_other_volume",
)

logger = logging.getLogger(__name__)

#: The only partition ImgToWIM captures, and the image name it gives it.
IMAGE_NAME = "MainOS"
#: ImgToWIM refuses an FFU without these (EFIESP: it is not a phone image).
REQUIRED_PARTITIONS = ("EFIESP", "MainOS")
#: The drive letter MainOS has on the device; a junction to another letter
#: leads off the volume.
MAINOS_DRIVE = "C"


@dataclass(frozen=True, slots=True)
class Img2WimProgress:
    """Progress of one stage: "verify" (hash check + extraction, FFU bytes),
    "scan" (wimlib reading MainOS; total 0 = unknown) or "write" (compressing)."""

    stage: Literal["verify", "scan", "write"]
    done: int
    total: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Img2WimResult:
    """What one conversion read from the FFU and wrote."""

    ffu: Path
    wim: Path
    ffu_version: int
    platform_ids: tuple[str, ...]
    store_number: int
    mainos: GptPartition
    chunks_verified: int
    mainos_written: int  #: bytes the FFU writes into MainOS
    temp_allocated: int  #: disk space the sparse MainOS image used
    removed_junctions: tuple[str, ...]
    kept_reparse_points: tuple[str, ...]
    wim_info: wimlib.WimInfo
    seconds: dict[str, float] = field(default_factory=dict)


ProgressCallback = Callable[[Img2WimProgress], None]
MilestoneCallback = Callable[[str], None]


def img2wim(
    ffu_path: str | os.PathLike[str],
    wim_path: str | os.PathLike[str],
    *,
    progress: ProgressCallback | None = None,
    milestone: MilestoneCallback | None = None,
    temp_dir: str | os.PathLike[str] | None = None,
    compression: wimlib.Compression = "lzx",
    num_threads: int = 0,
) -> Img2WimResult:
    """Convert the FFU at ``ffu_path`` into a WIM of its MainOS partition at ``wim_path``.

    :param progress: receives :class:`Img2WimProgress` reports.
    :param milestone: receives the steps Microsoft's tool prints ("Reading the
        image file", ...); logged at INFO when not given.
    :param temp_dir: where the sparse MainOS image goes; default: beside the WIM.
    :raises ~parallel_flash.errors.FormatError: bad or corrupt FFU, missing
        EFIESP/MainOS, MainOS not NTFS.
    :raises ~parallel_flash.errors.InputError: unusable WIM path.
    :raises ~parallel_flash.errors.WimlibError: wimlib failed.
    """
    say = milestone or (lambda text: logger.info("%s", text))
    ffu_file, wim_file = Path(ffu_path), Path(wim_path)
    _check_target(wim_file)
    seconds: dict[str, float] = {}
    t0 = time.monotonic()

    say(f"Reading the image file {ffu_file}")
    ffu = read_ffu(ffu_file)
    tables = read_partition_tables(ffu)
    found = {name: find_partition(tables, name) for name in REQUIRED_PARTITIONS}
    for name, hit in found.items():
        if hit is None:
            raise FormatError(
                str(ffu_file),
                "partition table",
                f"no {name} partition: only FFUs with EFIESP and MainOS partitions can be "
                f"converted (found: {_partition_names(tables) or 'no GPT in any store'})",
            )
    main = found["MainOS"]
    assert main is not None
    store, gpt, mainos = main
    _check_ntfs(ffu, StoreDisk(ffu, store, disk_size=gpt.disk_size), mainos)
    seconds["headers"] = time.monotonic() - t0

    work = Path(temp_dir) if temp_dir is not None else wim_file.parent
    with tempfile.TemporaryDirectory(prefix=".img2wim-", dir=work) as tmp:
        volume = Path(tmp) / "MainOS.ntfs"
        t1 = time.monotonic()

        def on_bytes(done: int, total: int) -> None:
            if progress is not None:
                progress(Img2WimProgress("verify", done, total))

        extracted = extract_partition(ffu, store, gpt, mainos, volume, progress=on_bytes)
        allocated = extracted.allocated
        seconds["verify+extract"] = time.monotonic() - t1

        removed: list[str] = []
        kept: list[str] = []

        def prune(top: list[wimlib.FileEntry]) -> Sequence[str]:
            links = [e.path for e in top if e.is_reparse_point]
            for path, point in ntfs3g.read_reparse_points(volume, links).items():
                if point is not None and leads_to_other_volume(point):
                    logger.info("removing junction %s -> %s", path, point.substitute_name)
                    removed.append(path)
                else:
                    kept.append(path)
            return removed

        def on_wim(report: wimlib.WimProgress) -> None:
            if progress is not None and report.stage in ("scan", "write"):
                stage: Literal["scan", "write"] = "scan" if report.stage == "scan" else "write"
                progress(Img2WimProgress(stage, report.done, report.total))

        say(f"Creating the WIM {wim_file}")
        say(f"Capturing '{IMAGE_NAME}'")
        t2 = time.monotonic()
        info = wimlib.capture(
            volume,
            wim_file,
            image_name=IMAGE_NAME,
            compression=compression,
            ntfs=True,
            boot=True,
            progress=on_wim,
            prune=prune,
            num_threads=num_threads,
        )
        seconds["capture"] = time.monotonic() - t2
    say("WIM creation complete")
    seconds["total"] = time.monotonic() - t0
    return Img2WimResult(
        ffu=ffu_file,
        wim=wim_file,
        ffu_version=ffu.version,
        platform_ids=ffu.platform_ids,
        store_number=store.number,
        mainos=mainos,
        chunks_verified=extracted.chunks_verified,
        mainos_written=extracted.written,
        temp_allocated=allocated,
        removed_junctions=tuple(removed),
        kept_reparse_points=tuple(kept),
        wim_info=info,
        seconds=seconds,
    )


def leads_to_other_volume(point: ntfs3g.ReparsePoint, *, drive: str = MAINOS_DRIVE) -> bool:
    """Whether a junction/symlink's target lies off the MainOS volume.

    ``\\??\\Volume{guid}\\`` (a volume mount point, how WP mounts Data and
    EFIESP), another drive letter, a ``\\Device\\`` path or a UNC path lead
    elsewhere; ``\\??\\C:\\...`` and relative links stay on MainOS.
    """
    if point.relative:
        return False
    target = point.substitute_name.replace("/", "\\")
    for prefix in ("\\??\\", "\\\\?\\"):
        if target.startswith(prefix):
            target = target[len(prefix) :]
            break
    lowered = target.lower()
    if lowered.startswith(("volume{", "\\device\\", "globalroot\\", "unc\\", "\\\\")):
        return True
    letter = re.match(r"([A-Za-z]):", target)
    if letter:
        return letter.group(1).upper() != drive.upper()
    return False


def _check_target(wim: Path) -> None:
    if wim.is_dir():
        raise InputError(f"{wim}: is a directory; give the WIM file to create")
    if not wim.parent.is_dir():
        raise InputError(f"{wim}: directory {wim.parent} does not exist")
    if not os.access(wim.parent, os.W_OK):
        raise InputError(f"{wim}: cannot write to {wim.parent}")


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
        what = f"its boot sector has OEM id {boot[3:11]!r}"
    raise FormatError(
        ffu.path,
        "MainOS partition",
        f"is not NTFS ({what}); ImgToWIM can only capture an NTFS MainOS",
    )


def _partition_names(tables: list) -> str:  # type: ignore[type-arg]
    names = [p.name for t in tables if t.gpt is not None for p in t.gpt.partitions]
    return ", ".join(names)
