"""The domain node of an edge: a full replica of one market that follows the sequenced log.

It applies the log through `fastbook.log.replica.Follower` (strict seq order, gap replay, snapshot
restore, hash check and resync), turns the client's orders into messages for the sequencer, and
tells listeners about reports, the book, public trades, its own status and resyncs. The program
around it is fastbook/apps/cli/edge.py; the MQTT runner is fastbook/transport/runner.py.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastbook.edge.liveness import (
    ANSWER_INTERVAL,
    SILENCE_STATUS_AFTER,
    SILENCE_STATUS_INTERVAL,
    ClientPresence,
    EdgeStatus,
    SequencerWatch,
    SyncState,
)
from fastbook.edge.recent import RecentRecords
from fastbook.engine import EventTuple
from fastbook.engine.types import EventType
from fastbook.log.follower import Follower
from fastbook.log.reports import command_reports_json
from fastbook.transport.node import Incoming, LinkRequest, Outgoing
from fastbook.wire.fields import MAX_SEQ, SIDE_TEXT, dumps, hash_hex
from fastbook.wire.log import LogEntry, ReplayRequest, decode_log_message, encode_replay_request
from fastbook.wire.market import NAME_RE
from fastbook.wire.messages import encode_status
from fastbook.wire.names import decode_names, is_names_payload
from fastbook.wire.orders import valid_client_id
from fastbook.wire.recover import RecoverAnswer, decode_recover_request, encode_recover_answer
from fastbook.wire.snapshot import decode_snapshot, is_snapshot_payload
from fastbook.wire.topics import DEFAULT_PREFIX, Topics

log = logging.getLogger(__name__)

Listener = Callable[[str, dict[str, Any]], None]

_TRADE = int(EventType.TRADE)
# Keys of delivered reports are kept for seqs above the applied version minus this window: a copy
# of a report arriving later than that (a very late broker redelivery) would be delivered again.
REPORT_DEDUPE_WINDOW = 100_000


FOLLOWER_POLL = 0.1  # seconds between ticks while the follower is catching up or waiting for an answer


@dataclass
class EdgeConfig:
    client_id: str
    market: str = "BTC-USD"
    prefix: str = DEFAULT_PREFIX
    # The retained status follows the version at most this often (seconds) while it moves ...
    status_interval: float = 1.0
    # ... and is republished this often while nothing changes (a heartbeat: an idle edge costs
    # the broker and every status reader one message a minute, not one a second).
    status_heartbeat: float = 60.0
    replay_timeout: float = 2.0
    # Seconds without any log message, heartbeat or replay answer (the sequencer heartbeats every
    # second when idle) before the edge says it is stalled (or that the market has no sequencer)
    # and reconnects (docs/security.md, "Liveness").
    stall_timeout: float = 5.0


class EdgeNode:
    def __init__(self, cfg: EdgeConfig) -> None:
        if not valid_client_id(cfg.client_id):
            raise ValueError(f"client id must be 1-64 characters of A-Z a-z 0-9 . _ -, got {cfg.client_id!r}")
        if not NAME_RE.fullmatch(cfg.market):
            raise ValueError(f"market name must be 1-64 characters of A-Z a-z 0-9 . _ -, got {cfg.market!r}")
        if min(cfg.replay_timeout, cfg.status_interval, cfg.status_heartbeat, cfg.stall_timeout) <= 0:
            raise ValueError(
                "replay_timeout, status_interval, status_heartbeat and stall_timeout must be positive"
            )
        self.cfg = cfg
        self.client_id = cfg.client_id
        self.topics = Topics(cfg.market, cfg.prefix)
        t = self.topics  # (the names on_messages compares each message's topic with, made once)
        self._inbound = (t.log, t.replay_response(cfg.client_id), t.snapshot, t.book, t.trades,
                         t.reports(cfg.client_id), t.replica(cfg.client_id), t.recover_request)  # fmt: skip
        self.follower = Follower(
            cfg.market,
            cfg.replay_timeout,
            on_resync=self._on_resync,
            on_applied=self._on_applied,
            interest=self._report_owner,
            # the log is anonymous: the maps are this client's orders only (Replica.own_client)
            own_client=cfg.client_id,
        )
        # Reports are derived from the log once the replica has caught up the first time: entries
        # applied before that are history from before this edge was connected.
        self._reports_live = False
        # seq -> keys of the reports of that seq already delivered (from the log or reports/<client>)
        self._delivered: dict[int, set[tuple[str, ...]]] = {}
        self._delivered_swept_at = 0
        self._listeners: list[Listener] = []
        # (following, any listener) -> subscriptions(): both only change a few times in a run
        self._subscriptions: dict[tuple[bool, bool], list[tuple[str, int]]] = {}
        # The records applied lately and this client's names there: what a sequencer whose journal
        # tail is damaged asks the replicas for (recover/request, fastbook.edge.recent).
        self.recent = RecentRecords()
        # Client order ids must never repeat for this client, across restarts too (the sequencer
        # remembers every id): a millisecond clock plus random bits per session, then a counter.
        self._id_prefix = f"{time.time_ns() // 1_000_000:x}{os.urandom(2).hex()}"
        self._id_counter = 0
        self._status_sent_at: float | None = None
        self._status_key: tuple[Any, ...] | None = None
        self._status_version = -1  # the version the last status said
        self.watch = SequencerWatch(cfg.market, cfg.stall_timeout)
        self.presence = ClientPresence(cfg.client_id)
        self._link_request: LinkRequest | None = None
        self._ticked_at: float | None = None  # the last on_tick (the follower's poll counts from it)
        # The time source of on_messages/on_connected; on_tick gets its time from the runner.
        # Tests driving nodes with a virtual clock replace it.
        self.clock: Callable[[], float] = time.monotonic

    # -- properties ------------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self.follower.version

    @property
    def state_hash(self) -> int:
        return self.follower.state_hash

    @property
    def in_sync(self) -> bool:
        """At the sequencer's head, and the sequencer is heard (see sync_state)."""
        return self.sync_state is SyncState.IN_SYNC

    @property
    def sync_state(self) -> SyncState:
        watch = self.watch
        if watch.no_sequencer:
            return SyncState.NO_SEQUENCER
        if watch.stalled:
            return SyncState.STALLED
        if self.follower.in_sync:
            # (restored from a retained snapshot, an edge is at the head as far as it knows; in
            # sync once a live sequencer was heard: its heartbeat comes within a second)
            return SyncState.IN_SYNC if watch.heard_at is not None else SyncState.SYNCING
        return SyncState.BEHIND if self._reports_live else SyncState.SYNCING

    def status(self) -> EdgeStatus:
        """The edge's state in one read (call on the runner's thread: Edge.status() does)."""
        sync = self.sync_state
        detail = self.watch.describe(self.clock())
        if not detail:
            detail = {
                SyncState.IN_SYNC: f"in sync at version {self.version}",
                SyncState.BEHIND: f"behind the sequencer by {self.lag}: repairing (version {self.version})",
                SyncState.SYNCING: f"syncing (version {self.version})",
            }.get(sync, sync.value)
        return EdgeStatus(self.client_id, self.cfg.market, sync, self.version, self.state_hash, self.lag,
                          detail, self.presence.conflict)

    @property
    def lag(self) -> int:
        return self.follower.lag

    @property
    def synced_once(self) -> bool:
        return self.follower.synced_once

    # -- client API ------------------------------------------------------------------------

    def add_listener(self, fn: Listener) -> None:
        """`fn(kind, data)` for every book, public trade, report and status the edge sees from now
        on (the first listener also subscribes the edge to public trades)."""
        self._listeners.append(fn)

    def submit(self, order: dict[str, Any]) -> tuple[str, list[Outgoing]]:
        """The publish that sends `order` (wire contract) to the sequencer, and its client order id
        ("id" is assigned if missing). The outcome arrives as reports carrying that id."""
        if not isinstance(order, dict):
            raise ValueError("an order must be a dict like {'op': 'new', 'side': 'buy', ...}")
        order = dict(order)
        if order.get("id") is None and order.get("op") != "cancel_all":
            self._id_counter += 1
            order["id"] = f"{self._id_prefix}-{self._id_counter}"
        client_order_id = order.get("id")
        self.follower.sent_orders()
        return (
            client_order_id if isinstance(client_order_id, str) else "",
            [Outgoing(self.topics.orders(self.client_id), dumps(order))],
        )

    def depth(self, n: int) -> dict[str, list[list[Any]]]:
        replica = self.follower.replica
        if replica is None:
            return {"bids": [], "asks": []}
        bids, asks = replica.book.depth(n)
        tp, lq = replica.market.ticks_to_price, replica.market.lots_to_qty
        return {
            "bids": [[tp(p), lq(q), c] for p, q, c in bids],
            "asks": [[tp(p), lq(q), c] for p, q, c in asks],
        }

    def own_orders(self) -> list[dict[str, Any]]:
        """This client's resting orders in the replica, oldest engine id first."""
        replica = self.follower.replica
        if replica is None:
            return []
        owner = replica.owners.get(self.client_id)
        if owner is None:
            return []
        tp, lq = replica.market.ticks_to_price, replica.market.lots_to_qty
        out = []
        for coid, order_id in sorted(replica.by_owner.get(owner, {}).items(), key=lambda item: item[1]):
            info = replica.book.order(order_id)
            if info is None:
                continue
            out.append({"id": coid, "side": SIDE_TEXT[info[2]], "price": tp(info[3]), "qty": lq(info[4])})
        return out

    # -- Node ------------------------------------------------------------------------------

    def subscriptions(self) -> list[tuple[str, int]]:
        """The retained snapshot only until the replica follows the log: after that a snapshot
        is never needed from that topic (see on_messages), and each one holds the whole book (in a
        bulk run ~94 bytes per order, more than the log itself, fanned out to every edge). The
        book, likewise, only until then or while a listener reads it: a following replica learns
        the head from every log message and the sequencer's idle heartbeat, and the book was a
        second message per lone order, costing a bare replica about as much as the log itself.
        Public trades only while a listener reads them (a replica needs none: ~34 bytes per order).
        (The runner follows changes: see NodeRunner.) The same list is returned while nothing
        changes: callers must not change it."""
        key = (self._following(), bool(self._listeners))
        subs = self._subscriptions.get(key)
        if subs is None:  # (made once per state: the runner asks after every call into the node)
            subs = self._subscriptions[key] = self._subscription_list(*key)
        return subs

    def _subscription_list(self, following: bool, listeners: bool) -> list[tuple[str, int]]:
        t = self.topics
        subs = [(t.log, 1)]
        if not following:
            subs.append((t.snapshot, 1))
        if listeners or not following:
            subs.append((t.book, 1))
        if listeners:
            subs.append((t.trades, 1))
        subs += [(t.reports(self.client_id), 1), (t.replay_response(self.client_id), 1)]
        subs.append((t.replica(self.client_id), 1))  # another process under this client id (ClientPresence)
        subs.append((t.recover_request, 1))  # a sequencer recovering its journal's damaged tail
        return subs

    def _following(self) -> bool:
        """Caught up once and applying the log of a market whose tick and lot are known."""
        follower = self.follower
        return self._reports_live and follower.replica is not None and follower.market_known

    def will(self) -> Outgoing | None:
        return self._status_message("offline")

    def on_connected(self) -> list[Outgoing]:
        now = self.clock()
        self.follower.start(now)
        self.watch.connected(now)
        if self._ticked_at is None:
            self._ticked_at = now  # (the first poll counts from here: see next_deadline)
        out = []
        if self.watch.stalled and self.follower.replica is not None:
            # reconnected after a silence: replay whatever was missed (the answer, even an empty one
            # carrying the head, also proves the sequencer hears this edge again)
            request = self.follower.replay_after_version(now)
            out.append(Outgoing(self.topics.replay_request(self.client_id), encode_replay_request(request)))
        return out + self._status(now, force=True)

    def on_messages(self, messages: Sequence[Incoming]) -> list[Outgoing]:
        now = self.clock()
        requests: list[ReplayRequest] = []
        (log_topic, response_topic, snapshot_topic, book_topic, trades_topic, reports_topic, status_topic,
         recover_topic) = self._inbound
        learnt = False  # names of own entries learnt from reports
        heard = -1  # the head of the last log message of this batch (-1: none: the sequencer unheard)
        out_now: list[Outgoing] = []  # answers to recover requests
        for topic, payload in messages:
            try:
                if topic == response_topic and is_names_payload(payload):
                    requests += self.follower.on_names(decode_names(payload), now)
                    continue
                if topic == log_topic or topic == response_topic:
                    if is_snapshot_payload(payload):
                        requests += self.follower.on_snapshot(decode_snapshot(bytes(payload)), now)
                        continue
                    msg = decode_log_message(payload)
                    if msg.market != self.cfg.market:  # said aloud: a replica stuck at 0 must say why
                        raise ValueError(f"log of market {msg.market!r:.70}")
                    heard = msg.head
                    requests += self.follower.on_batch(msg, now)
                    self.recent.add(msg.run)
                elif topic == snapshot_topic:
                    # Empty: the retained message was cleared. Following the log: a snapshot is
                    # never ahead of the log's head (it is published after the entries it holds,
                    # and the book and heartbeats carry the head too), and jumping ahead would skip
                    # entries whose reports this client may still need, so it is not even decoded
                    # (it holds the whole book: decoding each was a tenth of a busy edge's time).
                    # A resync still restores one (it asks for it with its replay request), and a
                    # replica started without one still learns the market's tick and lot from it.
                    # (While following, the edge is not even subscribed: see subscriptions().)
                    if payload and not self._following():
                        requests += self.follower.on_snapshot(decode_snapshot(bytes(payload)), now)
                elif topic == book_topic:
                    if payload:
                        book = json.loads(payload)
                        version = book.get("version") if isinstance(book, dict) else None
                        if type(version) is not int or not 0 <= version <= MAX_SEQ:
                            raise ValueError(f"book version out of range: {version!r:.40}")
                        if book.get("market") != self.cfg.market:
                            raise ValueError(f"book of market {book.get('market')!r:.70}")
                        requests += self.follower.on_head(version, now)
                        self._emit("book", book)
                elif topic == trades_topic:
                    if self._listeners:  # (a message already on its way when subscribed without)
                        for trade in json.loads(payload).get("trades", []):
                            self._emit("trade", trade)
                elif topic == reports_topic:
                    for report in json.loads(payload):
                        learnt |= self._learn_name(report)
                        self._deliver_report(report)
                elif topic == recover_topic:
                    out_now.append(self._recover_answer(payload))
                elif topic == status_topic:
                    if self.presence.on_status(payload, now):
                        self._link_request = LinkRequest.STOP  # the newer of two processes stops
            except (ValueError, AttributeError, TypeError, KeyError, RecursionError) as exc:
                log.warning("edge %s: ignoring bad message on %s: %s", self.client_id, topic, exc)
        if learnt:
            requests += self.follower.names_learnt(now)
        if heard >= 0:
            self.watch.heard(now, heard)
        self._check_reports_live()
        if not requests:
            return out_now + self._status(now) if out_now else self._status(now)
        t = self.topics
        out = [Outgoing(t.replay_request(self.client_id), encode_replay_request(r)) for r in requests]
        return out_now + out + self._status(now)

    def _recover_answer(self, payload: bytes | memoryview) -> Outgoing:
        """The records kept from the seq asked on, and this client's names there."""
        request = decode_recover_request(payload)
        if request.market != self.cfg.market:
            raise ValueError(f"recover request of market {request.market!r:.70}")
        records, names = self.recent.since(request.first, self.version)
        replica = self.follower.replica
        owner = None if replica is None else replica.own_owner
        log.warning(
            "edge %s: the sequencer asks for the records from seq %d (its journal tail is damaged): "
            "answering with %d records and %d own names",
            self.client_id, request.first, len(records), len(names),
        )  # fmt: skip
        answer = RecoverAnswer(self.cfg.market, request.first, owner, records, names)
        return Outgoing(self.topics.recover_answer(self.client_id), encode_recover_answer(answer))

    def on_tick(self, now: float) -> list[Outgoing]:
        self._ticked_at = now
        requests = self.follower.on_tick(now)
        if self.watch.check(now, self.version) and self._link_request is None:
            self._link_request = LinkRequest.RECONNECT
        self.presence.check(now, self.cfg.stall_timeout)
        self._check_reports_live()
        out = [
            Outgoing(self.topics.replay_request(self.client_id), encode_replay_request(r)) for r in requests
        ]
        return out + self._status(now)

    def next_deadline(self, now: float) -> float | None:
        """When on_tick must run: the next status (the version moved: status_interval after the
        last; else its heartbeat), or soon while the follower has a timer of its own running (a
        snapshot or replay awaited, a gap, behind the head): then at the runner's old fixed tick,
        which its retry and grace timers were written for."""
        follower = self.follower
        if follower.replica is None or follower.pending is not None or not follower.in_sync:
            # From the last tick, not from now: the deadline is asked after every call into the
            # node, and calls more often than the poll (Edge.wait_synced polls) must not put the
            # tick off for ever (the snapshot timeout never fired while someone waited for sync).
            return (now if self._ticked_at is None else self._ticked_at) + FOLLOWER_POLL
        sent = self._status_sent_at
        status = now if sent is None else self._status_due(sent)
        silence = self.watch.deadline()
        return status if silence is None else min(status, silence)

    def take_link_request(self) -> LinkRequest | None:
        """A reconnect after a silence of the log, or a stop as the newer of two processes with
        this client id (see Node)."""
        request, self._link_request = self._link_request, None
        return request

    def close(self) -> list[Outgoing]:
        if self.presence.newer:
            # The retained status is the other process's: leave it, and tell that process (if it
            # hears this now) that this one found it running and stopped.
            payload = encode_status(self.client_id, "offline", self.version, self.state_hash, self.lag,
                                    instance=self.presence.instance, started=self.presence.started,
                                    n=self.presence.stamp(), yielded_to=self.presence.other)
            return [Outgoing(self.topics.replica(self.client_id), payload, retain=False)]
        return [self._status_message("offline")]

    # -- internals -------------------------------------------------------------------------

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        for fn in self._listeners:
            try:
                fn(kind, data)
            except Exception:  # a broken listener must not stop the replica
                log.exception("edge %s: listener failed on %s", self.client_id, kind)

    # -- reports ---------------------------------------------------------------------------

    def _check_reports_live(self) -> None:
        if not self._reports_live and self.follower.in_sync and self.follower.names_known:
            self._reports_live = True

    def _learn_name(self, report: Any) -> bool:
        """The sequencer's `accepted` and `cancelled_all` reports name the seq of this client's
        new / cancel_all: the public log entry at that seq has no client order id (docs/wire.md,
        "Names"). Whether one was learnt."""
        replica = self.follower.replica
        if replica is None or not isinstance(report, dict):
            return False
        seq, coid = report.get("seq"), report.get("id")
        if report.get("type") not in ("accepted", "cancelled_all") or type(seq) is not int:
            return False
        if coid is not None and not isinstance(coid, str):
            return False
        replica.learn_seq_name(seq, coid)
        self.recent.learn(seq, coid)
        return True

    def _report_owner(self) -> int | None:
        """The owner whose log entries _on_applied needs (None: no entry needs it now)."""
        replica = self.follower.replica
        if not self._reports_live or replica is None:
            return None
        return replica.owners.get(self.client_id)

    def _on_applied(self, entry: LogEntry, events: Sequence[EventTuple]) -> None:
        """Derive this client's reports of an entry the replica just applied, exactly as the
        sequencer built them: a report lost on reports/<client> is still delivered."""
        if not self._reports_live:
            return
        replica = self.follower.replica
        assert replica is not None
        mine = replica.owners.get(self.client_id)
        if mine is None:
            return
        if entry.owner != mine:  # only a trade with our resting order concerns us then
            ours = False
            for event in events:
                if event[0] == _TRADE:
                    maker = replica.describe(event[7])
                    if maker is not None and maker[0] == mine:
                        ours = True
                        break
            if not ours:
                return
        # The sequencer's own writer: the report is what reports/<client> carries, decoded.
        reports, _trades = command_reports_json(
            replica.market,
            replica,
            entry.seq,
            replica.clients.get(entry.owner, ""),  # (the log names no client: we know only our own)
            entry.op,
            entry.order_type,
            entry.client_order_id,
            events,
        )
        for client, text in reports:
            if client == self.client_id:
                self._deliver_report(json.loads(text))

    def _deliver_report(self, report: dict[str, Any]) -> None:
        """Emit a report unless the same one (same type, order, seq, trade) was already emitted:
        it can arrive both from the log and on reports/<client>, and a broker can redeliver.
        Reports without a seq (rejections, a cancel_all with nothing to cancel) are never
        sequenced and are always emitted."""
        if not isinstance(report, dict):
            raise ValueError(f"a report must be an object, got {type(report).__name__}")
        seq = report.get("seq")
        if type(seq) is int:
            if seq <= self.version - REPORT_DEDUPE_WINDOW:
                self._emit("report", report)  # older than the window: no longer remembered
                return
            get = report.get
            key = (str(get("type")), str(get("id")), str(get("trade_id")), str(get("liquidity")))
            keys = self._delivered.setdefault(seq, set())
            if key in keys:
                return
            keys.add(key)
            self._sweep_delivered()
        self._emit("report", report)

    def _sweep_delivered(self) -> None:
        """Forget keys of seqs below the window (amortised: only when the map has grown)."""
        if len(self._delivered) < 2 * self._delivered_swept_at + 1024:
            return
        floor = self.version - REPORT_DEDUPE_WINDOW
        for seq in [s for s in self._delivered if s <= floor]:
            del self._delivered[seq]
        self._delivered_swept_at = len(self._delivered)

    def _on_resync(self, reason: str) -> None:
        self._emit(
            "resync", {"client_id": self.client_id, "reason": reason, "resyncs": self.follower.resyncs}
        )

    def _status_message(self, state: str) -> Outgoing:
        payload = encode_status(self.client_id, state, self.version, self.state_hash, self.lag,
                                sync=self.sync_state.value, instance=self.presence.instance,
                                started=self.presence.started, n=self.presence.stamp())
        return Outgoing(self.topics.replica(self.client_id), payload, retain=True)

    def _status_due(self, sent: float) -> float:
        """When the next status is due, the last one sent at `sent` (sync-state changes aside).
        A status of another instance on this client's own topic is answered soon (ClientPresence:
        two live processes then prove each other alive within a few ANSWER_INTERVALs, where a
        heartbeat a minute would take minutes; a gone one cannot answer, and leaves at most two).
        And a log silent for SILENCE_STATUS_AFTER (the sequencer heartbeats every second) may be
        a lost subscription: amqtt drops a session's subscriptions when another process connects
        with its client id, and that one, hearing nothing from this deaf one, needs its statuses
        as the proof: one every SILENCE_STATUS_INTERVAL until the stall (its own status then)."""
        cfg = self.cfg
        wait = cfg.status_interval if self.version != self._status_version else cfg.status_heartbeat
        if self.presence.answer_due:
            wait = min(wait, ANSWER_INTERVAL)
        due = sent + wait
        heard = self.watch.heard_at
        if heard is not None and not self.watch.stalled and due > heard + SILENCE_STATUS_AFTER:
            due = max(heard + SILENCE_STATUS_AFTER, sent + SILENCE_STATUS_INTERVAL)
        return due

    def _status(self, now: float, force: bool = False) -> list[Outgoing]:
        """The retained status: at once when the sync state changes; status_interval after the
        last one when only the version moved; else every status_heartbeat; and ANSWER_INTERVAL
        after the last one when another instance spoke on this client's status topic (see
        _status_due)."""
        sync = self.sync_state
        key = (sync, self.follower.replica is None)
        sent = self._status_sent_at
        if not force and sent is not None and key == self._status_key and now < self._status_due(sent):
            return []
        self.presence.answer_due = False
        self._status_sent_at = now
        self._status_key = key
        self._status_version = self.version
        message = self._status_message("online")
        self._emit(
            "status",
            {
                "client_id": self.client_id,
                "state": "online",
                "version": self.version,
                "hash": hash_hex(self.state_hash),
                "lag": self.lag,
                "in_sync": sync is SyncState.IN_SYNC,
                "sync": sync.value,
            },
        )
        return [message]
