"""Boot devices as they are plugged in (station mode), or the ones present now (one-shot).

:func:`run_station` watches for devices in flashing mode (libusb hotplug, or
polling where hotplug is missing) and gives each port its own task in one
task group:

* one device per port at a time -- repeated or unpaired hotplug events for a
  busy port are ignored; a new device plugged into a busy port is served
  once the port is free;
* every device found ends in a record, including one that cannot be opened
  (busy, permission denied, gone) or fails its identification;
* ``count`` stops taking devices after N and ends the run when those N have
  finished; ``once`` takes only the devices present at the start (one-shot
  ``boot``);
* boot confirmation by identity (:class:`Confirmation`, modelled on
  Microsoft's WIM-then-flash flow): after its status a device must leave
  flashing mode within the window and, with ``expect``, appear on the same
  port as the booted image (without ``expect``, the verdict waits for the end
  of the window: leaving and not coming back is the confirmation; its time is
  when it left). Whatever appears in flashing mode on that port
  meanwhile is identified (one Id exchange) before anything is decided: the
  same unique ID is a failed boot ("came back"), another one is a new device
  (the operator swapped), booted and recorded as such. After a boot (confirmed
  or not), a phone that comes back on its port with the unique ID booted
  there less than :data:`COMEBACK_WINDOW` seconds ago is recorded as a failed
  boot, not booted a second time;
* retries (``BootOptions.retries``): a device that fails before any image
  byte is retried by the engine; one whose link failed mid-way is retried if
  it re-enumerates in flashing mode on its port within
  :data:`REENUMERATE_WINDOW` seconds with the same unique ID.

Finished records leave the station's state at once (the report is the
history); :class:`~parallel_flash.engine.LineCounters` keep the shift's
counts. This module never prints and knows no exit codes: the session
(:mod:`parallel_flash.session`) wires presentation, report and signals.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

import anyio
import anyio.abc

from ..errors import InvalidValue, ProtocolError, TransportError
from ..image import ImageBuffer, ImageSet
from ..protocol.loader import DeviceIdentity
from ..transport.base import Link
from ..transport.libusb import UsbContext
from .confirmation import (
    COMEBACK_WINDOW,
    DEFAULT_CONFIRM_SECONDS,
    REENUMERATE_WINDOW,
    RETURN_IDENTIFY_ATTEMPTS,
    RETURN_IDENTIFY_PAUSE,
    Confirmation,
    Intake,
    PortWatch,
)
from .discovery import (
    DEFAULT_POLL_INTERVAL,
    DeviceFilters,
    DeviceInfo,
    find_devices,
    watch_devices,
)
from .pipeline import (
    AttemptEnd,
    BootOptions,
    LineCounters,
    LineResult,
    boot_device,
    end_record,
    identify_device,
    record_attempt,
)
from .records import (
    DeviceLog,
    DeviceRecord,
    DeviceState,
    FailureReason,
    LineObserver,
    NullObserver,
)

__all__ = (
    "COMEBACK_WINDOW",
    "DEFAULT_CONFIRM_SECONDS",
    "REENUMERATE_WINDOW",
    "Confirmation",
    "Intake",
    "check_device_count",
    "run_station",
)

logger = logging.getLogger(__name__)

#: Before opening again a device that could not be opened (``--retries``): a
#: claim can fail for a moment while the system settles a fresh enumeration.
OPEN_RETRY_PAUSE = 0.5

class _Counting:
    """Passes every call on; keeps the shift's counters and drops finished records.

    Under confirmation the finish of a booted device is held back: that verdict
    is only final once the station says so.
    """

    def __init__(self, station: _Station, inner: LineObserver) -> None:
        self.station = station
        self.inner = inner

    def device_added(self, record: DeviceRecord) -> None:
        self.inner.device_added(record)

    def device_changed(self, record: DeviceRecord) -> None:
        self.inner.device_changed(record)

    def device_log(self, record: DeviceRecord, log: DeviceLog) -> None:
        self.inner.device_log(record, log)

    def device_finished(self, record: DeviceRecord) -> None:
        station = self.station
        if (
            record.state is DeviceState.BOOTED
            and station.confirmation is not None
            and record.confirmed is None
        ):
            return  # held until confirmed
        station.result.counters = station.result.totals.plus(record)
        if not station.keep_records:
            with contextlib.suppress(ValueError):
                station.records.remove(record)
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
        confirmation: Confirmation | None,
        once: bool,
        intake: Intake,
        result: LineResult,
    ) -> None:
        self.image = image
        self.filters = filters
        self.options = options
        self.confirmation = confirmation
        self.count = count
        self.once = once
        self.intake = intake
        self.result = result
        self.records = result.records
        self.keep_records = once
        self.observer: LineObserver = _Counting(self, observer)
        self.ports: dict[str, PortWatch] = {}
        #: Devices taken towards ``count`` (claimed on arrival, given back on an ID mismatch).
        self.claimed = 0
        #: Arrivals after ``count`` was reached, by port: taken if a claim is given back.
        self.deferred: dict[str, DeviceInfo] = {}
        #: Without confirmation: port -> (unique ID, when) of the last boot there.
        self.recent_boots: dict[str, tuple[str, float]] = {}
        self.slots = 0
        self.done = anyio.Event()
        self.ctx: UsbContext | None = None
        self.group: anyio.abc.TaskGroup | None = None

    # -- arrivals and departures --------------------------------------------------------

    def arrived(self, device: DeviceInfo) -> None:
        busy = self.ports.get(device.port)
        # Once the port's device has left flashing mode, whatever appears there is
        # for its confirmation to judge, even if it appears before the
        # confirmation starts watching (the gap after the status, under load).
        judging = busy is not None and (busy.watching or busy.left)
        if self._is_expected(device):
            if busy is not None and judging:
                busy.expected = True
                busy.poke()
            return
        if busy is not None:
            if busy.device.key == device.key:
                logger.debug("%s: already being served; ignoring a repeated arrival", device.port)
            elif judging:
                busy.returned = device
                busy.poke()
            else:
                logger.info("%s: a new device arrived; served once the port is free", device.port)
                busy.next = device
            return
        if self.once or self.intake.stopped.is_set():
            logger.info("%s: device %s arrived; not taken (%s)", device.port, device.usb_id,
                        "one-shot run" if self.once else self.intake.reason)
            return
        self._take(device)

    def _take(self, device: DeviceInfo, link: Link | None = None) -> None:
        if self.count is not None and self.claimed >= self.count:
            # Kept in case a claimed device turns out not to match the ID filter.
            self.deferred[device.port] = device
            logger.info("%s: device count %d reached; not booted", device.port, self.count)
            return
        self.claimed += 1
        port = PortWatch(device, link)
        self.ports[device.port] = port
        logger.info("%s: device %s arrived", device.port, device.usb_id)
        assert self.group is not None
        self.group.start_soon(self._run_port, port, name=f"boot {device.port}")

    def _is_expected(self, device: DeviceInfo) -> bool:
        confirmation = self.confirmation
        return (
            confirmation is not None
            and confirmation.expect == (device.vendor_id, device.product_id)
            and not self.filters.matches(device)
        )

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
        if busy.returned is not None and busy.returned.key == device.key:
            busy.returned = None
            return
        if busy.device.key == device.key:
            busy.left = True
            busy.left_at = time.monotonic()
            busy.poke()

    # -- one port ------------------------------------------------------------------------

    async def _run_port(self, port: PortWatch) -> None:
        try:
            device: DeviceInfo | None = port.device
            while device is not None:
                port.device, port.left, port.returned, port.expected = device, False, None, False
                device = await self._serve(port, device)
                pending = port.next or port.returned
                if device is None and pending is not None and not self._closing():
                    device, port.next, port.returned = pending, None, None
                if device is not None and port.device is not device:
                    if self.count is not None and self.claimed >= self.count:
                        self.deferred[device.port] = device
                        device = None
                    else:
                        self.claimed += 1
        finally:
            del self.ports[port.device.port]
            self._after_port()

    def _closing(self) -> bool:
        return self.once or self.intake.stopped.is_set()

    def _after_port(self) -> None:
        while (
            self.deferred
            and not self._closing()
            and (self.count is None or self.claimed < self.count)
        ):
            _, device = self.deferred.popitem()
            self.arrived(device)
        if self.ports:
            return
        counted = self.count is not None and self.claimed >= self.count
        if self._closing() or counted:
            self.done.set()

    async def _serve(self, port: PortWatch, device: DeviceInfo) -> DeviceInfo | None:
        """Boot the device on ``port`` (with its retries and confirmation).

        Returns another device to serve on the same port next (a swap), or None.
        """
        record: DeviceRecord | None = None
        while True:
            link, port.link = port.link or await self._open(device, record), None
            if link is None:
                return None
            try:
                if record is None:
                    if self.filters.needs_identity and not await self._wanted(link):
                        self.claimed -= 1
                        return None
                    record = self._new_record(device)
                end = await boot_device(
                    link, self.image, record, self.options, self.observer,
                    admit=self._admit_for(device.port),
                    final=len(record.attempts) >= self.options.retries,
                )
            finally:
                with anyio.CancelScope(shield=True):
                    await link.aclose()
            if end is AttemptEnd.BOOTED:
                # A loader that saw its own boot confirmed (Lumia) needs no second verdict.
                if self.confirmation is not None and record.confirmed is None:
                    return await self._confirm(port, record)
                self.recent_boots[device.port] = (record.unique_id, time.monotonic())
                return None
            if record.state.finished:
                return None
            # A transport failure with retries left: the device may re-enumerate.
            again = await self._await_return(port, REENUMERATE_WINDOW)
            if again is None:
                await self._fail(record, record.error)
                return None
            identity = await self._identify(again)
            if identity is None or str(identity.unique_id) != record.unique_id:
                await self._fail(record, record.error)
                return again
            logger.info("%s: re-enumerated; attempt %d", device.port, len(record.attempts) + 1)
            device = again
            port.device, port.left, port.returned = again, False, None

    async def _fail(
        self, record: DeviceRecord, error: str | None, reason: FailureReason | None = None
    ) -> None:
        await end_record(record, self.observer, self.image, DeviceState.FAILED, error, reason)

    async def _open(self, device: DeviceInfo, record: DeviceRecord | None) -> Link | None:
        """Open ``device``; a refusal is an attempt that sent no image byte (retried if allowed)."""
        assert self.ctx is not None
        while True:
            started = time.monotonic()
            try:
                return await self.ctx.open(device)
            except (TransportError, ProtocolError) as exc:
                record = record or self._new_record(device)
                detail = str(exc).removeprefix(f"{device.port}: ")
                error = f"cannot open the device: {detail}"
                retry = (
                    len(record.attempts) < self.options.retries
                    and not self.intake.stopped.is_set()
                )
                if retry or record.attempts:
                    record_attempt(record, error, started)
                if not retry:
                    await self._fail(record, error, FailureReason.USB_ERROR)
                    return None
                logger.info("%s: %s; attempt %d in %g s", device.port, error,
                            len(record.attempts) + 1, OPEN_RETRY_PAUSE)
                await anyio.sleep(OPEN_RETRY_PAUSE)

    async def _wanted(self, link: Link) -> bool:
        try:
            identity, _logs = await identify_device(link, self.options)
        except (TransportError, ProtocolError) as exc:
            logger.warning("%s: Id exchange failed, cannot check the ID filter: %s", link.port, exc)
            return False
        if not self.filters.matches_id(identity.unique_id):
            logger.info("%s: device %s is not asked for; not booted", link.port, identity.unique_id)
            return False
        return True

    async def _identify(self, device: DeviceInfo) -> DeviceIdentity | None:
        """One Id exchange with a device that appeared on a watched port (None = no answer)."""
        assert self.ctx is not None
        try:
            link = await self.ctx.open(device)
        except (TransportError, ProtocolError) as exc:
            logger.info("%s: cannot open the device that appeared: %s", device.port, exc)
            return None
        try:
            identity, _logs = await identify_device(link, self.options)
            return identity
        except (TransportError, ProtocolError) as exc:
            logger.info("%s: the device that appeared did not identify: %s", device.port, exc)
            return None
        finally:
            with anyio.CancelScope(shield=True):
                await link.aclose()

    def _admit_for(self, port: str) -> Callable[[DeviceIdentity], str | None] | None:
        recent = self.recent_boots.get(port)
        if recent is None:
            return None
        unique_id, booted_at = recent
        if time.monotonic() - booted_at > COMEBACK_WINDOW:
            del self.recent_boots[port]
            return None

        def admit(identity: DeviceIdentity) -> str | None:
            if str(identity.unique_id) != unique_id:
                return None
            seconds = time.monotonic() - booted_at
            return (
                f"came back in flashing mode {seconds:.1f} s after it booted on this port "
                "(the image did not boot)"
            )

        return admit

    def _new_record(self, device: DeviceInfo) -> DeviceRecord:
        self.slots += 1
        record = DeviceRecord(slot=self.slots, port=device.port)
        self.records.append(record)
        self.observer.device_added(record)
        return record

    async def _await_return(self, port: PortWatch, seconds: float) -> DeviceInfo | None:
        """Wait up to ``seconds`` for a flashing-mode device to appear on ``port``."""
        port.watching = True
        try:
            with anyio.move_on_after(seconds):
                while port.returned is None:
                    await port.changed.wait()
            found, port.returned = port.returned, None
            return found
        finally:
            port.watching = False

    # -- confirmation ----------------------------------------------------------------------

    async def _confirm(self, port: PortWatch, record: DeviceRecord) -> DeviceInfo | None:
        """Hold a booted record until the boot is confirmed, refuted or the window ends.

        Returns a new device that appeared on the port meanwhile (a swap), to be
        served next, or None.
        """
        confirmation = self.confirmation
        assert confirmation is not None
        started = time.monotonic()
        deadline = started + confirmation.seconds
        expect = confirmation.expect
        port.watching = True
        verdict: tuple[DeviceState, bool, str | None] | None = None
        swap: DeviceInfo | None = None
        try:
            with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
                while verdict is None:
                    if port.returned is not None:
                        verdict, swap = await self._judge_return(port, record, started)
                    elif expect is not None and port.expected:
                        verdict = (DeviceState.BOOTED, True, None)
                    else:
                        await port.changed.wait()
            if verdict is None and not port.left:
                verdict = (
                    DeviceState.FAILED, False,
                    f"still in flashing mode {confirmation.seconds:g} s after its boot",
                )
            elif verdict is None and expect is not None:
                verdict = (
                    DeviceState.FAILED, False,
                    f"left flashing mode but was not seen as {expect[0]:04x}:{expect[1]:04x} "
                    f"on its port within {confirmation.seconds:g} s of its boot",
                )
            elif verdict is None:
                # Left flashing mode and did not come back within the window.
                verdict = (DeviceState.BOOTED, True, None)
                record.confirm_seconds = round(max(0.0, port.left_at - started), 3)
            return swap
        except anyio.get_cancelled_exc_class():
            verdict = (DeviceState.INTERRUPTED, False, "interrupted before the boot was confirmed")
            raise
        finally:
            port.watching = False
            if verdict is not None:
                self._conclude(record, started, *verdict)
                if verdict[0] is DeviceState.BOOTED:
                    self.recent_boots[record.port] = (record.unique_id, time.monotonic())

    async def _judge_return(
        self, port: PortWatch, record: DeviceRecord, started: float
    ) -> tuple[tuple[DeviceState, bool, str | None], DeviceInfo | None]:
        """A flashing-mode device appeared on a confirming port: the same phone or another?"""
        device, port.returned = port.returned, None
        assert device is not None
        identity = None
        for attempt in range(RETURN_IDENTIFY_ATTEMPTS):
            if attempt:
                await anyio.sleep(RETURN_IDENTIFY_PAUSE)
            with anyio.CancelScope(shield=True):
                identity = await self._identify(device)
            if identity is not None:
                break
        seconds = time.monotonic() - started
        if identity is None:
            # Nothing is decided on a phone we could not name: the boot stays
            # unconfirmed (never a success), and the device is served as found.
            return (
                DeviceState.FAILED, False,
                f"a device in flashing mode appeared on its port {seconds:.1f} s after its "
                f"boot and did not answer {RETURN_IDENTIFY_ATTEMPTS} Id exchanges: "
                "boot not confirmed",
            ), device
        if str(identity.unique_id) == record.unique_id:
            return (
                DeviceState.FAILED, False,
                f"came back in flashing mode {seconds:.1f} s after its boot "
                "(the image did not boot)",
            ), None
        # Another phone: the operator swapped early. The first one left flashing
        # mode (that is how the second could appear); the second is a new device.
        return (DeviceState.BOOTED, True, None), device

    def _conclude(
        self, record: DeviceRecord, started: float, state: DeviceState, confirmed: bool,
        error: str | None,
    ) -> None:
        record.confirmed = confirmed
        if record.confirm_seconds is None:
            record.confirm_seconds = round(time.monotonic() - started, 3)
        if state is not DeviceState.BOOTED:
            record.state = state
            record.error = error
            record.reason = (
                FailureReason.INTERRUPTED
                if state is DeviceState.INTERRUPTED
                else FailureReason.NOT_BOOTED
            )
            logger.info("%s: %s: %s", record.port, state.value, error)
        self.observer.device_finished(record)

    # -- the run -----------------------------------------------------------------------

    async def run(
        self, *, polling: bool | None, poll_interval: float, on_ready: Callable[[], None] | None
    ) -> None:
        async with UsbContext() as ctx, anyio.create_task_group() as group:
            self.ctx, self.group = ctx, group
            if self.once:
                opened = [
                    (device, await self._open(device, None))
                    for device in find_devices(ctx, self.filters)
                ]
                for device, link in opened:
                    if link is not None:
                        self._take(device, link)
                if not opened:
                    logger.warning(
                        "no device in flashing mode found (%s)", self.filters.describe()
                    )
                if not self.ports:
                    self.done.set()
            group.start_soon(self._watch, polling, poll_interval, on_ready)
            group.start_soon(self._stop_intake_when_told)
            await self.done.wait()
            group.cancel_scope.cancel()

    async def _stop_intake_when_told(self) -> None:
        await self.intake.stopped.wait()
        self.deferred.clear()
        if not self.ports:
            self.done.set()

    async def _watch(
        self, polling: bool | None, poll_interval: float, on_ready: Callable[[], None] | None
    ) -> None:
        assert self.ctx is not None
        expect = self.confirmation.expect if self.confirmation else None
        events = watch_devices(
            self.ctx, self.filters, polling=polling, poll_interval=poll_interval,
            also=(expect,) if expect else (),
        )
        async with contextlib.aclosing(events):
            if on_ready is not None:
                on_ready()
            async for event in events:
                if event.arrived:
                    self.arrived(event.device)
                else:
                    self.left(event.device)


def check_device_count(count: int) -> int:
    """``count`` if a station can be asked to stop after that many devices.

    :raises ~parallel_flash.errors.InvalidValue: below 1.
    """
    if count < 1:
        raise InvalidValue(f"device count must be at least 1, not {count}")
    return count


async def run_station(
    image: ImageBuffer | ImageSet,
    *,
    filters: DeviceFilters | None = None,
    options: BootOptions | None = None,
    observer: LineObserver | None = None,
    count: int | None = None,
    confirmation: Confirmation | None = None,
    once: bool = False,
    polling: bool | None = None,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    result: LineResult | None = None,
    intake: Intake | None = None,
    on_ready: Callable[[], None] | None = None,
) -> LineResult:
    """Boot every matching device as it arrives, until ``count`` devices have finished.

    Without ``count`` (and without ``once``) it runs until cancelled; every
    device under way is then finished as INTERRUPTED by the engine.

    :param filters: which devices to take (default: every device in flashing mode)
    :param count: stop taking devices after this many, and return once they finished
    :param confirmation: confirm each boot (see :class:`Confirmation`); None = do not
    :param once: take only the devices present now (one-shot ``boot``)
    :param polling: True = poll the device list, False = libusb hotplug, None = hotplug
        when libusb has it
    :param result: filled in as the run goes (records of devices under way -- with
        ``once``, every record -- and the counters), so a caller that cancels the
        run still has it
    :param intake: stop it to start no new device (the run ends once those under
        way have finished)
    :param on_ready: called once the station is watching for devices
    :raises ~parallel_flash.errors.InvalidValue: ``count`` below 1
    """
    if count is not None:
        check_device_count(count)
    result = result if result is not None else LineResult()
    result.counters = LineCounters()
    station = _Station(
        image,
        filters=filters or DeviceFilters(),
        options=options or BootOptions(),
        observer=observer or NullObserver(),
        count=count,
        confirmation=confirmation,
        once=once,
        intake=intake or Intake(),
        result=result,
    )
    await station.run(polling=polling, poll_interval=poll_interval, on_ready=on_ready)
    return result
