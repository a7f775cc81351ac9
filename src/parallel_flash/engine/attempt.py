"""One attempt at booting one device: a loader host's actions performed on a link.

:class:`DeviceAttempt` drives any loader's sans-IO host (the seam:
:mod:`parallel_flash.protocol.loader`) -- SimpleIO's stream with its replies
read alongside, the Lumia and UFP loaders' one-message-one-reply exchanges,
the wait for a device to come back -- and mirrors its progress into the
device's record. It raises :class:`AttemptFailure` with a reason that names
what it was waiting for; :func:`~.pipeline.boot_device` decides about retries.

Every wait is bounded as a stage (identification, Reset recovery, the
status: :class:`~parallel_flash.protocol.actions.HostStage`), not only per
read, so a device that sends Log packets without end fails when its stage's
time is up. While streaming, replies are read too: a device that refuses the
image at the header queues a negative status at once, and that ends its
stream.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from collections.abc import Callable, Iterator

import anyio

from ..errors import (
    DeviceBootError,
    DeviceDisconnected,
    DeviceRefused,
    InputError,
    ProtocolError,
    TransferTimeout,
    TransportError,
)
from ..image import ImageBuffer
from ..protocol.actions import (
    Action,
    AwaitReturn,
    Finished,
    HostStage,
    ReadBulk,
    SendBulk,
    SendControl,
    SendFinal,
    SendImageMessage,
    StreamImage,
    TransferPlan,
)
from ..protocol.loader import DeviceIdentity
from ..protocol.selection import Loader
from ..transport.base import Link, OutChunk
from .options import BootOptions, image_shape
from .records import (
    DeviceLog,
    DeviceRecord,
    DeviceState,
    FailureReason,
    LineObserver,
    failure_reason,
)

__all__ = ("Admit", "AttemptEnd", "AttemptFailure", "DeviceAttempt", "send_command")

logger = logging.getLogger(__name__)

_STAGE_STATES = {
    HostStage.IDENTIFY: DeviceState.IDENTIFYING,
    HostStage.RESET: DeviceState.RESETTING,
    HostStage.STREAM: DeviceState.SENDING_SDI,
    HostStage.STATUS: DeviceState.AWAITING_STATUS,
}


class AttemptEnd(enum.Enum):
    """How one attempt ended, for the caller deciding about another one."""

    BOOTED = "booted"
    #: Failed before the device took any image byte (safe to retry).
    BEFORE_IMAGE = "failed before any image byte"
    #: The link failed mid-way (stall, disconnect): retry only after re-enumeration.
    TRANSPORT = "transport failure"
    #: The device said no (negative status) or broke the protocol: never retried.
    DEVICE = "device refused"
    #: Refused by ``admit`` after identification.
    NOT_ADMITTED = "not admitted"


class AttemptFailure(Exception):
    """An attempt ended without booting: its reason, how it ended, what it counts as."""

    def __init__(self, reason: str, end: AttemptEnd, counted: FailureReason) -> None:
        super().__init__(reason)
        self.reason = reason
        self.end = end
        #: The fixed-set reason the report and the metrics count.
        self.counted = counted


#: Called with the device's identity once it is known; returns None to go
#: on, or the reason the device must not be booted (e.g. it is a phone that
#: already booted on this port and came back).
Admit = Callable[[DeviceIdentity], str | None]


class DeviceAttempt:
    """The loop that turns a loader host's actions into link calls, for one attempt."""

    def __init__(
        self,
        link: Link,
        loader: Loader,
        image: ImageBuffer,
        record: DeviceRecord,
        options: BootOptions,
        observer: LineObserver,
        admit: Admit | None,
    ) -> None:
        self.link = link
        self.image = image
        self.record = record
        self.options = options
        self.observer = observer
        self.admit = admit
        self.host = options.hosts[loader](options.host_setup(image_shape(image), link))
        record.bytes_total = image.total_length
        self.stage: HostStage | None = None
        self.deadline = math.inf
        #: Every transfer of the stream has been handed to the link.
        self.all_submitted = False
        #: An image message went to the link (its bytes count once acknowledged).
        self.message_sent = False
        #: Where image messages are assembled: a head and an image slice in one transfer.
        self.message_buffer = bytearray()

    async def run(self) -> None:
        """Perform the host's actions until it is finished; raises :class:`AttemptFailure`."""
        host = self.host
        try:
            while True:
                action = host.next_action()
                self._follow_stage()
                if isinstance(action, Finished):
                    self.record.status = action.status
                    return
                await self._perform(action)
        except DeviceRefused as exc:
            host.abort()
            raise AttemptFailure(
                self._refusal(exc), AttemptEnd.DEVICE, FailureReason.REFUSED
            ) from None
        except DeviceBootError as exc:
            self.record.status = exc.status
            reason = str(exc)
            if host.early_status and not self.all_submitted:
                reason += (
                    f"; the device refused the image after {self.record.bytes_done} of "
                    f"{self.record.bytes_total} bytes"
                )
            raise AttemptFailure(reason, AttemptEnd.DEVICE, FailureReason.DEVICE_STATUS) from None
        except (ProtocolError, TransportError) as exc:
            reason = self._describe(exc)
            host.abort()
            raise AttemptFailure(reason, self._end_of(exc), failure_reason(exc)) from None
        except InputError as exc:
            # The image could not be read (a disk error once streaming began):
            # no device can have it, so no retry; every device ends on record.
            host.abort()
            raise AttemptFailure(
                f"the image could not be read: {exc}", AttemptEnd.DEVICE, FailureReason.ABORTED
            ) from None

    async def _perform(self, action: Action) -> None:
        """One action on the link; the host hears how it went."""
        host, link = self.host, self.link
        if isinstance(action, SendControl | SendBulk):
            await send_command(link, action)
            host.completed()
        elif isinstance(action, ReadBulk):
            self._start_deadline()
            data = await link.bulk_in(action.size, timeout=self._bounded(action.timeout))
            try:
                host.received(data)
            finally:
                self._after_reply()
        elif isinstance(action, StreamImage):
            await self._stream_and_read(action)
        elif isinstance(action, SendImageMessage):
            await self._send_message(action)
            host.completed()
        elif isinstance(action, SendFinal):
            await self._send_final(action)
            host.completed()
        elif isinstance(action, AwaitReturn):
            await self._await_return(action)

    def _refusal(self, exc: DeviceRefused) -> str:
        """A refusal's reason, saying how far the image got."""
        done = self.record.bytes_done
        if not self.message_sent:
            return f"refused before sending any image byte: {exc}"
        if done == 0:
            return f"refused before the device took any image byte: {exc}"
        return f"refused after the device took {done} image bytes: {exc}"

    # -- stages and deadlines ------------------------------------------------------

    def _follow_stage(self) -> None:
        """Follow the host's stage; mirror it in the record."""
        stage = self.host.stage
        if stage is not self.stage:
            self.stage = stage
            self.deadline = math.inf
        state = _STAGE_STATES.get(stage) if stage is not None else None
        record = self.record
        if state is None or state is record.state:
            return
        if state is DeviceState.SENDING_SDI and (
            self.image.sdi_length == 0 or record.state is DeviceState.SENDING_WIM
        ):
            state = DeviceState.SENDING_WIM
            if record.state is state:
                return
        record.state = state
        self.observer.device_changed(record)

    def _start_deadline(self) -> None:
        """A stage's deadline runs from its first read: sends are bounded per transfer,
        the replies (Log packets and all) by the stage as a whole."""
        if self.deadline == math.inf:
            limit = self.host.stage_timeout
            if limit is not None:
                self.deadline = time.monotonic() + limit

    def _bounded(self, timeout: float) -> float:
        """``timeout`` cut to what is left of the stage's deadline."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self._deadline_error()
        return min(timeout, left)

    def _deadline_error(self) -> TransferTimeout:
        stage, limit = self.stage, self.host.stage_timeout
        assert stage is not None and limit is not None
        logs = self.host.log_count
        extra = f"; {logs} Log packets received" if logs else ""
        return TransferTimeout(f"{stage.value} exceeded its deadline of {limit:g} s{extra}")

    # -- streaming -----------------------------------------------------------------

    async def _stream_and_read(self, action: StreamImage) -> None:
        """Stream the image while reading replies; a status sent early ends the stream.

        The reader started here also reads the final status, so the status a
        device queues as its last transfer completes is never missed.
        """
        failure: BaseException | None = None

        async def stream(scope: anyio.CancelScope) -> None:
            nonlocal failure
            try:
                await self._stream(action)
                self.host.completed()
                self._follow_stage()
            except (ProtocolError, TransportError, DeviceBootError, InputError) as exc:
                if failure is None:
                    failure = exc
                scope.cancel()

        async def replies(scope: anyio.CancelScope) -> None:
            nonlocal failure
            try:
                await self._read_replies()
            except (ProtocolError, TransportError, DeviceBootError) as exc:
                # A status explains a stall better than the stall does.
                if failure is None or isinstance(exc, DeviceBootError):
                    failure = exc
                # A refusal while data is still to be sent ends the stream at once;
                # one that raced the last completions lets them complete.
                if not (isinstance(exc, DeviceBootError) and self.all_submitted):
                    scope.cancel()

        async with anyio.create_task_group() as group:
            group.start_soon(stream, group.cancel_scope)
            group.start_soon(replies, group.cancel_scope)
        if failure is not None:
            raise failure

    async def _read_replies(self) -> None:
        host, link = self.host, self.link
        while not host.has_status:
            streaming = self.stage is HostStage.STREAM
            if not streaming:
                self._start_deadline()
            timeout = self.options.status_timeout if streaming else self._bounded(
                self.options.status_timeout
            )
            try:
                data = await link.bulk_in(host.reply_size, timeout=timeout)
            except TransferTimeout:
                if self.stage is HostStage.STREAM:
                    continue  # nothing to say yet: the stream is still going
                if time.monotonic() >= self.deadline:
                    raise self._deadline_error() from None
                continue
            try:
                host.received(data)
            finally:
                self._after_reply()

    async def _stream(self, action: StreamImage) -> None:
        record = self.record
        record.stream_started = time.monotonic()
        sdi_length = self.image.sdi_length
        observer = self.observer

        def progress(nbytes: int) -> None:
            record.bytes_done += nbytes
            if record.state is DeviceState.SENDING_SDI and record.bytes_done >= sdi_length:
                record.state = DeviceState.SENDING_WIM
                observer.device_changed(record)

        in_flight = self.options.in_flight
        plan = action.plan
        logger.debug(
            "%s: streaming %d bytes in %d transfers of %d, %d in flight",
            record.port, plan.total_length, len(plan), plan.transfer_size, in_flight,
        )
        # The image may still be being read (it starts loading when the command
        # starts): the stream sends what is in and, only if it catches up with
        # the reader, ends that segment and awaits more. Usually one segment.
        cursor = _PlanCursor(plan)
        while not cursor.finished:
            await self._image_loaded(cursor.next_end)
            await self.link.stream_out(
                self._loaded_chunks(cursor),
                in_flight=in_flight,
                stall_timeout=action.timeout * in_flight,
                on_progress=progress,
            )
        record.stream_finished = time.monotonic()
        observer.device_changed(record)

    def _loaded_chunks(self, cursor: _PlanCursor) -> Iterator[OutChunk]:
        """The plan's next transfers whose bytes are in the buffer, until one is not yet.

        Pulled by the transport, possibly on its event thread: it reads only
        the loaded length (an int the loading thread raises) and never waits.
        """
        image = self.image
        view = image.available(0)  # the whole buffer; only loaded bytes are sliced
        loaded = image.loaded_length
        while not cursor.finished:
            if cursor.next_end > loaded:  # asked again only when the last answer is used up
                loaded = image.loaded_length
                if cursor.next_end > loaded:
                    return
            offset, length, zero_packet = cursor.take()
            # The transport pulls a chunk to submit it: the last one pulled = all submitted.
            self.all_submitted = cursor.finished
            yield OutChunk(view[offset : offset + length], zero_packet)

    async def _image_loaded(self, end: int) -> None:
        """Until the image's first ``end`` bytes are read (bounded by the image's stall check)."""
        if self.image.loaded_length < end:
            await anyio.to_thread.run_sync(self.image.available, end, abandon_on_cancel=True)

    # -- image messages (one request, one reply) --------------------------------------

    async def _send_message(self, action: SendImageMessage) -> None:
        """One image message as one OUT transfer, nothing else in flight, no ZLP.

        It goes through :meth:`Link.stream_out` so it shares the usbfs budget
        and the simulated link rate with every other device's stream.
        """
        record = self.record
        if record.stream_started is None:
            record.stream_started = time.monotonic()
        size = action.message_length
        if len(self.message_buffer) < size:
            self.message_buffer = bytearray(size)
        buffer, head = self.message_buffer, len(action.head)
        end = head + action.length
        buffer[:head] = action.head
        # The image may still be loading: awaits only this message's bytes.
        await self._image_loaded(action.offset + action.length)
        view = self.image.available(action.offset + action.length)
        buffer[head:end] = view[action.offset : action.offset + action.length]
        buffer[end:size] = bytes(action.padding)
        self.message_sent = True
        with memoryview(buffer) as view:
            await self.link.stream_out(
                [OutChunk(view[:size], False)],
                in_flight=1,
                stall_timeout=action.timeout,
                on_progress=_counted_on_reply,
            )

    async def _send_final(self, action: SendFinal) -> None:
        """A command the device may not live to acknowledge: a transport error is expected."""
        try:
            await self.link.bulk_out(action.data, timeout=action.timeout, zero_packet=False)
        except TransportError as exc:
            logger.debug(
                "%s: %s after the last command (a reset in progress): %s",
                self.record.port, type(exc).__name__, exc,
            )

    async def _await_return(self, action: AwaitReturn) -> None:
        """A loader that confirms its own boot (Lumia: back in Label mode on its port).

        The record is then confirmed here: a station's own confirmation, which
        waits for the booted image's ``--expect`` IDs, has nothing left to judge.
        """
        started = time.monotonic()
        ids = await self.link.wait_return(action.timeout)
        if ids is None:
            self.host.abort()
            raise AttemptFailure(
                f"the device did not come back in {action.what} on its port within "
                f"{action.timeout:g} s",
                AttemptEnd.DEVICE,
                FailureReason.TIMEOUT,
            )
        self.host.returned(*ids)  # raises unless it came back as the loader expects
        self.record.confirmed = True
        self.record.confirm_seconds = round(time.monotonic() - started, 3)

    # -- replies, identity, errors ---------------------------------------------------

    def _after_reply(self) -> None:
        record, host = self.record, self.host
        taken = host.image_bytes_acknowledged
        if taken > record.bytes_done:
            record.bytes_done = taken
            if taken >= record.bytes_total:
                record.stream_finished = time.monotonic()
            self.observer.device_changed(record)
        name = host.device_name
        if name and host.identity is None and record.name != name:
            record.name = name
            self.observer.device_changed(record)
        for packet in self.host.pop_logs():
            log = DeviceLog(level=packet.level, event_id=packet.event_id, text=packet.text)
            record.add_log(log)
            self.observer.device_log(record, log)
        identity = self.host.identity
        if identity is not None and record.unique_id != str(identity.unique_id):
            record.name = identity.friendly_name
            record.unique_id = str(identity.unique_id)
            self.observer.device_changed(record)
            if self.admit is not None:
                refusal = self.admit(identity)
                if refusal is not None:
                    raise AttemptFailure(refusal, AttemptEnd.NOT_ADMITTED, FailureReason.NOT_BOOTED)

    def _end_of(self, exc: ProtocolError | TransportError) -> AttemptEnd:
        before_image = self.record.bytes_done == 0 and not self.message_sent
        if isinstance(exc, ProtocolError):
            return AttemptEnd.BEFORE_IMAGE if before_image else AttemptEnd.DEVICE
        if isinstance(exc, DeviceDisconnected):
            return AttemptEnd.TRANSPORT
        return AttemptEnd.BEFORE_IMAGE if before_image else AttemptEnd.TRANSPORT

    def _describe(self, exc: ProtocolError | TransportError) -> str:
        """A reason that names what we were waiting for."""
        waiting = self.host.waiting_for
        # Transports name the port in their messages; the record already does.
        detail = str(exc).removeprefix(f"{self.record.port}: ")
        if isinstance(exc, DeviceDisconnected):
            return f"disconnected while waiting for {waiting}"
        if isinstance(exc, TransferTimeout):
            return f"timed out waiting for {waiting}: {detail}"
        return f"{detail} (while waiting for {waiting})"


async def send_command(link: Link, action: SendControl | SendBulk) -> None:
    """A control transfer with no data stage, or one bulk OUT transfer, as the host asked."""
    if isinstance(action, SendControl):
        request = action.request
        await link.control_out(
            request.request_type, request.request, request.value, request.index,
            timeout=action.timeout,
        )
    else:
        await link.bulk_out(action.data, timeout=action.timeout, zero_packet=action.zero_packet)


def _counted_on_reply(_nbytes: int) -> None:
    """An image message's bytes count once its reply says the device took them."""


class _PlanCursor:
    """Where a stream is in its transfer plan, kept across the segments it is sent in."""

    __slots__ = ("_next", "_transfers")

    def __init__(self, plan: TransferPlan) -> None:
        self._transfers = iter(plan)
        self._next = next(self._transfers, None)

    @property
    def finished(self) -> bool:
        return self._next is None

    @property
    def next_end(self) -> int:
        """Where the next transfer's bytes end in the image buffer."""
        assert self._next is not None
        offset, length, _zero_packet = self._next
        return offset + length

    def take(self) -> tuple[int, int, bool]:
        """The next transfer's ``(offset, length, zero_packet)``; moves past it."""
        taken = self._next
        assert taken is not None
        self._next = next(self._transfers, None)
        return taken
