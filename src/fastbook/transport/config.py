"""Broker URLs and the settings of a node runner (RunnerConfig), checked when they are made."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from fastbook.transport.node import TICK_INTERVAL

DEFAULT_PORT = 1883
DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
MAX_BATCH = 2000  # messages per on_messages call at most
# ... and payload bytes (at least one message): a backlog of bulk messages is worked off in slices,
# so the first results are published (and replicas start applying) while the rest is processed.
MAX_BATCH_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


def parse_broker_url(url: str) -> BrokerAddress:
    """`mqtt://HOST[:PORT]` (port defaults to 1883). Anything else is a ValueError saying why."""
    text = url.strip()
    if not text:
        raise ValueError("empty broker URL (expected mqtt://HOST:PORT)")
    if "://" not in text:
        raise ValueError(f"broker URL {url!r} has no scheme (expected mqtt://HOST:PORT)")
    parts = urlsplit(text)
    if parts.scheme not in ("mqtt", "tcp"):
        raise ValueError(f"broker URL {url!r}: unsupported scheme {parts.scheme!r} (expected mqtt://)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"broker URL {url!r}: unexpected path or query (expected mqtt://HOST:PORT)")
    if parts.username or parts.password:
        raise ValueError(f"broker URL {url!r}: credentials in the URL are not supported")
    host = parts.hostname
    if not host:
        raise ValueError(f"broker URL {url!r} has no host (expected mqtt://HOST:PORT)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"broker URL {url!r}: port must be a number from 1 to 65535") from None
    if port is None:
        port = DEFAULT_PORT
    if not 1 <= port <= 65535:
        raise ValueError(f"broker URL {url!r}: port must be a number from 1 to 65535")
    return BrokerAddress(host, port)


def parse_broker_urls(urls: str | Sequence[str]) -> list[BrokerAddress]:
    """One or several broker URLs (a list, or one comma-separated string) tried in order for failover."""
    items = urls.split(",") if isinstance(urls, str) else [u for url in urls for u in url.split(",")]
    items = [u for u in (i.strip() for i in items) if u]
    if not items:
        raise ValueError("no broker URL given (expected mqtt://HOST:PORT)")
    return [parse_broker_url(u) for u in items]


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """How a driver hands the inbox to its node.

    - `max_messages` and `max_bytes` cut a backlog into batches (at least one message each).
    - `window` (seconds, default 0) is a group-commit window for a node whose every batch costs much
      more than its messages (the sequencer: one fsync, one log message, one book, reports, each
      fanned out by the broker). Once a batch held several messages (HOLD_AFTER: messages are
      arriving faster than batches complete) and more are queued, the next batch starts no sooner
      than HOLD_SPACING times the last one's duration after it started, and at most `window`
      after, so it collects what arrived meanwhile (NodeDriver.hold). A lone message on a quiet
      connection is never delayed.
    - `tick_interval`: how often the node's on_tick runs (seconds) if the node has no
      `next_deadline` of its own (see Node).
    """

    max_messages: int = MAX_BATCH
    max_bytes: int = MAX_BATCH_BYTES
    window: float = 0.0
    tick_interval: float = TICK_INTERVAL

    def __post_init__(self) -> None:
        if not 0.0 <= self.window <= 1.0:
            raise ValueError("the batch window must be from 0 to 1 second")
        if self.max_messages < 1 or self.max_bytes < 1:
            raise ValueError("max_messages and max_bytes must be positive")
        if not 0.0 < self.tick_interval <= 60.0:
            raise ValueError("tick_interval must be more than 0 and at most 60 seconds")


DEFAULT_BATCHING = BatchPolicy()


@dataclass(frozen=True, slots=True)
class RunnerConfig:
    """Everything a NodeRunner needs besides its node.

    - `brokers`: one or several `mqtt://HOST:PORT` URLs (a list or a comma-separated string), tried in
      order for failover; parsed into `addresses` here, so a bad URL fails when the config is made.
    - `clean_session=False` with a fixed `client_id` asks the broker to keep the subscriptions and queue
      QoS1 messages while disconnected (the sequencer uses it to lose less); correctness never relies on it.
    - `username`/`password` authenticate the connection; `tls_ca` turns on TLS to every broker URL,
      verifying the broker's certificate (and host name) against that CA file.
    - `reconnect_min`/`reconnect_max`: the backoff (doubling) after a failed round of broker URLs.
    - `max_inflight`: QoS1 messages paho keeps unacknowledged at once (the rest wait in its queue).
    - `name` (default: the client id) names the runner's threads and log lines.
    """

    brokers: str | Sequence[str]
    client_id: str
    name: str = ""
    clean_session: bool = True
    keepalive: int = 15
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # (never in a log line)
    tls_ca: str | None = None
    reconnect_min: float = 0.1
    reconnect_max: float = 5.0
    max_inflight: int = 1000
    batching: BatchPolicy = DEFAULT_BATCHING
    addresses: tuple[BrokerAddress, ...] = field(init=False)

    def __post_init__(self) -> None:
        if not self.client_id or len(self.client_id.encode()) > 65535:
            raise ValueError("client id must be a non-empty string")
        if not 0.0 < self.reconnect_min <= self.reconnect_max:
            raise ValueError("reconnect_min must be positive and at most reconnect_max")
        if not 0 <= self.keepalive <= 65535:
            raise ValueError("keepalive must be from 0 to 65535 seconds")
        if self.max_inflight < 1:
            raise ValueError("max_inflight must be positive")
        if self.password is not None and self.username is None:
            raise ValueError("a password needs a user name")
        brokers = self.brokers if isinstance(self.brokers, str) else tuple(self.brokers)
        object.__setattr__(self, "brokers", brokers)  # (frozen: set once, here)
        object.__setattr__(self, "addresses", tuple(parse_broker_urls(brokers)))
        if not self.name:
            object.__setattr__(self, "name", self.client_id)
