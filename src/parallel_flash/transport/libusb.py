"""Real USB through python-libusb1: the only module that imports ``usb1``.

Threading model (usb-testing.md, Glasgow's ``support/usb/libusb1.py``):

* One :class:`usb1.USBContext` per process, shared by every
  :class:`UsbContext` that is open at the same time (reference counted).
* One *non-daemon* thread loops ``handleEventsTimeout``; every transfer
  callback runs there (after a spurious wake-up -- umockdev's emulated fd is
  always "ready" -- it naps 0.5 ms rather than spin and hog the GIL). A
  callback only reads the transfer's status and
  length and hands them to the event loop with ``call_soon_threadsafe`` --
  it never blocks, never calls libusb synchronously, never closes a transfer
  and catches everything (ctypes would print and swallow an exception).
* Transfers are submitted, reused and cancelled on the event loop's thread.
  A cancelled transfer's buffer still belongs to libusb until its cancelled
  callback arrived, so every cancellation is awaited (shielded, bounded).

Shutdown order, always: cancel transfers and await them, release the
interface, close the handle, stop the event thread, close the context.
The event thread also stops by itself when the main thread is gone, so a
caller that forgot to close cannot hang interpreter exit.

The event loop must be asyncio (anyio's default backend): completions are
handed over with :meth:`asyncio.AbstractEventLoop.call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import usb1
from anyio.streams.memory import MemoryObjectReceiveStream

from ..errors import (
    DeviceDisconnected,
    HostSetupError,
    RemoteProtocolError,
    TransferCancelled,
    TransferStall,
    TransferTimeout,
    TransportError,
    UsbfsMemoryError,
)
from ..logs import TRACE, HexDump
from .base import Link, OutChunk, ProgressCallback
from .usbfs import RAISE_CAP_HINT, BudgetClient, UsbfsBudget, process_budget

__all__ = (
    "CANCEL_GRACE",
    "EVENT_WAIT",
    "HotplugEvent",
    "UsbContext",
    "UsbDeviceInfo",
    "UsbLink",
    "hotplug_supported",
)

logger = logging.getLogger(__name__)

#: Interface 0, alternate setting 0 carries the SimpleIO endpoints (protocol.md).
INTERFACE = 0
#: Seconds one ``handleEventsTimeout`` call may block. Bounds how long the
#: event thread takes to notice that the main thread has gone; libusb wakes
#: it at once for completions and for ``interruptEventHandler``.
EVENT_WAIT = 0.5
#: Seconds to wait for the cancelled callbacks of cancelled transfers. libusb
#: on Linux delivers them within milliseconds (DISCARDURB, then reap); if
#: they never come, the transfers are leaked rather than freed under libusb.
CANCEL_GRACE = 5.0
#: Seconds past its own libusb timeout after which a single transfer whose
#: completion never arrived is given up (a safety net: libusb always calls back).
_COMPLETION_GRACE = 2.0
#: libusb timeout of a streamed transfer, at least this many seconds. The
#: stall watchdog (time since the last completion) is what detects a device
#: that stopped reading; this timeout only has to be long enough that a
#: transfer waiting its turn on a shared bus never trips it.
STREAM_TRANSFER_TIMEOUT_MIN = 30.0
#: Bounds the delay between retries of a submission refused for memory while
#: nothing of this process is in flight (the memory is held elsewhere).
_REFUSAL_BACKOFF_MAX = 0.2

#: A handleEvents call that returns sooner than this without running a single
#: callback was a spurious wake-up ...
_SPURIOUS_WAKEUP = 0.001
#: ... after which the event thread sleeps this long. Adds at most this much
#: latency to a completion, and only when poll() reports readiness falsely.
_IDLE_NAP = 0.0005

_EMPTY = bytearray()


class _Activity:
    """Callbacks run by the event thread so far (written by that thread only)."""

    callbacks = 0


_activity = _Activity()


def hotplug_supported() -> bool:
    """Whether this libusb delivers hotplug events (else poll)."""
    return bool(usb1.hasCapability(usb1.CAP_HAS_HOTPLUG))


# -- errors: the one boundary where usb1 errors become ours -------------------------


def _submit_error(exc: usb1.USBError, what: str, budget: UsbfsBudget) -> TransportError:
    """Map an exception raised by a synchronous libusb call or a submission."""
    if isinstance(exc, usb1.USBErrorNoDevice):
        return DeviceDisconnected(f"device disconnected ({what})")
    if isinstance(exc, usb1.USBErrorNoMem) or (isinstance(exc, usb1.USBErrorIO) and budget.capped):
        return UsbfsMemoryError(
            f"the kernel refused {what} for lack of usbfs memory; {RAISE_CAP_HINT}"
        )
    if isinstance(exc, usb1.USBErrorPipe):
        return TransferStall(f"endpoint stalled ({what})")
    if isinstance(exc, usb1.USBErrorTimeout):
        return TransferTimeout(f"timed out ({what})")
    if isinstance(exc, usb1.USBErrorAccess):
        return TransportError(
            f"permission denied ({what}); run as root or add a udev rule giving your user "
            "access to the device"
        )
    if isinstance(exc, usb1.USBErrorBusy):
        return TransportError(f"device busy ({what}): another program has claimed it")
    return TransportError(f"USB error {exc} ({what})")


def _is_memory_refusal(exc: usb1.USBError, budget: UsbfsBudget) -> bool:
    return isinstance(exc, usb1.USBErrorNoMem) or (
        isinstance(exc, usb1.USBErrorIO) and budget.capped
    )


def _status_error(status: int, what: str, timeout: float) -> TransportError:
    """Map the status of a completed transfer that did not succeed."""
    if status == usb1.TRANSFER_TIMED_OUT:
        return TransferTimeout(f"no answer within {timeout:g} s ({what})")
    if status == usb1.TRANSFER_STALL:
        return TransferStall(f"endpoint stalled ({what})")
    if status == usb1.TRANSFER_NO_DEVICE:
        return DeviceDisconnected(f"device disconnected ({what})")
    if status == usb1.TRANSFER_CANCELLED:
        return TransferCancelled(f"cancelled ({what})")
    if status == usb1.TRANSFER_OVERFLOW:
        return TransportError(f"device sent more data than asked for ({what})")
    return TransportError(f"transfer failed with an I/O error ({what})")


# -- device descriptions ------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class UsbDeviceInfo:
    """One USB device as enumeration or hotplug saw it (no I/O needed to make one)."""

    #: sysfs-style port path: bus, then port numbers joined by dots (``1-1.4.2``).
    port: str
    bus: int
    address: int
    vendor_id: int
    product_id: int
    #: The python-libusb1 device, opaque outside this module.
    device: Any = field(repr=False, compare=False)

    @property
    def usb_id(self) -> str:
        return f"{self.vendor_id:04x}:{self.product_id:04x}"

    @property
    def key(self) -> tuple[str, int, int]:
        """Identifies one enumeration of a device: a replug gets a new address."""
        return (self.port, self.bus, self.address)


@dataclass(frozen=True, slots=True)
class HotplugEvent:
    """A device arrived (``arrived=True``) or left."""

    arrived: bool
    device: UsbDeviceInfo


def _port_path(bus: int, ports: list[int]) -> str:
    return f"{bus}-{'.'.join(map(str, ports))}" if ports else f"usb{bus}"


def _describe(device: usb1.USBDevice) -> UsbDeviceInfo:
    """Read only what libusb caches: safe inside a hotplug callback."""
    bus = device.getBusNumber()
    try:
        ports = device.getPortNumberList()
    except usb1.USBError:
        ports = []
    return UsbDeviceInfo(
        port=_port_path(bus, ports),
        bus=bus,
        address=device.getDeviceAddress(),
        vendor_id=device.getVendorID(),
        product_id=device.getProductID(),
        device=device,
    )


# -- the shared context and its event thread ----------------------------------------


class _Core:
    """The process's libusb context and the thread that handles its events."""

    def __init__(self) -> None:
        self.usb = usb1.USBContext()
        try:
            self.usb.open()
        except OSError:  # python-libusb1 found no libusb-1.0 to load
            raise HostSetupError(
                "libusb-1.0 not found: install the Debian package libusb-1.0-0 "
                "(apt-get install libusb-1.0-0)"
            ) from None
        except usb1.USBError as exc:  # libusb_init refused: no USB bus (a container)
            raise HostSetupError(
                f"libusb cannot start ({exc}): it needs the USB bus; in a container run with "
                "--device /dev/bus/usb -v /run/udev:/run/udev:ro (or --privileged)"
            ) from None
        self._stop = False
        self.users = 0
        self._thread = threading.Thread(
            target=self._run, name="parallel-flash-usb-events", daemon=False
        )
        self._thread.start()
        logger.debug("libusb %s: context open, event thread started", _libusb_version())

    def _run(self) -> None:
        main = threading.main_thread()
        clock = time.monotonic
        while not self._stop:
            if not main.is_alive():
                logger.debug("main thread gone: event thread stops")
                break
            try:
                before, started = _activity.callbacks, clock()
                self.usb.handleEventsTimeout(EVENT_WAIT)
                if _activity.callbacks == before and clock() - started < _SPURIOUS_WAKEUP:
                    # poll() said ready but nothing happened (umockdev's emulated fd
                    # always does): nap instead of spinning, which would also keep
                    # taking the GIL from the event loop's thread.
                    time.sleep(_IDLE_NAP)
            except usb1.USBErrorInterrupted:
                continue
            except Exception:  # keep handling events; a dead thread hangs every transfer
                logger.exception("libusb event handling failed")
                time.sleep(0.05)

    def close(self) -> None:
        """Stop the event thread, then close the context (nothing may be open any more)."""
        self._stop = True
        with contextlib.suppress(Exception):
            self.usb.interruptEventHandler()
        self._thread.join(timeout=10)
        if self._thread.is_alive():
            logger.error("libusb event thread did not stop; leaving the context open")
            return
        self.usb.close()
        logger.debug("libusb context closed")


def _libusb_version() -> str:
    version = usb1.getVersion()
    return f"{version.major}.{version.minor}.{version.micro}"


_core: _Core | None = None


class UsbContext:
    """Access to USB for one async task tree; ``async with UsbContext() as usb:``.

    Every open :class:`UsbContext` of the process shares one libusb context
    and one event thread. Links opened through it are closed when it exits,
    in the documented order.

    :param budget: the usbfs memory budget for links opened here; defaults to
        the process-wide one (read from sysfs).
    """

    def __init__(self, *, budget: UsbfsBudget | None = None) -> None:
        self._budget = budget
        self._links: set[UsbLink] = set()
        self._core: _Core | None = None

    @property
    def budget(self) -> UsbfsBudget:
        if self._budget is None:
            self._budget = process_budget()
        return self._budget

    async def __aenter__(self) -> UsbContext:
        global _core
        if self._core is not None:
            raise RuntimeError("UsbContext is already open")
        if _core is None:
            _core = _Core()
        _core.users += 1
        self._core = _core
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every link opened here, then release the shared context."""
        global _core
        core, self._core = self._core, None
        if core is None:
            return
        try:
            with anyio.CancelScope(shield=True):
                for link in list(self._links):
                    await link.aclose()
            # python-libusb1 keeps each transfer buffer in a ctypes object that
            # references itself (ctypes.cast), so the image's memory stays
            # exported until the cycle collector runs: run it now, so the
            # caller can close the image's mmap right away.
            gc.collect()
        finally:
            core.users -= 1
            if core.users == 0:
                if _core is core:
                    _core = None
                core.close()

    @property
    def _usb(self) -> usb1.USBContext:
        if self._core is None:
            raise RuntimeError("UsbContext is not open (use 'async with UsbContext()')")
        return self._core.usb

    # -- enumeration ---------------------------------------------------------------

    def devices(self) -> list[UsbDeviceInfo]:
        """Every USB device present now (synchronous; the list is libusb's cache)."""
        return [_describe(device) for device in self._usb.getDeviceIterator(skip_on_error=True)]

    async def enumerate(self) -> list[UsbDeviceInfo]:
        """Like :meth:`devices`, off the event loop's thread (a rescan may read sysfs)."""
        return await anyio.to_thread.run_sync(self.devices)

    @contextlib.asynccontextmanager
    async def hotplug(
        self, *, vendor_id: int | None = None, product_id: int | None = None
    ) -> AsyncIterator[MemoryObjectReceiveStream[HotplugEvent]]:
        """libusb hotplug events as a stream; devices already present come first.

        The callback runs on the event thread and only describes the device
        from libusb's cache (no string descriptors, no synchronous calls).
        Events may repeat or come unpaired: callers deduplicate by port path.
        """
        usb = self._usb
        loop = asyncio.get_running_loop()
        send, receive = anyio.create_memory_object_stream[HotplugEvent](math.inf)

        def deliver(event: HotplugEvent) -> None:
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                send.send_nowait(event)

        def callback(_context: usb1.USBContext, device: usb1.USBDevice, kind: int) -> bool:
            _activity.callbacks += 1
            try:
                event = HotplugEvent(kind == usb1.HOTPLUG_EVENT_DEVICE_ARRIVED, _describe(device))
                loop.call_soon_threadsafe(deliver, event)
            except RuntimeError:
                pass  # the loop is closed: nobody listens any more
            except BaseException:  # ctypes would swallow it
                logger.exception("hotplug callback failed")
            return False  # stay registered

        any_ = usb1.HOTPLUG_MATCH_ANY
        handle = usb.hotplugRegisterCallback(
            callback,
            flags=usb1.HOTPLUG_ENUMERATE,
            vendor_id=any_ if vendor_id is None else vendor_id,
            product_id=any_ if product_id is None else product_id,
        )
        try:
            async with receive:
                yield receive
        finally:
            with contextlib.suppress(Exception):
                usb.hotplugDeregisterCallback(handle)
            send.close()

    # -- opening -------------------------------------------------------------------

    async def open(self, info: UsbDeviceInfo) -> UsbLink:
        """Open a device, claim interface 0 and check its endpoints.

        :raises ~parallel_flash.errors.RemoteProtocolError: if interface 0 does
            not have exactly one bulk IN and one bulk OUT endpoint.
        :raises ~parallel_flash.errors.TransportError: if it cannot be opened
            or claimed (permissions, another program, gone).
        """
        _ = self._usb  # raises when not open
        link = UsbLink._open(self, info)
        self._links.add(link)
        return link

    def _forget(self, link: UsbLink) -> None:
        self._links.discard(link)


# -- transfers ----------------------------------------------------------------------


class _Transfer:
    """One reusable libusb transfer plus the loop-side record of its completion."""

    __slots__ = ("actual", "cost", "length", "loop", "notify", "pending", "status", "usb")

    def __init__(self, handle: usb1.USBDeviceHandle, loop: asyncio.AbstractEventLoop) -> None:
        self.usb = handle.getTransfer()
        self.loop = loop
        self.status = usb1.TRANSFER_COMPLETED
        self.actual = 0
        self.length = 0
        #: Budget bytes charged for it (0 when not budgeted).
        self.cost = 0
        #: Submitted and its callback not yet delivered on the loop.
        self.pending = False
        #: Called on the loop thread once the completion has been recorded.
        self.notify: Callable[[_Transfer], None] = _ignore

    def callback(self, usb_transfer: usb1.USBTransfer) -> None:
        """Runs on the event thread: hand the result to the loop, nothing else."""
        _activity.callbacks += 1
        try:
            status = usb_transfer.getStatus()
            actual = usb_transfer.getActualLength()
            self.loop.call_soon_threadsafe(self._deliver, status, actual)
        except RuntimeError:
            pass  # loop closed: the process is going away, nobody waits for this
        except BaseException:  # ctypes would print and swallow it
            logger.exception("transfer callback failed")

    def _deliver(self, status: int, actual: int) -> None:
        self.status = status
        self.actual = actual
        self.pending = False
        self.notify(self)

    def submit(self) -> None:
        self.usb.submit()
        self.pending = True

    def cancel(self) -> None:
        """Ask libusb to cancel; the cancelled callback still has to arrive."""
        if self.pending:
            try:
                self.usb.cancel()
            except (usb1.USBErrorNotFound, usb1.USBErrorNoDevice):
                pass  # completing right now, or the device is gone: the callback comes anyway
            except usb1.USBError as exc:
                logger.debug("cancel failed: %s", exc)

    def drop_buffer(self) -> None:
        """Stop exporting the image's memory (lets the image's mmap close)."""
        if not self.pending:
            with contextlib.suppress(Exception):
                self.usb.setBuffer(_EMPTY)


def _ignore(_transfer: _Transfer) -> None:
    pass


class _ZeroPacketRefused(Exception):
    """libusb refused a transfer flagged ADD_ZERO_PACKET; retry with an explicit ZLP."""


async def _await_cancelled(transfers: Iterable[_Transfer], wake: _Wake) -> list[_Transfer]:
    """Cancel ``transfers`` and wait (shielded, bounded) for their callbacks.

    Returns the transfers whose callback never came: libusb still owns them.
    """
    waiting = [t for t in transfers if t.pending]
    for transfer in waiting:
        transfer.cancel()
    with anyio.CancelScope(shield=True):
        with anyio.move_on_after(CANCEL_GRACE):
            while any(t.pending for t in waiting):
                await wake.wait()
    return [t for t in waiting if t.pending]


class _Wake:
    """A re-armable wake-up for one waiting task (all on the loop thread)."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self, *_args: object) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        self._event = anyio.Event()


# -- the link -----------------------------------------------------------------------


#: Seconds between device-list scans while waiting for a device to come back on its port.
_RETURN_POLL_INTERVAL = 0.1

class UsbLink(Link):
    """One device in flashing mode over libusb, interface 0 claimed."""

    def __init__(
        self,
        owner: UsbContext,
        info: UsbDeviceInfo,
        handle: usb1.USBDeviceHandle,
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
        self._owner = owner
        self._handle = handle
        self._budget = owner.budget
        self._loop = asyncio.get_running_loop()
        self._closed = False
        #: Transfers whose cancellation never completed; the handle is leaked with them.
        self._leaked: list[_Transfer] = []
        self._single: _Transfer | None = None
        self._stream_pool: list[_Transfer] = []
        #: False once the kernel or libusb refused ADD_ZERO_PACKET: ZLPs are then
        #: sent as explicit zero-length transfers (protocol.md step 7).
        self._zero_packet_flag = True
        #: Counters for benchmarks: submissions refused for memory, stream transfers.
        self.refusals = 0
        self.stream_transfers = 0

    @classmethod
    def _open(cls, owner: UsbContext, info: UsbDeviceInfo) -> UsbLink:
        what = f"{info.port}: opening {info.usb_id}"
        endpoint_in, endpoint_out, mps = _simpleio_endpoints(info)
        try:
            handle = info.device.open()
        except usb1.USBError as exc:
            raise _submit_error(exc, what, owner.budget) from None
        try:
            with contextlib.suppress(usb1.USBErrorNotSupported, usb1.USBErrorNotFound):
                handle.setAutoDetachKernelDriver(True)
            try:
                handle.claimInterface(INTERFACE)
            except usb1.USBError as exc:
                raise _submit_error(
                    exc, f"{info.port}: claiming interface 0", owner.budget
                ) from None
        except BaseException:
            handle.close()
            raise
        logger.debug(
            "%s: opened %s (bus %d address %d), EP IN 0x%02x, EP OUT 0x%02x, wMaxPacketSize %d",
            info.port,
            info.usb_id,
            info.bus,
            info.address,
            endpoint_in,
            endpoint_out,
            mps,
        )
        return cls(
            owner,
            info,
            handle,
            endpoint_in=endpoint_in,
            endpoint_out=endpoint_out,
            max_packet_size=mps,
        )

    def __repr__(self) -> str:
        return f"<UsbLink {self.port} {self.info.usb_id}{' closed' if self._closed else ''}>"

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError(f"{self.port}: link is closed")

    # -- single transfers ----------------------------------------------------------

    def _single_transfer(self) -> _Transfer:
        if self._single is None:
            self._single = _Transfer(self._handle, self._loop)
        return self._single

    async def _perform(self, transfer: _Transfer, what: str, timeout: float) -> None:
        """Submit one prepared transfer and wait for it; raises mapped errors."""
        wake = _Wake()
        transfer.notify = wake.set
        await self._submit_with_retry(transfer, what, timeout)
        try:
            # libusb times the transfer out itself; this bound only guards
            # against a completion that never reaches us.
            with anyio.move_on_after(timeout + _COMPLETION_GRACE):
                while transfer.pending:
                    await wake.wait()
            if transfer.pending:
                self._leaked += await _await_cancelled([transfer], wake)
                raise TransferTimeout(f"libusb never completed the transfer ({what})")
        except TransferTimeout:
            raise
        except BaseException:
            self._leaked += await _await_cancelled([transfer], wake)
            raise
        finally:
            transfer.notify = _ignore
        if transfer.status != usb1.TRANSFER_COMPLETED:
            raise _status_error(transfer.status, what, timeout)

    async def _submit_with_retry(self, transfer: _Transfer, what: str, timeout: float) -> None:
        """Submit; a refusal for memory is retried until ``timeout`` has passed."""
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            try:
                transfer.submit()
                return
            except usb1.USBErrorNotSupported:
                if not transfer.usb.isZeroPacketAdded():
                    raise _submit_error(usb1.USBErrorNotSupported(), what, self._budget) from None
                self._disable_zero_packet_flag()
                raise _ZeroPacketRefused from None
            except usb1.USBError as exc:
                if not _is_memory_refusal(exc, self._budget) or time.monotonic() >= deadline:
                    raise _submit_error(exc, what, self._budget) from None
                self.refusals += 1
                logger.debug("%s: %s refused for memory, retrying", self.port, what)
            await anyio.sleep(delay)
            delay = min(delay * 2, _REFUSAL_BACKOFF_MAX)

    async def control_out(
        self, request_type: int, request: int, value: int, index: int, *, timeout: float
    ) -> None:
        self._check_open()
        what = f"control request {request_type:#04x}/{request:#04x} value {value} index {index}"
        transfer = self._single_transfer()
        transfer.usb.setControl(
            request_type,
            request,
            value,
            index,
            b"",
            callback=transfer.callback,
            timeout=_ms(timeout),
        )
        logger.log(TRACE, "%s: %s", self.port, what)
        await self._perform(transfer, what, timeout)

    async def bulk_out(
        self, data: bytes | memoryview, *, timeout: float, zero_packet: bool = False
    ) -> None:
        self._check_open()
        what = f"bulk OUT of {len(data)} bytes"
        transfer = self._single_transfer()
        transfer.usb.setBulk(
            self.endpoint_out, _writable(data), callback=transfer.callback, timeout=_ms(timeout)
        )
        use_flag = zero_packet and self._zero_packet_flag
        transfer.usb.setAddZeroPacket(use_flag)
        logger.log(TRACE, "%s: BULK OUT data=<%s>", self.port, HexDump(data))
        try:
            await self._perform(transfer, what, timeout)
        except _ZeroPacketRefused:
            use_flag = False
            transfer.usb.setAddZeroPacket(False)
            await self._perform(transfer, what, timeout)
        self._check_written(transfer, len(data), what)
        if zero_packet and not use_flag:
            transfer.usb.setBuffer(_EMPTY)
            await self._perform(transfer, "zero-length packet", timeout)

    def _disable_zero_packet_flag(self) -> None:
        """libusb refused ADD_ZERO_PACKET (no kernel support): send ZLPs as transfers."""
        if self._zero_packet_flag:
            self._zero_packet_flag = False
            logger.info(
                "%s: this platform cannot add zero-length packets to a transfer; "
                "sending them as separate zero-length transfers",
                self.port,
            )

    def _check_written(self, transfer: _Transfer, length: int, what: str) -> None:
        if transfer.actual != length:
            raise TransportError(f"device took {transfer.actual} of {length} bytes ({what})")

    async def bulk_in(self, size: int, *, timeout: float) -> bytes:
        self._check_open()
        what = f"bulk IN of up to {size} bytes"
        transfer = self._single_transfer()
        transfer.usb.setBulk(
            self.endpoint_in, size, callback=transfer.callback, timeout=_ms(timeout)
        )
        transfer.usb.setAddZeroPacket(False)
        await self._perform(transfer, what, timeout)
        data = bytes(transfer.usb.getBuffer()[: transfer.actual])
        logger.log(TRACE, "%s: BULK IN data=<%s>", self.port, HexDump(data))
        return data

    # -- the stream ----------------------------------------------------------------

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
            self._stream_pool.append(_Transfer(self._handle, self._loop))
        stream = _OutStream(self, self._stream_pool[:in_flight], stall_timeout, on_progress)
        await stream.run(iter(chunks))

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
            await anyio.sleep(min(_RETURN_POLL_INTERVAL, remaining))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._owner._forget(self)
        transfers = [t for t in (self._single, *self._stream_pool) if t is not None]
        if any(t.pending for t in transfers):
            wake = _Wake()
            for transfer in transfers:
                transfer.notify = wake.set
            self._leaked += await _await_cancelled(transfers, wake)
        try:
            self._handle.releaseInterface(INTERFACE)
        except (usb1.USBErrorNoDevice, usb1.USBErrorNotFound):
            pass
        except usb1.USBError as exc:
            logger.debug("%s: releasing interface 0: %s", self.port, exc)
        if self._leaked:
            # Closing the handle would free transfers libusb still owns.
            logger.error(
                "%s: %d transfers never returned from cancellation; leaving the device open",
                self.port,
                len(self._leaked),
            )
            return
        for transfer in transfers:
            transfer.drop_buffer()
        self._handle.close()
        logger.debug("%s: closed", self.port)


class _OutStream:
    """One :meth:`UsbLink.stream_out` call: submit, reap, watch for stalls, clean up."""

    def __init__(
        self,
        link: UsbLink,
        transfers: list[_Transfer],
        stall_timeout: float,
        on_progress: ProgressCallback,
    ) -> None:
        self.link = link
        self.port = link.port
        self.budget = link._budget
        self.stall_timeout = stall_timeout
        self.on_progress = on_progress
        self.wake = _Wake()
        self.client = BudgetClient(link.port, self.wake.set)
        self.free = list(transfers)
        self.pending: collections.deque[_Transfer] = collections.deque()
        self.completed: collections.deque[_Transfer] = collections.deque()
        self.timeout_ms = _ms(max(STREAM_TRANSFER_TIMEOUT_MIN, stall_timeout * len(transfers) * 10))
        self.prepared: set[_Transfer] = set()
        self.bytes_done = 0
        #: The first failed transfer's error; nothing after it counts as progress.
        self.error: TransportError | None = None
        for transfer in transfers:
            transfer.notify = self._completed

    def _completed(self, transfer: _Transfer) -> None:
        self.completed.append(transfer)
        self.wake.set()

    def _items(self, chunks: Iterator[OutChunk]) -> Iterator[tuple[memoryview | bytearray, bool]]:
        for chunk in chunks:
            if chunk.zero_packet and not self.link._zero_packet_flag:
                yield chunk.data, False
                yield _EMPTY, False
            else:
                yield chunk.data, chunk.zero_packet

    async def run(self, chunks: Iterator[OutChunk]) -> None:
        self.budget.register(self.client)
        try:
            await self._pump(chunks)
        finally:
            if self.pending:
                leaked = await _await_cancelled(self.pending, self.wake)
                self._reap(check=False)
                self.link._leaked += leaked
                for transfer in leaked:  # the kernel will free them; do not starve others
                    self._release(transfer)
            for transfer in self.free:
                transfer.drop_buffer()
                transfer.notify = _ignore
            self.budget.unregister(self.client)

    async def _pump(self, chunks: Iterator[OutChunk]) -> None:
        items = self._items(chunks)
        item = next(items, None)
        last_progress = time.monotonic()
        refused_since: float | None = None
        backoff = 0.005
        while True:
            # Submit as much as the transfers, the budget and the kernel allow.
            refused = False
            while item is not None and self.free:
                data, zero_packet = item
                length = len(data)
                if length and not self.budget.try_acquire(self.client, length):
                    break
                transfer = self.free.pop()
                transfer.cost = length
                try:
                    self._submit(transfer, data, zero_packet)
                except usb1.USBErrorNotSupported:
                    self._unbudget(transfer)
                    if not (zero_packet and self.link._zero_packet_flag):
                        raise TransportError("bulk OUT transfer not supported by libusb") from None
                    self.link._disable_zero_packet_flag()
                    item = (data, False)
                    items = _prepend((_EMPTY, False), items)
                    continue
                except usb1.USBError as exc:
                    self._unbudget(transfer, refused=_is_memory_refusal(exc, self.budget))
                    if not _is_memory_refusal(exc, self.budget):
                        raise _submit_error(
                            exc, f"bulk OUT of {length} bytes", self.budget
                        ) from None
                    refused = True
                    self.link.refusals += 1
                    break
                if not self.pending:
                    last_progress = time.monotonic()  # the clock runs while something is queued
                self.pending.append(transfer)
                item = next(items, None)
                refused_since = None
            if not self.pending:
                if item is None:
                    return
                # Nothing in flight: starved by the budget, or refused by the kernel.
                if refused and self.budget.reserved == 0:
                    # The memory is held outside this process: retry after a delay.
                    now = time.monotonic()
                    refused_since = refused_since or now
                    if now - refused_since > max(self.stall_timeout, 1.0):
                        raise UsbfsMemoryError(
                            f"{self.port}: the kernel keeps refusing a {len(item[0])}-byte "
                            f"transfer for lack of usbfs memory; {RAISE_CAP_HINT}"
                        )
                    await anyio.sleep(backoff)
                    backoff = min(backoff * 2, _REFUSAL_BACKOFF_MAX)
                else:
                    await self.wake.wait()  # another device's completion frees bytes
                continue
            remaining = last_progress + self.stall_timeout - time.monotonic()
            if remaining > 0:
                with anyio.move_on_after(remaining):
                    await self.wake.wait()
            if not self.completed:
                if time.monotonic() - last_progress >= self.stall_timeout:
                    raise TransferTimeout(
                        f"no bulk OUT transfer completed for {self.stall_timeout:g} s "
                        f"({self.bytes_done} bytes sent, {len(self.pending)} transfers queued)"
                    )
                continue
            last_progress = time.monotonic()
            self._reap(check=True)

    def _submit(self, transfer: _Transfer, data: memoryview | bytearray, zero_packet: bool) -> None:
        usb = transfer.usb
        if transfer not in self.prepared:
            usb.setBulk(
                self.link.endpoint_out,
                _writable(data),
                callback=transfer.callback,
                timeout=self.timeout_ms,
            )
            self.prepared.add(transfer)
        else:
            usb.setBuffer(_writable(data))
        usb.setAddZeroPacket(zero_packet)
        transfer.length = len(data)
        transfer.submit()
        self.link.stream_transfers += 1
        logger.log(
            TRACE,
            "%s: BULK OUT %d bytes%s (submitted)",
            self.port,
            len(data),
            " + ZLP" if zero_packet else "",
        )

    def _unbudget(self, transfer: _Transfer, *, refused: bool = False) -> None:
        """A submission failed: give its bytes back and the transfer to the free list."""
        if transfer.cost:
            if refused:
                self.budget.refused(self.client, transfer.cost)
            else:
                self.budget.release(self.client, transfer.cost, submitted=False)
            transfer.cost = 0
        self.free.append(transfer)

    def _release(self, transfer: _Transfer) -> None:
        if transfer.cost:
            self.budget.release(self.client, transfer.cost)
            transfer.cost = 0

    def _reap(self, *, check: bool) -> None:
        """Account for every delivered completion; with ``check``, raise on the first failure.

        Progress counts the transfers that completed in full before any
        failure, also while cleaning up after a cancellation (``check``
        False), so an interrupted device's record says how far it got.
        """
        while self.completed:
            transfer = self.completed.popleft()
            self.pending.remove(transfer)
            self._release(transfer)
            self.free.append(transfer)
            if self.error is not None:
                continue
            what = f"bulk OUT of {transfer.length} bytes"
            if transfer.status != usb1.TRANSFER_COMPLETED:
                self.error = _status_error(transfer.status, what, self.timeout_ms / 1000)
            elif transfer.actual != transfer.length:
                self.error = TransportError(
                    f"device took {transfer.actual} of {transfer.length} bytes ({what})"
                )
            elif transfer.length:
                self.bytes_done += transfer.length
                logger.log(TRACE, "%s: BULK OUT %d bytes (completed)", self.port, transfer.length)
                self.on_progress(transfer.length)
        if check and self.error is not None:
            raise self.error


def _prepend(
    first: tuple[memoryview | bytearray, bool],
    rest: Iterator[tuple[memoryview | bytearray, bool]],
) -> Iterator[tuple[memoryview | bytearray, bool]]:
    yield first
    yield from rest


def _ms(seconds: float) -> int:
    """libusb timeouts are milliseconds; 0 would mean "forever", so never round to 0."""
    return max(1, round(seconds * 1000))


def _writable(data: bytes | bytearray | memoryview) -> bytearray | memoryview:
    """A buffer libusb can use in place (``bytes`` would be copied by ctypes anyway)."""
    if isinstance(data, memoryview) and not data.readonly:
        return data
    if isinstance(data, bytearray):
        return data
    return bytearray(data)


def _simpleio_endpoints(info: UsbDeviceInfo) -> tuple[int, int, int]:
    """(EP IN, EP OUT, wMaxPacketSize of EP OUT) of interface 0 alt 0, checked.

    protocol.md: exactly one bulk IN and one bulk OUT endpoint; anything
    else there is an error.
    """
    setting = None
    for candidate in info.device.iterSettings():
        if candidate.getNumber() == INTERFACE and candidate.getAlternateSetting() == 0:
            setting = candidate
            break
    if setting is None:
        raise RemoteProtocolError(
            f"{info.port}: device {info.usb_id} has no interface 0 alternate setting 0"
        )
    bulk_in: list[tuple[int, int]] = []
    bulk_out: list[tuple[int, int]] = []
    others: list[str] = []
    for endpoint in setting:
        address = endpoint.getAddress()
        kind = endpoint.getAttributes() & 0x03
        size = endpoint.getMaxPacketSize() & 0x07FF
        if kind == 2:
            (bulk_in if address & 0x80 else bulk_out).append((address, size))
        else:
            others.append(
                f"0x{address:02x} ({('control', 'isochronous', 'bulk', 'interrupt')[kind]})"
            )
    if len(bulk_in) != 1 or len(bulk_out) != 1 or others:
        found = [f"0x{a:02x} (bulk)" for a, _ in bulk_in + bulk_out] + others
        raise RemoteProtocolError(
            f"{info.port}: device {info.usb_id} interface 0 must have exactly one bulk IN and "
            f"one bulk OUT endpoint; it has {', '.join(found) or 'none'}"
        )
    (endpoint_in, _), (endpoint_out, mps) = bulk_in[0], bulk_out[0]
    if mps <= 0:
        raise RemoteProtocolError(
            f"{info.port}: bulk OUT endpoint 0x{endpoint_out:02x} reports wMaxPacketSize 0"
        )
    return endpoint_in, endpoint_out, mps
