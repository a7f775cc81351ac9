"""``parallel-flash boot WIM``: boot every attached device (or a simulated line)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..engine.pipeline import LineResult
from ..image import ImageBuffer, ImageSet
from ..session import LinkSource, Presentation, run_boot
from . import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from ._args import (
    add_boot_options,
    add_line_options,
    boot_options,
    fault_spec,
    line_options,
    positive_float,
    rate_mbps,
    sim_mix,
    simulated_line,
    timeout_seconds,
)

__all__ = ("exit_code", "register")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "boot",
        help="boot devices from a WIM, .secwim or FFU loaded into their RAM",
        description=(
            "Send the image to every device in flashing mode at once and let each boot it "
            "from RAM, each device through its own loader: SimpleIO devices (045E:062A) take "
            "SDI + WIM or a .secwim (ffutool -WIM, in parallel); Lumia flash-app devices take a "
            "signed .secwim (MMOS over USB); UFP devices (045E:0658) take an FFU (FFU to RAM). "
            "A device whose loader cannot take FILE fails, saying which file it needs. "
            "The Lumia and UFP loaders are derived from public host code (WPinternals, "
            "UnifiedFlashingPlatform) and have not been tried on hardware; ffutool's -WIM on "
            "UFP devices uses a closed native path and is not offered. "
            "Exit status: 0 all booted, 1 any failed, 2 bad input, 130 interrupted."
        ),
    )
    parser.add_argument(
        "wim", metavar="FILE", nargs="+",
        help="the WIM (with --sdi), a .secwim holding its own SDI, or an FFU for UFP devices; "
             "for a mixed line, one file of each kind (e.g. x.secwim y.ffu)",
    )
    parser.add_argument("--sdi", metavar="FILE", help="the SDI sent in front of the WIM (boot.sdi)")
    sim = parser.add_argument_group("simulated line (no USB)")
    sim.add_argument("--sim", type=int, metavar="N", help="boot N simulated devices instead of USB")
    sim.add_argument(
        "--sim-rate", type=rate_mbps, default=40.0, metavar="MB/s",
        help="per-device link rate of simulated devices (default 40; 0 = unthrottled)",
    )
    sim.add_argument(
        "--sim-bus-rate", type=positive_float, default=None, metavar="MB/s",
        help="shared ceiling for all simulated devices (USB 2.0 root port: 53.248)",
    )
    sim.add_argument(
        "--sim-fault", type=fault_spec, action="append", default=[], metavar="SLOT:FAULTS",
        help="inject faults into simulated device SLOT, e.g. 3:status=-5, 2:stop-reading=1048576 "
             "(Lumia/UFP slots: e.g. 7:no-mmos, 8:status=0x1003)",
    )
    sim.add_argument(
        "--sim-mix", type=sim_mix, default=None, metavar="KIND=N,...",
        help="make the last slots Lumia or UFP devices, e.g. lumia=2,ufp-v1=1,ufp-v2=1",
    )
    add_boot_options(parser)
    add_line_options(parser)
    _add_usb_arguments(parser)
    parser.set_defaults(func=run)


def _add_usb_arguments(parser: argparse.ArgumentParser) -> None:
    """Which real USB devices to boot (the filters ``list`` shares), and station mode."""
    from ..engine.discovery import add_usb_arguments

    add_usb_arguments(parser)
    station = parser.add_argument_group("station mode (production line)")
    station.add_argument("--watch", action="store_true",
                         help="keep running and boot each device as it is plugged in")
    station.add_argument("--count", type=int, default=None, metavar="N",
                         help="with --watch: stop after N boots")
    station.add_argument("--wait-boot", type=timeout_seconds, default=None, metavar="S",
                         help="after a boot, wait S seconds for the device to leave flashing "
                              "mode; fail it if it comes back in flashing mode on that port")
    station.add_argument("--poll", action="store_true",
                         help="poll for devices instead of using libusb hotplug events")


def run(args: argparse.Namespace) -> int:
    options = boot_options(args)
    source = _link_source(args)
    line = line_options(args, station=args.watch)
    image = load_images(args.wim, args.sdi)
    with image:
        if args.watch:
            from ..engine.station import run_station_cli
            from ..output.line import LineIntegration

            line.check(args.report)
            integration = LineIntegration(line, image) if line.active else None
            return run_station_cli(args, image, options, integration)
        result = run_boot(
            image,
            source,
            options=options,
            report=args.report,
            append_report=args.append,
            presentation=Presentation(
                live=args.live,
                title=f"booting {image.wim_path}",
                # --report -: the records own standard output
                stream=sys.stderr if args.report == "-" else None,
            ),
            line=line,
        )
    return exit_code(result)


def load_images(paths: list[str], sdi: str | None) -> ImageBuffer | ImageSet:
    """One image, or a set for a mixed line; ``--sdi`` goes with the WIM among them.

    :raises ~parallel_flash.errors.InputError: a bad file, two files of one kind, or a
        WIM and a .secwim together (SimpleIO devices would take either).
    """
    from ..engine.pipeline import check_images
    from ..errors import InputError
    from ..formats.detect import detect_file_type

    if len(paths) == 1:
        return ImageBuffer.load(paths[0], sdi)
    images: list[ImageBuffer] = []
    if sdi is not None and not any(
        Path(path).is_file() and detect_file_type(path) in ("wim", "pipable-wim") for path in paths
    ):
        raise InputError(f"--sdi {sdi}: goes with a WIM, and none of {', '.join(paths)} is one")
    try:
        for path in paths:
            is_wim = Path(path).is_file() and detect_file_type(path) in ("wim", "pipable-wim")
            images.append(ImageBuffer.load(path, sdi if is_wim else None))
        loaded = ImageSet(images)
        check_images(loaded)
    except BaseException:
        for image in images:
            image.close()
        raise
    return loaded


def _link_source(args: argparse.Namespace) -> LinkSource:
    """Check the device-side arguments before the image is read."""
    from ..errors import InputError

    if args.sim is None:
        from ..engine.discovery import usb_link_source

        return usb_link_source(args)
    if args.watch:
        raise InputError("--watch waits for USB devices; it cannot be combined with --sim")
    return simulated_line(
        args.sim, args.sim_rate, args.sim_bus_rate, args.sim_fault,
        flags=("--sim", "--sim-rate", "--sim-fault"),
        mix=args.sim_mix,
    )


def exit_code(result: LineResult) -> int:
    if result.interrupted:
        return EXIT_INTERRUPTED
    if not result.records:
        print("parallel-flash: no device was booted", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK if result.all_booted else EXIT_FAILED
