"""A damaged last journal frame, recovered from the edges at the sequencer's start (issue 15, D2):
real processes on both brokers (fastbook-broker's amqtt, and mosquitto + fastbook-sequencer). The
sequencer is killed with SIGKILL, one byte of its last frame flipped, and it is started again."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastbook.log.journal import FRAME_HEAD
from fastbook.wire.log import RUN_HEAD
from tests.support.brokers import wait_for
from tests.support.cluster import Cluster, Traffic
from tests.support.journal_files import last_frame

pytestmark = pytest.mark.broker
EDGES = ["edge-a", "edge-b"]
ORDER = {"op": "new", "id": "a-0001", "side": "buy", "price": "100.00", "qty": "0.5"}


@pytest.fixture(params=["amqtt", "mosquitto"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def trade_at_seq_3(cluster: Cluster, traffic: Traffic) -> None:
    """edge-b's two resting sells, then edge-a's buy at seq 3 (the journal's last frame) trading."""
    for edge in EDGES:
        cluster.start_edge(edge)
    cluster.wait_converged(EDGES, 60)
    traffic.publish_orders("edge-b", [
        {"op": "new", "id": "b-1", "side": "sell", "price": "100.00", "qty": "2"},
        {"op": "new", "id": "b-2", "side": "sell", "price": "101.00", "qty": "1"},
    ])  # fmt: skip
    cluster.wait_converged(EDGES, 60, version=2)
    traffic.publish_orders("edge-a", [ORDER])
    cluster.wait_converged(EDGES, 60, version=3)


def flip_in_last_record(path: Path) -> bytes:
    """One bit of the last frame's record (its post-state hash) flipped; the file's bytes before."""
    original = path.read_bytes()
    data = bytearray(original)
    data[last_frame(path) + FRAME_HEAD.size + RUN_HEAD.size + 12] ^= 0x08
    path.write_bytes(bytes(data))
    return original


def test_a_damaged_last_record_is_recovered_from_the_edges(kind: str, tmp_path: Path) -> None:
    cluster = Cluster(kind, tmp_path, ["--recover-timeout", "60"])  # (done as soon as verified)
    try:
        with Traffic(cluster.url, cluster.topics, f"test-traffic-{cluster.broker.port}") as traffic:
            trade_at_seq_3(cluster, traffic)
            before = cluster.status()
            cluster.kill_sequencer()
            journal = cluster.journal_path()
            original = flip_in_last_record(journal)
            damaged = journal.read_bytes()
            cluster.restart_sequencer()
            wait_for(lambda: journal.read_bytes() == original, 60, "journal record 3 rewritten as it was")
            status = cluster.wait_converged(EDGES, 60, version=3)
            assert status.book_hash == before.book_hash
            frame = last_frame(journal)
            assert (journal.parent / f"journal.log.tail-{frame}").read_bytes() == damaged[frame:]
            output = cluster.sequencer.output()
            assert "journal tail seqs 3..3 recovered from edge-" in output, output[-3000:]
            assert "(verified by its CRC, replayed to their hashes)" in output, output[-3000:]
            # edge-a's client sends its order again (it never knew whether it was kept): a duplicate
            traffic.publish_orders("edge-a", [ORDER])
            wait_for(
                lambda: any(r.get("id") == ORDER["id"] and r.get("code") == "DUPLICATE_CLIENT_ORDER_ID"
                            for r in traffic.reports_of("edge-a")),
                30, "the resubmit refused as a duplicate",
            )  # fmt: skip
            traffic.publish_orders("edge-a", [{**ORDER, "id": "a-0002", "price": "99.00"}])
            cluster.wait_converged(EDGES, 60, version=4)  # seq 3 not reused: the next order is 4
    finally:
        cluster.stop()


def test_no_edge_answering_refuses_to_start_and_changes_nothing(kind: str, tmp_path: Path) -> None:
    cluster = Cluster(kind, tmp_path, ["--recover-timeout", "2"])
    try:
        with Traffic(cluster.url, cluster.topics, f"test-traffic-{cluster.broker.port}") as traffic:
            trade_at_seq_3(cluster, traffic)
        cluster.kill_sequencer()
        for proc in cluster.edges.values():
            proc.stop()
        journal = cluster.journal_path()
        flip_in_last_record(journal)
        files = {p: p.read_bytes() for p in sorted(cluster.data_dir.rglob("*")) if p.is_file()}
        cluster.restart_sequencer()
        wait_for(lambda: not cluster.sequencer.alive(), 60, "the sequencer to refuse and exit")
        assert cluster.sequencer.popen.returncode not in (0, None)
        output = cluster.sequencer.output()
        assert "damaged last frame" in output and "after seq 2" in output, output[-3000:]
        assert "records from seq 3" in output and "no replica answered" in output, output[-3000:]
        assert "nothing on disk changed" in output and "Traceback" not in output, output[-3000:]
        assert {p: p.read_bytes() for p in sorted(cluster.data_dir.rglob("*")) if p.is_file()} == files
    finally:
        cluster.stop()
