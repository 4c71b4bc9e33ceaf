"""The page's view of the replica, kept current from the Edge's events and handed to every open
event stream: one JSON document, rebuilt when something changed (and once a second for the lag).

Everything in it comes through the `Edge` API: `Edge.view()` for the replica (read at one instant
on its runner thread), its listener for public trades, own reports and the sequencer's book head.
Quantities the page shows summed (cumulative depth, own quantity at a level) are summed here as
decimals: money is exact, and JavaScript numbers are not.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from decimal import Decimal
from typing import Any

from fastbook.edge.client import Edge

log = logging.getLogger(__name__)

REFRESH_SECONDS = 1.0  # a view at least this often: the lag and the link state change without events
MIN_INTERVAL = 0.05  # at most 20 views a second however busy the market


def _levels(levels: list[list[Any]], own: dict[str, Decimal]) -> list[dict[str, Any]]:
    out = []
    total = Decimal(0)
    for price, qty, count in levels:
        total += Decimal(qty)
        mine = own.get(price)
        out.append({"price": price, "qty": qty, "orders": count, "cum": str(total),
                    "mine": str(mine) if mine is not None else None})
    return out


def build_view(view: dict[str, Any], head: dict[str, Any] | None, trades: list[dict[str, Any]],
               reports: list[dict[str, Any]], client_id: str, market: str) -> dict[str, Any]:
    """The page's document from an `Edge.view()` and the events seen so far."""
    own: dict[str, dict[str, Decimal]] = {"buy": {}, "sell": {}}
    for order in view["orders"]:
        side = own[order["side"]]
        side[order["price"]] = side.get(order["price"], Decimal(0)) + Decimal(order["qty"])
    verified = bool(view["in_sync"] and view["synced_once"] and view["mismatch"] is None)
    matches_head = None
    if head is not None and head.get("version") == view["version"]:
        matches_head = head.get("hash") == view["hash"]
    return {
        "client_id": client_id,
        "market": market,
        "connected": view["connected"],
        "replica": {key: view[key] for key in
                    ("version", "hash", "in_sync", "synced_once", "lag", "resyncs", "mismatch")},
        "verified": verified,
        "head": head,
        "matches_head": matches_head,
        "bids": _levels(view["depth"]["bids"], own["buy"]),
        "asks": _levels(view["depth"]["asks"], own["sell"]),
        "orders": view["orders"],
        "trades": trades,
        "reports": reports,
    }


class LiveView:
    """Listens to an Edge and publishes numbered view documents; `wait_newer` hands them out."""

    def __init__(self, edge: Edge, market: str, levels: int = 15, tape: int = 40) -> None:
        self.edge = edge
        self.market = market
        self.levels = levels
        self._lock = threading.Lock()  # the event buffers (runner thread writes, publisher reads)
        self._trades: deque[dict[str, Any]] = deque(maxlen=tape)  # newest first
        self._reports: deque[dict[str, Any]] = deque(maxlen=tape)
        self._head: dict[str, Any] | None = None
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._published = threading.Condition()
        self._number = 0
        self._document = b""
        edge.add_listener(self._on_event)
        self._thread = threading.Thread(target=self._run, name=f"web-{edge.client_id}", daemon=True)

    def start(self) -> LiveView:
        self._changed.set()  # the first view at once (on the thread: the runner may not run yet)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._changed.set()
        with self._published:
            self._published.notify_all()
        if self._thread.is_alive():
            self._thread.join(5)

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    def current(self) -> tuple[int, bytes]:
        """(0, b"") until the replica was read once."""
        with self._published:
            return self._number, self._document

    def wait_newer(self, number: int, timeout: float) -> tuple[int, bytes] | None:
        """The first document after `number`; None if none came within `timeout` or on close."""
        with self._published:
            self._published.wait_for(lambda: self._number > number or self._stop.is_set(), timeout)
            if self._stop.is_set() or self._number <= number:
                return None
            return self._number, self._document

    # runner thread: keep it short and never raise (a raise would skip the Edge's other listeners)
    def _on_event(self, kind: str, data: dict[str, Any]) -> None:
        try:
            with self._lock:
                if kind == "trade":
                    self._trades.appendleft({**data, "at": time.time()})
                elif kind == "report":
                    self._reports.appendleft({**data, "at": time.time()})
                elif kind == "book":
                    self._head = {"version": data.get("version"), "hash": data.get("hash")}
                    last = data.get("last_trade")
                    if not self._trades and isinstance(last, dict):  # the tape starts with the last one
                        self._trades.appendleft(dict(last))
                elif kind not in ("status", "resync"):
                    return
            self._changed.set()
        except Exception:  # a view must never stop the replica's listeners
            log.exception("web view: event %s", kind)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._changed.wait(REFRESH_SECONDS)
            if self._stop.is_set():
                return
            self._changed.clear()
            self._publish()
            self._stop.wait(MIN_INTERVAL)

    def _publish(self) -> None:
        try:
            view = self.edge.view(self.levels)
        except Exception as exc:  # the runner stopping, or not answering
            log.debug("web view: replica not readable: %s", exc)
            return
        with self._lock:
            head = dict(self._head) if self._head is not None else None
            trades, reports = list(self._trades), list(self._reports)
        doc = build_view(view, head, trades, reports, self.edge.client_id, self.market)
        data = json.dumps(doc, separators=(",", ":")).encode()
        with self._published:
            self._number += 1
            self._document = data
            self._published.notify_all()
