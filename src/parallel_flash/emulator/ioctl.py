"""usbdevfs ioctls of the emulated devices, answered in umockdev's worker thread.

umockdev's preload library forwards every ioctl a client makes on an emulated
device node to this handler (``Testbed.attach_ioctl``) over a socket; client
memory is read and written through ``UMockdev.IoctlData`` (``resolve`` loads
it, ``update``/``set_ptr`` change the local copy, ``complete`` writes changes
back). This module only decodes and moves memory; what the ioctls mean lives
in :mod:`.devio`.

Every ioctl is completed exactly once, in one place: a second completion
aborts the client, and an exception escaping into GObject leaves it hanging.
So the dispatcher returns ``(result, errno)`` and the wrapper completes; any
exception becomes ``EIO``.

Imports ``gi``: only the umockdev host process (Debian's python3) loads it.
"""

from __future__ import annotations

import collections
import errno
import logging
import struct
import threading
import time
from collections.abc import Callable

import gi

gi.require_version("UMockdev", "1.0")
from gi.repository import GLib, UMockdev  # noqa: E402

from .devio import URB_TYPE_BULK, URB_TYPE_CONTROL, Client, Urb, Usbfs, UsbfsMemory  # noqa: E402

__all__ = ("USBDEVFS_CAPABILITIES", "UsbdevfsHandler")

logger = logging.getLogger(__name__)

# x86_64 request numbers (linux/usbdevice_fs.h).
CONTROL = 0xC0185500
SETINTERFACE = 0x80085504
SETCONFIGURATION = 0x80045505
RESETEP = 0x80045503
GETDRIVER = 0x41045508
SUBMITURB = 0x8038550A
DISCARDURB = 0x0000550B
REAPURB = 0x4008550C
REAPURBNDELAY = 0x4008550D
CLAIMINTERFACE = 0x8004550F
RELEASEINTERFACE = 0x80045510
CONNECTINFO = 0x40085511
IOCTL = 0xC0105512
RESET = 0x00005514
CLEAR_HALT = 0x80045515
GET_CAPABILITIES = 0x8004551A
DISCONNECT_CLAIM = 0x8108551B
GET_SPEED = 0x0000551F

_CAP_ZERO_PACKET = 0x01
_CAP_NO_PACKET_SIZE_LIM = 0x04
_CAP_BULK_SCATTER_GATHER = 0x08
_CAP_REAP_AFTER_DISCONNECT = 0x10
#: Scatter-gather makes libusb submit each transfer as one URB (not 16 KiB
#: pieces); ZERO_PACKET lets it pass LIBUSB_TRANSFER_ADD_ZERO_PACKET on.
USBDEVFS_CAPABILITIES = (
    _CAP_ZERO_PACKET
    | _CAP_NO_PACKET_SIZE_LIM
    | _CAP_BULK_SCATTER_GATHER
    | _CAP_REAP_AFTER_DISCONNECT
)
_USB_SPEED_HIGH = 3

# struct usbdevfs_urb (56 bytes): type u8 @0, endpoint u8 @1, status s32 @4,
# flags u32 @8, buffer ptr @16, buffer_length s32 @24, actual_length s32 @28.
_URB = struct.Struct("<BBxxiIxxxxQii")
_URB_SIZE = 56
_URB_STATUS = struct.Struct("<i")
_URB_STATUS_OFFSET = 4
_URB_ACTUAL_OFFSET = 28
_URB_BUFFER_OFFSET = 16
# struct usbdevfs_ctrltransfer (24 bytes): setup fields, u32 timeout, data ptr @16.
_CTRL = struct.Struct("<BBHHHIQ")
_CTRL_DATA_OFFSET = 16

Result = tuple[int, int]


class _Deferred(tuple[int, int]):
    """What a handler returns when it completes the ioctl later itself (a held reap)."""


_DEFERRED: Result = _Deferred((0, 0))


class UsbdevfsHandler(UMockdev.IoctlBase):
    """One handler for every emulated device node; each open fd is a :class:`Client`."""

    def __init__(self, usbfs: Usbfs) -> None:
        super().__init__()
        self._usbfs = usbfs
        # Keyed by the client's Python wrapper: holding it keeps the wrapper
        # (and so the identity PyGObject hands us on every call) alive.
        self._clients: dict[UMockdev.IoctlClient, Client] = {}
        #: ioctls answered, by request number (for stats and benchmarks).
        self.counts: collections.Counter[int] = collections.Counter()
        self.eagain = 0
        self.held = 0
        #: Wall and CPU time umockdev's worker thread spent in this handler, in
        #: microseconds, and that thread's id: the worker is the line's one
        #: serial resource, and while a handler waits for a client-memory round
        #: trip (``resolve``) it is occupied without using CPU, so its CPU time
        #: alone understates how busy it is (benchmarks/bench_architectures.py).
        self.handler_us = 0
        self.handler_cpu_us = 0
        self.worker_tid = 0
        #: Empty reaps being held back, by client (see Usbfs.reap_hold).
        self._held: dict[Client, UMockdev.IoctlClient] = {}
        #: The umockdev client whose ioctl is being handled (worker thread only).
        self._current: UMockdev.IoctlClient | None = None
        usbfs.on_completion = self._release
        self._dispatch: dict[int, Callable[[UMockdev.IoctlData, Client], Result]] = {
            GET_CAPABILITIES: self._get_capabilities,
            SUBMITURB: self._submit_urb,
            REAPURBNDELAY: self._reap_urb,
            # A blocking reap would block umockdev's only worker thread;
            # libusb never uses it, so it is answered like the non-blocking one.
            REAPURB: self._reap_urb,
            DISCARDURB: self._discard_urb,
            CLAIMINTERFACE: self._claim_interface,
            DISCONNECT_CLAIM: self._claim_interface,
            RELEASEINTERFACE: self._release_interface,
            SETINTERFACE: self._set_interface,
            SETCONFIGURATION: self._set_configuration,
            CLEAR_HALT: self._endpoint_op,
            RESETEP: self._endpoint_op,
            RESET: self._no_op,
            GETDRIVER: self._no_driver,
            IOCTL: self._no_driver,
            CONNECTINFO: self._connect_info,
            GET_SPEED: self._get_speed,
            CONTROL: self._control,
        }

    # -- clients -----------------------------------------------------------------

    def do_client_connected(self, client: UMockdev.IoctlClient) -> None:
        # Clients are accepted on the worker thread that then answers their ioctls.
        self.worker_tid = threading.get_native_id()
        try:
            with self._usbfs.lock:
                opened = self._usbfs.open(client.get_devnode())
            if opened is None:
                logger.warning("open of %s, which is not plugged in", client.get_devnode())
                return
            self._clients[client] = opened
            client.connect("notify::connected", self._on_connected_changed)
        except Exception:
            logger.exception("client_connected failed")

    def _on_connected_changed(self, client: UMockdev.IoctlClient, _pspec: object) -> None:
        self._forget_if_closed(client)

    def sweep_closed_clients(self) -> None:
        """Close the :class:`Client` of every fd whose process closed it or died.

        umockdev 0.17 does not reliably emit ``notify::connected`` when a
        client goes away, so the host also calls this periodically: the
        kernel frees a closed fd's URBs (and their usbfs memory) at once.
        """
        for client in list(self._clients):
            self._forget_if_closed(client)

    def _forget_if_closed(self, client: UMockdev.IoctlClient) -> None:
        try:
            if client.get_connected():
                return
            opened = self._clients.pop(client, None)
            if opened is not None:
                with self._usbfs.lock:
                    self._usbfs.close(opened)
        except Exception:
            logger.exception("closing a client failed")

    # -- ioctl -------------------------------------------------------------------

    def do_handle_ioctl(self, client: UMockdev.IoctlClient) -> bool:
        started, cpu_started = time.perf_counter(), time.thread_time()
        request = client.get_request() & 0xFFFFFFFF
        self.counts[request] += 1
        try:
            opened = self._clients.get(client)
            handler = self._dispatch.get(request)
            if opened is None:
                result = (-1, errno.ENODEV)
            elif handler is None:
                result = (-1, errno.ENOTTY)
            else:
                with self._usbfs.lock:
                    self._current = client
                    result = handler(client.get_arg(), opened)
        except Exception:
            logger.exception("ioctl 0x%08x on %s failed", request, client.get_devnode())
            result = (-1, errno.EIO)
        finally:
            self._current = None
        if not isinstance(result, _Deferred):
            client.complete(*result)
        self.handler_us += round((time.perf_counter() - started) * 1e6)
        self.handler_cpu_us += round((time.thread_time() - cpu_started) * 1e6)
        return True

    def _hold(self, opened: Client, seconds: float) -> Result:
        """Answer this empty reap with EAGAIN later, or as soon as something completes."""
        assert self._current is not None, "held outside do_handle_ioctl"
        self._held[opened] = self._current
        self.held += 1
        GLib.timeout_add(max(1, round(seconds * 1000)), self._release_timer, opened)
        return _DEFERRED

    def _release_timer(self, opened: Client) -> bool:
        with self._usbfs.lock:
            self._release(opened)
        return False

    def _release(self, opened: Client) -> None:
        """Complete a held reap with EAGAIN (lock held); libusb reaps again at once."""
        client = self._held.pop(opened, None)
        if client is not None:
            self.eagain += 1
            client.complete(-1, errno.EAGAIN)

    def release_all(self) -> None:
        with self._usbfs.lock:
            for opened in list(self._held):
                self._release(opened)

    def ioctl_stats(self) -> dict[str, int]:
        names = {
            value: name
            for name, value in globals().items()
            if name.isupper() and isinstance(value, int)
        }
        stats = {
            names.get(request, f"0x{request:08x}").lower(): n for request, n in self.counts.items()
        }
        stats["reap_eagain"] = self.eagain
        stats["reap_held"] = self.held
        stats["handler_us"] = self.handler_us
        stats["handler_cpu_us"] = self.handler_cpu_us
        stats["worker_tid"] = self.worker_tid
        return stats

    # -- requests ----------------------------------------------------------------

    @staticmethod
    def _get_capabilities(arg: UMockdev.IoctlData, _client: Client) -> Result:
        arg.resolve(0, 4).update(0, struct.pack("<I", USBDEVFS_CAPABILITIES))
        return 0, 0

    def _submit_urb(self, arg: UMockdev.IoctlData, client: Client) -> Result:
        user_addr = _pointer(arg)  # before resolve() swaps in a local pointer
        handle = arg.resolve(0, _URB_SIZE)
        urb_type, endpoint, _status, flags, _buffer, length, _actual = _URB.unpack_from(
            handle.retrieve()
        )
        if length < 0:
            return -1, errno.EINVAL
        if client.device.gone:
            return -1, errno.ENODEV
        urb = Urb(
            user_addr=user_addr,
            type=urb_type,
            endpoint=endpoint,
            flags=flags,
            length=length,
            charge=UsbfsMemory.charge_for(length),
            handle=handle,
            buffer=None,
            submitted=self._usbfs.clock(),
        )
        control_data = b""
        skip = urb_type == URB_TYPE_BULK and not endpoint & 0x80
        skip = skip and not client.device.payload_needed()
        if length and urb_type in (URB_TYPE_BULK, URB_TYPE_CONTROL) and not skip:
            # Copied at submission, as the kernel does for OUT data; for IN
            # it is the local copy the reply is written into.
            buffer = urb.buffer = handle.resolve(_URB_BUFFER_OFFSET, length)
            if urb_type == URB_TYPE_CONTROL:
                control_data = buffer.retrieve()
        error = self._usbfs.submit(client, urb, control_data)
        return (-1, error) if error else (0, 0)

    def _reap_urb(self, arg: UMockdev.IoctlData, client: Client) -> Result:
        reaped = self._usbfs.reap(client)
        if isinstance(reaped, int):
            if reaped == errno.EAGAIN:
                hold = self._usbfs.reap_hold(client)
                if hold >= 0.0005 and client not in self._held:
                    return self._hold(client, hold)
                self.eagain += 1
            return -1, reaped
        handle = reaped.handle
        if reaped.reply and reaped.buffer is not None:
            offset = 8 if reaped.type == URB_TYPE_CONTROL else 0
            reaped.buffer.update(offset, reaped.reply)
        handle.update(_URB_STATUS_OFFSET, _URB_STATUS.pack(reaped.status))
        handle.update(_URB_ACTUAL_OFFSET, _URB_STATUS.pack(reaped.actual))
        arg.resolve(0, 8).set_ptr(0, handle)
        return 0, 0

    def _discard_urb(self, arg: UMockdev.IoctlData, client: Client) -> Result:
        error = self._usbfs.discard(client, _pointer(arg))
        return (-1, error) if error else (0, 0)

    @staticmethod
    def _claim_interface(arg: UMockdev.IoctlData, client: Client) -> Result:
        interface = _u32(arg)
        device = client.device
        if device.gone:
            return -1, errno.ENODEV
        if interface != 0:
            return -1, errno.ENOENT
        if device.claimed_by not in (None, client):
            return -1, errno.EBUSY
        device.claimed_by = client
        return 0, 0

    @staticmethod
    def _release_interface(arg: UMockdev.IoctlData, client: Client) -> Result:
        interface = _u32(arg)
        device = client.device
        if interface != 0 or device.claimed_by is not client:
            return -1, errno.EINVAL
        device.claimed_by = None
        return 0, 0

    @staticmethod
    def _set_interface(arg: UMockdev.IoctlData, client: Client) -> Result:
        interface, alternate = struct.unpack("<II", arg.resolve(0, 8).retrieve())
        if client.device.gone:
            return -1, errno.ENODEV
        return (0, 0) if (interface, alternate) == (0, 0) else (-1, errno.EINVAL)

    @staticmethod
    def _set_configuration(arg: UMockdev.IoctlData, client: Client) -> Result:
        value = struct.unpack("<i", arg.resolve(0, 4).retrieve())[0]
        if client.device.gone:
            return -1, errno.ENODEV
        return (0, 0) if value in (-1, 0, 1) else (-1, errno.EINVAL)

    @staticmethod
    def _endpoint_op(arg: UMockdev.IoctlData, client: Client) -> Result:
        endpoint = _u32(arg)
        if client.device.gone:
            return -1, errno.ENODEV
        return (0, 0) if endpoint in client.device.endpoints else (-1, errno.ENOENT)

    @staticmethod
    def _no_op(_arg: UMockdev.IoctlData, client: Client) -> Result:
        return (-1, errno.ENODEV) if client.device.gone else (0, 0)

    @staticmethod
    def _no_driver(_arg: UMockdev.IoctlData, client: Client) -> Result:
        # No kernel driver is bound to the interface.
        return -1, errno.ENODEV if client.device.gone else errno.ENODATA

    @staticmethod
    def _connect_info(arg: UMockdev.IoctlData, client: Client) -> Result:
        arg.resolve(0, 8).update(0, struct.pack("<IB3x", client.device.devnum, 0))
        return 0, 0

    @staticmethod
    def _get_speed(_arg: UMockdev.IoctlData, client: Client) -> Result:
        return (-1, errno.ENODEV) if client.device.gone else (_USB_SPEED_HIGH, 0)

    def _control(self, arg: UMockdev.IoctlData, client: Client) -> Result:
        """USBDEVFS_CONTROL: a synchronous control transfer (libusb uses URBs instead)."""
        ctrl = arg.resolve(0, _CTRL.size)
        request_type, request, value, index, length, _timeout, _data = _CTRL.unpack(ctrl.retrieve())
        setup = struct.pack("<BBHHH", request_type, request, value, index, length)
        data = ctrl.resolve(_CTRL_DATA_OFFSET, length) if length else None
        payload = setup
        if data is not None and not request_type & 0x80:
            payload += data.retrieve()
        urb = Urb(
            user_addr=-1 - len(client.pending),
            type=URB_TYPE_CONTROL,
            endpoint=0x80 if request_type & 0x80 else 0,
            flags=0,
            length=8 + length,
            charge=UsbfsMemory.charge_for(8 + length),
            handle=None,
            buffer=None,
            submitted=self._usbfs.clock(),
        )
        error = self._usbfs.submit(client, urb, payload)
        if error:
            return -1, error
        client.completed.remove(urb)
        self._usbfs.memory.release(urb.charge)
        if urb.status:
            return -1, -urb.status
        if urb.reply and data is not None:
            data.update(0, urb.reply)
        return urb.actual, 0


def _pointer(arg: UMockdev.IoctlData) -> int:
    """The ioctl's argument itself (DISCARDURB passes the URB's address by value)."""
    return int(struct.unpack("<Q", arg.retrieve()[:8])[0])


def _u32(arg: UMockdev.IoctlData) -> int:
    return int(struct.unpack("<I", arg.resolve(0, 4).retrieve())[0])
