"""The engine: one async pipeline per device, all in one anyio task group.

:func:`boot_device` picks a device's loader by its USB IDs, the image that
loader boots, and runs attempts (:class:`~.attempt.DeviceAttempt`: a loader
host from :mod:`parallel_flash.protocol.loader` driven over a
:class:`~parallel_flash.transport.base.Link`) until one boots the device or
none may be retried. It never raises for a device failure: the record ends
BOOTED or FAILED with a reason, so one device going wrong cannot disturb the
others in the task group. Cancellation is the one thing that propagates; the
record is finished as INTERRUPTED first, so the report still has it.
:func:`boot_line` runs every device of a line in one task group.

This module is the engine's face: it also offers the options
(:mod:`.options`) and the run's results (:mod:`.results`) its callers use.
The engine knows nothing of libusb, rich, argparse or exit codes.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

import anyio

from ..errors import (
    InputError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    TransferTimeout,
    TransportError,
)
from ..image import ImageBuffer, ImageSet
from ..protocol.actions import ReadBulk, SendBulk, SendControl
from ..protocol.loader import DeviceIdentity, HostSetup, ImageShape
from ..protocol.messages import LogPacket
from ..protocol.selection import Loader, loader_for, refusal
from ..transport.base import Link
from .attempt import Admit, AttemptEnd, AttemptFailure, DeviceAttempt, send_command
from .digest import note_image_digest
from .options import DEFAULT_IN_FLIGHT, MAX_IN_FLIGHT, BootOptions
from .records import (
    MAX_KEPT_LOGS,
    Attempt,
    DeviceRecord,
    DeviceState,
    FailureReason,
    LineObserver,
    NullObserver,
)
from .results import LineCounters, LineResult, StopReason, Unopened

__all__ = (
    "DEFAULT_IN_FLIGHT",
    "MAX_IN_FLIGHT",
    "AttemptEnd",
    "BootOptions",
    "LineCounters",
    "LineResult",
    "StopReason",
    "Unopened",
    "boot_device",
    "boot_line",
    "check_images",
    "end_record",
    "finish_record",
    "identify_device",
)

logger = logging.getLogger(__name__)

#: Pause before retrying a device on the same link (a device that just
#: refused may need a moment; Microsoft's recovery waits 1 s).
RETRY_PAUSE = 0.5
#: Before a retry, stale replies are read off the pipe: at most this many, for
#: at most this long, each read giving up after DRAIN_READ_TIMEOUT of silence.
DRAIN_PACKETS = 1024
DRAIN_SECONDS = 3.0
DRAIN_READ_TIMEOUT = 0.1


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
        _refuse_files(record, observer, loader, image, await note_image_digest(record, image))
        return AttemptEnd.DEVICE
    record.image = chosen
    while True:
        attempt = DeviceAttempt(link, loader, chosen, record, options, observer, admit)
        started = time.monotonic()
        try:
            await attempt.run()
        except AttemptFailure as failure:
            retry = (
                failure.end is AttemptEnd.BEFORE_IMAGE and len(record.attempts) < options.retries
            )
            ended: float | None = None
            if not retry and (final or failure.end is not AttemptEnd.TRANSPORT):
                ended = await note_image_digest(record, chosen)  # the record ends below
            end = _after_failure(record, observer, failure, started, retry, final, ended)
            if end is not None:
                return end
            logger.info(
                "%s: attempt %d failed (%s); retrying",
                record.port, len(record.attempts), failure.reason,
            )
            await anyio.sleep(RETRY_PAUSE)
            await _drain(link, attempt.host.reply_size)
            continue
        except anyio.get_cancelled_exc_class():
            finish_record(record, observer, DeviceState.INTERRUPTED, "interrupted")
            raise
        if record.attempts:
            record_attempt(record, None, started)
        await end_record(record, observer, chosen, DeviceState.BOOTED)
        return AttemptEnd.BOOTED


def _after_failure(
    record: DeviceRecord,
    observer: LineObserver,
    failure: AttemptFailure,
    started: float,
    retry: bool,
    final: bool,
    ended: float | None,
) -> AttemptEnd | None:
    """Note a failed attempt: None = retry on the same link, else how the device ended.

    Only a failure before any image byte is retried here (``retry``); with
    ``final=False`` a transport failure leaves the record unfinished for the caller.
    """
    if retry or (not final and failure.end is AttemptEnd.TRANSPORT):
        record_attempt(record, failure.reason, started)
        record.error = failure.reason
        record.reason = failure.counted
        return None if retry else failure.end
    if record.attempts:
        record_attempt(record, failure.reason, started)
    finish_record(
        record, observer, DeviceState.FAILED, failure.reason, failure.counted, ended=ended
    )
    return failure.end


def _refuse_files(
    record: DeviceRecord,
    observer: LineObserver,
    loader: Loader,
    image: ImageBuffer | ImageSet,
    ended: float,
) -> None:
    """A device whose loader can take none of the files fails, saying what it needs."""
    given = image.images if isinstance(image, ImageSet) else (image,)
    finish_record(
        record, observer, DeviceState.FAILED,
        refusal(loader, [(one.wim_path, one.kind) for one in given]),
        FailureReason.REFUSED,
        ended=ended,
    )


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
    *,
    ended: float | None = None,
) -> None:
    """End ``record`` once (BOOTED, FAILED or INTERRUPTED) and tell the observer.

    ``reason`` is the counted reason of a failure (default: the record's own,
    else a USB error); an interruption counts as :attr:`FailureReason.INTERRUPTED`.
    ``ended``: when the device ended, if earlier than now (before the digest wait).
    """
    if record.state.finished:
        return
    record.finished = ended if ended is not None else time.monotonic()
    record.state = state
    record.error = error
    record.reason = counted_reason(record, state, reason)
    if state is not DeviceState.BOOTED:
        logger.info("%s: %s: %s", record.port, state.value, error)
    observer.device_finished(record)


async def end_record(
    record: DeviceRecord,
    observer: LineObserver,
    image: ImageBuffer | ImageSet,
    state: DeviceState,
    error: str | None = None,
    reason: FailureReason | None = None,
) -> None:
    """:func:`finish_record`, once the record has its image's digest (awaited off the loop).

    The record keeps the time the device ended, not the time the digest came.
    """
    ended = await note_image_digest(record, image)
    finish_record(record, observer, state, error, reason, ended=ended)


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
        if isinstance(action, SendControl | SendBulk):
            await send_command(link, action)
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

    async def unopened(record: DeviceRecord, reason: str) -> None:
        # Its own task: the others start streaming while this one waits for the digest.
        await end_record(
            record, observer, image, DeviceState.FAILED, reason, FailureReason.USB_ERROR
        )

    async with anyio.create_task_group() as group:
        for slot, link in enumerate(links, start=1):
            if isinstance(link, Unopened):
                record = DeviceRecord(slot=slot, port=link.port)
                out.append(record)
                observer.device_added(record)
                group.start_soon(unopened, record, link.reason)
                continue
            group.start_soon(one, slot, link)
    return out
