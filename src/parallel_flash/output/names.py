"""A line's and a station's names: each one level of the line's MQTT topics.

One rule for both what an operator may type (``--line``, ``--station``) and
what a station calls itself when not told (its host name, made to fit).
"""

from __future__ import annotations

import re
import socket

from ..errors import InputError

__all__ = ("check_topic_name", "default_station")

#: Characters a name may hold: no ``/``, ``+`` or ``#`` (MQTT topic syntax).
_NAME_CHARACTERS = "A-Za-z0-9._-"
_NAME_MAX = 64
_NAME_RE = re.compile(rf"[{_NAME_CHARACTERS}]{{1,{_NAME_MAX}}}")


def check_topic_name(value: str, what: str) -> str:
    """A line or station name must be one plain topic level (no ``/``, ``+``, ``#``)."""
    if not _NAME_RE.fullmatch(value):
        raise InputError(
            f"{what} {value!r} must be 1-{_NAME_MAX} letters, digits, '.', '_' or '-' "
            "(it is one level of the MQTT topic)"
        )
    return value


def default_station() -> str:
    """This PC's short host name, as one MQTT topic level: the station, unless named."""
    name = socket.gethostname().split(".", 1)[0]
    return re.sub(rf"[^{_NAME_CHARACTERS}]", "_", name)[:_NAME_MAX] or "station"
