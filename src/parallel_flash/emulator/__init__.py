"""A line of emulated Windows Phone class devices behind umockdev.

Programs under test see the devices as real USB hardware through unmodified
libusb: ``LD_PRELOAD=libumockdev-preload.so.0`` plus ``UMOCKDEV_DIR`` (see
:meth:`EmulatedLine.environ`). Each device runs a
:class:`~parallel_flash.protocol.device.DeviceModel` behind emulated usbdevfs
ioctls in a separate process under Debian's python3 (``python3-gi``,
``gir1.2-umockdev-1.0``).

Example::

    with EmulatedLine(8, link_rate_mbps=40) as line:
        line.run(["parallel-flash", "boot", "image.wim"], check=True)
        for port, info in line.summaries().items():
            print(port, info["sha256"], info["booted"])

Importing this package never imports ``gi``.
"""

from ._line import PRELOAD_LIBRARY as PRELOAD_LIBRARY
from ._line import EmulatedLine as EmulatedLine
from ._line import check_environment as check_environment
from .control import DeviceSpec as DeviceSpec
from .ports import PortPath as PortPath
from .ports import default_port as default_port

__all__ = (
    "PRELOAD_LIBRARY",
    "DeviceSpec",
    "EmulatedLine",
    "PortPath",
    "check_environment",
    "default_port",
)
