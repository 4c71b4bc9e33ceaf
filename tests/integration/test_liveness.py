"""Liveness with real processes and brokers (issue 15): a second fastbook-edge under a running one's
client id, a sequencer that goes silent, a market without a sequencer."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fastbook.edge.client import Edge, NoSequencerError
from tests.support.brokers import program, start_edge, start_mosquitto, wait_for
from tests.support.cluster import MARKET, Cluster

pytestmark = pytest.mark.broker


@pytest.mark.parametrize("kind", ["amqtt", "mosquitto"])
def test_a_second_edge_under_the_same_client_id_exits_and_the_first_keeps_trading(
    tmp_path: Path, kind: str
) -> None:
    """amqtt lets the second connection delete the first one's subscriptions (the first then followed
    nothing while saying "in sync"); mosquitto makes the two take the session from each other. The
    newer process says so and exits non-zero; the first one says it (mosquitto) or finds its log
    silent and reconnects (amqtt), and its orders' reports arrive."""
    cluster = Cluster(kind, tmp_path)
    try:
        first = cluster.start_edge("bob", "--json")  # reports as JSON lines
        wait_for(lambda: "in sync" in first.output(), 30, "the first edge in sync")
        second = start_edge(tmp_path, cluster.url, "bob", MARKET)
        try:
            wait_for(lambda: not second.alive(), 30, "the second edge to exit")
        finally:
            code = second.stop()
        assert code == 1
        said = second.output()
        assert "edge stopped: another process with client id bob" in said
        assert "this one started later and stops" in said
        first.send_lines(["buy 1 @ 100"])
        wait_for(lambda: '"type":"accepted"' in first.output(), 30, "the first edge's report")
        told = first.output()
        if kind == "mosquitto":
            assert "another process with client id bob" in told and "started after this one" in told
        else:  # amqtt gave the first no sign but the silence of its log
            assert "STALLED: no log message or heartbeat from the sequencer of BTC-USD" in told
            assert "the sequencer of BTC-USD is heard again" in told
        assert first.alive()
        cluster.wait_converged(["bob"], 30)
    finally:
        cluster.stop()


def test_a_silent_sequencer_shows_as_stalled_in_fastbook_status_until_it_is_back(tmp_path: Path) -> None:
    cluster = Cluster("mosquitto", tmp_path)
    try:
        edge = cluster.start_edge("carol", "--json")  # reports as JSON lines
        wait_for(lambda: cluster.status().replicas.get("carol", None) is not None
                 and cluster.status().replicas["carol"].sync == "in_sync", 30, "carol in sync")
        cluster.kill_sequencer()
        wait_for(lambda: "STALLED" in edge.output(), 30, "the edge to say it is stalled")

        def status_says_stalled() -> bool:
            result = subprocess.run([program("fastbook"), "status", "--broker", cluster.url],
                                    capture_output=True, text=True, timeout=30)
            return any(line.split()[:2] == ["carol", "stalled"] for line in result.stdout.splitlines())

        wait_for(status_says_stalled, 30, "fastbook status to show carol stalled", interval=0.5)
        assert cluster.status().replicas["carol"].sync == "stalled"
        cluster.restart_sequencer()
        wait_for(lambda: "is heard again" in edge.output(), 30, "the edge to hear the sequencer again")
        edge.send_lines(["sell 2 @ 101"])
        wait_for(lambda: '"type":"accepted"' in edge.output(), 30, "the order's report")
        status = cluster.wait_converged(["carol"], 30)
        assert status.replicas["carol"].sync == "in_sync"
    finally:
        cluster.stop()


def test_an_edge_on_a_market_without_a_sequencer_says_so(tmp_path: Path) -> None:
    broker = start_mosquitto(tmp_path)
    try:
        edge = start_edge(tmp_path, broker.url, "dave", "ETH-USD")
        with Edge("erin", broker.url, "ETH-USD") as api:
            with pytest.raises(NoSequencerError) as raised:
                api.wait_synced(20)
            message = str(raised.value)
            assert f"no sequencer for market ETH-USD on broker {broker.url}" in message
            assert not api.status().in_sync and api.status().sync.value == "no_sequencer"
        wait_for(lambda: "no sequencer for market ETH-USD" in edge.output(), 30, "the edge to say it")
        assert "in sync" not in edge.output()
        assert edge.alive()
        edge.stop()
    finally:
        broker.stop()
