"""The sequencer writes execution reports straight as JSON text (`command_reports_json`); edges build
the same reports as dicts (`command_reports`). Both must agree byte for byte: random command streams
of every kind run through a replica, and after every command the text of each report must equal
`wire.dumps` of the dict, in the same order, for the same clients, with the same public trades.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastbook.engine.types import Op
from fastbook.log.replica import Replica
from fastbook.log.reports import command_reports, command_reports_json
from fastbook.wire.fields import dumps
from fastbook.wire.market import MarketSpec

MARKETS = ["BTC-USD", "ETH-USD:tick=0.5:lot=0.0001", "IDX:tick=5:lot=1"]
# Client order ids are printable ASCII without spaces: quotes and backslashes need escaping.
COIDS = ["o-1", 'q"uote', "back\\slash", "a/b", "~!@#$%^&*()", "x" * 64, "</script>", "{}[]"]


def run_stream(market_spec: str, seed: int, length: int) -> set[str]:
    """Runs the stream; returns the kinds of report it compared."""
    rng = random.Random(seed)
    market = MarketSpec.parse(market_spec)
    replica = Replica(market)
    clients = ["alice", "bob", "carol"]
    open_orders: list[tuple[str, str]] = []  # (client, coid)
    kinds: set[str] = set()
    for step in range(length):
        client = rng.choice(clients)
        owner = replica.owners.get(client) or replica.next_owner()
        roll = rng.randrange(100)
        mine = [coid for c, coid in open_orders if c == client]
        if roll < 10 and mine:
            coid = rng.choice(mine)
            op, args = Op.CANCEL, dict(order_id=replica.resting_id(owner, coid), owner=owner)
        elif roll < 20 and mine:
            coid = rng.choice(mine)
            price = rng.choice([0, rng.randint(95, 105)])
            order_id = replica.resting_id(owner, coid)
            args = dict(order_id=order_id, owner=owner, price=price, qty=rng.randint(1, 9))
            op = Op.AMEND
        elif roll < 23:
            coid = rng.choice([None, f"all-{step}"])
            op, args = Op.CANCEL_ALL, dict(order_id=0, owner=owner)
        else:
            coid = f"{rng.choice(COIDS)}{step}"[-64:]
            order_type = rng.choice([1, 1, 1, 2])
            tif = rng.choice([1, 1, 2, 3]) if order_type == 1 else 2
            op = Op.NEW
            args = dict(
                order_id=replica.next_order_id,
                owner=owner,
                side=rng.choice([1, 2]),
                order_type=order_type,
                tif=tif,
                stp=rng.choice([0, 0, 1, 2, 3]),
                post_only=int(order_type == 1 and tif == 1 and rng.randrange(8) == 0),
                price=rng.randint(95, 105) if order_type == 1 else 0,
                qty=rng.randint(1, 12),
            )
        events = replica.execute(client, coid, int(op), **args)
        if len(events) == 1 and events[0][0] == 2:  # rejected: nothing sequenced, no reports
            continue
        if op == Op.NEW and replica.resting_id(owner, coid) is not None:
            open_orders.append((client, coid))
        open_orders = [(c, o) for c, o in open_orders if replica.resting_id(replica.owners[c], o) is not None]
        call = (market, replica, step + 1, client, int(op), args.get("order_type", 0), coid, events)
        reports, trades = command_reports(*call)
        texts, json_trades = command_reports_json(*call)
        assert texts == [(c, dumps(report).decode()) for c, report in reports], f"step {step}"
        assert json_trades == [dumps(trade).decode() for trade in trades]
        kinds.update(report["type"] for _client, report in reports)
    return kinds


@pytest.mark.parametrize("market_spec", MARKETS)
def test_a_long_stream_of_every_report_kind(market_spec: str) -> None:
    kinds = run_stream(market_spec, seed=7, length=3000)
    assert kinds == {"accepted", "trade", "cancelled", "done", "amended", "cancelled_all"}


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(MARKETS), st.integers(0, 2**32 - 1), st.integers(1, 300))
def test_random_streams(market_spec: str, seed: int, length: int) -> None:
    run_stream(market_spec, seed, length)
