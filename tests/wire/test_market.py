from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastbook.engine.types import MAX_PRICE, MAX_QTY
from fastbook.wire.market import MarketSpec


def test_parse_defaults_and_options() -> None:
    spec = MarketSpec.parse("BTC-USD")
    assert (spec.name, spec.tick, spec.lot) == ("BTC-USD", Decimal("0.01"), Decimal("0.001"))
    spec = MarketSpec.parse("ETH.EUR:lot=0.5:tick=5")
    assert (spec.name, spec.tick, spec.lot) == ("ETH.EUR", Decimal("5"), Decimal("0.5"))
    assert MarketSpec.parse(str(spec)) == spec


@pytest.mark.parametrize(
    "bad",
    ["", "BTC/USD", "BTC+", "A#", "x" * 65, "A:tick=0", "A:tick=-1", "A:tick=abc", "A:size=1", "A:tick",
     "A:tick=1:tick=2", "A:lot=NaN", "A:tick=Infinity"],
)
def test_parse_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        MarketSpec.parse(bad)


def test_exact_conversions() -> None:
    spec = MarketSpec.parse("BTC-USD")
    assert spec.price_to_ticks("100.25") == 10025
    assert spec.price_to_ticks("100.250000") == 10025
    assert spec.price_to_ticks("0.01") == 1
    assert spec.qty_to_lots("1.5") == 1500
    assert spec.ticks_to_price(10025) == "100.25"
    assert spec.ticks_to_price(1) == "0.01"
    assert spec.ticks_to_price(100) == "1.00"
    assert spec.lots_to_qty(1) == "0.001"
    odd = MarketSpec.parse("X:tick=0.25:lot=5")
    assert odd.price_to_ticks("1.75") == 7
    assert odd.ticks_to_price(7) == "1.75"
    assert odd.qty_to_lots("15") == 3
    assert odd.lots_to_qty(3) == "15"


@pytest.mark.parametrize(
    "text",
    ["100.255", "0", "0.00", "-1", "+1", "1e2", "1E2", "NaN", "Infinity", "inf", " 1", "1 ", "1.", ".5", "",
     "1,5", "0x10", "١٢", "9" * 31, "1." + "0" * 31],
)
def test_price_rejects(text: str) -> None:
    spec = MarketSpec.parse("BTC-USD")
    with pytest.raises(ValueError):
        spec.price_to_ticks(text)


@pytest.mark.parametrize("value", [1, 1.5, None, True, b"1"])
def test_non_string_rejected(value: object) -> None:
    spec = MarketSpec.parse("BTC-USD")
    with pytest.raises(ValueError, match="decimal string"):
        spec.qty_to_lots(value)  # type: ignore[arg-type]


def test_range_limits() -> None:
    spec = MarketSpec.parse("X:tick=1:lot=1")
    assert spec.price_to_ticks(str(MAX_PRICE)) == MAX_PRICE
    with pytest.raises(ValueError, match="too large"):
        spec.price_to_ticks(str(MAX_PRICE + 1))
    assert spec.qty_to_lots(str(MAX_QTY)) == MAX_QTY
    with pytest.raises(ValueError, match="too large"):
        spec.qty_to_lots(str(MAX_QTY + 1))


def test_misaligned_against_odd_tick() -> None:
    spec = MarketSpec.parse("X:tick=0.25")
    with pytest.raises(ValueError, match="multiple of 0.25"):
        spec.price_to_ticks("1.10")


@given(
    st.sampled_from(["0.01", "0.5", "1", "0.25", "5", "0.0001"]),
    st.integers(min_value=1, max_value=10**12),
)
def test_roundtrip(tick: str, ticks: int) -> None:
    spec = MarketSpec.parse(f"M:tick={tick}")
    text = spec.ticks_to_price(ticks)
    assert Decimal(text) == Decimal(tick) * ticks
    assert spec.price_to_ticks(text) == ticks


def test_memoized_conversions_stay_exact_and_strict() -> None:
    spec = MarketSpec.parse("BTC-USD")
    for _ in range(2):  # the second round is served from the memo
        assert spec.price_to_ticks("100.25") == 10025
        assert spec.ticks_to_price(10025) == "100.25"
        assert spec.lots_to_qty(1500) == "1.500"
        with pytest.raises(ValueError):
            spec.price_to_ticks("100.255")
    with pytest.raises(ValueError):
        spec.price_to_ticks(10025)  # type: ignore[arg-type]
    other = MarketSpec.parse("BTC-USD:tick=0.5")
    assert other.ticks_to_price(10025) == "5012.5"  # memos are per spec
    assert spec == MarketSpec.parse("BTC-USD") and hash(spec) == hash(MarketSpec.parse("BTC-USD"))
