"""MQTT for a line of stations: broker settings, topic names, and the connection loop.

Everything a station says lives under ``parallel-flash/v1/{line}/{station}``
(docs/line.md lists every topic and payload). The connection is aiomqtt's
client on the publisher's own event loop (output/publish.py), never on the
engine's: a slow or absent broker cannot slow a boot.

The loop reconnects for as long as the run lasts (backoff 0.5 s doubling to
10 s). Each connection first re-announces the station ``online`` (the broker
has published the last will ``offline``/``lost`` when the old connection
died), then drains the outgoing queue: unacknowledged results first, then the
latest retained state of each port and the summary. A result leaves the queue
only when the broker has acknowledged it (QoS 1 PUBACK); whatever was in flight
when the connection dropped is sent again on the next one, so consumers may
see a result twice and de-duplicate on its ``record_id``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import ssl
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import InputError
from .outqueue import Message, OutQueue

if TYPE_CHECKING:
    import aiomqtt

__all__ = (
    "MQTT_TOPIC_VERSION",
    "MqttConnection",
    "MqttSettings",
    "port_topic",
    "topic_root",
)

logger = logging.getLogger(__name__)

#: The first level after ``parallel-flash/``: bumped if a payload changes incompatibly.
MQTT_TOPIC_VERSION = "v1"
#: Seconds a connect or a QoS 1 publish may take before the connection counts as lost.
MQTT_TIMEOUT = 10.0
#: Seconds between PINGREQs; the broker declares the station lost after 1.5 times this.
MQTT_KEEPALIVE = 15
_BACKOFF_FIRST, _BACKOFF_MAX = 0.5, 10.0

def topic_root(line: str, station: str) -> str:
    return f"parallel-flash/{MQTT_TOPIC_VERSION}/{line}/{station}"


def port_topic(port: str) -> str:
    """``port/{port}/state``, with characters MQTT gives meaning to replaced by ``_``."""
    level = re.sub(r"[/+#\x00]", "_", port) or "_"
    return f"port/{level}/state"


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttSettings:
    """Where the broker is and how to log in (``--mqtt URL`` and its options)."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    #: CA bundle to check the broker's certificate; None = the system's.
    ca_file: str | None = None
    #: Client certificate and key, for brokers that authenticate stations by certificate.
    cert_file: str | None = None
    key_file: str | None = None
    keepalive: int = MQTT_KEEPALIVE

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
    ) -> MqttSettings:
        """``mqtt://[user[:password]@]host[:port]`` or ``mqtts://...`` (TLS, port 8883).

        Options given separately win over the URL's user and password; a CA
        or certificate implies TLS.
        """
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("mqtt", "mqtts") or not parsed.hostname:
            raise InputError(
                f"--mqtt {url!r} is not a broker URL: expected mqtt://HOST[:PORT] "
                "or mqtts://HOST[:PORT] (TLS)"
            )
        if parsed.path not in ("", "/") or parsed.query or parsed.fragment:
            raise InputError(f"--mqtt {url!r}: a broker URL has no path or query")
        try:
            port = parsed.port
        except ValueError:
            raise InputError(f"--mqtt {url!r}: the port must be a number from 1 to 65535") from None
        tls = parsed.scheme == "mqtts" or any((ca_file, cert_file, key_file))
        if key_file and not cert_file:
            raise InputError("--mqtt-key needs --mqtt-cert (the client certificate it belongs to)")
        for flag, path in (("--mqtt-ca", ca_file), ("--mqtt-cert", cert_file),
                           ("--mqtt-key", key_file)):
            if path is not None and not os.path.isfile(path):
                raise InputError(f"{flag} {path}: no such file")
        url_user = urllib.parse.unquote(parsed.username) if parsed.username else None
        url_password = urllib.parse.unquote(parsed.password) if parsed.password else None
        return cls(
            host=parsed.hostname,
            port=port or (8883 if tls else 1883),
            username=username if username is not None else url_user,
            password=password if password is not None else url_password,
            tls=tls,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
        )

    @property
    def address(self) -> str:
        """The broker as logs name it (never the password)."""
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"

    def tls_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
            if self.cert_file:
                context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise InputError(f"--mqtt TLS set-up failed: {exc}") from None
        return context


class MqttConnection:
    """Keeps one broker connection up and drains an :class:`OutQueue` into it."""

    def __init__(
        self,
        settings: MqttSettings,
        *,
        root: str,
        client_id: str,
        online: Callable[[], Message],
        will: Callable[[], Message],
        on_acknowledged: Callable[[Message], None],
    ) -> None:
        self.settings = settings
        self.root = root
        self.client_id = client_id
        self._online = online
        self._will = will
        self._on_acknowledged = on_acknowledged
        self._tls = settings.tls_context()  # bad TLS files fail before the run
        self.connected = False
        #: Connections made (the first one included).
        self.connections = 0

    def _client(self) -> aiomqtt.Client:
        import aiomqtt  # only a station that publishes pays for the import

        will = self._will()  # built per connection: it names the image once it is hashed
        return aiomqtt.Client(
            self.settings.host,
            self.settings.port,
            username=self.settings.username,
            password=self.settings.password,
            identifier=self.client_id,
            will=aiomqtt.Will(
                f"{self.root}/{will.topic}",
                will.payload,
                qos=will.qos,
                retain=will.retain,
            ),
            clean_session=True,
            timeout=MQTT_TIMEOUT,
            keepalive=self.settings.keepalive,
            tls_context=self._tls,
        )

    async def run(self, queue: OutQueue, finishing: asyncio.Event) -> None:
        """Connect, drain and reconnect until *finishing* is set and the queue is empty.

        Returns with the station's last messages (``offline``) sent, or when
        cancelled by the publisher's drain deadline.
        """
        import aiomqtt

        backoff = _BACKOFF_FIRST
        reported_down = False
        while True:
            try:
                async with self._client() as client:
                    self.connected = True
                    self.connections += 1
                    backoff = _BACKOFF_FIRST
                    if reported_down or self.connections > 1:
                        logger.warning("MQTT: connected to %s again", self.settings.address)
                    reported_down = False
                    await self._publish(client, self._online())
                    await self._drain(client, queue, finishing)
                    self.connected = False
                    return
            except aiomqtt.MqttError as exc:
                self.connected = False
                if not reported_down:
                    logger.warning(
                        "MQTT: broker %s unreachable (%s); results are kept and sent "
                        "once it is back", self.settings.address, exc,
                    )
                    reported_down = True
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)

    async def _drain(
        self, client: aiomqtt.Client, queue: OutQueue, finishing: asyncio.Event
    ) -> None:
        while True:
            message = queue.take()
            if message is None:
                if finishing.is_set() and queue.finished:
                    return
                await queue.wait()
                continue
            try:
                await self._publish(client, message)
            except BaseException:
                queue.put_back(message)
                raise
            queue.sent(message)
            if message.record_id is not None:
                self._on_acknowledged(message)

    async def _publish(self, client: aiomqtt.Client, message: Message) -> None:
        await client.publish(
            f"{self.root}/{message.topic}",
            message.payload,
            qos=message.qos,
            retain=message.retain,
            timeout=MQTT_TIMEOUT,
        )
