"""The narrow async interface the engine needs from one device.

Two implementations live beside this module: :mod:`.sim` (an in-process link
driving a :class:`~parallel_flash.protocol.device.DeviceModel`) and
:mod:`.libusb` (python-libusb1). The engine only ever sees :class:`Link`, so
it never knows whether it talks to a phone or to a model of one.

Timeout policy for streaming (protocol.md, "Notes on the sequence"): with
several transfers queued, a queued transfer's age is not progress. A stream
therefore fails with :class:`~parallel_flash.errors.TransferTimeout` only when
*no transfer completed* for ``stall_timeout`` seconds; the engine scales that
window to the number of transfers in flight.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..errors import TransferTimeout

__all__ = ("Link", "OutChunk", "ProgressCallback")

#: Called on the event loop's thread after each completed OUT transfer of a
#: stream, with the number of bytes that transfer carried. Must be cheap: it
#: runs once per transfer on the hot path.
ProgressCallback = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class OutChunk:
    """One bulk OUT transfer of a stream: a zero-copy view and its ZLP flag."""

    data: memoryview
    #: Send a zero-length packet after this transfer (its length is a
    #: non-zero multiple of wMaxPacketSize; protocol.md step 7).
    zero_packet: bool


class Link(abc.ABC):
    """One device in flashing mode, opened and with interface 0 claimed."""

    #: (idVendor, idProduct): the engine picks the device's loader by it.
    usb_ids: tuple[int, int]

    #: Where the device sits: a sysfs port path (``1-1.4.2``) for real USB,
    #: ``sim-N`` for the simulated line. The key across re-enumeration.
    port: str
    #: wMaxPacketSize of the bulk OUT endpoint, read from its descriptor.
    max_packet_size: int

    @abc.abstractmethod
    async def control_out(
        self, request_type: int, request: int, value: int, index: int, *, timeout: float
    ) -> None:
        """Send a control transfer with no data stage."""

    @abc.abstractmethod
    async def bulk_out(
        self, data: bytes | memoryview, *, timeout: float, zero_packet: bool = False
    ) -> None:
        """Send one bulk OUT transfer (a command or an argument)."""

    @abc.abstractmethod
    async def bulk_in(self, size: int, *, timeout: float) -> bytes:
        """Read one bulk IN transfer of at most ``size`` bytes."""

    @abc.abstractmethod
    async def stream_out(
        self,
        chunks: Iterable[OutChunk],
        *,
        in_flight: int,
        stall_timeout: float,
        on_progress: ProgressCallback,
    ) -> None:
        """Send every chunk in order, keeping up to ``in_flight`` transfers queued.

        Returns when the last chunk (and its ZLP) completed. Raises a
        :class:`~parallel_flash.errors.TransportError` subclass on failure;
        on cancellation, every queued transfer is cancelled and its
        cancellation awaited before this returns, so the buffers are free.
        """

    async def wait_return(self, timeout: float) -> tuple[int, int] | None:
        """After the device left the bus, wait for a device on the same port.

        Returns the (idVendor, idProduct) of the first device that arrives on
        this port within ``timeout`` seconds, or None. A device still there
        with its old identity is not an arrival.
        """
        raise TransferTimeout(f"{self.port}: this link cannot watch its port for a return")

    def transfer_size_limit(self, wanted: int) -> int:
        """The largest stream transfer this link can carry, at most ``wanted``.

        A transport with a memory cap (Linux usbfs) answers less than
        ``wanted`` rather than fail every transfer; others take ``wanted``.
        """
        return wanted

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release the interface and close the device. Safe to call twice."""

    async def __aenter__(self) -> Link:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
