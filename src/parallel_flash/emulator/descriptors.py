"""USB descriptors of the emulated devices and the standard requests they answer.

Stdlib only: this module runs inside the umockdev host process (Debian's
python3), see :mod:`parallel_flash.emulator._gi_host`.

libusb reads the device and configuration descriptors from the sysfs
``descriptors`` attribute (the kernel's cached copy); string descriptors and
everything else come through control transfers, answered by
:func:`answer_standard_request`. Field layouts follow USB 2.0 chapter 9.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = (
    "BOOTED_PID",
    "FLASHING_PID",
    "HUB_PID",
    "HUB_VID",
    "MICROSOFT_VID",
    "DeviceIdentity",
    "answer_standard_request",
    "configuration_descriptor",
    "device_descriptor",
    "hub_descriptors",
    "string_descriptor",
)

# The IDs of protocol/messages.py, repeated because this module runs in the
# emulator host before the project's dependencies (construct, which the
# protocol package imports) are importable there; a test holds them equal.
MICROSOFT_VID = 0x045E
#: Microsoft flashing mode ("SimpleIO"), protocol.md.
FLASHING_PID = 0x062A
#: What an emulated device shows once it has left flashing mode (a booted
#: image). Any PID other than the flashing one would do; station mode only
#: needs to see that the device on that port is no longer in flashing mode.
BOOTED_PID = 0x0A00
#: The Linux Foundation's 2.0 root hub IDs, used for every emulated hub.
HUB_VID = 0x1D6B
HUB_PID = 0x0002

_LANGID_EN_US = 0x0409
_DT_DEVICE = 1
_DT_CONFIG = 2
_DT_STRING = 3
_DT_INTERFACE = 4
_DT_ENDPOINT = 5
_REQ_GET_STATUS = 0
_REQ_CLEAR_FEATURE = 1
_REQ_SET_FEATURE = 3
_REQ_GET_DESCRIPTOR = 6
_REQ_GET_CONFIGURATION = 8
_REQ_SET_CONFIGURATION = 9
_REQ_GET_INTERFACE = 10
_REQ_SET_INTERFACE = 11

# String descriptor indexes used in the device descriptor.
_STR_MANUFACTURER = 1
_STR_PRODUCT = 2
_STR_SERIAL = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceIdentity:
    """What the descriptors of one emulated device say about it."""

    vid: int = MICROSOFT_VID
    pid: int = FLASHING_PID
    bcd_device: int = 0x0100
    manufacturer: str = "Microsoft"
    product: str = "Windows Phone (flashing mode)"
    serial: str | None = None
    #: wMaxPacketSize of both bulk endpoints (512 at high speed).
    max_packet_size: int = 512
    #: False for a booted image: interface 0 then has no endpoints, so a
    #: host that insists on the flashing-mode interface refuses it.
    bulk_endpoints: bool = True
    #: Non-zero for a hub with that many ports (the tree above the devices).
    hub_ports: int = 0

    def __post_init__(self) -> None:
        for name in ("vid", "pid", "bcd_device"):
            value = getattr(self, name)
            if not 0 <= value <= 0xFFFF:
                raise ValueError(f"{name} must fit in 16 bits, not {value:#x}")
        if not 8 <= self.max_packet_size <= 1024:
            raise ValueError(f"max_packet_size must be 8..1024, not {self.max_packet_size}")


def device_descriptor(identity: DeviceIdentity) -> bytes:
    """The 18-byte device descriptor (USB 2.0 table 9-8)."""
    if identity.hub_ports:
        return hub_descriptors(ports=identity.hub_ports)[:18]
    return struct.pack(
        "<BBHBBBBHHHBBBB",
        18,  # bLength
        _DT_DEVICE,  # bDescriptorType
        0x0200,  # bcdUSB
        0x00,  # bDeviceClass: per interface
        0x00,  # bDeviceSubClass
        0x00,  # bDeviceProtocol
        64,  # bMaxPacketSize0
        identity.vid,  # idVendor
        identity.pid,  # idProduct
        identity.bcd_device,  # bcdDevice
        _STR_MANUFACTURER,  # iManufacturer
        _STR_PRODUCT,  # iProduct
        _STR_SERIAL if identity.serial else 0,  # iSerialNumber
        1,  # bNumConfigurations
    )


def configuration_descriptor(identity: DeviceIdentity) -> bytes:
    """Configuration 1: interface 0 alt 0, vendor class, bulk IN 0x81 + bulk OUT 0x01."""
    if identity.hub_ports:
        return hub_descriptors(ports=identity.hub_ports)[18:]
    endpoints = b""
    if identity.bulk_endpoints:
        for address in (0x81, 0x01):
            endpoints += struct.pack(
                "<BBBBHB",
                7,  # bLength
                _DT_ENDPOINT,  # bDescriptorType
                address,  # bEndpointAddress
                0x02,  # bmAttributes: bulk
                identity.max_packet_size,  # wMaxPacketSize
                0,  # bInterval
            )
    interface = struct.pack(
        "<BBBBBBBBB",
        9,  # bLength
        _DT_INTERFACE,  # bDescriptorType
        0,  # bInterfaceNumber
        0,  # bAlternateSetting
        len(endpoints) // 7,  # bNumEndpoints
        0xFF,  # bInterfaceClass: vendor specific
        0xFF,  # bInterfaceSubClass
        0xFF,  # bInterfaceProtocol
        0,  # iInterface
    )
    total = 9 + len(interface) + len(endpoints)
    config = struct.pack(
        "<BBHBBBBB",
        9,  # bLength
        _DT_CONFIG,  # bDescriptorType
        total,  # wTotalLength
        1,  # bNumInterfaces
        1,  # bConfigurationValue
        0,  # iConfiguration
        0x80,  # bmAttributes: bus powered
        250,  # bMaxPower: 500 mA
    )
    return config + interface + endpoints


def string_descriptor(identity: DeviceIdentity, index: int) -> bytes | None:
    """String descriptor ``index`` (0 = the LANGID list), None when there is none."""
    if index == 0:
        return struct.pack("<BBH", 4, _DT_STRING, _LANGID_EN_US)
    text = {
        _STR_MANUFACTURER: identity.manufacturer,
        _STR_PRODUCT: identity.product,
        _STR_SERIAL: identity.serial,
    }.get(index)
    if text is None:
        return None
    encoded = text.encode("utf-16-le")[:252]
    return struct.pack("<BB", 2 + len(encoded), _DT_STRING) + encoded


def hub_descriptors(*, ports: int = 7) -> bytes:
    """Device + configuration descriptors of a USB 2.0 high-speed hub.

    Only what libusb reads from sysfs while it enumerates the tree above a
    device (the hubs give the port path its parents).
    """
    device = struct.pack(
        "<BBHBBBBHHHBBBB",
        18, _DT_DEVICE, 0x0200, 0x09, 0x00, 0x01, 64, HUB_VID, HUB_PID, 0x0100,
        _STR_MANUFACTURER, _STR_PRODUCT, 0, 1,
    )  # fmt: skip
    interface = struct.pack("<BBBBBBBBB", 9, _DT_INTERFACE, 0, 0, 1, 0x09, 0, 0, 0)
    endpoint = struct.pack("<BBBBHB", 7, _DT_ENDPOINT, 0x81, 0x03, 1 + ports // 8, 12)
    config = struct.pack("<BBHBBBBB", 9, _DT_CONFIG, 25, 1, 1, 0, 0xE0, 0)
    return device + config + interface + endpoint


def answer_standard_request(
    identity: DeviceIdentity, request_type: int, request: int, value: int, index: int, length: int
) -> bytes | None:
    """Answer a standard (chapter 9) control request.

    Returns the data stage for an IN request (truncated to ``length``), b""
    for an accepted OUT request, or None for STALL.
    """
    if request_type & 0x60 != 0:
        raise ValueError("not a standard request")
    recipient = request_type & 0x1F
    device_to_host = bool(request_type & 0x80)
    answer: bytes | None = None
    if request == _REQ_GET_DESCRIPTOR and device_to_host:
        kind, number = value >> 8, value & 0xFF
        if kind == _DT_DEVICE:
            answer = device_descriptor(identity)
        elif kind == _DT_CONFIG and number == 0:
            answer = configuration_descriptor(identity)
        elif kind == _DT_STRING:
            answer = string_descriptor(identity, number)
    elif request == _REQ_GET_STATUS and device_to_host:
        answer = b"\x00\x00"
    elif request == _REQ_GET_CONFIGURATION and device_to_host and recipient == 0:
        answer = b"\x01"
    elif request == _REQ_GET_INTERFACE and device_to_host and recipient == 1:
        answer = b"\x00" if index == 0 else None
    elif not device_to_host and request in (_REQ_CLEAR_FEATURE, _REQ_SET_FEATURE):
        answer = b""
    elif not device_to_host and request == _REQ_SET_CONFIGURATION:
        answer = b"" if value in (0, 1) else None
    elif not device_to_host and request == _REQ_SET_INTERFACE:
        answer = b"" if (index, value) == (0, 0) else None
    if answer is None:
        return None
    return answer[:length] if device_to_host else b""
