"""What a loader host asks its caller to do: the vocabulary of the engine's loader seam.

Every loader generation's sans-IO host (SimpleIO's
:class:`~.host.WimBootHost`, the Lumia and UFP machines in :mod:`.nokia`)
answers :meth:`~.loader.LoaderHost.next_action` with one of these values,
and the engine performs it on its link. They are plain data: a host never
does I/O, and the engine never looks inside a message.

Two ways of moving image bytes exist because the loaders differ on the wire:

* :class:`StreamImage` -- SimpleIO streams the image with no reply until the
  end, several transfers queued, each followed by a ZLP where protocol.md
  asks for one;
* :class:`SendImageMessage` -- the NOK loaders wrap each piece of the image
  in a message head and wait for one reply per message (one request, one
  reply; no ZLP; loaders.md A.1 "Transport").

Each wait belongs to a :class:`HostStage`, which the engine mirrors in the
device's record and, where the host gives one, bounds as a whole.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass

from .messages import ControlRequest, needs_zero_packet

__all__ = (
    "Action",
    "AwaitReturn",
    "Finished",
    "HostStage",
    "ReadBulk",
    "SendBulk",
    "SendControl",
    "SendFinal",
    "SendImageMessage",
    "StreamImage",
    "TransferPlan",
)


class HostStage(enum.Enum):
    """The waits of a boot, each bounded as a whole (issue 7: every wait bounded)."""

    IDENTIFY = "identification"
    RESET = "Reset recovery"
    STREAM = "streaming"
    STATUS = "the status"


@dataclass(frozen=True, slots=True, kw_only=True)
class SendControl:
    """Send a control transfer with no data stage."""

    request: ControlRequest
    timeout: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SendBulk:
    """Send one bulk OUT transfer (a command, the WIM header, a NOK request)."""

    data: bytes
    timeout: float
    zero_packet: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadBulk:
    """Read one bulk IN transfer into a buffer of ``size`` bytes."""

    size: int
    timeout: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferPlan:
    """How SDI + WIM are cut into transfers (protocol.md step 6).

    Offsets are into the contiguous SDI + WIM buffer. The SDI and the WIM are
    cut separately: the SDI's last transfer may be short and the WIM starts a
    fresh transfer.
    """

    sdi_length: int
    wim_length: int
    transfer_size: int
    max_packet_size: int

    @property
    def total_length(self) -> int:
        return self.sdi_length + self.wim_length

    def __iter__(self) -> Iterator[tuple[int, int, bool]]:
        """Yield ``(offset, length, zero_packet)`` for every transfer, in order."""
        size, mps = self.transfer_size, self.max_packet_size
        for start, length in ((0, self.sdi_length), (self.sdi_length, self.wim_length)):
            end = start + length
            for offset in range(start, end, size):
                chunk = min(size, end - offset)
                yield offset, chunk, needs_zero_packet(chunk, mps)

    def __len__(self) -> int:
        size = self.transfer_size
        return -(-self.sdi_length // size) + -(-self.wim_length // size)


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamImage:
    """Stream SDI + WIM as planned; the caller reports ``completed()`` at the end.

    Replies are read while it streams (a refusal at the header ends the stream).
    """

    plan: TransferPlan
    #: Per-transfer "no progress" window; the caller scales it to transfers in flight.
    timeout: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SendImageMessage:
    """Send one message made of ``head``, image bytes [offset, offset+length) and ``padding`` zeros.

    All in one bulk OUT transfer with no ZLP, nothing else in flight; the
    host's next action reads its reply. The caller assembles the message (the
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
    and the caller reports ``completed()`` anyway, as WPinternals does
    ("Assuming automatic reset already in progress").
    """

    data: bytes
    timeout: float


@dataclass(frozen=True, slots=True, kw_only=True)
class AwaitReturn:
    """Wait for the device to leave and a device with one of ``ids`` to arrive on the same port.

    The caller reports the IDs of what arrived with ``returned(vid, pid)``,
    or fails the boot when nothing arrived within ``timeout``.
    """

    ids: frozenset[tuple[int, int]]
    timeout: float
    #: What is awaited, for messages ("Label mode").
    what: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Finished:
    """The device accepted the image and boots it by itself; send nothing more."""

    status: int


Action = (
    SendControl
    | SendBulk
    | ReadBulk
    | StreamImage
    | SendImageMessage
    | SendFinal
    | AwaitReturn
    | Finished
)
