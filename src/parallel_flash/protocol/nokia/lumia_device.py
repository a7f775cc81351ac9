"""A Lumia in its UEFI flash app, as far as MMOS over USB goes (loaders.md A.2, "Emulator").

NOKXFL pieces must arrive in order with consistent lengths; once the last
one is in, the .secwim's trailer and the SDI in front are checked (0x1106
when inconsistent). NOKXCBA answers 0 only after a complete, consistent
image (else 0x1004); NOKR then reboots the phone, which comes back in Label
mode (0421:0660) -- the host's proof that MMOS booted.
"""

from __future__ import annotations

import enum
import uuid
from typing import Any

from ...errors import FormatError
from .device import NokDeviceModel
from .faults import NokFaults
from .messages import LABEL_MODE_PID, LUMIA_PID, NOKIA_VID, Command
from .xfl import DEFAULT_MMOS_PIECE, MMOS_SUBBLOCK, XFL_HEAD_SIZE, XFL_SIGNATURE, MmosPiece

__all__ = ("LABEL_MODE_PID", "LUMIA_PID", "LumiaDeviceModel")

#: Bytes of the image's start and end the model keeps to check it once complete:
#: the SDI's magic, and the .secwim trailer (blocks and catalog).
_KEEP = 64 << 10
_SDI_MAGIC = b"$SDI0001"
#: A length field claiming more than this is a broken head, not a message to wait for.
_MAX_MESSAGE = 512 << 20


class _Phase(enum.Enum):
    IDLE = "idle"
    LOADING = "receiving MMOS"
    LOADED = "MMOS loaded"
    SWITCHED = "in MMOS context"
    BOOTED = "booted MMOS"


class _Retained:
    """The kept start and end of the image, sliceable as if it were the whole file."""

    def __init__(self, length: int, head: bytes, tail: bytes) -> None:
        self._length, self._head, self._tail = length, head, tail

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, key: slice) -> bytes:
        start, stop, _ = key.indices(self._length)
        if stop <= len(self._head):
            return self._head[start:stop]
        tail_at = self._length - len(self._tail)
        if start >= tail_at:
            return self._tail[start - tail_at : stop - tail_at]
        raise FormatError("<received .secwim>", "trailer", f"offset {start} is not retained")


class LumiaDeviceModel(NokDeviceModel):
    """A Lumia flash-app device (0421:066E by default)."""

    loader = "lumia"

    def __init__(
        self,
        *,
        name: str = "Lumia.Emulated",
        pid: int = LUMIA_PID,
        vid: int = NOKIA_VID,
        write_buffer_size: int | None = DEFAULT_MMOS_PIECE,
        ram_limit: int = 1 << 31,
        faults: NokFaults | None = None,
        unique_id: uuid.UUID | None = None,
        count_only: bool = False,
        record_transcript: bool = True,
        max_packet_size: int = 512,
        label_pid: int = LABEL_MODE_PID,
    ) -> None:
        faults = faults or NokFaults()
        super().__init__(
            name=name,
            ids=(vid, pid),
            unique_id=unique_id,
            faults=faults,
            count_only=count_only,
            record_transcript=record_transcript,
            max_packet_size=max_packet_size,
            write_buffer_size=write_buffer_size,
            protocol_mask=0x0001,
            mmos_over_usb=1,
            largest_memory_region=None,
            params={"FVER": b"3051.40000.1349.0010", "RRKH": bytes(range(32))},
        )
        self.ram_limit = ram_limit if faults.memory is None else faults.memory
        self.label_ids = (NOKIA_VID, label_pid)
        self._phase = _Phase.IDLE
        self._head = bytearray()
        self._tail = bytearray()

    def _phase_name(self) -> str:
        return self._phase.value

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out["mmos_over_usb"] = self.info.mmos_over_usb
        return out

    # -- messages ---------------------------------------------------------------------

    def _loader_message(self, data: bytes | memoryview) -> bytes | None:
        if MmosPiece.matches(data):
            return self._status(XFL_SIGNATURE, self._piece(data))
        if bytes(data) == Command.SWITCH_TO_MMOS.value:
            return self._status(b"NOKXCB", self._switch())
        return None

    def _message_length(self, data: bytes | memoryview) -> int | None:
        if MmosPiece.matches(data) and len(data) >= 0x10:
            # the subblock length at 0x0C counts from 0x10 to the end of the message
            return min(0x10 + int.from_bytes(data[0x0C:0x10], "big"), _MAX_MESSAGE)
        return None

    def _piece(self, data: bytes | memoryview) -> int:
        """Take one NOKXFL message; the status to answer."""
        if len(data) < XFL_HEAD_SIZE:
            return 0x0010
        piece = MmosPiece.parse(data)
        if self.info.mmos_over_usb is not True:
            self._reject("NOKXFL arrived although NOKV said MMOS over USB is not supported")
            return 0x0008
        if piece.subblock_count != 1:
            return 0x000F
        if piece.subblock_id != MMOS_SUBBLOCK:
            return 0x000E
        body = memoryview(data)[XFL_HEAD_SIZE:]
        if piece.subblock_length != piece.piece_length + 0x10 or len(body) != piece.piece_length:
            self._reject(
                f"NOKXFL at offset {piece.offset} says {piece.piece_length} bytes, carries "
                f"{len(body)} (subblock length {piece.subblock_length})"
            )
            return 0x0010
        if self.rejection is not None:
            return self.VIOLATION_STATUS
        if self._phase is _Phase.IDLE:
            if piece.offset != 0:
                return 0x1005
            if piece.total_length > self.ram_limit:
                return 0x0001
            self.expected_bytes = piece.total_length
            self._phase = _Phase.LOADING
        elif self._phase is not _Phase.LOADING:
            return 0x100B
        if piece.total_length != self.expected_bytes:
            self._reject(
                f"NOKXFL total length changed from {self.expected_bytes} to {piece.total_length}"
            )
            return 0x0010
        if piece.offset != self.received_bytes:
            return 0x1005
        if piece.offset + piece.piece_length > self.expected_bytes:
            return 0x100B
        injected = self._fault_status(piece.offset, piece.piece_length)
        if injected is not None:
            return injected
        self._count(body)
        if not self.count_only:
            self._keep(body)
        if self.received_bytes == self.expected_bytes:
            return self._check_image()
        return 0

    def _keep(self, body: memoryview) -> None:
        if len(self._head) < _KEEP:
            self._head += body[: _KEEP - len(self._head)]
        self._tail += body[-_KEEP:]
        del self._tail[:-_KEEP]

    def _check_image(self) -> int:
        """The last piece is in: is this a consistent .secwim?"""
        if not self.count_only:
            # Imported here: the formats layer is only needed once an image is complete.
            from ...formats.secwim import parse_secwim_tail

            view = _Retained(self.expected_bytes, bytes(self._head), bytes(self._tail))
            try:
                info = parse_secwim_tail(view, path="<received .secwim>")
                if not self._head.startswith(_SDI_MAGIC) or info.sdi_length <= 0:
                    raise FormatError("<received .secwim>", "SDI", "does not start with $SDI0001")
            except FormatError as exc:
                self._reject(str(exc))
                self._phase = _Phase.IDLE
                return 0x1106
        self._phase = _Phase.LOADED
        return 0

    def _switch(self) -> int:
        if self.faults.switch_status is not None:
            return self.faults.switch_status
        if self._phase is not _Phase.LOADED:
            return 0x1004
        self._phase = _Phase.SWITCHED
        return 0

    def _reboot(self) -> None:
        if self._phase is _Phase.SWITCHED:
            self.booted = True
            self._phase = _Phase.BOOTED
            f = self.faults
            if f.return_pid is not None:
                self.returns_as = (self.label_ids[0], f.return_pid)
            else:
                self.returns_as = self.label_ids
        else:
            # A plain reset: the phone comes back in its flash app.
            self.returns_as = self.ids
        self.disconnect()
