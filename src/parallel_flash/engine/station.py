"""Station mode for production lines: boot each device as it is plugged in.

``parallel-flash boot WIM --watch`` keeps running; every device that arrives
in flashing mode (libusb hotplug, or polling where hotplug is missing) and
passes the filters gets its own :func:`~parallel_flash.engine.pipeline.boot_device`
task in one task group, keyed by its port path:

* one boot per port at a time -- repeated or unpaired hotplug events for a
  busy port are ignored; the port is free again once its device finished
  (booted, failed, or unplugged mid-transfer: "disconnected");
* ``--count N`` stops taking devices after N and ends the run when those N
  have finished;
* ``--wait-boot S`` holds a booted device's verdict until it has left
  flashing mode; it fails if it stays, or comes back in flashing mode on the
  same port, within S seconds (the image did not boot).

Counters for the shift (:class:`StationCounters`) are computed from the
records, which is also what the live table and the report read.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
import anyio.abc

from ..errors import InputError, ProtocolError, TransportError
from ..image import ImageBuffer, ImageSet
from ..transport.base import Link
from ..transport.libusb import UsbContext
from .discovery import (
    DEFAULT_POLL_INTERVAL,
    DeviceFilters,
    DeviceInfo,
    filters_from_args,
    identify,
    open_link,
    watch_devices,
)
from .pipeline import BootOptions, boot_device, run_interruptible
from .records import (
    DeviceLog,
    DeviceRecord,
    DeviceState,
    FailureReason,
    LineObserver,
    NullObserver,
    ObserverGroup,
)

if TYPE_CHECKING:
    from ..output.line import LineIntegration

__all__ = ("StationCounters", "StationResult", "run_station", "run_station_cli")

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StationCounters:
    """The shift so far (what the operator's screen sums up)."""

    booted: int = 0
    failed: int = 0
    in_progress: int = 0
    #: Image bytes sent to every device of the shift, finished or not.
    bytes_sent: int = 0

    @property
    def total(self) -> int:
        return self.booted + self.failed + self.in_progress

    @classmethod
    def of(cls, records: list[DeviceRecord]) -> StationCounters:
        """Counted from the records (the engine may append while this runs)."""
        snapshot = list(records)
        booted = sum(record.state is DeviceState.BOOTED for record in snapshot)
        failed = sum(record.state is DeviceState.FAILED for record in snapshot)
        return cls(
            booted=booted,
            failed=failed,
            in_progress=len(snapshot) - booted - failed,
            bytes_sent=sum(record.bytes_done for record in snapshot),
        )


@dataclass(slots=True)
class StationResult:
    """What a station run produced."""

    records: list[DeviceRecord] = field(default_factory=list)
    interrupted: bool = False

    @property
    def counters(self) -> StationCounters:
        return StationCounters.of(self.records)

    @property
    def all_booted(self) -> bool:
        return bool(self.records) and all(record.ok for record in self.records)


class _Port:
    """A port with a device being booted (or awaited to leave flashing mode)."""

    __slots__ = ("device", "left", "next", "record", "returned", "waiting_boot")

    def __init__(self, device: DeviceInfo) -> None:
        self.device = device
        #: A new device plugged into this port before the old one's boot ended
        #: (replugged faster than the failure was noticed): booted next.
        self.next: DeviceInfo | None = None
        self.record: DeviceRecord | None = None
        self.waiting_boot = False
        #: The device we booted left (flashing mode ended).
        self.left = anyio.Event()
        #: A device came back in flashing mode on this port during --wait-boot.
        self.returned = anyio.Event()


class _HoldBooted:
    """Passes everything on, except the finish of a booted device under --wait-boot.

    That verdict is only final once the device has left flashing mode, so
    the report and the table hear of it when the station says so.
    """

    def __init__(self, inner: LineObserver) -> None:
        self.inner = inner

    def device_added(self, record: DeviceRecord) -> None:
        self.inner.device_added(record)

    def device_changed(self, record: DeviceRecord) -> None:
        self.inner.device_changed(record)

    def device_log(self, record: DeviceRecord, log: DeviceLog) -> None:
        self.inner.device_log(record, log)

    def device_finished(self, record: DeviceRecord) -> None:
        if record.state is not DeviceState.BOOTED:
            self.inner.device_finished(record)


class _Station:
    def __init__(
        self,
        image: ImageBuffer | ImageSet,
        *,
        filters: DeviceFilters,
        options: BootOptions,
        observer: LineObserver,
        count: int | None,
        wait_boot: float | None,
        records: list[DeviceRecord],
    ) -> None:
        self.image = image
        self.filters = filters
        self.options = options
        self.observer = observer
        self.boot_observer: LineObserver = _HoldBooted(observer) if wait_boot else observer
        self.count = count
        self.wait_boot = wait_boot
        self.records = records
        self.ports: dict[str, _Port] = {}
        #: Devices taken towards --count (claimed on arrival, returned on an --id mismatch).
        self.claimed = 0
        #: Arrivals after --count was reached, by port: taken if a claim is returned.
        self.deferred: dict[str, DeviceInfo] = {}
        self.done = anyio.Event()
        self.ctx: UsbContext | None = None

    # -- arrivals ----------------------------------------------------------------------

    def arrived(self, device: DeviceInfo, group: anyio.abc.TaskGroup) -> None:
        busy = self.ports.get(device.port)
        if busy is not None:
            if busy.device.key == device.key:
                logger.debug("%s: already being booted; ignoring a repeated arrival", device.port)
            elif busy.waiting_boot:
                busy.returned.set()
            else:
                logger.info(
                    "%s: a new device arrived; it is booted once the port is free", device.port
                )
                busy.next = device
            return
        if self.count is not None and self.claimed >= self.count:
            # Kept in case a claimed device turns out not to match --id.
            self.deferred[device.port] = device
            logger.info("%s: --count %d reached; not booted", device.port, self.count)
            return
        self.claimed += 1
        port = _Port(device)
        self.ports[device.port] = port
        logger.info("%s: device %s arrived", device.port, device.usb_id)
        group.start_soon(self._run_port, port, group, name=f"boot {device.port}")

    def left(self, device: DeviceInfo) -> None:
        deferred = self.deferred.get(device.port)
        if deferred is not None and deferred.key == device.key:
            del self.deferred[device.port]
        busy = self.ports.get(device.port)
        if busy is None:
            return
        if busy.next is not None and busy.next.key == device.key:
            busy.next = None
            return
        if busy.device.key != device.key:
            return
        if not busy.waiting_boot:
            logger.info("%s: device left while being booted", device.port)
        busy.left.set()

    # -- one device ----------------------------------------------------------------------

    async def _run_port(self, port: _Port, group: anyio.abc.TaskGroup) -> None:
        try:
            await self._boot(port)
        finally:
            del self.ports[port.device.port]
            self._check_done()
        if port.next is not None:
            self.arrived(port.next, group)
        while self.deferred and (self.count is None or self.claimed < self.count):
            _, device = self.deferred.popitem()
            self.arrived(device, group)

    def _check_done(self) -> None:
        if self.count is not None and self.claimed >= self.count and not self.ports:
            self.done.set()

    async def _boot(self, port: _Port) -> None:
        assert self.ctx is not None
        device = port.device
        try:
            link: Link = await open_link(self.ctx, device)
        except (TransportError, ProtocolError) as exc:
            record = self._new_record(device)
            self._fail(record, f"cannot open the device: {exc}")
            return
        try:
            if self.filters.needs_identity and not await self._wanted(link):
                self.claimed -= 1
                return
            record = self._new_record(device)
            port.record = record
            await boot_device(link, self.image, record, self.options, self.boot_observer)
        finally:
            with anyio.CancelScope(shield=True):
                await link.aclose()
        if record.ok and self.wait_boot:
            await self._confirm_boot(port, record)

    async def _wanted(self, link: Link) -> bool:
        try:
            identity = await identify(link, timeout=self.options.id_timeout)
        except (TransportError, ProtocolError) as exc:
            logger.warning("%s: Id exchange failed, cannot check --id: %s", link.port, exc)
            return False
        unique_id = identity.reply.unique_id
        if not self.filters.matches_id(unique_id):
            logger.info("%s: device %s is not one of --id; not booted", link.port, unique_id)
            return False
        return True

    def _new_record(self, device: DeviceInfo) -> DeviceRecord:
        record = DeviceRecord(slot=len(self.records) + 1, port=device.port)
        self.records.append(record)
        self.observer.device_added(record)
        return record

    def _fail(self, record: DeviceRecord, error: str) -> None:
        record.state = DeviceState.FAILED
        record.error = error
        record.reason = FailureReason.USB_ERROR
        record.finished = time.monotonic()
        logger.info("%s: failed: %s", record.port, error)
        self.observer.device_finished(record)

    async def _confirm_boot(self, port: _Port, record: DeviceRecord) -> None:
        """--wait-boot: the device must leave flashing mode and stay away."""
        assert self.wait_boot is not None
        port.waiting_boot = True
        error: str | None = None
        try:
            with anyio.move_on_after(self.wait_boot):
                await port.left.wait()
                await port.returned.wait()
                error = (
                    "came back in flashing mode on the same port after the boot "
                    "(the image did not boot)"
                )
            if not port.left.is_set():
                error = f"still in flashing mode {self.wait_boot:g} s after the boot"
        finally:
            if error is not None:
                record.state = DeviceState.FAILED
                record.error = error
                record.reason = FailureReason.NOT_BOOTED
                logger.info("%s: failed: %s", record.port, error)
            self.observer.device_finished(record)

    # -- the run -------------------------------------------------------------------------

    async def run(
        self, *, polling: bool | None, poll_interval: float, on_ready: Callable[[], None] | None
    ) -> None:
        async with UsbContext() as ctx, anyio.create_task_group() as group:
            self.ctx = ctx
            group.start_soon(self._watch, group, polling, poll_interval, on_ready)
            await self.done.wait()
            group.cancel_scope.cancel()

    async def _watch(
        self,
        group: anyio.abc.TaskGroup,
        polling: bool | None,
        poll_interval: float,
        on_ready: Callable[[], None] | None,
    ) -> None:
        assert self.ctx is not None
        events = watch_devices(self.ctx, self.filters, polling=polling, poll_interval=poll_interval)
        async with contextlib.aclosing(events):
            if on_ready is not None:
                on_ready()
            async for event in events:
                if event.arrived:
                    self.arrived(event.device, group)
                else:
                    self.left(event.device)


async def run_station(
    image: ImageBuffer | ImageSet,
    *,
    filters: DeviceFilters | None = None,
    options: BootOptions | None = None,
    observer: LineObserver | None = None,
    count: int | None = None,
    wait_boot: float | None = None,
    polling: bool | None = None,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    records: list[DeviceRecord] | None = None,
    on_ready: Callable[[], None] | None = None,
) -> StationResult:
    """Boot every matching device as it arrives, until ``count`` devices have finished.

    Without ``count`` it runs until cancelled (Ctrl-C in the CLI); every
    device under way is then finished as "interrupted" by the engine.

    :param filters: which devices to take (default: every device in flashing mode)
    :param count: stop taking devices after this many, and return once they finished
    :param wait_boot: seconds a booted device has to leave flashing mode without
        coming back on the same port; otherwise it is failed
    :param polling: True = poll the device list, False = libusb hotplug, None = hotplug
        when libusb has it
    :param records: receives each device's record as it is added (a caller that
        cancels the run still holds them all)
    :param on_ready: called once the station is watching for devices
    :raises ~parallel_flash.errors.InputError: ``count`` below 1 or ``wait_boot`` not positive
    """
    if count is not None and count < 1:
        raise InputError(f"--count must be at least 1, not {count}")
    if wait_boot is not None and not wait_boot > 0:
        raise InputError(f"--wait-boot must be a positive number of seconds, not {wait_boot}")
    station = _Station(
        image,
        filters=filters or DeviceFilters(),
        options=options or BootOptions(),
        observer=observer or NullObserver(),
        count=count,
        wait_boot=wait_boot,
        records=records if records is not None else [],
    )
    await station.run(polling=polling, poll_interval=poll_interval, on_ready=on_ready)
    return StationResult(records=station.records)


def run_station_cli(
    args: argparse.Namespace,
    image: ImageBuffer | ImageSet,
    options: BootOptions,
    line: LineIntegration | None = None,
) -> int:
    """``parallel-flash boot WIM --watch``: the station with table, report and Ctrl-C."""
    from ..cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
    from ..output.report import JsonlReport
    from ..session import Presentation

    filters = filters_from_args(args)
    if args.count is not None and args.count < 1:
        raise InputError(f"--count must be at least 1, not {args.count}")
    records: list[DeviceRecord] = []
    with contextlib.ExitStack() as stack:
        # Entered first, closed last: the last results go out after the report has them.
        integration = stack.enter_context(line) if line is not None else None
        observers: list[LineObserver] = []
        report = None
        if args.report is not None:
            report = stack.enter_context(
                JsonlReport.open(
                    args.report,
                    wim=image.wim_path,
                    sdi=image.sdi_path,
                    image_sha256=image.sha256,
                    image_bytes=image.total_length,
                    append=args.append,
                )
            )
            observers.append(report)
        if integration is not None:
            integration.attach(report)
            observers.extend(integration.observers)
        presentation = Presentation(live=args.live, title=f"station: {args.wim}")
        observers.append(stack.enter_context(presentation.observer(image)))
        group = ObserverGroup(*observers)
        bound = f"; stopping after {args.count} devices" if args.count else "; Ctrl-C to stop"

        def ready() -> None:
            print(
                f"parallel-flash: station ready, waiting for devices ({filters.describe()}){bound}",
                file=sys.stderr,
                flush=True,
            )

        async def work() -> None:
            await run_station(
                image,
                filters=filters,
                options=options,
                observer=group,
                count=args.count,
                wait_boot=args.wait_boot,
                polling=True if args.poll else None,
                records=records,
                on_ready=ready,
            )

        _, interrupted = anyio.run(run_interruptible, work)
        if report is not None:
            report.finish_unfinished(records, reason="interrupted")
            report.close(interrupted=interrupted)
        if integration is not None:
            integration.close(records, interrupted=interrupted)
        group.check()
    counters = StationCounters.of(records)
    print(
        f"parallel-flash: station: {counters.booted} booted, {counters.failed} failed",
        file=sys.stderr,
    )
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if records and counters.failed == 0 else EXIT_FAILED
