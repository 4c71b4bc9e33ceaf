"""The session's position from its own fills: signed quantity, average price, realised PnL.

Exact: prices and quantities arrive as decimal strings and are kept as Fractions (an average price
is a ratio, not a terminating decimal); only the display rounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction


def places_of(text: str) -> int:
    return len(text) - text.index(".") - 1 if "." in text else 0


def format_fraction(value: Fraction, places: int, signed: bool = False) -> str:
    """`value` rounded half-even to `places` decimals."""
    exact = Decimal(value.numerator) / Decimal(value.denominator)
    rounded = exact.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
    if rounded == 0:
        rounded = abs(rounded)  # no "-0.00"
    text = f"{rounded:f}"
    return f"+{text}" if signed and rounded > 0 else text


@dataclass
class Position:
    qty: Fraction = Fraction(0)  # > 0 long, < 0 short
    cost: Fraction = Fraction(0)  # signed cost of the open quantity at its entry prices
    realised: Fraction = Fraction(0)
    bought: Fraction = Fraction(0)
    sold: Fraction = Fraction(0)
    fills: int = 0
    price_places: int = 2
    qty_places: int = 3

    def fill(self, side: str, price_text: str, qty_text: str) -> None:
        price, qty = Fraction(price_text), Fraction(qty_text)
        self.price_places = max(self.price_places, places_of(price_text))
        self.qty_places = max(self.qty_places, places_of(qty_text))
        self.fills += 1
        if side == "buy":
            self.bought += qty
            signed = qty
        else:
            self.sold += qty
            signed = -qty
        if self.qty == 0 or (self.qty > 0) == (signed > 0):
            self.qty += signed
            self.cost += signed * price
            return
        direction = 1 if self.qty > 0 else -1
        closing = min(abs(signed), abs(self.qty))
        average = self.cost / self.qty
        self.realised += closing * (price - average) * direction
        self.qty -= direction * closing
        self.cost -= direction * closing * average
        opening = abs(signed) - closing
        if opening:  # went through flat: the rest opens a position the other way at this price
            self.qty -= direction * opening
            self.cost -= direction * opening * price

    @property
    def average_price(self) -> Fraction | None:
        return None if self.qty == 0 else self.cost / self.qty

    def summary(self) -> str:
        """`pos +1.500 @ 100.2500  realised +0.75` (flat: `pos flat  realised ...`)."""
        if self.qty == 0:
            head = "pos flat"
        else:
            average = self.average_price
            assert average is not None
            head = (f"pos {format_fraction(self.qty, self.qty_places, signed=True)} "
                    f"@ {format_fraction(average, self.price_places + 2)}")
        return f"{head}  realised {format_fraction(self.realised, self.price_places, signed=True)}"
