"""Reports and public trades as lines a person reads: `#1 FILLED 1.500 @ 100.50 maker`."""

from __future__ import annotations

from typing import Any

from fastbook.apps.tui.refs import OrderRefs

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
        known = refs.known(client_order_id) if isinstance(client_order_id, str) else None
        target = f"{known} " if known else ""
        return f"{target}REJECTED {report.get('op') or '?'}: {report.get('code')} {report.get('message')}"
    return f"{ref}{str(kind).upper()} {report}"


def describe_trade(trade: dict[str, Any]) -> str:
    """A public trade: `TRADE 1.000 @ 100.50 buy` (the taker's side)."""
    return f"TRADE {trade.get('qty')} @ {trade.get('price')} {trade.get('taker_side')}"


def describe_resync(data: dict[str, Any]) -> str:
    return f"RESYNC #{data.get('resyncs')}: {data.get('reason')}"
