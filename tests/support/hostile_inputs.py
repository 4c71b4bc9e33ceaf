"""Hostile order payloads shared by the decoder and sequencer fuzz tests (issue 4, "Bad input").

Each case is (name, payload, expected reject codes in message order) for the BTC-USD market (tick 0.01,
lot 0.001). The codes are the ones docs/wire.md promises; a whole-message problem is one reject.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

MAX_PAYLOAD = 1 << 20

# docs/wire.md, "Reject codes": what the decoder (not the engine) may answer.
DECODER_CODES = frozenset(
    {
        "PAYLOAD_TOO_LARGE",
        "INVALID_UTF8",
        "MALFORMED_JSON",
        "INVALID_MESSAGE",
        "MISSING_FIELD",
        "UNKNOWN_FIELD",
        "INVALID_FIELD",
        "INVALID_OP",
        "INVALID_PRICE",
        "INVALID_QTY",
        "INVALID_AMEND",
        "UNKNOWN_MARKET",
    }
)

VALID_NEW: dict[str, Any] = {"op": "new", "id": "ok-1", "side": "buy", "price": "100.25", "qty": "1.5"}


def order(**fields: Any) -> bytes:
    """A new order with some fields replaced (a value of ... removes the field)."""
    body = {**VALID_NEW, **fields}
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


def _nested(depth: int, open_: str = "[", close: str = "]") -> bytes:
    return (open_ * depth + close * depth).encode()


def _mib_object() -> bytes:
    """A 1 MiB payload (exactly max_payload) that is one order with a huge id."""
    head, tail = b'{"op":"cancel","id":"', b'"}'
    return head + b"x" * (MAX_PAYLOAD - len(head) - len(tail)) + tail


def _mib_whitespace() -> bytes:
    """A 1 MiB payload that is a bad order padded with whitespace up to exactly max_payload."""
    body = b'{"op":"cancel"}'
    return body + b" " * (MAX_PAYLOAD - len(body))


WRONG_TYPES: list[Any] = [None, True, False, 0, -1, 1.5, -0.0, 10**30, [], {}, ["buy"], {"v": 1}, ""]

HOSTILE_ORDERS: list[tuple[str, bytes, list[str]]] = [
    # -- encoding
    ("empty payload", b"", ["MALFORMED_JSON"]),
    ("whitespace only", b"  \n\t", ["MALFORMED_JSON"]),
    ("lone 0xff", b"\xff", ["INVALID_UTF8"]),
    ("invalid continuation", b'{"op":"cancel","id":"\xc3\x28"}', ["INVALID_UTF8"]),
    ("overlong slash", b'{"op":"cancel","id":"\xc0\xaf"}', ["INVALID_UTF8"]),
    ("encoded surrogate", b'{"op":"cancel","id":"\xed\xa0\x80"}', ["INVALID_UTF8"]),
    ("truncated multibyte", b'{"op":"cancel","id":"\xe2\x82', ["INVALID_UTF8"]),
    ("latin-1 id", '{"op":"cancel","id":"caf\xe9"}'.encode("latin-1"), ["INVALID_UTF8"]),
    ("UTF-8 BOM", b"\xef\xbb\xbf" + order(), ["MALFORMED_JSON"]),
    ("UTF-16 order", order().decode().encode("utf-16"), ["INVALID_UTF8"]),
    ("NUL bytes", b"\x00" * 16, ["MALFORMED_JSON"]),
    # -- JSON structure
    ("not JSON", b"op=new&side=buy", ["MALFORMED_JSON"]),
    ("truncated object", order()[:-1], ["MALFORMED_JSON"]),
    ("trailing garbage", order() + b"x", ["MALFORMED_JSON"]),
    ("two objects", order() + order(), ["MALFORMED_JSON"]),
    ("single quotes", b"{'op':'cancel','id':'a'}", ["MALFORMED_JSON"]),
    ("trailing comma", b'{"op":"cancel","id":"a",}', ["MALFORMED_JSON"]),
    ("comment", b'{"op":"cancel","id":"a"} // hi', ["MALFORMED_JSON"]),
    ("100k nested arrays", _nested(100_000), ["MALFORMED_JSON"]),
    ("100k nested objects", ('{"a":' * 100_000 + "1" + "}" * 100_000).encode(), ["MALFORMED_JSON"]),
    ("deep array in a field", b'{"op":"cancel","id":"a","x":' + _nested(50_000) + b"}", ["MALFORMED_JSON"]),
    ("1 MiB of [", b"[" * MAX_PAYLOAD, ["MALFORMED_JSON"]),
    ("1 MiB + 1 byte", b" " * (MAX_PAYLOAD + 1), ["PAYLOAD_TOO_LARGE"]),
    ("1 MiB order", _mib_object(), ["INVALID_FIELD"]),
    ("1 MiB whitespace-padded", _mib_whitespace(), ["MISSING_FIELD"]),
    ("NaN value", b'{"op":"cancel","id":"a","market":NaN}', ["MALFORMED_JSON"]),
    ("Infinity value", b'{"op":"new","id":"a","side":"buy","price":Infinity,"qty":"1"}', ["MALFORMED_JSON"]),
    (
        "-Infinity value",
        b'{"op":"new","id":"a","side":"buy","price":"1","qty":-Infinity}',
        ["MALFORMED_JSON"],
    ),
    ("NaN in an unknown field", b'{"op":"cancel","id":"a","x":[1,NaN]}', ["MALFORMED_JSON"]),
    ("integer of 5000 digits", b'{"op":"cancel","id":"a","x":' + b"9" * 5000 + b"}", ["MALFORMED_JSON"]),
    ("duplicate key, same value", b'{"op":"cancel","id":"a","id":"a"}', ["MALFORMED_JSON"]),
    ("duplicate key, other value", b'{"op":"cancel","op":"new","id":"a"}', ["MALFORMED_JSON"]),
    ("duplicate key nested", b'{"op":"cancel","id":"a","x":{"k":1,"k":2}}', ["MALFORMED_JSON"]),
    # -- message shape
    ("null", b"null", ["INVALID_MESSAGE"]),
    ("true", b"true", ["INVALID_MESSAGE"]),
    ("number", b"42", ["INVALID_MESSAGE"]),
    ("string", b'"buy 1 @ 100"', ["INVALID_MESSAGE"]),
    ("empty array", b"[]", ["INVALID_MESSAGE"]),
    ("10,001 orders", json.dumps([{"op": "cancel", "id": "a"}] * 10_001).encode(), ["INVALID_MESSAGE"]),
    ("array of scalars", b'[1,"x",null]', ["INVALID_MESSAGE"] * 3),
    ("nested array", b"[[" + order() + b"]]", ["INVALID_MESSAGE"]),
    ("empty object", b"{}", ["MISSING_FIELD"]),
    # -- op
    ("op missing", order(op=...), ["MISSING_FIELD"]),
    ("op null", order(op=None), ["MISSING_FIELD"]),
    ("op unknown", order(op="buy"), ["INVALID_OP"]),
    ("op upper case", order(op="NEW"), ["INVALID_OP"]),
    ("op number", order(op=1), ["INVALID_OP"]),
    ("op array", order(op=["new"]), ["INVALID_OP"]),
    # -- fields
    ("unknown field", order(extra=1), ["UNKNOWN_FIELD"]),
    ("unknown field for cancel", b'{"op":"cancel","id":"a","price":"1"}', ["UNKNOWN_FIELD"]),
    ("unicode unknown field", order(**{"\u043f\u0440\u0438\u0432\u0435\u0442": 1}), ["UNKNOWN_FIELD"]),
    ("lone surrogate field name", b'{"op":"cancel","id":"a","\\ud800":1}', ["UNKNOWN_FIELD"]),
    ("id missing", order(id=...), ["MISSING_FIELD"]),
    ("id null", order(id=None), ["MISSING_FIELD"]),
    ("id empty", order(id=""), ["INVALID_FIELD"]),
    ("id 65 chars", order(id="x" * 65), ["INVALID_FIELD"]),
    ("id with space", order(id="a b"), ["INVALID_FIELD"]),
    ("id with NUL", order(id="a\x00"), ["INVALID_FIELD"]),
    ("id unicode", order(id="\u00f6rder"), ["INVALID_FIELD"]),
    ("id emoji", order(id="\U0001f4b0"), ["INVALID_FIELD"]),
    ("id fullwidth", order(id="\uff41"), ["INVALID_FIELD"]),
    ("id lone surrogate", b'{"op":"cancel","id":"\\udc80"}', ["INVALID_FIELD"]),
    ("id number", order(id=7), ["INVALID_FIELD"]),
    ("id array", order(id=["a"]), ["INVALID_FIELD"]),
    ("cancel_all id number", b'{"op":"cancel_all","id":1}', ["INVALID_FIELD"]),
    ("cancel_all id null", b'{"op":"cancel_all","id":null}', ["INVALID_FIELD"]),
    ("side missing", order(side=...), ["MISSING_FIELD"]),
    ("side null", order(side=None), ["INVALID_FIELD"]),
    ("side upper case", order(side="BUY"), ["INVALID_FIELD"]),
    ("side number", order(side=1), ["INVALID_FIELD"]),
    ("side 1e400", b'{"op":"new","id":"a","side":1e400,"price":"1","qty":"1"}', ["INVALID_FIELD"]),
    ("type unknown", order(type="stop"), ["INVALID_FIELD"]),
    ("tif unknown", order(tif="day"), ["INVALID_FIELD"]),
    ("tif null", order(tif=None), ["INVALID_FIELD"]),
    ("stp unknown", order(stp="yes"), ["INVALID_FIELD"]),
    ("post_only string", order(post_only="true"), ["INVALID_FIELD"]),
    ("post_only 1", order(post_only=1), ["INVALID_FIELD"]),
    ("post_only null", order(post_only=None), ["INVALID_FIELD"]),
    ("market other", order(market="ETH-USD"), ["UNKNOWN_MARKET"]),
    ("market number", order(market=1), ["UNKNOWN_MARKET"]),
    ("market null", order(market=None), ["UNKNOWN_MARKET"]),
    ("market 1e400", b'{"op":"cancel","id":"a","market":1e400}', ["UNKNOWN_MARKET"]),
    # -- amounts
    ("price missing", order(price=...), ["MISSING_FIELD"]),
    ("qty missing", order(qty=...), ["MISSING_FIELD"]),
    ("price JSON number", order(price=100.25), ["INVALID_PRICE"]),
    ("price integer", order(price=100), ["INVALID_PRICE"]),
    ("price huge integer", order(price=10**4000), ["INVALID_PRICE"]),
    ("price 1e400", b'{"op":"new","id":"a","side":"buy","price":1e400,"qty":"1"}', ["INVALID_PRICE"]),
    ("price -0", order(price=-0.0), ["INVALID_PRICE"]),
    ("price '-0'", order(price="-0"), ["INVALID_PRICE"]),
    ("price '0'", order(price="0"), ["INVALID_PRICE"]),
    ("price '0.00'", order(price="0.00"), ["INVALID_PRICE"]),
    ("price negative", order(price="-1"), ["INVALID_PRICE"]),
    ("price plus sign", order(price="+1"), ["INVALID_PRICE"]),
    ("price 'NaN'", order(price="NaN"), ["INVALID_PRICE"]),
    ("price 'Infinity'", order(price="Infinity"), ["INVALID_PRICE"]),
    ("price '1e400'", order(price="1e400"), ["INVALID_PRICE"]),
    ("price '1e2'", order(price="1e2"), ["INVALID_PRICE"]),
    ("price misaligned", order(price="100.255"), ["INVALID_PRICE"]),
    ("price too large", order(price="9" * 30), ["INVALID_PRICE"]),
    ("price 31 digits", order(price="1" * 31), ["INVALID_PRICE"]),
    ("price spaces", order(price=" 1"), ["INVALID_PRICE"]),
    ("price comma", order(price="1,5"), ["INVALID_PRICE"]),
    ("price fullwidth digits", order(price="\uff11\uff10\uff10"), ["INVALID_PRICE"]),
    ("price arabic digits", order(price="\u0661\u0660\u0660"), ["INVALID_PRICE"]),
    ("price underscore", order(price="1_000"), ["INVALID_PRICE"]),
    ("price '.5'", order(price=".5"), ["INVALID_PRICE"]),
    ("price '5.'", order(price="5."), ["INVALID_PRICE"]),
    ("price hex", order(price="0x10"), ["INVALID_PRICE"]),
    ("price 1 MiB-ish digits", order(price="1" * 500_000), ["INVALID_PRICE"]),
    ("qty null", order(qty=None), ["INVALID_QTY"]),
    ("qty zero", order(qty="0.000"), ["INVALID_QTY"]),
    ("qty misaligned", order(qty="0.0001"), ["INVALID_QTY"]),
    ("qty above 2^32-1 lots", order(qty="4294967.296"), ["INVALID_QTY"]),
    ("qty 1e400", b'{"op":"new","id":"a","side":"buy","price":"1","qty":1e400}', ["INVALID_QTY"]),
    ("qty array", order(qty=["1"]), ["INVALID_QTY"]),
    ("market order with price", order(type="market"), ["INVALID_PRICE"]),
    ("amend without price or qty", b'{"op":"amend","id":"a"}', ["INVALID_AMEND"]),
    ("amend qty zero", b'{"op":"amend","id":"a","qty":"0"}', ["INVALID_QTY"]),
    ("amend side", b'{"op":"amend","id":"a","qty":"1","side":"buy"}', ["UNKNOWN_FIELD"]),
    # -- bulk: every invalid item answered on its own, in order
    (
        "mixed invalid array",
        json.dumps([{"op": "x"}, 5, {"op": "cancel"}, {"op": "new", "id": "a"}, {}]).encode(),
        ["INVALID_OP", "INVALID_MESSAGE", "MISSING_FIELD", "MISSING_FIELD", "MISSING_FIELD"],
    ),
]


# ---------------------------------------------------------------------------------------------
# Hypothesis strategies
# ---------------------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)

FIELD_NAMES = ["op", "id", "side", "type", "price", "qty", "tif", "post_only", "stp", "market"]
order_like = st.dictionaries(
    st.sampled_from(FIELD_NAMES) | st.text(max_size=6),
    json_values | st.sampled_from(["new", "cancel", "amend", "cancel_all", "buy", "sell", "1", "100.25"]),
    max_size=8,
)


def not_plain_decimal(text: str) -> bool:
    """True if text is certainly not a valid amount: outside [0-9.] or not digits[.digits]."""
    if not text or any(c not in "0123456789." for c in text):
        return True
    whole, _, frac = text.partition(".")
    return not whole or (text.count(".") == 1 and not frac) or text.count(".") > 1


bad_amounts = st.one_of(
    json_values.filter(lambda v: not isinstance(v, str)),
    st.text(max_size=40).filter(not_plain_decimal),
    st.sampled_from(["0", "0.00", "100.001", "1" * 31, "9" * 30, "-1", "1e3", "NaN"]),
)
bad_ids = st.one_of(
    json_values.filter(lambda v: v is not None and not isinstance(v, str)),
    st.just(""),
    st.text(min_size=65, max_size=80, alphabet="abc"),
    st.text(min_size=1, max_size=20).filter(lambda s: any(not "!" <= c <= "~" for c in s)),
)


def bad_enum(valid: set[str]) -> st.SearchStrategy[Any]:
    return json_values.filter(lambda v: not (isinstance(v, str) and v in valid))


# field -> (strategy of invalid values, the reject code for a new order carrying one)
FIELD_MUTATIONS: dict[str, tuple[st.SearchStrategy[Any], set[str]]] = {
    "op": (bad_enum({"new", "cancel", "amend", "cancel_all"}), {"INVALID_OP", "MISSING_FIELD"}),
    "id": (bad_ids, {"INVALID_FIELD"}),
    "side": (bad_enum({"buy", "sell"}), {"INVALID_FIELD"}),
    "type": (bad_enum({"limit", "market"}), {"INVALID_FIELD"}),
    "tif": (bad_enum({"gtc", "ioc", "fok"}), {"INVALID_FIELD"}),
    "stp": (bad_enum({"none", "cancel_taker", "cancel_maker", "cancel_both"}), {"INVALID_FIELD"}),
    "post_only": (json_values.filter(lambda v: not isinstance(v, bool)), {"INVALID_FIELD"}),
    "market": (json_values.filter(lambda v: not (isinstance(v, str) and v == "BTC-USD")), {"UNKNOWN_MARKET"}),
    "price": (bad_amounts, {"INVALID_PRICE"}),
    "qty": (bad_amounts, {"INVALID_QTY"}),
}
