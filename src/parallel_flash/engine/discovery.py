"""Finding devices in flashing mode on real USB: filters, enumeration, arrivals.

A device is named by its port path in sysfs form (``1-1.4.2``: bus, then
port numbers joined by dots) -- the key that survives re-enumeration, used
to pin devices to physical ports (field-notes.md, 1 and 3). Filters:

* VID/PID (default: the flashing-mode IDs of every loader -- SimpleIO
  045E:062A, the Lumia flash app's and UFP's, :mod:`.protocol.selection`);
* port path prefixes (:class:`~parallel_flash.transport.ports.PortPath`),
  matched on whole path components (``1-1.4`` matches ``1-1.4`` and
  ``1-1.4.2`` but not ``1-1.40``);
* unique IDs, which need the Id exchange and so are checked after opening
  (:func:`identify`).

:func:`list_devices` asks every matching device what it is (``parallel-flash list``).

Arrivals come from libusb hotplug where libusb has it, else (or when asked)
from polling the device list; both are deduplicated by port path.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import anyio

from ..errors import (
    InputError,
    InvalidValue,
    ProtocolError,
    RemoteProtocolError,
    TransportError,
)
from ..protocol.host import DEFAULT_TIMEOUTS
from ..protocol.messages import IdReply, LogPacket
from ..protocol.nokia.host import NokTimeouts
from ..protocol.nokia.messages import REPLY_BUFFER_SIZE as NOK_REPLY_BUFFER_SIZE
from ..protocol.nokia.messages import Command, NokInfo
from ..protocol.selection import ALL_FLASH_IDS, Loader, loader_for
from ..transport.base import Link
from ..transport.libusb import HotplugEvent, UsbContext, UsbDeviceInfo, hotplug_supported
from ..transport.ports import PortPath, port_sort_key
from .pipeline import BootOptions, identify_device

__all__ = (
    "DEFAULT_POLL_INTERVAL",
    "ArrivalDedup",
    "DeviceFilters",
    "DeviceInfo",
    "DeviceListing",
    "HotplugEvent",
    "Identity",
    "find_devices",
    "identify",
    "list_devices",
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
_NOK_TIMEOUTS = NokTimeouts()


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


def _on_ports(port: str, prefixes: tuple[PortPath, ...]) -> bool:
    """Whether a device's port lies on or below one of ``prefixes`` (none = any port)."""
    if not prefixes:
        return True
    try:
        path = PortPath.parse(port)
    except InvalidValue:  # a root hub ("usb1") sits on no port
        return False
    return any(prefix.covers(path) for prefix in prefixes)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceFilters:
    """Which devices a command takes; the defaults take every device in flashing mode."""

    #: None = any; both None = the flashing-mode IDs of every loader.
    vendor_id: int | None = None
    product_id: int | None = None
    #: Port path prefixes (a bus alone covers the bus); empty = any port. Strings
    #: are parsed (:meth:`PortPath.parse`), so ``ports=("1-1.4",)`` works too.
    ports: tuple[PortPath, ...] = ()
    #: Unique IDs from the Id reply; empty = any device.
    unique_ids: tuple[uuid.UUID, ...] = ()

    def __post_init__(self) -> None:
        for name in ("vendor_id", "product_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 0xFFFF:
                raise InputError(f"{name.replace('_', ' ')} {value:#x} is not a 16-bit USB ID")
        object.__setattr__(
            self,
            "ports",
            tuple(
                p if isinstance(p, PortPath) else PortPath.parse(p, bus_alone=True)
                for p in self.ports
            ),
        )

    def matches(self, device: DeviceInfo) -> bool:
        """VID, PID and port filters (everything known without opening the device)."""
        if not self.matches_ids(device.vendor_id, device.product_id):
            return False
        return _on_ports(device.port, self.ports)

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
            plural = "s" if len(self.ports) > 1 else ""
            text += f" on port{plural} {', '.join(map(str, self.ports))}"
        if self.unique_ids:
            text += f" with ID {', '.join(map(str, self.unique_ids))}"
        return text


# -- enumeration ------------------------------------------------------------------


def find_devices(ctx: UsbContext, filters: DeviceFilters) -> list[DeviceInfo]:
    """Devices present now that pass the VID/PID/port filters, in port order.

    Unique-ID filters need the Id exchange: apply them with :func:`identify`.
    """
    found = [device for device in ctx.devices() if filters.matches(device)]
    found.sort(key=lambda device: port_sort_key(device.port))
    return found


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """What the Id exchange told about a device, and the Log packets that came with it."""

    reply: IdReply
    logs: tuple[LogPacket, ...] = ()


async def identify(link: Link, *, timeout: float = DEFAULT_TIMEOUTS.identify) -> Identity:
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


async def read_nok_info(link: Link, *, timeout: float = _NOK_TIMEOUTS.info) -> NokInfo:
    """A Lumia or UFP device's NOKV reply; sends NOKV only (read-only for the device).

    :raises ~parallel_flash.errors.TransportError: the device did not answer.
    :raises ~parallel_flash.errors.RemoteProtocolError: it answered nonsense.
    """
    await link.bulk_out(Command.INFO.value, timeout=timeout)
    return NokInfo.parse(await link.bulk_in(NOK_REPLY_BUFFER_SIZE, timeout=timeout))


# -- listing ----------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class DeviceListing:
    """One device as :func:`list_devices` found it: what enumeration and the Id exchange told."""

    port: str
    bus: int
    address: int
    vendor_id: int
    product_id: int
    name: str | None = None
    unique_id: str | None = None
    cur_position: int | None = None
    fast_flash: bool | None = None
    logs: list[str] = field(default_factory=list)
    error: str | None = None
    #: simpleio, lumia or ufp (by the USB IDs).
    loader: str = Loader.SIMPLEIO.value
    #: Lumia and UFP devices: what their NOKV reply says (NokInfo.describe()).
    nok: dict[str, Any] | None = None

    @property
    def usb_id(self) -> str:
        return f"{self.vendor_id:04x}:{self.product_id:04x}"

    def to_json(self) -> dict[str, Any]:
        """The listing as ``list --json`` prints it (schemas/list.schema.json)."""
        return {
            "port": self.port,
            "bus": self.bus,
            "address": self.address,
            "usb_id": self.usb_id,
            "loader": self.loader,
            "name": self.name,
            "unique_id": self.unique_id,
            "cur_position": self.cur_position,
            "fast_flash": self.fast_flash,
            "logs": self.logs,
            "error": self.error,
            "nok": self.nok,
        }


async def list_devices(
    filters: DeviceFilters | None = None, *, id_timeout: float = DEFAULT_TIMEOUTS.identify
) -> list[DeviceListing]:
    """Ask every matching device what it is, in parallel; results in port order.

    SimpleIO devices get the Id exchange only, Lumia and UFP devices NOKV
    only: nothing that changes a device's state. A device that cannot be
    opened or does not answer is listed with its ``error``.

    :param filters: which devices (default: every device in flashing mode);
        ``unique_ids`` drop the devices whose Id reply does not match.
    :param id_timeout: seconds to wait for each device's reply.
    """
    filters = filters or DeviceFilters()
    async with UsbContext() as ctx:
        devices = find_devices(ctx, filters)
        listings = [
            DeviceListing(
                port=d.port,
                bus=d.bus,
                address=d.address,
                vendor_id=d.vendor_id,
                product_id=d.product_id,
                loader=(loader_for(d.vendor_id, d.product_id) or Loader.SIMPLEIO).value,
            )
            for d in devices
        ]
        async with anyio.create_task_group() as group:
            for device, listing in zip(devices, listings, strict=True):
                group.start_soon(_ask, ctx, device, listing, id_timeout)
    if filters.unique_ids:
        wanted = {str(u) for u in filters.unique_ids}
        listings = [item for item in listings if item.error or item.unique_id in wanted]
    return listings


async def _ask(
    ctx: UsbContext, device: DeviceInfo, listing: DeviceListing, timeout: float
) -> None:
    """Fill in one listing from the device's Id reply (SimpleIO) or NOKV reply."""
    try:
        link = await ctx.open(device)
    except (TransportError, ProtocolError) as exc:
        listing.error = str(exc)
        return
    try:
        if listing.loader != Loader.SIMPLEIO:
            info = await read_nok_info(link, timeout=timeout)
            listing.nok = info.describe()
            listing.name = info.platform_id
            return
        identity = await identify(link, timeout=timeout)
    except (TransportError, ProtocolError) as exc:
        what = "NOKV" if listing.loader != Loader.SIMPLEIO else "Id"
        listing.error = f"no {what} reply: {exc}"
        return
    finally:
        with anyio.CancelScope(shield=True):
            await link.aclose()
    reply = identity.reply
    listing.name = reply.friendly_name
    listing.unique_id = reply.unique_id_text
    listing.cur_position = reply.cur_position
    listing.fast_flash = reply.fast_flash
    listing.logs = [log.text for log in identity.logs]


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
        return _on_ports(device.port, self.filters.ports)

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
