"""The native order reader (src/fastbook/wire/_orderparse.pyx) against the Python decoder `decode_orders`.

The contract: on an order message in the common form (an object or an array of objects, JSON
whitespace, the nine usual keys, unescaped printable ASCII strings) that the Python decoder accepts
without a reject, it returns the same commands; on anything else it returns None (the caller then
uses the Python decoder), and it never accepts a message the Python decoder rejects or reads one
differently.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastbook.engine.types import COMMAND_DTYPE, MAX_PRICE, MAX_QTY, Op
from fastbook.wire._orderparse import parse_orders
from fastbook.wire.fields import (
    MAX_ORDERS_PER_MESSAGE,
    OP_NAMES,
    SIDE_NAMES,
    STP_NAMES,
    TIF_NAMES,
    TYPE_NAMES,
    dumps,
)
from fastbook.wire.market import MarketSpec
from fastbook.wire.orders import OrderCommand, decode_orders

FUZZ = settings(
    deadline=None, derandomize=True, max_examples=500, suppress_health_check=[HealthCheck.too_slow]
)
MARKETS = [
    MarketSpec("BTC-USD"),  # tick 0.01, lot 0.001
    MarketSpec("M2", Decimal("0.05"), Decimal("1")),
    MarketSpec("M3", Decimal("1"), Decimal("0.00000001")),
    MarketSpec("M4", Decimal("1000"), Decimal("0.000000000000000001")),  # units > 1, 18 places
]
DEFAULT = MARKETS[0]
# What an id may hold without a JSON escape: [!-~] but '"' and '\'.
ID_CHARS = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"\\')
KEYS = ("op", "id", "side", "type", "price", "qty", "tif", "post_only", "stp")
WS = " \t\n\r"


def parse(payload: bytes, market: MarketSpec) -> tuple[np.ndarray, list[str | None]] | None:
    tick, lot = (market._tick_places, market._tick_units), (market._lot_places, market._lot_units)
    return parse_orders(payload, *tick, *lot)


def project(cmd: OrderCommand) -> tuple[int, ...]:
    """The row an OrderCommand should be: (op, side, type, tif, stp, post_only, price, qty)."""
    if cmd.op == Op.NEW:
        return (cmd.op, cmd.side, cmd.order_type, cmd.tif, cmd.stp, int(cmd.post_only), cmd.price, cmd.qty)
    if cmd.op == Op.AMEND:
        return (cmd.op, 0, 0, 0, 0, 0, cmd.price, cmd.qty)
    return (cmd.op, 0, 0, 0, 0, 0, 0, 0)


ROW_FIELDS = ("op", "side", "type", "tif", "stp", "post_only", "price", "qty")


def agree(payload: bytes, market: MarketSpec) -> bool:
    """parse_orders on `payload`; if it read the message, decode_orders must give exactly the same
    commands and no reject. True if the native reader read it."""
    got = parse(payload, market)
    if got is None:
        return False
    commands, ids = got
    expected = decode_orders(payload, market)
    assert all(isinstance(item, OrderCommand) for item in expected), (payload[:200], expected[:3])
    assert isinstance(commands, np.ndarray) and commands.dtype == COMMAND_DTYPE
    assert commands.flags.writeable and commands.flags.owndata and commands.flags.c_contiguous
    assert len(commands) == len(ids) == len(expected)
    cols = [commands[name].tolist() for name in ROW_FIELDS]
    rows = list(zip(*cols, strict=True))
    assert rows == [project(cmd) for cmd in expected]  # type: ignore[arg-type]
    assert ids == [cmd.client_order_id for cmd in expected]  # type: ignore[union-attr]
    for name in ("owner", "order_id", "_pad", "_pad2"):
        assert not commands[name].any()
    return True


# ---------------------------------------------------------------------------------------------
# A JSON writer with whitespace between tokens and objects as key/value pairs (duplicates allowed)
# ---------------------------------------------------------------------------------------------


@dataclass
class Obj:
    pairs: list[tuple[str, Any]]


def write(doc: Any, ws: Callable[[], str], ascii_only: bool = True) -> str:
    if isinstance(doc, Obj):
        if not doc.pairs:
            return "{" + ws() + "}"
        items = [
            f"{ws()}{json.dumps(k, ensure_ascii=ascii_only)}{ws()}:{ws()}{write(v, ws, ascii_only)}{ws()}"
            for k, v in doc.pairs
        ]
        return "{" + ",".join(items) + "}"
    if isinstance(doc, list):
        if not doc:
            return "[" + ws() + "]"
        return "[" + ",".join(ws() + write(item, ws, ascii_only) + ws() for item in doc) + "]"
    return json.dumps(doc, ensure_ascii=ascii_only)


def whitespace(draw: st.DrawFn) -> Callable[[], str]:
    mode = draw(st.sampled_from(["none", "dumps", "random"]))
    if mode == "none":
        return lambda: ""
    if mode == "dumps":
        return lambda: " "
    return lambda: draw(st.text(WS, max_size=3))


def message(draw: st.DrawFn, orders: list[Any], ascii_only: bool = True) -> bytes:
    ws = whitespace(draw)
    doc: Any = orders[0] if len(orders) == 1 and draw(st.booleans()) else orders
    return (ws() + write(doc, ws, ascii_only) + ws()).encode("utf-8", "surrogatepass")


# ---------------------------------------------------------------------------------------------
# Valid orders: every one must be read natively
# ---------------------------------------------------------------------------------------------


@st.composite
def amounts(draw: st.DrawFn, places: int, units: int, maximum: int) -> str:
    """A decimal string _to_steps accepts: a whole number of steps in 1..maximum, written with
    optional leading zeros, trailing fraction zeros, or no point at all when it can."""
    steps = draw(st.integers(1, 2000) | st.integers(1, maximum) | st.sampled_from([1, maximum, maximum - 1]))
    scaled = str(steps * units).rjust(places + 1, "0")
    whole, frac = (scaled[:-places], scaled[-places:]) if places else (scaled, "")
    frac = frac.rstrip("0") if draw(st.booleans()) else frac
    frac += "0" * draw(st.integers(0, 30 - len(frac)))
    if not frac and draw(st.booleans()):
        frac = "0" * draw(st.integers(1, 30))
    whole = "0" * draw(st.integers(0, 30 - len(whole))) + whole if draw(st.booleans()) else whole
    return f"{whole}.{frac}" if frac else whole


@st.composite
def valid_orders(draw: st.DrawFn, market: MarketSpec) -> Obj:
    price = amounts(market._tick_places, market._tick_units, MAX_PRICE)
    qty = amounts(market._lot_places, market._lot_units, MAX_QTY)
    op = draw(st.sampled_from(list(OP_NAMES)))
    fields: dict[str, Any] = {"op": op}
    if op != "cancel_all" or draw(st.booleans()):
        fields["id"] = draw(st.text(ID_CHARS, min_size=1, max_size=64))
    if op == "new":
        fields["side"] = draw(st.sampled_from(list(SIDE_NAMES)))
        order_type = draw(st.sampled_from(["limit", "market", None]))
        if order_type is not None:
            fields["type"] = order_type
        if order_type != "market":
            fields["price"] = draw(price)
        fields["qty"] = draw(qty)
        for name, names in (("tif", TIF_NAMES), ("stp", STP_NAMES)):
            if draw(st.booleans()):
                fields[name] = draw(st.sampled_from(list(names)))
        if draw(st.booleans()):
            fields["post_only"] = draw(st.booleans())
    elif op == "amend":
        which = draw(st.sampled_from([("price",), ("qty",), ("price", "qty")]))
        if "price" in which:
            fields["price"] = draw(price)
        if "qty" in which:
            fields["qty"] = draw(qty)
    pairs = draw(st.permutations(list(fields.items())))
    return Obj(pairs)


@st.composite
def valid_messages(draw: st.DrawFn) -> tuple[bytes, MarketSpec]:
    market = draw(st.sampled_from(MARKETS))
    orders = draw(st.lists(valid_orders(market), min_size=1, max_size=8))
    return message(draw, orders), market


@FUZZ
@given(valid_messages())
def test_valid_messages_are_read_natively(case: tuple[bytes, MarketSpec]) -> None:
    payload, market = case
    assert agree(payload, market), payload


# ---------------------------------------------------------------------------------------------
# Damaged bytes and invalid values: never accepted unless Python accepts them identically
# ---------------------------------------------------------------------------------------------

NOISE = st.sampled_from(list(b'"{}[],:.0159 \t\n\\-eEx\x00\x7f\x80\xff') + [ord("u")]) | st.integers(0, 255)


@st.composite
def damaged_messages(draw: st.DrawFn) -> tuple[bytes, MarketSpec]:
    payload, market = draw(valid_messages())
    data = bytearray(payload)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["replace", "insert", "delete"]))
        at = draw(st.integers(0, len(data)))
        if kind == "insert":
            data[at:at] = bytes([draw(NOISE)])
        elif at < len(data):
            if kind == "replace":
                data[at] = draw(NOISE)
            else:
                del data[at]
    return bytes(data), market


@FUZZ
@given(damaged_messages())
def test_damaged_messages_never_disagree(case: tuple[bytes, MarketSpec]) -> None:
    agree(*case)


AMOUNT_TEXTS = [
    "0", "00", "0.0", "00.10", "1.", ".5", "-1", "+1", "1e3", "1E3", "", " 1", "1 ", "0.001", "1.2301",
    "1.230", "9" * 31, "1" + "0" * 29, "0" * 30 + "1", "1." + "0" * 30, "1." + "0" * 31, "NaN", "Infinity",
    "1..0", "1.0.0", "0x10", "١", "1,5", str(MAX_PRICE), str(MAX_PRICE + 1), str(MAX_QTY), str(MAX_QTY + 1),
    "18446744073709551616", "1844674407370955161.6", "99999999999999999999.99",
]
ODD_VALUES = st.sampled_from([None, True, False, 0, 1, 1.5, -1, [], {}, ["x"], {"a": 1}, 10**20])
ANY_TEXT = st.text(max_size=8) | st.text(ID_CHARS + ' "\\', max_size=70)


@st.composite
def amount_values(draw: st.DrawFn, places: int, units: int, maximum: int) -> Any:
    texts = st.sampled_from(AMOUNT_TEXTS) | st.text("0123456789.", max_size=34)
    return draw(amounts(places, units, maximum) | texts | texts | ODD_VALUES | ANY_TEXT)


def enum_values(names: dict[str, int]) -> st.SearchStrategy[Any]:
    listed = list(names)
    return st.sampled_from(listed) | st.sampled_from([n.upper() for n in listed] + ["", "x"]) | ODD_VALUES


@st.composite
def any_orders(draw: st.DrawFn, market: MarketSpec) -> Obj:
    """Mostly plausible orders with wrong, missing, extra or duplicated fields now and then."""
    pairs = list(draw(valid_orders(market)).pairs)
    values: dict[str, st.SearchStrategy[Any]] = {
        "op": enum_values(OP_NAMES),
        "id": st.text(ID_CHARS, min_size=1, max_size=64) | ANY_TEXT | ODD_VALUES,
        "side": enum_values(SIDE_NAMES),
        "type": enum_values(TYPE_NAMES),
        "price": amount_values(market._tick_places, market._tick_units, MAX_PRICE),
        "qty": amount_values(market._lot_places, market._lot_units, MAX_QTY),
        "tif": enum_values(TIF_NAMES),
        "post_only": st.booleans() | ODD_VALUES | st.just("true"),
        "stp": enum_values(STP_NAMES),
        "market": st.sampled_from([market.name, "other", None]),
        "foo": ODD_VALUES,
        "Op": enum_values(OP_NAMES),
    }
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["change", "drop", "add", "duplicate"]))
        if action == "change" and pairs:
            i = draw(st.integers(0, len(pairs) - 1))
            pairs[i] = (pairs[i][0], draw(values[pairs[i][0]]))
        elif action == "drop" and pairs:
            del pairs[draw(st.integers(0, len(pairs) - 1))]
        elif action == "add":
            key = draw(st.sampled_from(list(values)))
            pairs.insert(draw(st.integers(0, len(pairs))), (key, draw(values[key])))
        elif action == "duplicate" and pairs:
            pairs.append(pairs[draw(st.integers(0, len(pairs) - 1))])
    return Obj(pairs)


def in_grammar(orders: list[Any]) -> bool:
    """Whether a message of these orders is in the form the native reader is meant to read
    whenever Python accepts it."""
    for order in orders:
        if not isinstance(order, Obj):
            return False
        keys = [k for k, _ in order.pairs]
        if len(set(keys)) != len(keys) or not set(keys) <= set(KEYS):
            return False
        for key, value in order.pairs:
            if key == "post_only":
                if not isinstance(value, bool):
                    return False
            elif not isinstance(value, str) or not all(" " <= ch <= "~" and ch not in '"\\' for ch in value):
                return False
    return True


@st.composite
def any_messages(draw: st.DrawFn) -> tuple[bytes, MarketSpec, bool]:
    market = draw(st.sampled_from(MARKETS))
    orders: list[Any] = draw(st.lists(any_orders(market), min_size=1, max_size=3))
    if draw(st.integers(0, 9)) == 0:
        orders.insert(draw(st.integers(0, len(orders))), draw(ODD_VALUES | st.text(max_size=3)))
    return message(draw, orders, ascii_only=draw(st.booleans())), market, in_grammar(orders)


@FUZZ
@given(any_messages())
def test_invalid_values_never_disagree(case: tuple[bytes, MarketSpec, bool]) -> None:
    payload, market, grammar = case
    read = agree(payload, market)
    if grammar:  # exact: read natively if and only if Python decodes it without a reject
        accepted = all(isinstance(item, OrderCommand) for item in decode_orders(payload, market))
        assert read == accepted, (payload, decode_orders(payload, market))


@FUZZ
@given(st.binary(max_size=200), st.sampled_from(MARKETS))
def test_arbitrary_bytes(payload: bytes, market: MarketSpec) -> None:
    agree(payload, market)


# ---------------------------------------------------------------------------------------------
# Named edge cases
# ---------------------------------------------------------------------------------------------


def new(price: str = "100.25", qty: str = "1.5", **extra: Any) -> str:
    return json.dumps({"op": "new", "id": "a1", "side": "buy", "price": price, "qty": qty, **extra})


NEW = new()
# (name, payload, read natively on the default market (tick 0.01, lot 0.001)?)
EDGE_CASES: list[tuple[str, bytes | str, bool]] = [
    ("plain new", NEW, True),
    ("misaligned price", new(price="100.255"), False),
    ("misaligned price with zeros", new(price="100.250000"), True),
    ("qty 1.230 at lot 0.001", new(qty="1.230"), True),
    ("qty 1.2301 at lot 0.001", new(qty="1.2301"), False),
    ("price 0", new(price="0"), False),
    ("price 0.00", new(price="0.00"), False),
    ("qty 0.0001", new(qty="0.0001"), False),
    ("price 00.10", new(price="00.10"), True),
    ("leading zeros", new(price="000000100.25", qty="0001"), True),
    ("30 whole digits", new(price="0" * 27 + "100"), True),
    ("31 whole digits", new(price="0" * 28 + "100"), False),
    ("30 fraction digits", new(price="100." + "0" * 30), True),
    ("31 fraction digits", new(price="100." + "0" * 31), False),
    ("max price", new(price=f"{MAX_PRICE // 100}.{MAX_PRICE % 100:02d}"), True),
    ("max price + 1 tick", new(price=f"{(MAX_PRICE + 1) // 100}.{(MAX_PRICE + 1) % 100:02d}"), False),
    ("max qty", new(qty=f"{MAX_QTY // 1000}.{MAX_QTY % 1000:03d}"), True),
    ("max qty + 1 lot", new(qty=f"{(MAX_QTY + 1) // 1000}.{(MAX_QTY + 1) % 1000:03d}"), False),
    ("30 nines", new(price="9" * 30), False),
    ("beyond 64 bits", new(price="184467440737095516.16"), False),
    ("trailing point", new(price="100."), False),
    ("leading point", new(price=".5"), False),
    ("sign", new(price="-1"), False),
    ("plus sign", new(price="+1"), False),
    ("exponent", new(price="1e2"), False),
    ("space in amount", new(price=" 100"), False),
    ("number price", new().replace('"100.25"', "100.25"), False),
    ("number qty", new().replace('"1.5"', "1"), False),
    ("escape in value", new().replace('"100.25"', '"100.2\\u0035"'), False),
    ("escape in key", new().replace('"op"', '"\\u006fp"'), False),
    ("escaped quote in id", new().replace('"a1"', '"a\\"1"'), False),
    ("escaped slash in id", new().replace('"a1"', '"a\\/1"'), False),
    ("duplicate key", new()[:-1] + ', "qty": "2"}', False),
    ("duplicate op", '{"op":"cancel","op":"cancel","id":"x"}', False),
    ("null tif", new(tif=None), False),
    ("null id on cancel_all", '{"op":"cancel_all","id":null}', False),
    ("null price", new().replace('"100.25"', "null"), False),
    ("nested value", new(stp=["none"]), False),
    ("empty array", "[]", False),
    ("empty array with space", "[ ]", False),
    ("trailing comma", f"[{NEW},]", False),
    ("leading comma", f"[,{NEW}]", False),
    ("trailing bytes", NEW + "x", False),
    ("trailing whitespace", "\r\n " + NEW + " \t\n", True),
    ("two objects", NEW + NEW, False),
    ("array then bytes", f"[{NEW}]]", False),
    ("truncated", NEW[:-1], False),
    ("truncated array", f"[{NEW}", False),
    ("only whitespace", "  ", False),
    ("empty payload", "", False),
    ("top-level string", '"x"', False),
    ("top-level null", "null", False),
    ("nested array", f"[[{NEW}]]", False),
    ("array item not an object", f"[{NEW},1]", False),
    ("empty object", "{}", False),
    ("non-UTF8 byte in id", b'{"op":"cancel","id":"a\xff"}', False),
    ("non-ASCII id", '{"op":"cancel","id":"\u00e9"}'.encode(), False),
    ("BOM", "\ufeff" + NEW, False),
    ("form feed", NEW.replace(", ", ",\f"), False),
    ("NaN", new().replace('"100.25"', "NaN"), False),
    ("market order", new(type="market").replace('"price": "100.25", ', ""), True),
    ("market order with price", new(type="market"), False),
    ("limit order without price", json.dumps({"op": "new", "id": "m", "side": "sell", "qty": "2"}), False),
    ("new without side", json.dumps({"op": "new", "id": "m", "price": "1", "qty": "2"}), False),
    ("new without qty", json.dumps({"op": "new", "id": "m", "side": "buy", "price": "1"}), False),
    ("new without id", json.dumps({"op": "new", "side": "buy", "price": "1", "qty": "2"}), False),
    ("no op", json.dumps({"id": "m", "side": "buy", "price": "1", "qty": "2"}), False),
    ("all options", new(type="limit", tif="ioc", stp="cancel_both", post_only=True), True),
    ("post_only false", new(post_only=False), True),
    ("post_only string", new(post_only="true"), False),
    ("post_only number", new(post_only=1), False),
    ("post_only truncated", new().replace("}", ', "post_only": tru}'), False),
    ("upper-case enum", new(tif="GTC"), False),
    ("unknown op", '{"op":"modify","id":"x"}', False),
    ("amend price", '{"op":"amend","id":"x","price":"99.5"}', True),
    ("amend qty", '{"op":"amend","id":"x","qty":"3"}', True),
    ("amend both", '{"op":"amend","id":"x","qty":"3","price":"1"}', True),
    ("amend with neither", '{"op":"amend","id":"x"}', False),
    ("amend with side", '{"op":"amend","id":"x","qty":"3","side":"buy"}', False),
    ("cancel", '{"op":"cancel","id":"x"}', True),
    ("cancel without id", '{"op":"cancel"}', False),
    ("cancel with price", '{"op":"cancel","id":"x","price":"1"}', False),
    ("cancel_all with id", '{"op":"cancel_all","id":"ca-1"}', True),
    ("cancel_all without id", '{"op":"cancel_all"}', True),
    ("cancel_all with empty id", '{"op":"cancel_all","id":""}', False),
    ("cancel_all with qty", '{"op":"cancel_all","qty":"1"}', False),
    ("id of 64", json.dumps({"op": "cancel", "id": "x" * 64}), True),
    ("id of 65", json.dumps({"op": "cancel", "id": "x" * 65}), False),
    ("id with a space", json.dumps({"op": "cancel", "id": "a b"}), False),
    ("id with a tab", '{"op":"cancel","id":"a\tb"}', False),
    ("id of every printable", json.dumps({"op": "cancel", "id": ID_CHARS[:64]}), True),
    ("market field (valid in Python)", new(market="BTC-USD"), False),
    ("unknown field", new(foo="x"), False),
    ("10,000 orders", json.dumps([{"op": "cancel_all"}] * MAX_ORDERS_PER_MESSAGE), True),
    ("10,001 orders", json.dumps([{"op": "cancel_all"}] * (MAX_ORDERS_PER_MESSAGE + 1)), False),
    ("whitespace everywhere", ' \n[ \t{ "op" :\r"cancel" , "id"\n:\t"x" } , {"op":"cancel_all"}\n] ', True),
]


@pytest.mark.parametrize(("name", "payload", "native"), EDGE_CASES, ids=[case[0] for case in EDGE_CASES])
def test_edge_cases(name: str, payload: bytes | str, native: bool) -> None:
    data = payload.encode() if isinstance(payload, str) else payload
    assert agree(data, DEFAULT) == native
    for market in MARKETS[1:]:
        agree(data, market)


def order_flow(n: int, seed: int, tag: str) -> list[dict[str, Any]]:
    """bench/e2e_bench.py's order flow: new limit orders around 100.00."""
    rng = random.Random(seed)
    flow = []
    for i in range(n):
        side = "buy" if rng.random() < 0.5 else "sell"
        offset = rng.randint(-20, 60)
        price = 10000 - offset if side == "buy" else 10000 + offset
        flow.append({"op": "new", "id": f"{tag}-{i}", "side": side, "price": f"{price / 100:.2f}",
                     "qty": f"{rng.randint(1, 1000) / 1000:.3f}"})
    return flow


def test_benchmark_and_compact_forms_are_read_natively() -> None:
    flow = order_flow(500, 1, "raw")
    for payload in (json.dumps(flow).encode(), dumps(flow), json.dumps(flow[0]).encode()):
        assert agree(payload, DEFAULT)
    commands, ids = parse(json.dumps(flow).encode(), DEFAULT)  # type: ignore[misc]
    assert ids == [order["id"] for order in flow]
    assert commands["price"].tolist() == [round(float(order["price"]) * 100) for order in flow]


def test_buffers_scales_and_payload_limit() -> None:
    payload = '{"op":"cancel","id":"x"}'
    for buffer in (payload.encode(), bytearray(payload.encode()), memoryview(payload.encode())):
        got = parse_orders(buffer, 2, 1, 3, 1)
        assert got is not None and got[1] == ["x"]
    # Steps MarketSpec cannot have, or whose units do not fit 64 bits: not read natively.
    for scale in ((19, 1), (-1, 1), (2, 0), (2, 2**64)):
        assert parse_orders(payload.encode(), *scale, 3, 1) is None
        assert parse_orders(payload.encode(), 2, 1, *scale) is None
    # decode_orders refuses payloads beyond max_payload (1 MiB by default): so does the reader.
    big = (" " * (1 << 20) + payload).encode()
    assert parse(big, DEFAULT) is None
    assert parse_orders(big, 2, 1, 3, 1, max_payload=2 << 20) is not None
    assert MAX_ORDERS_PER_MESSAGE == 10_000  # src/fastbook/wire/_orderparse.pyx MAX_ORDERS
