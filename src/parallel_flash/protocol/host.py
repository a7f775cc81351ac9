"""The host side of the SimpleIO WIM boot as a sans-IO state machine.

Like h11, this module does no I/O and knows no clock: it tells its caller
what to do next (an *action*), and the caller reports back what happened
(:meth:`WimBootHost.completed` after a send, :meth:`WimBootHost.received`
after a read). The caller owns USB, timing and cancellation; timeouts are
handed to it as numbers inside each action.

The sequence is protocol.md's "Sequence, per device", step by step::

    CONTROL -> SEND_ID -> READ_ID --(curPosition != 0)--> SEND_RESET -> READ_RESET
                            |                                              |
                            |  <------------ SEND_ID (once more) ----------+
                            v
    SEND_WIM_OPCODE -> SEND_HEADER -> STREAM -> READ_STATUS -> DONE

Any error moves the machine to ERROR and raises; nothing further is allowed.

Replies are classified by the phase that expects them and by their length
and layout, never by their first byte alone: an Id reply is at least 41
bytes, a status exactly 4, a Log packet its own exact layout (protocol.md).
So a status of 5 or 0x05050505, or an Id reply whose curPosition has low
byte 5, is what the phase expects, not a "Log packet".

Every wait belongs to a :class:`HostStage` with a deadline of its own
(:attr:`WimBootHost.stage_timeout`): the caller bounds the whole stage, not
just each read, so a device sending Log packets without end still fails
when its stage's time is up.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..errors import DeviceBootError, LocalProtocolError, RemoteProtocolError
from .actions import (
    Action,
    Finished,
    HostStage,
    ReadBulk,
    SendBulk,
    SendControl,
    StreamImage,
    TransferPlan,
)
from .messages import (
    CONTROL_REQUEST,
    ID_REPLY_MIN_LENGTH,
    LEGACY_LOADER_NAME,
    LEGACY_TRANSFER_SIZE,
    REPLY_BUFFER_SIZE,
    STANDARD_TRANSFER_SIZE,
    STATUS_LENGTH,
    IdReply,
    LogPacket,
    Opcode,
    WimBootHeader,
    needs_zero_packet,
    parse_status,
)

__all__ = (
    "DEFAULT_TIMEOUTS",
    "Finished",
    "HostPhase",
    "HostStage",
    "HostTimeouts",
    "ReadBulk",
    "SendBulk",
    "SendControl",
    "StreamImage",
    "TransferPlan",
    "WimBootHost",
    "needs_zero_packet",
)


class HostPhase(enum.Enum):
    CONTROL = "sending the control request"
    SEND_ID = "sending Id"
    READ_ID = "the Id reply"
    SEND_RESET = "sending Reset"
    READ_RESET = "the Reset reply"
    SEND_WIM_OPCODE = "sending the WIM opcode"
    SEND_HEADER = "sending the WIM header"
    STREAM = "the device to take the image data"
    READ_STATUS = "the boot status"
    DONE = "nothing (booted)"
    ERROR = "nothing (failed)"


_STAGES = {
    HostPhase.CONTROL: HostStage.IDENTIFY,
    HostPhase.SEND_ID: HostStage.IDENTIFY,
    HostPhase.READ_ID: HostStage.IDENTIFY,
    HostPhase.SEND_RESET: HostStage.RESET,
    HostPhase.READ_RESET: HostStage.RESET,
    HostPhase.SEND_WIM_OPCODE: HostStage.STREAM,
    HostPhase.SEND_HEADER: HostStage.STREAM,
    HostPhase.STREAM: HostStage.STREAM,
    HostPhase.READ_STATUS: HostStage.STATUS,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class HostTimeouts:
    """Seconds per stage (protocol.md steps 2-8), each bounding the stage as a whole.

    ``identify`` is not Microsoft's 2 s: that bounds one read, and a stale
    device may send Log packets before its Id reply, each a read of its own.
    A whole-stage bound of 2 s failed such devices on a loaded host (9 reads
    at 250-500 ms each in the simulated shift), though they were answering;
    5 s, like the Reset stage, still fails a silent or endlessly chattering
    device within a bounded wait.
    """

    identify: float = 5.0
    reset: float = 5.0
    transfer: float = 1.0
    status: float = 15.0


#: The protocol.md waits, for a caller that takes one of them alone (``list``'s Id
#: exchange, the CLI's option defaults): written once, in :class:`HostTimeouts`.
DEFAULT_TIMEOUTS = HostTimeouts()


# -- the machine -----------------------------------------------------------------


class WimBootHost:
    """One device's WIM boot, from the control request to the status."""

    def __init__(
        self,
        *,
        sdi_length: int,
        wim_length: int,
        max_packet_size: int,
        transfer_size: int | None = None,
        max_transfer_size: int | None = None,
        timeouts: HostTimeouts | None = None,
    ) -> None:
        if max_packet_size <= 0:
            raise LocalProtocolError(f"wMaxPacketSize must be positive, not {max_packet_size}")
        if transfer_size is not None and transfer_size <= 0:
            raise LocalProtocolError(f"transfer size must be positive, not {transfer_size}")
        if wim_length <= 0:
            raise LocalProtocolError("the WIM is empty")
        # Validates the u32 limits up front (protocol.md: under 4 GiB).
        WimBootHeader(
            sdi_length=sdi_length,
            wim_length=wim_length,
            transfer_size=transfer_size or STANDARD_TRANSFER_SIZE,
        )
        self.sdi_length = sdi_length
        self.wim_length = wim_length
        self.max_packet_size = max_packet_size
        self.timeouts = timeouts or HostTimeouts()
        self._requested_transfer_size = transfer_size
        #: The transport's ceiling (a usbfs cap): the size announced is never above it.
        self._max_transfer_size = max_transfer_size
        self.phase = HostPhase.CONTROL
        self.identity: IdReply | None = None
        self.header: WimBootHeader | None = None
        self.status: int | None = None
        self.reset_sent = False
        self._failed_in: HostPhase | None = None
        self._logs: list[LogPacket] = []
        #: Log packets received in all (the caller keeps only some of them).
        self.log_count = 0
        #: Packets read while waiting for the Reset reply that were neither 06 nor Log.
        self.skipped = 0
        #: A negative status arrived while streaming (a refusal at the header).
        self.early_status = False
        #: A success status read while the last transfers were still completing.
        self._status_before_completion: int | None = None

    # -- what to do next -------------------------------------------------------

    def next_action(self) -> Action:
        """The action for the current phase. Calling it twice returns the same action."""
        phase = self.phase
        t = self.timeouts
        if phase is HostPhase.CONTROL:
            return SendControl(request=CONTROL_REQUEST, timeout=t.identify)
        if phase is HostPhase.SEND_ID:
            return self._command(Opcode.ID, t.identify)
        if phase is HostPhase.READ_ID:
            return ReadBulk(size=REPLY_BUFFER_SIZE, timeout=t.identify)
        if phase is HostPhase.SEND_RESET:
            return self._command(Opcode.RESET, t.reset)
        if phase is HostPhase.READ_RESET:
            return ReadBulk(size=REPLY_BUFFER_SIZE, timeout=t.reset)
        if phase is HostPhase.SEND_WIM_OPCODE:
            return self._command(Opcode.WIM, t.transfer)
        if phase is HostPhase.SEND_HEADER:
            assert self.header is not None  # set on entering SEND_WIM_OPCODE
            data = self.header.encode()
            return SendBulk(
                data=data,
                timeout=t.transfer,
                zero_packet=needs_zero_packet(len(data), self.max_packet_size),
            )
        if phase is HostPhase.STREAM:
            assert self.header is not None
            plan = TransferPlan(
                sdi_length=self.sdi_length,
                wim_length=self.wim_length,
                transfer_size=self.header.transfer_size,
                max_packet_size=self.max_packet_size,
            )
            return StreamImage(plan=plan, timeout=t.transfer)
        if phase is HostPhase.READ_STATUS:
            return ReadBulk(size=REPLY_BUFFER_SIZE, timeout=t.status)
        if phase is HostPhase.DONE:
            assert self.status is not None
            return Finished(status=self.status)
        raise LocalProtocolError("the boot already failed; no further action is possible")

    def _command(self, opcode: Opcode, timeout: float) -> SendBulk:
        return SendBulk(data=opcode.encode(), timeout=timeout, zero_packet=False)

    @property
    def waiting_for(self) -> str:
        """What the current phase waits on (or waited on when it failed), for messages."""
        return (self._failed_in or self.phase).value

    @property
    def has_status(self) -> bool:
        """A status was read (possibly while the stream's last completions are due)."""
        return self.status is not None or self._status_before_completion is not None

    @property
    def stage(self) -> HostStage | None:
        """The bounded wait the current phase belongs to (None when done or failed)."""
        return _STAGES.get(self.phase)

    @property
    def stage_timeout(self) -> float | None:
        """Seconds the whole current stage may take; None = bounded by progress (streaming)."""
        stage = self.stage
        t = self.timeouts
        if stage is HostStage.IDENTIFY:
            return t.identify
        if stage is HostStage.RESET:
            return t.reset
        if stage is HostStage.STATUS:
            return t.status
        return None

    @property
    def transfer_size(self) -> int | None:
        return self.header.transfer_size if self.header else None

    #: Replies are read into this many bytes (protocol.md: at least 16376).
    reply_size = REPLY_BUFFER_SIZE

    @property
    def device_name(self) -> str | None:
        """The friendly name the Id reply gave, once it arrived."""
        return self.identity.friendly_name if self.identity else None

    @property
    def image_bytes_acknowledged(self) -> int:
        """SimpleIO acknowledges nothing before the status: the whole image, or none."""
        return self.header.total_length if self.phase is HostPhase.DONE and self.header else 0

    def pop_logs(self) -> list[LogPacket]:
        """Log packets received since the last call (protocol.md: show, never fail on)."""
        logs, self._logs = self._logs, []
        return logs

    # -- what happened ---------------------------------------------------------

    _AFTER_SEND = {
        HostPhase.CONTROL: HostPhase.SEND_ID,
        HostPhase.SEND_ID: HostPhase.READ_ID,
        HostPhase.SEND_RESET: HostPhase.READ_RESET,
        HostPhase.SEND_WIM_OPCODE: HostPhase.SEND_HEADER,
        HostPhase.SEND_HEADER: HostPhase.STREAM,
        HostPhase.STREAM: HostPhase.READ_STATUS,
    }

    def completed(self) -> None:
        """The control transfer, bulk OUT or stream of the current action completed."""
        try:
            self.phase = self._AFTER_SEND[self.phase]
        except KeyError:
            self._fail(LocalProtocolError(f"nothing was being sent while {self.phase.name}"))
        early, self._status_before_completion = self._status_before_completion, None
        if early is not None and self.phase is HostPhase.READ_STATUS:
            self._on_status(early)

    def received(self, data: bytes | memoryview) -> None:
        """A bulk IN transfer completed with ``data``.

        Allowed while a reply is read, and while streaming: a device that
        refuses the image at the header queues its status at once, and the
        caller reads it during the stream so that device's stream ends early.
        """
        phase = self.phase
        if phase not in (
            HostPhase.READ_ID, HostPhase.READ_RESET, HostPhase.READ_STATUS, HostPhase.STREAM
        ):
            self._fail(LocalProtocolError(f"no reply is expected while {phase.name}"))
        try:
            if phase is HostPhase.READ_ID:
                self._on_id_data(data)
            elif phase is HostPhase.READ_RESET:
                self._on_reset_data(data)
            else:
                self._on_status_data(data)
        except (RemoteProtocolError, DeviceBootError) as exc:
            self._fail(exc)

    def _log(self, packet: LogPacket) -> None:
        self.log_count += 1
        self._logs.append(packet)

    def _on_id_data(self, data: bytes | memoryview) -> None:
        # An exact Id reply wins over a Log reading of the same bytes: the phase expects it.
        if len(data) < ID_REPLY_MIN_LENGTH or not IdReply.parses_exactly(data):
            packet = LogPacket.parse_exact(data)
            if packet is not None:
                self._log(packet)
                return
        if len(data) < ID_REPLY_MIN_LENGTH:
            raise RemoteProtocolError(
                f"Id reply is {len(data)} bytes, at least {ID_REPLY_MIN_LENGTH} expected"
                + (f" (starts {bytes(data[:8]).hex()})" if data else "")
            )
        self._on_id_reply(IdReply.parse(data))

    def _on_reset_data(self, data: bytes | memoryview) -> None:
        packet = LogPacket.parse_exact(data)
        if packet is not None:
            self._log(packet)
        elif data[:1] == bytes((Opcode.ERR,)):
            self.phase = HostPhase.SEND_ID
        else:
            # protocol.md step 3: keep reading until a packet starts with 06.
            self.skipped += 1

    def _on_status_data(self, data: bytes | memoryview) -> None:
        if len(data) == STATUS_LENGTH:
            self._on_status(parse_status(data))
            return
        packet = LogPacket.parse_exact(data)
        if packet is None:
            parse_status(data)  # raises, naming the length
        else:
            self._log(packet)

    def _on_id_reply(self, reply: IdReply) -> None:
        self.identity = reply
        if reply.cur_position == 0:
            self._start_wim()
        elif not self.reset_sent:
            self.phase = HostPhase.SEND_RESET
            self.reset_sent = True
        else:
            raise RemoteProtocolError(
                f"device busy, reset refused: curPosition is still {reply.cur_position} "
                "after Reset"
            )

    def _on_status(self, status: int) -> None:
        if self.phase is HostPhase.STREAM and status >= 0:
            # The device took the last transfer; its completion has not reached
            # the caller yet (completions of IN and OUT may arrive in any order).
            self._status_before_completion = status
            return
        self.status = status
        if self.phase is HostPhase.STREAM:
            self.early_status = True
        if status < 0:
            raise DeviceBootError(status)
        self.phase = HostPhase.DONE

    def _start_wim(self) -> None:
        assert self.identity is not None
        size = self._requested_transfer_size
        if size is None:
            legacy = LEGACY_LOADER_NAME in self.identity.friendly_name
            size = LEGACY_TRANSFER_SIZE if legacy else STANDARD_TRANSFER_SIZE
        if self._max_transfer_size:
            size = min(size, self._max_transfer_size)
        self.header = WimBootHeader(
            sdi_length=self.sdi_length, wim_length=self.wim_length, transfer_size=size
        )
        self.phase = HostPhase.SEND_WIM_OPCODE

    def returned(self, vid: int, pid: int) -> None:
        """SimpleIO awaits no return itself (the station confirms a boot): always an error."""
        self._fail(LocalProtocolError(f"no device return is awaited while {self.phase.name}"))

    def abort(self) -> None:
        """The caller gave up (timeout, disconnect, cancellation): park the machine in ERROR."""
        if self.phase is not HostPhase.ERROR:
            self._failed_in = self.phase
        self.phase = HostPhase.ERROR

    def _fail(self, error: Exception) -> None:
        self.abort()
        raise error
