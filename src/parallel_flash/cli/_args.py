"""Argument types shared by the subcommands; each error names the option and the value.

Every option value is checked here, at parse time, against a range that
makes sense for it (argparse then exits 2 naming the option), so nothing
deep inside a run meets a 400-digit transfer size, a timeout of 1e308 or a
NaN rate after a device was opened.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

from ..engine.pipeline import DEFAULT_IN_FLIGHT, MAX_IN_FLIGHT, BootOptions
from ..errors import InputError, InvalidValue
from ..output.line import DEFAULT_LINE, SUMMARY_INTERVAL, LineOptions
from ..protocol.nokia.host import NokTimeouts
from ..session import Presentation, SimulatedLine
from ..transport.sim_limits import USB2_DEVICE_RATE, check_sim_count

__all__ = (
    "DEFAULT_RATE_MBPS",
    "MAX_BOOT_BYTES",
    "MAX_RATE_MBPS",
    "MAX_TIMEOUT",
    "MAX_TRANSFER_SIZE",
    "add_boot_options",
    "add_line_options",
    "boot_options",
    "byte_size",
    "fault_spec",
    "float_range",
    "int_range",
    "line_options",
    "positive_float",
    "presentation",
    "rate_mbps",
    "sim_mix",
    "simulated_line",
    "timeout_seconds",
    "transfer_size",
    "writable_dir",
)

#: Longest any single wait may be set to: a day. Past it a timeout is a typo,
#: and anyio/libusb need a finite number of milliseconds that fits their types.
MAX_TIMEOUT = 86_400.0
#: Largest data transfer: libusb's length is an int, and usbfs caps a single
#: URB far below it; 64 MiB is more than any loader takes per transfer.
MAX_TRANSFER_SIZE = 64 << 20
#: SDI + WIM travel with u32 lengths: one boot sends under 4 GiB.
MAX_BOOT_BYTES = (1 << 32) - 1
#: Simulated link rates above this (MB/s) are not a USB link.
MAX_RATE_MBPS = 100_000.0
_S32 = (-(1 << 31), (1 << 31) - 1)
_U32_MAX = (1 << 32) - 1
#: SimpleIO fault values (--sim-fault), each held to the width the protocol carries it in.
_FAULT_RANGES = {
    "status": (_S32[0], -1),  # a failure status is a negative s32
    "stop_reading_after": (0, _U32_MAX),  # image bytes: SDI + WIM < 4 GiB
    "disconnect_after": (0, _U32_MAX),
    "stale_position": (0, (1 << 63) - 1),  # s64 curPosition
    "log_packets": (0, 1000),
}

_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30}
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmg]i?)?b?\s*", re.IGNORECASE)


def byte_size(text: str, *, limit: int = MAX_BOOT_BYTES) -> int:
    """``1048576``, ``1MiB``, ``64M`` (10^6), ``16376``... up to ``limit`` (default: what
    one boot can send, SDI + WIM under 4 GiB)."""
    match = _SIZE_RE.fullmatch(text) if len(text) <= 32 else None
    if not match:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a size (e.g. 1048576, 1MiB, 64MB)")
    number, unit = match.groups()
    value = float(number) * _UNITS[(unit or "").lower()]
    if not math.isfinite(value) or value <= 0 or value != int(value):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive whole number of bytes")
    if value > limit:
        raise argparse.ArgumentTypeError(f"{text!r} is more than {limit} bytes")
    return int(value)


def transfer_size(text: str) -> int:
    """A data transfer's size, up to :data:`MAX_TRANSFER_SIZE`."""
    return byte_size(text, limit=MAX_TRANSFER_SIZE)


def float_range(low: float, high: float, *, low_open: bool = False) -> Callable[[str], float]:
    """A type for a finite number in [low, high] (``(low, high]`` with ``low_open``)."""

    def parse(text: str) -> float:
        try:
            value = float(text) if len(text) <= 64 else math.nan
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number") from None
        above = value > low if low_open else value >= low
        if not (math.isfinite(value) and above and value <= high):
            lower = f"more than {low:g}" if low_open else f"at least {low:g}"
            raise argparse.ArgumentTypeError(
                f"{text[:40]!r} must be a number {lower} and at most {high:g}"
            )
        return value

    return parse


def int_range(low: int, high: int) -> Callable[[str], int]:
    """A type for a whole number in [low, high] (decimal, at most 20 digits)."""

    def parse(text: str) -> int:
        stripped = text.strip()
        if not re.fullmatch(r"[+-]?\d{1,20}", stripped):
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a whole number")
        value = int(stripped)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} must be between {low} and {high}")
        return value

    return parse


#: Seconds for any timeout or wait: more than 0, at most a day.
timeout_seconds = float_range(0.0, MAX_TIMEOUT, low_open=True)
#: MB/s of a simulated link: 0 (unthrottled) up to :data:`MAX_RATE_MBPS`.
rate_mbps = float_range(0.0, MAX_RATE_MBPS)
#: The simulated link's default rate in MB/s (USB 2.0 in practice, transport.sim).
DEFAULT_RATE_MBPS = USB2_DEVICE_RATE / 1e6


def positive_float(text: str) -> float:
    """A finite number above 0 (seconds, MB/s), at most :data:`MAX_TIMEOUT`."""
    return timeout_seconds(text)


def writable_dir(text: str) -> Path:
    """An existing directory we may create files in (``--temp-dir``)."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text!r}: does not exist")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: is not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text!r}: is not writable")
    return path


def fault_spec(text: str) -> tuple[int, str]:
    """``SLOT:SPEC``, e.g. ``3:status=-5`` or ``2:stop-reading=1048576,logs=2``.

    The faults are parsed once the slot's kind of device is known
    (:func:`simulated_line`): SimpleIO and NOK devices fail differently.
    """
    slot_text, sep, spec = text.partition(":")
    if not sep or not re.fullmatch(r"\d{1,4}", slot_text) or int(slot_text) < 1:
        raise argparse.ArgumentTypeError(f"{text[:60]!r}: expected SLOT:FAULTS, e.g. 3:status=-5")
    return int(slot_text), spec


def sim_mix(text: str) -> dict[str, int]:
    """``lumia=2,ufp-v1=1,ufp-v2=1``: how many simulated devices of each NOK kind."""
    from ..protocol.models import MODEL_KINDS  # the device models load only for --sim

    mix: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, sep, count = item.partition("=")
        if kind not in MODEL_KINDS or not sep or not re.fullmatch(r"\d{1,4}", count):
            raise argparse.ArgumentTypeError(
                f"{item!r}: expected KIND=N with KIND one of {', '.join(MODEL_KINDS)}"
            )
        mix[kind] = mix.get(kind, 0) + int(count)
    return mix


def add_boot_options(parser: argparse.ArgumentParser) -> None:
    """Transfer tuning and timeouts (protocol.md defaults), shared by boot and demo."""
    group = parser.add_argument_group("transfer")
    group.add_argument(
        "--transfer-size", type=transfer_size, default=None, metavar="BYTES",
        help="bytes per data transfer (default: 1 MiB, or 16376 for the legacy loader)",
    )
    group.add_argument(
        "--in-flight", type=int_range(1, MAX_IN_FLIGHT), default=DEFAULT_IN_FLIGHT, metavar="N",
        help=f"OUT transfers queued per device (default {DEFAULT_IN_FLIGHT})",
    )
    defaults = BootOptions()
    group.add_argument(
        "--id-timeout", type=timeout_seconds, default=defaults.id_timeout, metavar="S",
        help="seconds to wait for a device's Id reply (default %(default)g)",
    )
    group.add_argument(
        "--reset-timeout", type=timeout_seconds, default=defaults.reset_timeout, metavar="S",
        help="seconds for a stale device to come back after Reset (default %(default)g)",
    )
    group.add_argument(
        "--transfer-timeout", type=timeout_seconds, default=defaults.transfer_timeout,
        metavar="S",
        help="seconds without progress before a transfer counts as stalled (default %(default)g)",
    )
    group.add_argument(
        "--status-timeout", type=timeout_seconds, default=defaults.status_timeout, metavar="S",
        help="seconds to wait for the device's final status after the image "
        "(default %(default)g, as Microsoft's host)",
    )
    add_nok_timeouts(parser)
    group.add_argument(
        "--retries", type=int_range(0, 100), default=0, metavar="N",
        help="retry a device that failed before any image byte was sent (or, in station mode, "
             "that re-enumerates after a transport failure) up to N times; never after a "
             "negative status (default 0)",
    )
    out = parser.add_argument_group("output")
    out.add_argument(
        "--report", metavar="FILE.jsonl",
        help="write one JSON record per device as it finishes, then a summary "
             "('-': standard output, with the human output on standard error); "
             "a strftime pattern such as 'pf-%%Y-%%m-%%d.jsonl' starts a new file whenever "
             "its value changes; SIGUSR1 reopens the file (logrotate)",
    )
    out.add_argument(
        "--append", action="store_true",
        help="append to an existing --report file (and to a pattern's existing files)",
    )
    live = out.add_mutually_exclusive_group()
    live.add_argument("--live", dest="live", action="store_const", const=True, default=None,
                      help="always draw the live table")
    live.add_argument("--plain", dest="live", action="store_const", const=False,
                      help="plain lines instead of the live table")


def add_line_options(parser: argparse.ArgumentParser) -> None:
    """MQTT, Prometheus and the result hook: a station as part of a line (docs/line.md)."""
    group = parser.add_argument_group("line integration (docs/line.md)")
    group.add_argument("--mqtt", metavar="URL",
                       help="publish status, port states, results and summaries to this broker: "
                            "mqtt://[USER[:PASSWORD]@]HOST[:PORT], mqtts:// for TLS")
    group.add_argument("--line", default=None, metavar="NAME",
                       help="the line's name in MQTT topics (default 'default')")
    group.add_argument("--station", default=None, metavar="NAME",
                       help="this station's name in MQTT topics (default: the host name)")
    group.add_argument("--mqtt-user", default=None, metavar="USER", help="broker user name")
    group.add_argument("--mqtt-password-file", default=None, metavar="FILE",
                       help="read the broker password from FILE (or set "
                            "PARALLEL_FLASH_MQTT_PASSWORD); kept out of the process list")
    group.add_argument("--mqtt-ca", default=None, metavar="FILE",
                       help="CA certificates to check the broker with (implies TLS)")
    group.add_argument("--mqtt-cert", default=None, metavar="FILE",
                       help="client certificate (PEM) for brokers that require one")
    group.add_argument("--mqtt-key", default=None, metavar="FILE",
                       help="the client certificate's private key (PEM)")
    group.add_argument("--mqtt-outbox", default=None, metavar="FILE",
                       help="where results the broker has not acknowledged are remembered "
                            "for the next start (default under ~/.local/state/parallel-flash)")
    group.add_argument("--metrics", default=None, metavar="HOST:PORT",
                       help="serve Prometheus metrics on http://HOST:PORT/metrics")
    group.add_argument("--on-result", default=None, metavar="CMD",
                       help="run CMD (sh -c) for each finished device, its record as JSON on "
                            "stdin; a failing hook is logged, never fails the device")
    group.add_argument("--on-result-timeout", type=positive_float, default=None, metavar="S",
                       help="kill an --on-result run after S seconds (default 30)")


def line_options(args: argparse.Namespace, *, station: bool = False) -> LineOptions:
    """LineOptions from the parsed arguments; ``station``: summaries every minute."""
    import os

    mqtt = None
    if args.mqtt is not None:
        import urllib.parse

        from ..output.mqtt import MqttSettings  # only with --mqtt: it brings the MQTT client's code

        # A password file wins over the URL's password, which wins over the environment.
        password = None
        if urllib.parse.urlsplit(args.mqtt).password is None:
            password = os.environ.get("PARALLEL_FLASH_MQTT_PASSWORD")
        if args.mqtt_password_file is not None:
            try:
                with open(args.mqtt_password_file, encoding="utf-8") as file:
                    password = file.readline().rstrip("\r\n")
            except OSError as exc:
                raise InputError(
                    f"--mqtt-password-file {args.mqtt_password_file}: {exc.strerror}"
                ) from None
        mqtt = MqttSettings.from_url(
            args.mqtt,
            username=args.mqtt_user,
            password=password,
            ca_file=args.mqtt_ca,
            cert_file=args.mqtt_cert,
            key_file=args.mqtt_key,
        )
    else:
        for flag in ("line", "station", "mqtt_user", "mqtt_password_file", "mqtt_ca",
                     "mqtt_cert", "mqtt_key", "mqtt_outbox"):
            if getattr(args, flag) is not None:
                raise InputError(f"--{flag.replace('_', '-')} is an --mqtt option; add --mqtt URL")
    if args.on_result_timeout is not None and args.on_result is None:
        raise InputError("--on-result-timeout is an --on-result option; add --on-result CMD")
    extra = {} if args.on_result_timeout is None else {"on_result_timeout": args.on_result_timeout}
    return LineOptions(
        mqtt=mqtt,
        line=args.line or DEFAULT_LINE,
        station=args.station,
        outbox=args.mqtt_outbox,
        metrics=_listen_address(args.metrics) if args.metrics is not None else None,
        on_result=args.on_result,
        summary_interval=SUMMARY_INTERVAL if station else None,
        **extra,
    )


def add_nok_timeouts(parser: argparse.ArgumentParser) -> None:
    """The Lumia and UFP loaders' waits; defaults are :class:`NokTimeouts`' own."""
    group = parser.add_argument_group(
        "Lumia and UFP timeouts",
        "The public reference hosts of these loaders wait forever; these bounds are "
        "parallel-flash's own (loaders.md A.1). Both loaders are derived from public host "
        "code and have not been tried on hardware.",
    )
    defaults = NokTimeouts()
    group.add_argument(
        "--nok-info-timeout", type=timeout_seconds, default=defaults.info, metavar="S",
        help="seconds for each NOKV, NOKD, NOKXFR and NOKXCBA reply (default %(default)g)",
    )
    group.add_argument(
        "--nok-send-timeout", type=timeout_seconds, default=defaults.transfer_base, metavar="S",
        help="seconds for an image message to go out, plus its size at "
        f"{defaults.transfer_rate / 1e6:g} MB/s (default %(default)g)",
    )
    group.add_argument(
        "--nok-reply-timeout", type=timeout_seconds, default=defaults.reply, metavar="S",
        help="seconds for the device's reply to each image message: its hash and RAM copy "
        "of up to WriteBufferSize bytes (default %(default)g)",
    )
    group.add_argument(
        "--return-timeout", type=timeout_seconds, default=defaults.reenumerate, metavar="S",
        help="seconds for a Lumia to come back in Label mode on its port after NOKR "
        "(default %(default)g, ffutool's own wait for a device to come back)",
    )


def presentation(args: argparse.Namespace, title: str) -> Presentation:
    """How a boot or demo run shows itself: --live/--plain, -q, --report - (boot, demo)."""
    from . import verbosity

    return Presentation(
        live=args.live,
        title=title,
        # --report -: the records own standard output, the view goes to stderr.
        stream=sys.stderr if args.report == "-" else None,
        quiet=verbosity(args) < 0,
    )


def boot_options(args: argparse.Namespace) -> BootOptions:
    """BootOptions from the parsed arguments (raises InputError on bad combinations)."""
    return BootOptions(
        transfer_size=args.transfer_size,
        in_flight=args.in_flight,
        id_timeout=args.id_timeout,
        reset_timeout=args.reset_timeout,
        transfer_timeout=args.transfer_timeout,
        status_timeout=args.status_timeout,
        retries=args.retries,
        nok_timeouts=NokTimeouts(
            info=args.nok_info_timeout,
            transfer_base=args.nok_send_timeout,
            reply=args.nok_reply_timeout,
            reenumerate=args.return_timeout,
        ),
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
    try:
        check_sim_count(count)
    except InvalidValue as exc:
        raise InputError(f"{count_flag} {count}: {exc}") from None
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
    from ..protocol.models import AnyFaults, parse_faults  # only for a simulated line

    by_slot: dict[int, AnyFaults] = {}
    for slot, text in faults:
        kind = kinds.get(slot, "simpleio")
        try:
            by_slot[slot] = parse_faults(kind, text)
        except ValueError as exc:
            raise InputError(f"{fault_flag} {slot}:{text} ({kind} device): {exc}") from None
        _check_fault_ranges(by_slot[slot], f"{fault_flag} {slot}:{text}")
    return SimulatedLine(
        count=count,
        rate=rate_mbps * 1e6 or None,
        bus_rate=bus_rate_mbps * 1e6 if bus_rate_mbps else None,
        faults=by_slot,
        kinds=kinds,
    )


def _check_fault_ranges(faults: object, where: str) -> None:
    """Each fault value within the width the protocol carries it in (no struct.error later)."""
    from ..protocol.device import DeviceFaults  # called only for a simulated line

    named = _FAULT_RANGES if isinstance(faults, DeviceFaults) else {}
    for name, (low, high) in named.items():
        value = getattr(faults, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and not low <= value <= high:
            raise InputError(f"{where}: {name.replace('_', ' ')} must be between {low} and {high}")
    for name in getattr(faults, "__dataclass_fields__", {}):
        value = getattr(faults, name)
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 1 << 63:
            raise InputError(f"{where}: {name.replace('_', ' ')} {value} is out of range")


def _listen_address(text: str) -> tuple[str, int]:
    """--metrics HOST:PORT (prometheus-client is imported only when metrics are asked for)."""
    from ..output.metrics import parse_listen_address

    return parse_listen_address(text)
