"""The SimpleIO WIM boot, sans-IO: messages, the host state machine, the device model."""

from .device import DeviceFaults as DeviceFaults
from .device import DeviceModel as DeviceModel
from .device import OutResult as OutResult
from .host import HostPhase as HostPhase
from .host import HostTimeouts as HostTimeouts
from .host import TransferPlan as TransferPlan
from .host import WimBootHost as WimBootHost
from .messages import IdReply as IdReply
from .messages import LogPacket as LogPacket
from .messages import WimBootHeader as WimBootHeader

__all__ = (
    "DeviceFaults",
    "DeviceModel",
    "HostPhase",
    "HostTimeouts",
    "IdReply",
    "LogPacket",
    "OutResult",
    "TransferPlan",
    "WimBootHeader",
    "WimBootHost",
)
