"""The device side of the SimpleIO WIM boot, as a reusable model.

Nothing here does I/O. A host of emulated devices (the in-process simulated
link, the umockdev emulator) turns each USB transfer into one call --
:meth:`DeviceModel.control`, :meth:`DeviceModel.bulk_out`,
:meth:`DeviceModel.bulk_in` -- and acts on the answer.

The phone's side is not public; this model does what the host waits for
(protocol.md) and is strict about everything the host sends, so a host bug
shows up as a rejection with a reason rather than as a silently "booted"
device. Faults are injected through :class:`DeviceFaults`.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from typing import Any

from ..errors import FormatError, RemoteProtocolError
from .fault_spec import describe_faults, parse_faults_spec
from .messages import (
    CONTROL_REQUEST,
    IdReply,
    LogPacket,
    Opcode,
    WimBootHeader,
    encode_status,
    needs_zero_packet,
)
from .model_base import DeviceModelBase, OutResult

__all__ = (
    "STATUS_INVALID_IMAGE_FORMAT",
    "STATUS_INVALID_PARAMETER",
    "STATUS_NO_MEMORY",
    "DeviceFaults",
    "DeviceModel",
    "OutResult",
)


def _ntstatus(code: int) -> int:
    return code - (1 << 32)


# NTSTATUS values a Windows boot loader would plausibly return; the real
# device's codes are not public (protocol.md, "Status").
STATUS_NO_MEMORY = _ntstatus(0xC0000017)
STATUS_INVALID_PARAMETER = _ntstatus(0xC000000D)
STATUS_INVALID_IMAGE_FORMAT = _ntstatus(0xC000007B)

#: How much of the SDI the model keeps to check its header and table of
#: contents (the table sits at 0x400, 8 entries of 64 bytes).
_SDI_PREFIX = 0x600
_WIM_PREFIX = 208


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceFaults:
    """Misbehaviour to inject, one field per kind of fault."""

    #: Report this (negative) status after a complete, valid image.
    status: int | None = None
    #: Stop reading OUT data once this many image bytes have arrived.
    stop_reading_after: int | None = None
    #: Disconnect once this many image bytes have arrived.
    disconnect_after: int | None = None
    #: curPosition reported by the Id reply until a Reset clears it.
    stale_position: int = 0
    #: Reset does not clear curPosition.
    refuse_reset: bool = False
    #: Log packets queued in front of every reply.
    log_packets: int = 0
    #: Never answer the status read.
    silent_status: bool = False
    #: After Reset, send Log packets without end instead of the 06 reply.
    logs_after_reset: bool = False
    #: Instead of the status, send Log packets without end.
    logs_for_status: bool = False
    #: RAM for the image, bytes (None = the model's own limit); a larger
    #: image is refused at the header with a negative status.
    ram: int | None = None

    _KEYS = {
        "status": "status",
        "stop-reading": "stop_reading_after",
        "disconnect": "disconnect_after",
        "stale": "stale_position",
        "refuse-reset": "refuse_reset",
        "logs": "log_packets",
        "silent-status": "silent_status",
        "logs-after-reset": "logs_after_reset",
        "logs-for-status": "logs_for_status",
        "ram": "ram",
    }

    @classmethod
    def parse(cls, text: str) -> DeviceFaults:
        """Parse the CLI form, e.g. ``status=-5,logs=2`` or ``stop-reading=1048576``.

        Integers accept any base Python does (``0x...``). Raises ValueError
        naming the bad item.
        """
        return parse_faults_spec(cls, text, cls._KEYS)

    def describe(self) -> str:
        """The CLI form of these faults (inverse of :meth:`parse`)."""
        return describe_faults(self, self._KEYS)


class _Phase(enum.Enum):
    IDLE = "idle"
    AWAIT_HEADER = "awaiting WIM header"
    RECEIVING = "receiving"
    STATUS_PENDING = "status pending"
    BOOTED = "booted"
    GONE = "gone"


@dataclass(slots=True)
class _Segment:
    """One of the two separately cut streams (SDI, then WIM)."""

    name: str
    length: int
    received: int = 0


class DeviceModel(DeviceModelBase):
    """A Windows Phone class device in flashing mode, as far as WIM boot goes."""

    def __init__(
        self,
        *,
        friendly_name: str = "Contoso.Emulated.A1",
        unique_id: uuid.UUID | None = None,
        ram_limit: int = 1 << 32,
        faults: DeviceFaults | None = None,
        count_only: bool = False,
        record_transcript: bool = True,
        max_packet_size: int = 512,
    ) -> None:
        super().__init__(
            friendly_name=friendly_name,
            unique_id=unique_id,
            count_only=count_only,
            record_transcript=record_transcript,
            max_packet_size=max_packet_size,
        )
        self.ram_limit = ram_limit
        self.faults = faults or DeviceFaults()
        self.resets = 0
        #: Log packets sent so far by a chattering device (the endless-log faults).
        self.chatter_sent = 0
        self._chattering = False
        if self.faults.ram is not None:
            self.ram_limit = self.faults.ram

        self._phase = _Phase.IDLE
        self._cur_position = self.faults.stale_position
        self._header: WimBootHeader | None = None
        self._segments: list[_Segment] = []
        self._zlp_due = False
        self._refusing_data = False
        self._sdi_prefix = bytearray()
        self._wim_prefix = bytearray()

    # -- outputs ---------------------------------------------------------------

    @property
    def phase(self) -> str:
        return self._phase.value

    def summary(self) -> dict[str, Any]:
        """A JSON-able account of what the device saw."""
        return {
            **super().summary(),
            "phase": self._phase.value,
            "resets": self.resets,
            "faults": self.faults.describe(),
        }

    # -- inputs ----------------------------------------------------------------

    def control(
        self, request_type: int, request: int, value: int, index: int, data: bytes = b""
    ) -> bool:
        """A control transfer; True = ACK, False = STALL."""
        self._note("control", request_type, request, value, index)
        if self._phase is _Phase.GONE:
            return False
        known = (request_type, request, value, index) == (
            CONTROL_REQUEST.request_type,
            CONTROL_REQUEST.request,
            CONTROL_REQUEST.value,
            CONTROL_REQUEST.index,
        )
        if known and self._phase in (_Phase.AWAIT_HEADER, _Phase.RECEIVING):
            # protocol.md: nothing but the header and data between 10 and the status.
            self._reject("control request arrived in the middle of a WIM transfer")
        return known

    def bulk_out(self, data: bytes | memoryview) -> OutResult:
        """One bulk OUT transfer; zero-length data is a ZLP."""
        length = len(data)
        if self._phase is _Phase.GONE:
            return OutResult.GONE
        if self._phase is _Phase.RECEIVING:
            return self._receive_data(data)
        if self._refusing_data and length > 1:
            return OutResult.NAK
        self._note("out", length)
        if length == 0:
            return OutResult.ACCEPTED
        if self._phase is _Phase.AWAIT_HEADER:
            self._receive_header(bytes(data))
        elif self._phase in (_Phase.IDLE, _Phase.STATUS_PENDING):
            self._command(bytes(data))
        return OutResult.ACCEPTED

    def bulk_in(self, max_length: int) -> bytes | None:
        """The next queued reply, or None when the device has nothing to say."""
        if self._phase is _Phase.GONE:
            return None
        if self._chattering and not self._replies:
            self.chatter_sent += 1
            return LogPacket(
                event_id=self.chatter_sent & 0x7FFF,
                level=4,
                text=f"{self.friendly_name}: chatter {self.chatter_sent}",
            ).encode()
        if not self._replies:
            return None
        reply = self._replies.pop(0)
        if len(reply) > max_length:
            # A short host buffer: the USB host controller reports overflow;
            # the model drops the reply, the host has to cope.
            self._reject(f"host read {max_length} bytes, reply was {len(reply)}")
            return reply[:max_length]
        self._note("in", len(reply))
        if self._phase is _Phase.STATUS_PENDING and not self._replies:
            self._status_read()
        return reply

    def disconnect(self) -> None:
        """The host of the model unplugged it."""
        super().disconnect()
        self._phase = _Phase.GONE

    # -- command phase ---------------------------------------------------------

    def _command(self, data: bytes) -> None:
        opcode = data[0]
        if len(data) != 1:
            self._reject(f"command transfer of {len(data)} bytes; commands are one byte")
            return
        if opcode == Opcode.ID:
            self._queue(
                IdReply(
                    cur_position=self._cur_position,
                    capabilities=bytes(16),
                    unique_id=self.unique_id,
                    friendly_name=self.friendly_name,
                ).encode()
            )
        elif opcode == Opcode.RESET:
            self.resets += 1
            if not self.faults.refuse_reset:
                self._cur_position = 0
            if self.faults.logs_after_reset:
                self._chattering = True
                return
            self._queue(bytes((Opcode.ERR,)) + b"\x00\x00\x00\x00")
        elif opcode == Opcode.WIM:
            if self._cur_position != 0:
                self._reject(f"WIM opcode while {self._cur_position} bytes of a transfer are held")
            self._phase = _Phase.AWAIT_HEADER
        else:
            # Everything else is another tool's business; a real device would
            # answer with an error, which is what we do.
            self._queue(bytes((Opcode.ERR,)) + b"\x00\x00\x00\x00")

    def _receive_header(self, data: bytes) -> None:
        try:
            header = WimBootHeader.parse(data)
        except RemoteProtocolError as exc:
            # From the device's point of view, the host sent garbage.
            self._reject(f"bad WIM header: {exc}")
            self._finish_transfer()
            return
        self._header = header
        self.expected_bytes = header.total_length
        self._segments = [
            _Segment("SDI", header.sdi_length),
            _Segment("WIM", header.wim_length),
        ]
        self._segments = [segment for segment in self._segments if segment.length]
        if header.total_length > self.ram_limit:
            # Cannot allocate the RAM buffer: say so at once and stop reading.
            self._reject(
                f"image of {header.total_length} bytes does not fit in "
                f"{self.ram_limit} bytes of RAM",
                status=STATUS_NO_MEMORY,
            )
            self._refusing_data = True
            self._finish_transfer()
            return
        self._phase = _Phase.RECEIVING
        if not self._segments:
            self._finish_transfer()

    # -- data phase ------------------------------------------------------------

    def _receive_data(self, data: bytes | memoryview) -> OutResult:
        length = len(data)
        faults = self.faults
        fault = self._out_fault(
            faults.disconnect_after, faults.stop_reading_after, self.received_bytes
        )
        if fault is not None:
            return fault
        self._note("out", length)
        if self._zlp_due:
            self._zlp_due = False
            if length == 0:
                if self.received_bytes >= self.expected_bytes:
                    self._finish_transfer()
                return OutResult.ACCEPTED
            self._reject(
                f"no zero-length packet after a transfer that was a multiple of "
                f"{self.max_packet_size} bytes (at image byte {self.received_bytes})"
            )
        elif length == 0:
            self._reject(f"unexpected zero-length packet at image byte {self.received_bytes}")
            return OutResult.ACCEPTED
        self._take(data)
        if needs_zero_packet(length, self.max_packet_size):
            self._zlp_due = True
        if self.received_bytes >= self.expected_bytes and not self._zlp_due:
            self._finish_transfer()
        return OutResult.ACCEPTED

    def _take(self, data: bytes | memoryview) -> None:
        assert self._header is not None  # RECEIVING implies a header (internal invariant)
        length = len(data)
        segment = next((s for s in self._segments if s.received < s.length), None)
        if segment is None:
            self._reject(f"{length} bytes beyond the announced {self.expected_bytes}")
            return
        expected = min(self._header.transfer_size, segment.length - segment.received)
        if length != expected and self.rejection is None:
            self._reject(
                f"{segment.name} transfer of {length} bytes at offset {segment.received}, "
                f"expected {expected}"
            )
        if not self.count_only:
            self._keep_prefix(segment, data)
        self._count(data)
        segment.received += length

    def _keep_prefix(self, segment: _Segment, data: bytes | memoryview) -> None:
        if segment.name == "SDI" and len(self._sdi_prefix) < _SDI_PREFIX:
            self._sdi_prefix += data[: _SDI_PREFIX - len(self._sdi_prefix)]
        elif segment.name == "WIM" and len(self._wim_prefix) < _WIM_PREFIX:
            self._wim_prefix += data[: _WIM_PREFIX - len(self._wim_prefix)]

    def _finish_transfer(self) -> None:
        if self._phase is _Phase.RECEIVING and not self.count_only:
            self._check_image()
        self._phase = _Phase.STATUS_PENDING
        self._cur_position = 0
        if self.faults.silent_status:
            return
        if self.faults.logs_for_status:
            self._chattering = True
            return
        if self.rejection is not None:
            status = self._rejection_status
        elif self.faults.status is not None:
            status = self.faults.status
        else:
            status = 0
        self.status_sent = status
        self._queue(encode_status(status))

    def _check_image(self) -> None:
        """What a loader checks before booting: the SDI's WIM entry and the WIM header."""
        if self.rejection is not None or self._header is None:
            return
        # Imported here: the formats layer is only needed once an image is complete.
        from ..formats.sdi import check_sdi_for_wim_boot, parse_sdi
        from ..formats.wim import parse_wim_header

        header = self._header
        try:
            if header.sdi_length:
                sdi = parse_sdi(
                    bytes(self._sdi_prefix), path="<received SDI>", file_size=header.sdi_length
                )
                check_sdi_for_wim_boot(sdi)
                parse_wim_header(
                    bytes(self._wim_prefix), path="<received WIM>", file_size=header.wim_length
                )
            elif not self._wim_prefix.startswith(b"$SDI0001"):
                raise FormatError("<received .secwim>", "magic", "does not start with $SDI0001")
        except FormatError as exc:
            self._reject(str(exc), status=STATUS_INVALID_IMAGE_FORMAT)

    def _status_read(self) -> None:
        self._refusing_data = False
        if self.status_sent is not None and self.status_sent >= 0:
            self.booted = True
            self._phase = _Phase.BOOTED
        else:
            self._phase = _Phase.IDLE

    # -- helpers ---------------------------------------------------------------

    _rejection_status = STATUS_INVALID_PARAMETER

    def _reject(self, reason: str, *, status: int = STATUS_INVALID_PARAMETER) -> None:
        if self.rejection is None:
            self.rejection = reason
            self._rejection_status = status

    def _queue(self, reply: bytes) -> None:
        for number in range(self.faults.log_packets):
            self._replies.append(
                LogPacket(
                    event_id=number,
                    level=4,
                    text=f"{self.friendly_name}: log line {number + 1} before reply",
                ).encode()
            )
        self._replies.append(reply)

    def __repr__(self) -> str:
        return f"<DeviceModel {self.friendly_name!r} {self._phase.value}>"

