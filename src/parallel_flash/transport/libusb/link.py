"""One device in flashing mode over libusb: single transfers, the stream, closing.

Shutdown order, always: cancel transfers and await them, release the
interface, close the handle. (The event thread and the context are the
:class:`~.context.UsbContext`'s to stop, after every link.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import anyio
import usb1

from ...errors import TransferTimeout, TransportError
from ...logs import TRACE, HexDump
from ..base import Link, OutChunk, ProgressCallback
from ..usbfs import UsbfsBudget
from .devices import INTERFACE, UsbDeviceInfo, simpleio_endpoints
from .errors import is_memory_refusal, status_error, submit_error
from .events import EventThread
from .stream import REFUSAL_BACKOFF_MAX, OutStream, StreamSlot
from .transfer import Cancellable, Transfer, Wake, await_cancelled, ignore, milliseconds, writable
from .zero_packet import ZeroPacketMode

if TYPE_CHECKING:
    from .context import UsbContext

__all__ = ("UsbLink",)

logger = logging.getLogger(__name__)

#: Seconds past its own libusb timeout after which a single transfer whose
#: completion never arrived is given up (a safety net: libusb always calls back).
COMPLETION_GRACE = 2.0
#: Seconds between device-list scans while waiting for a device to come back on its port.
RETURN_POLL_INTERVAL = 0.1


class _ZeroPacketRefused(Exception):
    """libusb refused a transfer flagged ADD_ZERO_PACKET; send the ZLP as a transfer."""


class UsbLink(Link):
    """One device in flashing mode over libusb, interface 0 claimed."""

    def __init__(
        self,
        owner: UsbContext,
        info: UsbDeviceInfo,
        handle: usb1.USBDeviceHandle,
        events: EventThread,
        *,
        endpoint_in: int,
        endpoint_out: int,
        max_packet_size: int,
    ) -> None:
        self.port = info.port
        self.info = info
        self.usb_ids = (info.vendor_id, info.product_id)
        self.max_packet_size = max_packet_size
        self.endpoint_in = endpoint_in
        self.endpoint_out = endpoint_out
        self.budget = owner.budget
        #: The event thread (and libusb context) this device's transfers complete on.
        self.events = events
        self.loop = asyncio.get_running_loop()
        self.zero_packet = ZeroPacketMode(info.port)
        self._owner = owner
        self._handle = handle
        self._closed = False
        #: Transfers whose cancellation never completed; the handle is leaked with them.
        self.leaked: list[Cancellable] = []
        self._single: Transfer | None = None
        self._stream_pool: list[StreamSlot] = []
        self._stream: OutStream | None = None
        #: Submissions refused for usbfs memory and retried (tests and benchmarks).
        self.refusals = 0

    @classmethod
    async def open(
        cls, owner: UsbContext, info: UsbDeviceInfo, device: usb1.USBDevice, events: EventThread
    ) -> UsbLink:
        """Open ``device`` (``info`` as seen in ``events``' context) and claim interface 0.

        libusb_open (like libusb_close) takes the context's event lock, so it
        waits for the event thread's current round of event handling -- one
        sweep over every device of that thread: it runs on a worker thread,
        never blocking the loop that serves the devices already streaming.
        Shielded, so a cancellation never loses a handle that was opened:
        the link is returned and the caller closes it.
        """
        endpoint_in, endpoint_out, mps = simpleio_endpoints(info)
        with anyio.CancelScope(shield=True):
            handle = await anyio.to_thread.run_sync(_open_and_claim, info, device, owner.budget)
        logger.debug(
            "%s: opened %s (bus %d address %d) on %s, EP IN 0x%02x, EP OUT 0x%02x, "
            "wMaxPacketSize %d",
            info.port, info.usb_id, info.bus, info.address, events.name,
            endpoint_in, endpoint_out, mps,
        )
        return cls(
            owner, info, handle, events,
            endpoint_in=endpoint_in, endpoint_out=endpoint_out, max_packet_size=mps,
        )

    def __repr__(self) -> str:
        return f"<UsbLink {self.port} {self.info.usb_id}{' closed' if self._closed else ''}>"

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError(f"{self.port}: link is closed")

    # -- single transfers ----------------------------------------------------------

    def _single_transfer(self) -> Transfer:
        if self._single is None:
            self._single = Transfer(self._handle, self.loop, self.events)
        return self._single

    async def _perform(self, transfer: Transfer, what: str, timeout: float) -> None:
        """Submit one prepared transfer and wait for it; raises mapped errors."""
        wake = Wake()
        transfer.notify = wake.set
        await self._submit_with_retry(transfer, what, timeout)
        try:
            # libusb times the transfer out itself; this bound only guards
            # against a completion that never reaches us.
            with anyio.move_on_after(timeout + COMPLETION_GRACE):
                while transfer.pending:
                    await wake.wait()
            if transfer.pending:
                self.leaked += await await_cancelled([transfer], wake)
                raise TransferTimeout(f"libusb never completed the transfer ({what})")
        except TransferTimeout:
            raise
        except BaseException:
            self.leaked += await await_cancelled([transfer], wake)
            raise
        finally:
            transfer.notify = ignore
        if transfer.status != usb1.TRANSFER_COMPLETED:
            raise status_error(transfer.status, what, timeout)

    async def _submit_with_retry(self, transfer: Transfer, what: str, timeout: float) -> None:
        """Submit; a refusal for memory is retried until ``timeout`` has passed."""
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            try:
                transfer.submit()
                return
            except usb1.USBErrorNotSupported:
                if not transfer.usb.isZeroPacketAdded():
                    raise submit_error(usb1.USBErrorNotSupported(), what, self.budget) from None
                raise _ZeroPacketRefused from None
            except usb1.USBError as exc:
                if not is_memory_refusal(exc, self.budget) or time.monotonic() >= deadline:
                    raise submit_error(exc, what, self.budget) from None
                self.refusals += 1
                logger.debug("%s: %s refused for memory, retrying", self.port, what)
            await anyio.sleep(delay)
            delay = min(delay * 2, REFUSAL_BACKOFF_MAX)

    async def control_out(
        self, request_type: int, request: int, value: int, index: int, *, timeout: float
    ) -> None:
        self._check_open()
        what = f"control request {request_type:#04x}/{request:#04x} value {value} index {index}"
        transfer = self._single_transfer()
        transfer.usb.setControl(
            request_type, request, value, index, b"",
            callback=transfer.callback, timeout=milliseconds(timeout),
        )
        logger.log(TRACE, "%s: %s", self.port, what)
        await self._perform(transfer, what, timeout)

    async def bulk_out(
        self, data: bytes | memoryview, *, timeout: float, zero_packet: bool = False
    ) -> None:
        self._check_open()
        logger.log(TRACE, "%s: BULK OUT data=<%s>", self.port, HexDump(data))
        try:
            for piece, flag in self.zero_packet.pieces(writable(data), zero_packet):
                await self._bulk_out_once(piece, flag, timeout)
        except _ZeroPacketRefused:
            self.zero_packet.refused()
            for piece, flag in self.zero_packet.pieces(writable(data), zero_packet):
                await self._bulk_out_once(piece, flag, timeout)

    async def _bulk_out_once(
        self, data: memoryview | bytearray, zero_packet: bool, timeout: float
    ) -> None:
        what = "zero-length packet" if not data else f"bulk OUT of {len(data)} bytes"
        transfer = self._single_transfer()
        transfer.usb.setBulk(
            self.endpoint_out, data, callback=transfer.callback, timeout=milliseconds(timeout)
        )
        transfer.usb.setAddZeroPacket(zero_packet)
        await self._perform(transfer, what, timeout)
        if transfer.actual != len(data):
            raise TransportError(f"device took {transfer.actual} of {len(data)} bytes ({what})")

    async def bulk_in(self, size: int, *, timeout: float) -> bytes:
        self._check_open()
        what = f"bulk IN of up to {size} bytes"
        transfer = self._single_transfer()
        transfer.usb.setBulk(
            self.endpoint_in, size, callback=transfer.callback, timeout=milliseconds(timeout)
        )
        transfer.usb.setAddZeroPacket(False)
        await self._perform(transfer, what, timeout)
        data = bytes(transfer.usb.getBuffer()[: transfer.actual])
        logger.log(TRACE, "%s: BULK IN data=<%s>", self.port, HexDump(data))
        return data

    # -- the stream ----------------------------------------------------------------

    def transfer_size_limit(self, wanted: int) -> int:
        return self.budget.transfer_size_limit(wanted, self._owner.open_links)

    async def stream_out(
        self,
        chunks: Iterable[OutChunk],
        *,
        in_flight: int,
        stall_timeout: float,
        on_progress: ProgressCallback,
    ) -> None:
        self._check_open()
        if in_flight < 1:
            raise ValueError(f"in_flight must be at least 1, not {in_flight}")
        while len(self._stream_pool) < in_flight:
            self._stream_pool.append(StreamSlot(self._handle))
        self._stream = OutStream(
            self, self._stream_pool[:in_flight], iter(chunks), stall_timeout, on_progress
        )
        try:
            await self._stream.run()
        finally:
            self._stream = None

    # -- closing -------------------------------------------------------------------

    async def wait_return(self, timeout: float) -> tuple[int, int] | None:
        """Poll the device list for a new device on this port (a re-enumeration: new address)."""
        deadline = anyio.current_time() + timeout
        while True:
            for device in await self._owner.enumerate():
                if device.port == self.port and device.key != self.info.key:
                    return (device.vendor_id, device.product_id)
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                return None
            await anyio.sleep(min(RETURN_POLL_INTERVAL, remaining))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._owner._forget(self)
        single = [self._single] if self._single is not None else []
        if any(t.pending for t in single):
            wake = Wake()
            for transfer in single:
                transfer.notify = wake.set
            self.leaked += await await_cancelled(single, wake)
        if self._stream is not None:  # closed under a running stream: stop it first
            self.leaked += await self._stream.stop()
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._release_and_close)

    def _release_and_close(self) -> None:
        """Release interface 0, then close the handle (a worker thread: see :meth:`open`)."""
        try:
            self._handle.releaseInterface(INTERFACE)
        except (usb1.USBErrorNoDevice, usb1.USBErrorNotFound):
            pass
        except usb1.USBError as exc:
            logger.debug("%s: releasing interface 0: %s", self.port, exc)
        if self.leaked:
            # Closing the handle would free transfers libusb still owns.
            logger.error(
                "%s: %d transfers never returned from cancellation; leaving the device open",
                self.port,
                len(self.leaked),
            )
            return
        if self._single is not None:
            self._single.drop_buffer()
        for slot in self._stream_pool:
            slot.drop_buffer()
        self._handle.close()
        logger.debug("%s: closed", self.port)


def _open_and_claim(
    info: UsbDeviceInfo, device: usb1.USBDevice, budget: UsbfsBudget
) -> usb1.USBDeviceHandle:
    """libusb_open and claim interface 0 (blocking: runs on a worker thread)."""
    try:
        handle = device.open()
    except usb1.USBError as exc:
        raise submit_error(exc, f"{info.port}: opening {info.usb_id}", budget) from None
    try:
        with contextlib.suppress(usb1.USBErrorNotSupported, usb1.USBErrorNotFound):
            handle.setAutoDetachKernelDriver(True)
        try:
            handle.claimInterface(INTERFACE)
        except usb1.USBError as exc:
            raise submit_error(exc, f"{info.port}: claiming interface 0", budget) from None
    except BaseException:
        handle.close()
        raise
    return handle
