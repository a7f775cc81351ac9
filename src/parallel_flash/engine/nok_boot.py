"""One device's boot through a NOK loader (Lumia MMOS over USB, UFP FFU to RAM).

The engine's pipeline for these loaders: it drives the sans-IO
:class:`~.protocol.nokia.lumia.LumiaMmosHost` or
:class:`~.protocol.nokia.ufp.UfpRamBootHost` over a
:class:`~.transport.base.Link` and keeps the device's
:class:`~.records.DeviceRecord` and the observer up to date, exactly as the
SimpleIO pipeline does: it never raises for a device failure, the record
ends BOOTED or FAILED with a reason, and only cancellation propagates.

One request, one reply: each image message is one OUT transfer (assembled
in a per-device buffer, since a message is a head and an image slice in one
transfer) and is followed by one read before anything else is sent. Image
messages go through :meth:`Link.stream_out` with one transfer in flight, so
they share the usbfs budget and the simulated link rate with everyone else.
"""

from __future__ import annotations

import logging
import time

import anyio

from ..errors import (
    DeviceBootError,
    DeviceDisconnected,
    DeviceRefused,
    ProtocolError,
    TransferTimeout,
    TransportError,
)
from ..image import ImageBuffer
from ..protocol.host import Finished, ReadBulk, SendBulk
from ..protocol.nokia.host import AwaitReturn, NokTimeouts, SendFinal, SendImageMessage
from ..protocol.nokia.lumia import LumiaMmosHost
from ..protocol.nokia.ufp import UfpRamBootHost
from ..protocol.selection import Loader
from ..transport.base import Link, OutChunk
from .records import DeviceRecord, DeviceState, FailureReason, LineObserver, failure_reason

__all__ = ("boot_nok_device", "nok_host")

logger = logging.getLogger(__name__)

NokHostType = LumiaMmosHost | UfpRamBootHost


def nok_host(
    loader: Loader, image: ImageBuffer, timeouts: NokTimeouts | None = None
) -> NokHostType:
    """The host machine for ``loader`` and ``image``; the caller checked the file type."""
    if loader is Loader.LUMIA:
        return LumiaMmosHost(image_length=image.total_length, timeouts=timeouts)
    if loader is Loader.UFP:
        assert image.ffu_header_length is not None and image.ffu_chunk_size is not None
        return UfpRamBootHost(
            ffu_length=image.total_length,
            header_length=image.ffu_header_length,
            chunk_size=image.ffu_chunk_size,
            timeouts=timeouts,
        )
    raise ValueError(f"{loader} is not a NOK loader")


async def boot_nok_device(
    link: Link,
    image: ImageBuffer,
    record: DeviceRecord,
    observer: LineObserver,
    loader: Loader,
    timeouts: NokTimeouts | None = None,
) -> None:
    """Boot one device over an opened link through ``loader``; the caller closes the link."""
    pipeline = _NokPipeline(link, image, record, observer, nok_host(loader, image, timeouts))
    try:
        await pipeline.run()
    except anyio.get_cancelled_exc_class():
        pipeline.finish(error="interrupted", reason=FailureReason.INTERRUPTED)
        raise


class _NokPipeline:
    def __init__(
        self,
        link: Link,
        image: ImageBuffer,
        record: DeviceRecord,
        observer: LineObserver,
        host: NokHostType,
    ) -> None:
        self.link = link
        self.image = image
        self.record = record
        self.observer = observer
        self.host = host
        self.buffer = bytearray()
        record.bytes_total = image.total_length

    async def run(self) -> None:
        host, link = self.host, self.link
        try:
            while True:
                action = host.next_action()
                waiting_for = host.waiting_for
                if isinstance(action, SendBulk):
                    self._state(DeviceState.IDENTIFYING)
                    await link.bulk_out(action.data, timeout=action.timeout, zero_packet=False)
                    host.completed()
                elif isinstance(action, ReadBulk):
                    data = await link.bulk_in(action.size, timeout=action.timeout)
                    host.received(data)
                    self._after_reply()
                elif isinstance(action, SendImageMessage):
                    await self._send_image(action)
                    host.completed()
                elif isinstance(action, SendFinal):
                    self._state(DeviceState.AWAITING_STATUS)
                    try:
                        await link.bulk_out(action.data, timeout=action.timeout)
                    except TransportError as exc:
                        logger.debug("%s: %s after NOKR (a reset in progress): %s",
                                     self.record.port, type(exc).__name__, exc)
                    host.completed()
                elif isinstance(action, AwaitReturn):
                    await self._await_return(action)
                elif isinstance(action, Finished):
                    self.record.status = action.status
                    self.finish()
                    return
        except DeviceBootError as exc:
            self.record.status = exc.status
            self.finish(error=str(exc), reason=FailureReason.DEVICE_STATUS)
        except DeviceRefused as exc:
            before = "before sending any image byte" if host.image_bytes_sent == 0 else (
                f"after {host.image_bytes_sent} image bytes"
            )
            self.finish(error=f"refused {before}: {exc}", reason=FailureReason.REFUSED)
        except (ProtocolError, TransportError) as exc:
            host.abort()
            self.finish(error=self._describe(exc, waiting_for), reason=failure_reason(exc))

    async def _send_image(self, action: SendImageMessage) -> None:
        record = self.record
        if record.stream_started is None:
            record.stream_started = time.monotonic()
        self._state(DeviceState.SENDING_WIM)
        size = action.message_length
        if len(self.buffer) < size:
            self.buffer = bytearray(size)
        head = len(action.head)
        buffer = self.buffer
        buffer[:head] = action.head
        end = head + action.length
        buffer[head:end] = self.image.view[action.offset : action.offset + action.length]
        if action.padding:
            buffer[end:size] = bytes(action.padding)
        with memoryview(buffer) as view:
            await self.link.stream_out(
                [OutChunk(view[:size], False)],
                in_flight=1,
                stall_timeout=action.timeout,
                on_progress=_ignore,
            )
        record.bytes_done += action.length
        if record.bytes_done >= record.bytes_total:
            record.stream_finished = time.monotonic()
            self._state(DeviceState.AWAITING_STATUS)

    async def _await_return(self, action: AwaitReturn) -> None:
        ids = await self.link.wait_return(action.timeout)
        if ids is None:
            raise TransferTimeout(
                f"the device did not come back in {action.what} on its port within "
                f"{action.timeout:g} s"
            )
        self.host.returned(*ids)

    def _after_reply(self) -> None:
        info = self.host.info
        record = self.record
        if info is not None and not record.name and not info.unsupported:
            major, minor = info.app_version
            label = _LOADER_NAMES.get(record.loader, record.loader)
            record.name = info.platform_id or f"{label} {info.app_name} {major}.{minor}"
            self.observer.device_changed(record)

    def _state(self, state: DeviceState) -> None:
        record = self.record
        if record.state is not state and not record.state.finished:
            record.state = state
            self.observer.device_changed(record)

    def _describe(self, exc: ProtocolError | TransportError, waiting_for: str) -> str:
        detail = str(exc).removeprefix(f"{self.record.port}: ")
        if isinstance(exc, DeviceDisconnected):
            return f"disconnected while waiting for {waiting_for}"
        if isinstance(exc, TransferTimeout):
            if "come back" in detail:
                return detail
            return f"timed out waiting for {waiting_for}: {detail}"
        return f"{detail} (while waiting for {waiting_for})"

    def finish(self, *, error: str | None = None, reason: FailureReason | None = None) -> None:
        record = self.record
        if record.state.finished:
            return
        record.finished = time.monotonic()
        if error is None:
            record.state = DeviceState.BOOTED
        else:
            # A cancelled device is interrupted: an outcome of its own, not a failure.
            interrupted = reason is FailureReason.INTERRUPTED
            record.state = DeviceState.INTERRUPTED if interrupted else DeviceState.FAILED
            record.error = error
            record.reason = reason or FailureReason.USB_ERROR
            logger.info("%s: failed: %s", record.port, error)
        self.observer.device_finished(record)


_LOADER_NAMES = {Loader.LUMIA.value: "Lumia", Loader.UFP.value: "UFP"}


def _ignore(_nbytes: int) -> None:
    """Progress is counted per message (its image bytes), not per transfer byte."""
