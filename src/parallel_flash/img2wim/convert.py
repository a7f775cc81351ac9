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

The output must be a new regular file (an existing one only with
``overwrite``), never a device, FIFO, socket, directory or the FFU itself;
that is checked before anything is read. :class:`StopSignals` turns SIGINT
and SIGTERM into :class:`Stopped`, raised where it is safe (never inside
libwim's C code), so every temporary file and partial WIM is removed.

The catalog's signature is *not* verified. The engine reports progress and
milestones through callbacks and never imports rich; the CLI draws them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from ..errors import FormatError, InputError, WimlibError
from ..formats import check_output_path, open_regular
from ..formats.ffu import Ffu, read_ffu
from ..formats.ffu_disk import REQUIRED_PARTITIONS, MainOs, find_mainos, read_partition_tables
from ..formats.gpt import GptPartition
from . import ntfs3g, wimlib
from .partition_extract import ExtractedPartition, extract_partition

__all__ = (
    "IMAGE_NAME",
    "REQUIRED_PARTITIONS",
    "Img2WimProgress",
    "Img2WimResult",
    "StopSignals",
    "Stopped",
    "img2wim",
    "leads_to_other_volume",
)

logger = logging.getLogger(__name__)

#: The only partition ImgToWIM captures, and the image name it gives it.
IMAGE_NAME = "MainOS"
#: The drive letter MainOS has on the device; a junction to another letter
#: leads off the volume.
MAINOS_DRIVE = "C"


#: img2wim's progress reports: wimlib's one progress type, with stage "verify"
#: (hash check + extraction, FFU bytes), "scan" (wimlib reading MainOS; total 0 =
#: unknown) or "write" (compressing).
Img2WimProgress = wimlib.WimProgress


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


MilestoneCallback = Callable[[str], None]


class Stopped(KeyboardInterrupt):
    """img2wim was stopped by SIGINT or SIGTERM; everything it made is removed.

    A KeyboardInterrupt, so code that handles Ctrl-C handles it; ``signum``
    says which signal (the CLI exits 128 + signum: 130 or 143).
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """Turn SIGINT and SIGTERM into :class:`Stopped` for the life of a ``with`` block.

    Raised at once from Python code; while libwim runs C code (:meth:`deferred`)
    the signal is only noted and raised by :meth:`check`, which img2wim calls
    from libwim's progress callback, so libwim unwinds through its own abort
    path and removes its partial file. After the first stop, further signals
    are noted but never raised, so cleanup is not cut short.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._defer = 0
        self._raised = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
        if not self._defer:
            self.check()

    def check(self) -> None:
        """Raise :class:`Stopped` if a signal arrived and none was raised yet."""
        if self.signum is not None and not self._raised:
            self._raised = True
            raise Stopped(self.signum)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Signals in this block are noted, raised by the next :meth:`check`."""
        self._defer += 1
        try:
            yield
        finally:
            self._defer -= 1
        self.check()


def img2wim(
    ffu_path: str | os.PathLike[str],
    wim_path: str | os.PathLike[str],
    *,
    progress: wimlib.WimProgressCallback | None = None,
    milestone: MilestoneCallback | None = None,
    temp_dir: str | os.PathLike[str] | None = None,
    compression: wimlib.Compression = "lzx",
    num_threads: int = 0,
    overwrite: bool = False,
    stop: StopSignals | None = None,
) -> Img2WimResult:
    """Convert the FFU at ``ffu_path`` into a WIM of its MainOS partition at ``wim_path``.

    :param progress: receives :class:`Img2WimProgress` reports.
    :param milestone: receives the steps Microsoft's tool prints ("Reading the
        image file", ...); logged at INFO when not given.
    :param temp_dir: where the sparse MainOS image goes; default: beside the WIM.
    :param overwrite: replace an existing (regular) WIM file.
    :param stop: signal handling to honour inside libwim (see :class:`StopSignals`).
    :raises ~parallel_flash.errors.FormatError: bad or corrupt FFU, missing
        EFIESP/MainOS, MainOS not NTFS (or not readable as NTFS).
    :raises ~parallel_flash.errors.InputError: unusable WIM path or temp dir.
    :raises ~parallel_flash.errors.WimlibError: wimlib failed writing the WIM.
    :raises Stopped: a signal arrived (with ``stop``); nothing is left behind.
    """
    say = milestone or (lambda text: logger.info("%s", text))
    ffu_file, wim_file = Path(ffu_path), Path(wim_path)
    with open_regular(ffu_file):
        pass  # refuses a FIFO, device or directory before anything else
    check_output_path(wim_file, what="WIM", inputs=[ffu_file], overwrite=overwrite)
    work = _work_dir(temp_dir, wim_file)
    seconds: dict[str, float] = {}
    t0 = time.monotonic()

    say(f"Reading the image file {ffu_file}")
    ffu = read_ffu(ffu_file)
    mainos = find_mainos(ffu, read_partition_tables(ffu))
    seconds["headers"] = time.monotonic() - t0

    with tempfile.TemporaryDirectory(prefix=".img2wim-", dir=work) as tmp:
        volume = Path(tmp) / "MainOS.ntfs"
        t1 = time.monotonic()

        extracted = _extract(ffu, mainos, volume, progress)
        allocated = extracted.allocated
        seconds["verify+extract"] = time.monotonic() - t1

        say(f"Creating the WIM {wim_file}")
        say(f"Capturing '{IMAGE_NAME}'")
        t2 = time.monotonic()
        capture = _Capture(ffu_file, volume, progress, stop)
        info = capture.run(wim_file, compression, num_threads, overwrite)
        seconds["capture"] = time.monotonic() - t2
    say("WIM creation complete")
    seconds["total"] = time.monotonic() - t0
    return Img2WimResult(
        ffu=ffu_file,
        wim=wim_file,
        ffu_version=ffu.version,
        platform_ids=ffu.platform_ids,
        store_number=mainos.store.number,
        mainos=mainos.partition,
        chunks_verified=extracted.chunks_verified,
        mainos_written=extracted.written,
        temp_allocated=allocated,
        removed_junctions=tuple(capture.removed),
        kept_reparse_points=tuple(capture.kept),
        wim_info=info,
        seconds=seconds,
    )


def _extract(
    ffu: Ffu, mainos: MainOs, volume: Path, progress: wimlib.WimProgressCallback | None
) -> ExtractedPartition:
    """MainOS into the sparse ``volume``, in the pass that checks every chunk's hash."""

    def on_bytes(done: int, total: int) -> None:
        if progress is not None:
            progress(Img2WimProgress(stage="verify", done=done, total=total))

    return extract_partition(
        ffu,
        mainos.store,
        mainos.gpt,
        mainos.partition,
        volume,
        progress=on_bytes,
        disk=mainos.disk,
    )


class _Capture:
    """wimlib's capture of the extracted MainOS, with junction pruning and stops."""

    def __init__(
        self,
        ffu: Path,
        volume: Path,
        progress: wimlib.WimProgressCallback | None,
        stop: StopSignals | None,
    ) -> None:
        self.ffu = ffu
        self.volume = volume
        self.progress = progress
        self.stop = stop
        self.removed: list[str] = []
        self.kept: list[str] = []

    def run(
        self, wim: Path, compression: wimlib.Compression, threads: int, overwrite: bool
    ) -> wimlib.WimInfo:
        guard = self.stop.deferred() if self.stop is not None else contextlib.nullcontext()
        try:
            with guard:
                return wimlib.capture(
                    self.volume,
                    wim,
                    image_name=IMAGE_NAME,
                    compression=compression,
                    ntfs=True,
                    boot=True,
                    progress=self.on_wim,
                    prune=self.prune,
                    num_threads=threads,
                    overwrite=overwrite,
                )
        except WimlibError as exc:
            if exc.path != os.fspath(self.volume):
                raise
            # The volume is a temporary file that is gone when this is read:
            # name the FFU's partition instead.
            raise FormatError(
                os.fspath(self.ffu),
                "MainOS partition",
                f"its NTFS file system cannot be read ({exc.operation}: {exc.detail}"
                f"{'; ' + exc.printed if exc.printed else ''})",
            ) from None

    def on_wim(self, report: wimlib.WimProgress) -> None:
        if self.stop is not None:
            self.stop.check()
        if self.progress is not None and report.stage in ("scan", "write"):
            self.progress(report)

    def prune(self, top: list[wimlib.FileEntry]) -> Sequence[str]:
        links = [e.path for e in top if e.is_reparse_point]
        for path, point in ntfs3g.read_reparse_points(self.volume, links).items():
            if point is not None and leads_to_other_volume(point):
                logger.info("removing junction %r -> %r", path, point.substitute_name)
                self.removed.append(path)
            else:
                self.kept.append(path)
        return self.removed


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


def _work_dir(temp_dir: str | os.PathLike[str] | None, wim: Path) -> Path:
    """The directory for the sparse MainOS image: ``temp_dir``, or beside the WIM."""
    if temp_dir is None:
        return wim.parent if str(wim.parent) else Path(".")
    work = Path(temp_dir)
    if not work.exists():
        raise InputError(f"temporary directory {work}: does not exist")
    if not work.is_dir():
        raise InputError(f"temporary directory {work}: is not a directory")
    if not os.access(work, os.W_OK | os.X_OK):
        raise InputError(f"temporary directory {work}: is not writable")
    return work
