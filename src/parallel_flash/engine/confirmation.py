"""What station mode is asked to confirm, and what it keeps per port while it does.

:class:`Confirmation` is the caller's choice (Microsoft's WIM-then-flash
flow: a booted device leaves flashing mode, and may reappear as the booted
image); the windows below are the station's rules for judging a device that
comes back on its port; :class:`PortWatch` is one port's state while its
device is served, confirmed or awaited. :mod:`.station` drives them.
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio

from ..errors import InputError
from ..transport.base import Link
from .discovery import DeviceInfo

__all__ = (
    "COMEBACK_WINDOW",
    "DEFAULT_CONFIRM_SECONDS",
    "REENUMERATE_WINDOW",
    "RETURN_IDENTIFY_ATTEMPTS",
    "RETURN_IDENTIFY_PAUSE",
    "Confirmation",
    "Intake",
    "PortWatch",
)

#: Microsoft's WIM-then-flash flow waits this long for a device to come back.
DEFAULT_CONFIRM_SECONDS = 30.0
#: Without confirmation: a phone back on its port with the same unique ID
#: within this many seconds of its boot is a failed boot, not a new one.
COMEBACK_WINDOW = DEFAULT_CONFIRM_SECONDS
#: A device that just re-enumerated may not answer its first Id exchange (it is
#: still starting, or the host is loaded): ask again before judging the boot.
RETURN_IDENTIFY_ATTEMPTS = 3
RETURN_IDENTIFY_PAUSE = 0.25
#: A device whose link failed mid-way is retried if it re-enumerates this soon.
REENUMERATE_WINDOW = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Confirmation:
    """How a boot is confirmed: the device leaves flashing mode (and reappears as ``expect``)."""

    seconds: float = DEFAULT_CONFIRM_SECONDS
    #: (VID, PID) of the booted image, to be seen on the same port; None = leaving is enough.
    expect: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not self.seconds > 0:
            raise InputError(
                f"the confirmation window must be a positive number of seconds, not {self.seconds}"
            )


class Intake:
    """Whether the station still starts new devices (a report failure stops it)."""

    def __init__(self) -> None:
        self.stopped = anyio.Event()
        self.reason: str | None = None

    def stop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.stopped.set()


class PortWatch:
    """One port with a device being served, confirmed or awaited (the station's per-port state)."""

    __slots__ = (
        "changed", "device", "expected", "left", "left_at", "link", "next", "returned",
        "watching",
    )

    def __init__(self, device: DeviceInfo, link: Link | None = None) -> None:
        self.device = device
        #: Opened before the port's task started (one-shot: every device is opened
        #: first, so the transport sizes transfers for all of them).
        self.link = link
        #: A new flashing-mode device plugged in while this one is served: served next.
        self.next: DeviceInfo | None = None
        #: True while a confirmation or a re-enumeration is awaited on this port.
        self.watching = False
        #: The device being served left (flashing mode ended, or unplugged).
        self.left = False
        self.left_at = 0.0
        #: A flashing-mode device arrived while watching.
        self.returned: DeviceInfo | None = None
        #: The expected booted image appeared on this port while watching.
        self.expected = False
        self.changed = anyio.Event()

    def poke(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()
