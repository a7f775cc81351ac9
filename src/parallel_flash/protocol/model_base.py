"""What every device model shares, whatever loader it speaks.

A model is who the device is (name, unique ID), what it received (counted
and, unless count-only, hashed: tests compare the hash with the input's), a
transcript of the transfers, the first host mistake it caught (its
rejection), and the replies it queued for the host. SimpleIO's
:class:`~.device.DeviceModel` and the NOK loaders'
:class:`~.nokia.device.NokDeviceModel` build on it, so the simulated link and
the umockdev emulator see one face.
"""

from __future__ import annotations

import enum
import hashlib
import uuid
from typing import Any

__all__ = ("DeviceModelBase", "OutResult", "TranscriptEntry")

TranscriptEntry = tuple[Any, ...]


class OutResult(enum.Enum):
    """What became of one bulk OUT transfer."""

    #: The device took the data.
    ACCEPTED = "accepted"
    #: The device is not reading: the transfer stays pending until the host gives up.
    NAK = "nak"
    #: The device is gone (unplugged, crashed).
    GONE = "gone"


class DeviceModelBase:
    """The state and bookkeeping common to every device model."""

    def __init__(
        self,
        *,
        friendly_name: str,
        unique_id: uuid.UUID | None,
        count_only: bool,
        record_transcript: bool,
        max_packet_size: int,
    ) -> None:
        self.friendly_name = friendly_name
        self.unique_id = unique_id or uuid.uuid4()
        self.count_only = count_only
        self.max_packet_size = max_packet_size
        self.transcript: list[TranscriptEntry] = []
        self._record = record_transcript and not count_only
        self.booted = False
        self.disconnected = False
        self.received_bytes = 0
        self.expected_bytes = 0
        self.rejection: str | None = None
        #: The last status the device answered (SimpleIO: any; NOK: the last non-zero).
        self.status_sent: int | None = None
        self._replies: list[bytes] = []
        self._hash = None if count_only else hashlib.sha256()

    @property
    def sha256(self) -> str | None:
        """Hex SHA-256 of every image byte received (None in count-only mode)."""
        return None if self._hash is None else self._hash.hexdigest()

    @property
    def reply_pending(self) -> bool:
        """A reply waits to be read (the host has not finished this exchange)."""
        return bool(self._replies)

    def _note(self, *entry: Any) -> None:
        """Add a transfer to the transcript (unless count-only or not recording)."""
        if self._record:
            self.transcript.append(entry)

    def _count(self, data: bytes | memoryview) -> None:
        """Count (and hash) image bytes the device took."""
        if self._hash is not None:
            self._hash.update(data)
        self.received_bytes += len(data)

    def _out_fault(
        self, disconnect_after: int | None, stop_reading_after: int | None, arrived: int
    ) -> OutResult | None:
        """The injected fate of an OUT transfer once ``arrived`` image bytes are in.

        The faults every model takes: leave the bus (``disconnect=N``), or stop
        reading so the host's transfer never completes (``stop-reading=N``).
        """
        if disconnect_after is not None and arrived >= disconnect_after:
            self.disconnect()
            return OutResult.GONE
        if stop_reading_after is not None and arrived >= stop_reading_after:
            return OutResult.NAK
        return None

    def disconnect(self) -> None:
        """The device (or whoever hosts it) pulled the plug."""
        self.disconnected = True
        self._replies.clear()

    def summary(self) -> dict[str, Any]:
        """A JSON-able account of what the device saw (each model adds its own)."""
        return {
            "name": self.friendly_name,
            "unique_id": str(self.unique_id),
            "received_bytes": self.received_bytes,
            "expected_bytes": self.expected_bytes,
            "sha256": self.sha256,
            "booted": self.booted,
            "disconnected": self.disconnected,
            "rejection": self.rejection,
            "status_sent": self.status_sent,
        }
