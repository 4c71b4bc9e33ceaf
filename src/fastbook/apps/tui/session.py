"""What this client's session has seen: refs of its orders, fills, its position, the trades tape.

Fed by the edge's events on the runner thread (`on_event`), read by the screen on its own thread:
every method takes the lock. It derives nothing about the book: that is the replica's.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from fastbook.apps.tui.describe import describe_report, describe_resync
from fastbook.apps.tui.position import Position
from fastbook.apps.tui.refs import OrderRefs

TAPE_LENGTH = 200
LOG_LENGTH = 200
# Reports after which an order is off the book (its ref is forgotten; a rejected new never had one).
FINAL_REPORTS = frozenset({"done", "cancelled"})


@dataclass(frozen=True, slots=True)
class SessionView:
    """A copy of the session for one frame of the screen."""

    position: Position
    last_trade: dict[str, Any] | None
    tape: list[dict[str, Any]]
    log: list[str]
    fills: int
    changes: int


@dataclass
class TradingSession:
    refs: OrderRefs = field(default_factory=OrderRefs)
    position: Position = field(default_factory=Position)
    tape: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=TAPE_LENGTH))
    log: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_LENGTH))
    last_trade: dict[str, Any] | None = None
    changes: int = 0  # bumped on every change: the screen redraws only when it moved
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def on_event(self, kind: str, data: dict[str, Any]) -> str | None:
        """Take one edge event; the human line for it (None for events that have none)."""
        with self._lock:
            line = self._take(kind, data)
            if line is not None:
                self.log.append(line)
                self.changes += 1
            return line

    def _take(self, kind: str, data: dict[str, Any]) -> str | None:
        if kind == "report":
            line = describe_report(data, self.refs)
            report_type = data.get("type")
            if report_type == "trade":
                self.position.fill(str(data.get("side")), str(data.get("price")), str(data.get("qty")))
            client_order_id = data.get("id")
            if report_type in FINAL_REPORTS and isinstance(client_order_id, str):
                self.refs.forget(client_order_id)
            return line
        if kind == "trade":
            self.last_trade = data
            self.tape.appendleft(data)
            self.changes += 1
            return None  # the tape shows it; one log line per public trade would drown the fills
        if kind == "resync":
            return describe_resync(data)
        return None

    def note(self, line: str) -> None:
        """A line of the program's own (a typed command's answer)."""
        with self._lock:
            self.log.append(line)
            self.changes += 1

    def label_orders(self, orders: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The replica's own open orders, each with its short ref under "ref"."""
        with self._lock:
            return [dict(order, ref=self.refs.label(str(order.get("id")))) for order in orders]

    def resolve(self, text: str) -> str:
        with self._lock:
            return self.refs.resolve(text)

    def view(self, log_lines: int = LOG_LENGTH, tape_lines: int = TAPE_LENGTH) -> SessionView:
        with self._lock:
            p = self.position
            position = Position(p.qty, p.cost, p.realised, p.bought, p.sold, p.fills, p.price_places,
                                p.qty_places)
            log = list(self.log)[-log_lines:] if log_lines > 0 else []
            return SessionView(position, self.last_trade, list(self.tape)[:tape_lines], log, p.fills,
                               self.changes)
