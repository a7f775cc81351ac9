"""Rates and limits of the simulated line, without the line itself.

The CLI's defaults and argument checks need these numbers; importing
:mod:`.sim` for them would load every device model into a USB boot.
"""

from __future__ import annotations

from ..errors import InvalidValue

__all__ = ("MAX_SIM_DEVICES", "USB2_DEVICE_RATE", "USB2_PORT_RATE", "check_sim_count")

#: What a USB 2.0 high-speed device sustains in practice (usb-testing.md: 30-42 MB/s).
USB2_DEVICE_RATE = 40e6
#: 13 x 512-byte packets per 125 us microframe: the theoretical ceiling of one
#: USB 2.0 root port, shared by everything behind it.
USB2_PORT_RATE = 53.248e6
#: Most devices one simulated line holds: far past any station's hub tree,
#: small enough that a typo (``--sim 100000``) is refused, not run.
MAX_SIM_DEVICES = 4096


def check_sim_count(count: int) -> int:
    """``count`` if a simulated line can have that many devices.

    :raises ~parallel_flash.errors.InvalidValue: outside 1..:data:`MAX_SIM_DEVICES`.
    """
    if not 1 <= count <= MAX_SIM_DEVICES:
        raise InvalidValue(
            f"a simulated line has 1 to {MAX_SIM_DEVICES} devices, not {count}"
        )
    return count
