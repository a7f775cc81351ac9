"""Port paths in sysfs form (``1-1.4.2``): the one type and its rules.

A port path is the bus number, a dash, then the hub port numbers from the
root hub down, joined by dots -- the name of the device's sysfs directory,
which is also what libusb's ``libusb_get_port_numbers()`` walks. It is the key
that survives re-enumeration, so devices are pinned to physical ports by it
(field-notes.md, 1 and 3). Discovery filters by it, the libusb transport
names devices by it, the emulator places its devices by it.

Stdlib only: the umockdev emulator host imports this module too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InvalidValue

__all__ = ("MAX_HUB_PORT", "PortPath", "port_sort_key")

#: Highest port number a hub can have (the kernel's USB_MAXCHILDREN; an xHCI
#: root hub may have more than the 15 of a USB 3 external hub).
MAX_HUB_PORT = 31
#: USB allows five hubs between root and device: at most 7 port numbers.
_MAX_DEPTH = 7
_PATTERN = re.compile(r"(?:usb:)?(\d{1,3})(?:-(\d{1,3}(?:\.\d{1,3})*))?")
_DIGITS = re.compile(r"(\d+)")


@dataclass(frozen=True, slots=True, order=True)
class PortPath:
    """A port path: bus number and port numbers; no port numbers = the whole bus.

    Ordered numerically (``1-1.9`` before ``1-1.10``); ``str()`` gives the
    sysfs form back.
    """

    bus: int
    ports: tuple[int, ...] = ()

    @classmethod
    def parse(cls, text: str, *, bus_alone: bool = False) -> PortPath:
        """Parse ``1-1.4.2`` (``usb:1-1.4.2`` too; leading zeros dropped).

        :param bus_alone: also take a bus number alone (``1``): a filter for
            every device on that bus.
        :raises ~parallel_flash.errors.InvalidValue: naming the text and what is wrong.
        """
        match = _PATTERN.fullmatch(text.strip())
        if match is None or (match.group(2) is None and not bus_alone):
            alone = ", or a bus number alone" if bus_alone else ""
            raise InvalidValue(
                f"port {text!r}: expected a sysfs port path such as 1-1.4.2 "
                f"(bus, a dash, then port numbers joined by dots){alone}"
            )
        bus = int(match.group(1))
        ports = tuple(int(part) for part in (match.group(2) or "").split(".") if part)
        if not 1 <= bus <= 127:
            raise InvalidValue(f"port {text!r}: bus {bus} is outside 1..127")
        if len(ports) > _MAX_DEPTH:
            raise InvalidValue(f"port {text!r}: more than {_MAX_DEPTH} levels of hubs")
        if any(not 1 <= port <= MAX_HUB_PORT for port in ports):
            raise InvalidValue(f"port {text!r}: port numbers must be 1..{MAX_HUB_PORT}")
        return cls(bus, ports)

    def __str__(self) -> str:
        if not self.ports:
            return str(self.bus)
        return f"{self.bus}-{self.devpath}"

    @property
    def devpath(self) -> str:
        """The sysfs ``devpath`` attribute: the port numbers alone (``1.4.2``)."""
        return ".".join(map(str, self.ports))

    @property
    def parent(self) -> PortPath | None:
        """The hub this port belongs to, None for a root-hub port."""
        return PortPath(self.bus, self.ports[:-1]) if len(self.ports) > 1 else None

    def covers(self, other: PortPath) -> bool:
        """Whole-component prefix: ``1-1.4`` covers ``1-1.4.2``, not ``1-1.40``.

        A bus alone (``1``) covers every port of that bus.
        """
        return other.bus == self.bus and other.ports[: len(self.ports)] == self.ports

    def sysfs_path(self) -> str:
        """``/devices/usb1/1-1/1-1.4/1-1.4.2`` -- each hub a directory above."""
        parts = [f"usb{self.bus}"]
        parts += [
            str(PortPath(self.bus, self.ports[:depth])) for depth in range(1, len(self.ports) + 1)
        ]
        return "/devices/" + "/".join(parts)


def port_sort_key(port: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key for any link's port name: ``1-1.2`` before ``1-1.10``, ``sim-9`` before ``sim-10``.

    Works on names that are not USB port paths (simulated links), so a
    mixed list still sorts; on port paths it orders as :class:`PortPath` does.
    """
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part)
        for part in _DIGITS.split(port)
        if part
    )
