"""An in-process simulated USB link driving a :class:`DeviceModel`.

Used by ``parallel-flash demo``, ``boot --sim N`` and the scale tests. It is
a real :class:`~.base.Link`: the engine cannot tell it from libusb. Timing is
simulated with an absolute schedule -- transfer *k* of a device completes at
``start + bytes_so_far / link_rate`` (later if a shared bus is saturated) --
so sleep overshoot never accumulates and a link reaches its configured rate.

What it does not model: USB packet overhead (the rate is payload bytes per
second, like the figures devices are quoted at) and host turnaround between
transfers, which is what several transfers in flight hide on real hardware.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable

import anyio
import anyio.lowlevel

from ..errors import DeviceDisconnected, TransferStall, TransferTimeout
from ..protocol.device import OutResult
from ..protocol.messages import FLASHING_PID, MICROSOFT_VID
from ..protocol.models import AnyDeviceModel, AnyFaults, build_model
from ..protocol.nokia.device import NokDeviceModel
from .base import Link, OutChunk, ProgressCallback
from .sim_limits import MAX_SIM_DEVICES, USB2_DEVICE_RATE, USB2_PORT_RATE, check_sim_count

__all__ = (
    "MAX_SIM_DEVICES",
    "USB2_DEVICE_RATE",
    "USB2_PORT_RATE",
    "SimBus",
    "SimLink",
    "check_sim_count",
    "simulated_line",
)
#: How long a simulated device takes to come back on its port after it left.
_REENUMERATE_DELAY = 0.05


class SimBus:
    """A shared ceiling: transfers of every link on the bus are served in turn."""

    def __init__(self, rate: float = USB2_PORT_RATE) -> None:
        if rate <= 0:
            raise ValueError(f"bus rate must be positive, not {rate}")
        self.rate = rate
        self._free_at = 0.0

    def reserve(self, nbytes: int, earliest: float) -> float:
        """Book ``nbytes`` of bus time no earlier than ``earliest``; return when it ends."""
        start = max(self._free_at, earliest)
        self._free_at = start + nbytes / self.rate
        return self._free_at


class SimLink(Link):
    """One simulated device on one simulated port."""

    def __init__(
        self,
        model: AnyDeviceModel,
        *,
        port: str,
        rate: float | None = USB2_DEVICE_RATE,
        bus: SimBus | None = None,
        max_packet_size: int = 512,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError(f"link rate must be positive, not {rate}")
        self.model = model
        self.usb_ids = (
            model.ids if isinstance(model, NokDeviceModel) else (MICROSOFT_VID, FLASHING_PID)
        )
        self.port = port
        self.rate = rate
        self.bus = bus
        self.max_packet_size = max_packet_size
        self.closed = False
        #: Set when the model may have queued a reply (a read waits on it).
        self._reply_wake: anyio.Event | None = None

    # -- single transfers --------------------------------------------------------

    async def control_out(
        self, request_type: int, request: int, value: int, index: int, *, timeout: float
    ) -> None:
        self._check_open()
        await anyio.lowlevel.checkpoint()
        if not self.model.control(request_type, request, value, index):
            self._check_present()
            raise TransferStall(f"{self.port}: control request 0x{request:02x} stalled")

    async def bulk_out(
        self, data: bytes | memoryview, *, timeout: float, zero_packet: bool = False
    ) -> None:
        self._check_open()
        await self._deliver(data, timeout)
        if zero_packet:
            await self._deliver(b"", timeout)

    async def bulk_in(self, size: int, *, timeout: float) -> bytes:
        self._check_open()
        await anyio.lowlevel.checkpoint()
        deadline = time.monotonic() + timeout
        while True:
            reply = self.model.bulk_in(size)
            if reply is not None:
                return reply
            # The model only answers in response to OUT transfers (which may
            # run concurrently, e.g. a stream): wait for one, or the timeout.
            self._check_present()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TransferTimeout(f"{self.port}: no reply within {timeout:g} s")
            wake = self._reply_wake = anyio.Event()
            with anyio.move_on_after(left):
                await wake.wait()

    def _poke(self) -> None:
        """An OUT transfer reached the model: a waiting read looks again."""
        wake = self._reply_wake
        if wake is not None:
            self._reply_wake = None
            wake.set()

    async def _deliver(self, data: bytes | memoryview, timeout: float) -> None:
        await anyio.lowlevel.checkpoint()
        result = self.model.bulk_out(data)
        self._poke()
        if result is OutResult.GONE:
            raise DeviceDisconnected(f"{self.port}: device disconnected")
        if result is OutResult.NAK:
            await anyio.sleep(timeout)
            raise TransferTimeout(
                f"{self.port}: device did not take a {len(data)}-byte transfer within {timeout:g} s"
            )

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
        model = self.model
        rate, bus = self.rate, self.bus
        clock = time.monotonic
        start = clock()
        sent = 0
        for chunk in chunks:
            data = chunk.data
            length = len(data)
            result = model.bulk_out(data)
            if result is OutResult.ACCEPTED and chunk.zero_packet:
                result = model.bulk_out(b"")
            if self._reply_wake is not None:
                self._poke()
            if result is not OutResult.ACCEPTED:
                await self._stream_failed(result, sent, stall_timeout)
            sent += length
            if rate is None and bus is None:
                await anyio.lowlevel.checkpoint()
            else:
                due = start + sent / rate if rate is not None else clock()
                if bus is not None:
                    # The bus serves this transfer no earlier than the link could start it.
                    earliest = due - length / rate if rate is not None else due
                    due = max(due, bus.reserve(length, earliest))
                delay = due - clock()
                if delay > 0:
                    await anyio.sleep(delay)
                else:
                    await anyio.lowlevel.checkpoint()
            on_progress(length)

    async def _stream_failed(self, result: OutResult, sent: int, stall_timeout: float) -> None:
        if result is OutResult.GONE:
            raise DeviceDisconnected(f"{self.port}: device disconnected after {sent} bytes")
        await anyio.sleep(stall_timeout)
        raise TransferTimeout(
            f"{self.port}: device stopped reading after {sent} bytes "
            f"(no transfer completed for {stall_timeout:g} s)"
        )

    # -- re-enumeration ----------------------------------------------------------

    async def wait_return(self, timeout: float) -> tuple[int, int] | None:
        """The model leaves the bus by itself; it comes back as ``returns_as`` (if any)."""
        deadline = anyio.current_time() + timeout
        model = self.model
        while not model.disconnected:
            if anyio.current_time() >= deadline:
                return None
            await anyio.sleep(0.01)
        if not isinstance(model, NokDeviceModel) or model.returns_as is None or model.stays_away:
            await anyio.sleep(max(0.0, deadline - anyio.current_time()))
            return None
        await anyio.sleep(min(_REENUMERATE_DELAY, timeout))
        return model.returns_as

    # -- lifetime ----------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise DeviceDisconnected(f"{self.port}: link is closed")
        self._check_present()

    def _check_present(self) -> None:
        if self.model.disconnected:
            raise DeviceDisconnected(f"{self.port}: device disconnected")

    async def aclose(self) -> None:
        self.closed = True


def simulated_line(
    count: int,
    *,
    rate: float | None = USB2_DEVICE_RATE,
    bus_rate: float | None = None,
    devices_per_bus: int = 0,
    faults: dict[int, AnyFaults] | None = None,
    count_only: bool = False,
    record_transcript: bool = True,
    ram_limit: int = 1 << 32,
    kinds: dict[int, str] | None = None,
) -> list[SimLink]:
    """``count`` simulated devices on ports ``sim-1`` .. ``sim-N``.

    ``faults`` maps a 1-based slot to the faults of that device, ``kinds``
    to its kind (:data:`~parallel_flash.protocol.models.MODEL_KINDS`; SimpleIO when
    not given). With
    ``bus_rate``, devices share one :class:`SimBus` per ``devices_per_bus``
    devices (0 = all on one bus), as devices behind one USB 2.0 root port do.
    """
    check_sim_count(count)
    faults = faults or {}
    kinds = kinds or {}
    unknown = sorted((set(faults) | set(kinds)) - set(range(1, count + 1)))
    if unknown:
        raise ValueError(f"slots {unknown} named, but the line has {count} devices")
    buses: list[SimBus] = []
    links = []
    for slot in range(1, count + 1):
        bus = None
        if bus_rate is not None:
            index = (slot - 1) // devices_per_bus if devices_per_bus else 0
            while len(buses) <= index:
                buses.append(SimBus(bus_rate))
            bus = buses[index]
        kind = kinds.get(slot, "simpleio")
        prefix = {"simpleio": "Contoso", "lumia": "Lumia"}.get(kind, "UFP")
        model = build_model(
            kind,
            name=f"{prefix}.Simulated.{slot:03d}",
            unique_id=uuid.UUID(f"00000011-f151-a509-0000-{slot:012x}"),
            faults=faults.get(slot),
            count_only=count_only,
            record_transcript=record_transcript,
            ram_limit=ram_limit,
        )
        links.append(SimLink(model, port=f"sim-{slot}", rate=rate, bus=bus))
    return links

