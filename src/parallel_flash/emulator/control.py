"""The control channel between :class:`EmulatedLine` and the umockdev host process.

Stdlib only: both sides import it (the host runs under Debian's python3).

One JSON object per line. The parent writes requests on the host's stdin::

    {"id": 7, "cmd": "plug", "spec": {"name": "...", "port": "1-2.3", ...}}

and the host answers on stdout, in order, with ``{"id": 7, "ok": true,
"result": ...}`` or ``{"id": 7, "ok": false, "error": "..."}``. Lines without
an ``id`` are events the host sends on its own: ``ready`` (once, first),
``error`` (it cannot start; carries the Debian ``package`` to install when
that is the reason), ``plugged`` and ``unplugged``.

Commands: ``plug`` (spec) -> port, ``unplug`` (port), ``set_fault`` (port,
faults), ``summaries`` (transcript: bool) -> {port: summary}, ``port_summary``
(port) -> the latest device there only (cheap over a long run), ``stats``,
``ping``, ``shutdown``. The same commands are accepted on the optional unix
socket :meth:`EmulatedLine.serve` opens for scripts.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..protocol.models import AnyFaults

__all__ = (
    "EMULATOR_FAULTS",
    "DeviceSpec",
    "decode",
    "encode",
    "split_faults",
)

#: Faults the emulator itself acts on (the rest go to DeviceFaults.parse):
#: ``reappear-in-flashing`` -- after a successful boot the device leaves and
#: comes back on the same port in flashing mode, i.e. the boot failed (a bounce);
#: ``busy`` -- another program holds interface 0 (claiming it fails with EBUSY);
#: ``no-access`` -- the device node is mode 000, as without a udev rule (opening it
#: fails with EACCES for a process without CAP_DAC_OVERRIDE).
EMULATOR_FAULTS = ("reappear-in-flashing", "busy", "no-access")


@dataclass(slots=True)
class DeviceSpec:
    """One emulated device to plug in.

    :param name: DeviceFriendlyName of the Id reply; default ``Contoso.Emulated.<port>``.
    :param unique_id: DeviceUniqueID; default a random UUID.
    :param faults: fault spec in the CLI form (``status=-5,logs=2``, see
        ``DeviceFaults.parse``) plus ``reappear-in-flashing``, or a
        ``DeviceFaults`` (kept as its CLI form).
    :param ram_limit: largest image the device accepts, bytes.
    :param port: sysfs port path (``1-1.4``); default the next free one.
    :param kind: which device model (``simpleio``, ``lumia``, ``ufp-v1``, ``ufp-v2``;
        see ``protocol.models.MODEL_KINDS``); its faults are that model's.
    :param link_rate_mbps: this device's own link rate in MB/s (None = the line's).
    """

    name: str | None = None
    unique_id: uuid.UUID | str | None = None
    faults: str | AnyFaults = ""
    ram_limit: int = 1 << 32
    port: str | None = None
    kind: str = "simpleio"
    link_rate_mbps: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.faults, str):
            self.faults = self.faults.describe()

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unique_id": None if self.unique_id is None else str(self.unique_id),
            "faults": self.faults,
            "ram_limit": self.ram_limit,
            "port": self.port,
            "kind": self.kind,
            "link_rate_mbps": self.link_rate_mbps,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> DeviceSpec:
        unknown = set(data) - {
            "name", "unique_id", "faults", "ram_limit", "port", "kind", "link_rate_mbps"
        }
        if unknown:
            raise ValueError(f"device spec: unknown field(s) {', '.join(sorted(unknown))}")
        return cls(
            name=data.get("name"),
            unique_id=data.get("unique_id"),
            faults=data.get("faults") or "",
            ram_limit=int(data.get("ram_limit", 1 << 32)),
            port=data.get("port"),
            kind=str(data.get("kind") or "simpleio"),
            link_rate_mbps=data.get("link_rate_mbps"),
        )


def split_faults(text: str) -> tuple[str, frozenset[str]]:
    """Split a fault spec into the device model's part and the emulator's flags."""
    model_parts: list[str] = []
    flags: set[str] = set()
    for item in filter(None, (part.strip() for part in text.split(","))):
        if item in EMULATOR_FAULTS:
            flags.add(item)
        else:
            model_parts.append(item)
    return ",".join(model_parts), frozenset(flags)


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes | str) -> dict[str, Any]:
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError(f"control message is not a JSON object: {line!r:.80}")
    return message
