"""How every device of a run is booted: transfer tuning, waits, retries, loader hosts.

:class:`BootOptions` is the one place the engine's defaults live (protocol.md
for SimpleIO, loaders.md A.1 for the Lumia and UFP loaders); the CLI reads
its defaults from here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import InputError
from ..image import ImageBuffer
from ..protocol.host import DEFAULT_TIMEOUTS, HostTimeouts
from ..protocol.loader import HOSTS, HostFactory, HostSetup, ImageShape
from ..protocol.messages import STANDARD_TRANSFER_SIZE
from ..protocol.nokia.host import NokTimeouts
from ..protocol.selection import Loader
from ..transport.base import Link

__all__ = ("DEFAULT_IN_FLIGHT", "MAX_IN_FLIGHT", "BootOptions", "image_shape")

#: OUT transfers queued per device. Four 1 MiB transfers keep a USB 2.0 link
#: busy through host turnaround; 8 devices x 4 x 1 MiB = 32 MiB, which is why
#: the libusb transport shrinks this to fit the kernel's usbfs cap (16 MB by
#: default) across all devices.
DEFAULT_IN_FLIGHT = 4
#: More queued transfers per device buy nothing on USB 2.0 and cost usbfs memory.
MAX_IN_FLIGHT = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class BootOptions:
    """How every device of a run is booted (protocol.md defaults)."""

    #: Bytes per data transfer; None = the protocol's choice (1 MiB, or
    #: 16376 for the legacy loader).
    transfer_size: int | None = None
    #: OUT transfers queued per device while streaming.
    in_flight: int = DEFAULT_IN_FLIGHT
    id_timeout: float = DEFAULT_TIMEOUTS.identify
    reset_timeout: float = DEFAULT_TIMEOUTS.reset
    #: "No progress" window per transfer; a stream's window is this times in_flight.
    transfer_timeout: float = DEFAULT_TIMEOUTS.transfer
    status_timeout: float = DEFAULT_TIMEOUTS.status
    #: Further attempts for a device that failed before any image byte was
    #: sent (or, in station mode, re-enumerated after a transport failure).
    #: Never after a negative status.
    retries: int = 0
    #: The host of each loader generation (the loader seam, protocol.loader).
    hosts: Mapping[Loader, HostFactory] = field(default_factory=lambda: HOSTS)
    #: The Lumia and UFP loaders' waits (loaders.md A.1; the reference hosts have none).
    nok_timeouts: NokTimeouts = field(default_factory=NokTimeouts)

    def __post_init__(self) -> None:
        if self.transfer_size is not None and not 0 < self.transfer_size <= 0xFFFF_FFFF:
            raise InputError(
                f"transfer size must be between 1 and 4294967295 bytes, not {self.transfer_size}"
            )
        if not 1 <= self.in_flight <= MAX_IN_FLIGHT:
            raise InputError(
                f"transfers in flight must be between 1 and {MAX_IN_FLIGHT}, not {self.in_flight}"
            )
        if not 0 <= self.retries <= 100:
            raise InputError(f"retries must be between 0 and 100, not {self.retries}")
        for name in ("id_timeout", "reset_timeout", "transfer_timeout", "status_timeout"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                what = name.replace("_", " ")
                raise InputError(f"{what} must be a positive number of seconds, not {value}")
        missing = [loader.value for loader in Loader if loader not in self.hosts]
        if missing:
            names = ", ".join(missing)
            raise InputError(f"no loader host for {names} devices in BootOptions.hosts")

    @property
    def timeouts(self) -> HostTimeouts:
        return HostTimeouts(
            identify=self.id_timeout,
            reset=self.reset_timeout,
            transfer=self.transfer_timeout,
            status=self.status_timeout,
        )

    def host_setup(self, image: ImageShape, link: Link) -> HostSetup:
        """What one attempt's loader host is built from, on ``link``."""
        return HostSetup(
            image=image,
            max_packet_size=link.max_packet_size,
            transfer_size=self.transfer_size,
            # The transport's ceiling (a usbfs cap): the size announced never exceeds it.
            max_transfer_size=link.transfer_size_limit(
                self.transfer_size or STANDARD_TRANSFER_SIZE
            ),
            timeouts=self.timeouts,
            nok_timeouts=self.nok_timeouts,
        )


def image_shape(image: ImageBuffer) -> ImageShape:
    """The lengths a loader host is built from."""
    return ImageShape(
        sdi_length=image.sdi_length,
        wim_length=image.wim_length,
        ffu_header_length=image.ffu_header_length,
        ffu_chunk_size=image.ffu_chunk_size,
    )
