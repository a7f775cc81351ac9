"""The USB device options of ``boot`` and ``list``: their flags, help and messages.

The library's filters and parsers (:mod:`parallel_flash.engine.discovery`) know no
flags; this module words every message in terms of the option the user typed.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

from ..engine.discovery import DeviceFilters, parse_unique_id, parse_usb_id
from ..errors import InputError
from ..protocol.selection import Loader
from ..transport.ports import PortPath

__all__ = (
    "add_usb_arguments",
    "filters_from_args",
    "loader_ids",
    "loader_ids_text",
    "usb_id",
)

T = TypeVar("T")


def _flag_type(flag: str, parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type that words the library's message with ``flag``."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except InputError as exc:
            # The library names the value ("port '1:4143': ..."); the CLI names the flag.
            detail = str(exc).split(repr(text), 1)[-1]
            raise argparse.ArgumentTypeError(f"{flag} {text!r}{detail}") from None

    convert.__name__ = flag.lstrip("-")
    return convert


def _hex16(text: str) -> int:
    try:
        value = int(text, 16)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a hexadecimal USB ID") from None
    if not 0 <= value <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"{text!r} is not a 16-bit USB ID")
    return value


def _port_prefix(text: str) -> PortPath:
    return PortPath.parse(text, bus_alone=True)


#: ``--expect VID:PID``
usb_id = _flag_type("--expect", parse_usb_id)

_LOADER_NAMES = {Loader.SIMPLEIO: "SimpleIO", Loader.LUMIA: "Lumia", Loader.UFP: "UFP"}


def loader_ids(loader: Loader) -> str:
    """A loader's flashing-mode IDs as help text shows them: ``0421:05EE/066E and 045E:0A02``."""
    by_vendor: dict[int, list[int]] = {}
    for vendor, product in sorted(loader.ids):
        by_vendor.setdefault(vendor, []).append(product)
    return " and ".join(
        f"{vendor:04X}:{'/'.join(f'{p:04X}' for p in products)}"
        for vendor, products in by_vendor.items()
    )


def loader_ids_text() -> str:
    """Every loader's flashing-mode IDs (from the one ID table, protocol.selection)."""
    return ", ".join(f"{_LOADER_NAMES[loader]} {loader_ids(loader)}" for loader in Loader)


def add_usb_arguments(parser: argparse.ArgumentParser) -> None:
    """``--vid --pid --port --id``, as ``boot`` and ``list`` have them."""
    usb = parser.add_argument_group("USB devices")
    usb.add_argument("--vid", type=_hex16, default=None, metavar="HEX",
                     help="vendor ID of devices in flashing mode (default: every loader's IDs: "
                          f"{loader_ids_text()})")
    usb.add_argument("--pid", type=_hex16, default=None, metavar="HEX",
                     help="product ID of devices in flashing mode (default: every loader's IDs)")
    usb.add_argument("--port", action="append", default=[], metavar="PATH",
                     type=_flag_type("--port", _port_prefix),
                     help="only devices on this port path or below it, sysfs form: 1-1.4 "
                          "(repeatable)")
    usb.add_argument("--id", dest="unique_ids", action="append", default=[], metavar="GUID",
                     type=_flag_type("--id", parse_unique_id),
                     help="only the device with this unique ID (repeatable)")


def filters_from_args(args: argparse.Namespace) -> DeviceFilters:
    """The filters of ``boot``/``list`` arguments (``--vid --pid --port --id``)."""
    return DeviceFilters(
        vendor_id=args.vid,
        product_id=args.pid,
        ports=tuple(args.port or ()),
        unique_ids=tuple(args.unique_ids or ()),
    )
