"""A station's place on the line: MQTT, Prometheus and the result hook, wired in one object.

:class:`LineIntegration` starts what :class:`~.line.LineOptions` ask for
before the first device, gives the session its observers, takes each record
from the report once it is on disk, and says goodbye at the end. The report
stays the record of truth: results are published and hooks run only from its
lines. The session imports this module only when a station publishes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from ..engine.records import DeviceRecord, LineObserver
from ..image import ImageBuffer, ImageSet, primary_image
from ..protocol.selection import Loader
from .hooks import ResultHook
from .line import LineOptions
from .publish import LinePublisher, StationIdentity
from .report import JsonlReport, default_station

if TYPE_CHECKING:
    from .metrics import LineMetrics

__all__ = ("LineIntegration", "default_outbox")


def default_outbox(line: str, station: str) -> str:
    """Where unacknowledged results are remembered between runs (XDG state directory)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(base, "parallel-flash", f"mqtt-outbox-{line}-{station}.jsonl")


class LineIntegration:
    """Started before the first device, closed after the report (see module doc)."""

    def __init__(self, options: LineOptions, image: ImageBuffer | ImageSet) -> None:
        self.options = options
        station = options.station or default_station()
        images = image.images if isinstance(image, ImageSet) else (image,)
        #: The file the station's status and metrics name (a mixed line's first).
        self._primary = primary_image(image)
        self.identity = StationIdentity(
            line=options.line,
            station=station,
            image_name=" + ".join(os.path.basename(i.wim_path) for i in images),
            image_sha256=image.sha256_if_known,
            image_bytes=image.total_length,
            # The loader generations that can boot these files: the devices they serve.
            loaders=tuple(
                loader.value for loader in Loader if any(loader.takes(i.kind) for i in images)
            ),
        )
        self.publisher: LinePublisher | None = None
        self.metrics: LineMetrics | None = None
        self._stack = contextlib.ExitStack()
        hook = (
            ResultHook(options.on_result, timeout=options.on_result_timeout)
            if options.on_result is not None
            else None
        )
        if options.mqtt is not None or hook is not None:
            self.publisher = LinePublisher(
                self.identity,
                mqtt=options.mqtt,
                outbox=(options.outbox or default_outbox(options.line, station))
                if options.mqtt is not None
                else None,
                hook=hook,
                summary_interval=options.summary_interval,
                drain_timeout=options.drain_timeout,
            )
        if options.metrics is not None:
            from .metrics import LineMetrics  # prometheus-client only when asked for

            publisher = self.publisher
            self.metrics = LineMetrics(
                image_sha256=image.sha256_if_known(),
                loaders=self.identity.loaders,
                mqtt_state=(lambda: (publisher.mqtt_connected, publisher.unacknowledged))
                if publisher is not None and options.mqtt is not None
                else None,
            )

    @property
    def observers(self) -> Sequence[LineObserver]:
        return [o for o in (self.publisher, self.metrics) if o is not None]

    def __enter__(self) -> LineIntegration:
        with self._stack as stack:
            if self.metrics is not None and self.options.metrics is not None:
                self.metrics.serve(*self.options.metrics)
                stack.callback(self.metrics.close)
            if self.publisher is not None:
                self.publisher.start()
                stack.callback(self.publisher.close)
            self._stack = stack.pop_all()
        # The image is still being read and hashed: nothing waits for it here.
        self._primary.when_hashed(self._image_hashed)
        return self

    def _image_hashed(self, digest: str | None) -> None:
        """From the image's loading thread: the digest is known (None: unreadable)."""
        if self.metrics is not None:
            self.metrics.image_hashed(digest)
        if self.publisher is not None:
            self.publisher.image_hashed(digest)

    def attach(self, report: JsonlReport | None) -> None:
        """Take results from *report* (required when publishing or running hooks)."""
        if report is None:
            self.options.check(None)
            return
        if self.publisher is not None:
            self.publisher.attach(report)

    def close(self, records: Sequence[DeviceRecord] = (), *, interrupted: bool = False) -> None:
        """After the report is closed: last results out, then the station says goodbye."""
        if self.metrics is not None:
            self.metrics.finish_unfinished(records)
        if self.publisher is not None:
            self.publisher.close(interrupted=interrupted)
        self._stack.close()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(interrupted=exc is not None)
