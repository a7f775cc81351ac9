"""Argument types shared by the subcommands; each error names the option and the value."""

from __future__ import annotations

import argparse
import re

from ..engine import DEFAULT_IN_FLIGHT, BootOptions
from ..errors import InputError
from ..protocol.device import DeviceFaults
from ..protocol.nokia.faults import NokFaults
from ..runner import SimulatedLine

__all__ = (
    "add_boot_options",
    "boot_options",
    "byte_size",
    "fault_spec",
    "positive_float",
    "sim_mix",
    "simulated_line",
)

_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30}
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmg]i?)?b?\s*", re.IGNORECASE)


def byte_size(text: str) -> int:
    """``1048576``, ``1MiB``, ``64M`` (10^6), ``16376``..."""
    match = _SIZE_RE.fullmatch(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 1048576, 1MiB, 64MB)")
    number, unit = match.groups()
    value = float(number) * _UNITS[(unit or "").lower()]
    if value <= 0 or value != int(value):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive whole number of bytes")
    return int(value)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def fault_spec(text: str) -> tuple[int, str]:
    """``SLOT:SPEC``, e.g. ``3:status=-5`` or ``2:stop-reading=1048576,logs=2``.

    The faults are parsed once the slot's kind of device is known
    (:func:`simulated_line`): SimpleIO and NOK devices fail differently.
    """
    slot_text, sep, spec = text.partition(":")
    if not sep or not slot_text.isdigit() or int(slot_text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected SLOT:FAULTS, e.g. 3:status=-5")
    return int(slot_text), spec


def sim_mix(text: str) -> dict[str, int]:
    """``lumia=2,ufp-v1=1,ufp-v2=1``: how many simulated devices of each NOK kind."""
    from ..transport.sim import SIM_DEVICE_KINDS

    mix: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, sep, count = item.partition("=")
        if kind not in SIM_DEVICE_KINDS or not sep or not count.isdigit():
            raise argparse.ArgumentTypeError(
                f"{item!r}: expected KIND=N with KIND one of {', '.join(SIM_DEVICE_KINDS)}"
            )
        mix[kind] = mix.get(kind, 0) + int(count)
    return mix


def add_boot_options(parser: argparse.ArgumentParser) -> None:
    """Transfer tuning and timeouts (protocol.md defaults), shared by boot and demo."""
    group = parser.add_argument_group("transfer")
    group.add_argument(
        "--transfer-size", type=byte_size, default=None, metavar="BYTES",
        help="bytes per data transfer (default: 1 MiB, or 16376 for the legacy loader)",
    )
    group.add_argument(
        "--in-flight", type=int, default=DEFAULT_IN_FLIGHT, metavar="N",
        help=f"OUT transfers queued per device (default {DEFAULT_IN_FLIGHT})",
    )
    group.add_argument("--id-timeout", type=positive_float, default=2.0, metavar="S")
    group.add_argument("--reset-timeout", type=positive_float, default=5.0, metavar="S")
    group.add_argument(
        "--transfer-timeout", type=positive_float, default=1.0, metavar="S",
        help="seconds without progress before a transfer counts as stalled (default 1)",
    )
    group.add_argument("--status-timeout", type=positive_float, default=15.0, metavar="S")
    out = parser.add_argument_group("output")
    out.add_argument(
        "--report", metavar="FILE.jsonl",
        help="write one JSON record per device as it finishes, then a summary",
    )
    out.add_argument(
        "--append", action="store_true", help="append to an existing --report file"
    )
    live = out.add_mutually_exclusive_group()
    live.add_argument("--live", dest="live", action="store_const", const=True, default=None,
                      help="always draw the live table")
    live.add_argument("--plain", dest="live", action="store_const", const=False,
                      help="plain lines instead of the live table")


def boot_options(args: argparse.Namespace) -> BootOptions:
    """BootOptions from the parsed arguments (raises InputError on bad combinations)."""
    return BootOptions(
        transfer_size=args.transfer_size,
        in_flight=args.in_flight,
        id_timeout=args.id_timeout,
        reset_timeout=args.reset_timeout,
        transfer_timeout=args.transfer_timeout,
        status_timeout=args.status_timeout,
    )


def simulated_line(
    count: int,
    rate_mbps: float,
    bus_rate_mbps: float | None,
    faults: list[tuple[int, str]],
    *,
    flags: tuple[str, str, str],
    mix: dict[str, int] | None = None,
) -> SimulatedLine:
    """Check the simulated-line options (named by ``flags``: count, rate, faults) and build it.

    ``mix`` gives the last slots of the line other kinds of device, in the
    order given (``--sim 8 --sim-mix lumia=2,ufp-v2=2``: slots 5-6 Lumia, 7-8 UFP v2).
    """
    count_flag, rate_flag, fault_flag = flags
    if not 1 <= count <= 4096:
        raise InputError(f"{count_flag} must be between 1 and 4096 devices, not {count}")
    if rate_mbps < 0:
        raise InputError(f"{rate_flag} must be >= 0 MB/s, not {rate_mbps}")
    kinds: dict[int, str] = {}
    mixed = sum((mix or {}).values())
    if mixed > count:
        raise InputError(f"--sim-mix names {mixed} devices, but the line has {count}")
    slot = count - mixed + 1
    for kind, number in (mix or {}).items():
        for _ in range(number):
            kinds[slot] = kind
            slot += 1
    unknown = sorted(slot for slot, _ in faults if slot > count)
    if unknown:
        raise InputError(f"{fault_flag} names slots {unknown}, but the line has {count} devices")
    by_slot: dict[int, DeviceFaults | NokFaults] = {}
    for slot, text in faults:
        kind = kinds.get(slot, "simpleio")
        parse = DeviceFaults.parse if kind == "simpleio" else NokFaults.parse
        try:
            by_slot[slot] = parse(text)
        except ValueError as exc:
            raise InputError(f"{fault_flag} {slot}:{text} ({kind} device): {exc}") from None
    return SimulatedLine(
        count=count,
        rate=rate_mbps * 1e6 or None,
        bus_rate=bus_rate_mbps * 1e6 if bus_rate_mbps else None,
        faults=by_slot,
        kinds=kinds,
    )
