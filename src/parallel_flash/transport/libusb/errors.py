"""The one boundary where python-libusb1's errors and statuses become the project's."""

from __future__ import annotations

import usb1

from ...errors import (
    DeviceDisconnected,
    TransferCancelled,
    TransferStall,
    TransferTimeout,
    TransportError,
    UsbfsMemoryError,
)
from ..usbfs import RAISE_CAP_HINT, UsbfsBudget

__all__ = ("is_memory_refusal", "status_error", "submit_error")


def is_memory_refusal(exc: usb1.USBError, budget: UsbfsBudget) -> bool:
    """Whether the kernel refused a submission for lack of usbfs memory.

    libusb reports it as NO_MEM, or as IO on some versions; IO only counts
    when a cap is in force, else it is a real I/O error.
    """
    return isinstance(exc, usb1.USBErrorNoMem) or (
        isinstance(exc, usb1.USBErrorIO) and budget.capped
    )


def submit_error(exc: usb1.USBError, what: str, budget: UsbfsBudget) -> TransportError:
    """Map an exception raised by a synchronous libusb call or a submission."""
    if isinstance(exc, usb1.USBErrorNoDevice):
        return DeviceDisconnected(f"device disconnected ({what})")
    if is_memory_refusal(exc, budget):
        return UsbfsMemoryError(
            f"the kernel refused {what} for lack of usbfs memory; {RAISE_CAP_HINT}"
        )
    if isinstance(exc, usb1.USBErrorPipe):
        return TransferStall(f"endpoint stalled ({what})")
    if isinstance(exc, usb1.USBErrorTimeout):
        return TransferTimeout(f"timed out ({what})")
    if isinstance(exc, usb1.USBErrorAccess):
        return TransportError(
            f"permission denied ({what}); run as root or add a udev rule giving your user "
            "access to the device"
        )
    if isinstance(exc, usb1.USBErrorBusy):
        return TransportError(f"device busy ({what}): another program has claimed it")
    return TransportError(f"USB error {exc} ({what})")


def status_error(status: int, what: str, timeout: float) -> TransportError:
    """Map the status of a completed transfer that did not succeed."""
    if status == usb1.TRANSFER_TIMED_OUT:
        return TransferTimeout(f"no answer within {timeout:g} s ({what})")
    if status == usb1.TRANSFER_STALL:
        return TransferStall(f"endpoint stalled ({what})")
    if status == usb1.TRANSFER_NO_DEVICE:
        return DeviceDisconnected(f"device disconnected ({what})")
    if status == usb1.TRANSFER_CANCELLED:
        return TransferCancelled(f"cancelled ({what})")
    if status == usb1.TRANSFER_OVERFLOW:
        return TransportError(f"device sent more data than asked for ({what})")
    return TransportError(f"transfer failed with an I/O error ({what})")
