"""``parallel-flash boot WIM``: boot every attached device (or a simulated line)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from ..engine.pipeline import LineResult, StopReason
from ..engine.records import DeviceRecord, FailureReason, LineObserver, NullObserver
from ..engine.station import check_device_count
from ..errors import InputError, InvalidValue
from ..image import ImageBuffer, ImageSet
from ..output.line import LineOptions
from ..protocol.selection import Loader
from ..session import run_boot, run_usb
from . import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from ._args import (
    DEFAULT_RATE_MBPS,
    add_boot_options,
    add_line_options,
    boot_options,
    fault_spec,
    line_options,
    positive_float,
    presentation,
    rate_mbps,
    sim_mix,
    simulated_line,
)
from ._usb import loader_ids

__all__ = ("exit_code", "register")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "boot",
        help="boot devices from a WIM, .secwim or FFU loaded into their RAM",
        description=(
            "Send the image to every device in flashing mode at once and let each boot it "
            "from RAM, each device through its own loader: SimpleIO devices "
            f"({loader_ids(Loader.SIMPLEIO)}) take "
            "SDI + WIM or a .secwim (ffutool -WIM, in parallel); Lumia flash-app devices take a "
            "signed .secwim (MMOS over USB); UFP devices "
            f"({loader_ids(Loader.UFP)}) take an FFU (FFU to RAM). "
            "A device whose loader cannot take FILE fails, saying which file it needs. "
            "The Lumia and UFP loaders are derived from public host code (WPinternals, "
            "UnifiedFlashingPlatform) and have not been tried on hardware; ffutool's -WIM on "
            "UFP devices uses a closed native path and is not offered. "
            "Exit status: 0 all booted, 1 any failed (or the report could not be written), 2 bad "
            "input, 130 interrupted (Ctrl-C). SIGTERM or SIGHUP end a run normally: 0 unless a "
            "device failed. SIGUSR1 reopens the --report file (logrotate) and ends nothing."
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
        "--sim-rate", type=rate_mbps, default=DEFAULT_RATE_MBPS, metavar="MB/s",
        help="per-device link rate of simulated devices (default %(default)g; 0 = unthrottled)",
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
    """Which real USB devices to boot (the filters ``list`` shares), station mode, confirmation."""
    from ._usb import add_usb_arguments, usb_id

    add_usb_arguments(parser)
    station = parser.add_argument_group("station mode (production line)")
    station.add_argument("--watch", action="store_true",
                         help="keep running and boot each device as it is plugged in")
    station.add_argument("--count", type=_device_count, default=None, metavar="N",
                         help="with --watch: stop after N devices")
    station.add_argument("--poll", action="store_true",
                         help="poll for devices instead of using libusb hotplug events")
    confirm = parser.add_argument_group("boot confirmation")
    confirm.add_argument(
        "--confirm", "--wait-boot", dest="confirm", type=float, default=None, metavar="S",
        help="after its status, a device must leave flashing mode within S seconds (and, with "
             "--expect, appear on its port as the booted image); a phone back on its port in "
             "flashing mode is identified: the same unique ID is a failed boot, another one a "
             "new device. Default 30 with --watch, off otherwise; 0 turns it off",
    )
    confirm.add_argument("--expect", type=usb_id, default=None, metavar="VID:PID",
                         help="the USB ID the booted image shows (e.g. 045E:0A00), awaited on "
                              "the same port to confirm the boot")


def _device_count(text: str) -> int:
    """``--count``: the engine's rule (:func:`check_device_count`), worded by argparse."""
    try:
        return check_device_count(int(text))
    except InvalidValue as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def run(args: argparse.Namespace) -> int:
    options = boot_options(args)
    _check_device_arguments(args)
    line = line_options(args, station=args.watch)
    sim_line = None
    if args.sim is not None:
        sim_line = simulated_line(
            args.sim, args.sim_rate, args.sim_bus_rate, args.sim_fault,
            flags=("--sim", "--sim-rate", "--sim-fault"),
            mix=args.sim_mix,
        )
    image = load_images(args.wim, args.sdi)
    with image:
        ffu_hint = _FfuRefused.watching(image)
        if sim_line is not None:
            result = run_boot(
                image,
                sim_line,
                options=options,
                report=args.report,
                append_report=args.append,
                presentation=presentation(args, f"booting {image.wim_path}"),
                extra_observers=ffu_hint.observers,
                line=line,
            )
            ffu_hint.say()
            return exit_code(result)
        code = _run_usb(args, image, options, line, ffu_hint.observers)
        ffu_hint.say()
        return code


class _FfuRefused(NullObserver):
    """Notes a device whose loader boots a WIM refusing the FFU given: img2wim is the way.

    The FFU is right for UFP devices, so nothing is said before the run; the
    hint comes after it, once a device showed it needed a WIM.
    """

    def __init__(self, ffu: str | None) -> None:
        self.ffu = ffu
        self.refused = 0

    @classmethod
    def watching(cls, image: ImageBuffer | ImageSet) -> _FfuRefused:
        given = image.images if isinstance(image, ImageSet) else (image,)
        return cls(next((one.wim_path for one in given if one.kind == "ffu"), None))

    @property
    def observers(self) -> tuple[LineObserver, ...]:
        return (self,) if self.ffu is not None else ()

    def device_finished(self, record: DeviceRecord) -> None:
        wim_loaders = {loader.value for loader in Loader if loader.takes("wim")}
        if record.reason is FailureReason.REFUSED and record.loader in wim_loaders:
            self.refused += 1

    def say(self) -> None:
        if self.refused:
            _say(
                f"hint: to boot these devices from {self.ffu}, convert its MainOS first: "
                f"parallel-flash img2wim {self.ffu} OUT.wim"
            )


def load_images(paths: list[str], sdi: str | None) -> ImageBuffer | ImageSet:
    """One image, or a set for a mixed line; ``--sdi`` goes with the WIM among them.

    :raises ~parallel_flash.errors.InputError: a bad file, two files of one kind, or a
        WIM and a .secwim together (SimpleIO devices would take either).
    """
    from ..engine.pipeline import check_images
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


def _check_device_arguments(args: argparse.Namespace) -> None:
    """Bad combinations, before the image is read or any device touched."""
    if args.sim is not None:
        for flag, given in (
            ("--watch", args.watch), ("--confirm", args.confirm is not None),
            ("--expect", args.expect is not None),
        ):
            if given:
                raise InputError(f"{flag} needs USB devices; it cannot be combined with --sim")
    if not args.watch and args.count is not None:
        raise InputError("--count applies to station mode; add --watch")
    if args.confirm is not None and not 0 <= args.confirm < float("inf"):
        raise InputError(f"--confirm must be a number of seconds >= 0, not {args.confirm:g}")
    if args.expect is not None and args.confirm == 0:
        raise InputError("--expect needs a confirmation window; --confirm 0 turns it off")


def _run_usb(
    args: argparse.Namespace,
    image: ImageBuffer | ImageSet,
    options: object,
    line: LineOptions,
    extra_observers: tuple[LineObserver, ...],
) -> int:
    from ..engine.pipeline import BootOptions
    from ..engine.station import DEFAULT_CONFIRM_SECONDS, Confirmation
    from ._usb import filters_from_args

    assert isinstance(options, BootOptions)
    filters = filters_from_args(args)
    seconds = args.confirm
    if seconds is None and (args.watch or args.expect is not None):
        seconds = DEFAULT_CONFIRM_SECONDS
    confirmation = Confirmation(seconds=seconds, expect=args.expect) if seconds else None

    def ready() -> None:
        bound = f"; stopping after {args.count} devices" if args.count else "; Ctrl-C to stop"
        _say(f"station ready, waiting for devices ({filters.describe()}){bound}")

    result = run_usb(
        image,
        filters=filters,
        options=options,
        station=args.watch,
        count=args.count,
        confirmation=confirmation,
        polling=True if args.poll else None,
        report=args.report,
        append_report=args.append,
        presentation=presentation(
            args, f"station: {image.wim_path}" if args.watch else f"booting {image.wim_path}"
        ),
        on_ready=ready if args.watch else None,
        extra_observers=extra_observers,
        line=line,
    )
    if args.watch:
        totals = result.totals
        text = f"station: {totals.booted} booted, {totals.failed} failed"
        if totals.interrupted:
            text += f", {totals.interrupted} interrupted"
        if result.stop is not None:
            text += f" ({result.stop.value})"
        _say(text)
    return exit_code(result)




def _say(text: str) -> None:
    """A line on stderr; a terminal that is gone (SIGHUP) is not an error."""
    with contextlib.suppress(OSError):
        print(f"parallel-flash: {text}", file=sys.stderr, flush=True)


def exit_code(result: LineResult) -> int:
    """0 all booted (or a normal end of shift with no failure), 1 any failed, 130 Ctrl-C."""
    if result.report_error is not None:
        _say(
            f"error: {result.report_error}; the records written before it are on disk, "
            "no device was started after it"
        )
        return EXIT_FAILED
    if result.stop is StopReason.INTERRUPT:
        return EXIT_INTERRUPTED
    totals = result.totals
    if totals.failed:
        return EXIT_FAILED
    if result.stop in (StopReason.TERMINATE, StopReason.HANGUP):
        return EXIT_OK
    if totals.total == 0:
        _say("no device was booted")
        return EXIT_FAILED
    return EXIT_OK if totals.booted == totals.total else EXIT_FAILED
