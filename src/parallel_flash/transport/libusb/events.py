"""libusb contexts and the threads that handle their events, sharded over devices.

Why shards at all: libusb lets one thread at a time handle a context's
events, so with one context every completion of every device is reaped one
ioctl after another. Devices can be spread over up to ``event_threads``
*shards*, each a :class:`usb1.USBContext` of its own with its own event
thread; the first shard also does enumeration and hotplug. Shards are
created as devices are opened (least-loaded first) and live as long as any
:class:`~.context.UsbContext` of the process is open.

How many (:data:`DEFAULT_EVENT_THREADS`, :data:`DEVICES_PER_EVENT_THREAD`):
one context's event thread reaps its devices one ioctl round trip after
another, and under umockdev a completion resubmitted inside its callback is
reaped again at once, so one thread streams one device at a time. Measured
on the emulated line of this 2-core machine (issue 10,
benchmarks/bench_architectures.py ``--arch parallel-flash@K``, 256 MiB,
unthrottled, alternating runs, load average 5-6 from other work): 8 devices
on 1 / 4 / 8 threads 244-472 / 462-469 / 359 MB/s (a thread-per-device
host: 358-394); 4 devices on 2 / 4 threads 272 / 324 MB/s. More round trips
in flight keep the emulator busy; past about 4, the threads' own GIL
hand-offs and spinning on always-ready emulated fds cost more than they
bring. So devices get a thread each up to 4, then share those 4.
``$PARALLEL_FLASH_EVENT_THREADS=K`` or ``UsbContext(event_threads=K)``
spreads devices over up to K threads instead (one each before any gets a
second).

Each event thread is *non-daemon* and loops ``handleEventsTimeout``; after a
spurious wake-up (umockdev's emulated fd always polls ready) it naps
:data:`IDLE_NAP` rather than spin and hog the GIL, until a submission from
the loop pokes it. It stops on
``interruptEventHandler`` or when the main thread is gone, so a caller that
forgot to close cannot hang interpreter exit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time

import usb1

from ...errors import HostSetupError

__all__ = (
    "DEFAULT_EVENT_THREADS",
    "DEVICES_PER_EVENT_THREAD",
    "EVENT_THREADS_ENV",
    "EVENT_THREAD_NAME",
    "EVENT_WAIT",
    "IDLE_NAP_MAX",
    "EventThread",
    "Shards",
    "event_threads_setting",
)

logger = logging.getLogger(__name__)

#: Seconds one ``handleEventsTimeout`` call may block. Bounds how long an
#: event thread takes to notice that the main thread has gone; libusb wakes
#: it at once for completions and for ``interruptEventHandler``.
EVENT_WAIT = 0.5
#: After a round of event handling that ran no callback -- a spurious
#: wake-up: poll() said ready and nothing had completed -- the event thread
#: naps this long, doubling with each such round in a row up to
#: IDLE_NAP_MAX. Only umockdev's emulated fd polls ready falsely (always);
#: a real device's never does, and there a round without callbacks is the
#: EVENT_WAIT timeout. Each emulated round is one empty REAPURBNDELAY round
#: trip per device of the thread, which a spinning thread would flood the
#: emulator with (at 16 devices x 40 MB/s, a third of its ioctls). A nap adds
#: at most IDLE_NAP_MAX to a stream completion's latency -- against 12-25 ms
#: per transfer at 40 MB/s with 2 in flight -- and nothing to a single
#: transfer: a submission from the loop wakes the thread (:meth:`EventThread.poke`).
IDLE_NAP = 0.0005
IDLE_NAP_MAX = 0.004
#: Name of the first shard's thread (the one that also handles hotplug);
#: the others are named ``<this>-2``, ``<this>-3``, ...
EVENT_THREAD_NAME = "parallel-flash-usb-events"
#: Most event threads (hence libusb contexts) a process uses by default ...
DEFAULT_EVENT_THREADS = 4
#: ... and the devices each carries before the next one starts (see above).
DEVICES_PER_EVENT_THREAD = 1
#: Environment variable overriding :data:`DEFAULT_EVENT_THREADS` (1 = the
#: single event thread of earlier versions).
EVENT_THREADS_ENV = "PARALLEL_FLASH_EVENT_THREADS"


def event_threads_setting() -> int | None:
    """An explicit thread count from the environment (None: unset or not a number)."""
    text = os.environ.get(EVENT_THREADS_ENV, "")
    try:
        value = int(text)
    except ValueError:
        if text:
            logger.warning(
                "%s=%r is not a number; using the default event threads", EVENT_THREADS_ENV, text
            )
        return None
    return max(1, value)


class EventThread:
    """One libusb context and the thread that handles its events."""

    def __init__(self, name: str) -> None:
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
        self.name = name
        #: Callbacks run on this thread so far (written by this thread only).
        self.callbacks = 0
        #: Links whose transfers complete here (loop thread only).
        self.links = 0
        self._stop = False
        #: Set to cut a nap short (a transfer was submitted from another thread).
        self._poked = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=False)
        self._thread.start()

    def _run(self) -> None:
        main = threading.main_thread()
        handle = self.usb.handleEventsTimeout
        poked = self._poked
        nap = IDLE_NAP
        while not self._stop:
            if not main.is_alive():
                logger.debug("main thread gone: %s stops", self.name)
                break
            try:
                before = self.callbacks
                handle(EVENT_WAIT)
                if self.callbacks == before:
                    # A spurious wake-up (see IDLE_NAP): nap instead of spinning,
                    # which would also keep taking the GIL from the other threads.
                    if poked.wait(nap):
                        poked.clear()
                        nap = IDLE_NAP
                    else:
                        nap = min(nap * 2, IDLE_NAP_MAX)
                else:
                    nap = IDLE_NAP
            except usb1.USBErrorInterrupted:
                continue
            except Exception:  # keep handling events; a dead thread hangs every transfer
                logger.exception("libusb event handling failed")
                time.sleep(0.05)

    def poke(self) -> None:
        """A transfer was submitted from another thread: end a nap now (see IDLE_NAP)."""
        self._poked.set()

    def close(self) -> bool:
        """Stop the thread, then close the context; False if the thread would not stop."""
        self._stop = True
        with contextlib.suppress(Exception):
            self.usb.interruptEventHandler()
        self._thread.join(timeout=10)
        if self._thread.is_alive():
            logger.error("%s did not stop; leaving its libusb context open", self.name)
            return False
        self.usb.close()
        return True

    def find(self, bus: int, address: int) -> usb1.USBDevice | None:
        """This context's handle on the device another context enumerated."""
        for device in self.usb.getDeviceIterator(skip_on_error=True):
            if device.getBusNumber() == bus and device.getDeviceAddress() == address:
                return device
        return None


class Shards:
    """The process's event threads: the first does hotplug, all carry devices."""

    def __init__(self, limit: int, per_thread: int = 1) -> None:
        self.limit = max(1, limit)
        #: Devices each thread carries before another one starts.
        self.per_thread = max(1, per_thread)
        self.threads = [EventThread(EVENT_THREAD_NAME)]
        #: Open :class:`~.context.UsbContext` objects sharing these threads.
        self.users = 0
        logger.debug(
            "libusb %s: context open, event thread started (up to %d)",
            _libusb_version(),
            self.limit,
        )

    @property
    def primary(self) -> EventThread:
        return self.threads[0]

    def assign(self) -> EventThread:
        """The event thread for the next device: the least loaded, or a new one.

        A new thread starts when every thread carries ``per_thread`` devices
        and the limit is not reached.
        """
        least = min(self.threads, key=lambda thread: thread.links)
        if least.links >= self.per_thread and len(self.threads) < self.limit:
            least = EventThread(f"{EVENT_THREAD_NAME}-{len(self.threads) + 1}")
            self.threads.append(least)
            logger.debug("event thread %s started", least.name)
        return least

    def close(self) -> None:
        """Stop every event thread (nothing may be open any more), the primary last."""
        for thread in reversed(self.threads):
            thread.close()
        logger.debug("libusb contexts closed")


def _libusb_version() -> str:
    version = usb1.getVersion()
    return f"{version.major}.{version.minor}.{version.micro}"
