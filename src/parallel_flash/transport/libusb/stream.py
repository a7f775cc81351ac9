"""One :meth:`UsbLink.stream_out` call: the image's transfers, resubmitted where they complete.

Why this shape (issue 10's measurements): handing every completion to the
event loop and submitting the next transfer from there costs a thread hop,
a GIL hand-off and a loop wake-up per transfer, and serialises every device
behind the loop thread. So a completion is handled where it arrives, on its
context's event thread: the callback records it and, if the stream may keep
going, submits the stream's next transfer at once, reusing the finished
transfer and its share of the usbfs budget. The loop is told in batches --
one wake-up for however many completions arrived since the last one -- and
does everything that needs it: progress, the stall watchdog, the usbfs
budget (which stays single-threaded), errors, cancellation and clean-up.

Shared state between the two threads (the chunk iterator and its queue,
counts, completions not yet collected, the first failure, the stop flag) is
guarded by one lock per stream; submissions happen under it so transfers
reach the endpoint in image order whichever thread submits them.

A completed transfer goes back to the loop instead of being resubmitted
when the stream is stopping, when the budget wants bytes back (someone else
waits in line, or this device holds more than its fair share), when the
next transfer is larger than the bytes it holds, or when a resubmission
fails (the loop retries it and deals with the error in one place).
"""

from __future__ import annotations

import collections
import contextlib
import enum
import logging
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, cast

import anyio
import usb1

from ...errors import TransferTimeout, TransportError, UsbfsMemoryError
from ...logs import TRACE
from ..base import OutChunk, ProgressCallback
from ..usbfs import RAISE_CAP_HINT, BudgetClient
from .errors import is_memory_refusal, status_error, submit_error
from .transfer import Wake, await_cancelled, cancel_usb, milliseconds, writable
from .zero_packet import EMPTY, Piece

if TYPE_CHECKING:
    from .link import UsbLink

__all__ = ("STREAM_TRANSFER_TIMEOUT_MIN", "OutStream", "StreamSlot")

logger = logging.getLogger(__name__)

#: libusb timeout of a streamed transfer, at least this many seconds. The
#: stall watchdog (time since the last completion) is what detects a device
#: that stopped reading; this timeout only has to be long enough that a
#: transfer waiting its turn on a shared bus never trips it.
STREAM_TRANSFER_TIMEOUT_MIN = 30.0
#: Bounds the delay between retries of a submission refused for memory while
#: nothing of this process is in flight (the memory is held elsewhere).
REFUSAL_BACKOFF_MAX = 0.2
#: A completion that was resubmitted on the event thread wakes the loop only
#: if the loop has not been woken for this long: progress reaches the loop
#: (and the view) at least this often, and the loop and the event thread do
#: not trade the GIL once per transfer. A completion the loop must act on
#: (a slot handed back, a failure, the end of the image) wakes it at once.
LOOP_WAKE_INTERVAL = 0.005


class StreamSlot:
    """One reusable transfer of a link's stream pool."""

    __slots__ = ("in_flight", "length", "reserved", "usb")

    def __init__(self, handle: usb1.USBDeviceHandle) -> None:
        self.usb = handle.getTransfer()
        #: Submitted, callback not run yet (written under the stream's lock).
        self.in_flight = False
        self.length = 0
        #: Bytes of usbfs budget this slot holds (0 = none).
        self.reserved = 0

    @property
    def pending(self) -> bool:
        return self.in_flight

    def cancel(self) -> None:
        if self.in_flight:
            cancel_usb(self.usb)

    def drop_buffer(self) -> None:
        """Stop exporting the image's memory (lets the image's mmap close)."""
        if not self.in_flight:
            # ValueError: never set up as a bulk transfer, so it holds no buffer.
            with contextlib.suppress(usb1.USBError, ValueError):
                self.usb.setBuffer(EMPTY)


class _Outcome(enum.Enum):
    SUBMITTED = enum.auto()
    NO_BUDGET = enum.auto()
    REFUSED = enum.auto()
    RETRY = enum.auto()


class OutStream:
    """Submit, resubmit on completion, watch for stalls, clean up."""

    def __init__(
        self,
        link: UsbLink,
        slots: list[StreamSlot],
        chunks: Iterator[OutChunk],
        stall_timeout: float,
        on_progress: ProgressCallback,
    ) -> None:
        self.link = link
        self.port = link.port
        self.budget = link.budget
        self.zlp = link.zero_packet
        self.loop = link.loop
        self.events = link.events
        self.stall_timeout = stall_timeout
        self.on_progress = on_progress
        self.wake = Wake()
        self.client = BudgetClient(link.port, self.wake.set)
        self.slots = slots
        #: Slots holding nothing: loop thread only.
        self.free = list(slots)
        self.prepared: set[StreamSlot] = set()
        self.timeout_ms = milliseconds(
            max(STREAM_TRANSFER_TIMEOUT_MIN, stall_timeout * len(slots) * 10)
        )
        self.bytes_done = 0
        self.largest = 0
        self.last_progress = time.monotonic()
        #: The first failure's error; nothing after it counts as progress.
        self.error: TransportError | None = None
        # -- shared with the event thread, under self.lock --------------------------
        self.lock = threading.Lock()
        self.chunks = chunks
        self.queue: collections.deque[Piece] = collections.deque()
        self.in_flight = 0
        self.done: list[int] = []
        self.returned: list[StreamSlot] = []
        #: (status, length, actual) of the first transfer that failed.
        self.failure: tuple[int, int, int] | None = None
        #: What the chunk iterator raised on the event thread (raised on the loop).
        self.source_error: Exception | None = None
        self.stopping = False
        #: Set by the loop: a completed slot may carry the next transfer at once.
        self.recycle = False
        #: A loop wake-up is scheduled and has not run yet.
        self.notified = False
        #: When the loop was last woken (event thread's clock).
        self.woken = 0.0

    # -- both threads, lock held ---------------------------------------------------

    def _next_piece(self) -> Piece | None:
        if not self.queue:
            chunk = next(self.chunks, None)
            if chunk is None:
                return None
            self.queue.extend(self.zlp.pieces(chunk.data, chunk.zero_packet))
        return self.queue[0]

    def _submit(self, slot: StreamSlot, piece: Piece) -> None:
        data, zero_packet = piece
        usb = slot.usb
        if slot not in self.prepared:
            usb.setBulk(
                self.link.endpoint_out,
                writable(data),
                callback=self._completed,
                user_data=slot,
                timeout=self.timeout_ms,
            )
            self.prepared.add(slot)
        else:
            usb.setBuffer(writable(data))
        usb.setAddZeroPacket(zero_packet)
        slot.length = len(data)
        usb.submit()
        slot.in_flight = True
        self.in_flight += 1
        self.queue.popleft()
        logger.log(TRACE, "%s: BULK OUT %d bytes%s (submitted)", self.port, len(data),
                   " + ZLP" if zero_packet else "")

    # -- the event thread ----------------------------------------------------------

    def _completed(self, usb_transfer: usb1.USBTransfer) -> None:
        """Runs on the event thread: record, resubmit if allowed, wake the loop once."""
        self.events.callbacks += 1
        try:
            slot = cast(StreamSlot, usb_transfer.getUserData())
            status = usb_transfer.getStatus()
            actual = usb_transfer.getActualLength()
            with self.lock:
                slot.in_flight = False
                self.in_flight -= 1
                if self.failure is None:
                    if status != usb1.TRANSFER_COMPLETED or actual != slot.length:
                        self.failure = (status, slot.length, actual)
                        self.stopping = True
                    elif slot.length:
                        self.done.append(slot.length)
                resubmitted = self._resubmit(slot)
                if not resubmitted:
                    self.returned.append(slot)
                if self.notified:
                    return
                now = time.monotonic()
                if resubmitted and now - self.woken < LOOP_WAKE_INTERVAL:
                    return  # nothing for the loop to act on: the next wake-up takes it along
                self.notified = True
                self.woken = now
            self.loop.call_soon_threadsafe(self._loop_wake)
        except RuntimeError:
            pass  # the loop is closed: the process is going away
        except BaseException:  # ctypes would print and swallow it
            logger.exception("%s: stream callback failed", self.port)

    def _resubmit(self, slot: StreamSlot) -> bool:
        """Carry the next transfer on ``slot`` right away, if nothing speaks against it."""
        if self.stopping or not self.recycle:
            return False
        try:
            piece = self._next_piece()
        except Exception as exc:  # the chunk source failed (the image could not be read)
            self.source_error = exc
            self.stopping = True
            return False
        if piece is None:
            return False
        if len(piece[0]) > slot.reserved:
            return False  # needs (more) budget: the loop asks for it
        try:
            self._submit(slot, piece)
        except usb1.USBError:
            return False  # the loop submits it again and handles the error
        return True

    def _loop_wake(self) -> None:
        with self.lock:
            self.notified = False
        self.wake.set()

    # -- the loop ------------------------------------------------------------------

    async def run(self) -> None:
        self.budget.register(self.client)
        try:
            await self._pump()
        finally:
            await self._finish()

    async def _pump(self) -> None:
        backoff = _Backoff(self)
        while True:
            self._collect(check=True)
            refused = self._fill()
            with self.lock:
                in_flight, idle = self.in_flight, not (self.done or self.returned)
                finished = in_flight == 0 and idle and self._next_piece() is None
            if finished:
                return
            if in_flight:
                await self._wait_for_completion()
            elif idle:
                await backoff.wait(refused)

    def _collect(self, *, check: bool) -> None:
        """Take over what the event thread recorded: progress, slots, the first failure."""
        with self.lock:
            done, self.done = self.done, []
            returned, self.returned = self.returned, []
            failure = self.failure
            source_error, self.source_error = self.source_error, None
        for slot in returned:
            self._release(slot)
            self.free.append(slot)
        for length in done:
            self.bytes_done += length
            self.on_progress(length)
        if done or failure:
            self.last_progress = time.monotonic()
        if failure is not None and self.error is None:
            status, length, actual = failure
            what = f"bulk OUT of {length} bytes"
            if status != usb1.TRANSFER_COMPLETED:
                self.error = status_error(status, what, self.timeout_ms / 1000)
            else:
                self.error = TransportError(f"device took {actual} of {length} bytes ({what})")
        self.recycle = self.budget.may_keep(self.client, self.largest)
        if check and source_error is not None:
            raise source_error
        if check and self.error is not None:
            raise self.error

    def _fill(self) -> bool:
        """Submit as much as the free slots, the budget and the kernel allow; True if refused."""
        with self.lock:
            if self.in_flight == 0:
                self.last_progress = time.monotonic()  # the clock runs while something is queued
            while self.free and not self.stopping:
                piece = self._next_piece()
                if piece is None:
                    return False
                outcome = self._try_submit(piece)
                if outcome is _Outcome.NO_BUDGET:
                    return False
                if outcome is _Outcome.REFUSED:
                    return True
        return False

    def _try_submit(self, piece: Piece) -> _Outcome:
        data, zero_packet = piece
        length = len(data)
        slot = self.free[-1]
        if length:
            if not self.budget.try_acquire(self.client, length):
                return _Outcome.NO_BUDGET
            slot.reserved = length
            self.largest = max(self.largest, length)
        try:
            self._submit(slot, piece)
        except usb1.USBErrorNotSupported:
            self._release(slot, submitted=False)
            if not zero_packet:
                raise TransportError("bulk OUT transfer not supported by libusb") from None
            self.zlp.refused()
            self.queue.popleft()
            self.queue.extendleft(reversed(self.zlp.pieces(data, True)))
            return _Outcome.RETRY
        except usb1.USBError as exc:
            refused = is_memory_refusal(exc, self.budget)
            self._release(slot, submitted=False, refused=refused)
            if not refused:
                raise submit_error(exc, f"bulk OUT of {length} bytes", self.budget) from None
            self.link.refusals += 1
            return _Outcome.REFUSED
        self.free.pop()
        self.events.poke()  # submitted from the loop: its event thread may be napping
        return _Outcome.SUBMITTED

    def _release(self, slot: StreamSlot, *, submitted: bool = True, refused: bool = False) -> None:
        if slot.reserved:
            if refused:
                self.budget.refused(self.client, slot.reserved)
            else:
                self.budget.release(self.client, slot.reserved, submitted=submitted)
            slot.reserved = 0

    async def _wait_for_completion(self) -> None:
        remaining = self.last_progress + self.stall_timeout - time.monotonic()
        if remaining > 0:
            with anyio.move_on_after(remaining):
                await self.wake.wait()
        with self.lock:
            quiet = not self.done and not self.returned and self.failure is None
            in_flight = self.in_flight
        if quiet and time.monotonic() - self.last_progress >= self.stall_timeout:
            raise TransferTimeout(
                f"no bulk OUT transfer completed for {self.stall_timeout:g} s "
                f"({self.bytes_done} bytes sent, {in_flight} transfers queued)"
            )

    async def stop(self) -> list[StreamSlot]:
        """Stop resubmitting, cancel what is in flight and await it; returns the leaked."""
        with self.lock:
            self.stopping = True
        pending = [slot for slot in self.slots if slot.in_flight]
        leaked = await await_cancelled(pending, self.wake) if pending else []
        return [slot for slot in self.slots if slot in leaked]

    async def _finish(self) -> None:
        """Stop, then give back every slot and byte of budget; leaked slots go on record."""
        leaked = await self.stop()
        self._collect(check=False)
        for slot in leaked:
            if slot not in self.link.leaked:
                self.link.leaked.append(slot)
            self._release(slot)  # the kernel will free it; do not starve the others
        for slot in self.free:
            slot.drop_buffer()
        self.budget.unregister(self.client)


class _Backoff:
    """Waiting with nothing in flight: for bytes to come free, or after a kernel refusal."""

    def __init__(self, stream: OutStream) -> None:
        self.stream = stream
        self.delay = 0.005
        self.refused_since: float | None = None

    async def wait(self, refused: bool) -> None:
        stream = self.stream
        if not (refused and stream.budget.reserved == 0):
            self.refused_since = None
            await stream.wake.wait()  # another device's completion frees bytes
            return
        # The memory is held outside this process: retry after a delay.
        now = time.monotonic()
        self.refused_since = self.refused_since or now
        if now - self.refused_since > max(stream.stall_timeout, 1.0):
            with stream.lock:
                piece = stream._next_piece()
            size = len(piece[0]) if piece else 0
            raise UsbfsMemoryError(
                f"{stream.port}: the kernel keeps refusing a {size}-byte "
                f"transfer for lack of usbfs memory; {RAISE_CAP_HINT}"
            )
        await anyio.sleep(self.delay)
        self.delay = min(self.delay * 2, REFUSAL_BACKOFF_MAX)
