"""The terminal UI of fastbook-edge (textual): depth ladder, trades, own orders, fills, position.

    bob BTC-USD | SYNCED | v 1762 b546160a05c0de5a lag 0 | queued 0 | 127.0.0.1:1883
    +- book ------------------------+ +- last trade / position ---------------+
    | asks (worst at the top)       | | my orders (#N to cancel / amend)       |
    | -- spread --                  | | trades tape                            |
    | bids                          | |                                        |
    +- log: fills, reports, answers -------------------------------------------+
    > typed commands (help)

Everything shown is read from the edge (`EdgeSource`: the replica through the Edge API, and the
session that follows this client's reports); the screen keeps no state of the book. The layout is
sized by the terminal: the ladder shows as many levels as fit, the panels as many lines.
"""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any, ClassVar, Protocol

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.widgets import Input, Static

from fastbook.apps.tui.liveness import STATE_STYLE, ReplicaState, ReplicaView, replica_state
from fastbook.apps.tui.session import SessionView, TradingSession
from fastbook.apps.tui.view import EdgeView

REFRESH_SECONDS = 0.25
PLACEHOLDER = "buy 1 @ 100.25 | sell 2 @ 101 ioc | cancel #1 | amend #1 qty 0.5 | help"


class EdgeSource(Protocol):
    """What the screen needs of an edge program (fastbook.apps.cli.edge.EdgeProgram)."""

    client_id: str
    market: str
    broker: str
    session: TradingSession
    quit: threading.Event

    def view(self, levels: int) -> EdgeView: ...

    def execute(self, line: str) -> str | None: ...

    def queued(self) -> int: ...


def status_text(source: EdgeSource, replica: ReplicaView | None, width: int) -> Text:
    """The status bar: who, the replica's state, version, hash, lag, queued orders, broker."""
    state = replica_state(replica) if replica is not None else ReplicaState.DISCONNECTED
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f" {source.client_id} {source.market} ", "bold")
    text.append(f" {state.value.upper()} ", STATE_STYLE[state])
    if replica is not None:
        text.append(f" v {replica.version} {replica.state_hash:016x} lag {replica.lag}")
    queued = source.queued()
    word = "queued" if state is ReplicaState.DISCONNECTED else "in flight"
    text.append(f" | {word} {queued}", "bold yellow" if queued else "")
    broker = source.broker.replace("mqtt://", "")
    text.append(f" | {broker}", "dim")
    text.truncate(width, overflow="ellipsis")
    return text


def ladder_text(view: EdgeView, rows: int, width: int) -> Text:
    """Asks above (best nearest the middle), the spread, bids below; own levels marked `*`."""
    per_side = max(1, (rows - 2) // 2)
    wide = width >= 48
    price_w, qty_w = (12, 14) if wide else (10, 11)
    text = Text(no_wrap=True, overflow="crop")
    text.append(f"  {'price':>{price_w}} {'qty':>{qty_w}} {'ord':>4}  mine\n", "dim")

    def level(side: str, price: str, qty: str, count: int, style: str) -> None:
        mine = view.mine.get((side, price))
        text.append(f"{'A' if side == 'sell' else 'B'} ", style)
        text.append(f"{price:>{price_w}} ", style + (" bold" if mine else ""))
        text.append(f"{qty:>{qty_w}} {count:>4}")
        text.append(f"  *{mine}\n" if mine else "\n", "bold cyan")

    asks = view.asks[:per_side]
    for _ in range(per_side - len(asks)):
        text.append("\n")
    for price, qty, count in reversed(asks):
        level("sell", price, qty, count, "red")
    if view.bids and view.asks:
        spread = f" spread {Decimal(view.asks[0][0]) - Decimal(view.bids[0][0])} "
    else:
        spread = " no spread (a side is empty) "
    text.append(spread.center(price_w + qty_w + 12, "-") + "\n", "dim")
    for price, qty, count in view.bids[:per_side]:
        level("buy", price, qty, count, "green")
    text.rstrip()
    return text


def summary_text(session: SessionView) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    last = session.last_trade
    if last is None:
        text.append("last trade -\n")
    else:
        text.append("last ")
        style = "green" if last.get("taker_side") == "buy" else "red"
        text.append(f"{last.get('qty')} @ {last.get('price')}", f"bold {style}")
        text.append(f" {last.get('taker_side')}\n", "dim")
    text.append(session.position.summary())
    text.append(f"  fills {session.fills}", "dim")
    return text


def orders_text(orders: list[dict[str, Any]], rows: int) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    if not orders:
        text.append("no open orders", "dim")
        return text
    shown = orders if len(orders) <= rows else orders[: max(0, rows - 1)]
    for o in shown:
        style = "green" if o.get("side") == "buy" else "red"
        text.append(f"{o.get('ref'):>4} ", "bold cyan")
        text.append(f"{o.get('side'):<4} {o.get('qty')} @ {o.get('price')}\n", style)
    if len(shown) < len(orders):
        text.append(f"  ... {len(orders) - len(shown)} more ('orders' lists them)", "dim")
    text.rstrip()
    return text


def tape_text(tape: list[dict[str, Any]], rows: int) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    if not tape:
        text.append("no trades yet", "dim")
    for trade in tape[:rows]:
        style = "green" if trade.get("taker_side") == "buy" else "red"
        text.append(f"{trade.get('price'):>10} {trade.get('qty'):>11} {trade.get('taker_side')}\n", style)
    text.rstrip()
    return text


def log_text(lines: list[str]) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    for line in lines:
        style = ("bold green" if "FILLED" in line else "bold red" if "REJECTED" in line or
                 line.startswith(("error", "no answer")) else "yellow" if line.startswith("queued") else "")
        text.append(line + "\n", style)
    text.rstrip()
    return text


class EdgeApp(App[None]):
    """The full-screen view; one refresh every REFRESH_SECONDS reads the edge and redraws."""

    TITLE = "fastbook-edge"
    CSS = """
    Screen { layout: vertical; }
    #status { height: 1; background: $panel; }
    #main { height: 1fr; }
    #ladder { width: 40; height: 1fr; border-top: solid $primary; border-title-align: left; }
    #side { width: 1fr; height: 1fr; }
    #summary { height: 3; border-top: solid $primary; }
    #orders { height: 1fr; border-top: solid $primary; }
    #tape { height: 1fr; border-top: solid $primary; }
    #log { height: 7; border-top: solid $primary; }
    #command { height: 1; border: none; padding: 0 1; }
    Screen.-wide #ladder { width: 48; }
    Screen.-tall #log { height: 12; }
    """
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (36, "-tall")]
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+c", "quit", "quit", priority=True),
        Binding("ctrl+d", "quit", "quit", priority=True),
    ]

    def __init__(self, source: EdgeSource, stop: threading.Event | None = None) -> None:
        super().__init__()
        self.source = source
        self.stop = stop or threading.Event()
        self._drawn: tuple[Any, ...] | None = None
        self.last_view: EdgeView | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="status")
        with Horizontal(id="main"):
            yield Static(id="ladder")
            with Vertical(id="side"):
                yield Static(id="summary")
                yield Static(id="orders")
                yield Static(id="tape")
        yield Static(id="log")
        yield Input(placeholder=PLACEHOLDER, id="command")

    def on_mount(self) -> None:
        titles = {"ladder": "book", "summary": "last trade / position", "orders": "my orders (#N)",
                  "tape": "trades", "log": "fills, reports, answers"}
        for name, title in titles.items():
            self.query_one(f"#{name}", Static).border_title = title
        self.source.session.note("type 'help' for commands")
        self.query_one("#command", Input).focus()
        self.refresh_view()
        self.set_interval(REFRESH_SECONDS, self.refresh_view)

    def refresh_view(self) -> None:
        if self.stop.is_set() or self.source.quit.is_set():
            self.exit()
            return
        try:
            self._refresh_widgets()
        except NoMatches:  # the interval can still fire while exit() removes the screen's widgets
            return

    def _refresh_widgets(self) -> None:
        ladder = self.query_one("#ladder", Static)
        levels = max(1, (ladder.content_size.height - 2) // 2)
        try:
            view: EdgeView | None = self.source.view(levels)
        except Exception:  # the runner is busy or stopping: say disconnected, keep the last book
            view = None
        self.last_view = view if view is not None else self.last_view
        log = self.query_one("#log", Static)
        tape = self.query_one("#tape", Static)
        session = self.source.session.view(log_lines=max(1, log.content_size.height),
                                           tape_lines=max(1, tape.content_size.height))
        sizes = (self.size, ladder.content_size, log.content_size, tape.content_size)
        key = (view, session.changes, self.source.queued(), sizes)
        if key == self._drawn:
            return
        self._drawn = key
        self._draw(view, session)

    def _draw(self, view: EdgeView | None, session: SessionView) -> None:
        status = self.query_one("#status", Static)
        status.update(status_text(self.source, view.replica if view is not None else None, self.size.width))
        shown = view or self.last_view
        if shown is not None:
            ladder = self.query_one("#ladder", Static)
            ladder.update(ladder_text(shown, ladder.content_size.height, ladder.content_size.width))
            orders = self.query_one("#orders", Static)
            labelled = self.source.session.label_orders(shown.orders)
            orders.update(orders_text(labelled, orders.content_size.height))
        self.query_one("#summary", Static).update(summary_text(session))
        tape = self.query_one("#tape", Static)
        tape.update(tape_text(session.tape, tape.content_size.height))
        self.query_one("#log", Static).update(log_text(session.log))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        line = event.value
        event.input.value = ""
        if not line.strip():
            return
        self.source.session.note(f"> {line}")
        for answer in (self.source.execute(line) or "").splitlines():
            self.source.session.note(answer)
        if self.source.quit.is_set():
            self.exit()
            return
        self.refresh_view()

    async def action_quit(self) -> None:
        self.source.quit.set()
        self.exit()
