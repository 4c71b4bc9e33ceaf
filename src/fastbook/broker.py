"""The embedded MQTT broker (amqtt, MQTT 3.1.1) used by `fastbook-broker` and `fastbook demo`.

amqtt's default AnonymousAuthPlugin flags every session anonymous, and amqtt drops anonymous sessions
(with their offline queues) about a second after they disconnect. fastbook's sequencer asks for a
persistent session, so the broker authenticates everyone with `AllowAllAuthPlugin`, which accepts
without the anonymous flag. Retained messages (book, snapshot, replica status) live in memory: after a
broker restart the sequencer republishes book and snapshot on reconnect, edges their status.

Known amqtt 0.12.1 defects and what fastbook does about them:
- a connecting client is sent the retained messages of every topic *anyone* subscribed to, not just
  its own subscriptions (a mosquitto_sub on reports/alice would first print the book, statuses and
  the binary snapshot): `FastbookAmqttBroker` sends retained messages only for the client's own
  subscriptions, and NodeRunner also drops anything outside its node's subscriptions;
- unacknowledged QoS1 messages are not resent when a persistent session resumes (replicas detect
  the gap and replay it from the journal).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from dataclasses import dataclass
from typing import Any

from amqtt.broker import Broker
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

log = logging.getLogger(__name__)


class AllowAllAuthPlugin(BaseAuthPlugin):
    """Accepts every client and marks the session non-anonymous, so persistent sessions are kept."""

    @dataclass
    class Config:
        pass

    async def authenticate(self, *, session: Session) -> bool:
        session.is_anonymous = False
        return True


class FastbookAmqttBroker(Broker):
    """amqtt's Broker, fixed to send a client only the retained messages of its own subscriptions."""

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        # amqtt calls this on SUBSCRIBE (after recording the subscription) and, wrongly, on every
        # connect for *every* filter any client subscribed to. Only a filter this client holds counts.
        topic_filter = subscription[0]
        for subscriber, qos in self._subscriptions.get(topic_filter, []):
            if subscriber.client_id == session.client_id:
                await super()._publish_retained_messages_for_subscription((topic_filter, qos), session)
                return


class BrokerStartError(RuntimeError):
    pass


def broker_config(host: str, port: int) -> dict[str, Any]:
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}", "max_connections": 0}},
        # Keep persistent sessions (the sequencer's) for a day; anonymous ones never get here.
        "session_expiry_interval": 24 * 3600,
        "plugins": {f"{AllowAllAuthPlugin.__module__}.{AllowAllAuthPlugin.__qualname__}": {}},
    }


def check_port_free(host: str, port: int) -> None:
    """Raise BrokerStartError with a clear message if host:port cannot be bound (amqtt's own error
    is a long traceback)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise BrokerStartError(
                    f"cannot listen on {host}:{port}: the port is already in use "
                    "(another MQTT broker?); choose another with --port"
                ) from None
            raise BrokerStartError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def free_port(host: str = "127.0.0.1") -> int:
    """An ephemeral TCP port that was free a moment ago (for tests and the demo)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _quiet_probe_connections(record: logging.LogRecord) -> bool:
    """A TCP connect without an MQTT CONNECT (port probes, health checks) is not an error worth a
    log line; amqtt logs it at ERROR."""
    message = record.getMessage()
    return not (message.startswith("No data from") or "No data to decode MQTT packet" in message)


def _ignore_cancelled_connections(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """amqtt leaves connection tasks to be cancelled at shutdown and asyncio logs each with a
    traceback; those are expected. Everything else goes to asyncio's default handler."""
    if isinstance(context.get("exception"), asyncio.CancelledError):
        return
    loop.default_exception_handler(context)


class EmbeddedBroker:
    """An amqtt broker on host:port inside the running asyncio loop."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host = host
        self.port = port
        self._broker: FastbookAmqttBroker | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        check_port_free(self.host, self.port)
        # amqtt logs every connect/disconnect at INFO; fastbook's own logs say what matters.
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        logging.getLogger("amqtt.broker").addFilter(_quiet_probe_connections)
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_ignore_cancelled_connections)
        self._broker = FastbookAmqttBroker(broker_config(self.host, self.port), loop=loop)
        try:
            await self._broker.start()
        except Exception as exc:
            raise BrokerStartError(f"cannot start the MQTT broker on {self.url}: {exc}") from None
        log.info("MQTT broker listening on %s", self.url)

    async def stop(self) -> None:
        if self._broker is not None:
            broker, self._broker = self._broker, None
            try:
                await broker.shutdown()
            except Exception:  # shutting down anyway; amqtt may complain about half-closed sessions
                log.debug("broker shutdown raised", exc_info=True)
