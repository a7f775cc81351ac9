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
from dataclasses import dataclass

from ...errors import (
    DeviceRefused,
    LoaderStatusError,
    LocalProtocolError,
    ProtocolError,
)
from ..host import Finished, ReadBulk, SendBulk
from .messages import REPLY_BUFFER_SIZE, Command, NokInfo, parse_status_reply, status_meaning

__all__ = (
    "AwaitReturn",
    "NokAction",
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

    def send(self, nbytes: int) -> float:
        return self.transfer_base + nbytes / self.transfer_rate


@dataclass(frozen=True, slots=True, kw_only=True)
class SendImageMessage:
    """Send one message made of ``head``, image bytes [offset, offset+length) and ``padding`` zeros.

    All in one bulk OUT transfer with no ZLP. The caller assembles it (the
    image bytes are not copied into the action).
    """

    head: bytes
    offset: int
    length: int
    padding: int
    timeout: float

    @property
    def message_length(self) -> int:
        return len(self.head) + self.length + self.padding


@dataclass(frozen=True, slots=True, kw_only=True)
class SendFinal:
    """Send a last command the device may not live to acknowledge (NOKR).

    A transport error on it is expected (the device is already resetting)
    and the caller reports :meth:`NokHost.completed` anyway, as WPinternals
    does ("Assuming automatic reset already in progress").
    """

    data: bytes
    timeout: float


@dataclass(frozen=True, slots=True, kw_only=True)
class AwaitReturn:
    """Wait for the device to leave and a device with one of ``ids`` to arrive on the same port."""

    ids: frozenset[tuple[int, int]]
    timeout: float
    what: str


NokAction = SendBulk | ReadBulk | SendImageMessage | SendFinal | AwaitReturn | Finished


class NokHost:
    """Base of the two machines: the phase, NOKV, reply bookkeeping, failure."""

    #: Each machine's own enum; its values name what the phase waits for.
    phase: enum.Enum
    #: The phase that stands for "failed"; set by each machine.
    _error_phase: enum.Enum

    def __init__(self, *, timeouts: NokTimeouts | None = None) -> None:
        self.timeouts = timeouts or NokTimeouts()
        self.info: NokInfo | None = None
        #: Image bytes whose messages went out, and messages whose reply was OK.
        self.image_bytes_sent = 0
        self.messages_acknowledged = 0
        #: Bytes of the message under way that are image bytes.
        self._pending_image = 0

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
            raise LoaderStatusError(status, request=request, meaning=status_meaning(status))

    def _fail(self, error: Exception) -> None:
        self.phase = self._error_phase
        raise error

    # -- what the caller reports --------------------------------------------------------

    @property
    def waiting_for(self) -> str:
        return str(self.phase.value)

    @property
    def failed(self) -> bool:
        return self.phase is self._error_phase

    def abort(self) -> None:
        """The caller gave up (timeout, disconnect, cancellation): park the machine."""
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
