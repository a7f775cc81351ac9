"""The device models a simulated or emulated port can hold, built by kind.

One place that knows every kind of device model, so the simulated line
(``boot --sim``), the umockdev emulator and the CLI's fault parsing agree:
a SimpleIO phone, a Lumia in its flash app, a UFP device speaking NOKXFS
protocol v1 or v2.
"""

from __future__ import annotations

import uuid

from .device import DeviceFaults, DeviceModel
from .nokia.device import NokDeviceModel
from .nokia.faults import NokFaults

__all__ = ("MODEL_KINDS", "AnyDeviceModel", "AnyFaults", "build_model", "parse_faults")

#: Kinds of device model, as ``--sim-mix`` and the emulator's device spec name them.
MODEL_KINDS = ("simpleio", "lumia", "ufp-v1", "ufp-v2")

AnyDeviceModel = DeviceModel | NokDeviceModel
AnyFaults = DeviceFaults | NokFaults

#: NOK models report at most this much RAM (2 GiB: a phone's largest region).
_NOK_RAM = 1 << 31


def _check_kind(kind: str) -> None:
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown device kind {kind!r} (known: {', '.join(MODEL_KINDS)})")


def parse_faults(kind: str, text: str) -> AnyFaults:
    """The faults of a device of ``kind`` from their CLI form (ValueError naming the item)."""
    _check_kind(kind)
    return DeviceFaults.parse(text) if kind == "simpleio" else NokFaults.parse(text)


def build_model(
    kind: str,
    *,
    name: str,
    faults: AnyFaults | None = None,
    unique_id: uuid.UUID | None = None,
    ram_limit: int = 1 << 32,
    count_only: bool = False,
    record_transcript: bool = True,
) -> AnyDeviceModel:
    """A device model of ``kind``; faults of the other family are a ValueError."""
    _check_kind(kind)
    if kind == "simpleio":
        if isinstance(faults, NokFaults):
            raise ValueError(f"{name} is a SimpleIO device; its faults are SimpleIO faults")
        return DeviceModel(
            friendly_name=name,
            unique_id=unique_id,
            ram_limit=ram_limit,
            faults=faults,
            count_only=count_only,
            record_transcript=record_transcript,
        )
    if isinstance(faults, DeviceFaults):
        raise ValueError(f"{name} is a {kind} device; its faults are Lumia/UFP faults")
    # The NOK models load with the first one built: the CLI and transport.sim import this
    # module on every run, USB ones included (issue 10: command to first image byte).
    if kind == "lumia":
        from .nokia.lumia_device import LumiaDeviceModel

        return LumiaDeviceModel(
            name=name,
            unique_id=unique_id,
            faults=faults,
            count_only=count_only,
            record_transcript=record_transcript,
            ram_limit=min(ram_limit, _NOK_RAM),
        )
    from .nokia.ufp_device import UfpDeviceModel

    return UfpDeviceModel(
        name=name,
        unique_id=unique_id,
        protocol_version=int(kind[-1]),
        faults=faults,
        count_only=count_only,
        record_transcript=record_transcript,
        ram_limit=min(ram_limit, _NOK_RAM),
    )
