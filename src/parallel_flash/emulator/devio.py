"""The kernel side of usbfs for emulated devices: URB queues, link throttle, memory cap.

Named after Linux's drivers/usb/core/devio.c, whose behaviour it copies where
a host can see it:

* An OUT URB is delivered to the device model (``bulk_out``) when its turn on
  the link comes; with a link rate that is ``length / rate`` after the
  previous one finished, so the host sees completions at the link's pace.
  A URB flagged ``USBDEVFS_URB_ZERO_PACKET`` whose length is a non-zero
  multiple of wMaxPacketSize is followed by a zero-length packet.
* A device that NAKs keeps the URB pending until the host discards it; a
  discarded URB is reaped with ``-ENOENT`` (how libusb times out and cancels).
* An IN URB completes when the model has a reply; until then it is pending.
* A device that goes away fails everything pending with ``-ESHUTDOWN``
  (libusb: ``LIBUSB_TRANSFER_NO_DEVICE``); later submissions get ``ENODEV``.
* Memory of submitted, not yet reaped URBs is charged to one budget shared by
  all devices, as the kernel does with ``usbfs_memory_mb``; over it a
  submission fails with ``ENOMEM``.

Stdlib only apart from the device model; no GObject. The ioctl layer
(:mod:`.ioctl`) decodes ioctls, moves client memory and calls in here, always
holding :attr:`Usbfs.lock`, which the umockdev host's control commands take
too.
"""

from __future__ import annotations

import collections
import errno
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..protocol.device import OutResult
from ..protocol.models import AnyDeviceModel
from .descriptors import DeviceIdentity, answer_standard_request
from .ports import PortPath

__all__ = (
    "IDLE_AFTER",
    "MAX_REAP_HOLD",
    "URB_TYPE_BULK",
    "URB_TYPE_CONTROL",
    "URB_ZERO_PACKET",
    "BufferHandle",
    "Client",
    "DeviceEvents",
    "EmulatedDevice",
    "LinkThrottle",
    "Urb",
    "Usbfs",
    "UsbfsMemory",
)

logger = logging.getLogger(__name__)

#: The SimpleIO model's phase while image bytes arrive (protocol/device.py).
_RECEIVING = "receiving"

URB_TYPE_CONTROL = 2
URB_TYPE_BULK = 3
#: USBDEVFS_URB_ZERO_PACKET: send a ZLP after a full-packet OUT transfer.
URB_ZERO_PACKET = 0x40

#: A client that has neither submitted nor reaped anything for this long is
#: idle, and an empty reap may be held back (see Usbfs.reap_hold).
IDLE_AFTER = 0.05
#: The longest an empty REAPURBNDELAY is held back.
MAX_REAP_HOLD = 0.002

#: What the kernel charges per URB beyond its buffer: struct async plus
#: struct urb (drivers/usb/core/devio.c, proc_do_submiturb), rounded up.
_URB_BOOKKEEPING = 512
#: ... plus one struct scatterlist per 16 KiB segment of a large bulk buffer.
_SG_SEGMENT = 16384
_SG_ENTRY = 32


class BufferHandle(Protocol):
    """Client memory as the ioctl layer exposes it (umockdev's IoctlData)."""

    def retrieve(self) -> bytes: ...

    def update(self, offset: int, data: bytes) -> object: ...


class DeviceEvents(Protocol):
    """What the device tells the process hosting it (called with the lock held)."""

    def device_gone(self, device: EmulatedDevice, reason: str) -> None: ...

    def device_booted(self, device: EmulatedDevice) -> None: ...


class UsbfsMemory:
    """The system-wide usbfs memory budget (``usbfs_memory_mb``; 0 = no cap)."""

    def __init__(self, limit_mb: int) -> None:
        if limit_mb < 0:
            raise ValueError(f"usbfs_memory_mb must be >= 0, not {limit_mb}")
        self.limit_mb = limit_mb
        self.limit = limit_mb << 20
        self.used = 0
        self.peak = 0
        self.refused = 0

    @staticmethod
    def charge_for(length: int) -> int:
        """Bytes the kernel accounts for one URB with a buffer of ``length``."""
        segments = math.ceil(length / _SG_SEGMENT) if length > _SG_SEGMENT else 0
        return length + _URB_BOOKKEEPING + segments * _SG_ENTRY

    def try_charge(self, amount: int) -> bool:
        if self.limit and self.used + amount > self.limit:
            self.refused += 1
            return False
        self.used += amount
        self.peak = max(self.peak, self.used)
        return True

    def release(self, amount: int) -> None:
        self.used -= amount


class LinkThrottle:
    """A link (device cable or shared bus) that moves ``rate`` bytes per second."""

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError(f"link rate must be > 0 bytes/s, not {rate}")
        self.rate = rate
        self.free_at = 0.0

    def book(self, start: float, length: int) -> float:
        """Reserve the link for ``length`` bytes from ``start``; returns when they are through."""
        begin = max(start, self.free_at)
        self.free_at = begin + length / self.rate
        return self.free_at


@dataclass(slots=True, eq=False)
class Urb:
    """One submitted struct usbdevfs_urb."""

    #: Client address of the struct: what DISCARDURB names and REAPURB returns.
    user_addr: int
    type: int
    endpoint: int
    flags: int
    length: int
    charge: int
    #: The ioctl layer's handles on the struct and its buffer.
    handle: Any
    buffer: BufferHandle | None
    submitted: float
    #: Data for the host (IN data, or a control IN's data stage), copied at reap.
    reply: bytes = b""
    status: int = 0
    actual: int = 0
    due: float | None = None
    nak: bool = False
    client: Client | None = None


@dataclass(slots=True, eq=False)
class Client:
    """One open file descriptor on a device node."""

    device: EmulatedDevice
    #: Submitted, not completed, by client address.
    pending: dict[int, Urb] = field(default_factory=dict)
    #: Completed, not reaped, in completion order.
    completed: collections.deque[Urb] = field(default_factory=collections.deque)
    closed: bool = False
    #: When this fd last submitted or reaped a URB (see Usbfs.reap_hold).
    last_activity: float = 0.0


class EmulatedDevice:
    """One USB device of the line: descriptors, endpoints, and a device model behind them."""

    def __init__(
        self,
        *,
        port: PortPath,
        devnum: int,
        identity: DeviceIdentity,
        model: AnyDeviceModel | None,
        usbfs: Usbfs,
        link: LinkThrottle | None = None,
        bus_link: LinkThrottle | None = None,
    ) -> None:
        self.port = port
        self.devnum = devnum
        self.identity = identity
        self.model = model
        self.link = link
        self.bus_link = bus_link
        self.gone = False
        self.gone_reason: str | None = None
        self.clients: set[Client] = set()
        self.claimed_by: Client | None = None
        self._usbfs = usbfs
        self._out: collections.deque[Urb] = collections.deque()
        self._in: collections.deque[Urb] = collections.deque()
        self._link_free = 0.0
        self._retry_nak = False
        self._boot_reported = False
        #: Wall-clock times (``time.time()``) the image's first transfer was
        #: submitted -- its first byte goes on the link then -- and its last
        #: one was through the link: the device's own view of its stream,
        #: the same for every host architecture (benchmarks).
        self.image_started_at: float | None = None
        self.image_finished_at: float | None = None
        self.stats = {
            "control_urbs": 0,
            "out_urbs": 0,
            "out_bytes": 0,
            "in_urbs": 0,
            "zlps_from_flag": 0,
            "naks": 0,
            "discarded": 0,
        }

    @property
    def devnode(self) -> str:
        return f"/dev/bus/usb/{self.port.bus:03d}/{self.devnum:03d}"

    @property
    def endpoints(self) -> tuple[int, ...]:
        return (0x81, 0x01) if self.identity.bulk_endpoints else ()

    # -- submission ------------------------------------------------------------

    def submit_bulk(self, urb: Urb, now: float) -> None:
        if urb.endpoint & 0x80:
            self.stats["in_urbs"] += 1
            self._in.append(urb)
            self._serve_in()
        else:
            self.stats["out_urbs"] += 1
            if self.image_started_at is None and self._receiving():
                self.image_started_at = _wall(urb.submitted, now)
            self._out.append(urb)
            self.advance(now)

    def submit_control(self, urb: Urb, setup_and_data: bytes) -> None:
        """Answer a control URB at once: ``setup_and_data`` is the 8-byte setup packet + data."""
        self.stats["control_urbs"] += 1
        request_type, request, value, index, length = _unpack_setup(setup_and_data)
        device_to_host = bool(request_type & 0x80)
        if request_type & 0x60 == 0:
            answer = answer_standard_request(
                self.identity, request_type, request, value, index, length
            )
        elif self.model is not None:
            data = b"" if device_to_host else setup_and_data[8 : 8 + length]
            try:
                accepted = self.model.control(request_type, request, value, index, data)
            except Exception:
                logger.exception("device model failed on a control request at %s", self.port)
                accepted = False
            answer = b"" if accepted else None
            self._retry_nak = True
        else:
            answer = None
        if answer is None:
            urb.status = -errno.EPIPE
        elif device_to_host:
            urb.reply = answer
            urb.actual = len(answer)
        else:
            urb.actual = length
        self._usbfs.complete(urb)
        self._serve_in()

    # -- progress ---------------------------------------------------------------

    def advance(self, now: float) -> None:
        """Deliver every OUT URB whose time on the link has come."""
        queue = self._out
        while queue and not self.gone:
            head = queue[0]
            if head.due is None:
                head.due = self._book_link(head, now)
            if head.due > now:
                return
            if head.nak and not self._retry_nak:
                return
            self._retry_nak = False
            model = self.model
            assert model is not None  # no OUT endpoint without a model (submit checks)
            receiving = model.phase == _RECEIVING
            try:
                result = self._deliver(model, head)
            except Exception:
                # A bug in the model must not wedge the endpoint: fail this
                # transfer (libusb: LIBUSB_TRANSFER_ERROR) and go on.
                logger.exception("device model failed on an OUT transfer at %s", self.port)
                queue.popleft()
                head.status = -errno.EPROTO
                self._usbfs.complete(head)
                continue
            if result is OutResult.NAK:
                if not head.nak:
                    self.stats["naks"] += 1
                head.nak = True
                return
            if result is OutResult.GONE:
                self._usbfs.disconnect(self, "disconnected by the device (fault)")
                return
            queue.popleft()
            self._link_free = head.due
            self.stats["out_bytes"] += head.length
            head.actual = head.length
            if receiving and model.phase != _RECEIVING:
                self.image_finished_at = _wall(head.due, now)
            self._usbfs.complete(head)
            self._serve_in()
            if model.booted and not self._boot_reported and not model.reply_pending:
                # A loader that boots on a command with no reply (Lumia's NOKR).
                self._boot_reported = True
                self._usbfs.events.device_booted(self)

    def _receiving(self) -> bool:
        return self.model is not None and self.model.phase == _RECEIVING

    def next_due(self) -> float | None:
        """When the OUT URB at the head of the queue is through the link (None: nothing due)."""
        head = self._out[0] if self._out else None
        if head is None or head.nak or head.due is None:
            return None
        return head.due

    def payload_needed(self) -> bool:
        """Whether an OUT URB submitted now must have its data read from the client.

        Not when the model only counts bytes (``count_only``) and is in the
        middle of the image: the bytes would go unread, and moving them out
        of the client is most of what the emulator costs per MiB.
        """
        model = self.model
        return model is None or not model.count_only or model.phase != _RECEIVING

    def _deliver(self, model: AnyDeviceModel, urb: Urb) -> OutResult:
        """Hand one OUT URB to the model, then its zero-length packet if it asked for one."""
        if urb.buffer is not None:
            data: bytes | memoryview = urb.buffer.retrieve()
        else:
            data = _zeros(urb.length)  # not read from the client (payload_needed)
        result = model.bulk_out(data)
        if result is OutResult.ACCEPTED and _needs_zlp(urb, self.identity.max_packet_size):
            self.stats["zlps_from_flag"] += 1
            result = model.bulk_out(b"")
        return result

    def _book_link(self, urb: Urb, now: float) -> float:
        start = max(urb.submitted, self._link_free)
        if self.link is None and self.bus_link is None:
            return start
        due = start
        if self.link is not None:
            due = self.link.book(start, urb.length)
        if self.bus_link is not None:
            due = max(due, self.bus_link.book(start, urb.length))
        return due

    def _serve_in(self) -> None:
        model = self.model
        while self._in and model is not None and not self.gone:
            head = self._in[0]
            try:
                reply = model.bulk_in(head.length)
            except Exception:
                logger.exception("device model failed on an IN transfer at %s", self.port)
                self._in.popleft()
                head.status = -errno.EPROTO
                self._usbfs.complete(head)
                continue
            if reply is None:
                return
            self._in.popleft()
            self._retry_nak = True
            if len(reply) > head.length:
                head.status = -errno.EOVERFLOW
                reply = reply[: head.length]
            head.reply = reply
            head.actual = len(reply)
            self._usbfs.complete(head)
            if model.booted and not self._boot_reported:
                self._boot_reported = True
                self._usbfs.events.device_booted(self)

    def remove(self, urb: Urb) -> None:
        """Take a not yet completed URB out of the endpoint queues (discard, close)."""
        for queue in (self._out, self._in):
            if queue and queue[0] is urb:
                queue.popleft()
                if queue is self._out:
                    # The link is free from now; the next URB starts afresh.
                    self._link_free = self._usbfs.clock()
                    if queue:
                        queue[0].due = None
                return
            try:
                queue.remove(urb)
                return
            except ValueError:
                continue

    def drop_queues(self) -> list[Urb]:
        urbs = [*self._out, *self._in]
        self._out.clear()
        self._in.clear()
        return urbs

    def summary(self) -> dict[str, Any]:
        """The emulator's view of the device, merged with the model's own summary."""
        info: dict[str, Any] = {
            "port": str(self.port),
            "devnum": self.devnum,
            "vid": f"{self.identity.vid:04x}",
            "pid": f"{self.identity.pid:04x}",
            "present": not self.gone,
            "gone_reason": self.gone_reason,
            "image_started_at": self.image_started_at,
            "image_finished_at": self.image_finished_at,
            **self.stats,
        }
        if self.model is not None:
            info.update(self.model.summary())
        return info


class Usbfs:
    """All emulated devices of one process, and the usbfs memory they share."""

    def __init__(
        self,
        memory: UsbfsMemory,
        events: DeviceEvents,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.memory = memory
        self.events = events
        self.clock = clock
        self.lock = threading.RLock()
        self.devices: dict[str, EmulatedDevice] = {}
        #: Called (lock held) when a URB of a client completes: the ioctl layer
        #: releases that client's held reap.
        self.on_completion: Callable[[Client], None] | None = None

    # -- devices ------------------------------------------------------------------

    def attach(self, device: EmulatedDevice) -> None:
        self.devices[device.devnode] = device

    def disconnect(self, device: EmulatedDevice, reason: str) -> None:
        """The device left the bus: fail what is pending, refuse what comes."""
        if device.gone:
            return
        device.gone = True
        device.gone_reason = reason
        if device.model is not None and not device.model.disconnected and not device.model.booted:
            device.model.disconnect()
        for urb in device.drop_queues():
            urb.status = -errno.ESHUTDOWN
            urb.actual = 0
            self.complete(urb)
        if self.devices.get(device.devnode) is device:
            del self.devices[device.devnode]
        self.events.device_gone(device, reason)

    # -- file descriptors ---------------------------------------------------------

    def open(self, devnode: str) -> Client | None:
        device = self.devices.get(devnode)
        if device is None:
            return None
        client = Client(device)
        device.clients.add(client)
        return client

    def close(self, client: Client) -> None:
        """The fd was closed: kill its URBs and give back their memory."""
        if client.closed:
            return
        client.closed = True
        device = client.device
        for urb in list(client.pending.values()):
            device.remove(urb)
            self.memory.release(urb.charge)
        client.pending.clear()
        for urb in client.completed:
            self.memory.release(urb.charge)
        client.completed.clear()
        if device.claimed_by is client:
            device.claimed_by = None
        device.clients.discard(client)

    # -- URBs ---------------------------------------------------------------------

    def submit(self, client: Client, urb: Urb, control_data: bytes = b"") -> int:
        """SUBMITURB; returns 0 or a positive errno."""
        device = client.device
        if device.gone:
            return errno.ENODEV
        if urb.type == URB_TYPE_CONTROL:
            if urb.endpoint & 0x7F != 0 or urb.length < 8:
                return errno.EINVAL
        elif urb.type == URB_TYPE_BULK:
            if urb.endpoint not in device.endpoints:
                return errno.ENOENT
        else:
            return errno.EINVAL
        if urb.user_addr in client.pending:
            return errno.EBUSY
        if not self.memory.try_charge(urb.charge):
            return errno.ENOMEM
        urb.client = client
        client.last_activity = urb.submitted
        client.pending[urb.user_addr] = urb
        if urb.type == URB_TYPE_CONTROL:
            device.submit_control(urb, control_data)
        else:
            device.submit_bulk(urb, urb.submitted)
        return 0

    def complete(self, urb: Urb) -> None:
        client = urb.client
        assert client is not None  # set by submit (internal invariant)
        client.pending.pop(urb.user_addr, None)
        if client.closed:
            self.memory.release(urb.charge)
            return
        client.completed.append(urb)
        if self.on_completion is not None:
            self.on_completion(client)

    def reap(self, client: Client) -> Urb | int:
        """REAPURBNDELAY: the oldest completed URB, or EAGAIN / ENODEV."""
        device = client.device
        if not client.completed and not device.gone:
            device.advance(self.clock())
        if client.completed:
            urb = client.completed.popleft()
            self.memory.release(urb.charge)
            client.last_activity = self.clock()
            return urb
        return errno.ENODEV if device.gone else errno.EAGAIN

    def reap_hold(self, client: Client) -> float:
        """How long an empty reap may wait before it answers EAGAIN (0 = answer now).

        The emulated fd always polls ready, so libusb's event loop asks for
        completions in a busy loop: ~3000 round trips a second, most of two
        CPUs between client and emulator. Holding an empty reap back a
        little cuts that, at the price of delaying the client's other ioctls
        on the same fd (umockdev serialises them) by as much. Worse, libusb
        reaps every device from one event thread, so a reap held on one fd
        delays the completions of *all* devices: with 8 throttled devices
        under the usbfs cap (about 2 transfers in flight each) that idled
        links to 57-89 % of their rate. So it is done only when the client
        has been idle for IDLE_AFTER; any completion releases it at once.
        """
        if client.completed or client.device.gone or client.closed:
            return 0.0
        now = self.clock()
        if client.device.next_due() is not None or now - client.last_activity < IDLE_AFTER:
            return 0.0
        return MAX_REAP_HOLD

    def discard(self, client: Client, user_addr: int) -> int:
        """DISCARDURB: a pending URB is reaped later with -ENOENT; else EINVAL."""
        urb = client.pending.get(user_addr)
        if urb is None:
            return errno.EINVAL
        client.device.remove(urb)
        client.device.stats["discarded"] += 1
        urb.status = -errno.ENOENT
        urb.actual = 0
        self.complete(urb)
        return 0

    def stats(self) -> dict[str, Any]:
        return {
            "usbfs_memory_mb": self.memory.limit_mb,
            "memory_used": self.memory.used,
            "memory_peak": self.memory.peak,
            "memory_refusals": self.memory.refused,
        }


def _wall(moment: float, now: float) -> float:
    """``moment`` of the emulator's monotonic clock (``now`` being the present) as wall time."""
    return time.time() - (now - moment)


_zero_block = bytes(1 << 20)


def _zeros(length: int) -> memoryview:
    global _zero_block
    if len(_zero_block) < length:
        _zero_block = bytes(length)
    return memoryview(_zero_block)[:length]


def _needs_zlp(urb: Urb, max_packet_size: int) -> bool:
    return (
        bool(urb.flags & URB_ZERO_PACKET) and urb.length > 0 and urb.length % max_packet_size == 0
    )


def _unpack_setup(setup: bytes) -> tuple[int, int, int, int, int]:
    request_type, request = setup[0], setup[1]
    value = int.from_bytes(setup[2:4], "little")
    index = int.from_bytes(setup[4:6], "little")
    length = int.from_bytes(setup[6:8], "little")
    return request_type, request, value, index, length
