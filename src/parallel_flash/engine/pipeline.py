"""The engine: one async pipeline per device, all in one anyio task group.

:func:`boot_device` drives a sans-IO loader host (:mod:`.protocol.loader`;
SimpleIO's :class:`~.protocol.host.WimBootHost` by default) over a
:class:`~.transport.base.Link`, mirrors its progress into the device's
:class:`~.records.DeviceRecord` and tells the observer. It never raises for a
device failure: the record ends BOOTED or FAILED with a reason, so one device
going wrong cannot disturb the others in the task group. Cancellation is the
one thing that propagates; the record is finished as INTERRUPTED first, so
the report still has it.

Every wait is bounded as a stage (identification, Reset recovery, the
status: :class:`~.protocol.host.HostStage`), not only per read, so a device
that sends Log packets without end fails when its stage's time is up. While
streaming, replies are read too: a device that refuses the image at the
header queues a negative status at once, and that ends its stream.

The engine knows nothing of libusb, rich, argparse or exit codes.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import anyio

from ..errors import (
    DeviceBootError,
    DeviceDisconnected,
    DeviceRefused,
    InputError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    TransferTimeout,
    TransportError,
)
from ..image import ImageBuffer, ImageSet
from ..protocol.actions import (
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
from ..protocol.host import HostTimeouts
from ..protocol.loader import HOSTS, DeviceIdentity, HostFactory, HostSetup, ImageShape
from ..protocol.messages import STANDARD_TRANSFER_SIZE, LogPacket
from ..protocol.nokia.host import NokTimeouts
from ..protocol.selection import Loader, loader_for, refusal
from ..transport.base import Link, OutChunk
from .records import (
    MAX_KEPT_LOGS,
    Attempt,
    DeviceLog,
    DeviceRecord,
    DeviceState,
    FailureReason,
    LineObserver,
    NullObserver,
    Outcome,
    failure_reason,
)

__all__ = (
    "DEFAULT_IN_FLIGHT",
    "MAX_IN_FLIGHT",
    "AttemptEnd",
    "BootOptions",
    "LineCounters",
    "LineResult",
    "StopReason",
    "boot_device",
    "boot_line",
    "check_images",
    "finish_record",
    "identify_device",
)

logger = logging.getLogger(__name__)

#: OUT transfers queued per device. Four 1 MiB transfers keep a USB 2.0 link
#: busy through host turnaround; 8 devices x 4 x 1 MiB = 32 MiB, which is why
#: the libusb transport shrinks this to fit the kernel's usbfs cap (16 MB by
#: default) across all devices.
DEFAULT_IN_FLIGHT = 4
#: More queued transfers per device buy nothing on USB 2.0 and cost usbfs memory.
MAX_IN_FLIGHT = 64
#: Pause before retrying a device on the same link (a device that just
#: refused may need a moment; Microsoft's recovery waits 1 s).
RETRY_PAUSE = 0.5
#: Before a retry, stale replies are read off the pipe: at most this many, for
#: at most this long, each read giving up after DRAIN_READ_TIMEOUT of silence.
DRAIN_PACKETS = 1024
DRAIN_SECONDS = 3.0
DRAIN_READ_TIMEOUT = 0.1

_STAGE_STATES = {
    HostStage.IDENTIFY: DeviceState.IDENTIFYING,
    HostStage.RESET: DeviceState.RESETTING,
    HostStage.STREAM: DeviceState.SENDING_SDI,
    HostStage.STATUS: DeviceState.AWAITING_STATUS,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class BootOptions:
    """How every device of a run is booted (protocol.md defaults)."""

    #: Bytes per data transfer; None = the protocol's choice (1 MiB, or
    #: 16376 for the legacy loader).
    transfer_size: int | None = None
    #: OUT transfers queued per device while streaming.
    in_flight: int = DEFAULT_IN_FLIGHT
    id_timeout: float = 2.0
    reset_timeout: float = 5.0
    #: "No progress" window per transfer; a stream's window is this times in_flight.
    transfer_timeout: float = 1.0
    status_timeout: float = 15.0
    #: Further attempts for a device that failed before any image byte was
    #: sent (or, in station mode, re-enumerated after a transport failure).
    #: Never after a negative status.
    retries: int = 0
    #: The host of each loader generation (the loader seam, protocol.loader).
    hosts: Mapping[Loader, HostFactory] = field(default_factory=lambda: HOSTS)
    #: The Lumia and UFP loaders' waits (loaders.md A.1; the reference hosts have none).
    nok_timeouts: NokTimeouts = field(default_factory=NokTimeouts)

    def __post_init__(self) -> None:
        if self.transfer_size is not None and not 0 < self.transfer_size <= 0xFFFF_FFFF:
            raise InputError(
                f"transfer size must be between 1 and 4294967295 bytes, not {self.transfer_size}"
            )
        if not 1 <= self.in_flight <= MAX_IN_FLIGHT:
            raise InputError(
                f"transfers in flight must be between 1 and {MAX_IN_FLIGHT}, not {self.in_flight}"
            )
        if not 0 <= self.retries <= 100:
            raise InputError(f"retries must be between 0 and 100, not {self.retries}")
        for name in ("id_timeout", "reset_timeout", "transfer_timeout", "status_timeout"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                what = name.replace("_", " ")
                raise InputError(f"{what} must be a positive number of seconds, not {value}")

    @property
    def timeouts(self) -> HostTimeouts:
        return HostTimeouts(
            identify=self.id_timeout,
            reset=self.reset_timeout,
            transfer=self.transfer_timeout,
            status=self.status_timeout,
        )

    def host_setup(self, image: ImageShape, link: Link) -> HostSetup:
        """What one attempt's loader host is built from, on ``link``."""
        return HostSetup(
            image=image,
            max_packet_size=link.max_packet_size,
            transfer_size=self.transfer_size,
            # The transport's ceiling (a usbfs cap): the size announced never exceeds it.
            max_transfer_size=link.transfer_size_limit(
                self.transfer_size or STANDARD_TRANSFER_SIZE
            ),
            timeouts=self.timeouts,
            nok_timeouts=self.nok_timeouts,
        )


# -- one device ----------------------------------------------------------------------


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


class _Failure(Exception):
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


async def boot_device(
    link: Link,
    image: ImageBuffer | ImageSet,
    record: DeviceRecord,
    options: BootOptions | None = None,
    observer: LineObserver | None = None,
    *,
    admit: Admit | None = None,
    final: bool = True,
) -> AttemptEnd:
    """Boot one device over an opened link; the caller owns (and closes) the link.

    Attempts that fail before any image byte are retried on the same link up
    to ``options.retries`` times; each failed attempt is listed in
    ``record.attempts``. With ``final=False`` a transport failure leaves the
    record unfinished (its reason stored in ``record.error``), so the caller
    can try again once the device re-enumerates, or :func:`finish_record` it.
    """
    options = options or BootOptions()
    observer = observer or NullObserver()
    # The device's USB IDs choose its loader (protocol.selection); one that
    # cannot take this image fails the device, saying what it needs.
    loader = loader_for(*link.usb_ids) or Loader.SIMPLEIO
    record.loader = loader.value
    chosen = _image_for(loader, image)
    if chosen is None:
        given = image.images if isinstance(image, ImageSet) else (image,)
        finish_record(
            record, observer, DeviceState.FAILED,
            refusal(loader, [(one.wim_path, one.kind) for one in given]),
            FailureReason.REFUSED,
        )
        return AttemptEnd.DEVICE
    if isinstance(image, ImageSet):
        record.image_sha256 = chosen.sha256
    while True:
        pipeline = _Pipeline(link, loader, chosen, record, options, observer, admit)
        started = time.monotonic()
        try:
            await pipeline.run()
        except _Failure as failure:
            retry = (
                failure.end is AttemptEnd.BEFORE_IMAGE
                and len(record.attempts) < options.retries
            )
            if retry or (not final and failure.end is AttemptEnd.TRANSPORT):
                record_attempt(record, failure.reason, started)
                record.error = failure.reason
                record.reason = failure.counted
                if not retry:
                    return failure.end
                logger.info(
                    "%s: attempt %d failed (%s); retrying",
                    record.port, len(record.attempts), failure.reason,
                )
                await anyio.sleep(RETRY_PAUSE)
                await _drain(link, pipeline.host.reply_size)
                continue
            if record.attempts:
                record_attempt(record, failure.reason, started)
            finish_record(record, observer, DeviceState.FAILED, failure.reason, failure.counted)
            return failure.end
        except anyio.get_cancelled_exc_class():
            finish_record(record, observer, DeviceState.INTERRUPTED, "interrupted")
            raise
        if record.attempts:
            record_attempt(record, None, started)
        finish_record(record, observer, DeviceState.BOOTED)
        return AttemptEnd.BOOTED


def _image_for(loader: Loader, image: ImageBuffer | ImageSet) -> ImageBuffer | None:
    """The image this loader boots: the one given, or the fitting one of a set."""
    if isinstance(image, ImageSet):
        return image.pick(loader.file_types)
    return image if loader.takes(image.kind) else None


def check_images(images: ImageSet) -> None:
    """Refuse a set that leaves a loader two files to choose from (a WIM and a .secwim).

    :raises ~parallel_flash.errors.InputError: naming the files.
    """
    for loader in Loader:
        fitting = [one.wim_path for one in images.images if loader.takes(one.kind)]
        if len(fitting) > 1:
            raise InputError(
                f"{' and '.join(fitting)}: {loader.value} devices would take either; "
                "give one of them"
            )


async def _drain(link: Link, reply_size: int) -> int:
    """Read what an earlier attempt left queued (late replies, Log packets); bounded.

    A retry that skipped this would take the earlier attempt's Id reply for its
    own and read it again where the status belongs (protocol.md, "Recovery":
    junk left on the pipe is cleared before trying again).
    """
    drained = 0
    with anyio.move_on_after(DRAIN_SECONDS):
        while drained < DRAIN_PACKETS:
            try:
                await link.bulk_in(reply_size, timeout=DRAIN_READ_TIMEOUT)
            except (TransportError, ProtocolError):
                break
            drained += 1
    if drained:
        logger.debug("%s: drained %d packets left by the last attempt", link.port, drained)
    return drained


def record_attempt(record: DeviceRecord, error: str | None, started: float) -> None:
    """Add one attempt to ``record.attempts`` and reset the per-attempt counters."""
    record.attempts.append(
        Attempt(
            number=len(record.attempts) + 1,
            error=error,
            bytes_sent=record.bytes_done,
            seconds=round(time.monotonic() - started, 3),
        )
    )
    if error is not None:
        record.bytes_done = 0
        record.stream_started = record.stream_finished = None
        record.status = None


def finish_record(
    record: DeviceRecord,
    observer: LineObserver,
    state: DeviceState,
    error: str | None = None,
    reason: FailureReason | None = None,
) -> None:
    """End ``record`` once (BOOTED, FAILED or INTERRUPTED) and tell the observer.

    ``reason`` is the counted reason of a failure (default: the record's own,
    else a USB error); an interruption counts as :attr:`FailureReason.INTERRUPTED`.
    """
    if record.state.finished:
        return
    record.finished = time.monotonic()
    record.state = state
    record.error = error
    record.reason = counted_reason(record, state, reason)
    if state is not DeviceState.BOOTED:
        logger.info("%s: %s: %s", record.port, state.value, error)
    observer.device_finished(record)


def counted_reason(
    record: DeviceRecord, state: DeviceState, reason: FailureReason | None
) -> FailureReason:
    """The fixed-set reason a record ending in ``state`` is counted under."""
    if state is DeviceState.BOOTED:
        return FailureReason.NONE
    if state is DeviceState.INTERRUPTED:
        return FailureReason.INTERRUPTED
    if reason is not None:
        return reason
    if record.reason is not FailureReason.NONE:
        return record.reason
    return FailureReason.USB_ERROR


class _Pipeline:
    """The loop that turns host actions into link calls for one device attempt."""

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
        host, link = self.host, self.link
        try:
            while True:
                action = host.next_action()
                self._follow_stage()
                if isinstance(action, SendControl):
                    request = action.request
                    await link.control_out(
                        request.request_type,
                        request.request,
                        request.value,
                        request.index,
                        timeout=action.timeout,
                    )
                    host.completed()
                elif isinstance(action, SendBulk):
                    await link.bulk_out(
                        action.data, timeout=action.timeout, zero_packet=action.zero_packet
                    )
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
                elif isinstance(action, Finished):
                    self.record.status = action.status
                    return
        except DeviceRefused as exc:
            host.abort()
            done = self.record.bytes_done
            if not self.message_sent:
                before = "refused before sending any image byte"
            elif done == 0:
                before = "refused before the device took any image byte"
            else:
                before = f"refused after the device took {done} image bytes"
            raise _Failure(f"{before}: {exc}", AttemptEnd.DEVICE, FailureReason.REFUSED) from None
        except DeviceBootError as exc:
            self.record.status = exc.status
            reason = str(exc)
            if host.early_status and not self.all_submitted:
                reason += (
                    f"; the device refused the image after {self.record.bytes_done} of "
                    f"{self.record.bytes_total} bytes"
                )
            raise _Failure(reason, AttemptEnd.DEVICE, FailureReason.DEVICE_STATUS) from None
        except (ProtocolError, TransportError) as exc:
            reason = self._describe(exc)
            host.abort()
            raise _Failure(reason, self._end_of(exc), failure_reason(exc)) from None

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
            except (ProtocolError, TransportError, DeviceBootError) as exc:
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
        logger.debug(
            "%s: streaming %d bytes in %d transfers of %d, %d in flight",
            record.port, action.plan.total_length, len(action.plan),
            action.plan.transfer_size, in_flight,
        )
        await self.link.stream_out(
            self._chunks(action.plan),
            in_flight=in_flight,
            stall_timeout=action.timeout * in_flight,
            on_progress=progress,
        )
        record.stream_finished = time.monotonic()
        observer.device_changed(record)

    def _chunks(self, plan: TransferPlan) -> Iterator[OutChunk]:
        view = self.image.view
        last = len(plan) - 1
        for index, (offset, length, zero_packet) in enumerate(plan):
            # The transport pulls a chunk to submit it: the last one pulled = all submitted.
            self.all_submitted = index == last
            yield OutChunk(view[offset : offset + length], zero_packet)

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
        buffer[head:end] = self.image.view[action.offset : action.offset + action.length]
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
        ids = await self.link.wait_return(action.timeout)
        if ids is None:
            self.host.abort()
            raise _Failure(
                f"the device did not come back in {action.what} on its port within "
                f"{action.timeout:g} s",
                AttemptEnd.DEVICE,
                FailureReason.TIMEOUT,
            )
        self.host.returned(*ids)

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
                    raise _Failure(refusal, AttemptEnd.NOT_ADMITTED, FailureReason.NOT_BOOTED)

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


def image_shape(image: ImageBuffer) -> ImageShape:
    """The lengths a loader host is built from."""
    return ImageShape(
        sdi_length=image.sdi_length,
        wim_length=image.wim_length,
        ffu_header_length=image.ffu_header_length,
        ffu_chunk_size=image.ffu_chunk_size,
    )


def _counted_on_reply(_nbytes: int) -> None:
    """An image message's bytes count once its reply says the device took them."""


async def identify_device(
    link: Link, options: BootOptions | None = None
) -> tuple[DeviceIdentity, list[LogPacket]]:
    """Identification alone: the control request, one Id exchange, nothing else.

    Uses the loader host's own rules (reply classification, Log packets, the
    identification deadline), so a device is identified the same way here as
    in a boot; an extra Id exchange before a boot is harmless (protocol.md).

    SimpleIO devices only: the Lumia and UFP loaders have no Id exchange and no
    unique ID, and nothing is sent to them here.

    :raises ~parallel_flash.errors.TransportError: no answer in time
    :raises ~parallel_flash.errors.ProtocolError: an answer that is not an Id
        reply, or a device of another loader
    """
    options = options or BootOptions()
    loader = loader_for(*link.usb_ids) or Loader.SIMPLEIO
    if loader is not Loader.SIMPLEIO:
        raise RemoteProtocolError(
            f"{link.port}: a {loader} device has no Id exchange and no unique ID"
        )
    # The image does not matter before the WIM opcode; any valid lengths do.
    setup = HostSetup(
        image=ImageShape(sdi_length=0, wim_length=1),
        max_packet_size=link.max_packet_size,
        timeouts=options.timeouts,
    )
    host = options.hosts[Loader.SIMPLEIO](setup)
    limit = host.stage_timeout or options.id_timeout
    deadline = math.inf
    logs: list[LogPacket] = []

    def left(timeout: float) -> float:
        nonlocal deadline
        if deadline == math.inf:  # from the first read on (sends are bounded per transfer)
            deadline = time.monotonic() + limit
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            extra = f"; {host.log_count} Log packets received" if host.log_count else ""
            raise TransferTimeout(f"identification exceeded its deadline of {limit:g} s{extra}")
        return min(timeout, remaining)

    while host.identity is None:
        action = host.next_action()
        if isinstance(action, SendControl):
            request = action.request
            await link.control_out(
                request.request_type, request.request, request.value, request.index,
                timeout=action.timeout,
            )
            host.completed()
        elif isinstance(action, SendBulk):
            await link.bulk_out(action.data, timeout=action.timeout, zero_packet=action.zero_packet)
            host.completed()
        elif isinstance(action, ReadBulk):
            data = await link.bulk_in(action.size, timeout=left(action.timeout))
            host.received(data)
            for packet in host.pop_logs():
                if len(logs) < MAX_KEPT_LOGS:
                    logs.append(packet)
        else:  # pragma: no cover - a host must identify before anything else
            raise LocalProtocolError(f"host wants {type(action).__name__} before identifying")
    identity = host.identity
    assert identity is not None  # the loop ends once the host has it
    return identity, logs


# -- many devices ----------------------------------------------------------------------


class StopReason(enum.Enum):
    """Why a run ended before its devices did (None in :class:`LineResult` = it did not)."""

    #: Ctrl-C: the operator interrupted the run (exit 130).
    INTERRUPT = "interrupted (SIGINT)"
    #: SIGTERM: the end of a shift (systemd stop); a normal end.
    TERMINATE = "end of shift (SIGTERM)"
    #: SIGHUP: the terminal or SSH session closed; a normal end.
    HANGUP = "terminal closed (SIGHUP)"
    #: The report could not be written: no new device was started.
    REPORT_FAILED = "the report could not be written"


@dataclass(frozen=True, slots=True)
class LineCounters:
    """The run so far, by outcome (what the operator's summary line says)."""

    booted: int = 0
    failed: int = 0
    interrupted: int = 0
    in_progress: int = 0
    #: Image bytes sent to every device counted, finished or not.
    bytes_sent: int = 0

    @property
    def total(self) -> int:
        return self.booted + self.failed + self.interrupted + self.in_progress

    def plus(self, record: DeviceRecord) -> LineCounters:
        """These counters with one more (finished) record."""
        outcome = record.outcome
        return LineCounters(
            booted=self.booted + (outcome is Outcome.BOOTED),
            failed=self.failed + (outcome is Outcome.FAILED),
            interrupted=self.interrupted + (outcome is Outcome.INTERRUPTED),
            in_progress=self.in_progress + (outcome is Outcome.IN_PROGRESS),
            bytes_sent=self.bytes_sent + record.bytes_done,
        )

    @classmethod
    def of(cls, records: Sequence[DeviceRecord]) -> LineCounters:
        """Counted from the records (the engine may append while this runs)."""
        counters = cls()
        for record in list(records):
            counters = counters.plus(record)
        return counters


@dataclass(slots=True)
class LineResult:
    """What a run produced: one-shot, demo and station alike."""

    #: Records still held (a station drops finished ones: the report is the history).
    records: list[DeviceRecord] = field(default_factory=list)
    stop: StopReason | None = None
    #: Counters over every device of the run, including records no longer held
    #: (kept by a station); None = count :attr:`records`.
    counters: LineCounters | None = None
    #: What went wrong with the report, if anything did.
    report_error: str | None = None

    @property
    def totals(self) -> LineCounters:
        if self.counters is not None:
            return self.counters
        return LineCounters.of(self.records)

    @property
    def interrupted(self) -> bool:
        return self.stop is not None

    @property
    def booted(self) -> int:
        return self.totals.booted

    @property
    def failed(self) -> int:
        return self.totals.failed

    @property
    def all_booted(self) -> bool:
        totals = self.totals
        return totals.total > 0 and totals.booted == totals.total


@dataclass(frozen=True, slots=True)
class Unopened:
    """A device that was found but could not be opened: it still gets a record."""

    port: str
    reason: str


async def boot_line(
    links: Sequence[Link | Unopened],
    image: ImageBuffer | ImageSet,
    *,
    options: BootOptions | None = None,
    observer: LineObserver | None = None,
    records: list[DeviceRecord] | None = None,
) -> list[DeviceRecord]:
    """Boot every link in parallel; closes each link as its device finishes.

    An :class:`Unopened` entry becomes a failed record with its reason, so
    every device found ends in a record. ``records`` (optional) receives
    each record as its device is added, so a caller interrupted half-way
    still holds every record.
    """
    options = options or BootOptions()
    observer = observer or NullObserver()
    out = records if records is not None else []

    async def one(slot: int, link: Link) -> None:
        record = DeviceRecord(slot=slot, port=link.port)
        out.append(record)
        observer.device_added(record)
        try:
            await boot_device(link, image, record, options, observer)
        finally:
            with anyio.CancelScope(shield=True):
                await link.aclose()

    async with anyio.create_task_group() as group:
        for slot, link in enumerate(links, start=1):
            if isinstance(link, Unopened):
                record = DeviceRecord(slot=slot, port=link.port)
                out.append(record)
                observer.device_added(record)
                finish_record(
                    record, observer, DeviceState.FAILED, link.reason, FailureReason.USB_ERROR
                )
                continue
            group.start_soon(one, slot, link)
    return out
