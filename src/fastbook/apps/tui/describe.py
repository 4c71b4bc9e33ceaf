"""Reports and public trades as lines a person reads: `#1 FILLED 1.500 @ 100.50 maker`."""

from __future__ import annotations

import re
from typing import Any

from fastbook.apps.tui.refs import OrderRefs

_ALREADY_ACCEPTED = re.compile(r"was already accepted(?: at seq (\d+))?;")
CANCEL_REASONS = {"user": "by you", "unfilled": "unfilled rest", "fok": "fill-or-kill not filled",
                  "self_trade": "self-trade prevented"}


def _ref(report: dict[str, Any], refs: OrderRefs) -> str:
    client_order_id = report.get("id")
    if not isinstance(client_order_id, str):
        return ""
    return refs.label(client_order_id) + " "


def describe_report(report: dict[str, Any], refs: OrderRefs) -> str:
    """One line for one of this client's reports (refs assigns #N to an order seen the first time)."""
    kind = report.get("type")
    ref = _ref(report, refs) if kind != "rejected" else ""
    if kind == "accepted":
        where = "market" if report.get("price") is None else f"@ {report.get('price')}"
        return f"{ref}ACCEPTED {report.get('side')} {report.get('qty')} {where}"
    if kind == "trade":
        remaining = str(report.get("remaining") or "0")
        rest = "" if remaining.strip("0.") == "" else f", {remaining} left"
        return (f"{ref}FILLED {report.get('qty')} @ {report.get('price')} {report.get('liquidity')} "
                f"({report.get('side')}{rest})")
    if kind == "cancelled":
        reason = str(report.get("reason"))
        return f"{ref}CANCELLED {report.get('qty')} ({CANCEL_REASONS.get(reason, reason)})"
    if kind == "done":
        return f"{ref}DONE"
    if kind == "amended":
        return (f"{ref}AMENDED {report.get('qty')} @ {report.get('price')} "
                f"(priority {report.get('priority')})")
    if kind == "cancelled_all":
        count = report.get("count")
        return f"CANCELLED ALL ({count} order{'' if count == 1 else 's'})"
    if kind == "rejected":
        client_order_id = report.get("id")
        message = str(report.get("message"))
        accepted_at = _accepted_earlier(report)
        if accepted_at is not None and isinstance(client_order_id, str):
            # Mostly the Edge resending an order whose first answer it missed (sent while
            # disconnected or syncing): the order stands, executed once. Not a "rejection".
            return f"{refs.label(client_order_id)} ALREADY ACCEPTED{accepted_at} (this copy not executed)"
        known = refs.known(client_order_id) if isinstance(client_order_id, str) else None
        target = f"{known} " if known else ""
        return f"{target}REJECTED {report.get('op') or '?'}: {report.get('code')} {message}"
    return f"{ref}{str(kind).upper()} {report}"


def _accepted_earlier(report: dict[str, Any]) -> str | None:
    """`at seq N` (or "") when a DUPLICATE_CLIENT_ORDER_ID rejection says the order was already
    accepted; None for any other report."""
    if report.get("code") != "DUPLICATE_CLIENT_ORDER_ID" or report.get("op") != "new":
        return None
    match = _ALREADY_ACCEPTED.search(str(report.get("message")))
    if match is None:
        return None
    return f" at seq {match.group(1)}" if match.group(1) else ""


def describe_trade(trade: dict[str, Any]) -> str:
    """A public trade: `TRADE 1.000 @ 100.50 buy` (the taker's side)."""
    return f"TRADE {trade.get('qty')} @ {trade.get('price')} {trade.get('taker_side')}"


def describe_resync(data: dict[str, Any]) -> str:
    return f"RESYNC #{data.get('resyncs')}: {data.get('reason')}"
