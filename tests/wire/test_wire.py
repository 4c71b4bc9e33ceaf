from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastbook.engine.types import Op, OrderType, Side, Stp, Tif
from fastbook.wire.fields import (
    INVALID_AMEND,
    INVALID_FIELD,
    INVALID_MESSAGE,
    INVALID_OP,
    INVALID_PRICE,
    INVALID_QTY,
    INVALID_UTF8,
    MALFORMED_JSON,
    MAX_ORDERS_PER_MESSAGE,
    MISSING_FIELD,
    PAYLOAD_TOO_LARGE,
    UNKNOWN_FIELD,
    UNKNOWN_MARKET,
    describe,
)
from fastbook.wire.log import ReplayRequest, decode_replay_request, encode_replay_request
from fastbook.wire.market import MarketSpec
from fastbook.wire.messages import (
    BookWriter,
    encode_book,
    encode_reports,
    encode_status,
    unknown_market_reports,
)
from fastbook.wire.orders import OrderCommand, WireReject, decode_orders
from fastbook.wire.snapshot import SnapshotData, decode_snapshot, encode_snapshot, is_snapshot_payload

SPEC = MarketSpec.parse("BTC-USD")


def one(payload: bytes | str) -> OrderCommand | WireReject:
    data = payload.encode() if isinstance(payload, str) else payload
    items = decode_orders(data, SPEC)
    assert len(items) == 1
    return items[0]


def rejected(payload: bytes | str, code: str) -> WireReject:
    item = one(payload)
    assert isinstance(item, WireReject), item
    assert item.code == code, item
    assert item.message
    return item


def test_new_limit_full() -> None:
    cmd = one(
        '{"op":"new","id":"o-1","side":"buy","type":"limit","price":"100.25","qty":"1.5","tif":"ioc",'
        '"post_only":false,"stp":"cancel_maker","market":"BTC-USD"}'
    )
    assert cmd == OrderCommand(
        Op.NEW, "o-1", Side.BUY, OrderType.LIMIT, Tif.IOC, Stp.CANCEL_MAKER, False, 10025, 1500
    )


def test_new_defaults_and_market_order() -> None:
    cmd = one('{"op":"new","id":"a","side":"sell","price":"1","qty":"0.001"}')
    assert cmd == OrderCommand(Op.NEW, "a", Side.SELL, OrderType.LIMIT, Tif.GTC, Stp.NONE, False, 100, 1)
    cmd = one('{"op":"new","id":"m","side":"buy","type":"market","qty":"2"}')
    assert cmd == OrderCommand(Op.NEW, "m", Side.BUY, OrderType.MARKET, Tif.GTC, Stp.NONE, False, 0, 2000)


def test_cancel_amend_cancel_all() -> None:
    assert one('{"op":"cancel","id":"o-1"}') == OrderCommand(Op.CANCEL, "o-1")
    assert one('{"op":"amend","id":"o-1","qty":"1.0"}') == OrderCommand(Op.AMEND, "o-1", qty=1000)
    assert one('{"op":"amend","id":"o-1","price":"99"}') == OrderCommand(Op.AMEND, "o-1", price=9900)
    assert one('{"op":"cancel_all"}') == OrderCommand(Op.CANCEL_ALL, None)
    assert one('{"op":"cancel_all","id":"x"}') == OrderCommand(Op.CANCEL_ALL, "x")


def test_bulk_array_keeps_order_and_rejects_items_individually() -> None:
    items = decode_orders(
        b'[{"op":"new","id":"1","side":"buy","price":"1","qty":"1"}, 5, {"op":"cancel","id":"1"}]', SPEC
    )
    assert isinstance(items[0], OrderCommand) and items[0].client_order_id == "1"
    assert isinstance(items[1], WireReject) and items[1].code == INVALID_MESSAGE
    assert isinstance(items[2], OrderCommand) and items[2].op == Op.CANCEL


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"\xff\xfe{}", INVALID_UTF8),
        (b'{"op":"new"', MALFORMED_JSON),
        (b"", MALFORMED_JSON),
        (b'{"op":"new","id":"a","side":"buy","price":NaN,"qty":"1"}', MALFORMED_JSON),
        (b'{"op":"new","id":"a","side":"buy","price":Infinity,"qty":"1"}', MALFORMED_JSON),
        (b'{"op":"new","id":"a","id":"b","side":"buy","price":"1","qty":"1"}', MALFORMED_JSON),
        (b"[" * 100_000 + b"]" * 100_000, MALFORMED_JSON),
        (b'{"x":' + b"9" * 5000 + b"}", MALFORMED_JSON),
        (b'"hello"', INVALID_MESSAGE),
        (b"[]", INVALID_MESSAGE),
        (b"42", INVALID_MESSAGE),
        (b'{"id":"a"}', MISSING_FIELD),
        (b'{"op":"buy","id":"a"}', INVALID_OP),
        (b'{"op":7,"id":"a"}', INVALID_OP),
        (b'{"op":"new","id":"a","side":"buy","price":"1","qty":"1","colour":"red"}', UNKNOWN_FIELD),
        (b'{"op":"cancel","id":"a","qty":"1"}', UNKNOWN_FIELD),
        (b'{"op":"new","side":"buy","price":"1","qty":"1"}', MISSING_FIELD),
        (b'{"op":"new","id":"a","price":"1","qty":"1"}', MISSING_FIELD),
        (b'{"op":"new","id":"a","side":"buy","qty":"1"}', MISSING_FIELD),
        (b'{"op":"new","id":"a","side":"buy","price":"1"}', MISSING_FIELD),
        (b'{"op":"new","id":"a","side":"up","price":"1","qty":"1"}', INVALID_FIELD),
        (b'{"op":"new","id":"a","side":1,"price":"1","qty":"1"}', INVALID_FIELD),
        (b'{"op":"new","id":"a","side":"buy","price":"1","qty":"1","tif":"day"}', INVALID_FIELD),
        (b'{"op":"new","id":"a","side":"buy","price":"1","qty":"1","stp":null}', INVALID_FIELD),
        (b'{"op":"new","id":"a","side":"buy","price":"1","qty":"1","post_only":"yes"}', INVALID_FIELD),
        (b'{"op":"new","id":12,"side":"buy","price":"1","qty":"1"}', INVALID_FIELD),
        (b'{"op":"new","id":"has space","side":"buy","price":"1","qty":"1"}', INVALID_FIELD),
        (b'{"op":"new","id":"' + b"x" * 65 + b'","side":"buy","price":"1","qty":"1"}', INVALID_FIELD),
        (b'{"op":"new","id":"a","side":"buy","price":"100.255","qty":"1"}', INVALID_PRICE),
        (b'{"op":"new","id":"a","side":"buy","price":100.25,"qty":"1"}', INVALID_PRICE),
        (b'{"op":"new","id":"a","side":"buy","price":"1e400","qty":"1"}', INVALID_PRICE),
        (b'{"op":"new","id":"a","side":"buy","price":"1","qty":"0.0001"}', INVALID_QTY),
        (b'{"op":"new","id":"a","side":"buy","price":"1","qty":"0"}', INVALID_QTY),
        (b'{"op":"new","id":"a","side":"buy","price":"1","qty":"99999999999"}', INVALID_QTY),
        (b'{"op":"new","id":"a","side":"buy","type":"market","price":"1","qty":"1"}', INVALID_PRICE),
        (b'{"op":"new","id":"a","side":"buy","price":"1","qty":"1","market":"ETH-USD"}', UNKNOWN_MARKET),
        (b'{"op":"amend","id":"a"}', INVALID_AMEND),
        (b'{"op":"cancel"}', MISSING_FIELD),
    ],
)
def test_rejects(payload: bytes, code: str) -> None:
    rejected(payload, code)


def test_reject_carries_client_order_id_and_op() -> None:
    bad = rejected('{"op":"new","id":"o-9","side":"buy","price":"1.001","qty":"1"}', INVALID_PRICE)
    assert (bad.client_order_id, bad.op) == ("o-9", "new")
    assert "multiple of 0.01" in bad.message
    report = bad.report()
    assert report == {
        "type": "rejected",
        "id": "o-9",
        "op": "new",
        "code": "INVALID_PRICE",
        "message": bad.message,
    }


def test_huge_payload_rejected_without_parsing() -> None:
    items = decode_orders(b"[" + b"1," * 600_000 + b"1]", SPEC, max_payload=1 << 20)
    assert len(items) == 1 and isinstance(items[0], WireReject) and items[0].code == PAYLOAD_TOO_LARGE
    too_many = json.dumps([{"op": "cancel", "id": str(i)} for i in range(MAX_ORDERS_PER_MESSAGE + 1)])
    items = decode_orders(too_many.encode(), SPEC, max_payload=1 << 22)
    assert len(items) == 1 and isinstance(items[0], WireReject) and items[0].code == INVALID_MESSAGE


def test_reject_of_surrogate_field_name_is_encodable() -> None:
    bad = rejected('{"op":"cancel","id":"a","\\ud800":1}', UNKNOWN_FIELD)
    json.loads(encode_reports([bad.report()]))


def test_replay_request() -> None:
    req = ReplayRequest(5, None)
    assert decode_replay_request(encode_replay_request(req)) == req
    req = ReplayRequest(5, 9, snapshot=True)
    assert decode_replay_request(encode_replay_request(req)) == req
    for bad in [b"{}", b'{"from":0}', b'{"from":5,"to":4}', b'{"from":"1"}', b'{"from":1,"x":1}', b"\xff"]:
        with pytest.raises(ValueError):
            decode_replay_request(bad)


def make_snapshot(seen: dict[str, dict[str, int]] | None = None) -> SnapshotData:
    return SnapshotData(
        SPEC,
        42,
        0xDEADBEEF,
        b"FBSN-engine-bytes",
        17,
        {"alice": 1, "bob": 2},
        [(3, 1, "o-3"), (9, 2, "b-1")],
        seen,
    )


def test_snapshot_roundtrip_with_and_without_dedupe() -> None:
    for seen in (None, {"alice": {"o-1": 1, "o-3": 5}}):
        snap = make_snapshot(seen)
        assert decode_snapshot(encode_snapshot(snap)) == snap
        assert is_snapshot_payload(encode_snapshot(snap))
    older_form = make_snapshot({"alice": ["o-1"]})  # type: ignore[dict-item]
    assert decode_snapshot(encode_snapshot(older_form)).seen == {"alice": {"o-1": 0}}


def test_snapshot_corruption_detected() -> None:
    data = bytearray(encode_snapshot(make_snapshot()))
    for pos in (0, 5, 20, len(data) // 2, len(data) - 1):
        damaged = bytearray(data)
        damaged[pos] ^= 0x40
        with pytest.raises(ValueError):
            decode_snapshot(bytes(damaged))
    with pytest.raises(ValueError):
        decode_snapshot(bytes(data[:-10]))
    with pytest.raises(ValueError):
        decode_snapshot(b"")


def test_book_and_status_encoding() -> None:
    book = json.loads(encode_book(SPEC, 3, 255, ([(10025, 1500, 2)], [(10100, 1, 1)]), None))
    assert book == {
        "v": 1,
        "market": "BTC-USD",
        "version": 3,
        "hash": "00000000000000ff",
        "bids": [["100.25", "1.500", 2]],
        "asks": [["101.00", "0.001", 1]],
        "last_trade": None,
    }
    status = json.loads(encode_status("alice", "online", 3, 255, 0))
    assert status == {
        "client_id": "alice",
        "state": "online",
        "version": 3,
        "hash": "00000000000000ff",
        "lag": 0,
    }


def test_unknown_market_answer() -> None:
    (report,) = json.loads(unknown_market_reports("DOGE-USD", ["BTC-USD", "ETH-USD"]))
    assert report["type"] == "rejected" and report["code"] == "UNKNOWN_MARKET"
    assert "DOGE-USD" in report["message"] and "BTC-USD, ETH-USD" in report["message"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
order_fields = st.sampled_from(
    ["op", "id", "side", "type", "price", "qty", "tif", "post_only", "stp", "market", "x"]
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decode_never_raises_on_bytes(payload: bytes) -> None:
    for item in decode_orders(payload, SPEC):
        assert isinstance(item, (OrderCommand, WireReject))


@settings(max_examples=500, deadline=None)
@given(
    st.dictionaries(
        order_fields, json_values | st.sampled_from(["new", "buy", "1", "0.5", "gtc"]), max_size=9
    )
)
def test_decode_never_raises_on_objects(obj: dict[str, object]) -> None:
    payload = json.dumps(obj).encode()
    (item,) = decode_orders(payload, SPEC)
    if isinstance(item, WireReject):
        assert item.code and item.message
        json.loads(encode_reports([item.report()]))
    else:
        assert item.op in (Op.NEW, Op.CANCEL, Op.AMEND, Op.CANCEL_ALL)


def test_deep_values_are_quoted_without_recursion() -> None:
    deep = "[" * 900 + "]" * 900
    payload = ('{"op":"new","id":"a","side":' + deep + ',"price":"1","qty":"1"}').encode()
    (item,) = decode_orders(payload, SPEC)
    assert isinstance(item, WireReject) and item.code in ("INVALID_FIELD", "MALFORMED_JSON")
    assert describe([[1]]) == "an array" and describe({"a": 1}) == "an object"
    assert describe("x" * 100) == '"' + "x" * 40 + '"'


_levels = st.lists(
    st.tuples(st.integers(1, 10**12), st.integers(1, 10**12), st.integers(1, 10**6)), max_size=20
)
_trades = st.none() | st.fixed_dictionaries(
    {"seq": st.integers(1, 10**9), "price": st.just("100.25"), "qty": st.just("1.5"), "side": st.just("buy")}
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_levels, _levels, _trades, st.integers(0, 2**63 - 1), st.integers(0, 2**64 - 1)),
                min_size=1, max_size=6))
def test_the_book_writer_writes_what_json_dumps_of_the_book_writes(
    books: list[tuple[list[tuple[int, int, int]], list[tuple[int, int, int]], Any, int, int]],
) -> None:
    # One writer over a sequence of books: its level and last-trade texts kept from one to the next
    # must never leak a stale level into a later book.
    writer = BookWriter(SPEC)
    writer.MAX_LEVELS_KEPT = 16  # small, so the bound is crossed too
    for bids, asks, trade, version, state_hash in books:
        expected = json.dumps({
            "v": 1, "market": SPEC.name, "version": version, "hash": f"{state_hash:016x}",
            "bids": [[SPEC.ticks_to_price(p), SPEC.lots_to_qty(q), n] for p, q, n in bids],
            "asks": [[SPEC.ticks_to_price(p), SPEC.lots_to_qty(q), n] for p, q, n in asks],
            "last_trade": trade,
        }, separators=(",", ":")).encode()
        assert writer.encode(version, state_hash, (bids, asks), trade) == expected


def test_the_book_writer_tells_whether_the_levels_shown_changed() -> None:
    writer = BookWriter(SPEC)
    bids, asks = [(10000, 5, 1)], [(10010, 3, 2)]
    trade = {"trade_id": "1-1"}
    assert not writer.same((bids, asks), None)  # nothing written yet
    writer.encode(1, 7, (list(bids), list(asks)), trade)
    assert writer.same((list(bids), list(asks)), trade)  # equal levels, the same last trade
    assert not writer.same((bids, [(10010, 4, 2)]), trade)
    assert not writer.same((bids, asks), dict(trade))  # another trade (even an equal one)
    assert b'"asks":[["100.10","0.004",2]]' in writer.encode(2, 7, (bids, [(10010, 4, 2)]), trade)
