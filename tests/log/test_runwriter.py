"""The native run writer (log/_runwriter.pyx) against the Python reference: for every run of news a
sequencer executes in random flows, both write the same reports, trades and map changes.
Client order ids with characters JSON escapes; tick and lot sizes whose decimals overflow 64-bit
arithmetic (the native writer then formats them in Python). Both engines."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastbook.engine.types import COMMAND_DTYPE, EVENT_DTYPE
from fastbook.log._runwriter import orders_json, snapshot_order_rows
from fastbook.log.runwriter import NewsRun, write_news_run_native, write_news_run_reference
from fastbook.log.sequencer import SequencerConfig, SequencerNode
from fastbook.wire.fields import dumps, hash_hex
from fastbook.wire.market import MarketSpec
from fastbook.wire.snapshot import SnapshotData, decode_snapshot, encode_snapshot
from fastbook.wire.topics import Topics
from tests.log.test_sequencer_runs import CLIENTS, random_order
from tests.support.orders import decoded_rows

pytestmark = pytest.mark.usefixtures("backend")


@pytest.mark.parametrize(
    "spec_text",
    [
        "BTC-USD",
        "ETH-USD:tick=0.05:lot=1",
        "BIG:tick=1000000000000000000:lot=0.000000000000000001",  # prices past 2^64: formatted in Python
        "HUGE:tick=100000000000000000.000000000000000001:lot=7",  # tick units past 2^64
    ],
)
def test_native_run_writer_equals_the_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec_text: str
) -> None:
    spec = MarketSpec.parse(spec_text)
    topics = Topics(spec.name)
    runs: list[int] = []

    def both(*args: Any) -> NewsRun:
        native = write_news_run_native(*args)
        reference = write_news_run_reference(*args)
        assert native == reference
        runs.append(len(native.accepted_ids))
        return native

    node = SequencerNode(SequencerConfig(spec, tmp_path / "seq", dedupe_window=5))
    node.write_news_run = both
    # Escaped ids into rows too (the native reader leaves them to decode_orders).
    node.read_orders = lambda payload: decoded_rows(payload, spec)
    rng = random.Random(spec_text)
    recent: dict[str, list[str]] = {c: [] for c in CLIENTS}
    for i in range(160):
        client = rng.choice(CLIENTS)
        orders = [random_order(rng, 20 * i + k, recent[client], spec) for k in range(rng.randint(1, 15))]
        for order in orders:
            if order.get("id", "").startswith("n") and rng.random() < 0.3:
                order["id"] += rng.choice(['"q', "\\b", "/s", "~!", "'"])
        recent[client] = ([o["id"] for o in orders if o["op"] == "new"] + recent[client])[:12]
        node.on_messages([(topics.orders(client), json.dumps(orders).encode())])
    assert sum(runs) > 600  # accepted news written by both
    node.close()


def test_native_run_writer_refuses_wrong_arrays() -> None:
    spec = MarketSpec.parse("BTC-USD")
    rows = np.zeros(2, dtype=COMMAND_DTYPE)
    events = np.zeros(0, dtype=EVENT_DTYPE)
    hashes = np.zeros(2, dtype=np.uint64)
    strided = np.zeros(4, dtype=COMMAND_DTYPE)[::2]
    with pytest.raises(ValueError):
        write_news_run_native(spec, "a", 0, strided, ["x", "y"], hashes, events, {}, {}, print)
    with pytest.raises(ValueError):
        write_news_run_native(spec, "a", 0, rows, ["x"], hashes, events, {}, {}, print)
    with pytest.raises(ValueError):
        wrong = np.zeros(1, dtype=COMMAND_DTYPE)
        write_news_run_native(spec, "a", 0, rows, ["x", "y"], hashes, wrong, {}, {}, print)


# A snapshot's order row: (engine id, owner, client order id).
ORDER_ROW = st.tuples(
    st.integers(0, 2**63 - 1),
    st.integers(0, 2**32 - 1),
    st.text(st.characters(min_codepoint=1, max_codepoint=0x2FF), min_size=1, max_size=64),
)


@settings(deadline=None, max_examples=200, derandomize=True)
@given(
    st.lists(
        ORDER_ROW,
        max_size=50,
    )
)
def test_snapshot_orders_json_equals_json_dumps(rows: list[tuple[int, int, str]]) -> None:
    assert orders_json(rows) == dumps(rows)


def test_snapshot_orders_json_grows_and_refuses_what_it_cannot_write() -> None:
    rng = random.Random(5)
    rows = [(i, rng.randrange(2**32), '"\\' * 32 if i % 1000 == 0 else f"id-{i}") for i in range(100_000)]
    assert orders_json(rows) == dumps(rows)  # the buffer grows past its first guess
    with pytest.raises(ValueError):
        orders_json([(1, 1, '"' * 200)])  # 400 escaped characters: not an order id
    with pytest.raises(ValueError):
        orders_json([(-1, 1, "a")])
    with pytest.raises(TypeError):
        orders_json([(1, 1, 5)])


@settings(deadline=None, max_examples=200, derandomize=True)
@given(st.lists(st.tuples(st.integers(0, 2**70), st.integers(0, 2**32), st.text(max_size=5)), max_size=40))
def test_snapshot_order_rows_are_the_map_sorted_by_id(items: list[tuple[int, int, str]]) -> None:
    """In insertion order when that is id order (the usual case), sorted when it is not."""
    orders = {order_id: (owner, coid) for order_id, owner, coid in items}
    expected = sorted((order_id, owner, coid) for order_id, (owner, coid) in orders.items())
    assert snapshot_order_rows(orders) == expected
    assert snapshot_order_rows(dict(sorted(orders.items()))) == expected


@settings(deadline=None, max_examples=200, derandomize=True)
@given(
    st.lists(
        ORDER_ROW,
        max_size=40,
    ),
    st.booleans(),
)
def test_snapshot_orders_json_of_a_map_is_the_json_of_its_rows(
    items: list[tuple[int, int, str]], ordered: bool
) -> None:
    """Written straight from a replica's map (in id order: no rows built; else sorted first)."""
    orders = {order_id: (owner, coid) for order_id, owner, coid in items}
    if ordered:
        orders = dict(sorted(orders.items()))
    assert orders_json(orders) == dumps(sorted((i, o, c) for i, (o, c) in orders.items()))


def test_snapshot_orders_json_of_a_map_refuses_what_rows_refuse() -> None:
    bad_maps = [{1: (1, "a", 3)}, {-1: (1, "a")}, {1: (-1, "a")}, {1: (1, 5)}, {1: [1, "a"]}, {"1": (1, "a")}]
    for bad in bad_maps:
        with pytest.raises((ValueError, TypeError)):
            orders_json(bad)  # type: ignore[arg-type]


def test_snapshot_order_rows_refuse_a_value_that_is_not_a_pair() -> None:
    with pytest.raises(ValueError):
        snapshot_order_rows({1: (1, "a", 3)})
    with pytest.raises(TypeError):
        snapshot_order_rows({1: [1, "a"]})


def test_snapshot_meta_is_the_json_of_every_field() -> None:
    spec = MarketSpec.parse("BTC-USD")
    for seen in (None, {"a": {"x": 3}}):
        snap = SnapshotData(spec, 7, 99, b"engine", 12, {"a": 1, "b": 2}, [(3, 1, 'q"'), (9, 2, "z")], seen)
        data = encode_snapshot(snap)
        meta = {"market": spec.to_json(), "version": 7, "hash": hash_hex(99), "next_order_id": 12,
                "owners": {"a": 1, "b": 2}, "orders": [[3, 1, 'q"'], [9, 2, "z"]]}  # fmt: skip
        if seen is not None:
            meta["seen"] = seen
        assert dumps(meta) in data
        assert decode_snapshot(data) == snap
