"""Finding devices in flashing mode on real USB: filters, enumeration, arrivals.

A device is named by its port path in sysfs form (``1-1.4.2``: bus, then
port numbers joined by dots) -- the key that survives re-enumeration, used
to pin devices to physical ports (field-notes.md, 1 and 3). Filters:

* VID/PID (default: the flashing-mode IDs of every loader -- SimpleIO
  045E:062A, the Lumia flash app's and UFP's, :mod:`.protocol.selection`);
* ``--port`` prefixes, matched on whole path components (``1-1.4`` matches
  ``1-1.4`` and ``1-1.4.2`` but not ``1-1.40``);
* ``--id`` unique IDs, which need the Id exchange and so are checked after
  opening (:func:`identify`).

Arrivals come from libusb hotplug where libusb has it, else (or when asked)
from polling the device list; both are deduplicated by port path.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass

import anyio

from ..errors import InputError, RemoteProtocolError, TransportError
from ..protocol.messages import (
    CONTROL_REQUEST,
    REPLY_BUFFER_SIZE,
    IdReply,
    LogPacket,
    Opcode,
)
from ..protocol.nokia.messages import REPLY_BUFFER_SIZE as NOK_REPLY_BUFFER_SIZE
from ..protocol.nokia.messages import Command, NokInfo
from ..protocol.selection import ALL_FLASH_IDS, Loader, loader_for
from ..transport.base import Link
from ..transport.libusb import HotplugEvent, UsbContext, UsbDeviceInfo, UsbLink, hotplug_supported

__all__ = (
    "DEFAULT_POLL_INTERVAL",
    "ArrivalDedup",
    "DeviceFilters",
    "DeviceInfo",
    "HotplugEvent",
    "Identity",
    "UsbLine",
    "add_usb_arguments",
    "filters_from_args",
    "find_devices",
    "identify",
    "open_link",
    "parse_port",
    "parse_unique_id",
    "read_nok_info",
    "usb_link_source",
    "watch_devices",
)

logger = logging.getLogger(__name__)

#: What enumeration and hotplug report about a device (no I/O needed).
DeviceInfo = UsbDeviceInfo

#: Seconds between device-list scans when polling. Arrivals are noticed
#: within this; a scan of libusb's cached list costs well under a millisecond.
DEFAULT_POLL_INTERVAL = 0.25
#: Log packets tolerated in front of one reply before the device counts as
#: babbling (protocol.md: Log packets may arrive where a reply is expected).
_MAX_LOGS_PER_REPLY = 64

_PORT_RE = re.compile(r"(\d{1,3})(?:-(\d{1,3}(?:\.\d{1,3})*))?")


def parse_port(text: str) -> str:
    """Check a ``--port`` value (``1-1.4.2``, or a bus alone: ``1``) and normalise it.

    :raises ~parallel_flash.errors.InputError: naming the value and the expected form.
    """
    match = _PORT_RE.fullmatch(text.strip())
    if match is None:
        raise InputError(
            f"--port {text!r}: expected a sysfs port path such as 1-1.4.2 "
            "(bus, a dash, then port numbers joined by dots), or a bus number alone"
        )
    bus, ports = match.groups()
    return (
        f"{int(bus)}-{'.'.join(str(int(p)) for p in ports.split('.'))}" if ports else str(int(bus))
    )


def parse_unique_id(text: str) -> uuid.UUID:
    """Check an ``--id`` value: a GUID as ``list`` prints it (braces optional)."""
    try:
        return uuid.UUID(text.strip().strip("{}"))
    except ValueError:
        raise InputError(
            f"--id {text!r}: expected a GUID such as 00000011-f151-a509-0000-000000000000"
        ) from None


def _port_matches(port: str, prefix: str) -> bool:
    """Whole-component prefix match: ``1-1.4`` covers ``1-1.4.2``, not ``1-1.40``."""
    if "-" not in prefix:
        return port.startswith(prefix + "-")
    return port == prefix or port.startswith(prefix + ".")


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceFilters:
    """Which devices a command takes; the defaults take every device in flashing mode."""

    #: None = any; both None = the flashing-mode IDs of every loader.
    vendor_id: int | None = None
    product_id: int | None = None
    #: Port path prefixes (normalised by :func:`parse_port`); empty = any port.
    ports: tuple[str, ...] = ()
    #: Unique IDs from the Id reply; empty = any device.
    unique_ids: tuple[uuid.UUID, ...] = ()

    def __post_init__(self) -> None:
        for name in ("vendor_id", "product_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 0xFFFF:
                raise InputError(f"--{name[0]}id {value:#x} is not a 16-bit USB ID")
        object.__setattr__(self, "ports", tuple(parse_port(p) for p in self.ports))

    def matches(self, device: DeviceInfo) -> bool:
        """VID, PID and port filters (everything known without opening the device)."""
        if not self.matches_ids(device.vendor_id, device.product_id):
            return False
        return not self.ports or any(_port_matches(device.port, p) for p in self.ports)

    def matches_ids(self, vendor_id: int, product_id: int) -> bool:
        if self.vendor_id is None and self.product_id is None:
            return (vendor_id, product_id) in ALL_FLASH_IDS
        return self.vendor_id in (None, vendor_id) and self.product_id in (None, product_id)

    def matches_id(self, unique_id: uuid.UUID) -> bool:
        return not self.unique_ids or unique_id in self.unique_ids

    @property
    def needs_identity(self) -> bool:
        return bool(self.unique_ids)

    def describe(self) -> str:
        """For messages: ``045e:062a on ports 1-1.4, 2``."""
        if self.vendor_id is None and self.product_id is None:
            text = "any loader's flashing-mode ID"
        else:
            vendor = "*" if self.vendor_id is None else f"{self.vendor_id:04x}"
            product = "*" if self.product_id is None else f"{self.product_id:04x}"
            text = f"{vendor}:{product}"
        if self.ports:
            text += f" on port{'s' if len(self.ports) > 1 else ''} {', '.join(self.ports)}"
        if self.unique_ids:
            text += f" with ID {', '.join(map(str, self.unique_ids))}"
        return text


def filters_from_args(args: argparse.Namespace) -> DeviceFilters:
    """The filters of ``boot``/``list`` arguments (``--vid --pid --port --id``)."""
    return DeviceFilters(
        vendor_id=args.vid,
        product_id=args.pid,
        ports=tuple(args.port or ()),
        unique_ids=tuple(parse_unique_id(text) for text in (args.unique_ids or ())),
    )


def _hex16(text: str) -> int:
    try:
        value = int(text, 16)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a hexadecimal USB ID") from None
    if not 0 <= value <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"{text!r} is not a 16-bit USB ID")
    return value


def add_usb_arguments(parser: argparse.ArgumentParser) -> None:
    """``--vid --pid --port --id --poll``, as ``boot`` has them (used by ``list``)."""
    usb = parser.add_argument_group("USB devices")
    usb.add_argument(
        "--vid",
        type=_hex16,
        default=None,
        metavar="HEX",
        help="vendor ID of devices in flashing mode (default: every loader's IDs: SimpleIO "
        "045E:062A, Lumia 0421:066E/0714/05EE and 045E:0A02, UFP 045E:0658)",
    )
    usb.add_argument(
        "--pid",
        type=_hex16,
        default=None,
        metavar="HEX",
        help="product ID of devices in flashing mode (default: every loader's IDs)",
    )
    usb.add_argument(
        "--port",
        action="append",
        default=[],
        metavar="PATH",
        help="only devices on this port path or below it, sysfs form: 1-1.4 (repeatable)",
    )
    usb.add_argument(
        "--id",
        dest="unique_ids",
        action="append",
        default=[],
        metavar="GUID",
        help="only the device with this unique ID (repeatable)",
    )


# -- enumeration ------------------------------------------------------------------


def _port_key(port: str) -> tuple[int, ...]:
    """Sort ``1-1.10`` after ``1-1.9``."""
    return tuple(int(part) for part in re.split(r"[-.]", port) if part.isdigit())


def find_devices(ctx: UsbContext, filters: DeviceFilters) -> list[DeviceInfo]:
    """Devices present now that pass the VID/PID/port filters, in port order.

    ``--id`` filters need the Id exchange: apply them with :func:`identify`.
    """
    found = [device for device in ctx.devices() if filters.matches(device)]
    found.sort(key=lambda device: _port_key(device.port))
    return found


async def open_link(ctx: UsbContext, device: DeviceInfo) -> UsbLink:
    """Open a device for the boot: interface 0 claimed, endpoints checked."""
    return await ctx.open(device)


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """What the Id exchange told about a device, and the Log packets that came with it."""

    reply: IdReply
    logs: tuple[LogPacket, ...] = ()


async def identify(link: Link, *, timeout: float = 2.0) -> Identity:
    """protocol.md steps 1-2 only: the control request, ``01``, and the Id reply.

    Sends nothing else, so the device is left as it was (an extra Id
    exchange before a boot is harmless, protocol.md "Notes on the sequence").

    :raises ~parallel_flash.errors.TransportError: the device did not answer.
    :raises ~parallel_flash.errors.RemoteProtocolError: it answered nonsense, or it
        speaks a NOK loader (Lumia, UFP), which has no Id exchange and no unique ID.
    """
    loader = loader_for(*link.usb_ids)
    if loader not in (None, Loader.SIMPLEIO):
        raise RemoteProtocolError(
            f"{link.port}: a {loader} device has no unique ID (--id selects SimpleIO devices)"
        )
    request = CONTROL_REQUEST
    await link.control_out(
        request.request_type, request.request, request.value, request.index, timeout=timeout
    )
    await link.bulk_out(Opcode.ID.encode(), timeout=timeout)
    logs: list[LogPacket] = []
    for _ in range(_MAX_LOGS_PER_REPLY):
        data = await link.bulk_in(REPLY_BUFFER_SIZE, timeout=timeout)
        if LogPacket.matches(data):
            logs.append(LogPacket.parse(data))
            continue
        return Identity(reply=IdReply.parse(data), logs=tuple(logs))
    raise RemoteProtocolError(
        f"{link.port}: more than {_MAX_LOGS_PER_REPLY} Log packets and no Id reply"
    )


async def read_nok_info(link: Link, *, timeout: float = 5.0) -> NokInfo:
    """A Lumia or UFP device's NOKV reply; sends NOKV only (read-only for the device).

    :raises ~parallel_flash.errors.TransportError: the device did not answer.
    :raises ~parallel_flash.errors.RemoteProtocolError: it answered nonsense.
    """
    await link.bulk_out(Command.INFO.value, timeout=timeout)
    return NokInfo.parse(await link.bulk_in(NOK_REPLY_BUFFER_SIZE, timeout=timeout))


# -- arrivals ---------------------------------------------------------------------


class ArrivalDedup:
    """Turns raw hotplug events or polls into clean arrivals and departures.

    Hotplug events can repeat or come unpaired (usb-testing.md). Each arrival
    is one enumeration of a device (port, bus, address): a repeated arrival
    is dropped, a departure nobody arrived for is dropped, and an arrival on
    a port whose previous device left unnoticed first yields that departure.
    Devices not passing the filters are dropped.
    """

    def __init__(self, filters: DeviceFilters) -> None:
        self.filters = filters
        self._present: dict[str, DeviceInfo] = {}

    def present(self) -> list[DeviceInfo]:
        return list(self._present.values())

    def feed(self, event: HotplugEvent) -> list[HotplugEvent]:
        device = event.device
        if not self.filters.matches(device):
            return []
        known = self._present.get(device.port)
        if event.arrived:
            if known is not None and known.key == device.key:
                return []
            self._present[device.port] = device
            missed = [HotplugEvent(False, known)] if known is not None else []
            return [*missed, event]
        if known is None or known.key != device.key:
            return []
        del self._present[device.port]
        return [event]


async def watch_devices(
    ctx: UsbContext,
    filters: DeviceFilters,
    *,
    polling: bool | None = None,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
) -> AsyncGenerator[HotplugEvent, None]:
    """Arrivals and departures of matching devices, present ones first.

    Deduplicated by :class:`ArrivalDedup`. ``polling`` None = libusb hotplug
    when libusb has it, else poll the device list every ``poll_interval``.
    """
    if polling is None:
        polling = not hotplug_supported()
    dedup = ArrivalDedup(filters)

    if polling:
        logger.debug("watching for devices by polling every %g s", poll_interval)
        while True:
            seen = {device.key: device for device in await ctx.enumerate()}
            for device in dedup.present():
                if device.key not in seen:
                    for event in dedup.feed(HotplugEvent(False, device)):
                        yield event
            for device in seen.values():
                for event in dedup.feed(HotplugEvent(True, device)):
                    yield event
            await anyio.sleep(poll_interval)
    else:
        logger.debug("watching for devices with libusb hotplug")
        async with ctx.hotplug(
            vendor_id=filters.vendor_id, product_id=filters.product_id
        ) as events:
            async for raw in events:
                for event in dedup.feed(raw):
                    yield event


# -- the link source of ``parallel-flash boot`` ------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class UsbLine:
    """A link source (``runner.LinkSource``) for the devices present on real USB.

    Opens every device passing the filters; with ``--id`` filters, identifies
    each and keeps only the matching ones. A device that cannot be opened is
    logged and skipped, never fatal for the others.
    """

    filters: DeviceFilters
    id_timeout: float = 2.0

    @contextlib.asynccontextmanager
    async def __call__(self) -> AsyncIterator[Sequence[Link]]:
        async with UsbContext() as ctx:
            links: list[Link] = []
            for device in find_devices(ctx, self.filters):
                link = await self._open(ctx, device)
                if link is not None:
                    links.append(link)
            if not links:
                logger.warning("no device in flashing mode found (%s)", self.filters.describe())
            yield links
            # UsbContext closes whatever the engine has not closed yet.

    async def _open(self, ctx: UsbContext, device: DeviceInfo) -> Link | None:
        try:
            link = await open_link(ctx, device)
        except (TransportError, RemoteProtocolError) as exc:
            logger.error("%s: cannot use device %s: %s", device.port, device.usb_id, exc)
            return None
        if not self.filters.needs_identity:
            return link
        try:
            identity = await identify(link, timeout=self.id_timeout)
        except (TransportError, RemoteProtocolError) as exc:
            logger.error("%s: Id exchange failed, skipping it: %s", device.port, exc)
            await link.aclose()
            return None
        if self.filters.matches_id(identity.reply.unique_id):
            return link
        logger.info("%s: ID %s is not asked for; skipping", device.port, identity.reply.unique_id)
        await link.aclose()
        return None


def usb_link_source(args: argparse.Namespace) -> UsbLine:
    """The link source for ``boot`` without ``--sim``; checks the arguments, touches no device.

    :raises ~parallel_flash.errors.InputError: a bad ``--port``/``--id``, or
        ``--count``/``--wait-boot`` without ``--watch``.
    """
    filters = filters_from_args(args)
    if not getattr(args, "watch", False):
        for flag, value in (("--count", args.count), ("--wait-boot", args.wait_boot)):
            if value is not None:
                raise InputError(f"{flag} applies to station mode; add --watch")
    if getattr(args, "count", None) is not None and args.count < 1:
        raise InputError(f"--count must be at least 1, not {args.count}")
    return UsbLine(filters=filters, id_timeout=args.id_timeout)
