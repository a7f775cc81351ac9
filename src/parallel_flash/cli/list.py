"""``parallel-flash list``: every device in flashing mode, and what it says about itself.

For each device passing the filters: its port path, VID:PID, its loader, and
from the Id exchange (control request, ``01``, Id reply -- nothing else is
sent) the friendly name, unique ID and curPosition (non-zero: stuck in an
earlier transfer). Lumia and UFP devices are asked NOKV instead (nothing else
is sent): app type and version, protocol mask, WriteBufferSize,
LargestMemoryRegion, MMOS over USB support, platform ID. Devices are asked in
parallel. ``--json`` prints one JSON array.
Exit status: 0 when every device answered (also when none is attached), 1
when any could not be asked.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from typing import Any

import anyio

from . import EXIT_FAILED, EXIT_OK
from ._args import positive_float

__all__ = ("DeviceListing", "list_devices", "register")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ._usb import add_usb_arguments

    parser = subparsers.add_parser(
        "list",
        help="list devices in flashing mode (port, IDs, loader, name, curPosition)",
        description=(
            "Show every USB device in flashing mode: port path, VID:PID, loader, and from the "
            "Id exchange its friendly name, unique ID and curPosition. Sends nothing but the "
            "control request and Id; Lumia and UFP devices are asked NOKV only (app, versions, "
            "protocol mask, WriteBufferSize, LargestMemoryRegion, MMOS support, platform ID). "
            "Exit status: 0 ok, 1 a device did not answer."
        ),
    )
    add_usb_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON array")
    parser.add_argument(
        "--id-timeout",
        type=positive_float,
        default=2.0,
        metavar="S",
        help="seconds to wait for each Id reply (default 2)",
    )
    parser.set_defaults(func=run)


@dataclass(slots=True, kw_only=True)
class DeviceListing:
    """One line of ``list``: what enumeration and the Id exchange told."""

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
    loader: str = "simpleio"
    #: Lumia and UFP devices: what their NOKV reply says (NokInfo.describe()).
    nok: dict[str, Any] | None = None

    @property
    def usb_id(self) -> str:
        return f"{self.vendor_id:04x}:{self.product_id:04x}"

    def to_json(self) -> dict[str, Any]:
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

    @property
    def details(self) -> str:
        """The NOKV facts, for the table."""
        nok = self.nok
        if nok is None:
            return ""
        mask = nok["protocol_mask"]
        size, region = nok["write_buffer_size"], nok["largest_memory_region"]
        mmos = {True: "yes", False: "no", None: "-"}[nok["mmos_over_usb"]]
        return (
            f"{nok['app']} {nok['app_version']} protocol {nok['protocol_version']} "
            f"mask {'-' if mask is None else f'0x{mask:04x}'} "
            f"W {'-' if size is None else f'0x{size:x}'} "
            f"LMR {'-' if region is None else f'0x{region:x}'} "
            f"MMOS {mmos} platform {nok['platform_id'] or '-'}"
        )


async def list_devices(filters: Any = None, *, id_timeout: float = 2.0) -> list[DeviceListing]:
    """Ask every matching device for its Id, in parallel; results in port order.

    :param filters: a :class:`~parallel_flash.discovery.DeviceFilters`
        (default: every device in flashing mode). ``unique_ids`` drop the
        devices whose Id reply does not match.
    """
    from ..engine.discovery import DeviceFilters, find_devices, identify, open_link, read_nok_info
    from ..errors import ProtocolError, TransportError
    from ..protocol.selection import Loader, loader_for
    from ..transport.libusb import UsbContext

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

        async def ask(device: Any, listing: DeviceListing) -> None:
            try:
                link = await open_link(ctx, device)
            except (TransportError, ProtocolError) as exc:
                listing.error = str(exc)
                return
            try:
                if listing.loader != Loader.SIMPLEIO:
                    info = await read_nok_info(link, timeout=id_timeout)
                    listing.nok = info.describe()
                    listing.name = info.platform_id
                    return
                identity = await identify(link, timeout=id_timeout)
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

        async with anyio.create_task_group() as group:
            for device, listing in zip(devices, listings, strict=True):
                group.start_soon(ask, device, listing)
    if filters.unique_ids:
        wanted = {str(u) for u in filters.unique_ids}
        listings = [item for item in listings if item.error or item.unique_id in wanted]
    return listings


def _table(listings: list[DeviceListing]) -> str:
    from ..output.ui import printable

    rows = [("PORT", "USB ID", "LOADER", "NAME", "UNIQUE ID", "CURPOSITION", "NOKV")]
    for item in listings:
        if item.error:
            rows.append(
                (item.port, item.usb_id, item.loader, f"error: {printable(item.error)}", "", "", "")
            )
        else:
            rows.append(
                (
                    item.port,
                    item.usb_id,
                    item.loader,
                    printable(item.name or "") or "-",
                    item.unique_id or "-",
                    "-" if item.cur_position is None else str(item.cur_position),
                    printable(item.details),
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ._usb import filters_from_args

    filters = filters_from_args(args)
    listings = anyio.run(lambda: list_devices(filters, id_timeout=args.id_timeout))
    if args.json:
        json.dump([item.to_json() for item in listings], sys.stdout, indent=2, ensure_ascii=True)
        sys.stdout.write("\n")
    elif listings:
        print(_table(listings))
    if not listings:
        print(f"parallel-flash: no device in flashing mode ({filters.describe()})", file=sys.stderr)
    return EXIT_FAILED if any(item.error for item in listings) else EXIT_OK
