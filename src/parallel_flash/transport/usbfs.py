"""Linux's usbfs memory cap, as a budget every device of the process shares.

The kernel limits the memory of all usbfs transfers in flight, system-wide,
to ``/sys/module/usbcore/parameters/usbfs_memory_mb`` (16 MB by default;
0 means no cap). A submission that would go over it fails with
``LIBUSB_ERROR_NO_MEM`` (or ``LIBUSB_ERROR_IO`` on some libusb versions).
Eight devices with four 1 MiB transfers each already want 32 MiB, so the
pipeline cannot just queue what it likes: every stream asks this budget
before it submits a transfer and gives the bytes back on completion.

Policy, in order of importance:

1. Progress for everyone. Free bytes go to the stream holding the fewest
   transfers, first come first served among equals: a stream with nothing in
   flight is served before anyone gets a second transfer, and with 32
   devices and a 16 MB cap the devices take turns, so none of them sits idle
   long enough for its own timeouts to matter.
2. Fair share. A stream may hold at most ``ceil(usable / (streams x size))``
   transfers, and because freed bytes go to whoever holds fewest, the extra
   slots rotate: 15 slots for 8 devices average 1.9 each, not 2 for seven
   and 1 for the last.
3. Believe the kernel. When a submission is refused although the budget
   thought it fit (other processes use usbfs too, or the overhead estimate
   was low), the believed limit drops to what this process holds, the
   stream backs off until bytes come free, and the user is told once how to
   raise the cap. The limit creeps back up as submissions succeed again.

Everything here runs on the event loop's thread; no locking.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable
from pathlib import Path

__all__ = (
    "DEFAULT_USBFS_MEMORY_MB",
    "RAISE_CAP_HINT",
    "SHARED_TRANSFER_FLOOR",
    "SIZE_STEP",
    "SMALLEST_TRANSFER",
    "SMALL_TRANSFER_RESERVE",
    "STREAM_DEPTH",
    "URB_OVERHEAD",
    "USBFS_MEMORY_PATH",
    "BudgetClient",
    "UsbfsBudget",
    "process_budget",
    "read_usbfs_memory_mb",
)

logger = logging.getLogger(__name__)

USBFS_MEMORY_PATH = Path("/sys/module/usbcore/parameters/usbfs_memory_mb")
#: The kernel's default (drivers/usb/core/devio.c), assumed when the file is
#: missing: being conservative costs a little speed, guessing high costs
#: refused submissions.
DEFAULT_USBFS_MEMORY_MB = 16
#: Kernel bookkeeping charged per transfer on top of its buffer (struct
#: async + struct urb + a scatterlist entry per 16 KiB segment), rounded up.
URB_OVERHEAD = 4096
#: Kept out of the streaming budget for everything small that is not
#: budgeted: commands, WIM headers, ZLPs and the 16376-byte Id/status reads of
#: 32 devices at once (more are retried by the refusal back-off). Under the
#: default 16 MB cap this leaves room for fifteen 1 MiB transfers, which is
#: all the kernel would take anyway (it charges ~1.0025 MiB for each).
SMALL_TRANSFER_RESERVE = 512 << 10
#: Smaller transfers (issues 7 and 10): when the cap cannot give every open
#: device this many transfers of the size the protocol wants at the same
#: time, the transfers get smaller. Two, because with one the link idles from
#: each completion until the next submission (measured on the emulated line,
#: 8 devices x 40 MB/s under the 16 MB cap: slowest device 92.5 % of its link
#: with 1 MiB transfers (1.9 in flight each), 95 % with 976 KiB (2 each)) ...
STREAM_DEPTH = 2
#: ... in steps of this many bytes (a multiple of every wMaxPacketSize) ...
SIZE_STEP = 16 << 10
#: ... but not below this (per-transfer overhead would dominate) ...
SHARED_TRANSFER_FLOOR = 64 << 10
#: ... and when not even one transfer would fit (a tiny cap such as 1 MB), it
#: is halved down to this, the legacy loaders' size, before a device fails.
SMALLEST_TRANSFER = 16 << 10
#: After this many successful submissions since the kernel last refused one,
#: the believed limit grows by one transfer again (another process may have
#: freed its usbfs memory).
_RECOVER_AFTER = 32

RAISE_CAP_HINT = (
    "to raise the cap, run as root: echo 0 > /sys/module/usbcore/parameters/usbfs_memory_mb "
    "(0 = no cap, or a size in MB), or boot with the kernel parameter usbcore.usbfs_memory_mb=0"
)


def read_usbfs_memory_mb(path: Path = USBFS_MEMORY_PATH) -> int:
    """The cap in MB (0 = none), or the kernel default when it cannot be read."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except OSError as exc:
        logger.debug(
            "cannot read %s (%s); assuming the kernel default of %d MB",
            path,
            exc.strerror or exc,
            DEFAULT_USBFS_MEMORY_MB,
        )
        return DEFAULT_USBFS_MEMORY_MB
    try:
        value = int(text)
    except ValueError:
        logger.warning(
            "%s holds %r, not a number; assuming the kernel default of %d MB",
            path,
            text,
            DEFAULT_USBFS_MEMORY_MB,
        )
        return DEFAULT_USBFS_MEMORY_MB
    return max(0, value)


class BudgetClient:
    """One stream's standing with the budget (the stream owns the instance)."""

    __slots__ = ("held", "name", "wake")

    def __init__(self, name: str, wake: Callable[[], None]) -> None:
        #: For log messages: the device's port path.
        self.name = name
        #: Called (on the loop thread) when bytes may have become free for it.
        self.wake = wake
        #: Number of transfers this client holds bytes for.
        self.held = 0


class UsbfsBudget:
    """Bytes of usbfs memory this process may have in flight, shared fairly.

    :param limit_bytes: the kernel's cap in bytes; 0 means no cap (every
        request is granted and only the in-flight count of each stream
        applies).
    """

    def __init__(self, limit_bytes: int) -> None:
        if limit_bytes < 0:
            raise ValueError(f"usbfs limit must be >= 0 bytes, not {limit_bytes}")
        self.limit_bytes = limit_bytes
        #: What streams may use: the cap minus the reserve for small transfers
        #: (at most a quarter of a small cap, so something can still move).
        self.usable = limit_bytes - min(SMALL_TRANSFER_RESERVE, limit_bytes // 4)
        #: Lowered when the kernel refuses a submission we thought fit.
        self.ceiling = self.usable
        self.reserved = 0
        self._clients: set[BudgetClient] = set()
        #: Clients refused within their fair share, with their place in line.
        self._waiting: dict[BudgetClient, int] = {}
        self._arrivals = itertools.count()
        self._since_refusal = 0
        self._warned = False
        self._told_limited = False
        self._told_size = 0
        #: Counters for benchmarks and tests.
        self.refusals = 0
        self.peak_reserved = 0

    @classmethod
    def from_sysfs(cls, path: Path = USBFS_MEMORY_PATH) -> UsbfsBudget:
        return cls(read_usbfs_memory_mb(path) << 20)

    @property
    def capped(self) -> bool:
        return self.limit_bytes > 0

    @staticmethod
    def cost(nbytes: int) -> int:
        """What the kernel charges for one transfer of ``nbytes``."""
        return nbytes + URB_OVERHEAD

    def transfer_size_limit(self, wanted: int, devices: int) -> int:
        """The transfer size to announce: ``wanted``, or smaller when the cap is too small.

        First so that each of ``devices`` open devices can keep
        :data:`STREAM_DEPTH` transfers in flight at once -- the largest
        multiple of :data:`SIZE_STEP` that fits, down to
        :data:`SHARED_TRANSFER_FLOOR` -- then, halving, so that at least one
        fits at all (down to :data:`SMALLEST_TRANSFER`): a usbfs cap falls
        back to smaller transfers before it fails devices.
        """
        if not self.capped:
            return wanted
        size = wanted
        per_device = self.usable // (max(1, devices) * STREAM_DEPTH)
        if self.cost(size) > per_device:
            fitting = (per_device - URB_OVERHEAD) // SIZE_STEP * SIZE_STEP
            size = max(SHARED_TRANSFER_FLOOR, min(size, fitting))
        while size > SMALLEST_TRANSFER and self.cost(size) > self.usable:
            size //= 2
        if size < wanted and self._told_size != size:
            self._told_size = size  # once per size, not once per device
            logger.info(
                "usbfs memory cap of %d MB: %d-byte transfers instead of %d for %d devices; %s",
                self.limit_bytes >> 20,
                size,
                wanted,
                devices,
                RAISE_CAP_HINT,
            )
        return size

    # -- clients -------------------------------------------------------------------

    def register(self, client: BudgetClient) -> None:
        self._clients.add(client)

    def unregister(self, client: BudgetClient) -> None:
        """Forget a client; it must have released everything it held."""
        self._clients.discard(client)
        self._waiting.pop(client, None)
        self._wake_next()

    def fair_share(self, nbytes: int) -> int:
        """How many transfers of ``nbytes`` one client may hold right now."""
        if not self.capped:
            return 1 << 30
        clients = max(1, len(self._clients))
        return max(1, math.ceil(self.ceiling / (clients * self.cost(nbytes))))

    # -- reservations --------------------------------------------------------------

    def try_acquire(self, client: BudgetClient, nbytes: int) -> bool:
        """Reserve one transfer of ``nbytes`` for ``client``; False = not now.

        Bytes go to the client holding the fewest transfers, first come
        first served among equals, up to its fair share. A client refused
        within its share waits in line and is woken when bytes come free;
        one over its share just retries after its own next completion.
        """
        if not self.capped:
            client.held += 1
            return True
        cost = self.cost(nbytes)
        fits = self.reserved + cost <= self.ceiling or self.reserved == 0
        share = self.fair_share(nbytes)
        if client.held >= share:
            if not self._told_limited and share < 4:
                self._told_limited = True
                logger.info(
                    "usbfs memory cap of %d MB limits transfers in flight to about %d per "
                    "device for %d devices; %s",
                    self.limit_bytes >> 20,
                    share,
                    len(self._clients),
                    RAISE_CAP_HINT,
                )
            return False
        if fits and self._first_in_line(client):
            self._waiting.pop(client, None)
            self._grant(client, cost)
            self._wake_next()  # the next in line may fit too
            return True
        if client not in self._waiting:
            self._waiting[client] = next(self._arrivals)
        return False

    def may_keep(self, client: BudgetClient, nbytes: int) -> bool:
        """Whether ``client`` may reuse a finished transfer's bytes for its next one unasked.

        A stream resubmits from the event thread while this holds, without
        a round trip through the budget. Up to the number of transfers every
        client can hold at once it always may; above that (the extra slots
        that rotate, policy 2) only while nobody else waits in line. Never
        above its fair share, nor while the believed limit is below what is
        reserved after a kernel refusal.
        """
        if not self.capped:
            return True
        if self.reserved > self.ceiling or client.held > self.fair_share(nbytes):
            return False
        if client.held <= self.base_share(nbytes):
            return True
        return all(waiter is client for waiter in self._waiting)

    def base_share(self, nbytes: int) -> int:
        """Transfers of ``nbytes`` every client can hold at the same time (0: not even one)."""
        clients = max(1, len(self._clients))
        return self.ceiling // (clients * self.cost(nbytes))

    def _rank(self, client: BudgetClient) -> tuple[int, float]:
        return (client.held, self._waiting.get(client, math.inf))

    def _best_waiter(self) -> BudgetClient | None:
        return min(self._waiting, key=self._rank, default=None)

    def _first_in_line(self, client: BudgetClient) -> bool:
        best = self._best_waiter()
        return best is None or best is client or self._rank(client) < self._rank(best)

    def _grant(self, client: BudgetClient, cost: int) -> None:
        client.held += 1
        self.reserved += cost
        self.peak_reserved = max(self.peak_reserved, self.reserved)

    def release(self, client: BudgetClient, nbytes: int, *, submitted: bool = True) -> None:
        """Give back one transfer's bytes (after its completion or a refused submission)."""
        if client.held <= 0:
            raise RuntimeError(f"{client.name}: released more usbfs budget than it held")
        client.held -= 1
        if not self.capped:
            return
        self.reserved -= self.cost(nbytes)
        if submitted:
            self._since_refusal += 1
            if self._since_refusal >= _RECOVER_AFTER and self.ceiling < self.usable:
                self._since_refusal = 0
                self.ceiling = min(self.usable, self.ceiling + self.cost(nbytes))
        self._wake_next()

    def refused(self, client: BudgetClient, nbytes: int) -> None:
        """The kernel refused a submission this budget had granted; release it and shrink.

        The believed limit drops to what the process still holds (at least
        one transfer), and the user is told once how to raise the cap. A
        client left holding nothing is queued behind the other devices when
        they hold bytes; when nothing of this process is in flight the
        memory is held elsewhere and the caller retries after a delay.
        """
        self.refusals += 1
        self.release(client, nbytes, submitted=False)
        self._since_refusal = 0
        self.ceiling = max(self.cost(nbytes), min(self.ceiling, self.reserved))
        if self.reserved > 0 and client not in self._waiting:
            # Wait in line for bytes another completion frees.
            self._waiting[client] = next(self._arrivals)
        if not self._warned:
            self._warned = True
            cap = f"{self.limit_bytes >> 20} MB" if self.capped else "0 (no cap)"
            logger.warning(
                "%s: the kernel refused a USB transfer for lack of usbfs memory "
                "(usbfs_memory_mb read as %s; other programs share it); continuing with fewer "
                "transfers in flight; %s",
                client.name,
                cap,
                RAISE_CAP_HINT,
            )

    def _wake_next(self) -> None:
        best = self._best_waiter()
        if best is not None:
            # Only the first in line can take bytes; it wakes the next one in turn.
            best.wake()


_process_budget: UsbfsBudget | None = None


def process_budget() -> UsbfsBudget:
    """The budget shared by every device this process drives (read from sysfs once)."""
    global _process_budget
    if _process_budget is None:
        _process_budget = UsbfsBudget.from_sysfs()
        logger.debug("usbfs memory cap: %d MB (0 = none)", _process_budget.limit_bytes >> 20)
    return _process_budget
