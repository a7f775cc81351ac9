"""The CLI form of injected faults (``key=value,flag``): one grammar for every device model.

``emulate --fault`` and ``boot --sim-fault`` take it for SimpleIO devices
(:class:`~.device.DeviceFaults`) and for Lumia and UFP devices
(:class:`~.nokia.faults.NokFaults`); the keys differ because the loaders'
failure modes do, the grammar and its error messages do not.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import fields
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ("describe_faults", "parse_faults_spec")

F = TypeVar("F", bound="DataclassInstance")


def parse_faults_spec(
    cls: type[F], text: str, keys: Mapping[str, str], *, signed: bool = True
) -> F:
    """Parse e.g. ``status=-5,logs=2`` or ``no-mmos,wbs=0`` into ``cls``.

    ``keys`` maps each CLI key to its field; a field whose default is False is
    a flag and takes no value, every other field an integer in any base
    Python reads (``0x...``), negative only when ``signed``. Raises
    ValueError naming the bad item.
    """
    flags = {field.name for field in fields(cls) if field.default is False}
    values: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, raw = item.partition("=")
        name = keys.get(key)
        if name is None:
            raise ValueError(f"unknown fault {key!r} (known: {', '.join(sorted(keys))})")
        if name in flags:
            if sep:
                raise ValueError(f"fault {key!r} takes no value")
            values[name] = True
            continue
        if not sep:
            raise ValueError(f"fault {key!r} needs a value: {key}=N")
        try:
            value = int(raw, 0)
        except ValueError:
            raise ValueError(f"fault {key!r}: {raw!r} is not an integer") from None
        if value < 0 and not signed:
            raise ValueError(f"fault {key!r}: {raw!r} is negative")
        values[name] = value
    return cls(**values)


def describe_faults(
    faults: DataclassInstance, keys: Mapping[str, str], *, hexadecimal: Collection[str] = ()
) -> str:
    """The CLI form of ``faults`` (the inverse of :func:`parse_faults_spec`).

    Names every field that differs from its default; the fields named in
    ``hexadecimal`` (statuses) are written in hex.
    """
    defaults = {field.name: field.default for field in fields(faults)}
    parts = []
    for key, name in keys.items():
        value = getattr(faults, name)
        if value is defaults[name] or (type(value) is int and value == defaults[name]):
            continue
        if value is True:
            parts.append(key)
        else:
            parts.append(f"{key}={value:#x}" if name in hexadecimal else f"{key}={value}")
    return ",".join(parts)
