"""parallel-flash: boot many Windows Phone class devices at once from one WIM.

The public API, flat (anyio's style): everything the ``parallel-flash``
command does is callable from here, e.g.::

    from parallel_flash import BootOptions, ImageBuffer, Presentation, SimulatedLine, run_boot

Names load on first use (PEP 562): ``import parallel_flash`` imports nothing
beyond the standard library. That keeps ``parallel-flash --help`` fast, and
it lets the umockdev emulator host -- which runs under Debian's python3 and
puts the project's dependencies on its path only after it has started --
import its own modules from this package.

Values that are neither classes nor functions: ``__version__``;
``LinkSource``, the type of what :func:`run_boot` takes as its devices;
``DEFAULT_IN_FLIGHT``, how many bulk transfers each device keeps queued;
``FileType``, the input file kinds :func:`detect_file_type` tells apart.

FFU -> WIM conversion is :func:`parallel_flash.img2wim.convert.img2wim`: a top-level
name ``img2wim`` would be shadowed by the module of the same name.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .demo.ffu import build_demo_ffu as build_demo_ffu
    from .demo.inputs import build_demo_sdi as build_demo_sdi
    from .demo.inputs import build_demo_wim as build_demo_wim
    from .demo.inputs import demo_inputs as demo_inputs
    from .emulator import DeviceSpec as DeviceSpec
    from .emulator import EmulatedLine as EmulatedLine
    from .engine.discovery import DeviceFilters as DeviceFilters
    from .engine.discovery import DeviceListing as DeviceListing
    from .engine.discovery import Identity as Identity
    from .engine.discovery import find_devices as find_devices
    from .engine.discovery import identify as identify
    from .engine.discovery import list_devices as list_devices
    from .engine.discovery import read_nok_info as read_nok_info
    from .engine.discovery import watch_devices as watch_devices
    from .engine.pipeline import DEFAULT_IN_FLIGHT as DEFAULT_IN_FLIGHT
    from .engine.pipeline import BootOptions as BootOptions
    from .engine.pipeline import LineCounters as LineCounters
    from .engine.pipeline import LineResult as LineResult
    from .engine.pipeline import StopReason as StopReason
    from .engine.pipeline import Unopened as Unopened
    from .engine.pipeline import boot_device as boot_device
    from .engine.pipeline import boot_line as boot_line
    from .engine.pipeline import identify_device as identify_device
    from .engine.records import DeviceLog as DeviceLog
    from .engine.records import DeviceRecord as DeviceRecord
    from .engine.records import DeviceState as DeviceState
    from .engine.records import LineObserver as LineObserver
    from .engine.records import NullObserver as NullObserver
    from .engine.records import ObserverGroup as ObserverGroup
    from .engine.records import Outcome as Outcome
    from .engine.station import Confirmation as Confirmation
    from .engine.station import Intake as Intake
    from .engine.station import run_station as run_station
    from .errors import DeviceBootError as DeviceBootError
    from .errors import DeviceDisconnected as DeviceDisconnected
    from .errors import DeviceRefused as DeviceRefused
    from .errors import EmulatorError as EmulatorError
    from .errors import FormatError as FormatError
    from .errors import InputError as InputError
    from .errors import InvalidValue as InvalidValue
    from .errors import LoaderStatusError as LoaderStatusError
    from .errors import LocalProtocolError as LocalProtocolError
    from .errors import ParallelFlashError as ParallelFlashError
    from .errors import ProtocolError as ProtocolError
    from .errors import RemoteProtocolError as RemoteProtocolError
    from .errors import TransferCancelled as TransferCancelled
    from .errors import TransferStall as TransferStall
    from .errors import TransferTimeout as TransferTimeout
    from .errors import TransportError as TransportError
    from .errors import UsbfsMemoryError as UsbfsMemoryError
    from .errors import WimlibError as WimlibError
    from .formats import FileType as FileType
    from .formats import detect_file_type as detect_file_type
    from .image import ImageBuffer as ImageBuffer
    from .image import ImageSet as ImageSet
    from .img2wim.convert import Img2WimProgress as Img2WimProgress
    from .img2wim.convert import Img2WimResult as Img2WimResult
    from .output.inspect import FileDescription as FileDescription
    from .output.inspect import describe_file as describe_file
    from .output.report import JsonlReport as JsonlReport
    from .output.report import read_report as read_report
    from .output.ui import LiveTable as LiveTable
    from .output.ui import PlainOutput as PlainOutput
    from .protocol.device import DeviceFaults as DeviceFaults
    from .protocol.device import DeviceModel as DeviceModel
    from .protocol.host import WimBootHost as WimBootHost
    from .protocol.loader import HostSetup as HostSetup
    from .protocol.loader import LoaderHost as LoaderHost
    from .protocol.nokia.faults import NokFaults as NokFaults
    from .protocol.nokia.host import NokTimeouts as NokTimeouts
    from .protocol.nokia.lumia import LumiaMmosHost as LumiaMmosHost
    from .protocol.nokia.ufp import UfpRamBootHost as UfpRamBootHost
    from .protocol.selection import Loader as Loader
    from .session import LinkSource as LinkSource
    from .session import Presentation as Presentation
    from .session import SimulatedLine as SimulatedLine
    from .session import run_boot as run_boot
    from .session import run_usb as run_usb
    from .transport.base import Link as Link
    from .transport.base import OutChunk as OutChunk
    from .transport.libusb import UsbContext as UsbContext
    from .transport.libusb import UsbLink as UsbLink
    from .transport.ports import PortPath as PortPath
    from .transport.sim import SimLink as SimLink
    from .transport.sim import simulated_line as simulated_line

#: Where each public name lives (relative to this package); the names load on first use.
_EXPORTS: dict[str, str] = {
    # running a line
    "BootOptions": ".engine.pipeline",
    "DEFAULT_IN_FLIGHT": ".engine.pipeline",
    "ImageBuffer": ".image",
    "ImageSet": ".image",
    "LineResult": ".engine.pipeline",
    "LineCounters": ".engine.pipeline",
    "StopReason": ".engine.pipeline",
    "Unopened": ".engine.pipeline",
    "LinkSource": ".session",
    "Presentation": ".session",
    "SimulatedLine": ".session",
    "run_boot": ".session",
    "run_usb": ".session",
    "boot_device": ".engine.pipeline",
    "boot_line": ".engine.pipeline",
    "identify_device": ".engine.pipeline",
    # station mode and real USB
    "Confirmation": ".engine.station",
    "Intake": ".engine.station",
    "run_station": ".engine.station",
    "DeviceFilters": ".engine.discovery",
    "Identity": ".engine.discovery",
    "find_devices": ".engine.discovery",
    "identify": ".engine.discovery",
    "DeviceListing": ".engine.discovery",
    "list_devices": ".engine.discovery",
    "read_nok_info": ".engine.discovery",
    "watch_devices": ".engine.discovery",
    # records, observers, output
    "DeviceLog": ".engine.records",
    "DeviceRecord": ".engine.records",
    "DeviceState": ".engine.records",
    "LineObserver": ".engine.records",
    "NullObserver": ".engine.records",
    "ObserverGroup": ".engine.records",
    "Outcome": ".engine.records",
    "JsonlReport": ".output.report",
    "read_report": ".output.report",
    "LiveTable": ".output.ui",
    "PlainOutput": ".output.ui",
    "FileDescription": ".output.inspect",
    "describe_file": ".output.inspect",
    # transports and protocol
    "Link": ".transport.base",
    "OutChunk": ".transport.base",
    "SimLink": ".transport.sim",
    "simulated_line": ".transport.sim",
    "UsbContext": ".transport.libusb",
    "UsbLink": ".transport.libusb",
    "PortPath": ".transport.ports",
    "DeviceFaults": ".protocol.device",
    "DeviceModel": ".protocol.device",
    "WimBootHost": ".protocol.host",
    "Loader": ".protocol.selection",
    "LumiaMmosHost": ".protocol.nokia.lumia",
    "UfpRamBootHost": ".protocol.nokia.ufp",
    "NokFaults": ".protocol.nokia.faults",
    "NokTimeouts": ".protocol.nokia.host",
    "HostSetup": ".protocol.loader",
    "LoaderHost": ".protocol.loader",
    # files: formats, img2wim, demo inputs, the emulator
    "FileType": ".formats",
    "detect_file_type": ".formats",
    "Img2WimProgress": ".img2wim.convert",
    "Img2WimResult": ".img2wim.convert",
    "build_demo_ffu": ".demo.ffu",
    "build_demo_sdi": ".demo.inputs",
    "build_demo_wim": ".demo.inputs",
    "demo_inputs": ".demo.inputs",
    "DeviceSpec": ".emulator",
    "EmulatedLine": ".emulator",
    # errors (every one is a ParallelFlashError)
    "ParallelFlashError": ".errors",
    "InputError": ".errors",
    "InvalidValue": ".errors",
    "FormatError": ".errors",
    "ProtocolError": ".errors",
    "LocalProtocolError": ".errors",
    "RemoteProtocolError": ".errors",
    "DeviceBootError": ".errors",
    "LoaderStatusError": ".errors",
    "DeviceRefused": ".errors",
    "TransportError": ".errors",
    "TransferTimeout": ".errors",
    "TransferStall": ".errors",
    "TransferCancelled": ".errors",
    "DeviceDisconnected": ".errors",
    "UsbfsMemoryError": ".errors",
    "WimlibError": ".errors",
    "EmulatorError": ".errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
