"""What the Lumia and UFP device models share: NOKV, NOKD, NOKXFR, NOKU, the wire rules.

The models have the same face as SimpleIO's
:class:`~parallel_flash.protocol.device.DeviceModel` (``control``,
``bulk_out``, ``bulk_in``, ``disconnect``, ``summary``), so the simulated
link and the umockdev emulator host them unchanged. One bulk OUT transfer is
one message.

No device-side code of either loader is public: the models do what the
public hosts wait for (loaders.md, the emulator recipes in A.1 and A.2) and
are strict about the rules a host must keep, so a host bug shows up as a
rejection with a reason: a zero-length packet, a second message before the
reply to the first was read, a reply read into less than 0xF000 bytes.

A message is told from the next by its own length fields, as a device must
(loaders.md A.2: a message whose length is a multiple of 512 ends without a
short packet, and the host sends no ZLP), not by USB transfer boundaries,
which do not exist on the wire: a host may send one message as several
transfers whose lengths are multiples of wMaxPacketSize.
"""

from __future__ import annotations

import uuid
from typing import Any

from ..model_base import DeviceModelBase, OutResult
from .faults import NokFaults
from .messages import (
    NOKU,
    REPLY_BUFFER_SIZE,
    AppType,
    Command,
    NokInfo,
    encode_param_reply,
    encode_status_reply,
    parse_param_request,
)

__all__ = ("NokDeviceModel",)


def _usb_id(ids: tuple[int, int] | None) -> str | None:
    return None if ids is None else f"{ids[0]:04x}:{ids[1]:04x}"


class NokDeviceModel(DeviceModelBase):
    """A device running a NOK flash app; subclasses add the loader's own messages."""

    #: Which loader this models ("lumia", "ufp").
    loader = "nok"
    #: Status a protocol violation earns the next image message (invalid sub block length).
    VIOLATION_STATUS = 0x0010

    def __init__(
        self,
        *,
        name: str,
        ids: tuple[int, int],
        unique_id: uuid.UUID | None = None,
        faults: NokFaults | None = None,
        count_only: bool = False,
        record_transcript: bool = True,
        max_packet_size: int = 512,
        write_buffer_size: int | None,
        protocol_mask: int | None,
        mmos_over_usb: int | None,
        largest_memory_region: int | None,
        platform_id: str | None = None,
        params: dict[str, bytes] | None = None,
    ) -> None:
        # NOK replies carry no unique ID; the emulator uses the model's as the USB serial.
        super().__init__(
            friendly_name=name,
            unique_id=unique_id,
            count_only=count_only,
            record_transcript=record_transcript,
            max_packet_size=max_packet_size,
        )
        self.ids = ids
        self.platform_id = platform_id
        self._subblocks = (write_buffer_size, protocol_mask, mmos_over_usb, largest_memory_region)
        self.params = params or {}
        self.messages = 0
        #: (vid, pid) the device comes back with after it left; None = as the booted image.
        self.returns_as: tuple[int, int] | None = None
        #: A message arriving in several transfers, and how much of it is in.
        self._partial: bytearray | None = None
        self._partial_length = 0
        self._gone = False
        self.faults = faults or NokFaults()

    @property
    def faults(self) -> NokFaults:
        return self._faults

    @faults.setter
    def faults(self, faults: NokFaults) -> None:
        """New faults (also the emulator's ``set_fault``): NOKV's answer follows them."""
        self._faults = faults
        #: After it left, nothing comes back on its port (fault ``no-return``).
        self.stays_away = faults.no_return
        self.info = self._describe()

    def _describe(self) -> NokInfo:
        """The NOKV reply: the device's subblocks, as its faults change them."""
        f = self._faults
        write_buffer_size, protocol_mask, mmos_over_usb, largest_memory_region = self._subblocks
        return NokInfo.build(
            app_type=AppType.FLASH_APP if f.app_type is None else f.app_type,
            write_buffer_size=(
                None if f.no_write_buffer
                else write_buffer_size if f.write_buffer is None else f.write_buffer
            ),
            protocol_mask=protocol_mask if f.mask is None else f.mask,
            mmos_over_usb=(
                None if f.no_mmos else mmos_over_usb if f.mmos_flag is None else f.mmos_flag
            ),
            largest_memory_region=largest_memory_region if f.memory is None else f.memory,
            platform_id=self.platform_id,
            security_flags=bytes((3, 1, 1, 1, 0, 0, 1, 0)),
        )

    # -- outputs ----------------------------------------------------------------------

    @property
    def phase(self) -> str:
        return "gone" if self._gone else self._phase_name()

    def _phase_name(self) -> str:
        raise NotImplementedError

    def summary(self) -> dict[str, Any]:
        """A JSON-able account of what the device saw."""
        return {
            "loader": self.loader,
            **super().summary(),
            "phase": self.phase,
            "messages": self.messages,
            "returns_as": _usb_id(self.returns_as),
            "faults": self.faults.describe(),
        }

    # -- inputs -----------------------------------------------------------------------

    def control(
        self, request_type: int, request: int, value: int, index: int, data: bytes = b""
    ) -> bool:
        """The NOK hosts send no class or vendor requests: STALL them (and note it)."""
        self._note("control", request_type, request, value, index)
        return False

    def bulk_out(self, data: bytes | memoryview) -> OutResult:
        """One bulk OUT transfer: a whole message, or a part of one (see the module notes)."""
        if self._gone:
            return OutResult.GONE
        f = self.faults
        arrived = self.received_bytes + self._partial_length
        fault = self._out_fault(f.disconnect_after, f.stop_reading_after, arrived)
        if fault is not None:
            return fault
        length = len(data)
        self._note("out", length, bytes(data[:8]).hex())
        if length == 0:
            self._reject("a zero-length packet arrived; NOK loaders never use them")
            return OutResult.ACCEPTED
        if self._partial is not None:
            message = self._continue(data)
            if message is None:
                return OutResult.ACCEPTED
            data = memoryview(message)
        else:
            if self._replies:
                self._reject(
                    f"a {length}-byte message arrived before the reply to the previous one "
                    "was read"
                )
            need = self._message_length(data)
            if need is not None and length < need:
                if length % self.max_packet_size:
                    self._reject(
                        f"a {length}-byte transfer ended in a short packet {need - length} "
                        "bytes before the end of its message"
                    )
                else:
                    self._partial = bytearray(need)
                    self._partial[:length] = data
                    self._partial_length = length
                    return OutResult.ACCEPTED
        self.messages += 1
        reply = self._answer(data)
        if reply is not None:
            self._queue(reply)
        return OutResult.ACCEPTED

    def _continue(self, data: bytes | memoryview) -> bytearray | None:
        """Add one transfer to the message under way; the whole message once complete."""
        partial = self._partial
        assert partial is not None
        at, length = self._partial_length, len(data)
        short = length % self.max_packet_size != 0
        if at + length > len(partial) or (at + length < len(partial) and short):
            self._reject(
                f"a {length}-byte transfer does not fit the {len(partial)}-byte message "
                f"under way at byte {at}"
            )
        partial[at : at + length] = data[: len(partial) - at]
        self._partial_length = min(len(partial), at + length)
        if self._partial_length < len(partial) and self.rejection is None:
            return None
        self._partial = None
        self._partial_length = 0
        return partial

    def _message_length(self, data: bytes | memoryview) -> int | None:
        """The whole length of the message ``data`` starts, from its head; None = ``len(data)``."""
        return None

    def bulk_in(self, max_length: int) -> bytes | None:
        """The next queued reply, or None when the device has nothing to say."""
        if self._gone or not self._replies:
            return None
        if max_length < REPLY_BUFFER_SIZE:
            self._reject(f"host read a reply into {max_length} bytes, less than 0xF000")
        reply = self._replies.pop(0)
        self._note("in", len(reply))
        self._reply_read()
        return reply[:max_length]

    def disconnect(self) -> None:
        """The device (or whoever hosts it) pulled the plug."""
        super().disconnect()
        self._gone = True

    # -- the conversation -------------------------------------------------------------

    def _answer(self, data: bytes | memoryview) -> bytes | None:
        if self.faults.noku:
            return NOKU
        head = bytes(data[:11])
        if head == Command.INFO.value:
            return self.info.encode()
        if head == Command.DISABLE_TIMEOUT.value:
            return encode_status_reply(b"NOKD\0\0", 0)
        if head == Command.REBOOT.value:
            self._reboot()
            return None
        name = parse_param_request(head)
        if name is not None:
            return encode_param_reply(name, self.params.get(name, b""))
        reply = self._loader_message(data)
        return NOKU if reply is None else reply

    def _loader_message(self, data: bytes | memoryview) -> bytes | None:
        """A message of the loader's own; None = unknown (answered NOKU)."""
        raise NotImplementedError

    def _reboot(self) -> None:
        """NOKR: leave the bus (the subclass says how it comes back)."""
        self.disconnect()

    def _reply_read(self) -> None:
        """Called after the host read a reply (a RAM-booting device leaves then)."""

    def _status(self, signature: bytes, status: int) -> bytes:
        if status:
            self.status_sent = status
        return encode_status_reply(signature, status)

    def _fault_status(self, first: int, length: int) -> int | None:
        """The injected status, for the message holding image bytes [first, first+length)."""
        f = self.faults
        if f.status is not None and first <= f.status_at < first + max(length, 1):
            return f.status
        return None

    def _silent(self) -> bool:
        at = self.faults.silent_after
        return at is not None and self.received_bytes >= at

    def _queue(self, reply: bytes) -> None:
        if not self._silent():
            self._replies.append(reply)

    def _reject(self, reason: str) -> None:
        if self.rejection is None:
            self.rejection = reason

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.friendly_name!r} {self.phase}>"
