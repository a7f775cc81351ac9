"""``parallel-flash emulate -- COMMAND``: run COMMAND against a line of emulated devices.

COMMAND runs under umockdev's preload and sees the devices as real USB
hardware through unmodified libusb; afterwards the emulator reports what each
device received. Exit status: COMMAND's (128 + N when a signal killed it),
2 for bad arguments or a missing Debian package.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from ..emulator import DeviceSpec, EmulatedLine, PortPath
from ..errors import EmulatorError
from . import EXIT_USAGE
from ._args import positive_float, sim_mix

__all__ = ("register", "render_summary", "run")

logger = logging.getLogger(__name__)

_COMMAND_NOT_FOUND = 127


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "emulate",
        help="run a command against a line of emulated USB devices (umockdev)",
        description=(
            "Start N emulated devices in flashing mode behind umockdev, run COMMAND so that "
            "it sees them as real USB devices (through unmodified libusb), then report what "
            "each device received. Needs the Debian packages umockdev, gir1.2-umockdev-1.0, "
            "python3-gi and libusb-1.0-0. Exits with COMMAND's exit status."
        ),
        epilog=(
            "COMMAND finds the control socket in $PARALLEL_FLASH_EMULATOR_SOCKET: one JSON "
            'object per line, e.g. {"cmd": "plug", "spec": {"port": "1-3.1"}}, '
            '{"cmd": "unplug", "port": "1-1.2"}, {"cmd": "set_fault", "port": "1-1.1", '
            '"faults": "status=-5"}, {"cmd": "summaries"}.'
        ),
    )
    parser.add_argument(
        "--devices",
        type=_count,
        default=1,
        metavar="N",
        help="devices plugged at start (default 1)",
    )
    parser.add_argument(
        "--mix",
        type=sim_mix,
        default=None,
        metavar="KIND=N,...",
        help="make the last devices Lumia or UFP devices, e.g. lumia=2,ufp-v1=1,ufp-v2=1 "
        "(Lumia: 0421:066E, back in Label mode 0421:0660 after booting; UFP: 045E:0658). "
        "These loaders are derived from public host code, not from hardware",
    )
    parser.add_argument(
        "--port",
        action="append",
        default=[],
        metavar="PORT",
        help="put the devices on these port paths (sysfs form, e.g. 1-1.4.2) "
        "instead of 1-1.1, 1-1.2 ...; repeatable",
    )
    parser.add_argument(
        "--link-rate",
        type=positive_float,
        default=None,
        metavar="MB/s",
        help="throttle each device's bulk OUT to this rate (default unthrottled)",
    )
    parser.add_argument(
        "--bus-rate",
        type=positive_float,
        default=None,
        metavar="MB/s",
        help="ceiling shared by all devices of a bus (USB 2.0 port: 53.248)",
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="WHERE:FAULTS",
        help="faults for device number WHERE (1-based) or port WHERE, e.g. "
        "2:status=-5, 1-1.3:stop-reading=1048576, 1:reappear-in-flashing",
    )
    parser.add_argument(
        "--usbfs-memory-mb",
        type=int,
        default=16,
        metavar="N",
        help="the emulated kernel's usbfs memory cap (default 16; 0 = none)",
    )
    parser.add_argument(
        "--plug-after",
        action="append",
        default=[],
        metavar="SECONDS:COUNT",
        help="plug COUNT more devices SECONDS after COMMAND started; repeatable",
    )
    parser.add_argument(
        "--unplug-after",
        action="append",
        default=[],
        metavar="SECONDS:PORT",
        help="pull the device at PORT out SECONDS after COMMAND started",
    )
    parser.add_argument(
        "--unplug-at",
        action="append",
        default=[],
        metavar="PORT:BYTES",
        help="the device at PORT vanishes once it has received BYTES image bytes",
    )
    parser.add_argument(
        "--stay-away",
        action="store_true",
        help="booted devices do not re-enumerate as the booted image",
    )
    parser.add_argument(
        "--summary",
        type=Path,
        default=None,
        metavar="FILE.json",
        help="also write the per-device report (JSON) to FILE",
    )
    parser.add_argument(
        "--transcript",
        action="store_true",
        help="include each device's transfer transcript in --summary",
    )
    parser.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        metavar="-- COMMAND...",
        help="the command to run under the preload",
    )
    parser.set_defaults(func=run)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a device count")
    return int(text)


def _split(text: str, what: str) -> tuple[str, str]:
    head, sep, tail = text.rpartition(":") if what == "PORT:BYTES" else text.partition(":")
    if not sep or not head or not tail:
        raise ValueError(f"{text!r}: expected {what}")
    return head, tail


def _specs(args: argparse.Namespace) -> tuple[list[DeviceSpec], dict[str | int, str]]:
    ports = [str(PortPath.parse(port)) for port in args.port]
    count = max(args.devices, len(ports))
    specs = [DeviceSpec(port=ports[i] if i < len(ports) else None) for i in range(count)]
    kinds = [kind for kind, number in (args.mix or {}).items() for _ in range(number)]
    if len(kinds) > count:
        raise ValueError(f"--mix names {len(kinds)} devices, but the line has {count}")
    for spec, kind in zip(specs[count - len(kinds) :], kinds, strict=True):
        spec.kind = kind
    faults: dict[str | int, str] = {}

    def add(key: str | int, text: str) -> None:
        faults[key] = ",".join(filter(None, (faults.get(key, ""), text)))

    for item in args.fault:
        where, text = _split(item, "WHERE:FAULTS")
        if where.isdigit():
            number = int(where)
            if not 1 <= number <= count:
                raise ValueError(f"--fault {item!r}: device {number} of {count}")
            add(number - 1, text)
        else:
            add(str(PortPath.parse(where)), text)
    for item in args.unplug_at:
        where, raw = _split(item, "PORT:BYTES")
        if not raw.isdigit():
            raise ValueError(f"--unplug-at {item!r}: BYTES must be a byte count")
        add(str(PortPath.parse(where)), f"disconnect={raw}")
    return specs, faults


def _timers(args: argparse.Namespace, line: EmulatedLine) -> list[threading.Timer]:
    timers: list[threading.Timer] = []

    def plug(count: int) -> None:
        for _ in range(count):
            try:
                port = line.plug()
                print(f"parallel-flash emulate: plugged {port}", file=sys.stderr)
            except (EmulatorError, ValueError) as exc:
                print(f"parallel-flash emulate: plug failed: {exc}", file=sys.stderr)

    def unplug(port: str) -> None:
        try:
            line.unplug(port)
            print(f"parallel-flash emulate: unplugged {port}", file=sys.stderr)
        except EmulatorError as exc:
            print(f"parallel-flash emulate: unplug failed: {exc}", file=sys.stderr)

    for item in args.plug_after:
        seconds, count = _split(item, "SECONDS:COUNT")
        if not count.isdigit():
            raise ValueError(f"--plug-after {item!r}: COUNT must be a number")
        timers.append(threading.Timer(_seconds(seconds, item), plug, (int(count),)))
    for item in args.unplug_after:
        seconds, port = _split(item, "SECONDS:PORT")
        timers.append(
            threading.Timer(_seconds(seconds, item), unplug, (str(PortPath.parse(port)),))
        )
    for timer in timers:
        timer.daemon = True
    return timers


def _seconds(text: str, item: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{item!r}: {text!r} is not a number of seconds") from None
    if value < 0:
        raise ValueError(f"{item!r}: seconds must be >= 0")
    return value


def run(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        print("parallel-flash emulate: error: no COMMAND given (put it after --)", file=sys.stderr)
        return EXIT_USAGE
    try:
        specs, faults = _specs(args)
        line = EmulatedLine(
            specs,
            link_rate_mbps=args.link_rate,
            bus_rate_mbps=args.bus_rate,
            usbfs_memory_mb=args.usbfs_memory_mb,
            faults=faults,
            reappear_delay=None if args.stay_away else 0.5,
            log_level=logging.getLogger().getEffectiveLevel(),
        )
        timers = _timers(args, line)
    except ValueError as exc:
        print(f"parallel-flash emulate: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        line.start()
    except EmulatorError as exc:
        print(f"parallel-flash emulate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        socket_path = line.serve()
        print(
            f"parallel-flash emulate: {len(line.ports)} devices at {' '.join(line.ports)}; "
            f"control socket {socket_path}",
            file=sys.stderr,
        )
        code = _run_command(line, command, timers)
        summaries = line.summaries(transcript=args.transcript)
        stats = line.stats()
    finally:
        for timer in timers:
            timer.cancel()
        line.close()
    sys.stderr.write(render_summary(summaries))
    if args.summary is not None:
        report = {"command": command, "exit_code": code, "devices": summaries, "usbfs": stats}
        args.summary.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return code


def _run_command(line: EmulatedLine, command: list[str], timers: list[threading.Timer]) -> int:
    # Ctrl-C in a terminal reaches COMMAND directly (same process group); this
    # process waits for it to finish and report. SIGTERM is passed on.
    previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        process = line.popen(command)
    except OSError as exc:
        signal.signal(signal.SIGINT, previous_int)
        print(f"parallel-flash emulate: cannot run {command[0]}: {exc}", file=sys.stderr)
        return _COMMAND_NOT_FOUND
    previous_term = signal.signal(signal.SIGTERM, lambda *_: process.send_signal(signal.SIGTERM))
    try:
        for timer in timers:
            timer.start()
        code = process.wait()
    finally:
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous_term)
    return 128 - code if code < 0 else code


def render_summary(summaries: dict[str, dict[str, Any]]) -> str:
    """One line per port: name, bytes received, SHA-256, booted, and why not."""
    lines = [f"parallel-flash emulate: what {len(summaries)} devices received"]
    lines.append(f"{'PORT':<10} {'NAME':<28} {'BYTES':>12} {'BOOTED':<6} {'SHA-256':<64} RESULT")
    for port, info in summaries.items():
        if info.get("rejection"):
            result = f"rejected: {info['rejection']}"
        elif info.get("disconnected"):
            result = "disconnected"
        elif info.get("booted"):
            result = "booted" + (
                f", now {info['state']}" if info.get("state") != "booted-image" else ""
            )
        else:
            result = f"not booted ({info.get('phase')})"
        sha = str(info.get("sha256")) if info.get("received_bytes") else "-"
        lines.append(
            f"{port:<10} {str(info.get('name'))[:28]:<28} {info.get('received_bytes', 0):>12,} "
            f"{'yes' if info.get('booted') else 'no':<6} {sha:<64} {result}"
        )
    return "\n".join(lines) + "\n"
