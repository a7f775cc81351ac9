"""Where the emulated line's devices and hubs sit (port paths: :mod:`..transport.ports`).

Every hub on the way to a device is emulated as well, because libusb finds a
device's parent (and so the rest of its path) by looking the parent's sysfs
name up among the enumerated devices. Stdlib only (runs in the umockdev host too).
"""

from __future__ import annotations

from ..transport.ports import PortPath

__all__ = ("HUB_PORTS", "ROOT_PORTS", "PortPath", "default_port")

#: Ports per emulated external hub (a common 7-port hub).
HUB_PORTS = 7
#: Ports of each emulated root hub.
ROOT_PORTS = 15


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
