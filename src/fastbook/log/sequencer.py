"""The per-market sequencer node: validate, execute, sequence, journal (group commit), publish.

A thin composer of the sequencer's jobs, each its own class testable alone:
- `Intake` (log/intake.py): an order message becomes commands or rejects (client id, the native
  reader or decode_orders, the dedupe window and open ids, runs of news only the book decides);
- `Executor` (log/executor.py): commands run on the sequencer's replica; each the engine accepts
  gets the next gap-free seq, its log record, reports and trades go into the `Batch`;
- `BatchCommit` (log/commit.py): the batch's records are journaled with one fsync, and only then
  are the log messages, reports, trades and the retained book returned for publishing; the idle
  heartbeat;
- `SnapshotPolicy` (log/snapshot_policy.py): when to write and publish a snapshot;
- `ReplayService` (log/replay.py): answers replay requests from the journal.
Start-up recovers the replica and the dedupe window from the snapshots and the journal
(log/recovery.py). Nothing that is not durable is published.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastbook.log.batch import Batch
from fastbook.log.commit import BatchCommit
from fastbook.log.executor import Executor
from fastbook.log.intake import Intake, OrderReader
from fastbook.log.journal import Journal
from fastbook.log.recovery import JournalRetry, check_market_file, recover
from fastbook.log.replay import ReplayService
from fastbook.log.runwriter import NewsRun, NewsRunInput
from fastbook.log.snapshot_policy import SnapshotPolicy
from fastbook.log.snapshots import SnapshotStore
from fastbook.log.tail_recovery import TailRecovery
from fastbook.transport.node import Incoming, Outgoing, RetainedIncoming
from fastbook.wire.market import MarketSpec
from fastbook.wire.messages import retained_command_report, with_health
from fastbook.wire.topics import DEFAULT_PREFIX, Topics

# The MQTT QoS the log is published with. A replica detects a gap itself (seq, the head in the book
# and the heartbeat) and replays it from the journal, so QoS1's PUBACKs (a write by every replica
# and a read by the broker per message) buy no correctness here; bench/README.md has both measured.
LOG_QOS = 0

log = logging.getLogger(__name__)


@dataclass
class SequencerConfig:
    market: MarketSpec
    data_dir: Path
    prefix: str = DEFAULT_PREFIX
    snapshot_every: int = 10_000  # versions (at least as many as the last snapshot held orders)
    snapshot_interval: float = 30.0  # seconds (only if the version moved)
    book_depth: int = 20
    max_payload: int = 1 << 20  # bytes; larger order messages are rejected
    snapshot_keep: int = 5  # snapshot files kept in data_dir/snapshots (older ones are deleted)
    heartbeat_interval: float = 1.0  # seconds without log traffic before an empty log message (head only)
    # A `new`'s client order id is refused for reuse for at least this many versions after it was
    # accepted (and for as long as its order is open); older ids are forgotten (docs/wire.md).
    dedupe_window: int = 1_000_000
    # A journal whose last frame is whole but damaged: seconds to wait at start for the replicas'
    # records of it (log/tail_recovery.py) before refusing to start, nothing on disk changed.
    recover_timeout: float = 5.0


class SequencerNode:
    def __init__(self, cfg: SequencerConfig) -> None:
        self.cfg = cfg
        self.market = cfg.market
        self.topics = Topics(cfg.market.name, cfg.prefix)
        self._orders_prefix = f"{self.topics.base}/orders/"
        self._replay_prefix = f"{self.topics.base}/replay/request/"
        self.data_dir = Path(cfg.data_dir)
        self._recover_prefix = f"{self.topics.base}/recover/answer/"
        if cfg.snapshot_every < 1 or cfg.book_depth < 1 or cfg.max_payload < 1 or cfg.dedupe_window < 1:
            raise ValueError("snapshot_every, book_depth, max_payload and dedupe_window must be positive")
        if not cfg.recover_timeout > 0:
            raise ValueError("recover_timeout must be positive")
        self.journal = Journal(self.data_dir, hold_damaged_tail=True)
        try:
            check_market_file(self.data_dir, cfg.market)
            self.snapshots = SnapshotStore(self.data_dir / "snapshots")
            recovered = recover(
                cfg.market, self.journal, self.snapshots, cfg.dedupe_window, self.data_dir,
                below_damage=self.journal.damaged is not None,
            )  # fmt: skip
            self.replica, self.dedupe = recovered.replica, recovered.dedupe
            self.executor = Executor(cfg.market, self.replica, self.dedupe, recovered.last_trade)
            self.intake = Intake(cfg.market, cfg.max_payload, self.replica, self.dedupe, self.executor)
            self.commit = BatchCommit(
                cfg.market, self.topics, self.journal, self.replica, cfg.book_depth, cfg.heartbeat_interval,
                LOG_QOS,
            )  # fmt: skip
            self.snapshot_policy = SnapshotPolicy(
                self.snapshots, cfg.snapshot_every, cfg.snapshot_interval, cfg.snapshot_keep
            )
            self.replay = ReplayService(cfg.market.name, self.topics, self.journal, replica=self.replica)
            self.journal_retry = JournalRetry()  # after a failed commit: when to try the disk again
            # Time source for on_messages (on_tick gets its time from the runner); tests replace it.
            self.clock: Callable[[], float] = time.monotonic
            # Wall clock of the health's "since" (ms since the epoch, as the edges' "started").
            self.wall_clock: Callable[[], float] = time.time
            self._failing_since: dict[str, int] = {}  # "journal"/"snapshots" -> since when (ms)
            self._health_published: dict[str, Any] | None = None  # in the last retained book
            # A damaged last frame: no order is taken, nothing written or published but the
            # request for it, until the replicas gave it back (or the deadline: refused).
            self.tail: TailRecovery | None = None
            if self.journal.damaged is not None:
                self.tail = TailRecovery(self.topics, self.journal, self.replica, cfg.recover_timeout)
                self.commit.failed = f"recovering the journal's damaged tail (after seq {self.version})"
                log.warning("%s; asking the replicas for seq %d on", self.journal.damaged, self.tail.first)
            else:
                self._take_snapshot(self.clock())
                self.published_health()  # (a snapshot failing from the start: since now)
        except BaseException:
            self.journal.close()
            raise

    # -- the parts' state, read (and for tests, replaced) through the node ----------------

    @property
    def seen(self) -> dict[str, dict[str, int]]:
        """client -> {client order id: seq} of the ids in the dedupe window (read only)."""
        return self.dedupe.seen

    @property
    def version(self) -> int:
        return self.replica.version

    @property
    def state_hash(self) -> int:
        return self.replica.state_hash

    @property
    def failed(self) -> str | None:
        """Why the journal refused a batch (the sequencer then rejects every order), or None."""
        return self.commit.failed

    @property
    def last_trade(self) -> dict[str, Any] | None:
        return self.executor.last_trade

    @property
    def read_orders(self) -> OrderReader | None:
        """The order reader of intake (None: every message takes the per-command path)."""
        return self.intake.read_orders

    @read_orders.setter
    def read_orders(self, reader: OrderReader | None) -> None:
        self.intake.read_orders = reader

    @property
    def write_news_run(self) -> Callable[[NewsRunInput], NewsRun]:
        """The executor's writer of a run of news (the selected backend's)."""
        return self.executor.write_news_run

    @write_news_run.setter
    def write_news_run(self, writer: Callable[[NewsRunInput], NewsRun]) -> None:
        self.executor.write_news_run = writer

    # -- Node ------------------------------------------------------------------------------

    def subscriptions(self) -> list[tuple[str, int]]:
        subs = [(self.topics.orders_filter, 1), (self.topics.replay_request_filter, 1)]
        if self.tail is not None:
            subs.append((self.topics.recover_answer_filter, 1))
        return subs

    def will(self) -> Outgoing | None:
        return None

    def on_connected(self) -> list[Outgoing]:
        if self.tail is not None:
            return self.tail.request(self.clock())
        snapshot = Outgoing(self.topics.snapshot, self._published_snapshot, retain=True)
        self._health_published = None  # a new session: the book sent now carries the health
        return self._with_health([self.commit.book_message(self.last_trade), snapshot])

    def on_tick(self, now: float) -> list[Outgoing]:
        if self.tail is not None:
            return self._recover_tail(now)
        out: list[Outgoing] = self._retry_journal(now) if self.failed is not None else []
        if self.snapshot_policy.due_on_tick(self.version, now) and self.failed is None:
            out += self._take_snapshot(now)
        out += self.commit.heartbeat(now)
        out += self.replay.pump(now)
        return self._with_health(out)

    def next_deadline(self, now: float) -> float | None:
        """When on_tick is due: the idle heartbeat, the timed snapshot once the version moved, the
        next paced replay answer, or the next try of a failed journal."""
        if self.tail is not None:
            return self.tail.next_deadline()
        heartbeat = self.commit.next_heartbeat(now)
        snapshot = self.snapshot_policy.next_due(self.version, now) if self.failed is None else None
        replay = self.replay.next_deadline(now)
        retry = self.journal_retry.next_at if self.failed is not None else None
        return min(t for t in (heartbeat, snapshot, replay, retry) if t is not None)

    def health(self) -> dict[str, Any]:
        """What the sequencer can and cannot do now (for status lines and operators)."""
        return {
            "version": self.version,
            "journal": "ok" if self.failed is None else self.failed,
            "snapshots": self.snapshot_policy.failure or "ok",
            "replay_in_flight": self.replay.in_flight,
            "replay_refused": self.replay.refused,
        }

    def published_health(self) -> dict[str, Any] | None:
        """What the retained book says is wrong (docs/wire.md, "Book"): `journal` (unavailable:
        every order is rejected, the journal is retried with backoff) and `snapshots` (failing:
        orders go on, the journal holds every entry), each with its error and since when (ms since
        the epoch); None when nothing is."""
        problems = {"journal": self.failed, "snapshots": self.snapshot_policy.failure}
        since = self._failing_since
        doc: dict[str, Any] = {}
        for part, error in problems.items():
            if error is None:
                since.pop(part, None)
                continue
            started = since.setdefault(part, int(self.wall_clock() * 1000))
            doc[part] = {"state": "unavailable" if part == "journal" else "failing", "error": error,
                         "since": started}
        if "journal" in doc:
            doc["journal"]["retrying"] = True
        return doc or None

    def _with_health(self, out: list[Outgoing]) -> list[Outgoing]:
        """Every book in `out` carries the health, and a change of health is published (with the
        durable book) even when nothing else is: the retained book always says what is wrong."""
        if self._health_published is None and self.failed is None and self.snapshot_policy.failure is None:
            return out  # the common case: nothing wrong, nothing was
        health = self.published_health()
        book_topic = self.topics.book
        sent = False
        for i, message in enumerate(out):
            if message.topic == book_topic:
                payload = with_health(message.payload, health)
                out[i] = Outgoing(book_topic, payload, retain=True, qos=message.qos)
                sent = True
        if not sent and health != self._health_published:
            book = self.commit.book_message(self.last_trade)
            out.append(Outgoing(book_topic, with_health(book.payload, health), retain=True, qos=book.qos))
        self._health_published = health
        return out

    def close(self) -> list[Outgoing]:
        self.journal.close()
        return []

    def on_messages(self, messages: Sequence[Incoming]) -> list[Outgoing]:
        batch = Batch()
        replays: list[tuple[str, bytes]] = []
        start_version = self.version
        for message in messages:
            topic, payload = message
            if type(message) is RetainedIncoming:  # a stored copy resent at each subscribe: not a command
                log.warning("ignored a retained message on %s", topic)
                if topic.startswith(self._orders_prefix):
                    batch.reject(topic[len(self._orders_prefix) :], retained_command_report())
            elif topic.startswith(self._orders_prefix):
                self.intake.on_orders(topic[len(self._orders_prefix) :], bytes(payload), batch, self.failed)
            elif topic.startswith(self._replay_prefix):
                replays.append((topic[len(self._replay_prefix) :], bytes(payload)))
            elif topic.startswith(self._recover_prefix) and self.tail is not None:
                self.tail.on_answer(topic[len(self._recover_prefix) :], bytes(payload))
        if self.tail is not None:  # (orders were rejected: `failed` says why)
            out = self.commit.publish(batch, False, self.clock(), self.last_trade, False)
            return out + self._recover_tail(self.clock())
        committed = self.commit.commit(batch)
        if not committed:
            self.journal_retry.failed(self.clock())
        moved = self.version != start_version
        out = self.commit.publish(batch, committed, self.clock(), self.last_trade, moved)
        if committed and moved and self.snapshot_policy.due_after_batch(self.version):
            out.extend(self._take_snapshot(self.clock()))
        policy = self.snapshot_policy
        now = self.clock()
        for requester, payload in replays:
            out.extend(self.replay.serve(requester, payload, policy.published, policy.published_version, now))
        out.extend(self.replay.pump(now))  # a bounded part of the queued answers per turn
        return self._with_health(out)

    # -- a failed journal ---------------------------------------------------------------------

    def _retry_journal(self, now: float) -> list[Outgoing]:
        """Once the failed journal takes writes again: rebuild the durable state from disk (the
        in-memory book holds the failed batch's commands, never published) and accept again."""
        if not self.journal_retry.attempt(now, self.journal):
            return []
        self._rebuild()
        log.warning(
            "sequencer %s: journal writable again; accepting orders at version %d",
            self.market.name, self.version,
        )  # fmt: skip
        return [self.commit.book_message(self.last_trade)]

    def _recover_tail(self, now: float) -> list[Outgoing]:
        """The damaged tail's protocol: once the answers rebuild the frame that was written (and it
        replays), rewrite it and start; TailNotRecovered at the deadline (nothing changed)."""
        tail = self.tail
        assert tail is not None
        rebuilt = tail.rebuilt()
        if rebuilt is None:
            if tail.expired(now):
                raise tail.refusal()
            return tail.request(now)
        tail.verify(rebuilt)
        evidence = self.journal.rewrite_tail(rebuilt.frame)
        log.warning(
            "sequencer %s: journal tail seqs %d..%d recovered from %s (verified by %s, replayed to "
            "their hashes); the damaged bytes are kept in %s",
            self.market.name, tail.first, self.journal.last_seq, ", ".join(sorted(tail.answered)),
            rebuilt.how, evidence.name,
        )  # fmt: skip
        self.tail = None
        self._rebuild()
        return [*self.on_connected(), *self._take_snapshot(now)]

    def _rebuild(self) -> None:
        """Rebuild the durable state from disk and hand it to every part; accept orders again."""
        recovered = recover(self.market, self.journal, self.snapshots, self.cfg.dedupe_window, self.data_dir)
        self.replica, self.dedupe = recovered.replica, recovered.dedupe
        # the parts share the replica and the dedupe window: hand each the recovered ones
        self.executor.replica, self.executor.dedupe = recovered.replica, recovered.dedupe
        self.executor.last_trade = recovered.last_trade
        self.intake.replica, self.intake.dedupe = recovered.replica, recovered.dedupe
        self.commit.replica = recovered.replica
        self.replay.replica = recovered.replica
        self.commit.failed = None

    # -- snapshots ---------------------------------------------------------------------------

    @property
    def _published_snapshot(self) -> bytes:
        return self.snapshot_policy.published

    def _take_snapshot(self, now: float) -> list[Outgoing]:
        """Write <version>.snap and publish the same bytes retained."""
        data = self.snapshot_policy.take(self.replica, now, self.last_trade)
        return [Outgoing(self.topics.snapshot, data, retain=True)]
