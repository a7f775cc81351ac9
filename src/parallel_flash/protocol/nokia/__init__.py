"""The NOK flash-app loaders, sans-IO: Lumia MMOS over USB and UFP FFU-to-RAM.

Both speak big-endian "NOK*" messages, one request and one reply at a time
(loaders.md A.1, A.2). :mod:`.messages` holds what they share (NOKV, NOKXFR,
status replies), :mod:`.xfl` and :mod:`.xfs` each loader's image messages,
:mod:`.lumia` and :mod:`.ufp` the host machines, and :mod:`.lumia_device`,
:mod:`.ufp_device` the device models the simulated line and the emulator host.

Derived from public host code (WPinternals, UnifiedFlashingPlatform); not
tried on hardware.
"""

from .faults import NokFaults as NokFaults
from .host import AwaitReturn as AwaitReturn
from .host import NokTimeouts as NokTimeouts
from .host import SendFinal as SendFinal
from .host import SendImageMessage as SendImageMessage
from .lumia import LumiaMmosHost as LumiaMmosHost
from .lumia_device import LumiaDeviceModel as LumiaDeviceModel
from .messages import NokInfo as NokInfo
from .ufp import UfpRamBootHost as UfpRamBootHost
from .ufp_device import UfpDeviceModel as UfpDeviceModel

__all__ = (
    "AwaitReturn",
    "LumiaDeviceModel",
    "LumiaMmosHost",
    "NokFaults",
    "NokInfo",
    "NokTimeouts",
    "SendFinal",
    "SendImageMessage",
    "UfpDeviceModel",
    "UfpRamBootHost",
)
