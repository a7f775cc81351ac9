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

FFU -> WIM conversion is :func:`parallel_flash.img2wim.img2wim`: a top-level
name ``img2wim`` would be shadowed by the module of the same name.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .demo_ffu import build_demo_ffu as build_demo_ffu
    from .demo_image import build_demo_sdi as build_demo_sdi
    from .demo_image import build_demo_wim as build_demo_wim
    from .demo_image import demo_inputs as demo_inputs
    from .discovery import DeviceFilters as DeviceFilters
    from .discovery import Identity as Identity
    from .discovery import UsbLine as UsbLine
    from .discovery import find_devices as find_devices
    from .discovery import identify as identify
    from .discovery import read_nok_info as read_nok_info
    from .discovery import watch_devices as watch_devices
    from .emulator import DeviceSpec as DeviceSpec
    from .emulator import EmulatedLine as EmulatedLine
    from .engine import DEFAULT_IN_FLIGHT as DEFAULT_IN_FLIGHT
    from .engine import BootOptions as BootOptions
    from .engine import LineResult as LineResult
    from .engine import boot_device as boot_device
    from .engine import boot_line as boot_line
    from .engine import run_interruptible as run_interruptible
    from .errors import DeviceBootError as DeviceBootError
    from .errors import DeviceDisconnected as DeviceDisconnected
    from .errors import DeviceRefused as DeviceRefused
    from .errors import EmulatorError as EmulatorError
    from .errors import FormatError as FormatError
    from .errors import InputError as InputError
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
    from .events import DeviceLog as DeviceLog
    from .events import DeviceRecord as DeviceRecord
    from .events import DeviceState as DeviceState
    from .events import LineObserver as LineObserver
    from .events import NullObserver as NullObserver
    from .events import ObserverGroup as ObserverGroup
    from .formats import FileType as FileType
    from .formats import detect_file_type as detect_file_type
    from .image import ImageBuffer as ImageBuffer
    from .image import ImageSet as ImageSet
    from .img2wim import Img2WimProgress as Img2WimProgress
    from .img2wim import Img2WimResult as Img2WimResult
    from .inspect import FileDescription as FileDescription
    from .inspect import describe_file as describe_file
    from .protocol import DeviceFaults as DeviceFaults
    from .protocol import DeviceModel as DeviceModel
    from .protocol import WimBootHost as WimBootHost
    from .protocol.nokia import LumiaMmosHost as LumiaMmosHost
    from .protocol.nokia import NokFaults as NokFaults
    from .protocol.nokia import UfpRamBootHost as UfpRamBootHost
    from .protocol.selection import Loader as Loader
    from .report import JsonlReport as JsonlReport
    from .report import read_report as read_report
    from .runner import LinkSource as LinkSource
    from .runner import Presentation as Presentation
    from .runner import SimulatedLine as SimulatedLine
    from .runner import run_boot as run_boot
    from .station import StationCounters as StationCounters
    from .station import StationResult as StationResult
    from .station import run_station as run_station
    from .transport.base import Link as Link
    from .transport.base import OutChunk as OutChunk
    from .transport.libusb import UsbContext as UsbContext
    from .transport.libusb import UsbLink as UsbLink
    from .transport.sim import SimLink as SimLink
    from .transport.sim import simulated_line as simulated_line
    from .ui import LiveTable as LiveTable
    from .ui import PlainOutput as PlainOutput

#: Where each public name lives (relative to this package); the names load on first use.
_EXPORTS: dict[str, str] = {
    # running a line
    "BootOptions": ".engine",
    "DEFAULT_IN_FLIGHT": ".engine",
    "ImageBuffer": ".image",
    "ImageSet": ".image",
    "LineResult": ".engine",
    "LinkSource": ".runner",
    "Presentation": ".runner",
    "SimulatedLine": ".runner",
    "run_boot": ".runner",
    "boot_device": ".engine",
    "boot_line": ".engine",
    "run_interruptible": ".engine",
    # station mode and real USB
    "StationCounters": ".station",
    "StationResult": ".station",
    "run_station": ".station",
    "DeviceFilters": ".discovery",
    "Identity": ".discovery",
    "UsbLine": ".discovery",
    "find_devices": ".discovery",
    "identify": ".discovery",
    "read_nok_info": ".discovery",
    "watch_devices": ".discovery",
    # records, observers, output
    "DeviceLog": ".events",
    "DeviceRecord": ".events",
    "DeviceState": ".events",
    "LineObserver": ".events",
    "NullObserver": ".events",
    "ObserverGroup": ".events",
    "JsonlReport": ".report",
    "read_report": ".report",
    "LiveTable": ".ui",
    "PlainOutput": ".ui",
    "FileDescription": ".inspect",
    "describe_file": ".inspect",
    # transports and protocol
    "Link": ".transport.base",
    "OutChunk": ".transport.base",
    "SimLink": ".transport.sim",
    "simulated_line": ".transport.sim",
    "UsbContext": ".transport.libusb",
    "UsbLink": ".transport.libusb",
    "DeviceFaults": ".protocol",
    "DeviceModel": ".protocol",
    "WimBootHost": ".protocol",
    "Loader": ".protocol.selection",
    "LumiaMmosHost": ".protocol.nokia",
    "UfpRamBootHost": ".protocol.nokia",
    "NokFaults": ".protocol.nokia",
    # files: formats, img2wim, demo inputs, the emulator
    "FileType": ".formats",
    "detect_file_type": ".formats",
    "Img2WimProgress": ".img2wim",
    "Img2WimResult": ".img2wim",
    "build_demo_ffu": ".demo_ffu",
    "build_demo_sdi": ".demo_image",
    "build_demo_wim": ".demo_image",
    "demo_inputs": ".demo_image",
    "DeviceSpec": ".emulator",
    "EmulatedLine": ".emulator",
    # errors (every one is a ParallelFlashError)
    "ParallelFlashError": ".errors",
    "InputError": ".errors",
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
