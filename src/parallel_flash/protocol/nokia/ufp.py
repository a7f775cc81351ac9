"""The host side of UFP "FFU to RAM" as a sans-IO state machine.

The sequence is UFPTool's ``RambootDevice`` (loaders.md A.1): NOKV, then the
FFU's header and payload in NOKXFS messages with options 0x40 (FlashToRAM),
one reply per message, and nothing after the last reply::

    NOKV -> header v1 (one message of H bytes)     -> payload v1 (C-byte pieces)
         or header v2 (W-byte parts, ceil(H/W))    -> payload v2 (W-byte pieces)

v2 is used when the protocol mask has SyncV2 (4), else v1 when it has
SyncV1 (1). Refused after NOKV, before any image byte: NOKU, a mask with
neither, WriteBufferSize 0, an FFU larger than LargestMemoryRegion.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from ...errors import DeviceRefused, LocalProtocolError, RemoteProtocolError
from ..actions import Action, Finished, HostStage, SendImageMessage
from .host import NokHost, NokTimeouts
from .lumia import MAX_PIECE
from .messages import Command, NokInfo, ProtocolMask, parse_status_reply
from .xfs import FLASH_TO_RAM, HEAD_SIZES, FfuMessage, XfsKind

__all__ = ("UfpPhase", "UfpRamBootHost")

_U32_LIMIT = 1 << 32


class UfpPhase(enum.Enum):
    SEND_INFO = "sending NOKV"
    READ_INFO = "the NOKV reply"
    SEND_HEADER = "the device to take an FFU header message (NOKXFS)"
    READ_HEADER = "the reply to an FFU header message (NOKXFS)"
    SEND_PAYLOAD = "the device to take an FFU payload message (NOKXFS)"
    READ_PAYLOAD = "the reply to an FFU payload message (NOKXFS)"
    DONE = "nothing (RAM booting)"
    ERROR = "nothing (failed)"


_STAGES: Mapping[enum.Enum, HostStage] = {
    UfpPhase.SEND_INFO: HostStage.IDENTIFY,
    UfpPhase.READ_INFO: HostStage.IDENTIFY,
    UfpPhase.SEND_HEADER: HostStage.STREAM,
    UfpPhase.READ_HEADER: HostStage.STREAM,
    UfpPhase.SEND_PAYLOAD: HostStage.STREAM,
    UfpPhase.READ_PAYLOAD: HostStage.STREAM,
}


class UfpRamBootHost(NokHost):
    """One UFP device's RAM boot of an FFU.

    :param ffu_length: L, the FFU file's length.
    :param header_length: H, where the payload starts (img2ffu's HeaderSize:
        every store header, padded to its block size).
    :param chunk_size: C, the FFU's chunk size in bytes (v1 payload pieces).
    """

    _error_phase = UfpPhase.ERROR
    _stages = _STAGES
    label = "UFP"

    def __init__(
        self,
        *,
        ffu_length: int,
        header_length: int,
        chunk_size: int,
        timeouts: NokTimeouts | None = None,
        options: int = FLASH_TO_RAM,
    ) -> None:
        super().__init__(timeouts=timeouts)
        if not 0 < header_length < ffu_length:
            raise LocalProtocolError(
                f"FFU header length {header_length} must be inside the {ffu_length}-byte file"
            )
        if header_length >= _U32_LIMIT or not 0 < chunk_size < _U32_LIMIT:
            raise LocalProtocolError("FFU header and chunk sizes must fit NOKXFS's u32 fields")
        self.ffu_length = ffu_length
        self.header_length = header_length
        self.chunk_size = chunk_size
        self.options = options
        self.phase: UfpPhase = UfpPhase.SEND_INFO
        self.version = 0
        self.piece_size = 0
        self.message_count = 0
        self._sent = 0  # messages sent, for the progress byte

    @property
    def payload_length(self) -> int:
        return self.ffu_length - self.header_length

    # -- what to do next ------------------------------------------------------------

    def next_action(self) -> Action:
        phase, t = self.phase, self.timeouts
        if phase is UfpPhase.SEND_INFO:
            return self._command(Command.INFO)
        if phase is UfpPhase.READ_INFO:
            return self._read(t.info)
        if phase in (UfpPhase.SEND_HEADER, UfpPhase.SEND_PAYLOAD):
            message, image_bytes = self._message()
            return SendImageMessage(
                head=message.encode_head(),
                offset=self._offset,
                length=image_bytes,
                padding=message.length - image_bytes,
                timeout=t.send(message.message_length),
            )
        if phase in (UfpPhase.READ_HEADER, UfpPhase.READ_PAYLOAD):
            return self._read(t.reply)
        if phase is UfpPhase.DONE:
            return Finished(status=0)
        raise LocalProtocolError("the boot already failed; no further action is possible")

    def _message(self) -> tuple[FfuMessage, int]:
        """The NOKXFS head for the current offset, and how many image bytes follow it."""
        progress = (self._sent + 1) * 100 // self.message_count & 0xFF
        offset, h = self._offset, self.header_length
        if self.phase is UfpPhase.SEND_HEADER:
            if self.version == 1:
                message = FfuMessage(
                    kind=XfsKind.HEADER_V1, length=h, progress=progress, options=self.options
                )
                return message, h
            part = min(self.piece_size, h - offset)
            message = FfuMessage(
                kind=XfsKind.HEADER_V2,
                length=part,
                progress=progress,
                options=self.options,
                total=h,
                offset=offset,
            )
            return message, part
        left = self.ffu_length - offset
        if self.version == 1:
            # v1 always sends a full chunk; UFP leaves stale bytes in the tail, we send zeros.
            kind, length, image = XfsKind.PAYLOAD_V1, self.chunk_size, min(self.chunk_size, left)
        else:
            length = image = min(self.piece_size, left)
            kind = XfsKind.PAYLOAD_V2
        return FfuMessage(kind=kind, length=length, progress=progress), image

    @property
    def waiting_for(self) -> str:
        phase = self.waiting_phase
        if phase in (UfpPhase.SEND_INFO, UfpPhase.READ_INFO, UfpPhase.DONE, UfpPhase.ERROR):
            return str(phase.value)
        return f"{phase.value} at file offset {self._offset}"

    # -- what happened ----------------------------------------------------------------

    def completed(self) -> None:
        """The message of the current action went out."""
        phase = self.phase
        if phase is UfpPhase.SEND_INFO:
            self.phase = UfpPhase.READ_INFO
        elif phase in (UfpPhase.SEND_HEADER, UfpPhase.SEND_PAYLOAD):
            _, image = self._message()
            self._pending_image = image
            self.image_bytes_sent += image
            self._sent += 1
            self.phase = UfpPhase.READ_HEADER if phase is UfpPhase.SEND_HEADER else (
                UfpPhase.READ_PAYLOAD
            )
        else:
            self._fail(LocalProtocolError(f"nothing was being sent while {phase.name}"))

    def _on_reply(self, data: bytes | memoryview) -> None:
        phase = self.phase
        if phase is UfpPhase.READ_INFO:
            self._on_info(self._parse_info(data))
            return
        if phase not in (UfpPhase.READ_HEADER, UfpPhase.READ_PAYLOAD):
            raise LocalProtocolError(f"no reply is expected while {phase.name}")
        header = phase is UfpPhase.READ_HEADER
        what = "header" if header else "payload"
        request = f"NOKXFS (FFU {what} v{self.version} at file offset {self._offset})"
        if header and self.version == 2 and len(data) == 4:
            # UFP's own reading of a 4-byte answer to a header v2 message (loaders.md
            # A.1 "Replies"): the device did not take it, and no payload byte follows.
            mask = self.info.protocol_mask if self.info else None
            raise DeviceRefused(
                f"the device answered {bytes(data)!r} to the FFU header v2 message at file "
                f"offset {self._offset} and took none of its bytes: flash protocol v2 not "
                f"supported, although its NOKV protocol mask {int(mask or 0):#06x} claims "
                "SyncV2 (no payload byte was sent)"
            )
        if len(data) == 4 and parse_status_reply(data, request=request) is None:
            raise DeviceRefused(f"the device answered NOKU to {request}: command not supported")
        self._check_status(data, request)
        self.messages_acknowledged += 1
        self._offset += self._pending_image
        if header and self._offset >= self.header_length:
            self.phase = UfpPhase.SEND_PAYLOAD
        elif header:
            self.phase = UfpPhase.SEND_HEADER
        elif self._offset >= self.ffu_length:
            self.phase = UfpPhase.DONE
        else:
            self.phase = UfpPhase.SEND_PAYLOAD

    def _on_info(self, info: NokInfo) -> None:
        mask = info.protocol_mask or ProtocolMask(0)
        if mask & ProtocolMask.SYNC_V2:
            self.version = 2
        elif mask & ProtocolMask.SYNC_V1:
            self.version = 1
        else:
            raise DeviceRefused(
                f"the device's protocol mask {int(mask):#06x} has neither SyncV1 (1) nor "
                "SyncV2 (4)"
                + (" (NOKV subblock 0x10 is absent)" if info.protocol_mask is None else "")
            )
        size = info.write_buffer_size or 0
        if size == 0:
            raise DeviceRefused(
                "the device reports WriteBufferSize 0"
                + (" (NOKV subblock 0x02 is absent)" if info.write_buffer_size is None else "")
            )
        if size > MAX_PIECE:
            raise RemoteProtocolError(
                f"NOKV WriteBufferSize {size} is implausible (more than {MAX_PIECE})"
            )
        region = info.largest_memory_region
        if region is not None and self.ffu_length > region:
            raise DeviceRefused(
                f"the FFU is {self.ffu_length} bytes, more than the device's "
                f"LargestMemoryRegion of {region} bytes"
            )
        self.piece_size = size
        if self.version == 1:
            headers = 1
            payload = -(-self.payload_length // self.chunk_size)
        else:
            headers = -(-self.header_length // size)
            payload = -(-self.payload_length // size)
        self.message_count = headers + payload
        self.phase = UfpPhase.SEND_HEADER

    @property
    def head_size(self) -> int:
        """Overhead per payload message, for throughput figures."""
        return HEAD_SIZES[XfsKind.PAYLOAD_V2 if self.version == 2 else XfsKind.PAYLOAD_V1]
