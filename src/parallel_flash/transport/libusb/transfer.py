"""One reusable libusb transfer whose completion is handed to the event loop.

Used for the single transfers of a link (control, commands, replies). A
callback runs on its context's event thread and does nothing but record the
status and length and hand them to the loop with ``call_soon_threadsafe``:
it never blocks, never calls libusb synchronously, never closes a transfer,
and catches everything (ctypes would print and swallow an exception).

A cancelled transfer's buffer still belongs to libusb until its cancelled
callback arrived, so every cancellation is awaited (shielded, bounded).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import anyio
import usb1

from .zero_packet import EMPTY

__all__ = (
    "CANCEL_GRACE",
    "Cancellable",
    "Transfer",
    "Wake",
    "await_cancelled",
    "milliseconds",
    "writable",
)

logger = logging.getLogger(__name__)

#: Seconds to wait for the cancelled callbacks of cancelled transfers. libusb
#: on Linux delivers them within milliseconds (DISCARDURB, then reap); if
#: they never come, the transfers are leaked rather than freed under libusb.
CANCEL_GRACE = 5.0


class _Counter(Protocol):
    callbacks: int

    def poke(self) -> None: ...


class Cancellable(Protocol):
    """What :func:`await_cancelled` needs of a transfer."""

    @property
    def pending(self) -> bool: ...

    def cancel(self) -> None: ...


class Transfer:
    """One reusable libusb transfer plus the loop-side record of its completion."""

    __slots__ = (
        "actual",
        "events",
        "length",
        "loop",
        "notify",
        "pending",
        "status",
        "usb",
    )

    def __init__(
        self, handle: usb1.USBDeviceHandle, loop: asyncio.AbstractEventLoop, events: _Counter
    ) -> None:
        self.usb = handle.getTransfer()
        self.loop = loop
        #: The event thread that runs this transfer's callback (counts them).
        self.events = events
        self.status = usb1.TRANSFER_COMPLETED
        self.actual = 0
        self.length = 0
        #: Submitted and its callback not yet delivered on the loop.
        self.pending = False
        #: Called on the loop thread once the completion has been recorded.
        self.notify: Callable[[Transfer], None] = ignore

    def callback(self, usb_transfer: usb1.USBTransfer) -> None:
        """Runs on the event thread: hand the result to the loop, nothing else."""
        self.events.callbacks += 1
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
        self.events.poke()  # its event thread may be napping (events.IDLE_NAP)

    def cancel(self) -> None:
        """Ask libusb to cancel; the cancelled callback still has to arrive."""
        if self.pending:
            cancel_usb(self.usb)

    def drop_buffer(self) -> None:
        """Stop exporting the image's memory (lets the image's mmap close)."""
        if not self.pending:
            with contextlib.suppress(Exception):
                self.usb.setBuffer(EMPTY)


def cancel_usb(usb: usb1.USBTransfer) -> None:
    """``usb.cancel()``, where "already completing" and "device gone" are fine."""
    try:
        usb.cancel()
    except (usb1.USBErrorNotFound, usb1.USBErrorNoDevice):
        pass  # completing right now, or the device is gone: the callback comes anyway
    except usb1.USBError as exc:
        logger.debug("cancel failed: %s", exc)


def ignore(_transfer: Transfer) -> None:
    pass


class Wake:
    """A re-armable wake-up for one waiting task (all on the loop thread)."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self, *_args: object) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        self._event = anyio.Event()


async def await_cancelled(
    transfers: Iterable[Cancellable], wake: Wake, grace: float = CANCEL_GRACE
) -> list[Cancellable]:
    """Cancel ``transfers`` and wait (shielded, bounded) for their callbacks.

    Returns the transfers whose callback never came: libusb still owns them.
    """
    waiting: Sequence[Cancellable] = [t for t in transfers if t.pending]
    for transfer in waiting:
        transfer.cancel()
    with anyio.CancelScope(shield=True), anyio.move_on_after(grace):
        while any(t.pending for t in waiting):
            await wake.wait()
    return [t for t in waiting if t.pending]


def milliseconds(seconds: float) -> int:
    """libusb timeouts are milliseconds; 0 would mean "forever", so never round to 0."""
    return max(1, round(seconds * 1000))


def writable(data: bytes | bytearray | memoryview) -> bytearray | memoryview:
    """A buffer libusb can use in place (``bytes`` would be copied by ctypes anyway)."""
    if isinstance(data, memoryview) and not data.readonly:
        return data
    if isinstance(data, bytearray):
        return data
    return bytearray(data)
