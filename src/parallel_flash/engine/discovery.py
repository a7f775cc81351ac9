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

import logging
import re
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import anyio

from ..errors import InputError, RemoteProtocolError
from ..protocol.messages import IdReply, LogPacket
from ..protocol.nokia.messages import REPLY_BUFFER_SIZE as NOK_REPLY_BUFFER_SIZE
from ..protocol.nokia.messages import Command, NokInfo
from ..protocol.selection import ALL_FLASH_IDS, Loader, loader_for
from ..transport.base import Link
from ..transport.libusb import HotplugEvent, UsbContext, UsbDeviceInfo, UsbLink, hotplug_supported
from .pipeline import BootOptions, identify_device

__all__ = (
    "DEFAULT_POLL_INTERVAL",
    "ArrivalDedup",
    "DeviceFilters",
    "DeviceInfo",
    "HotplugEvent",
    "Identity",
    "find_devices",
    "identify",
    "open_link",
    "parse_port",
    "parse_unique_id",
    "parse_usb_id",
    "read_nok_info",
    "watch_devices",
)

logger = logging.getLogger(__name__)

#: What enumeration and hotplug report about a device (no I/O needed).
DeviceInfo = UsbDeviceInfo

#: Seconds between device-list scans when polling. Arrivals are noticed
#: within this; a scan of libusb's cached list costs well under a millisecond.
DEFAULT_POLL_INTERVAL = 0.25
_PORT_RE = re.compile(r"(\d{1,3})(?:-(\d{1,3}(?:\.\d{1,3})*))?")


def parse_port(text: str) -> str:
    """Check a ``--port`` value (``1-1.4.2``, or a bus alone: ``1``) and normalise it.

    :raises ~parallel_flash.errors.InputError: naming the value and the expected form.
    """
    match = _PORT_RE.fullmatch(text.strip())
    if match is None:
        raise InputError(
            f"port {text!r}: expected a sysfs port path such as 1-1.4.2 "
            "(bus, a dash, then port numbers joined by dots), or a bus number alone"
        )
    bus, ports = match.groups()
    return (
        f"{int(bus)}-{'.'.join(str(int(p)) for p in ports.split('.'))}" if ports else str(int(bus))
    )


def parse_unique_id(text: str) -> uuid.UUID:
    """Check a unique ID: a GUID as ``list`` prints it (braces optional)."""
    try:
        return uuid.UUID(text.strip().strip("{}"))
    except ValueError:
        raise InputError(
            f"unique ID {text!r}: expected a GUID such as 00000011-f151-a509-0000-000000000000"
        ) from None


def parse_usb_id(text: str) -> tuple[int, int]:
    """``VID:PID`` in hexadecimal (``045E:0A00``) -> (vendor ID, product ID)."""
    vid, sep, pid = text.strip().partition(":")
    try:
        if not sep:
            raise ValueError
        pair = int(vid, 16), int(pid, 16)
    except ValueError:
        raise InputError(
            f"USB ID {text!r}: expected VID:PID in hexadecimal, e.g. 045E:0A00"
        ) from None
    if not all(0 <= value <= 0xFFFF for value in pair):
        raise InputError(f"USB ID {text!r}: each half must be a 16-bit hexadecimal number")
    return pair


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
                raise InputError(f"{name.replace('_', ' ')} {value:#x} is not a 16-bit USB ID")
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
            f"{link.port}: a {loader} device has no unique ID "
            "(a unique-ID filter selects SimpleIO devices only)"
        )
    reply, logs = await identify_device(link, BootOptions(id_timeout=timeout))
    if not isinstance(reply, IdReply):  # pragma: no cover - the SimpleIO host answers IdReply
        raise RemoteProtocolError(f"{link.port}: not a SimpleIO Id reply")
    return Identity(reply=reply, logs=tuple(logs))


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

    def __init__(
        self, filters: DeviceFilters, also: tuple[tuple[int, int], ...] = ()
    ) -> None:
        self.filters = filters
        #: Further (VID, PID) pairs reported on the filtered ports (a booted image).
        self.also = also
        self._present: dict[str, DeviceInfo] = {}

    def present(self) -> list[DeviceInfo]:
        return list(self._present.values())

    def _wanted(self, device: DeviceInfo) -> bool:
        if self.filters.matches(device):
            return True
        if (device.vendor_id, device.product_id) not in self.also:
            return False
        ports = self.filters.ports
        return not ports or any(_port_matches(device.port, p) for p in ports)

    def feed(self, event: HotplugEvent) -> list[HotplugEvent]:
        device = event.device
        if not self._wanted(device):
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
    also: tuple[tuple[int, int], ...] = (),
) -> AsyncGenerator[HotplugEvent, None]:
    """Arrivals and departures of matching devices, present ones first.

    Deduplicated by :class:`ArrivalDedup`. ``polling`` None = libusb hotplug
    when libusb has it, else poll the device list every ``poll_interval``.
    ``also``: further (VID, PID) pairs to report on the filtered ports (the
    booted image a confirmation waits for).
    """
    if polling is None:
        polling = not hotplug_supported()
    dedup = ArrivalDedup(filters, also)

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
        vendor_ids = {filters.vendor_id, *(vid for vid, _ in also)}
        async with ctx.hotplug(
            vendor_id=filters.vendor_id if len(vendor_ids) == 1 else None,
            product_id=None if also else filters.product_id,
        ) as events:
            async for raw in events:
                for event in dedup.feed(raw):
                    yield event
