"""Hostile order payloads fed straight into a SequencerNode (tmp data dir, no broker), on both engines.

For every hostile message: exactly one publish, on reports/<client>, holding one "rejected" report
(reason code + message) per command; nothing sequenced (no log, book, trades or snapshot message);
version, state hash, engine bytes, journal, id maps and dedupe set unchanged; and the node still
accepts a valid order afterwards.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastbook.engine.types import Reject
from fastbook.log.journal import Journal
from fastbook.log.sequencer import SequencerConfig, SequencerNode
from fastbook.transport.node import Outgoing
from fastbook.wire.fields import CLIENT_ORDER_ID_RE
from fastbook.wire.log import decode_log_message
from fastbook.wire.market import MarketSpec
from fastbook.wire.topics import Topics
from tests.support.hostile_inputs import (
    DECODER_CODES,
    FIELD_MUTATIONS,
    HOSTILE_ORDERS,
    VALID_NEW,
    bad_amounts,
    json_values,
    order_like,
)

SPEC = MarketSpec.parse("BTC-USD")
T = Topics("BTC-USD")
FUZZ = settings(
    deadline=None,
    derandomize=True,
    max_examples=60,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)
REPORT_KEYS = {"type", "id", "op", "code", "message"}
ENGINE_CODES = {reason.name for reason in Reject}


pytestmark = pytest.mark.usefixtures("backend")


def send(node: SequencerNode, client: str, payload: bytes | dict[str, Any] | list[Any]) -> list[Outgoing]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return node.on_messages([(T.orders(client), data)])


def make_node(data_dir: Path, **options: Any) -> SequencerNode:
    """A sequencer with resting orders on both sides, a trade, and used ids."""
    node = SequencerNode(SequencerConfig(SPEC, data_dir, **options))
    send(node, "alice", {"op": "new", "id": "a1", "side": "sell", "price": "100.25", "qty": "1.5"})
    send(node, "bob", {"op": "new", "id": "b1", "side": "buy", "price": "100.25", "qty": "0.5"})
    send(node, "bob", {"op": "new", "id": "b2", "side": "buy", "price": "99", "qty": "1"})
    send(
        node,
        "carol",
        {"op": "new", "id": "c1", "side": "sell", "price": "101", "qty": "2", "post_only": True},
    )
    assert node.version == 4
    return node


@pytest.fixture
def node(tmp_path: Path) -> Iterator[SequencerNode]:
    node = make_node(tmp_path / "d")
    yield node
    node.close()


def state(node: SequencerNode) -> tuple[Any, ...]:
    """Everything a rejected command must leave alone."""
    replica = node.replica
    return (
        node.version,
        node.state_hash,
        replica.book.state_hash(),  # type: ignore[attr-defined]
        replica.book.snapshot(),  # type: ignore[attr-defined]
        node.journal.last_seq,
        (node.data_dir / Journal.FILE_NAME).stat().st_size,
        replica.next_order_id,
        dict(replica.owners),
        dict(replica.orders),
        copy.deepcopy(node.seen),
        sorted(p.name for p in (node.data_dir / "snapshots").iterdir()),
        node.last_trade,
        node.failed,
    )


def rejects_only(out: list[Outgoing], client: str) -> list[dict[str, Any]]:
    """The one publish of a fully rejected message: reports/<client>, every report a clear reject."""
    assert [o.topic for o in out] == [T.reports(client)], [o.topic for o in out]
    assert not out[0].retain
    reports = json.loads(out[0].payload)
    assert isinstance(reports, list) and reports
    for report in reports:
        assert set(report) == REPORT_KEYS and report["type"] == "rejected", report
        assert report["code"] in DECODER_CODES | ENGINE_CODES | {
            "INVALID_CLIENT_ID",
            "UNKNOWN_ORDER",
            "DUPLICATE_CLIENT_ORDER_ID",
        }, report
        assert isinstance(report["message"], str) and report["message"].strip(), report
        assert report["id"] is None or CLIENT_ORDER_ID_RE.fullmatch(report["id"]), report
    return reports


def still_works(node: SequencerNode, client: str, coid: str = "after-1") -> None:
    version = node.version
    out = send(node, client, {"op": "new", "id": coid, "side": "buy", "price": "50", "qty": "1"})
    assert [o.topic for o in out] == [T.log, T.reports(client), T.book]
    (entry,) = decode_log_message(out[0].payload).entries
    # the public log names nobody; the journal has the entry with its client order id
    assert (entry.seq, entry.client_id, entry.client_order_id) == (version + 1, None, None)
    assert node.replica.clients[entry.owner] == client
    assert node.journal.entries(version + 1) == [entry._replace(client_id=client, client_order_id=coid)]
    assert json.loads(out[1].payload)[0]["type"] == "accepted"
    assert node.version == version + 1 and node.journal.last_seq == version + 1


@pytest.mark.parametrize(
    ("payload", "codes"), [(p, c) for _, p, c in HOSTILE_ORDERS], ids=[n for n, _, _ in HOSTILE_ORDERS]
)
def test_hostile_payload_is_rejected_without_state_change(
    node: SequencerNode, payload: bytes, codes: list[str]
) -> None:
    before = state(node)
    reports = rejects_only(send(node, "mallory", payload), "mallory")
    assert [r["code"] for r in reports] == codes
    assert state(node) == before
    still_works(node, "mallory")


@pytest.mark.parametrize("name", ["op", "side", "type", "tif", "stp", "market"])
def test_nested_field_value_just_under_the_parse_limit(node: SequencerNode, name: str) -> None:
    """BUG: a field value nested just shallowly enough to parse makes decode_orders raise RecursionError
    when it quotes the value in the reject message (json.dumps in wire.py _enum_field / decode_order),
    so on_messages raises and the runner stops: one message from any client stops the sequencer.
    The depth that trips it depends on the stack depth, so the test scans a range."""
    before = state(node)
    for depth in range(800, 1001):
        body = json.dumps({**VALID_NEW, name: "@"}).replace('"@"', "[" * depth + "]" * depth).encode()
        (report,) = rejects_only(send(node, "mallory", body), "mallory")
        assert report["code"] in {"MALFORMED_JSON", "INVALID_OP", "INVALID_FIELD", "UNKNOWN_MARKET"}
    assert state(node) == before
    still_works(node, "mallory")


ENGINE_LEVEL = [
    (
        "post-only would take",
        "mallory",
        {**VALID_NEW, "side": "buy", "price": "101", "post_only": True},
        "POST_ONLY_WOULD_TAKE",
    ),
    ("post-only on IOC", "mallory", {**VALID_NEW, "tif": "ioc", "post_only": True}, "INVALID_POST_ONLY"),
    (
        "post-only market",
        "mallory",
        {"op": "new", "id": "m", "side": "buy", "type": "market", "qty": "1", "post_only": True},
        "INVALID_POST_ONLY",
    ),
    ("reused client order id", "alice", {**VALID_NEW, "id": "a1"}, "DUPLICATE_CLIENT_ORDER_ID"),
    ("reused id of a filled order", "bob", {**VALID_NEW, "id": "b1"}, "DUPLICATE_CLIENT_ORDER_ID"),
    ("cancel someone else's order", "mallory", {"op": "cancel", "id": "a1"}, "UNKNOWN_ORDER"),
    ("amend someone else's order", "bob", {"op": "amend", "id": "a1", "qty": "0.1"}, "UNKNOWN_ORDER"),
    ("cancel a filled order", "bob", {"op": "cancel", "id": "b1"}, "UNKNOWN_ORDER"),
    ("cancel a never used id", "alice", {"op": "cancel", "id": "nope"}, "UNKNOWN_ORDER"),
    (
        "amend into a post-only cross",
        "carol",
        {"op": "amend", "id": "c1", "price": "99"},
        "POST_ONLY_WOULD_TAKE",
    ),
]


@pytest.mark.parametrize(
    ("client", "body", "code"), [c[1:] for c in ENGINE_LEVEL], ids=[c[0] for c in ENGINE_LEVEL]
)
def test_well_formed_but_refused_command_changes_nothing(
    node: SequencerNode, client: str, body: dict[str, Any], code: str
) -> None:
    before = state(node)
    (report,) = rejects_only(send(node, client, body), client)
    assert report["code"] == code
    assert state(node) == before
    still_works(node, client)


def test_cancel_all_with_nothing_open_is_not_sequenced(node: SequencerNode) -> None:
    before = state(node)
    out = send(node, "mallory", {"op": "cancel_all", "id": "x"})
    assert [o.topic for o in out] == [T.reports("mallory")]
    assert json.loads(out[0].payload) == [{"type": "cancelled_all", "id": "x", "seq": None, "count": 0}]
    assert state(node) == before


BAD_CLIENT_IDS = [
    "",
    "\u00fcber",
    "a" * 65,
    "a b",
    "a\tb",
    "\u202eevil",
    "\U0001f4b0",
    "caf\u00e9",
    "a:b",
    "a$",
    "\ufeffalice",
    "\u0430lice",
]


@pytest.mark.parametrize("client", BAD_CLIENT_IDS)
def test_invalid_client_id_in_topic(node: SequencerNode, client: str) -> None:
    before = state(node)
    (report,) = rejects_only(send(node, client, VALID_NEW), client)
    assert report["code"] == "INVALID_CLIENT_ID"
    assert state(node) == before
    still_works(node, "mallory")


@FUZZ
@given(
    payload=st.binary(max_size=200) | st.builds(lambda d: json.dumps(d).encode(), json_values | order_like)
)
def test_arbitrary_payloads_never_sequence_or_crash(node: SequencerNode, payload: bytes) -> None:
    """Whatever arrives is either rejected cleanly (state untouched) or is a genuine command."""
    before = state(node)
    out = send(node, "fuzz", payload)
    if all(o.topic == T.reports("fuzz") for o in out):
        reports = [r for o in out for r in json.loads(o.payload)]
        if all(r["type"] == "rejected" for r in reports):
            rejects_only(out, "fuzz")
            assert state(node) == before
            return
        assert all(
            r["type"] == "cancelled_all" and r["seq"] is None for r in reports if r["type"] != "rejected"
        )
        assert state(node)[:6] == before[:6]
        return
    # Something was sequenced: then it went through the journal and was published in full.
    assert out[0].topic == T.log and node.journal.last_seq == node.version > before[0]


@FUZZ
@given(st.data())
def test_one_bad_field_rejects_with_its_code(node: SequencerNode, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(FIELD_MUTATIONS)))
    strategy, codes = FIELD_MUTATIONS[name]
    body = {**VALID_NEW, name: data.draw(strategy, label=name)}
    before = state(node)
    (report,) = rejects_only(send(node, "fuzz", body), "fuzz")
    assert report["code"] in codes, (body, report)
    assert state(node) == before


@settings(FUZZ, max_examples=25)
@given(st.lists(st.tuples(st.booleans(), bad_amounts), min_size=1, max_size=12))
def test_mixed_array_applies_exactly_the_valid_orders(
    tmp_path_factory: pytest.TempPathFactory, spec: list[tuple[bool, Any]]
) -> None:
    """A bulk message mixing valid and invalid orders leaves the node exactly where a twin that only
    ever received the valid ones is: same version, same hash, same engine bytes."""
    mixed = make_node(tmp_path_factory.mktemp("mixed"))
    twin = make_node(tmp_path_factory.mktemp("twin"))
    try:
        doc: list[Any] = []
        valid_orders: list[dict[str, Any]] = []
        for i, (valid, junk) in enumerate(spec):
            if valid:
                item = {
                    "op": "new",
                    "id": f"m{i}",
                    "side": "sell" if i % 2 else "buy",
                    "price": f"{99 + i % 4}.25",
                    "qty": "0.5",
                }
                valid_orders.append(item)
            else:
                item = {"op": "new", "id": f"m{i}", "side": "buy", "price": junk, "qty": "1"}
            doc.append(item)
        out = send(mixed, "mix", doc)
        reports = [r for o in out if o.topic == T.reports("mix") for r in json.loads(o.payload)]
        answers = [r for r in reports if r["type"] in ("accepted", "rejected")]
        assert [r["id"] for r in answers] == [item["id"] for item in doc]
        for (valid, _), answer in zip(spec, answers, strict=True):
            assert answer["type"] == ("accepted" if valid else "rejected"), answer
            if not valid:
                assert answer["code"] == "INVALID_PRICE"
        if valid_orders:
            send(twin, "mix", valid_orders)
        assert (mixed.version, mixed.state_hash) == (twin.version, twin.state_hash)
        assert mixed.replica.book.snapshot() == twin.replica.book.snapshot()  # type: ignore[attr-defined]
        assert mixed.journal.read(1) == twin.journal.read(1)
    finally:
        mixed.close()
        twin.close()


def test_hostile_messages_in_one_batch_with_a_valid_one(node: SequencerNode) -> None:
    """Hostile messages sharing an on_messages batch with a valid order: only the valid order is
    sequenced, and each sender gets its own rejects."""
    version = node.version
    batch = [(T.orders("evil"), payload) for _, payload, _ in HOSTILE_ORDERS[:40]]
    batch.insert(17, (T.orders("good"), json.dumps({**VALID_NEW, "id": "g1"}).encode()))
    out = node.on_messages(batch)
    log = [e for o in out if o.topic == T.log for e in decode_log_message(o.payload).entries]
    # the public log names nobody; the journal keeps the names
    assert [(e.seq, e.client_id, e.client_order_id) for e in log] == [(version + 1, None, None)]
    journaled = node.journal.entries(version + 1)
    assert [(e.seq, e.client_id, e.client_order_id) for e in journaled] == [(version + 1, "good", "g1")]
    evil = [r for o in out if o.topic == T.reports("evil") for r in json.loads(o.payload)]
    assert [r["code"] for r in evil] == [code for _, _, codes in HOSTILE_ORDERS[:40] for code in codes]
    assert node.version == version + 1


def test_ten_thousand_invalid_orders_in_one_message(node: SequencerNode) -> None:
    before = state(node)
    reports = rejects_only(send(node, "bulk", [{"op": "new", "id": f"x{i}"} for i in range(10_000)]), "bulk")
    assert len(reports) == 10_000 and {r["code"] for r in reports} == {"MISSING_FIELD"}
    assert [r["id"] for r in reports[:3]] == ["x0", "x1", "x2"]
    assert state(node) == before


def test_smaller_max_payload_is_enforced(tmp_path: Path) -> None:
    node = make_node(tmp_path / "d", max_payload=200)
    try:
        before = state(node)
        big = {**VALID_NEW, "id": "y" * 60, "stp": "none", "tif": "gtc", "type": "limit", "market": "BTC-USD"}
        payload = json.dumps(big).encode() + b" " * 100
        (report,) = rejects_only(send(node, "mallory", payload), "mallory")
        assert report["code"] == "PAYLOAD_TOO_LARGE"
        assert state(node) == before
        still_works(node, "mallory")
    finally:
        node.close()


HOSTILE_REPLAY = [
    b"",
    b"\xff",
    b"[" * 100_000,
    b"null",
    b'{"from":0}',
    b'{"from":NaN}',
    b'{"from":1e400}',
    b'{"from":1,"to":0}',
    b'{"from":"1"}',
    b'{"from":1,"from":1}',
    b'\xef\xbb\xbf{"from":1}',
    b'{"from":1,"evil":1}',
    b'{"from":' + b"9" * 5000 + b"}",
    b" " * (1 << 20),
]


@pytest.mark.parametrize("payload", HOSTILE_REPLAY)
def test_hostile_replay_request_is_ignored(node: SequencerNode, payload: bytes) -> None:
    before = state(node)
    assert node.on_messages([(T.replay_request("mallory"), payload)]) == []
    assert state(node) == before
    (answer,) = node.on_messages([(T.replay_request("mallory"), b'{"from":1,"to":2}')])
    assert answer.topic == T.replay_response("mallory")
    assert [e.seq for e in decode_log_message(answer.payload).entries] == [1, 2]


@pytest.mark.parametrize("requester", ["", "\u00fc", "a" * 65, "a b"])
def test_replay_request_from_invalid_requester_is_ignored(node: SequencerNode, requester: str) -> None:
    before = state(node)
    assert node.on_messages([(T.replay_request(requester), b'{"from":1}')]) == []
    assert state(node) == before


def test_replay_request_far_beyond_the_head(node: SequencerNode) -> None:
    """Huge but well-formed ranges answer with an empty message carrying the head."""
    for body in (b'{"from":' + b"9" * 4000 + b"}", b'{"from":5,"to":' + b"9" * 4000 + b"}"):
        (answer,) = node.on_messages([(T.replay_request("r"), body)])
        message = decode_log_message(answer.payload)
        assert message.entries == [] and message.head == node.version and message.replay


def test_restart_after_hostile_traffic_recovers_the_same_state(tmp_path: Path) -> None:
    """Rejected traffic left nothing in the journal: a restart recovers exactly the accepted state."""
    node = make_node(tmp_path / "d")
    for _, payload, _ in HOSTILE_ORDERS:
        send(node, "mallory", payload)
    expected = (node.version, node.state_hash, node.replica.book.snapshot())  # type: ignore[attr-defined]
    node.close()
    again = SequencerNode(SequencerConfig(SPEC, tmp_path / "d"))
    try:
        assert (again.version, again.state_hash, again.replica.book.snapshot()) == expected  # type: ignore[attr-defined]
        still_works(again, "mallory")
    finally:
        again.close()
