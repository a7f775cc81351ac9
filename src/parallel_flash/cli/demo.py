"""``parallel-flash demo``: the built-in default job.

A simulated line of devices (8 at USB 2.0 speed unless told otherwise) boots
a WIM and an SDI the project generates itself -- no Microsoft file is shipped
or downloaded. With ``--from-ffu`` the whole seed flow runs: a generated disk
image becomes an FFU, img2wim turns it into a WIM, and the line boots that.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..image import ImageBuffer
from ..session import run_boot
from ._args import (
    DEFAULT_RATE_MBPS,
    add_boot_options,
    add_line_options,
    boot_options,
    byte_size,
    fault_spec,
    line_options,
    positive_float,
    presentation,
    rate_mbps,
    simulated_line,
)
from .boot import exit_code

__all__ = ("default_workdir", "register")


def default_workdir() -> Path:
    """Generated demo inputs are cached here, so a second demo starts at once."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "parallel-flash" / "demo"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="boot a simulated line of devices from a generated WIM (no USB needed)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--devices", type=int, default=8, metavar="N",
                        help="simulated devices (default 8)")
    parser.add_argument("--rate", type=rate_mbps, default=DEFAULT_RATE_MBPS, metavar="MB/s",
                        help="per-device link rate (default %(default)g: USB 2.0 in practice; "
                             "0 = no limit)")
    parser.add_argument("--bus-rate", type=positive_float, default=None, metavar="MB/s",
                        help="shared ceiling for the whole line (e.g. 53.248 for one USB 2.0 port)")
    parser.add_argument("--wim-size", type=byte_size, default=128 << 20, metavar="BYTES",
                        help="size of the generated WIM's content (default 128MiB)")
    parser.add_argument("--workdir", type=Path, default=None, metavar="DIR",
                        help=f"where generated inputs are kept (default {default_workdir()})")
    parser.add_argument("--fault", type=fault_spec, action="append", default=[],
                        metavar="SLOT:FAULTS", help="inject faults, e.g. 3:status=-5")
    parser.add_argument("--from-ffu", action="store_true",
                        help="run the whole seed flow: disk image -> FFU -> img2wim -> boot")
    add_boot_options(parser)
    add_line_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    line = simulated_line(
        args.devices, args.rate, args.bus_rate, args.fault,
        flags=("--devices", "--rate", "--fault"),
    )
    options = boot_options(args)
    line_settings = line_options(args)
    line_settings.check(args.report)
    workdir = args.workdir or default_workdir()
    workdir.mkdir(parents=True, exist_ok=True)
    if args.from_ffu:
        wim, sdi = _inputs_from_ffu(workdir)
    else:
        from ..demo.inputs import demo_inputs

        wim, sdi = demo_inputs(workdir, wim_size=args.wim_size)
    with ImageBuffer.load(wim, sdi) as image:
        result = run_boot(
            image,
            line,
            options=options,
            report=args.report,
            append_report=args.append,
            presentation=presentation(
                args, f"demo: {args.devices} simulated devices booting {wim.name}"
            ),
            line=line_settings,
        )
    return exit_code(result)


def _inputs_from_ffu(workdir: Path) -> tuple[Path, Path]:
    """The seed flow: a generated disk image as an FFU, converted by img2wim."""
    from ..demo.ffu import build_demo_ffu
    from ..demo.inputs import build_demo_sdi
    from ..img2wim.convert import img2wim

    def say(text: str) -> None:
        print(f"img2wim: {text}", file=sys.stderr, flush=True)

    say(f"building a demo disk image (GPT, FAT EFIESP, NTFS MainOS) as an FFU in {workdir}")
    ffu = build_demo_ffu(workdir)
    wim = workdir / "demo-from-ffu.wim"
    if wim.exists():
        wim.unlink()
    img2wim(ffu, wim, milestone=say)
    return wim, build_demo_sdi(workdir / "demo.sdi")
