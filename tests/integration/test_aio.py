"""The asyncio API (fastbook.aio.Edge) against a real sequencer on mosquitto, with asyncio.run in
plain tests; and the README's example, run as it is written there."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastbook.aio import Edge
from tests.support.brokers import free_port
from tests.support.cluster import MARKET, Cluster

pytestmark = pytest.mark.broker
README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster("mosquitto", tmp_path)
    try:
        yield c
    finally:
        c.stop()


def test_submit_fills_reports_and_reads(cluster: Cluster) -> None:
    async def scenario() -> None:
        async with Edge("aio-alice", cluster.url, MARKET) as alice, \
                Edge("aio-bob", cluster.url, MARKET) as bob:
            await asyncio.gather(alice.wait_synced(timeout=30), bob.wait_synced(timeout=30))
            alice_fills, bob_fills = alice.fills(), bob.fills()
            reports, trades = alice.reports(), bob.trades()
            assert alice.fills() is alice_fills  # one stream per kind
            ask = await alice.submit(side="sell", price="101.00", qty="1.5")
            assert (ask["type"], ask["qty"], ask["price"]) == ("accepted", "1.500", "101.00")
            assert (await reports.__anext__())["type"] == "accepted"
            await alice.wait_synced(ask["seq"], timeout=10)
            assert await alice.own_orders() == [{"id": ask["id"], "side": "sell", "price": "101.00",
                                                  "qty": "1.500"}]
            take = await bob.submit({"op": "new", "side": "buy", "type": "market", "qty": "0.5"})
            assert take["type"] == "accepted"
            maker = await asyncio.wait_for(alice_fills.__anext__(), 10)
            taker = await asyncio.wait_for(bob_fills.__anext__(), 10)
            assert (maker["id"], maker["qty"], maker["price"], maker["liquidity"], maker["remaining"]) == (
                ask["id"], "0.500", "101.00", "maker", "1.000")
            assert (taker["id"], taker["liquidity"]) == (take["id"], "taker")
            assert taker["trade_id"] == maker["trade_id"]
            public = await asyncio.wait_for(trades.__anext__(), 10)
            assert (public["trade_id"], public["qty"]) == (maker["trade_id"], "0.500")
            assert public["taker_side"] == "buy"
            bad = await alice.submit(side="sell", price="101.001", qty="1")
            assert (bad["type"], bad["code"]) == ("rejected", "INVALID_PRICE")
            cancelled = await alice.submit(op="cancel", id=ask["id"])
            assert (cancelled["type"], cancelled["qty"]) == ("cancelled", "1.000")
            version = await alice.wait_synced(cancelled["seq"], timeout=10)
            assert await bob.wait_synced(version, timeout=10) >= version
            assert (await alice.depth(5)) == {"bids": [], "asks": []}
            a, b = await alice.state(), await bob.state()
            assert a[:2] == b[:2] and a[2] and a[3] == 0  # same version and hash, in sync, no lag
        # leaving `async with` ends the streams instead of leaving their readers waiting forever
        assert [fill async for fill in alice_fills] == []

    asyncio.run(scenario())


def test_the_loop_runs_while_waiting_and_a_timeout_raises() -> None:
    """No broker on the port: wait_synced times out, and meanwhile the loop ran other tasks."""

    async def scenario() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        async with Edge("aio-nobody", f"mqtt://127.0.0.1:{free_port()}", MARKET) as edge:
            task = asyncio.create_task(ticker())
            with pytest.raises(asyncio.TimeoutError):
                await edge.wait_synced(timeout=0.5)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return ticks

    assert asyncio.run(scenario()) > 10


def test_outside_async_with_it_says_how_to_use_it() -> None:
    edge = Edge("aio-closed", "mqtt://127.0.0.1:1", MARKET)
    with pytest.raises(RuntimeError, match="async with"):
        edge.fills()
    with pytest.raises(RuntimeError, match="async with"):
        asyncio.run(edge.submit(side="buy", price="1", qty="1"))


def test_bad_arguments_raise_on_entering() -> None:
    async def scenario() -> None:
        async with Edge("not a valid id", "mqtt://127.0.0.1:1", MARKET):
            pass

    with pytest.raises(ValueError, match="client id"):
        asyncio.run(scenario())


def test_readme_example_runs_as_written(cluster: Cluster) -> None:
    text = README.read_text()
    marker = text.index("<!-- aio example")
    code = re.search(r"```python\n(.*?)```", text[marker:], re.S)
    expected = re.search(r"prints\n\n```text\n(.*?)```", text[marker:], re.S)
    assert code is not None and expected is not None
    source = code.group(1).replace('"mqtt://127.0.0.1:1883"', repr(cluster.url))
    assert cluster.url in source
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source, "README.md (aio example)", "exec"), {"__name__": "readme_example"})
    assert out.getvalue() == expected.group(1)
