"""The sequencer's output for a run of news executed in one engine call.

The sequencer executes a run of `new` commands whose client order ids need no check against the
book (`SequencerNode._news_run`) with one `Book.apply_batch(rows, hashes, next_order_id)`: the book
numbers the orders as the per-command path would. `write_news_run` (native; `write_news_run_reference` is the
same in Python) turns the run's rows, post-state
hashes and events into what the per-command path (`SequencerNode._execute`) produces for the same
commands: the log records (`wire.encode_entry` bytes), the reports in command order (rejections as
dicts, execution reports as the JSON text `reports.command_reports_json` writes) and the public
trades, plus what the caller needs to update the replica's maps and the dedupe window. Nothing is
changed here; the caller applies the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastbook import _runwriter
from fastbook.market import MarketSpec
from fastbook.types import EventType
from fastbook.wire import CANCEL_REASON_TEXT, SIDE_TEXT, TYPE_TEXT, LogEntry, encode_entry, json_string

_ACCEPTED, _REJECTED, _TRADE, _CANCELLED, _DONE = (
    int(EventType.ACCEPTED),
    int(EventType.REJECTED),
    int(EventType.TRADE),
    int(EventType.CANCELLED),
    int(EventType.DONE),
)

# reject(client order id, op, engine reason) -> the rejected report of a command the book refused.
RejectReport = Callable[[str | None, int, int], dict[str, Any]]


@dataclass(slots=True)
class NewsRun:
    records: list[tuple[int, bytes]] = field(default_factory=list)  # (seq, encoded log entry)
    # (client, report, seq): a rejection (dict, seq 0) or an execution report (JSON text), in order.
    reports: list[tuple[str, dict[str, Any] | str, int]] = field(default_factory=list)
    trades: list[dict[str, Any]] = field(default_factory=list)  # public trades (reports.public_trade)
    accepted_ids: list[int] = field(default_factory=list)  # engine order id of each accepted new
    accepted_coids: list[str] = field(default_factory=list)
    accepted_seqs: list[int] = field(default_factory=list)
    gone: list[int] = field(default_factory=list)  # order ids with a DONE or CANCELLED event
    last_seq: int = 0
    last_hash: int = 0


def write_news_run(*args: Any) -> NewsRun:
    """`write_news_run_reference(*args)` written natively (engine/_runwriter.pyx, typed in its
    .pyi): the same output."""
    return NewsRun(*_runwriter.write_news_run(*args))


def write_news_run_reference(
    market: MarketSpec,
    client: str,
    version: int,
    rows: np.ndarray,
    coids: list[str | None],
    hashes: np.ndarray,
    events: np.ndarray,
    orders: dict[int, tuple[int, str]],
    clients: dict[int, str],
    reject: RejectReport,
) -> NewsRun:
    """The output of `client`'s news `rows` (COMMAND_DTYPE, numbered by the book) run at `version`.

    `hashes` and `events` are what `apply_batch` returned for them; `orders` (engine id -> (owner,
    client order id)) and `clients` (owner -> client id) are the replica's maps before the run (the
    run's own client must be in `clients`)."""
    tp, lq = market.ticks_to_price, market.lots_to_qty
    run = NewsRun(last_seq=version)
    records, reports, trades = run.records, run.reports, run.trades
    names: dict[int, str] = {}  # the run's accepted orders: engine id -> client order id
    hash_list = hashes.tolist()
    event_rows = events.tolist()
    k, total = 0, len(event_rows)
    seq = version
    for index, row in enumerate(rows.tolist()):
        op, side, otype, tif, stp, post_only, _pad, owner, _pad2, order_id, price, qty = row
        coid = coids[index]
        if event_rows[k][1] == _REJECTED:  # the book refused it: its only event; nothing changed
            reports.append((client, reject(coid, op, event_rows[k][2]), 0))
            k += 1
            continue
        seq += 1
        names[order_id] = coid  # type: ignore[assignment]
        post_hash = hash_list[index]
        entry = LogEntry(
            seq, post_hash, client, coid, op, order_id, owner, side, otype, tif, stp, post_only, price, qty
        )  # fmt: skip
        records.append((seq, encode_entry(entry)))
        run.accepted_ids.append(order_id)
        run.accepted_coids.append(coid)  # type: ignore[arg-type]
        run.accepted_seqs.append(seq)
        run.last_hash = post_hash
        number = 0
        while k < total and event_rows[k][0] == index:
            event = event_rows[k]
            kind, reason, eside, _p, eid, eowner, other_owner, other_id, eprice, eqty, rest, other = event[1:]
            k += 1
            if kind == _TRADE:
                number += 1
                trade_id, price_text, qty_text = f"{seq}-{number}", tp(eprice), lq(eqty)
                trades.append(
                    {"trade_id": trade_id, "seq": seq, "price": price_text, "qty": qty_text,
                     "taker_side": SIDE_TEXT[eside]}
                )  # fmt: skip
                taker_coid = names[eid] if eid in names else orders[eid][1]
                maker_coid = names[other_id] if other_id in names else orders[other_id][1]
                common = f'"seq":{seq},"trade_id":"{trade_id}","price":"{price_text}","qty":"{qty_text}"'
                taker = (
                    f'{{"type":"trade","id":{json_string(taker_coid)},{common},"side":"{SIDE_TEXT[eside]}",'
                    f'"liquidity":"taker","remaining":"{lq(rest)}"}}'
                )
                maker = (
                    f'{{"type":"trade","id":{json_string(maker_coid)},{common},'
                    f'"side":"{SIDE_TEXT[3 - eside]}","liquidity":"maker","remaining":"{lq(other)}"}}'
                )
                reports.append((clients[eowner], taker, seq))
                reports.append((clients[other_owner], maker, seq))
                continue
            if eid in names:
                order_coid = names[eid]
            else:
                known = orders.get(eid)
                if known is None:
                    continue
                order_coid = known[1]
            head = f'"id":{json_string(order_coid)},"seq":{seq}'
            if kind == _ACCEPTED:
                price_json = f'"{tp(eprice)}"' if eprice else "null"
                text = (
                    f'{{"type":"accepted",{head},"side":"{SIDE_TEXT[eside]}","order_type":"{TYPE_TEXT[otype]}",'
                    f'"price":{price_json},"qty":"{lq(eqty)}"}}'
                )
            elif kind == _CANCELLED:
                run.gone.append(eid)
                why = CANCEL_REASON_TEXT.get(reason, str(reason))
                text = f'{{"type":"cancelled",{head},"qty":"{lq(eqty)}","reason":"{why}"}}'
            elif kind == _DONE:
                run.gone.append(eid)
                text = f'{{"type":"done",{head}}}'
            else:
                continue
            reports.append((clients[eowner], text, seq))
    run.last_seq = seq
    return run
