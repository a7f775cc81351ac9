"""Access to USB for one async task tree: enumeration, hotplug, opening devices.

Every open :class:`UsbContext` of the process shares the same event threads
(:class:`~.events.Shards`, reference counted). Links opened through it are
closed when it exits, in the documented order: links first (transfers
cancelled and awaited, interface released, handle closed), then, when the
last user leaves, the event threads and their contexts.

The event loop must be asyncio (anyio's default backend): completions are
handed over with :meth:`asyncio.AbstractEventLoop.call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
from collections.abc import AsyncIterator

import anyio
import usb1
from anyio.streams.memory import MemoryObjectReceiveStream

from ..usbfs import UsbfsBudget, process_budget
from .devices import HotplugEvent, UsbDeviceInfo, describe
from .events import (
    DEFAULT_EVENT_THREADS,
    DEVICES_PER_EVENT_THREAD,
    EventThread,
    Shards,
    event_threads_setting,
)
from .link import UsbLink

__all__ = ("SHARD_FIND_WAIT", "UsbContext", "hotplug_supported")

logger = logging.getLogger(__name__)

#: How long opening a device on a new shard waits for that shard's libusb
#: context to have seen the device arrive (hotplug reaches contexts one
#: after another); after that it is opened on the first shard instead.
SHARD_FIND_WAIT = 0.25

_shards: Shards | None = None


def hotplug_supported() -> bool:
    """Whether this libusb delivers hotplug events (else poll)."""
    return bool(usb1.hasCapability(usb1.CAP_HAS_HOTPLUG))


class UsbContext:
    """Access to USB for one async task tree; ``async with UsbContext() as usb:``.

    :param budget: the usbfs memory budget for links opened here; defaults to
        the process-wide one (read from sysfs).
    :param event_threads: spread devices over up to this many event threads
        (libusb contexts), one each first, when this is the first context of
        the process; default ``$PARALLEL_FLASH_EVENT_THREADS``, else one
        thread per :data:`~.events.DEVICES_PER_EVENT_THREAD` devices up to
        :data:`~.events.DEFAULT_EVENT_THREADS`.
    """

    def __init__(
        self, *, budget: UsbfsBudget | None = None, event_threads: int | None = None
    ) -> None:
        self._budget = budget
        self._event_threads = event_threads
        self._links: set[UsbLink] = set()
        self._shards: Shards | None = None

    @property
    def budget(self) -> UsbfsBudget:
        if self._budget is None:
            self._budget = process_budget()
        return self._budget

    async def __aenter__(self) -> UsbContext:
        global _shards
        if self._shards is not None:
            raise RuntimeError("UsbContext is already open")
        if _shards is None:
            explicit = self._event_threads or event_threads_setting()
            _shards = (
                Shards(explicit)
                if explicit
                else Shards(DEFAULT_EVENT_THREADS, DEVICES_PER_EVENT_THREAD)
            )
        _shards.users += 1
        self._shards = _shards
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every link opened here, then release the shared event threads."""
        global _shards
        shards, self._shards = self._shards, None
        if shards is None:
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
            shards.users -= 1
            if shards.users == 0:
                if _shards is shards:
                    _shards = None
                shards.close()

    @property
    def open_links(self) -> int:
        """Devices open through this context now (they share the usbfs budget)."""
        return len(self._links)

    def _require(self) -> Shards:
        if self._shards is None:
            raise RuntimeError("UsbContext is not open (use 'async with UsbContext()')")
        return self._shards

    @property
    def _usb(self) -> usb1.USBContext:
        return self._require().primary.usb

    # -- enumeration ---------------------------------------------------------------

    def devices(self) -> list[UsbDeviceInfo]:
        """Every USB device present now (synchronous; the list is libusb's cache)."""
        return [describe(device) for device in self._usb.getDeviceIterator(skip_on_error=True)]

    async def enumerate(self) -> list[UsbDeviceInfo]:
        """Like :meth:`devices`, off the event loop's thread (a rescan may read sysfs)."""
        return await anyio.to_thread.run_sync(self.devices)

    @contextlib.asynccontextmanager
    async def hotplug(
        self, *, vendor_id: int | None = None, product_id: int | None = None
    ) -> AsyncIterator[MemoryObjectReceiveStream[HotplugEvent]]:
        """libusb hotplug events as a stream; devices already present come first.

        The callback runs on the first event thread and only describes the
        device from libusb's cache (no string descriptors, no synchronous
        calls). Events may repeat or come unpaired: callers deduplicate by
        port path.
        """
        primary = self._require().primary
        usb = primary.usb
        loop = asyncio.get_running_loop()
        send, receive = anyio.create_memory_object_stream[HotplugEvent](math.inf)

        def deliver(event: HotplugEvent) -> None:
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                send.send_nowait(event)

        def callback(_context: usb1.USBContext, device: usb1.USBDevice, kind: int) -> bool:
            primary.callbacks += 1
            try:
                event = HotplugEvent(kind == usb1.HOTPLUG_EVENT_DEVICE_ARRIVED, describe(device))
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
        """Open a device on the least-loaded event thread, claim interface 0, check endpoints.

        :raises ~parallel_flash.errors.RemoteProtocolError: if interface 0 does
            not have exactly one bulk IN and one bulk OUT endpoint.
        :raises ~parallel_flash.errors.TransportError: if it cannot be opened
            or claimed (permissions, another program, gone).
        """
        shards = self._require()
        events = shards.assign()
        device = info.device
        if events is not shards.primary:
            found = await _find(events, info)
            if found is None:
                logger.debug("%s: not seen by %s yet; using the first", info.port, events.name)
                events = shards.primary
            else:
                device = found
        events.links += 1
        try:
            link = await UsbLink.open(self, info, device, events)
        except BaseException:
            events.links -= 1
            raise
        self._links.add(link)
        return link

    def _forget(self, link: UsbLink) -> None:
        if link in self._links:
            self._links.discard(link)
            link.events.links -= 1


async def _find(events: EventThread, info: UsbDeviceInfo) -> usb1.USBDevice | None:
    """``info``'s device in ``events``' context, waiting briefly for its hotplug to land."""
    with anyio.move_on_after(SHARD_FIND_WAIT):
        while True:
            found = events.find(info.bus, info.address)
            if found is not None:
                return found
            await anyio.sleep(0.005)
    return None
