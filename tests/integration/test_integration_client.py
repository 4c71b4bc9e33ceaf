"""The Python API (fastbook.edge.client.Edge) against a real sequencer on mosquitto."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fastbook.edge.client import Edge
from fastbook.transport.config import RunnerConfig
from fastbook.transport.runner import NodeRunner
from tests.support.brokers import wait_for
from tests.support.cluster import MARKET, Cluster
from tests.transport.test_mqtt import Recorder

pytestmark = pytest.mark.broker


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster("mosquitto", tmp_path)
    try:
        yield c
    finally:
        c.stop()


def test_submit_resolves_each_op_to_its_answer(cluster: Cluster) -> None:
    events: list[tuple[str, dict[str, object]]] = []
    with Edge("py-alice", cluster.url, MARKET) as alice, Edge("py-bob", cluster.url, MARKET) as bob:
        alice.add_listener(lambda kind, data: events.append((kind, data)))
        assert alice.wait_synced(30) and bob.wait_synced(30)
        accepted = alice.submit(op="new", side="buy", price="99.50", qty="2").result(10)
        assert accepted["type"] == "accepted" and accepted["price"] == "99.50" and accepted["qty"] == "2.000"
        order_id = accepted["id"]
        amended = alice.submit({"op": "amend", "id": order_id, "qty": "1.5"}).result(10)
        assert amended["type"] == "amended" and amended["qty"] == "1.500"
        assert alice.wait_synced(10, amended["seq"])
        assert alice.depth(5)["bids"] == [["99.50", "1.500", 1]]
        assert alice.own_orders() == [{"id": order_id, "side": "buy", "price": "99.50", "qty": "1.500"}]
        taker = bob.submit(op="new", side="sell", type="market", qty="0.5").result(10)
        assert taker["type"] == "accepted"
        wait_for(lambda: ("report", "trade") in [(k, d.get("type")) for k, d in events], 10, "alice's fill")
        cancelled = alice.submit(op="cancel", id=order_id).result(10)
        assert (cancelled["type"], cancelled["reason"], cancelled["qty"]) == ("cancelled", "user", "1.000")
        rejected = alice.submit(op="cancel", id=order_id).result(10)
        assert rejected["type"] == "rejected" and rejected["code"] == "UNKNOWN_ORDER"
        misaligned = alice.submit(op="new", side="buy", price="99.505", qty="1").result(10)
        assert misaligned["type"] == "rejected" and misaligned["code"] == "INVALID_PRICE"
        implicit_new = alice.submit(side="buy", price="99.00", qty="1").result(10)  # op defaults to new
        assert implicit_new["type"] == "accepted"
        bad_op = alice.submit(op="bogus", side="buy").result(10)  # answered, not left to time out
        assert (bad_op["type"], bad_op["code"], bad_op["op"]) == ("rejected", "INVALID_OP", None)
        everyone = alice.submit(op="cancel_all").result(10)
        assert everyone["type"] == "cancelled_all"
        assert alice.wait_synced(10, everyone["seq"]) and bob.wait_synced(10, everyone["seq"])
        assert alice.state()[:2] == bob.state()[:2]  # same version, same hash
        status = cluster.wait_converged(["py-alice", "py-bob"], 30)
        assert status.book_version == alice.version and status.book_hash == f"{alice.state_hash:016x}"


def test_submit_retries_the_same_id_until_answered(cluster: Cluster) -> None:
    """The sequencer is down when the order is sent (the broker keeps it neither: a clean start),
    the API resends the same bytes; the order executes once."""
    with Edge("py-carol", cluster.url, MARKET, retry_after=0.5, max_attempts=60) as carol:
        assert carol.wait_synced(30)
        cluster.sequencer.stop()
        # Drop the sequencer's persistent session so the broker cannot deliver the first send.
        with NodeRunner(Recorder([]), RunnerConfig(cluster.url, "fastbook-sequencer-fastbook-BTC-USD",
                                                   clean_session=True)):
            pass
        future = carol.submit(op="new", id="c-1", side="sell", price="101", qty="1")

        def attempts() -> int:
            return max((p.attempts for q in carol._pending.values() for p in q), default=0)

        wait_for(lambda: carol._read(attempts) >= 2, 10, "a resend of the same order")
        assert not future.done()
        cluster.restart_sequencer()
        report = future.result(60)
        assert report["type"] == "accepted" and report["id"] == "c-1"
        again = carol.submit(op="new", id="c-1", side="sell", price="101", qty="1").result(30)
        assert again["type"] == "rejected" and again["code"] == "DUPLICATE_CLIENT_ORDER_ID"
        status = cluster.wait_converged(["py-carol"], 30)
        assert status.book_version == 1  # c-1 once, whatever the number of sends


def test_view_and_an_edge_over_a_running_node(cluster: Cluster) -> None:
    """Edge.over() gives the API (submit with resends, view) over a node and runner a program runs
    (fastbook-edge --web); closing it leaves the runner to the program."""
    from fastbook.edge.node import EdgeConfig, EdgeNode

    node = EdgeNode(EdgeConfig(client_id="py-dave", market=MARKET))
    runner = NodeRunner(node, RunnerConfig(cluster.url, "fastbook-api-py-dave"))
    runner.start()
    try:
        edge = Edge.over(node, runner).start()
        assert edge.wait_synced(30)
        accepted = edge.submit(side="sell", price="103.00", qty="0.7").result(10)
        assert edge.wait_synced(10, accepted["seq"])
        view = edge.view(3)
        assert view["version"] == accepted["seq"] and view["hash"] == f"{edge.state_hash:016x}"
        assert (view["in_sync"], view["synced_once"], view["lag"], view["mismatch"], view["connected"]) == (
            True, True, 0, None, True)
        assert view["depth"] == {"bids": [], "asks": [["103.00", "0.700", 1]]}
        assert view["orders"] == [{"id": accepted["id"], "side": "sell", "price": "103.00", "qty": "0.700"}]
        edge.close()
        assert runner.running and runner.connected.is_set()  # still the program's
    finally:
        runner.stop()
