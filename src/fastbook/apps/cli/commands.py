"""Orders typed by a person at fastbook-edge's prompt, turned into wire-contract order dicts.

    buy 1.5 @ 100.25 [ioc|fok|post] [stp=cancel_taker] [id=o-7]     sell 2 @ 101
    buy 1 market                 cancel #3       cancel all
    amend #3 qty 1.0 [price 100.5]               help            quit

`#N` is a short ref of one of your orders (the program numbers them as it sees them); it is kept
as typed here and the program resolves it (`is_ref`), so the parser needs no state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

HELP = """\
commands:
  buy QTY @ PRICE [ioc|fok|post] [stp=MODE] [id=ID]   limit order (gtc unless
                                   ioc/fok; post = post-only)
  sell QTY @ PRICE [...]           the same, selling
  buy QTY market / sell QTY market market order (stp= works here too)
  cancel #N | cancel ID            cancel one of your orders (ref or full id)
  cancel all                       cancel all of yours
  amend #N qty QTY [price PRICE]   amend quantity and/or price
  book | orders | help | quit
#N is the short ref shown beside each of your orders ('orders' lists them).
stp=MODE: self-trade prevention against your own resting orders: none
  (default), cancel_taker, cancel_maker, cancel_both (or taker, maker, both).
prices and quantities are decimals on the market's tick and lot (100.25, 1.5)"""

STP_MODES = {"none": "none", "cancel_taker": "cancel_taker", "cancel_maker": "cancel_maker",
             "cancel_both": "cancel_both", "taker": "cancel_taker", "maker": "cancel_maker",
             "both": "cancel_both"}


def is_ref(text: str) -> bool:
    """`#N`: a short order ref typed in place of a client order id."""
    return len(text) > 1 and text[0] == "#" and text[1:].isdigit()


class CommandError(ValueError):
    """A typed line that is not a command; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Command:
    kind: str  # "order" | "help" | "quit" | "book" | "orders"
    order: dict[str, Any] | None = None


def _decimal_text(text: str, what: str) -> str:
    """Keep the exact decimal text (the sequencer converts and rejects misalignment); catch typos."""
    body = text[1:] if text.startswith("+") else text
    if not body or not all(c.isdigit() or c == "." for c in body) or body.count(".") > 1 or body == ".":
        raise CommandError(f"{what} must be a positive decimal like 1.5, got {text!r}")
    return body


def parse_command(line: str) -> Command:
    words = line.replace("@", " @ ").split()
    if not words:
        raise CommandError("empty line; type 'help'")
    verb, rest = words[0].lower(), words[1:]
    if verb in ("help", "?", "h"):
        return Command("help")
    if verb in ("quit", "exit", "q"):
        return Command("quit")
    if verb in ("book", "orders") and not rest:
        return Command(verb)
    if verb in ("buy", "sell"):
        return Command("order", _parse_new(verb, rest))
    if verb == "cancel":
        if len(rest) != 1:
            raise CommandError("usage: cancel #N   or   cancel ID   or   cancel all")
        if rest[0].lower() == "all":
            return Command("order", {"op": "cancel_all"})
        return Command("order", {"op": "cancel", "id": rest[0]})
    if verb == "amend":
        return Command("order", _parse_amend(rest))
    raise CommandError(f"unknown command {words[0]!r}; type 'help'")


def _parse_new(side: str, rest: list[str]) -> dict[str, Any]:
    usage = f"usage: {side} QTY @ PRICE [ioc|fok|post] [stp=MODE] [id=ID]   or   {side} QTY market"
    if len(rest) < 2:
        raise CommandError(usage)
    order: dict[str, Any] = {"op": "new", "side": side, "qty": _decimal_text(rest[0], "quantity")}
    if rest[1].lower() == "market":
        order["type"] = "market"
        options = rest[2:]
    elif rest[1] == "@" and len(rest) >= 3:
        order["type"] = "limit"
        order["price"] = _decimal_text(rest[2], "price")
        options = rest[3:]
    else:
        raise CommandError(usage)
    for option in options:
        low = option.lower()
        if low in ("ioc", "fok", "gtc"):
            order["tif"] = low
        elif low in ("post", "post_only", "post-only"):
            order["post_only"] = True
        elif low.startswith("stp="):
            mode = STP_MODES.get(low[4:])
            if mode is None:
                raise CommandError(f"stp must be one of none, cancel_taker, cancel_maker, cancel_both, got "
                                   f"{option[4:]!r}")
            order["stp"] = mode
        elif low.startswith("id="):
            if option[3:].startswith("#"):
                raise CommandError("an id may not start with # (that is how short refs like #2 are typed)")
            order["id"] = option[3:]
        else:
            raise CommandError(f"unknown option {option!r}; {usage}")
    return order


def _parse_amend(rest: list[str]) -> dict[str, Any]:
    usage = "usage: amend #N qty QTY [price PRICE]   or   amend #N price PRICE"
    if len(rest) < 3 or len(rest) % 2 == 0:
        raise CommandError(usage)
    order: dict[str, Any] = {"op": "amend", "id": rest[0]}
    for key, value in zip(rest[1::2], rest[2::2], strict=True):
        key = key.lower()
        if key in ("qty", "quantity") and "qty" not in order:
            order["qty"] = _decimal_text(value, "quantity")
        elif key == "price" and "price" not in order:
            order["price"] = _decimal_text(value, "price")
        else:
            raise CommandError(usage)
    return order
