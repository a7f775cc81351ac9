"""Which loader a device speaks, and which file each loader boots.

One ``parallel-flash boot FILE`` serves a mixed line (issue 11): each device
is matched by its USB IDs to a loader generation, and each loader takes only
some file types. A device whose loader cannot take the given file ends as a
failed record that says which file it needs.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from .messages import FLASHING_PID, MICROSOFT_VID
from .nokia.messages import LUMIA_FLASH_IDS, UFP_FLASH_IDS

__all__ = (
    "ALL_FLASH_IDS",
    "FILE_TYPE_NAMES",
    "SIMPLEIO_IDS",
    "Loader",
    "loader_for",
    "refusal",
)

SIMPLEIO_IDS: frozenset[tuple[int, int]] = frozenset({(MICROSOFT_VID, FLASHING_PID)})


class Loader(enum.StrEnum):
    """A loader generation; the value is what records, reports and the table show."""

    SIMPLEIO = "simpleio"
    LUMIA = "lumia"
    UFP = "ufp"

    @property
    def ids(self) -> frozenset[tuple[int, int]]:
        return _IDS[self]

    @property
    def file_types(self) -> frozenset[str]:
        """File types (formats.detect names) this loader boots."""
        return _FILES[self]

    @property
    def needs(self) -> str:
        """The files it takes, for "this device needs ..." messages."""
        return _NEEDS[self]

    def takes(self, file_type: str) -> bool:
        return file_type in _FILES[self]


#: File types as a sentence names them.
FILE_TYPE_NAMES = {"wim": "a WIM", "secwim": "a .secwim", "ffu": "an FFU"}


_IDS = {
    Loader.SIMPLEIO: SIMPLEIO_IDS,
    Loader.LUMIA: LUMIA_FLASH_IDS,
    Loader.UFP: UFP_FLASH_IDS,
}
_FILES = {
    Loader.SIMPLEIO: frozenset({"wim", "secwim"}),
    Loader.LUMIA: frozenset({"secwim"}),
    Loader.UFP: frozenset({"ffu"}),
}
_NEEDS = {
    Loader.SIMPLEIO: "a WIM (with --sdi) or a .secwim",
    Loader.LUMIA: "a signed .secwim (MMOS over USB)",
    Loader.UFP: "an FFU (FFU to RAM)",
}

#: Every flashing-mode ID parallel-flash boots: the default device match.
ALL_FLASH_IDS: frozenset[tuple[int, int]] = frozenset().union(*_IDS.values())


def refusal(loader: Loader, given: Sequence[tuple[str, str]]) -> str:
    """Why a *loader* takes none of the files *given* ((path, file type) pairs), and what to do.

    An FFU offered to a loader that boots a WIM says how to get one: its
    MainOS converted by ``img2wim``.
    """
    kinds = " and ".join(f"{path} is {FILE_TYPE_NAMES.get(kind, kind)}" for path, kind in given)
    text = f"a {loader.value} device needs {loader.needs}; {kinds}"
    if loader.takes("wim") and any(kind == "ffu" for _, kind in given):
        text += ": convert the FFU to a WIM with parallel-flash img2wim"
    return text


def loader_for(vendor_id: int, product_id: int) -> Loader | None:
    """The loader a device with these IDs speaks, or None when it is none of ours."""
    for loader, ids in _IDS.items():
        if (vendor_id, product_id) in ids:
            return loader
    return None
