"""Misbehaviour to inject into a Lumia or UFP device model, and its CLI form.

The CLI form is the one ``emulate --fault`` and ``boot --sim`` take for
SimpleIO devices (``key=value,flag``); the keys differ because the loaders'
failure modes do.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..fault_spec import describe_faults, parse_faults_spec

__all__ = ("NokFaults",)

#: The widths the wire carries these values in (NOKV subblocks, u16 statuses, USB IDs).
_LIMITS = {
    "app_type": 0xFF,
    "mmos_flag": 0xFF,
    "write_buffer": 0xFFFF_FFFF,
    "mask": 0xFFFF,
    "memory": (1 << 64) - 1,
    "status": 0xFFFF,
    "switch_status": 0xFFFF,
    "return_pid": 0xFFFF,
    "status_at": (1 << 63) - 1,
    "stop_reading_after": (1 << 63) - 1,
    "disconnect_after": (1 << 63) - 1,
    "silent_after": (1 << 63) - 1,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class NokFaults:
    """One field per kind of fault; the defaults are a healthy device."""

    #: Answer every request with a bare "NOKU" (another app is in charge).
    noku: bool = False
    #: NOKV app type to report (1 = BootManager) instead of 2 (flash app).
    app_type: int | None = None
    #: Leave NOKV subblock 0x1F (MMOS over USB) out.
    no_mmos: bool = False
    #: Value of subblock 0x1F byte 0 (1 = supported).
    mmos_flag: int | None = None
    #: WriteBufferSize to report (0 is a refusal case).
    write_buffer: int | None = None
    #: Leave NOKV subblock 0x02 (WriteBufferSize) out.
    no_write_buffer: bool = False
    #: SecureFfuSupportedProtocolMask to report.
    mask: int | None = None
    #: LargestMemoryRegion to report (also the RAM the model has).
    memory: int | None = None
    #: UFP: answer a bare "NOKU" to header v2 messages.
    noku_v2: bool = False
    #: Answer this status to the image message holding image byte ``status_at``.
    status: int | None = None
    status_at: int = 0
    #: Lumia: answer this status to NOKXCBA.
    switch_status: int | None = None
    #: Stop reading OUT data once this many image bytes have arrived.
    stop_reading_after: int | None = None
    #: Disconnect once this many image bytes have arrived.
    disconnect_after: int | None = None
    #: Never reply again once this many image bytes have arrived.
    silent_after: int | None = None
    #: After the boot, do not come back on the port.
    no_return: bool = False
    #: After the boot, come back with this idProduct instead of the expected one.
    return_pid: int | None = None

    def __post_init__(self) -> None:
        for name, limit in _LIMITS.items():
            value = getattr(self, name)
            if value is not None and not 0 <= value <= limit:
                raise ValueError(f"fault {name.replace('_', '-')}={value}: must be 0..{limit:#x}")

    _KEYS = {
        "noku": "noku",
        "app-type": "app_type",
        "no-mmos": "no_mmos",
        "mmos": "mmos_flag",
        "wbs": "write_buffer",
        "no-wbs": "no_write_buffer",
        "mask": "mask",
        "memory": "memory",
        "noku-v2": "noku_v2",
        "status": "status",
        "status-at": "status_at",
        "switch-status": "switch_status",
        "stop-reading": "stop_reading_after",
        "disconnect": "disconnect_after",
        "silent-after": "silent_after",
        "no-return": "no_return",
        "return-pid": "return_pid",
    }

    @classmethod
    def parse(cls, text: str) -> NokFaults:
        """Parse e.g. ``no-mmos`` or ``status=0x1003,status-at=1048576``.

        Integers accept any base Python does; none is negative. Raises
        ValueError naming the bad item.
        """
        return parse_faults_spec(cls, text, cls._KEYS, signed=False)

    def describe(self) -> str:
        """The CLI form of these faults (inverse of :meth:`parse`)."""
        return describe_faults(self, self._KEYS, hexadecimal=("status", "switch_status"))
