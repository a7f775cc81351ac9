"""Devices as libusb enumerates them, and the SimpleIO interface checked on them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import usb1

from ...errors import RemoteProtocolError
from ..ports import PortPath

__all__ = ("INTERFACE", "HotplugEvent", "UsbDeviceInfo", "describe", "simpleio_endpoints")

#: Interface 0, alternate setting 0 carries the SimpleIO endpoints (protocol.md).
INTERFACE = 0

_ENDPOINT_KINDS = ("control", "isochronous", "bulk", "interrupt")


@dataclass(frozen=True, slots=True, kw_only=True)
class UsbDeviceInfo:
    """One USB device as enumeration or hotplug saw it (no I/O needed to make one)."""

    #: sysfs-style port path: bus, then port numbers joined by dots (``1-1.4.2``).
    port: str
    bus: int
    address: int
    vendor_id: int
    product_id: int
    #: The python-libusb1 device, opaque outside this package.
    device: Any = field(repr=False, compare=False)

    @property
    def usb_id(self) -> str:
        return f"{self.vendor_id:04x}:{self.product_id:04x}"

    @property
    def key(self) -> tuple[str, int, int]:
        """Identifies one enumeration of a device: a replug gets a new address."""
        return (self.port, self.bus, self.address)


@dataclass(frozen=True, slots=True)
class HotplugEvent:
    """A device arrived (``arrived=True``) or left."""

    arrived: bool
    device: UsbDeviceInfo


def _port_path(bus: int, ports: list[int]) -> str:
    """The device's sysfs name: its port path, or ``usbN`` for a root hub."""
    return str(PortPath(bus, tuple(ports))) if ports else f"usb{bus}"


def describe(device: usb1.USBDevice) -> UsbDeviceInfo:
    """Read only what libusb caches: safe inside a hotplug callback."""
    bus = device.getBusNumber()
    try:
        ports = device.getPortNumberList()
    except usb1.USBError:
        ports = []
    return UsbDeviceInfo(
        port=_port_path(bus, ports),
        bus=bus,
        address=device.getDeviceAddress(),
        vendor_id=device.getVendorID(),
        product_id=device.getProductID(),
        device=device,
    )


def simpleio_endpoints(info: UsbDeviceInfo) -> tuple[int, int, int]:
    """(EP IN, EP OUT, wMaxPacketSize of EP OUT) of interface 0 alt 0, checked.

    protocol.md: exactly one bulk IN and one bulk OUT endpoint; anything
    else there is an error.
    """
    setting = next(
        (
            candidate
            for candidate in info.device.iterSettings()
            if candidate.getNumber() == INTERFACE and candidate.getAlternateSetting() == 0
        ),
        None,
    )
    if setting is None:
        raise RemoteProtocolError(
            f"{info.port}: device {info.usb_id} has no interface 0 alternate setting 0"
        )
    bulk_in: list[tuple[int, int]] = []
    bulk_out: list[tuple[int, int]] = []
    others: list[str] = []
    for endpoint in setting:
        address = endpoint.getAddress()
        kind = endpoint.getAttributes() & 0x03
        size = endpoint.getMaxPacketSize() & 0x07FF
        if kind == 2:
            (bulk_in if address & 0x80 else bulk_out).append((address, size))
        else:
            others.append(f"0x{address:02x} ({_ENDPOINT_KINDS[kind]})")
    if len(bulk_in) != 1 or len(bulk_out) != 1 or others:
        found = [f"0x{a:02x} (bulk)" for a, _ in bulk_in + bulk_out] + others
        raise RemoteProtocolError(
            f"{info.port}: device {info.usb_id} interface 0 must have exactly one bulk IN and "
            f"one bulk OUT endpoint; it has {', '.join(found) or 'none'}"
        )
    (endpoint_in, _), (endpoint_out, mps) = bulk_in[0], bulk_out[0]
    if mps <= 0:
        raise RemoteProtocolError(
            f"{info.port}: bulk OUT endpoint 0x{endpoint_out:02x} reports wMaxPacketSize 0"
        )
    return endpoint_in, endpoint_out, mps
