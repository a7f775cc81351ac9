"""``parallel-flash list``: every device in flashing mode, and what it says about itself.

For each device passing the filters: its port path, VID:PID, and from the Id
exchange (control request, ``01``, Id reply -- nothing else is sent) the
friendly name, unique ID and curPosition (non-zero: stuck in an earlier
transfer). Devices are asked in parallel. ``--json`` prints one JSON array.
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
    from ..discovery import add_usb_arguments

    parser = subparsers.add_parser(
        "list",
        help="list devices in flashing mode (port, IDs, name, curPosition)",
        description=(
            "Show every USB device in flashing mode: port path, VID:PID, and from the Id "
            "exchange its friendly name, unique ID and curPosition. Sends nothing but the "
            "control request and Id. Exit status: 0 ok, 1 a device did not answer."
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

    @property
    def usb_id(self) -> str:
        return f"{self.vendor_id:04x}:{self.product_id:04x}"

    def to_json(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "bus": self.bus,
            "address": self.address,
            "usb_id": self.usb_id,
            "name": self.name,
            "unique_id": self.unique_id,
            "cur_position": self.cur_position,
            "fast_flash": self.fast_flash,
            "logs": self.logs,
            "error": self.error,
        }


async def list_devices(filters: Any = None, *, id_timeout: float = 2.0) -> list[DeviceListing]:
    """Ask every matching device for its Id, in parallel; results in port order.

    :param filters: a :class:`~parallel_flash.discovery.DeviceFilters`
        (default: every device in flashing mode). ``unique_ids`` drop the
        devices whose Id reply does not match.
    """
    from ..discovery import DeviceFilters, find_devices, identify, open_link
    from ..errors import ProtocolError, TransportError
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
                identity = await identify(link, timeout=id_timeout)
            except (TransportError, ProtocolError) as exc:
                listing.error = f"no Id reply: {exc}"
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
    from ..ui import printable

    rows = [("PORT", "USB ID", "NAME", "UNIQUE ID", "CURPOSITION")]
    for item in listings:
        if item.error:
            rows.append((item.port, item.usb_id, f"error: {printable(item.error)}", "", ""))
        else:
            rows.append(
                (
                    item.port,
                    item.usb_id,
                    printable(item.name or ""),
                    item.unique_id or "",
                    str(item.cur_position),
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..discovery import filters_from_args

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
