"""A market's identity and its exact decimal <-> integer conversions.

Prices and quantities travel as decimal strings and live inside as integers (ticks, lots). The
conversion is pure integer arithmetic on the digits, so it is exact for any tick/lot, and a value
that is not a whole number of ticks or lots is an error, never rounded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from fastbook.engine.types import MAX_PRICE, MAX_QTY

NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Plain decimal notation only: no sign, no exponent, no NaN/Infinity, no whitespace, bounded length.
MEMO_SIZE = 1 << 16
DECIMAL_RE = re.compile(r"([0-9]{1,30})(?:\.([0-9]{1,30}))?")


def _parse_step(what: str, value: Decimal | str) -> Decimal:
    try:
        step = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise ValueError(f"{what} must be a decimal number, got {value!r}") from None
    if not step.is_finite() or step <= 0:
        raise ValueError(f"{what} must be a positive decimal number, got {value!r}")
    exponent = step.as_tuple().exponent
    assert isinstance(exponent, int)  # an int for a finite Decimal; "n", "N" or "F" only for NaN and inf
    if exponent < -18:
        raise ValueError(f"{what} has more than 18 decimal places: {value!r}")
    if step.adjusted() > 18:
        raise ValueError(f"{what} is too large: {value!r}")
    # Plain notation ("10", not "1E+1") so str() of the spec reads back the same.
    return Decimal(format(step, "f"))


def _step_units(step: Decimal) -> tuple[int, int]:
    """(decimal places D, step * 10**D as an int) for a positive finite step."""
    exponent = step.as_tuple().exponent
    assert isinstance(exponent, int)
    places = max(0, -exponent)
    units = int(step.scaleb(places))
    return places, units


@dataclass(frozen=True, slots=True)
class MarketSpec:
    name: str
    tick: Decimal = Decimal("0.01")
    lot: Decimal = Decimal("0.001")
    # Derived integer forms of tick and lot, computed once.
    _tick_places: int = field(init=False, repr=False, compare=False, default=0)
    _tick_units: int = field(init=False, repr=False, compare=False, default=1)
    _lot_places: int = field(init=False, repr=False, compare=False, default=0)
    _lot_units: int = field(init=False, repr=False, compare=False, default=1)
    # Memo of recent conversions (prices and sizes repeat a lot on a busy market); bounded.
    _ticks_memo: dict[str, int] = field(init=False, repr=False, compare=False, default_factory=dict)
    _lots_memo: dict[str, int] = field(init=False, repr=False, compare=False, default_factory=dict)
    _price_memo: dict[int, str] = field(init=False, repr=False, compare=False, default_factory=dict)
    _qty_memo: dict[int, str] = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME_RE.fullmatch(self.name):
            raise ValueError(
                "market name must be 1-64 characters of A-Z a-z 0-9 . _ - (no '/', '+', '#'), "
                f"got {self.name!r}"
            )
        tick = _parse_step("tick", self.tick)
        lot = _parse_step("lot", self.lot)
        object.__setattr__(self, "tick", tick)
        object.__setattr__(self, "lot", lot)
        tick_places, tick_units = _step_units(tick)
        lot_places, lot_units = _step_units(lot)
        object.__setattr__(self, "_tick_places", tick_places)
        object.__setattr__(self, "_tick_units", tick_units)
        object.__setattr__(self, "_lot_places", lot_places)
        object.__setattr__(self, "_lot_units", lot_units)

    @classmethod
    def parse(cls, spec: str) -> MarketSpec:
        """`NAME[:tick=0.01][:lot=0.001]` -> MarketSpec; ValueError with a message on anything else."""
        if not isinstance(spec, str) or not spec:
            raise ValueError("market spec must be NAME[:tick=0.01][:lot=0.001]")
        name, *options = spec.split(":")
        values: dict[str, str] = {}
        for option in options:
            key, sep, value = option.partition("=")
            if not sep or key not in ("tick", "lot"):
                raise ValueError(
                    f"bad market option {option!r} in {spec!r}: expected tick=DECIMAL or lot=DECIMAL"
                )
            if key in values:
                raise ValueError(f"market option {key!r} given twice in {spec!r}")
            values[key] = value
        tick = _parse_step("tick", values.get("tick", "0.01"))
        lot = _parse_step("lot", values.get("lot", "0.001"))
        return cls(name, tick, lot)

    def __str__(self) -> str:
        return f"{self.name}:tick={self.tick}:lot={self.lot}"

    # -- conversions ---------------------------------------------------------------------------

    @staticmethod
    def _to_steps(what: str, text: object, places: int, units: int, step: Decimal, maximum: int) -> int:
        if not isinstance(text, str):
            raise ValueError(f"{what} must be a decimal string like \"1.25\", got {type(text).__name__}")
        match = DECIMAL_RE.fullmatch(text)
        if match is None:
            raise ValueError(
                f"{what} must be a plain positive decimal string like \"1.25\", got {text[:40]!r}"
            )
        whole, frac = match.group(1), match.group(2) or ""
        if len(frac) > places:
            extra = frac[places:]
            if extra.strip("0"):
                raise ValueError(f"{what} {text} is not a multiple of {step}")
            frac = frac[:places]
        scaled = int(whole + frac.ljust(places, "0"))
        steps, rest = divmod(scaled, units)
        if rest:
            raise ValueError(f"{what} {text} is not a multiple of {step}")
        if steps < 1:
            raise ValueError(f"{what} must be positive, got {text}")
        if steps > maximum:
            raise ValueError(f"{what} {text} is too large (max {maximum} x {step})")
        return steps

    @staticmethod
    def _from_steps(count: int, places: int, units: int) -> str:
        scaled = count * units
        if places == 0:
            return str(scaled)
        digits = str(scaled).rjust(places + 1, "0")
        return f"{digits[:-places]}.{digits[-places:]}"

    @staticmethod
    def _remember(memo: dict[Any, Any], key: Any, value: Any) -> Any:
        if len(memo) >= MEMO_SIZE:
            memo.clear()
        memo[key] = value
        return value

    def price_to_ticks(self, s: str) -> int:
        """Exact: "100.25" -> 10025 with tick 0.01. Misaligned, non-decimal or out of range -> ValueError."""
        ticks = self._ticks_memo.get(s) if type(s) is str else None
        if ticks is None:  # bad input raises here and is never memoized
            steps = self._to_steps("price", s, self._tick_places, self._tick_units, self.tick, MAX_PRICE)
            ticks = self._remember(self._ticks_memo, s, steps)
        return ticks

    def qty_to_lots(self, s: str) -> int:
        lots = self._lots_memo.get(s) if type(s) is str else None
        if lots is None:
            steps = self._to_steps("qty", s, self._lot_places, self._lot_units, self.lot, MAX_QTY)
            lots = self._remember(self._lots_memo, s, steps)
        return lots

    def ticks_to_price(self, t: int) -> str:
        """10025 -> "100.25": a decimal string with exactly the tick's decimal places."""
        text = self._price_memo.get(t)
        if text is None:
            text = self._from_steps(t, self._tick_places, self._tick_units)
            self._remember(self._price_memo, t, text)
        return text

    def lots_to_qty(self, q: int) -> str:
        text = self._qty_memo.get(q)
        if text is None:
            text = self._remember(self._qty_memo, q, self._from_steps(q, self._lot_places, self._lot_units))
        return text

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "tick": str(self.tick), "lot": str(self.lot)}

    @classmethod
    def from_json(cls, data: object) -> MarketSpec:
        if not isinstance(data, dict) or set(data) != {"name", "tick", "lot"}:
            raise ValueError("market spec must be an object with name, tick and lot")
        if not isinstance(data["tick"], str) or not isinstance(data["lot"], str):
            raise ValueError("market tick and lot must be decimal strings")
        return cls(data["name"], _parse_step("tick", data["tick"]), _parse_step("lot", data["lot"]))
