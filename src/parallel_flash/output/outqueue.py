"""The outgoing MQTT messages of one station: bounded, one consumer, results never dropped.

Results are kept until the broker acknowledges them; retained messages
(port states, status, summary) keep only the latest per topic, and beyond
``max_retained`` topics the oldest is dropped and counted. Used only from the
publisher's event loop (output/publish.py), drained by one task
(output/mqtt.py).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from dataclasses import dataclass

__all__ = ("MAX_RETAINED", "Message", "OutQueue")

#: Retained topics kept waiting at most (the ports of a line stay well below this).
MAX_RETAINED = 1024


@dataclass(frozen=True, slots=True)
class Message:
    """One MQTT message; ``topic`` is relative to the station's topic root."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    #: Set on results: acknowledged in the outbox once the broker has it.
    record_id: str | None = None


class OutQueue:
    """Bounded outgoing messages with one consumer (see module doc). Loop thread only."""

    def __init__(self, max_retained: int = MAX_RETAINED) -> None:
        self._results: deque[Message] = deque()
        self._retained: OrderedDict[str, Message] = OrderedDict()
        self._in_flight: Message | None = None
        self._wake = asyncio.Event()
        self.max_retained = max_retained
        #: Retained messages dropped for lack of room (never results).
        self.dropped = 0
        #: No message will be added any more (the station's last words are queued).
        self.closed = False

    def put_result(self, message: Message) -> None:
        self._results.append(message)
        self._wake.set()

    def put_retained(self, message: Message) -> None:
        if message.topic in self._retained:
            del self._retained[message.topic]
        elif len(self._retained) >= self.max_retained:
            self._retained.popitem(last=False)
            self.dropped += 1
        self._retained[message.topic] = message
        self._wake.set()

    def take(self) -> Message | None:
        """The next message to send: results first. Call :meth:`sent` or :meth:`put_back`."""
        if self._results:
            self._in_flight = self._results.popleft()
        elif self._retained:
            _, self._in_flight = self._retained.popitem(last=False)
        else:
            return None
        return self._in_flight

    def sent(self, message: Message) -> None:
        self._in_flight = None

    def put_back(self, message: Message) -> None:
        """A message whose send failed goes first again (unless a newer one replaced it)."""
        self._in_flight = None
        if message.record_id is not None:
            self._results.appendleft(message)
        elif message.topic not in self._retained:
            self._retained[message.topic] = message
            self._retained.move_to_end(message.topic, last=False)

    async def wait(self) -> None:
        await self._wake.wait()
        self._wake.clear()

    @property
    def unacknowledged(self) -> int:
        """Results not acknowledged by the broker yet (queued or in flight)."""
        in_flight = self._in_flight is not None and self._in_flight.record_id is not None
        return len(self._results) + int(in_flight)

    @property
    def idle(self) -> bool:
        """Everything queued so far has been sent."""
        return not self._results and not self._retained and self._in_flight is None

    @property
    def finished(self) -> bool:
        return (
            self.closed and not self._results and not self._retained and self._in_flight is None
        )
