"""The seam between the engine and a loader generation's host protocol.

The engine's pipeline drives one sans-IO host per device attempt and never
looks inside a message: it asks for the next action (an
:data:`~.actions.Action`: identify, stream or send image messages, read
replies, await the device's return), performs it on its
:class:`~parallel_flash.transport.base.Link` and reports back
(:meth:`LoaderHost.completed` after a send, :meth:`LoaderHost.received` after
a read, :meth:`LoaderHost.returned` after a return). Each wait belongs to a
:class:`~.actions.HostStage`, which the engine mirrors in the device's record
and bounds as a whole where the host gives a stage deadline.

Three loader generations implement it: SimpleIO's
:class:`~.host.WimBootHost`, Lumia's :class:`~.nokia.lumia.LumiaMmosHost`
and UFP's :class:`~.nokia.ufp.UfpRamBootHost`. :data:`HOSTS` builds the
right one for a device's :class:`~.selection.Loader` from a
:class:`HostSetup`; the pipeline, station and records are the same for all.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from ..errors import LocalProtocolError
from .actions import Action, HostStage
from .host import HostTimeouts, WimBootHost
from .messages import LogPacket
from .nokia.host import NokTimeouts
from .selection import Loader

__all__ = (
    "HOSTS",
    "DeviceIdentity",
    "HostFactory",
    "HostSetup",
    "ImageShape",
    "LoaderHost",
    "lumia_host",
    "simpleio_host",
    "ufp_host",
)


class DeviceIdentity(Protocol):
    """What identification tells the engine about a device (SimpleIO's Id reply)."""

    @property
    def unique_id(self) -> uuid.UUID: ...

    @property
    def friendly_name(self) -> str: ...


class LoaderHost(Protocol):
    """One device's boot as a sans-IO state machine (h11's style)."""

    @property
    def stage(self) -> HostStage | None: ...

    @property
    def stage_timeout(self) -> float | None: ...

    @property
    def waiting_for(self) -> str: ...

    @property
    def identity(self) -> DeviceIdentity | None:
        """A unique identity (SimpleIO's Id reply); None for loaders that have none."""

    @property
    def device_name(self) -> str | None:
        """What the live table calls the device once it said who it is."""

    @property
    def status(self) -> int | None: ...

    @property
    def early_status(self) -> bool: ...

    @property
    def has_status(self) -> bool: ...

    @property
    def log_count(self) -> int: ...

    @property
    def reply_size(self) -> int:
        """Bytes every reply is read into (the loader's minimum reply buffer)."""

    @property
    def image_bytes_acknowledged(self) -> int:
        """Image bytes the device said it took (one-reply-per-message loaders)."""

    def next_action(self) -> Action: ...

    def completed(self) -> None: ...

    def received(self, data: bytes | memoryview) -> None: ...

    def returned(self, vid: int, pid: int) -> None: ...

    def pop_logs(self) -> list[LogPacket]: ...

    def abort(self) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageShape:
    """What a host needs to know of the image: its lengths, not its bytes."""

    #: SDI bytes in front (0 for a .secwim or an FFU).
    sdi_length: int
    #: The WIM, .secwim or FFU that follows.
    wim_length: int
    #: An FFU's header length H (where its payload starts) and chunk size C.
    ffu_header_length: int | None = None
    ffu_chunk_size: int | None = None

    @property
    def total_length(self) -> int:
        return self.sdi_length + self.wim_length


@dataclass(frozen=True, slots=True, kw_only=True)
class HostSetup:
    """Everything a :data:`HostFactory` builds one attempt's host from."""

    image: ImageShape
    max_packet_size: int
    #: Bytes per data transfer (SimpleIO); None = the protocol's choice.
    transfer_size: int | None = None
    #: The transport's largest transfer (a usbfs cap); None = no cap.
    max_transfer_size: int | None = None
    timeouts: HostTimeouts = field(default_factory=HostTimeouts)
    nok_timeouts: NokTimeouts = field(default_factory=NokTimeouts)


#: Builds the host for one attempt.
HostFactory = Callable[[HostSetup], LoaderHost]


def simpleio_host(setup: HostSetup) -> LoaderHost:
    """SimpleIO's WIM boot (protocol.md)."""
    return WimBootHost(
        sdi_length=setup.image.sdi_length,
        wim_length=setup.image.wim_length,
        max_packet_size=setup.max_packet_size,
        transfer_size=setup.transfer_size,
        max_transfer_size=setup.max_transfer_size,
        timeouts=setup.timeouts,
    )


def lumia_host(setup: HostSetup) -> LoaderHost:
    """Lumia's MMOS over USB (loaders.md A.2): the image is a signed .secwim."""
    from .nokia.lumia import LumiaMmosHost  # with the first Lumia: off a SimpleIO line's start-up

    return LumiaMmosHost(image_length=setup.image.total_length, timeouts=setup.nok_timeouts)


def ufp_host(setup: HostSetup) -> LoaderHost:
    """UFP's FFU to RAM (loaders.md A.1): the image is an FFU, with its H and C."""
    from .nokia.ufp import UfpRamBootHost  # with the first UFP device, as Lumia's

    image = setup.image
    if image.ffu_header_length is None or image.ffu_chunk_size is None:
        raise LocalProtocolError("a UFP RAM boot needs an FFU (its header length and chunk size)")
    return UfpRamBootHost(
        ffu_length=image.total_length,
        header_length=image.ffu_header_length,
        chunk_size=image.ffu_chunk_size,
        timeouts=setup.nok_timeouts,
    )


#: The host of each loader generation: what the engine uses unless told otherwise.
HOSTS: Mapping[Loader, HostFactory] = MappingProxyType(
    {Loader.SIMPLEIO: simpleio_host, Loader.LUMIA: lumia_host, Loader.UFP: ufp_host}
)
