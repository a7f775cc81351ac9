"""Port paths of the emulated line, in sysfs form (``1-1.4.2``).

Stdlib only (runs in the umockdev host too). A port path is the bus number,
a dash, then the hub port numbers from the root hub down, joined by dots --
the name of the device's sysfs directory, which is also what libusb's
``libusb_get_port_numbers()`` walks. Every hub on the way is emulated as well,
because libusb finds a device's parent (and so the rest of the path) by
looking the parent's sysfs name up among the enumerated devices.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ("HUB_PORTS", "ROOT_PORTS", "PortPath", "default_port")

#: Ports per emulated external hub (a common 7-port hub).
HUB_PORTS = 7
#: Ports of each emulated root hub.
ROOT_PORTS = 15
#: USB allows five hubs between root and device: at most 7 port numbers.
_MAX_DEPTH = 7
_PATTERN = re.compile(r"(\d{1,3})-(\d{1,2}(?:\.\d{1,2})*)")


@dataclass(frozen=True, slots=True, order=True)
class PortPath:
    """A validated port path: bus number and port numbers."""

    bus: int
    ports: tuple[int, ...]

    @classmethod
    def parse(cls, text: str) -> PortPath:
        """Parse ``1-1.4.2``; raises ValueError saying what is wrong."""
        match = _PATTERN.fullmatch(text.strip())
        if match is None:
            raise ValueError(
                f"port {text!r} is not in sysfs form: bus-port[.port...] such as 1-1.4.2"
            )
        bus = int(match.group(1))
        ports = tuple(int(part) for part in match.group(2).split("."))
        if not 1 <= bus <= 127:
            raise ValueError(f"port {text!r}: bus {bus} is outside 1..127")
        if len(ports) > _MAX_DEPTH:
            raise ValueError(f"port {text!r}: more than {_MAX_DEPTH} levels of hubs")
        if any(not 1 <= port <= 15 for port in ports):
            raise ValueError(f"port {text!r}: port numbers must be 1..15")
        return cls(bus, ports)

    def __str__(self) -> str:
        return f"{self.bus}-{'.'.join(map(str, self.ports))}"

    @property
    def devpath(self) -> str:
        """The sysfs ``devpath`` attribute: the port numbers alone (``1.4.2``)."""
        return ".".join(map(str, self.ports))

    @property
    def parent(self) -> PortPath | None:
        """The hub this port belongs to, None for a root-hub port."""
        return PortPath(self.bus, self.ports[:-1]) if len(self.ports) > 1 else None

    def sysfs_path(self) -> str:
        """``/devices/usb1/1-1/1-1.4/1-1.4.2`` -- each hub a directory above."""
        parts = [f"usb{self.bus}"]
        parts += [
            str(PortPath(self.bus, self.ports[:depth])) for depth in range(1, len(self.ports) + 1)
        ]
        return "/devices/" + "/".join(parts)


def default_port(index: int) -> PortPath:
    """Where device number ``index`` (0-based) of a line sits.

    Seven devices behind each hub, the hubs on the ports of root hub 1
    (``1-1.1`` .. ``1-1.7``, ``1-2.1`` ...), then bus 2, and so on.
    """
    if index < 0:
        raise ValueError(f"device index must be >= 0, not {index}")
    per_bus = ROOT_PORTS * HUB_PORTS
    bus, rest = divmod(index, per_bus)
    hub, port = divmod(rest, HUB_PORTS)
    return PortPath(bus + 1, (hub + 1, port + 1))
