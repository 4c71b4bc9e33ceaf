"""Real processes on real brokers (amqtt via fastbook-broker, and mosquitto + fastbook-sequencer):
concurrent clients, late joiners, crashes of edges and of the sequencer, hostile input."""

from __future__ import annotations

import random
import re
import threading
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from fastbook.edge.client import Edge
from fastbook.log.journal import Journal
from tests.support.brokers import wait_for
from tests.support.cluster import MARKET, Cluster, Traffic, qty

pytestmark = pytest.mark.broker
EDGES = ("edge-a", "edge-b", "edge-c")


@pytest.fixture(params=["amqtt", "mosquitto"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(request.param, tmp_path)
    try:
        yield c
    finally:
        c.stop()


def random_flow(rng: random.Random, client: str, n: int, start: int = 0) -> list[dict[str, Any]]:
    """New limit (gtc/ioc) and market orders around 100.00 that cross often, and cancels of earlier
    orders of the same client (some already filled: those are rejected, which is fine)."""
    orders: list[dict[str, Any]] = []
    ids: list[str] = []
    for i in range(start, start + n):
        roll = rng.random()
        if roll < 0.12 and ids:
            orders.append({"op": "cancel", "id": rng.choice(ids)})
            continue
        side = rng.choice(("buy", "sell"))
        order: dict[str, Any] = {
            "op": "new",
            "id": f"{client}-{i}",
            "side": side,
            "qty": f"{rng.randint(1, 1000) / 1000:.3f}",
        }
        if roll > 0.95:
            order["type"] = "market"
        else:
            order["price"] = f"{100 + rng.randint(-30, 30) / 100:.2f}"
            if roll > 0.85:
                order["tif"] = "ioc"
        ids.append(order["id"])
        orders.append(order)
    return orders


def typed(order: dict[str, Any]) -> str:
    """The same order as a line typed at fastbook-edge's prompt."""
    if order["op"] == "cancel":
        return f"cancel {order['id']}"
    where = "market" if order.get("type") == "market" else f"@ {order['price']}"
    tif = " ioc" if order.get("tif") == "ioc" else ""
    return f"{order['side']} {order['qty']} {where}{tif} id={order['id']}"


def resting_orders(*observers: Edge) -> dict[tuple[str, str], Decimal]:
    """(client, client order id) -> remaining qty of every resting order the observers' replicas
    map: each edge's own client's (the public log is anonymous: an edge names only its own)."""
    out: dict[tuple[str, str], Decimal] = {}
    for observer in observers:

        def read(observer: Edge = observer) -> tuple[dict[tuple[str, str], Decimal], list[Any]]:
            replica = observer.node.follower.replica
            assert replica is not None
            seen = {}
            for owner, orders in replica.by_owner.items():
                for coid, order_id in orders.items():
                    info = replica.book.order(order_id)
                    if info is not None:
                        seen[(replica.clients[owner], coid)] = Decimal(replica.market.lots_to_qty(info[4]))
            return seen, []

        out |= observer.runner.call_with_result(read).result(10)
    return out


def book_levels(observer: Edge) -> dict[tuple[str, Decimal], tuple[Decimal, int]]:
    """(side, price) -> (resting qty, order count) of every level of the observer's book."""

    def read() -> tuple[dict[tuple[str, Decimal], tuple[Decimal, int]], list[Any]]:
        replica = observer.node.follower.replica
        assert replica is not None
        market = replica.market
        bids, asks = replica.book.depth(100_000)  # (every level: prices within 100 +- 0.30)
        return {
            (side, Decimal(market.ticks_to_price(price))): (Decimal(market.lots_to_qty(lots)), count)
            for side, levels in (("buy", bids), ("sell", asks))
            for price, lots, count in levels
        }, []

    return observer.runner.call_with_result(read).result(10)


def check_accounting(
    traffic: Traffic,
    flows: dict[str, list[dict[str, Any]]],
    resting: dict[tuple[str, str], Decimal] | None,
    levels: dict[tuple[str, Decimal], tuple[Decimal, int]] | None = None,
) -> int:
    """Every accepted order is fully accounted for by its reports: filled + cancelled + resting = qty.
    `resting`: each order's remaining qty, from replicas that name the orders (an edge names only
    its own client's); None: the remainder the reports leave (qty - filled - cancelled, never
    negative) is what rests, and summed per price level it must be the observer's book `levels`
    (qty and order count per level: the public feed is anonymous, so no replica names every
    client's orders).
    Each distinct report counts once: a QoS1 message can be delivered twice (the broker resends it
    when the ack was lost), which is not an order executed twice. Returns the number of accepted
    orders checked."""
    checked = 0
    reported: dict[tuple[str, Decimal], tuple[Decimal, int]] = {}
    for client, orders in flows.items():
        by_id: dict[str, list[dict[str, Any]]] = {}
        distinct: set[tuple[Any, ...]] = set()
        for r in traffic.reports_of(client):
            if r.get("seq") is not None:  # sequenced: identified by what it reports on
                key = (r.get("type"), r.get("id"), r["seq"], r.get("trade_id"), r.get("liquidity"))
                if key in distinct:
                    continue
                distinct.add(key)
            by_id.setdefault(str(r.get("id")), []).append(r)
        for order in orders:
            if order["op"] != "new":
                continue
            rs = by_id.get(order["id"], [])
            kinds = Counter(r["type"] for r in rs)
            assert kinds["accepted"] + kinds["rejected"] >= 1, (client, order, rs)
            if not kinds["accepted"]:
                continue
            assert kinds["accepted"] == 1, (client, order, rs)  # never executed twice
            filled = sum((qty(r["qty"]) for r in rs if r["type"] == "trade"), Decimal(0))
            cancelled = sum((qty(r["qty"]) for r in rs if r["type"] == "cancelled"), Decimal(0))
            if resting is not None:
                rest = resting.get((client, order["id"]), Decimal(0))
            else:
                rest = Decimal(order["qty"]) - filled - cancelled
                assert rest >= 0, (client, order, rs)
                if rest:  # (a market or ioc order's remainder is cancelled, reported)
                    assert "price" in order and order.get("tif") != "ioc", (client, order, rs)
                    level = (order["side"], Decimal(order["price"]))
                    total, count = reported.get(level, (Decimal(0), 0))
                    reported[level] = (total + rest, count + 1)
            assert filled + cancelled + rest == Decimal(order["qty"]), (client, order, rs, rest)
            if kinds["done"]:
                assert filled == Decimal(order["qty"]) and rest == 0, (client, order, rs)
            checked += 1
    if resting is None:
        assert levels is not None
        assert reported == levels, sorted(set(reported.items()) ^ set(levels.items()))
    return checked


def test_concurrent_clients_through_three_edges_converge(cluster: Cluster) -> None:
    rng = random.Random(20261125)
    edges = {name: cluster.start_edge(name) for name in EDGES}
    with (
        Traffic(cluster.url, cluster.topics, "test-traffic") as traffic,
        Edge("observer", cluster.url, MARKET) as observer,
    ):
        cluster.wait_converged([*EDGES, "observer"], 30)
        # Typed orders into each edge's prompt, and bulk flows from three more clients, all at once.
        flows = {name: random_flow(rng, name, 120) for name in EDGES}
        flows |= {f"api-{i}": random_flow(rng, f"api-{i}", 500) for i in range(3)}
        threads = [
            threading.Thread(target=edges[name].send_lines, args=([typed(o) for o in flows[name]],))
            for name in EDGES
        ]
        threads += [
            threading.Thread(target=traffic.publish_orders, args=(client, flows[client], 25))
            for client in flows
            if client.startswith("api-")
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        def all_answered() -> bool:
            cluster.check_alive()
            return all(traffic.answers(c) >= len(orders) for c, orders in flows.items())

        wait_for(all_answered, 120, "an answer to every command")
        for client, orders in flows.items():
            assert traffic.answers(client) == len(orders)
        status = cluster.wait_converged([*EDGES, "observer"], 60)
        assert observer.wait_synced(10, status.book_version)
        version, state_hash, in_sync, _lag = observer.state()
        assert (version, f"{state_hash:016x}") == (status.book_version, status.book_hash)
        checked = check_accounting(traffic, flows, None, book_levels(observer))
    accepted = Counter(r["type"] for c in flows for r in traffic.reports_of(c))["accepted"]
    assert checked == accepted > 500  # most orders were valid and every one was accounted for
    assert status.book_version is not None and status.book_version >= accepted
    cluster.check_alive()


def test_late_joiner_after_10k_commands_starts_from_snapshot(cluster: Cluster) -> None:
    rng = random.Random(7)
    with Traffic(cluster.url, cluster.topics, "test-traffic") as traffic:
        # 10.5k resting orders that never cross (bids < 100 <= asks), in bulk messages.
        orders = [
            {
                "op": "new",
                "id": f"bulk-{i}",
                "side": side,
                "price": str(Decimal(rng.randint(9000, 9999) if side == "buy" else rng.randint(10000, 10999))
                             / 100),
                "qty": f"{rng.randint(1, 100) / 1000:.3f}",
            }
            for i, side in enumerate(rng.choice(("buy", "sell")) for _ in range(10_500))
        ]
        traffic.publish_orders("bulk", orders, per_message=500)
        wait_for(lambda: traffic.answers("bulk") >= len(orders), 120, "10.5k answers")
        assert Counter(r["type"] for r in traffic.reports_of("bulk"))["accepted"] == len(orders)
        wait_for(lambda: (cluster.status().book_version or 0) >= len(orders), 30, "book at 10.5k")
        snapshots = sorted(int(p.stem) for p in (cluster.data_dir / MARKET).rglob("*.snap"))
        assert snapshots[-1] >= 10_000, "the sequencer keeps snapshot files in its data dir"
        # A few hundred more, below the snapshot interval: the late joiner must replay these.
        more = [{"op": "cancel", "id": f"bulk-{i}"} for i in range(300)]
        traffic.publish_orders("bulk", more, per_message=50)
        total = len(orders) + len(more)
        wait_for(lambda: traffic.answers("bulk") >= total, 60, "cancels answered")
        late = cluster.start_edge("late")
        status = cluster.wait_converged(["late"], 60, version=total)
        # It started from the snapshot and asked only for the entries after it.
        requests = traffic.requests_from("late")
        assert requests and all(r["from"] > snapshots[-1] for r in requests), (snapshots, requests)
        assert status.replicas["late"].hash == status.book_hash
        assert late.alive()


def test_edge_killed_mid_stream_restarts_and_converges(cluster: Cluster) -> None:
    rng = random.Random(11)
    for name in EDGES:
        cluster.start_edge(name)
    with Traffic(cluster.url, cluster.topics, "test-traffic") as traffic:
        cluster.wait_converged(EDGES, 30)
        flow = random_flow(rng, "api-0", 1500)
        sender = threading.Thread(
            target=lambda: [
                traffic.publish_orders("api-0", flow[i : i + 20], 20) for i in range(0, len(flow), 20)
            ]
        )
        sender.start()
        wait_for(lambda: traffic.answers("api-0") > 200, 60, "flow under way")
        cluster.edges["edge-b"].kill()
        # The last will says it is gone.
        wait_for(lambda: cluster.status().replicas["edge-b"].state == "offline", 30, "edge-b offline (will)")
        wait_for(lambda: traffic.answers("api-0") > 600, 60, "more flow while edge-b is down")
        cluster.start_edge("edge-b")
        sender.join(60)
        wait_for(lambda: traffic.answers("api-0") >= len(flow), 120, "all answered")
        status = cluster.wait_converged(EDGES, 60)
        assert status.replicas["edge-b"].state == "online"
        assert Counter(r["type"] for r in traffic.reports_of("api-0"))["accepted"] > 1000


def test_sequencer_killed_mid_stream_continues_without_gap_or_duplicate(cluster: Cluster) -> None:
    rng = random.Random(13)
    for name in EDGES:
        cluster.start_edge(name)
    flow = random_flow(rng, "api", 900)
    with Edge("api", cluster.url, MARKET, retry_after=2.0, max_attempts=30) as api:
        cluster.wait_converged(EDGES, 30)
        assert api.wait_synced(30)
        results: list[Any] = []

        def send(orders: list[dict[str, Any]]) -> None:
            futures = [api.submit(o) for o in orders]
            results.extend(f.result(120) for f in futures)

        send(flow[:300])
        sender = threading.Thread(target=send, args=(flow[300:],))
        sender.start()
        cluster.kill_sequencer()
        # A torn tail: half a record written when the power went.
        with open(cluster.journal_path(), "ab") as journal_file:
            journal_file.write(b"\x40\x00\x00\x00\x12\x34")
        cluster.restart_sequencer()
        sender.join(180)
        assert not sender.is_alive()
        assert re.search(r"journal .*dropping \d+ bytes", cluster.sequencer.output())  # torn tail cut
        assert len(results) == len(flow)  # every command answered, after retries where needed
        kinds = Counter(r["type"] for r in results)
        assert kinds["accepted"] > 500
        status = cluster.wait_converged(EDGES, 90)
        assert api.wait_synced(30, status.book_version)
    cluster.kill_sequencer()  # release the journal lock, then read it
    journal = Journal(cluster.journal_path().parent)
    try:
        records = journal.entries()
    finally:
        journal.close()
    seqs = [e.seq for e in records]
    assert seqs == list(range(1, len(seqs) + 1))  # no gap, no duplicate
    assert len(seqs) == status.book_version
    new_ids = [e.client_order_id for e in records if e.op == 1]
    assert len(new_ids) == len(set(new_ids))  # a retried order never executed twice
    # A retry whose first copy was journaled just before the kill (its "accepted" report lost with the
    # sequencer) is answered DUPLICATE_CLIENT_ORDER_ID "already accepted at seq N": accepted once.
    accepted_new = sum(
        1
        for o, r in zip(flow, results, strict=True)
        if o["op"] == "new"
        and (r["type"] == "accepted" or r.get("code") == "DUPLICATE_CLIENT_ORDER_ID")
    )
    assert len([i for i in new_ids if i and i.startswith("api-")]) == accepted_new
    id_at_seq = {e.seq: e.client_order_id for e in records}
    for o, r in zip(flow, results, strict=True):
        if r.get("code") == "DUPLICATE_CLIENT_ORDER_ID":  # the seq it names holds that very order
            where = re.search(r"already accepted at seq (\d+)", r["message"])
            assert where and id_at_seq[int(where.group(1))] == o["id"], r


def test_hostile_input_gets_clear_rejects_and_nothing_dies(cluster: Cluster) -> None:
    cluster.start_edge("edge-a")
    with Traffic(cluster.url, cluster.topics, "test-traffic") as traffic:
        cluster.wait_converged(["edge-a"], 30)
        topic = cluster.topics.orders("mallory")
        cases: list[tuple[bytes, str]] = [
            (b"{not json", "MALFORMED_JSON"),
            (b'{"op":"new","id":"m1","side":"buy","price":100.25,"qty":"1"}', "INVALID_PRICE"),
            (b'{"op":"new","id":"m2","side":"up","price":"100.25","qty":"1"}', "INVALID_FIELD"),
            (
                b'{"op":"new","id":"m3","side":"buy","price":"100.25","qty":"1","market":"ETH-USD"}',
                "UNKNOWN_MARKET",
            ),
            (b'{"op":"new","id":"m4","side":"buy","price":"100.255","qty":"1"}', "INVALID_PRICE"),
            (
                b'{"op":"new","id":"m5","side":"buy","price":"100.25","qty":"1","colour":"red"}',
                "UNKNOWN_FIELD",
            ),
            (
                b"[" + b'{"op":"cancel","id":"x"},' * 100_000 + b'{"op":"cancel","id":"x"}]',
                "PAYLOAD_TOO_LARGE",
            ),
            (b"\xff\xfe", "INVALID_UTF8"),
        ]
        for payload, _code in cases:
            traffic.publish_raw(topic, payload)
        wait_for(
            lambda: len(traffic.reports_of("mallory")) >= len(cases), 60, "a report for each bad message"
        )
        reports = traffic.reports_of("mallory")
        assert [r["type"] for r in reports] == ["rejected"] * len(cases)
        for (_payload, code), report in zip(cases, reports, strict=True):
            assert report["code"] == code, report
            assert len(report["message"]) > 10, report  # a human sentence, not just a code
        # Everyone is still up and still works.
        traffic.publish_orders(
            "mallory", [{"op": "new", "id": "ok-1", "side": "buy", "price": "99.00", "qty": "1"}]
        )
        wait_for(
            lambda: any(r["type"] == "accepted" for r in traffic.reports_of("mallory")), 30, "valid order"
        )
        cluster.wait_converged(["edge-a"], 30)
        cluster.check_alive()
