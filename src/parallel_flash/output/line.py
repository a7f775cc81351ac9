"""What a station publishes, and where: :class:`LineOptions` and their defaults.

The CLI's ``--mqtt``, ``--line``, ``--station``, ``--metrics``, ``--on-result``
and friends, or a Python caller, say what to publish here; the session hands
them to :class:`~.line_integration.LineIntegration`, which starts what they
need. Kept apart from it and from the publishers: every run (and the CLI's
parser) needs the options, only a publishing station needs MQTT, its outbox
and the hooks (issue 10: command to first image byte).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import InputError
from .hooks import DEFAULT_HOOK_TIMEOUT
from .names import check_topic_name
from .report import STDOUT_REPORT

if TYPE_CHECKING:
    from .mqtt import MqttSettings

__all__ = (
    "DEFAULT_DRAIN_TIMEOUT",
    "DEFAULT_LINE",
    "SUMMARY_INTERVAL",
    "LineOptions",
    "check_topic_name",
)

#: ``--line`` when none is given.
DEFAULT_LINE = "default"
#: Seconds a clean exit waits for the broker to acknowledge the last results
#: (and for result hooks to finish) before leaving them to the next start.
DEFAULT_DRAIN_TIMEOUT = 10.0
#: Seconds between retained summaries in station mode.
SUMMARY_INTERVAL = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class LineOptions:
    """What a station publishes, and where (all off by default)."""

    mqtt: MqttSettings | None = None
    line: str = DEFAULT_LINE
    #: None = this PC's host name.
    station: str | None = None
    #: The MQTT outbox file; None = :func:`default_outbox`.
    outbox: str | None = None
    #: (host, port) to serve /metrics on.
    metrics: tuple[str, int] | None = None
    on_result: str | None = None
    on_result_timeout: float = DEFAULT_HOOK_TIMEOUT
    #: Retained summary every this many seconds (station mode); None = only at the end.
    summary_interval: float | None = None
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT

    def __post_init__(self) -> None:
        check_topic_name(self.line, "--line")
        if self.station is not None:
            check_topic_name(self.station, "--station")
        if self.on_result is not None and not self.on_result.strip():
            raise InputError("--on-result needs a command, not an empty string")

    @property
    def active(self) -> bool:
        return bool(self.mqtt or self.metrics or self.on_result)

    @property
    def needs_report(self) -> bool:
        """MQTT results and hooks are sent from the report's lines, never before."""
        return self.mqtt is not None or self.on_result is not None

    def check(self, report: str | os.PathLike[str] | None) -> None:
        """Refuse, before any device is touched, what cannot work."""
        if self.needs_report and report is None:
            flag = "--mqtt" if self.mqtt is not None else "--on-result"
            raise InputError(
                f"{flag} sends each result once it is on record: add --report FILE.jsonl"
            )
        if self.mqtt is not None and os.fspath(report or "") == STDOUT_REPORT:
            raise InputError(
                "--mqtt resends unacknowledged results from the report file at the next "
                "start: give --report a file, not -"
            )
