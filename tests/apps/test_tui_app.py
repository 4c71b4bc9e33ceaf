"""The terminal UI, headless (textual's pilot): what it shows at two terminal sizes, typed commands
against a real edge (broker + sequencer), and the disconnected state with queued orders."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from fastbook.apps.cli.edge import EdgeProgram, parser
from fastbook.apps.tui.app import EdgeApp
from fastbook.apps.tui.liveness import ReplicaView
from fastbook.apps.tui.session import TradingSession
from fastbook.apps.tui.view import EdgeView, own_quantities
from tests.support.brokers import Broker, Proc, free_port, program, start_mosquitto


def screen_text(app: EdgeApp) -> str:
    """The characters on the screen, row by row (what a person sees, without colours)."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


async def until(pilot: Pilot[None], condition: Callable[[str], bool], timeout: float, what: str) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = screen_text(pilot.app)  # type: ignore[arg-type]
        if condition(text):
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; the screen:\n{text}")
        await pilot.pause(0.1)


class FakeEdge:
    """An EdgeSource with a fixed book: 30 levels a side, one own bid at 100.25."""

    client_id = "bob"
    market = "BTC-USD"
    broker = "mqtt://127.0.0.1:1883"

    def __init__(self) -> None:
        self.session = TradingSession()
        self.quit = threading.Event()
        self.typed: list[str] = []
        self.orders = [{"id": "1a232f061c1846a-1", "side": "buy", "price": "100.25", "qty": "1.500"}]

    def view(self, levels: int) -> EdgeView:
        bids = [(f"{100.25 - i * 0.25:.2f}", "2.000", 3) for i in range(min(levels, 30))]
        asks = [(f"{100.75 + i * 0.25:.2f}", "1.000", 1) for i in range(min(levels, 30))]
        replica = ReplicaView(True, 1762, 0xB546160A05C0DE5A, 0, True, True)
        return EdgeView(bids, asks, self.orders, replica, own_quantities(self.orders))

    def execute(self, line: str) -> str | None:
        self.typed.append(line)
        return f"sent: {line}"

    def queued(self) -> int:
        return 0


def fill(order_id: str, price: str, qty: str, side: str, liquidity: str) -> dict[str, Any]:
    return {"type": "trade", "id": order_id, "seq": 9, "trade_id": "9-1", "price": price, "qty": qty,
            "side": side, "liquidity": liquidity, "remaining": "0.000"}


@pytest.mark.parametrize(("size", "levels"), [((80, 24), 6), ((120, 40), 11)])
def test_screen_fits_the_terminal(size: tuple[int, int], levels: int, tmp_path: Path) -> None:
    source = FakeEdge()
    source.session.on_event("report", fill("x-7", "100.50", "1.500", "buy", "maker"))
    source.session.on_event("trade", {"trade_id": "9-1", "seq": 9, "price": "100.50", "qty": "1.500",
                                      "taker_side": "sell"})

    async def drive() -> str:
        app = EdgeApp(source)
        async with app.run_test(size=size) as pilot:
            await until(pilot, lambda t: "#2 buy  1.500 @ 100.25" in t, 10, "the own order with its ref")
            await pilot.press(*"cancel #2", "enter")
            text = await until(pilot, lambda t: "sent: cancel #2" in t, 10, "the command's answer")
            app.save_screenshot(f"shot-{size[0]}.svg", str(tmp_path))
            return text

    text = asyncio.run(drive())
    rows = text.splitlines()
    assert len(rows) == size[1] and all(len(row) == size[0] for row in rows)
    status = rows[0]
    assert "bob BTC-USD" in status and "SYNCED" in status and "v 1762 b546160a05c0de5a lag 0" in status
    assert "in flight 0" in status
    # both sides of the ladder, as many levels as fit: asks above the spread, bids below
    spread_row = next(i for i, row in enumerate(rows) if "spread 0.50" in row)
    asks = [row for row in rows[:spread_row] if row.startswith("A ")]
    bids = [row for row in rows[spread_row + 1:] if row.startswith("B ")]
    assert len(asks) == levels and len(bids) == levels
    assert "100.75" in asks[-1] and "100.25" in bids[0]
    assert "*1.500" in bids[0]  # own order marked at its level
    assert "last 1.500 @ 100.50 sell" in text
    assert "pos +1.500 @ 100.5000  realised 0.00" in text
    assert "#1 FILLED 1.500 @ 100.50 maker (buy)" in text
    assert source.typed == ["cancel #2"]
    assert "buy 1 @ 100.25 | sell 2 @ 101 ioc" in rows[-1]  # the input line, with its hint
    assert (tmp_path / f"shot-{size[0]}.svg").read_text().startswith("<svg")


def test_a_refresh_during_teardown_draws_nothing() -> None:
    # exit() removes the screen's widgets while the refresh interval can still fire (seen in CI:
    # NoMatches on '#ladder' from the timer): a refresh then finds no widgets and must not raise.
    async def drive() -> None:
        app = EdgeApp(FakeEdge())
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda t: "SYNCED" in t, 10, "the first draw")
            await app.query_one("#main").remove()
            app.refresh_view()
            await app.query_one("#log").remove()
            app.refresh_view()
            assert app.is_running

    asyncio.run(drive())


@pytest.fixture(scope="module")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    broker = start_mosquitto(tmp_path_factory.mktemp("mosquitto-tui"))
    yield broker
    broker.stop()


@pytest.mark.broker
def test_typed_orders_on_a_real_edge(mosquitto: Broker, tmp_path: Path) -> None:
    """Against a broker and a sequencer: orders typed in the TUI rest in the replica's book (marked
    as own), get short refs, can be amended and cancelled by ref; a self-cross with stp= is
    prevented; a bad line gets a message and the screen goes on."""
    sequencer = Proc([program("fastbook-sequencer"), "--broker", mosquitto.url, "--data-dir", str(tmp_path),
                      "--market", "TUI-USD"], tmp_path / "seq.log")
    args = parser().parse_args(["--client-id", "tui-user", "--broker", mosquitto.url, "--market", "TUI-USD"])
    edge = EdgeProgram(args, io.StringIO())
    edge.start()

    async def drive() -> None:
        app = EdgeApp(edge)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda t: "SYNCED" in t.splitlines()[0], 30, "an in-sync replica")
            await pilot.press(*"buy 1.5 @ 99.50", "enter")
            text = await until(pilot, lambda t: "#1 ACCEPTED buy 1.500 @ 99.50" in t, 30, "the accept")
            await until(pilot, lambda t: "#1 buy  1.500 @ 99.50" in t and "*1.500" in t, 10, "own order")
            await pilot.press(*"amend #1 qty 1", "enter")
            await until(pilot, lambda t: "#1 AMENDED 1.000 @ 99.50" in t, 30, "the amend")
            await pilot.press(*"sell 2 @ 99.50 stp=cancel_taker", "enter")
            await until(pilot, lambda t: "#2 CANCELLED 2.000 (self-trade prevented)" in t, 30, "STP")
            await pilot.press(*"buy lots @ cheap", "enter")
            await until(pilot, lambda t: "error: quantity must be a positive decimal" in t, 10, "a message")
            await pilot.press(*"cancel #9", "enter")
            await until(pilot, lambda t: "error: no order #9" in t, 10, "an unknown ref")
            await pilot.press(*"cancel #1", "enter")
            text = await until(pilot, lambda t: "#1 CANCELLED 1.000 (by you)" in t, 30, "the cancel")
            await until(pilot, lambda t: "no open orders" in t and "*1.000" not in t, 10, "the book updated")
            await pilot.press(*"quit", "enter")
            await pilot.pause(0.2)
            assert not app.is_running
            assert "pos flat" in text

    try:
        asyncio.run(drive())
        assert edge.quit.is_set()
    finally:
        edge.stop()
        sequencer.stop()


def test_disconnected_edge_queues_orders_and_says_so() -> None:
    port = free_port()  # nothing listens there
    args = parser().parse_args(["--client-id", "offline", "--broker", f"mqtt://127.0.0.1:{port}"])
    edge = EdgeProgram(args, io.StringIO())
    edge.start()

    async def drive() -> None:
        app = EdgeApp(edge)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda t: "DISCONNECTED" in t.splitlines()[0], 10, "the disconnected state")
            await pilot.press(*"buy 1 @ 10", "enter")
            text = await until(pilot, lambda t: "queued 1" in t.splitlines()[0], 10, "one queued order")
            assert "queued (disconnected; sent when the broker is back): buy 1 @ 10" in text

    try:
        asyncio.run(drive())
    finally:
        edge.stop()
