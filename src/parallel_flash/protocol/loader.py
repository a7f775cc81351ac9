"""The seam between the engine and a loader generation's host protocol.

The engine's pipeline drives one sans-IO host per device attempt and never
looks inside a message: it asks for the next action (identify -> plan ->
stream -> status, expressed as :data:`~.host.Action` values), performs it on
its :class:`~parallel_flash.transport.base.Link` and reports back
(:meth:`LoaderHost.completed` after a send, :meth:`LoaderHost.received` after
a read). Each wait belongs to a stage with its own deadline, which the engine
enforces with its clock. SimpleIO's :class:`~.host.WimBootHost` is the first
implementation; another loader generation (Lumia or UFP flash apps) adds its
own host with the same face, and a :data:`HostFactory` that builds it, without
touching the pipeline, station or records.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Protocol

from .host import Action, HostStage, HostTimeouts
from .messages import LogPacket

__all__ = ("DeviceIdentity", "HostFactory", "LoaderHost")


class DeviceIdentity(Protocol):
    """What identification tells the engine about a device."""

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
    def identity(self) -> DeviceIdentity | None: ...

    @property
    def status(self) -> int | None: ...

    @property
    def early_status(self) -> bool: ...

    @property
    def has_status(self) -> bool: ...

    @property
    def log_count(self) -> int: ...

    def next_action(self) -> Action: ...

    def completed(self) -> None: ...

    def received(self, data: bytes | memoryview) -> None: ...

    def pop_logs(self) -> list[LogPacket]: ...

    def abort(self) -> None: ...


#: Builds the host for one attempt: (sdi_length, wim_length, max_packet_size,
#: transfer_size or None, timeouts, the transport's largest transfer or None) -> host.
HostFactory = Callable[[int, int, int, int | None, HostTimeouts, int | None], LoaderHost]
