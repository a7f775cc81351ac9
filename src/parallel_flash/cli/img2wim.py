"""parallel-flash img2wim FFU WIM: an FFU's MainOS partition as a bootable WIM.

The open counterpart of Microsoft's ImgToWIM. Reads the FFU's headers and GPT,
checks every chunk of the file against its SHA-256 hash table while copying
MainOS out into a sparse temporary volume image, then captures it with wimlib
(libwim, NTFS-3G mode): LZX compression, image name "MainOS", boot index 1,
top-level junctions that lead to other partitions removed. The WIM is written
beside WIM under a temporary name and renamed when complete.

Refused (exit 2, nothing written): no EFIESP or no MainOS partition, a MainOS
that is not NTFS, a truncated, corrupt or implausible FFU (the error names the
field or chunk); an FFU that is not a regular file; a WIM path that is a
device, FIFO, socket, directory or the FFU itself, or that exists (unless
--force). SIGINT stops it with exit 130, SIGTERM with 143; either way the
temporary MainOS image and any partial WIM are removed.

Not done: the FFU's catalog signature is NOT verified (no Authenticode
check); only the hash table is. Compressed (v1.3) stores are not supported.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from ..errors import WimlibError
from ..img2wim.convert import IMAGE_NAME, Img2WimProgress, StopSignals, img2wim
from ..output.inspect import format_size
from ..output.ui import printable
from . import EXIT_FAILED, EXIT_OK
from ._args import int_range, writable_dir

__all__ = ("register", "run")

_STAGES = {
    "verify": "checking hashes, extracting MainOS",
    "scan": "scanning MainOS (NTFS-3G)",
    "write": "compressing (LZX) and writing",
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "img2wim",
        help="convert an FFU's MainOS partition into a bootable WIM (like ImgToWIM)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("ffu", metavar="FFU", type=Path, help="the FFU image to read")
    parser.add_argument("wim", metavar="WIM", type=Path, help="the WIM file to create")
    parser.add_argument(
        "--temp-dir",
        type=writable_dir,
        default=None,
        help="where the sparse MainOS image goes (default: the WIM's directory)",
    )
    parser.add_argument(
        "--threads",
        type=int_range(0, 256),
        default=0,
        help="compressor threads, 0..256 (default 0: one per CPU)",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace WIM if it exists (a regular file only)"
    )
    parser.add_argument("--no-progress", action="store_true", help="never draw progress bars")
    parser.set_defaults(func=run)


#: What to do instead, for a file img2wim does not take (by its magic bytes).
_NOT_AN_FFU = {
    "wim": "is a WIM already: boot it as it is (parallel-flash boot {path} --sdi boot.sdi)",
    "pipable-wim": "is a (pipable) WIM already, not an FFU; img2wim converts an FFU to a WIM",
    "secwim": "is a .secwim, which boots as it is: parallel-flash boot {path}",
    "sdi": "is an SDI, not an FFU: pass it to boot with --sdi",
}


def _refuse_what_is_not_an_ffu(path: str | os.PathLike[str]) -> None:
    """Name the file type and the right command, instead of an FFU parser's complaint."""
    from ..errors import InputError
    from ..formats.detect import detect_file_type

    if os.path.isfile(path):
        hint = _NOT_AN_FFU.get(detect_file_type(path) or "")
        if hint:
            raise InputError(f"{path}: {hint.format(path=path)}")


def run(args: argparse.Namespace) -> int:
    _refuse_what_is_not_an_ffu(args.ffu)
    console = Console(stderr=True, highlight=False)
    show_bars = console.is_terminal and not args.no_progress
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not show_bars,
        transient=False,
    )
    tasks: dict[str, TaskID] = {}

    def on_progress(report: Img2WimProgress) -> None:
        task = tasks.get(report.stage)
        if task is None:
            for other in tasks.values():  # earlier stages are done: show them full
                done = bars.tasks[other].total or bars.tasks[other].completed
                bars.update(other, total=done, completed=done)
            task = tasks[report.stage] = bars.add_task(
                _STAGES[report.stage], total=report.total or None
            )
        bars.update(task, completed=report.done, total=report.total or None)

    def on_milestone(text: str) -> None:
        line = Text(f"ImgToWIM: {printable(text)}")  # never markup: paths are literal
        if show_bars:
            bars.console.print(line)
        else:
            print(line.plain, flush=True)

    try:
        with StopSignals() as stop, bars:
            result = img2wim(
                args.ffu,
                args.wim,
                progress=on_progress,
                milestone=on_milestone,
                temp_dir=args.temp_dir,
                num_threads=args.threads,
                overwrite=args.force,
                stop=stop,
            )
    except WimlibError as exc:
        print(f"parallel-flash: error: {printable(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    info = result.wim_info
    print(
        f"{printable(str(result.wim))}: {format_size(info.file_size or 0)}, image '{IMAGE_NAME}', "
        f"boot index {info.boot_index}, {info.compression.upper()}"
    )
    print(
        f"checked {result.chunks_verified} FFU chunks; MainOS {format_size(result.mainos.size)}, "
        f"of which the FFU writes {format_size(result.mainos_written)}"
    )
    if result.removed_junctions:
        names = ", ".join(printable(name) for name in result.removed_junctions)
        print(f"removed junctions to other partitions: {names}")
    return EXIT_OK
