"""The sequencer's output for a run of news executed in one engine call.

The sequencer executes a run of `new` commands whose client order ids need no check against the
book (`Intake.news_run_end`, log/intake.py) with one `Book.apply_batch(rows, hashes, next_order_id)`: the book
numbers the orders as the per-command path would. `write_news_run_native` (`write_news_run_reference` is the
same in Python; fastbook.backend selects one) turns the run (`NewsRunInput`: its rows, post-state
hashes and events) into what the per-command path (`Executor.execute`, log/executor.py) produces for the same
commands: the reports as JSON text grouped by the client they go to (each client's in command
order: rejections as `wire.dumps` writes them, execution reports as `reports.command_reports_json`
writes them) and the public trades as JSON text, plus what the caller needs to update the
replica's maps and the dedupe window (`NewsRun`). Nothing is changed here; the caller applies the result
(and builds the run's log records with numpy, `wire.log.LogRun.from_commands`). (Grouped by
client because that is how they are published: one reports message per client per batch.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastbook.engine.types import EventType, event_rows_to_tuples
from fastbook.log import _runwriter
from fastbook.log.reports import command_reports_json
from fastbook.wire.fields import dumps
from fastbook.wire.market import MarketSpec

_REJECTED, _CANCELLED, _DONE = int(EventType.REJECTED), int(EventType.CANCELLED), int(EventType.DONE)

# reject(client order id, op, engine reason) -> the rejected report of a command the book refused.
RejectReport = Callable[[str | None, int, int], dict[str, Any]]


@dataclass(slots=True)
class NewsRunInput:
    """A run of `client`'s news executed in one `Book.apply_batch` at `version`: what its writer reads."""

    market: MarketSpec
    client: str
    version: int  # the replica's version before the run
    rows: np.ndarray  # COMMAND_DTYPE, numbered by the book
    coids: list[str | None]  # the client order id of each row
    hashes: np.ndarray  # uint64: the post-state hash apply_batch gave each row
    events: np.ndarray  # EVENT_DTYPE: what apply_batch returned
    orders: dict[int, tuple[int, str]]  # the replica's map before the run: engine id -> (owner, coid)
    clients: dict[int, str]  # owner -> client id (the run's own client must be in it)
    reject: RejectReport  # the rejected report of a row the book refused


@dataclass(slots=True)
class NewsRun:
    """What the writer made of a run: the sequencer applies it (replica maps, dedupe, batch)."""

    # client -> the JSON text of every report to it (rejections included), in command order.
    texts: dict[str, list[str]] = field(default_factory=dict)
    # The run's rejections again (all the run's client's), in order: a batch whose journal commit
    # fails publishes only these.
    rejections: list[str] = field(default_factory=list)
    trades: list[str] = field(default_factory=list)  # public trades, JSON text (dumps(public_trade))
    accepted_ids: list[int] = field(default_factory=list)  # engine order id of each accepted new
    accepted_coids: list[str] = field(default_factory=list)
    accepted_seqs: list[int] = field(default_factory=list)
    gone: list[int] = field(default_factory=list)  # order ids with a DONE or CANCELLED event
    last_seq: int = 0
    last_hash: int = 0


def write_news_run_native(job: NewsRunInput) -> NewsRun:
    """`write_news_run_reference(job)` written natively (src/fastbook/log/_runwriter.pyx, typed in its
    .pyi): the same output."""
    run = NewsRun()
    _runwriter.write_news_run(job, run)
    return run


class _RunNames:
    """What `command_reports_json` reads of a replica, for a run: the replica's maps before the
    run plus the orders the run has accepted so far."""

    def __init__(self, orders: dict[int, tuple[int, str]], clients: dict[int, str]) -> None:
        self.orders = orders
        self.clients = clients
        self.accepted: dict[int, tuple[int, str]] = {}

    def describe(self, order_id: int) -> tuple[int, str] | None:
        found = self.accepted.get(order_id)
        return found if found is not None else self.orders.get(order_id)


def write_news_run_reference(job: NewsRunInput) -> NewsRun:
    """The output of the job's run, built command by command with the per-command path's own
    writer (`command_reports_json`)."""
    market, client, version, rows, coids = job.market, job.client, job.version, job.rows, job.coids
    hashes, events, reject = job.hashes, job.events, job.reject
    run = NewsRun(last_seq=version)
    names = _RunNames(job.orders, job.clients)
    event_cmds = events["cmd"].tolist()
    event_tuples = event_rows_to_tuples(events)
    k, total = 0, len(event_tuples)
    seq = version
    for index, row in enumerate(rows.tolist()):
        op, _side, otype, _tif, _stp, _post_only, _pad, owner, _pad2, order_id, _price, _qty = row
        coid = coids[index]
        end = k
        while end < total and event_cmds[end] == index:
            end += 1
        command_events, k = event_tuples[k:end], end
        if command_events[0][0] == _REJECTED:  # the book refused it: its only event; nothing changed
            text = dumps(reject(coid, op, command_events[0][10])).decode()
            run.texts.setdefault(client, []).append(text)
            run.rejections.append(text)
            continue
        seq += 1
        post_hash = int(hashes[index])
        names.accepted[order_id] = (owner, coid)  # type: ignore[assignment]
        run.accepted_ids.append(order_id)
        run.accepted_coids.append(coid)  # type: ignore[arg-type]
        run.accepted_seqs.append(seq)
        run.last_hash = post_hash
        reports, trades = command_reports_json(market, names, seq, client, op, otype, coid, command_events)
        for who, text in reports:
            run.texts.setdefault(who, []).append(text)
        run.trades.extend(trades)
        run.gone.extend(
            event[1] for event in command_events
            if event[0] in (_CANCELLED, _DONE) and names.describe(event[1]) is not None
        )  # fmt: skip
    run.last_seq = seq
    return run
