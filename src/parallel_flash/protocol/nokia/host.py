"""What the two NOK host machines share: actions, timeouts, the NOKV step, reply checks.

The machines are sans-IO like :class:`~parallel_flash.protocol.host.WimBootHost`:
:meth:`NokHost.next_action` says what to do, the caller reports back with
:meth:`~NokHost.completed` (a send went out), :meth:`~NokHost.received` (a
reply arrived), :meth:`~NokHost.returned` (the expected next device
arrived) or :meth:`~NokHost.abort`.

Rules both loaders keep (loaders.md A.1 "Transport"):

* one request, one reply: the machine never offers a second message before
  the reply to the first was handed to :meth:`~NokHost.received`;
* no zero-length packets (``zero_packet`` is always False);
* replies are read into :data:`~.messages.REPLY_BUFFER_SIZE` bytes;
* every wait has a timeout (:class:`NokTimeouts`; the reference hosts have
  none, so these are ours, and documented there).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass

from ...errors import (
    DeviceRefused,
    InputError,
    LoaderStatusError,
    LocalProtocolError,
    ProtocolError,
)
from ..actions import AwaitReturn, HostStage, ReadBulk, SendBulk, SendFinal, SendImageMessage
from ..messages import LogPacket
from .messages import REPLY_BUFFER_SIZE, Command, NokInfo, parse_status_reply, status_meaning

__all__ = (
    "AwaitReturn",
    "NokHost",
    "NokTimeouts",
    "SendFinal",
    "SendImageMessage",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class NokTimeouts:
    """Seconds per wait. The reference hosts wait forever; these follow loaders.md A.1.

    A device reply covers at most one WriteBufferSize of work (a SHA-256 and
    a RAM copy), so 30 s is generous on purpose; a message on the wire gets
    10 s plus its size at a pessimistic 5 MB/s.
    """

    #: NOKV, NOKD, NOKXFR and NOKXCBA replies.
    info: float = 5.0
    #: Any reply to an image message.
    reply: float = 30.0
    transfer_base: float = 10.0
    #: Bytes per second assumed when sizing an OUT transfer's timeout.
    transfer_rate: float = 5e6
    #: For the expected next device after the boot (ffutool's own 30 s, loaders.md A.0).
    reenumerate: float = 30.0

    def __post_init__(self) -> None:
        for name in ("info", "reply", "transfer_base", "transfer_rate", "reenumerate"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                what = name.replace("_", " ")
                raise InputError(f"NOK {what} must be a positive number, not {value}")

    def send(self, nbytes: int) -> float:
        """An OUT transfer of ``nbytes``: the base plus its time at the assumed rate."""
        return self.transfer_base + nbytes / self.transfer_rate


class NokHost:
    """Base of the two machines: the phase, NOKV, reply bookkeeping, failure.

    It has the face of the engine's :class:`~..loader.LoaderHost`: the
    engine drives these machines through the same pipeline as SimpleIO's.
    """

    #: Each machine's own enum; its values name what the phase waits for.
    phase: enum.Enum
    #: The phase that stands for "failed"; set by each machine.
    _error_phase: enum.Enum
    #: Each machine's phases -> the stage of the boot they belong to.
    _stages: Mapping[enum.Enum, HostStage]
    #: The loader's name in the live table until the device names its platform.
    label: str

    #: Replies are read into this many bytes (loaders.md A.1: at least 0xF000).
    reply_size = REPLY_BUFFER_SIZE
    #: NOK loaders send no Log packets and no early status (one request, one reply).
    early_status = False
    log_count = 0

    def __init__(self, *, timeouts: NokTimeouts | None = None) -> None:
        self.timeouts = timeouts or NokTimeouts()
        self.info: NokInfo | None = None
        #: Image bytes whose messages went out, and messages whose reply was OK.
        self.image_bytes_sent = 0
        self.messages_acknowledged = 0
        #: The status of the last reply that ended the boot (0 once booted).
        self.status: int | None = None
        #: Bytes of the message under way that are image bytes.
        self._pending_image = 0
        #: File offset of the message under way: every image byte before it was acknowledged.
        self._offset = 0
        self._failed_in: enum.Enum | None = None

    # -- the seam's face (protocol.loader.LoaderHost) --------------------------------

    @property
    def stage(self) -> HostStage | None:
        return self._stages.get(self.phase)

    @property
    def stage_timeout(self) -> None:
        """None: every wait is one read, bounded by its own action's timeout.

        One request, one reply: these devices send no Log packets a stage
        deadline would have to outlast.
        """
        return None

    @property
    def identity(self) -> None:
        """NOK replies carry no unique ID (the station's comeback checks need one)."""
        return None

    @property
    def has_status(self) -> bool:
        return self.status is not None

    @property
    def image_bytes_acknowledged(self) -> int:
        """Image bytes the device took: those of every message it answered OK."""
        return self._offset

    @property
    def device_name(self) -> str | None:
        """The platform ID NOKV reports, else the loader, app and its version."""
        info = self.info
        if info is None or info.unsupported:
            return None
        major, minor = info.app_version
        return info.platform_id or f"{self.label} {info.app_name} {major}.{minor}"

    def pop_logs(self) -> list[LogPacket]:
        return []

    # -- helpers for machines -------------------------------------------------------

    def _command(self, command: Command) -> SendBulk:
        return self._send(command.value)

    def _send(self, data: bytes) -> SendBulk:
        return SendBulk(data=data, timeout=self.timeouts.info, zero_packet=False)

    def _read(self, timeout: float) -> ReadBulk:
        return ReadBulk(size=REPLY_BUFFER_SIZE, timeout=timeout)

    def _parse_info(self, data: bytes | memoryview) -> NokInfo:
        info = NokInfo.parse(data)
        self.info = info
        if info.unsupported:
            raise DeviceRefused(
                "the device answered NOKU to NOKV: the application in charge does not "
                "speak the NOK protocol"
            )
        return info

    def _check_status(self, data: bytes | memoryview, request: str) -> None:
        """A status reply: 0 goes on, anything else fails with the status and its meaning."""
        status = parse_status_reply(data, request=request)
        if status is None:
            raise DeviceRefused(f"the device answered NOKU to {request}: command not supported")
        if status:
            self.status = status
            raise LoaderStatusError(status, request=request, meaning=status_meaning(status))

    def _fail(self, error: Exception) -> None:
        self.abort()
        raise error

    # -- what the caller reports --------------------------------------------------------

    @property
    def waiting_phase(self) -> enum.Enum:
        """The current phase, or the one the machine failed in."""
        return self._failed_in or self.phase

    @property
    def waiting_for(self) -> str:
        return str(self.waiting_phase.value)

    @property
    def failed(self) -> bool:
        return self.phase is self._error_phase

    def abort(self) -> None:
        """The caller gave up (timeout, disconnect, cancellation): park the machine."""
        if self.phase is not self._error_phase:
            self._failed_in = self.phase
        self.phase = self._error_phase

    def _guard(self, expected: tuple[enum.Enum, ...], event: str) -> None:
        if self.phase not in expected:
            self._fail(LocalProtocolError(f"{event} not allowed while {self.phase.name}"))

    def received(self, data: bytes | memoryview) -> None:
        """One bulk IN read completed with ``data``."""
        try:
            self._on_reply(data)
        except (ProtocolError, LoaderStatusError, DeviceRefused) as exc:
            self._fail(exc)

    def _on_reply(self, data: bytes | memoryview) -> None:
        raise NotImplementedError

    def returned(self, vid: int, pid: int) -> None:
        """The device that arrived on the same port after the boot has these IDs."""
        self._fail(LocalProtocolError(f"no device return is awaited while {self.phase.name}"))
