"""The native snapshot order rows writer (wire/_snapshotrows.pyx) against `wire.dumps` of the rows:
the same bytes for rows and for a replica's map, and a refusal of what is not a row."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastbook.wire._snapshotrows import orders_json, snapshot_order_rows
from fastbook.wire.fields import dumps, hash_hex
from fastbook.wire.market import MarketSpec
from fastbook.wire.snapshot import SnapshotData, decode_snapshot, encode_snapshot

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
                "owners": 2, "clients": {"a": 1, "b": 2}, "orders": [[3, 1, 'q"'], [9, 2, "z"]]}  # fmt: skip
        if seen is not None:
            meta["seen"] = seen
        assert dumps(meta) in data
        assert decode_snapshot(data) == snap
        # The published form names nobody: the owner count only, no clients, orders or seen ids.
        public = encode_snapshot(snap, named=False)
        anonymous = {"market": spec.to_json(), "version": 7, "hash": hash_hex(99), "next_order_id": 12,
                     "owners": 2}  # fmt: skip
        assert dumps(anonymous) in public and b'"a"' not in public and b"q" not in public
        unnamed = dataclasses.replace(snap, owners={}, orders=[], seen=None, owner_count=2)
        assert decode_snapshot(public) == unnamed
