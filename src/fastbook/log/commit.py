"""The sequencer's group commit and publish: nothing that is not durable is published.

A batch's records are appended to the journal with one fsync, and only then are its log
messages, reports, public trades and the retained book returned for publishing. If the append
fails, the in-memory replica holds changes that are not durable: the batch publishes only its
rejections (every sequenced command answered "not executed"), and the sequencer stops accepting
orders (`failed`) until the journal takes writes again (the node's JournalRetry) and the
durable state is recovered. Between batches, an empty log
message carrying the head (the heartbeat) lets a replica that lost the end of a burst see it is
behind.
"""

from __future__ import annotations

import logging
from typing import Any

from fastbook.log.batch import Batch
from fastbook.log.journal import Journal, JournalError
from fastbook.log.replay import LOG_CHUNK
from fastbook.log.replica import Replica
from fastbook.transport.node import Outgoing
from fastbook.wire.fields import JOURNAL_UNAVAILABLE, OP_TEXT, dumps
from fastbook.wire.log import encode_log_message
from fastbook.wire.market import MarketSpec
from fastbook.wire.messages import BookWriter, encode_report_texts, encode_trades, reject_report
from fastbook.wire.topics import Topics

log = logging.getLogger(__name__)

# The MQTT QoS the retained book is published with. Each book replaces the last one, every batch that
# moves the version publishes a new one and every (re)connect republishes it (on_connected), so a
# PUBACK per book (read and parsed by the sequencer, written by every subscriber) buys nothing.
BOOK_QOS = 0


class BatchCommit:
    def __init__(
        self,
        market: MarketSpec,
        topics: Topics,
        journal: Journal,
        replica: Replica,
        book_depth: int,
        heartbeat_interval: float,
        log_qos: int,
    ) -> None:
        self.market = market
        self.topics = topics
        self.journal = journal
        self.replica = replica
        self.book_depth = book_depth
        self.heartbeat_interval = heartbeat_interval
        self.log_qos = log_qos
        # (the topic names publish writes every batch, made once: Topics formats them per access)
        self._log_topic, self._book_topic, self._trades_topic = topics.log, topics.book, topics.trades
        self._reports_prefix = topics.reports("")
        self.failed: str | None = None  # why the journal refused a batch (then nothing is accepted)
        self.log_time: float | None = None  # the last log message (for the idle heartbeat)
        self._book_writer = BookWriter(market)
        self._durable_book: Outgoing | None = None  # the last book built from durable state
        # The retained book's version and hash are behind (its levels and last trade are not): the
        # idle heartbeat brings it up to date, with this last trade (no trade since, or it would
        # have been published).
        self._book_behind: tuple[dict[str, Any] | None] | None = None

    def commit(self, batch: Batch) -> bool:
        """Journal the batch's records (one fsync); False if the journal refused them."""
        if not batch.count:
            return True
        try:
            self.journal.append(batch.run())
            return True
        except JournalError as exc:
            self.failed = str(exc)
            log.error(
                "sequencer %s: %s; rejecting every order until the journal takes writes again",
                self.market.name, exc,
            )  # fmt: skip
            message = f"not executed: {exc}"
            for client, coids, op in batch.sequenced:
                for coid in coids:
                    report = reject_report(coid, OP_TEXT[op], JOURNAL_UNAVAILABLE, message)
                    batch.rejections.append((client, dumps(report).decode()))
            return False

    def publish(
        self, batch: Batch, committed: bool, now: float, last_trade: dict[str, Any] | None, moved: bool
    ) -> list[Outgoing]:
        """The messages of a batch `commit` decided: the log (in chunks), the reports (one message
        per client), the public trades and, if the version `moved` and the levels shown or the
        last trade changed, the book (a lone order deeper than book_depth publishes none: its
        version and hash wait for the idle heartbeat, and the log carries the head meanwhile)."""
        out: list[Outgoing] = []
        if committed and batch.count:
            head = self.journal.last_seq
            # The journal keeps the names; the public log carries none (docs/wire.md): each client
            # learns its own from its reports and its replay answers.
            run = batch.run().anonymous()
            for i in range(0, len(run), LOG_CHUNK):
                payload = encode_log_message(self.market.name, head, run.cut(i, i + LOG_CHUNK))
                out.append(Outgoing(self._log_topic, payload, qos=self.log_qos))
            self.log_time = now
        by_client = batch.texts
        if not committed:
            by_client = {}
            for client, text in batch.rejections:
                by_client.setdefault(client, []).append(text)
        prefix = self._reports_prefix
        for client, texts in by_client.items():
            out.append(Outgoing(prefix + client, encode_report_texts(texts)))
        if committed and batch.trades:
            out.append(Outgoing(self._trades_topic, encode_trades(self.market, batch.trades)))
        if committed and moved:
            depth = self.replica.book.depth(self.book_depth)
            if self._book_writer.same(depth, last_trade):
                self._book_behind = (last_trade,)
            else:
                out.append(self.book_message(last_trade, depth))
        return out

    def book_message(self, last_trade: dict[str, Any] | None, depth: Any = None) -> Outgoing:
        """The retained book of the durable state (`depth`: its levels, if read already)."""
        if self.failed is not None and self._durable_book is not None:
            # After a failed commit the in-memory book holds commands that are not durable: a
            # reconnect republishes the last book that was, never that state.
            return self._durable_book
        if depth is None:
            depth = self.replica.book.depth(self.book_depth)
        self._book_behind = None
        payload = self._book_writer.encode(self.journal.last_seq, self.replica.state_hash, depth, last_trade)
        self._durable_book = Outgoing(self._book_topic, payload, retain=True, qos=BOOK_QOS)
        return self._durable_book

    def heartbeat(self, now: float) -> list[Outgoing]:
        """The empty log message carrying the head, if the log was quiet for heartbeat_interval (and
        the book, if its version is behind)."""
        if self.log_time is not None and now - self.log_time < self.heartbeat_interval:
            return []
        self.log_time = now
        payload = encode_log_message(self.market.name, self.journal.last_seq)
        out = [Outgoing(self.topics.log, payload, qos=self.log_qos)]
        if self._book_behind is not None and self.failed is None:
            out.append(self.book_message(self._book_behind[0]))  # quiet now: the version catches up
        return out

    def next_heartbeat(self, now: float) -> float:
        return now if self.log_time is None else self.log_time + self.heartbeat_interval
