"""``parallel-flash list``: every device in flashing mode, and what it says about itself.

For each device passing the filters: its port path, VID:PID, its loader, and
from the Id exchange (control request, ``01``, Id reply -- nothing else is
sent) the friendly name, unique ID and curPosition (non-zero: stuck in an
earlier transfer). Lumia and UFP devices are asked NOKV instead (nothing else
is sent): app type and version, protocol mask, WriteBufferSize,
LargestMemoryRegion, MMOS over USB support, platform ID. Devices are asked in
parallel (:func:`~parallel_flash.engine.discovery.list_devices`; this module
only words and prints them). ``--json`` prints one JSON array.
Exit status: 0 when every device answered (also when none is attached), 1
when any could not be asked.
"""

from __future__ import annotations

import argparse
import json
import sys

import anyio

from ..engine.discovery import DeviceListing, list_devices
from ..protocol.host import DEFAULT_TIMEOUTS
from . import EXIT_FAILED, EXIT_OK
from ._args import positive_float

__all__ = ("register",)


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
        default=DEFAULT_TIMEOUTS.identify,
        metavar="S",
        help="seconds to wait for each Id (or NOKV) reply (default %(default)g)",
    )
    parser.set_defaults(func=run)


def _details(listing: DeviceListing) -> str:
    """The NOKV facts of a Lumia or UFP device, for the table."""
    nok = listing.nok
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
                    printable(_details(item)),
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
