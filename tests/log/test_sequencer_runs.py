"""The sequencer's run path (a message read into rows, runs of news in one engine call) against its
per-command path: for random multi-client flows, every on_messages call publishes exactly the same
messages, byte for byte, and the nodes end in the same state (version, hash, maps, dedupe window,
journal). Both engines."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from fastbook.log.journal import JournalError
from fastbook.log.sequencer import SequencerConfig, SequencerNode
from fastbook.wire.market import MarketSpec
from fastbook.wire.topics import Topics

CLIENTS = ["a", "b", "c", "d"]


pytestmark = pytest.mark.usefixtures("backend")


def random_order(rng: random.Random, i: int, recent: list[str], spec: MarketSpec) -> dict[str, Any]:
    roll = rng.random()
    if roll < 0.08 and recent:
        return {"op": "cancel", "id": rng.choice(recent)}
    if roll < 0.13 and recent:
        return {"op": "amend", "id": rng.choice(recent), "qty": spec.lots_to_qty(rng.randint(1, 6))}
    if roll < 0.15:
        return {"op": "cancel_all"}
    if roll < 0.17:  # invalid: the whole message goes the per-command path (and is rejected in part)
        return {"op": "new", "id": f"x{i}", "side": "buy", "price": "1.001", "qty": "1"}
    order: dict[str, Any] = {
        "op": "new",
        # few distinct ids: they repeat inside a message, in the dedupe window and while open
        "id": f"o{rng.randint(0, 30)}" if rng.random() < 0.3 else f"n{i}",
        "side": rng.choice(["buy", "sell"]),
        "price": spec.ticks_to_price(rng.randint(95, 105)),
        "qty": spec.lots_to_qty(rng.randint(1, 5)),
    }
    kind = rng.random()
    if kind < 0.08:
        order.update(type="market", tif=rng.choice(["ioc", "fok"]))
        del order["price"]
    elif kind < 0.16:
        order["tif"] = rng.choice(["ioc", "fok"])
    elif kind < 0.26:
        order["post_only"] = True  # some would take: rejected by the book inside a run
    elif kind < 0.34:
        order["stp"] = rng.choice(["cancel_taker", "cancel_maker", "cancel_both"])
    return order


def node_state(node: SequencerNode) -> tuple[Any, ...]:
    r = node.replica
    return (
        node.version,
        node.state_hash,
        r.book.snapshot(),  # type: ignore[attr-defined]
        r.owners,
        r.clients,
        r.orders,
        {owner: ids for owner, ids in r.by_owner.items() if ids},
        r.next_order_id,
        node.dedupe.snapshot(),
        node.journal.read(1, None, limit=10**6),
        node.last_trade,
    )


@pytest.mark.parametrize(
    ("spec_text", "window", "seed"),
    [
        ("BTC-USD", 1, 1),
        ("BTC-USD", 1_000_000, 2),
        ("ETH-USD:tick=0.05:lot=1", 3, 3),
        ("X:tick=1:lot=0.5", 50, 4),
    ],
)
def test_run_path_publishes_what_the_per_command_path_publishes(
    tmp_path: Path, spec_text: str, window: int, seed: int
) -> None:
    spec = MarketSpec.parse(spec_text)
    topics = Topics(spec.name)
    slow = SequencerNode(SequencerConfig(spec, tmp_path / "slow", dedupe_window=window, snapshot_every=97))
    slow.read_orders = None
    fast = SequencerNode(SequencerConfig(spec, tmp_path / "fast", dedupe_window=window, snapshot_every=97))
    run_lengths: list[int] = []
    execute_news = fast.executor.execute_news

    def counting(client: str, rows: Any, coids: Any, batch: Any) -> None:
        run_lengths.append(len(rows))
        execute_news(client, rows, coids, batch)

    fast.executor.execute_news = counting  # type: ignore[method-assign]
    rng = random.Random(seed)
    recent: dict[str, list[str]] = {c: [] for c in CLIENTS}
    i = 0
    for step in range(150):
        messages = []
        for _ in range(rng.choice([1, 1, 2, 3])):
            client = rng.choice(CLIENTS)
            orders = [random_order(rng, i + k, recent[client], spec) for k in range(rng.randint(1, 12))]
            i += len(orders)
            recent[client] = ([o["id"] for o in orders if o["op"] == "new"] + recent[client])[:12]
            body = orders[0] if len(orders) == 1 and rng.random() < 0.5 else orders
            messages.append((topics.orders(client), json.dumps(body).encode()))
        now = float(step)
        slow.clock = fast.clock = lambda now=now: now  # type: ignore[misc]
        assert fast.on_messages(messages) == slow.on_messages(messages), f"step {step}"
    assert node_state(fast) == node_state(slow)
    assert fast.version > 500
    # The run path did most of the work (else this test compares the per-command path to itself).
    assert sum(run_lengths) > 0.5 * fast.version
    assert max(run_lengths) >= 5
    slow.close()
    fast.close()


def test_a_new_client_whose_whole_run_is_refused_gets_no_owner(tmp_path: Path) -> None:
    spec = MarketSpec.parse("BTC-USD")
    topics = Topics(spec.name)
    nodes = []
    for name in ("slow", "fast"):
        node = SequencerNode(SequencerConfig(spec, tmp_path / name))
        if name == "slow":
            node.read_orders = None
        nodes.append(node)
    resting = {"op": "new", "id": "m1", "side": "sell", "price": "100", "qty": "1"}
    takes = [{"op": "new", "id": f"e{i}", "side": "buy", "price": "100", "qty": "1", "post_only": True}
             for i in range(3)]  # fmt: skip
    joins = [{"op": "new", "id": "f1", "side": "buy", "price": "99", "qty": "1"}]
    outputs = []
    for node in nodes:
        out = node.on_messages([(topics.orders("maker"), json.dumps(resting).encode())])
        out += node.on_messages([(topics.orders("eve"), json.dumps(takes).encode())])
        out += node.on_messages([(topics.orders("fay"), json.dumps(joins).encode())])
        outputs.append(out)
        assert node.replica.owners == {"maker": 1, "fay": 2}
        assert node.version == 2
    assert outputs[0] == outputs[1]
    reports = [o for o in outputs[1] if o.topic == topics.reports("eve")]
    assert [r["code"] for r in json.loads(reports[0].payload)] == ["POST_ONLY_WOULD_TAKE"] * 3


def test_a_failed_commit_answers_the_same_on_both_paths(tmp_path: Path) -> None:
    """A batch whose journal commit fails publishes only rejections: the ones that were rejections
    anyway, in order, then JOURNAL_UNAVAILABLE for every command that had been sequenced (a run's
    news one by one), the same bytes on both paths; and the durable book again, now saying the
    journal is unavailable (its `health`)."""
    spec = MarketSpec.parse("BTC-USD")
    topics = Topics(spec.name)
    nodes = []
    for name in ("slow", "fast"):
        node = SequencerNode(SequencerConfig(spec, tmp_path / name, dedupe_window=1000))
        if name == "slow":
            node.read_orders = None
        nodes.append(node)
    slow, fast = nodes
    rng = random.Random(5)
    recent: dict[str, list[str]] = {c: [] for c in CLIENTS}

    def step(i: int) -> list[tuple[str, bytes]]:
        messages = []
        for client in CLIENTS:
            orders = [random_order(rng, 100 * i + k, recent[client], spec) for k in range(12)]
            recent[client] = ([o["id"] for o in orders if o["op"] == "new"] + recent[client])[:12]
            messages.append((topics.orders(client), json.dumps(orders).encode()))
        return messages

    for i in range(5):
        messages = step(i)
        assert fast.on_messages(messages) == slow.on_messages(messages)
    version = fast.version
    messages = step(5)

    def broken(records: Any) -> None:
        raise JournalError("disk full")

    for node in nodes:
        node.journal.append = broken  # type: ignore[method-assign]
        node.wall_clock = lambda: 1_764_000_000.0  # (the health's "since")
    out = fast.on_messages(messages)
    assert out == slow.on_messages(messages)
    # Rejections, and the durable book again, now saying the journal is unavailable.
    (book,) = [json.loads(o.payload) for o in out if o.topic == topics.book]
    assert book["version"] == version and book["health"]["journal"]["error"] == "disk full"
    out = [o for o in out if o.topic != topics.book]
    assert {o.topic for o in out} <= {topics.reports(c) for c in CLIENTS}
    reports = [r for o in out for r in json.loads(o.payload)]
    assert {r["type"] for r in reports} == {"rejected"}
    codes = [r["code"] for r in reports]
    assert "JOURNAL_UNAVAILABLE" in codes and len(set(codes)) > 1
    assert fast.failed == slow.failed == "disk full"
    assert version > 50
    slow.close()
    fast.close()


def test_small_message_fast_paths_publish_what_the_numpy_paths_publish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lone orders and messages of a few take plain-Python paths where numpy costs more than the
    work (intake's runs of news, _FEW; the records of a run with every news accepted, NUMPY_RUN;
    the records and anonymous log of 1-2 entries, SCALAR_RUN). The same flow through the numpy
    paths (each limit 0) publishes the same bytes and leaves the same state."""
    import fastbook.log.executor as executor_module
    import fastbook.log.intake as intake_module
    import fastbook.wire.log as wire_log

    spec = MarketSpec.parse("BTC-USD")
    topics = Topics(spec.name)
    fast = SequencerNode(SequencerConfig(spec, tmp_path / "fast", dedupe_window=40, snapshot_every=97))
    general = SequencerNode(SequencerConfig(spec, tmp_path / "general", dedupe_window=40, snapshot_every=97))
    rng = random.Random(11)
    recent: dict[str, list[str]] = {c: [] for c in CLIENTS}
    i = 0
    for step in range(300):
        client = rng.choice(CLIENTS)
        orders = [random_order(rng, i + k, recent[client], spec) for k in range(rng.choice([1, 1, 1, 2, 3]))]
        i += len(orders)
        recent[client] = ([o["id"] for o in orders if o["op"] == "new"] + recent[client])[:12]
        body = orders[0] if len(orders) == 1 else orders
        messages = [(topics.orders(client), json.dumps(body).encode())]
        fast.clock = general.clock = lambda now=float(step): now  # type: ignore[misc]
        out = fast.on_messages(messages)
        with monkeypatch.context() as patch:
            patch.setattr(intake_module, "_FEW", 0)
            patch.setattr(executor_module, "NUMPY_RUN", 0)
            patch.setattr(wire_log, "SCALAR_RUN", 0)
            assert out == general.on_messages(messages), f"step {step}"
    assert node_state(fast) == node_state(general)
    assert fast.version > 200
    fast.close()
    general.close()
