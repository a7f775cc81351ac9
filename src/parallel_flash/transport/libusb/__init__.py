"""Real USB through python-libusb1: the only package that imports ``usb1``.

One concern per module:

* :mod:`.devices`     -- what enumeration and hotplug see; the SimpleIO interface check
* :mod:`.errors`      -- python-libusb1 errors and statuses mapped to the project's
* :mod:`.events`      -- libusb contexts and their event threads, sharded over devices
* :mod:`.context`     -- :class:`UsbContext`: enumeration, hotplug, opening
* :mod:`.transfer`    -- a single transfer whose completion is handed to the loop
* :mod:`.zero_packet` -- how a zero-length packet is sent (flag, or a transfer)
* :mod:`.link`        -- :class:`UsbLink`: single transfers and closing
* :mod:`.stream`      -- the image stream, resubmitted on the event threads

Threading model (usb-testing.md; Glasgow's USB layer): completions arrive on
event threads, one per libusb context, never on the event loop's thread.
Single transfers hand their completion to the loop; the image stream
resubmits its next transfer where the completion arrives and tells the loop
in batches. Every cancellation is awaited before its buffer is given up.
"""

from .context import SHARD_FIND_WAIT, UsbContext, hotplug_supported
from .devices import HotplugEvent, UsbDeviceInfo
from .events import (
    DEFAULT_EVENT_THREADS,
    DEVICES_PER_EVENT_THREAD,
    EVENT_THREADS_ENV,
    EVENT_WAIT,
)
from .link import UsbLink
from .stream import STREAM_TRANSFER_TIMEOUT_MIN
from .transfer import CANCEL_GRACE

__all__ = (
    "CANCEL_GRACE",
    "DEFAULT_EVENT_THREADS",
    "DEVICES_PER_EVENT_THREAD",
    "EVENT_THREADS_ENV",
    "EVENT_WAIT",
    "SHARD_FIND_WAIT",
    "STREAM_TRANSFER_TIMEOUT_MIN",
    "HotplugEvent",
    "UsbContext",
    "UsbDeviceInfo",
    "UsbLink",
    "hotplug_supported",
)
