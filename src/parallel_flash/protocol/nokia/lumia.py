"""The host side of Lumia "MMOS over USB" as a sans-IO state machine.

The sequence is WPinternals' ``FlashMMOS`` (loaders.md A.2), with bounded
waits and every refusal made before the first image byte::

    NOKV -> (NOKD when app >= 2) -> NOKXFR FVER -> NOKXFR RRKH
         -> NOKXFL 0x1E piece -> reply  (repeated, W bytes a piece)
         -> NOKXCBA -> reply -> NOKR (no read) -> Label mode on the same port

Refused after NOKV, before anything else is sent: a NOKU answer, an app
that is not the flash app, subblock 0x1F absent or not 1, WriteBufferSize 0.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from ...errors import DeviceRefused, LocalProtocolError, RemoteProtocolError
from ..actions import Action, AwaitReturn, Finished, HostStage, SendFinal, SendImageMessage
from .host import NokHost, NokTimeouts
from .messages import (
    LABEL_MODE_IDS,
    AppType,
    Command,
    NokInfo,
    ParamReply,
    param_request,
    parse_status_reply,
)
from .xfl import DEFAULT_MMOS_PIECE, XFL_HEAD_SIZE, MmosPiece

__all__ = ("MAX_PIECE", "PARAMS", "LumiaMmosHost", "LumiaPhase")

#: Parameters read before the image, as WPinternals' ReadPhoneInfo does.
PARAMS = ("FVER", "RRKH")
#: Largest WriteBufferSize we believe; a bigger one is a broken reply, not a phone.
MAX_PIECE = 256 << 20
_U32_LIMIT = 1 << 32


class LumiaPhase(enum.Enum):
    SEND_INFO = "sending NOKV"
    READ_INFO = "the NOKV reply"
    SEND_NOKD = "sending NOKD"
    READ_NOKD = "the NOKD reply"
    SEND_PARAM = "sending NOKXFR"
    READ_PARAM = "the NOKXFR reply"
    SEND_PIECE = "the device to take an MMOS piece (NOKXFL)"
    READ_PIECE = "the reply to an MMOS piece (NOKXFL)"
    SEND_SWITCH = "sending NOKXCBA"
    READ_SWITCH = "the NOKXCBA reply"
    SEND_REBOOT = "sending NOKR"
    AWAIT_LABEL = "the device to come back in Label mode"
    DONE = "nothing (booted)"
    ERROR = "nothing (failed)"


_STAGES: Mapping[enum.Enum, HostStage] = {
    LumiaPhase.SEND_INFO: HostStage.IDENTIFY,
    LumiaPhase.READ_INFO: HostStage.IDENTIFY,
    LumiaPhase.SEND_NOKD: HostStage.IDENTIFY,
    LumiaPhase.READ_NOKD: HostStage.IDENTIFY,
    LumiaPhase.SEND_PARAM: HostStage.IDENTIFY,
    LumiaPhase.READ_PARAM: HostStage.IDENTIFY,
    LumiaPhase.SEND_PIECE: HostStage.STREAM,
    LumiaPhase.READ_PIECE: HostStage.STREAM,
    LumiaPhase.SEND_SWITCH: HostStage.STATUS,
    LumiaPhase.READ_SWITCH: HostStage.STATUS,
    LumiaPhase.SEND_REBOOT: HostStage.STATUS,
    LumiaPhase.AWAIT_LABEL: HostStage.STATUS,
}


class LumiaMmosHost(NokHost):
    """One Lumia's MMOS boot from a signed .secwim of ``image_length`` bytes."""

    _error_phase = LumiaPhase.ERROR
    _stages = _STAGES
    label = "Lumia"

    def __init__(
        self,
        *,
        image_length: int,
        timeouts: NokTimeouts | None = None,
        disable_reboot_timeout: bool = True,
    ) -> None:
        super().__init__(timeouts=timeouts)
        if not 0 < image_length < _U32_LIMIT:
            raise LocalProtocolError(
                f"a .secwim of {image_length} bytes cannot be sent: NOKXFL lengths are u32"
            )
        self.image_length = image_length
        self.disable_reboot_timeout = disable_reboot_timeout
        self.phase: LumiaPhase = LumiaPhase.SEND_INFO
        self.piece_size = 0
        self.params: dict[str, bytes | None] = {}
        self._param_index = 0

    # -- what to do next ------------------------------------------------------------

    def next_action(self) -> Action:
        phase, t = self.phase, self.timeouts
        if phase is LumiaPhase.SEND_INFO:
            return self._command(Command.INFO)
        if phase is LumiaPhase.SEND_NOKD:
            return self._command(Command.DISABLE_TIMEOUT)
        if phase is LumiaPhase.SEND_PARAM:
            return self._send(param_request(self.param_name))
        if phase in (
            LumiaPhase.READ_INFO,
            LumiaPhase.READ_NOKD,
            LumiaPhase.READ_PARAM,
            LumiaPhase.READ_SWITCH,
        ):
            return self._read(t.info)
        if phase is LumiaPhase.SEND_PIECE:
            length = min(self.piece_size, self.image_length - self._offset)
            head = MmosPiece(
                total_length=self.image_length, offset=self._offset, piece_length=length
            ).encode_head()
            return SendImageMessage(
                head=head,
                offset=self._offset,
                length=length,
                padding=0,
                timeout=t.send(XFL_HEAD_SIZE + length),
            )
        if phase is LumiaPhase.READ_PIECE:
            return self._read(t.reply)
        if phase is LumiaPhase.SEND_SWITCH:
            return self._command(Command.SWITCH_TO_MMOS)
        if phase is LumiaPhase.SEND_REBOOT:
            return SendFinal(data=Command.REBOOT.value, timeout=t.info)
        if phase is LumiaPhase.AWAIT_LABEL:
            return AwaitReturn(ids=LABEL_MODE_IDS, timeout=t.reenumerate, what="Label mode")
        if phase is LumiaPhase.DONE:
            return Finished(status=0)
        raise LocalProtocolError("the boot already failed; no further action is possible")

    @property
    def param_name(self) -> str:
        return PARAMS[self._param_index]

    @property
    def waiting_for(self) -> str:
        phase = self.waiting_phase
        if phase in (LumiaPhase.SEND_PARAM, LumiaPhase.READ_PARAM):
            return f"{phase.value} ({self.param_name})"
        if phase in (LumiaPhase.SEND_PIECE, LumiaPhase.READ_PIECE):
            return f"{phase.value} at offset {self._offset}"
        return str(phase.value)

    # -- what happened ----------------------------------------------------------------

    _AFTER_SEND = {
        LumiaPhase.SEND_INFO: LumiaPhase.READ_INFO,
        LumiaPhase.SEND_NOKD: LumiaPhase.READ_NOKD,
        LumiaPhase.SEND_PARAM: LumiaPhase.READ_PARAM,
        LumiaPhase.SEND_PIECE: LumiaPhase.READ_PIECE,
        LumiaPhase.SEND_SWITCH: LumiaPhase.READ_SWITCH,
        LumiaPhase.SEND_REBOOT: LumiaPhase.AWAIT_LABEL,
    }

    def completed(self) -> None:
        """The message of the current action went out."""
        try:
            following = self._AFTER_SEND[self.phase]
        except KeyError:
            self._fail(LocalProtocolError(f"nothing was being sent while {self.phase.name}"))
        if self.phase is LumiaPhase.SEND_PIECE:
            self.image_bytes_sent += min(self.piece_size, self.image_length - self._offset)
        self.phase = following

    def _on_reply(self, data: bytes | memoryview) -> None:
        phase = self.phase
        if phase is LumiaPhase.READ_INFO:
            self._on_info(self._parse_info(data))
        elif phase is LumiaPhase.READ_NOKD:
            # Read and ignored, as WPinternals does; it only keeps the phone waiting.
            self.phase = LumiaPhase.SEND_PARAM
        elif phase is LumiaPhase.READ_PARAM:
            self.params[self.param_name] = ParamReply.parse(data, name=self.param_name).value
            if self._param_index + 1 < len(PARAMS):
                self._param_index += 1
                self.phase = LumiaPhase.SEND_PARAM
            else:
                self.phase = LumiaPhase.SEND_PIECE
        elif phase is LumiaPhase.READ_PIECE:
            self._check_status(data, f"NOKXFL (MMOS piece at offset {self._offset})")
            self.messages_acknowledged += 1
            self._offset += min(self.piece_size, self.image_length - self._offset)
            done = self._offset >= self.image_length
            self.phase = LumiaPhase.SEND_SWITCH if done else LumiaPhase.SEND_PIECE
        elif phase is LumiaPhase.READ_SWITCH:
            self._on_switch(data)
        else:
            raise LocalProtocolError(f"no reply is expected while {phase.name}")

    def _on_info(self, info: NokInfo) -> None:
        if info.app_type != AppType.FLASH_APP:
            raise DeviceRefused(
                f"the device answers from its {info.app_name} (NOKV app type {info.app_type}), "
                "not the flash app (2): MMOS over USB needs the flash app"
            )
        flag = info.mmos_flag
        if flag is None:
            raise DeviceRefused(
                "the device does not support MMOS over USB: NOKV subblock 0x1F is absent"
            )
        if flag != 1:
            raise DeviceRefused(
                f"the device does not support MMOS over USB: NOKV subblock 0x1F is {flag}, not 1"
            )
        size = info.write_buffer_size
        if size == 0:
            raise DeviceRefused("the device reports WriteBufferSize 0 (NOKV subblock 0x02)")
        if size is not None and size > MAX_PIECE:
            raise RemoteProtocolError(
                f"NOKV WriteBufferSize {size} is implausible (more than {MAX_PIECE})"
            )
        self.piece_size = DEFAULT_MMOS_PIECE if size is None else size
        wants_nokd = self.disable_reboot_timeout and info.app_version[0] >= 2
        self.phase = LumiaPhase.SEND_NOKD if wants_nokd else LumiaPhase.SEND_PARAM

    def _on_switch(self, data: bytes | memoryview) -> None:
        raw = bytes(data)
        if raw[:4] == b"NOKU":
            raise DeviceRefused("the device answered NOKU to NOKXCBA: no MMOS context to switch to")
        status = parse_status_reply(raw, request="NOKXCBA")
        if status:
            self._check_status(raw, "NOKXCBA (switch to MMOS)")
        self.phase = LumiaPhase.SEND_REBOOT

    def returned(self, vid: int, pid: int) -> None:
        self._guard((LumiaPhase.AWAIT_LABEL,), "a device return")
        if (vid, pid) in LABEL_MODE_IDS:
            self.phase = LumiaPhase.DONE
            return
        self._fail(
            RemoteProtocolError(
                f"the phone came back as {vid:04x}:{pid:04x}, not in Label mode: it unexpectedly "
                "switched mode while booting the MMOS image"
            )
        )
