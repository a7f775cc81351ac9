"""Every exception parallel-flash raises, in one place.

Errors are split by whose fault they are, so callers can map them to exit
codes and messages without string matching:

* :class:`InputError` -- the user gave us something we cannot use (a file, an
  argument). Reported before any device is touched; the CLI exits 2.
  :class:`InvalidValue` is its form for a value a library function was given
  (also a :class:`ValueError`); its message names the value, never a ``--flag``:
  the CLI words that.
* :class:`LocalProtocolError` -- the host side tried something the protocol
  does not allow (a bug in the caller or in us).
* :class:`RemoteProtocolError` -- the device replied with something the
  protocol does not allow.
* :class:`TransportError` and subclasses -- the USB link (real or simulated)
  failed: timeout, stall, disconnect.
* :class:`DeviceBootError` -- the device answered the whole exchange and
  reported failure (negative status); :class:`LoaderStatusError` is its NOK
  loaders' form (a non-zero status in a reply, with its meaning).
* :class:`HostSetupError` -- this machine lacks something the tool needs (a
  library, access to USB); the CLI exits 2 with the package or flag to fix it.
* :class:`DeviceRefused` -- the device's own description rules it out for
  this boot (a missing capability, too little RAM); raised before any image
  byte is sent.
"""

from __future__ import annotations

__all__ = (
    "DeviceBootError",
    "DeviceDisconnected",
    "DeviceRefused",
    "EmulatorError",
    "FormatError",
    "HostSetupError",
    "InputError",
    "InvalidValue",
    "LoaderStatusError",
    "LocalProtocolError",
    "ParallelFlashError",
    "ProtocolError",
    "RemoteProtocolError",
    "TransferCancelled",
    "TransferStall",
    "TransferTimeout",
    "TransportError",
    "UsbfsMemoryError",
    "WimlibError",
    "status_text",
)


def status_text(status: int) -> str:
    """``status 0x80070057``: a SimpleIO status as every message shows it.

    The device sends a signed 32-bit value (negative = failure); its 32 bits
    in hex are what Microsoft's tools and the loader's documentation print.
    """
    return f"status 0x{status & 0xFFFFFFFF:08x}"


class ParallelFlashError(Exception):
    """Raised for any failure parallel-flash knows how to describe."""


class InputError(ParallelFlashError):
    """Raised when a file or argument supplied by the user cannot be used."""


class InvalidValue(InputError, ValueError):
    """Raised when a library function is given a value outside what it accepts.

    A port path not in sysfs form, a device count below 1: the message names
    the value and the expected form, in the library's words (no ``--flag``).
    """


class HostSetupError(ParallelFlashError):
    """Raised when this machine lacks a library or access the tool needs.

    The message names what to install (the Debian package) or how to give a
    container the USB bus; nothing the user passed is at fault.
    """


class FormatError(InputError):
    """Raised when a file does not match the layout it claims to have.

    Carries the file and the field so the message can say exactly what is
    wrong where (wimlib's error messages are the model).
    """

    def __init__(self, path: str, field: str, problem: str) -> None:
        self.path = path
        self.field = field
        self.problem = problem
        super().__init__(f"{path}: {field}: {problem}")


class ProtocolError(ParallelFlashError):
    """Raised when the SimpleIO exchange breaks its rules (see subclasses)."""


class LocalProtocolError(ProtocolError):
    """Raised when the host side asks for something the protocol forbids."""


class RemoteProtocolError(ProtocolError):
    """Raised when the device sends something the protocol does not allow."""


class DeviceBootError(ParallelFlashError):
    """Raised when the device completes the exchange but reports a negative status."""

    def __init__(self, status: int) -> None:
        self.status = status
        super().__init__(f"WIM boot failure {status_text(status)}")


class LoaderStatusError(DeviceBootError):
    """Raised when a NOK loader (Lumia, UFP) answers a message with a non-zero status.

    Names the request and the status's meaning (ThrowFlashError's table).
    """

    def __init__(self, status: int, *, request: str, meaning: str) -> None:
        self.status = status
        self.request = request
        self.meaning = meaning
        ParallelFlashError.__init__(
            self, f"{request} answered status 0x{status:04X} ({meaning})"
        )


class DeviceRefused(ParallelFlashError):
    """Raised when a device's own description rules it out, before any image byte is sent."""


class TransportError(ParallelFlashError):
    """Raised when a USB transfer (real or simulated) fails."""


class TransferTimeout(TransportError):
    """Raised when a transfer did not complete within its timeout."""


class TransferStall(TransportError):
    """Raised when an endpoint answers with STALL."""


class TransferCancelled(TransportError):
    """Raised when a transfer was cancelled by us (shutdown, Ctrl-C)."""


class DeviceDisconnected(TransportError):
    """Raised when the device went away while we were talking to it."""


class UsbfsMemoryError(TransportError):
    """Raised when the kernel refuses a submission for lack of usbfs memory.

    Pipelines back off and retry on this; it only surfaces when no progress
    at all is possible.
    """


class WimlibError(ParallelFlashError):
    """Raised when libwim (wimlib) fails an operation on a file.

    Names the file, the operation, wimlib's error string and code, and what
    wimlib printed about it (which usually names the exact inner file).
    """

    def __init__(
        self, path: str, operation: str, code: int, detail: str, printed: str = ""
    ) -> None:
        self.path = path
        self.operation = operation
        self.code = code
        self.detail = detail
        self.printed = printed
        extra = f" ({printed})" if printed else ""
        super().__init__(f"{path}: {operation} failed: {detail} [wimlib error {code}]{extra}")


class EmulatorError(ParallelFlashError):
    """Raised when the umockdev device emulator cannot start or stops answering.

    The message names the Debian package to install when one is missing.
    """
