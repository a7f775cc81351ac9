"""The engine: one async pipeline per device, all in one anyio task group.

:func:`boot_device` drives the sans-IO :class:`~.protocol.host.WimBootHost`
over a :class:`~.transport.base.Link`, mirrors its progress into the
device's :class:`~.events.DeviceRecord` and tells the observer. It never
raises for a device failure: the record ends BOOTED or FAILED with a reason,
so one device going wrong cannot disturb the others in the task group.
Cancellation (Ctrl-C) is the one thing that propagates; the record is
finished as "interrupted" first, so the report still has it.

The engine knows nothing of libusb or rich.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import anyio

from ..errors import (
    DeviceBootError,
    DeviceDisconnected,
    InputError,
    ProtocolError,
    TransferTimeout,
    TransportError,
)
from ..image import ImageBuffer, ImageSet
from ..protocol.host import (
    Finished,
    HostPhase,
    HostTimeouts,
    ReadBulk,
    SendBulk,
    SendControl,
    StreamImage,
    TransferPlan,
    WimBootHost,
)
from ..protocol.messages import REPLY_BUFFER_SIZE, STANDARD_TRANSFER_SIZE, parse_status
from ..protocol.nokia.host import NokTimeouts
from ..protocol.selection import FILE_TYPE_NAMES, Loader, loader_for
from ..transport.base import Link, OutChunk
from .nok_boot import boot_nok_device
from .records import (
    DeviceLog,
    DeviceRecord,
    DeviceState,
    FailureReason,
    LineObserver,
    NullObserver,
    failure_reason,
)

__all__ = (
    "DEFAULT_IN_FLIGHT",
    "BootOptions",
    "LineResult",
    "boot_device",
    "boot_line",
    "check_images",
    "run_interruptible",
)

logger = logging.getLogger(__name__)

#: OUT transfers queued per device. Four 1 MiB transfers keep a USB 2.0 link
#: busy through host turnaround; 8 devices x 4 x 1 MiB = 32 MiB, which is why
#: the libusb transport shrinks this to fit the kernel's usbfs cap (16 MB by
#: default) across all devices.
DEFAULT_IN_FLIGHT = 4

_PHASE_STATES = {
    HostPhase.CONTROL: DeviceState.IDENTIFYING,
    HostPhase.SEND_ID: DeviceState.IDENTIFYING,
    HostPhase.READ_ID: DeviceState.IDENTIFYING,
    HostPhase.SEND_RESET: DeviceState.RESETTING,
    HostPhase.READ_RESET: DeviceState.RESETTING,
    HostPhase.SEND_WIM_OPCODE: DeviceState.SENDING_SDI,
    HostPhase.SEND_HEADER: DeviceState.SENDING_SDI,
    HostPhase.STREAM: DeviceState.SENDING_SDI,
    HostPhase.READ_STATUS: DeviceState.AWAITING_STATUS,
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
    #: The Lumia and UFP loaders' waits (loaders.md A.1; the CLI keeps the defaults).
    nok_timeouts: NokTimeouts = field(default_factory=NokTimeouts)

    def __post_init__(self) -> None:
        if self.transfer_size is not None and not 0 < self.transfer_size <= 0xFFFF_FFFF:
            raise InputError(
                f"--transfer-size must be between 1 and 4294967295, not {self.transfer_size}"
            )
        if not 1 <= self.in_flight <= 64:
            raise InputError(f"--in-flight must be between 1 and 64, not {self.in_flight}")
        for name in ("id_timeout", "reset_timeout", "transfer_timeout", "status_timeout"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                flag = name.replace("_", "-")
                raise InputError(f"--{flag} must be a positive number of seconds, not {value}")

    @property
    def timeouts(self) -> HostTimeouts:
        return HostTimeouts(
            identify=self.id_timeout,
            reset=self.reset_timeout,
            transfer=self.transfer_timeout,
            status=self.status_timeout,
        )


# -- one device ----------------------------------------------------------------------


async def boot_device(
    link: Link,
    image: ImageBuffer | ImageSet,
    record: DeviceRecord,
    options: BootOptions | None = None,
    observer: LineObserver | None = None,
) -> DeviceRecord:
    """Boot one device over an opened link; the caller owns (and closes) the link.

    The device's USB IDs choose its loader (:mod:`.protocol.selection`); a
    loader that cannot take this image (or any image of an :class:`ImageSet`)
    fails the device, saying what it needs.
    """
    options = options or BootOptions()
    observer = observer or NullObserver()
    loader = loader_for(*link.usb_ids) or Loader.SIMPLEIO
    record.loader = loader.value
    chosen = _image_for(loader, image)
    if chosen is None:
        record.finished = time.monotonic()
        record.state = DeviceState.FAILED
        record.reason = FailureReason.REFUSED
        given = image.images if isinstance(image, ImageSet) else (image,)
        kinds = " and ".join(
            f"{one.wim_path} is {FILE_TYPE_NAMES.get(one.kind, one.kind)}" for one in given
        )
        record.error = f"a {loader.value} device needs {loader.needs}; {kinds}"
        observer.device_finished(record)
        return record
    if isinstance(image, ImageSet):
        record.image_sha256 = chosen.sha256
    if loader is not Loader.SIMPLEIO:
        await boot_nok_device(link, chosen, record, observer, loader, options.nok_timeouts)
        return record
    pipeline = _Pipeline(link, chosen, record, options, observer)
    try:
        await pipeline.run()
    except anyio.get_cancelled_exc_class():
        pipeline.finish(error="interrupted", reason=FailureReason.INTERRUPTED)
        raise
    return record


class _Pipeline:
    """The loop that turns host actions into link calls for one device."""

    def __init__(
        self,
        link: Link,
        image: ImageBuffer,
        record: DeviceRecord,
        options: BootOptions,
        observer: LineObserver,
    ) -> None:
        self.link = link
        self.image = image
        self.record = record
        self.options = options
        self.observer = observer
        self.host = WimBootHost(
            sdi_length=image.sdi_length,
            wim_length=image.wim_length,
            max_packet_size=link.max_packet_size,
            transfer_size=options.transfer_size,
            max_transfer_size=link.transfer_size_limit(
                options.transfer_size or STANDARD_TRANSFER_SIZE
            ),
            timeouts=options.timeouts,
        )
        record.bytes_total = image.total_length
        #: The phase of the action under way, kept for error messages.
        self.waiting_phase = HostPhase.CONTROL

    async def run(self) -> None:
        host, link, record = self.host, self.link, self.record
        try:
            while True:
                action = host.next_action()
                self.waiting_phase = host.phase
                self._follow_phase()
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
                    data = await link.bulk_in(action.size, timeout=action.timeout)
                    try:
                        host.received(data)
                    finally:
                        self._after_reply()
                elif isinstance(action, StreamImage):
                    await self._stream(action)
                    host.completed()
                elif isinstance(action, Finished):
                    record.status = action.status
                    self.finish()
                    return
        except DeviceBootError as exc:
            record.status = exc.status
            self.finish(error=str(exc), reason=FailureReason.DEVICE_STATUS)
        except (ProtocolError, TransportError) as exc:
            host.abort()
            error = await self._describe(exc)
            # A stalled stream whose device then said why is the device's verdict.
            reason = (
                FailureReason.DEVICE_STATUS if record.status is not None else failure_reason(exc)
            )
            self.finish(error=error, reason=reason)

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
            _chunks(self.image, action.plan),
            in_flight=in_flight,
            stall_timeout=action.timeout * in_flight,
            on_progress=progress,
        )
        record.stream_finished = time.monotonic()
        observer.device_changed(record)

    def _follow_phase(self) -> None:
        state = _PHASE_STATES.get(self.host.phase)
        record = self.record
        if state is None or state is record.state:
            return
        if state is DeviceState.SENDING_SDI and self.image.sdi_length == 0:
            state = DeviceState.SENDING_WIM
        if record.state is DeviceState.SENDING_WIM and state is DeviceState.SENDING_SDI:
            return
        record.state = state
        self.observer.device_changed(record)

    def _after_reply(self) -> None:
        record = self.record
        for packet in self.host.pop_logs():
            log = DeviceLog(level=packet.level, event_id=packet.event_id, text=packet.text)
            record.logs.append(log)
            self.observer.device_log(record, log)
        identity = self.host.identity
        if identity is not None and not record.name:
            record.name = identity.friendly_name
            record.unique_id = identity.unique_id_text
            self.observer.device_changed(record)

    async def _describe(self, exc: ProtocolError | TransportError) -> str:
        """A reason that names what we were waiting for, and the device's status if it has one."""
        phase = self.waiting_phase
        # Transports name the port in their messages; the record already does.
        detail = str(exc).removeprefix(f"{self.record.port}: ")
        if isinstance(exc, DeviceDisconnected):
            return f"disconnected while waiting for {phase.value}"
        if isinstance(exc, TransferTimeout):
            reason = f"timed out waiting for {phase.value}: {detail}"
            if phase is HostPhase.STREAM:
                status = await self._status_after_stall()
                if status is not None:
                    self.record.status = status
                    reason = f"WIM boot failure status 0x{status & 0xFFFFFFFF:08x}; {reason}"
            return reason
        return f"{detail} (while waiting for {phase.value})"

    async def _status_after_stall(self) -> int | None:
        """A device that stopped reading may already have said why (e.g. out of RAM).

        Only an IN read: nothing is *sent* between the data and the status.
        """
        try:
            with anyio.fail_after(self.options.transfer_timeout + 0.5):
                data = await self.link.bulk_in(
                    REPLY_BUFFER_SIZE, timeout=self.options.transfer_timeout
                )
            return parse_status(data)
        except (TransportError, ProtocolError, TimeoutError):
            return None

    def finish(self, *, error: str | None = None, reason: FailureReason | None = None) -> None:
        record = self.record
        if record.state.finished:
            return
        record.finished = time.monotonic()
        if error is None:
            record.state = DeviceState.BOOTED
        else:
            record.state = DeviceState.FAILED
            record.error = error
            record.reason = reason or FailureReason.USB_ERROR
            logger.info("%s: failed: %s", record.port, error)
        self.observer.device_finished(record)


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


def _chunks(image: ImageBuffer, plan: TransferPlan) -> Iterator[OutChunk]:
    view = image.view
    for offset, length, zero_packet in plan:
        yield OutChunk(view[offset : offset + length], zero_packet)


# -- many devices ----------------------------------------------------------------------


@dataclass(slots=True)
class LineResult:
    """What a run of the whole line produced."""

    records: list[DeviceRecord] = field(default_factory=list)
    interrupted: bool = False

    @property
    def booted(self) -> int:
        return sum(record.ok for record in self.records)

    @property
    def failed(self) -> int:
        return len(self.records) - self.booted

    @property
    def all_booted(self) -> bool:
        return bool(self.records) and self.failed == 0


async def boot_line(
    links: Sequence[Link],
    image: ImageBuffer | ImageSet,
    *,
    options: BootOptions | None = None,
    observer: LineObserver | None = None,
    records: list[DeviceRecord] | None = None,
) -> list[DeviceRecord]:
    """Boot every link in parallel; closes each link as its device finishes.

    ``records`` (optional) receives each record as its device is added, so a
    caller interrupted half-way still holds every record.
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
            group.start_soon(one, slot, link)
    return out


T = TypeVar("T")


async def run_interruptible(work: Callable[[], Awaitable[T]]) -> tuple[T | None, bool]:
    """Run ``work`` until it ends or SIGINT/SIGTERM arrives; returns (result, interrupted).

    On a signal every transfer is cancelled (the task group's cancel scope),
    each pipeline finishes its record as "interrupted", and this returns
    promptly so the caller can write its report and exit 130.
    """
    interrupted = False
    result: T | None = None

    async def watch(scope: anyio.CancelScope) -> None:
        nonlocal interrupted
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                logger.warning("received %s: cancelling every transfer", name)
                interrupted = True
                scope.cancel()
                return

    async def main(scope: anyio.CancelScope) -> None:
        nonlocal result
        result = await work()
        scope.cancel()

    async with anyio.create_task_group() as group:
        # Signal handlers can only be installed from the main thread; a caller
        # running us elsewhere handles interruption itself (cancel the scope).
        if threading.current_thread() is threading.main_thread():
            group.start_soon(watch, group.cancel_scope)
        group.start_soon(main, group.cancel_scope)
    return result, interrupted
