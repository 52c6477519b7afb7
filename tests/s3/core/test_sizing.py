"""The exact sizer: hand-worked examples (docs/sizing.md) and Hypothesis properties.

Every expected number in the example tests was worked out by hand in docs/sizing.md, never by
calling the code; the properties check the results against a Fraction oracle.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s3.core.sizing import OcoLegs, Sized, SizingParams, SizingSkip, SymbolFilters, size_entry

D = Decimal

# Binance USD-M futures (GET /fapi/v1/exchangeInfo): PRICE_FILTER, LOT_SIZE, MARKET_LOT_SIZE,
# MIN_NOTIONAL.notional.
BTC_FUT = SymbolFilters(
    tick_size=D("0.10"),
    step_size=D("0.001"),
    min_qty=D("0.001"),
    min_notional=D("100"),
    min_price=D("556.80"),
    max_qty=D("1000"),
    market_step_size=D("0.001"),
    market_min_qty=D("0.001"),
    market_max_qty=D("120"),
)
ETH_FUT = SymbolFilters(
    tick_size=D("0.01"),
    step_size=D("0.001"),
    min_qty=D("0.001"),
    min_notional=D("20"),
    min_price=D("39.86"),
    max_qty=D("10000"),
    market_step_size=D("0.001"),
    market_min_qty=D("0.001"),
    market_max_qty=D("2000"),
)
# Binance spot (GET /api/v3/exchangeInfo): prices and quantities anchored at 0.
BTC_SPOT = SymbolFilters(
    tick_size=D("0.01"),
    step_size=D("0.00001"),
    min_qty=D("0.00001"),
    min_notional=D("5"),
    min_price=D("0.01"),
    max_qty=D("9000"),
    anchored=False,
)


def fut(**changes: Any) -> SizingParams:
    """Spec defaults: margin 20 USDT, leverage 20, max loss 1.2 USDT, ATR x 1.5."""
    base: dict[str, Any] = {
        "market": "FUT",
        "margin_base_usdt": D(20),
        "leverage": 20,
        "quote_budget_usdt": D(100),
        "max_loss_usdt": D("1.2"),
        "atr_mult": D("1.5"),
    }
    return SizingParams(**(base | changes))


def spot(**changes: Any) -> SizingParams:
    """Spot at the default 0.1 % / 0.1 % commission."""
    base: dict[str, Any] = {"fee_maker": D("0.001"), "fee_taker": D("0.001")}
    return fut(market="SPOT", **(base | changes))


def run(**changes: Any) -> Sized | SizingSkip:
    call: dict[str, Any] = {
        "side": "BUY",
        "entry_px": D("60000.0"),
        "atr": D("90"),
        "size_mult": 1.0,
        "sl_mult": 1.0,
        "tp_mult": 1.0,
        "exec_policy": "MakerThenTaker",
        "filters": BTC_FUT,
        "params": fut(),
    }
    return size_entry(**(call | changes))


def sized(**changes: Any) -> Sized:
    result = run(**changes)
    assert isinstance(result, Sized), result
    return result


def fields(result: Sized, expected: dict[str, Any]) -> dict[str, Any]:
    return {name: getattr(result, name) for name in expected}


# --- hand-worked examples (docs/sizing.md, "Worked examples") -----------------------------------


def test_e1_btc_futures_long_stop_from_atr() -> None:
    r = sized()
    expected = {
        "market": "FUT",
        "side": "BUY",
        "qty": D("0.006"),
        "entry_px": D("60000.0"),
        "notional": D("360"),
        "margin": D("18"),
        "leverage": 20,
        "exit_qty": D("0.006"),
        "sl_px": D("59865.0"),
        "tp_px": D("60342.1"),
        "sl_distance": D("135.0"),
        "liq_px": D("57229.0"),
        "fee_entry_rate": D("0.0005"),
        "fee_exit_sl_rate": D("0.0005"),
        "fee_exit_tp_rate": D("0.0002"),
        "loss_at_sl_usdt": D("1.169595"),
        "net_profit_at_tp_usdt": D("1.80018948"),
        "tp_target_usdt": D("1.8"),
        "oco": None,
        "guardian_stop_px": None,
    }
    assert fields(r, expected) == expected
    assert r.notes == (
        "MARKET_LOT_SIZE applied with LOT_SIZE: MakerThenTaker may fill at market",
        "qty 0.006 = 400 USDT / entry 60000, rounded down to step 0.001",
        "SL distance from ATR: 1.5 x 1 x 90 = 135 (loss-cap distance 140.07003502)",
        "SL 59865 clears the liquidation buffer 57367.46987952 (LP 57228.91566265)",
        "TP for net profit >= 1.8 USDT = 0.1 x margin 18 x tp_mult 1",
    )


def test_e2_btc_futures_short_stop_capped_by_max_loss() -> None:
    r = sized(side="SELL", atr=D("110"), exec_policy="Maker")
    expected = {
        "qty": D("0.006"),
        "notional": D("360"),
        "margin": D("18"),
        "sl_px": D("60157.9"),
        "tp_px": D("59676.0"),
        "sl_distance": D("157.9"),
        "liq_px": D("62749.0"),
        "fee_entry_rate": D("0.0002"),
        "loss_at_sl_usdt": D("1.1998737"),
        "net_profit_at_tp_usdt": D("1.8003888"),
        "tp_target_usdt": D("1.8"),
    }
    assert fields(r, expected) == expected
    assert r.notes[1] == (
        "SL distance capped by max_loss_usdt 1.2: loss-cap distance 157.92103948 "
        "< ATR distance 1.5 x 1 x 110 = 165"
    )
    assert (
        r.notes[2] == "SL 60157.9 clears the liquidation buffer 62611.55378486 (LP 62749.00398406)"
    )


def test_e3_eth_futures_long_half_size_capped_by_max_loss() -> None:
    r = sized(
        filters=ETH_FUT,
        entry_px=D("3000.00"),
        atr=D("12.5"),
        size_mult=0.5,
        tp_mult=1.5,
        exec_policy="Taker",
    )
    expected = {
        "qty": D("0.066"),
        "notional": D("198"),
        "margin": D("9.9"),
        "sl_px": D("2984.82"),
        "tp_px": D("3024.61"),
        "sl_distance": D("15.18"),
        "liq_px": D("2861.45"),
        "fee_entry_rate": D("0.0005"),
        "loss_at_sl_usdt": D("1.19937906"),
        "net_profit_at_tp_usdt": D("1.485335148"),
        "tp_target_usdt": D("1.485"),
    }
    assert fields(r, expected) == expected


def test_e4_eth_futures_short_leverage_10_stop_from_atr() -> None:
    r = sized(
        side="SELL",
        filters=ETH_FUT,
        entry_px=D("2500.00"),
        atr=D("10.01"),
        sl_mult=0.8,
        exec_policy="Maker",
        params=fut(leverage=10),
    )
    expected = {
        "qty": D("0.080"),
        "notional": D("200"),
        "margin": D("20"),
        "leverage": 10,
        "sl_px": D("2512.01"),
        "tp_px": D("2474.00"),
        "sl_distance": D("12.01"),
        "liq_px": D("2739.04"),
        "loss_at_sl_usdt": D("1.1012804"),
        "net_profit_at_tp_usdt": D("2.000416"),
        "tp_target_usdt": D("2"),
    }
    assert fields(r, expected) == expected
    assert r.notes[1] == (
        "SL distance from ATR: 1.5 x 0.8 x 10.01 = 12.012 (loss-cap distance 13.24337831)"
    )


def test_e5_btc_spot_long_with_oco_capped_by_max_loss() -> None:
    r = sized(
        filters=BTC_SPOT,
        entry_px=D("60000.00"),
        exec_policy="Maker",
        params=spot(quote_budget_usdt=D(500)),
    )
    expected = {
        "market": "SPOT",
        "qty": D("0.00833"),
        "notional": D("499.8"),
        "margin": D("499.8"),
        "leverage": 1,
        "exit_qty": D("0.00832"),
        "sl_px": D("59975.83"),
        "tp_px": D("66132.19"),
        "sl_distance": D("24.17"),
        "liq_px": None,
        "fee_entry_rate": D("0.001"),
        "loss_at_sl_usdt": D("1.1999336695"),
        "net_profit_at_tp_usdt": D("49.9800417365"),
        "tp_target_usdt": D("49.98"),
        "guardian_stop_px": None,
        "oco": OcoLegs(
            qty=D("0.00832"),
            above_px=D("66132.19"),
            below_stop_px=D("59975.83"),
            below_limit_px=D("59915.85"),
            loss_at_below_limit_usdt=D("1.6985684025"),
        ),
    }
    assert fields(r, expected) == expected
    assert r.notes == (
        "qty 0.00833 = 500 USDT / entry 60000, rounded down to step 0.00001",
        "entry fee 0.001 taken in base: 0.00832167 left, exit qty 0.00832",
        "SL distance capped by max_loss_usdt 1.2: loss-cap distance 24.17797879 "
        "< ATR distance 1.5 x 1 x 90 = 135",
        "TP for net profit >= 49.98 USDT = 0.1 x margin 499.8 x tp_mult 1",
    )


def test_e6_btc_spot_long_with_guardian_stop_from_atr() -> None:
    r = sized(
        filters=BTC_SPOT,
        entry_px=D("60000.00"),
        exec_policy="Maker",
        params=spot(spot_protection="guardian"),
    )
    expected = {
        "qty": D("0.00166"),
        "notional": D("99.6"),
        "exit_qty": D("0.00165"),
        "sl_px": D("59865.00"),
        "tp_px": D("66131.87"),
        "loss_at_sl_usdt": D("0.42225315"),
        "net_profit_at_tp_usdt": D("9.9600077103"),
        "tp_target_usdt": D("9.96"),
        "oco": None,
        "guardian_stop_px": D("59865.00"),
    }
    assert fields(r, expected) == expected


def test_e7_futures_grid_anchored_at_min_price_and_min_qty() -> None:
    filters = SymbolFilters(
        tick_size=D("0.1"),
        step_size=D("0.01"),
        min_qty=D("0.005"),
        min_notional=D("5"),
        min_price=D("0.05"),
    )
    r = sized(filters=filters, entry_px=D("100.05"), atr=D("0.8"), params=fut(leverage=5))
    expected = {
        "qty": D("0.995"),
        "notional": D("99.54975"),
        "margin": D("19.90995"),
        "sl_px": D("98.95"),
        "tp_px": D("102.15"),
        "liq_px": D("80.45"),
        "loss_at_sl_usdt": D("1.1935025"),
        "net_profit_at_tp_usdt": D("2.019397275"),
        "tp_target_usdt": D("1.990995"),
    }
    assert fields(r, expected) == expected


# --- hand-worked skips -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "detail", "sentence"),
    [
        pytest.param(
            {"size_mult": 0.012},
            "SIZING.BELOW_MIN_NOTIONAL",
            "qty 0 below min_qty 0.001 (notional 4.8 USDT at 60000, budget margin 0.24 x "
            "leverage 20)",
            id="s1-below-min-qty",
        ),
        pytest.param(
            {"filters": ETH_FUT, "entry_px": D("3000.00"), "size_mult": 0.05},
            "SIZING.BELOW_MIN_NOTIONAL",
            "notional 18 USDT (qty 0.006 at 3000) below min_notional 20 (budget margin 1 x "
            "leverage 20)",
            id="s2-below-min-notional",
        ),
        pytest.param(
            {"atr": D("600"), "params": fut(leverage=100, max_loss_usdt=D(50))},
            "SIZING.LIQUIDATION",
            "SL 59100 is not above the liquidation buffer 59656.62650602 (LP 59638.55421687 + "
            "0.05 x |60000 - LP|; leverage 100, maintenance rate 0.004, amount 0)",
            id="s3-stop-beyond-liquidation-buffer",
        ),
        pytest.param(
            {"params": fut(leverage=100)},
            "SIZING.LOSS_CAP",
            "fees alone reach max_loss_usdt 1.2: entry fee 0.99 + exit fee 0.99 at entry 60000 "
            "= 1.98 USDT for qty 0.033",
            id="s4-fees-alone-reach-the-cap",
        ),
        pytest.param(
            {"params": fut(max_loss_usdt=D("0.3605"))},
            "SIZING.SL_TOO_TIGHT",
            "SL distance under one tick 0.1: ATR distance 1.5 x 1 x 90 = 135, loss-cap distance "
            "0.08337502; the stop rounds to the entry 60000",
            id="s5-stop-under-one-tick",
        ),
        pytest.param(
            {
                "side": "SELL",
                "filters": ETH_FUT,
                "entry_px": D("2500.00"),
                "atr": D("10"),
                "sl_mult": 0.8,
                "tp_mult": 100.0,
                "exec_policy": "Maker",
                "params": fut(leverage=10),
            },
            "SIZING.TP_INVALID",
            "short TP -0.5 for net target 200 USDT is below the lowest legal price 39.86 "
            "(entry 2500, qty 0.08)",
            id="s6-short-tp-below-zero",
        ),
        pytest.param(
            {
                "filters": BTC_SPOT,
                "entry_px": D("60000.00"),
                "exec_policy": "Maker",
                "params": spot(quote_budget_usdt=D("5.5")),
            },
            "SIZING.OCO_LEG_BELOW_MIN_NOTIONAL",
            "OCO below (stop-limit) leg notional 4.7844104 USDT (qty 0.00008 at 59805.13) below "
            "min_notional 5",
            id="s7-oco-stop-leg-below-min-notional",
        ),
        pytest.param(
            {"side": "SELL", "filters": BTC_SPOT, "params": spot()},
            "SIZING.SPOT_SELL_NO_POSITION",
            "a SPOT SELL sells a held base asset, and sizing has no position source (spec Part B1)",
            id="s8-spot-sell",
        ),
        pytest.param(
            {"params": fut(leverage=125, max_loss_usdt=D(50), maintenance_margin_rate=D("0.01"))},
            "SIZING.LIQUIDATION",
            "liquidation price 60121.21212121 is not below entry 60000: the margin is under the "
            "maintenance margin (leverage 125, maintenance rate 0.01, amount 0)",
            id="s9-liquidation-above-entry",
        ),
    ],
)
def test_hand_worked_skips(changes: dict[str, Any], detail: str, sentence: str) -> None:
    assert run(**changes) == SizingSkip(detail, sentence)


# --- lot filters, entry snapping, bad input ----------------------------------------------------

COARSE_MARKET_LOT = msgspec.structs.replace(
    BTC_FUT, market_step_size=D("0.002"), market_min_qty=D("0.002")
)


@pytest.mark.parametrize(
    ("policy", "filters", "qty"),
    [
        ("Maker", COARSE_MARKET_LOT, D("0.007")),
        ("MakerThenTaker", COARSE_MARKET_LOT, D("0.006")),
        ("Taker", COARSE_MARKET_LOT, D("0.006")),
        ("Maker", msgspec.structs.replace(BTC_FUT, market_max_qty=D("0.005")), D("0.007")),
        ("Taker", msgspec.structs.replace(BTC_FUT, market_max_qty=D("0.005")), D("0.005")),
        ("Maker", msgspec.structs.replace(BTC_FUT, max_qty=D("0.004")), D("0.004")),
    ],
)
def test_market_lot_size_binds_every_policy_but_maker(
    policy: str, filters: SymbolFilters, qty: Decimal
) -> None:
    # 22 USDT x 20 / 60000 = 0.00733: LOT_SIZE gives 0.007, the 0.002 market grid 0.006.
    assert sized(size_mult=1.1, exec_policy=policy, filters=filters).qty == qty


def test_max_qty_clamp_is_noted() -> None:
    r = sized(exec_policy="Maker", filters=msgspec.structs.replace(BTC_FUT, max_qty=D("0.004")))
    assert r.notes[:2] == (
        "qty 0.006 = 400 USDT / entry 60000, rounded down to step 0.001",
        "qty clamped to max_qty 0.004: 0.004",
    )


@pytest.mark.parametrize(
    ("side", "policy", "entry", "how"),
    [
        ("BUY", "Maker", D("60000.0"), "passive side, Maker"),
        ("BUY", "Taker", D("60000.1"), "adverse side, Taker"),
        ("SELL", "Maker", D("60000.1"), "passive side, Maker"),
        ("SELL", "MakerThenTaker", D("60000.0"), "adverse side, MakerThenTaker"),
    ],
)
def test_entry_snaps_to_the_tick(side: str, policy: str, entry: Decimal, how: str) -> None:
    r = sized(side=side, exec_policy=policy, entry_px=D("60000.05"))
    assert r.entry_px == entry
    assert f"entry 60000.05 snapped to tick 0.1: {entry.normalize():f} ({how})" in r.notes


def test_float_multipliers_never_leak_binary_noise() -> None:
    r = sized(size_mult=0.1 + 0.2, exec_policy="Maker")  # 0.30000000000000004
    assert (r.qty, r.notional, r.margin) == (D("0.002"), D("120"), D("6"))
    assert "0.30000000000000004" not in msgspec.json.encode(r).decode()
    assert (
        r.notes[0]
        == "qty 0.002 = 120.000000000000016 USDT / entry 60000, rounded down to step 0.001"
    )


def test_sized_round_trips_through_json() -> None:
    r = sized(filters=BTC_SPOT, entry_px=D("60000.00"), params=spot(quote_budget_usdt=D(500)))
    text = msgspec.json.encode(r)
    assert msgspec.json.decode(text, type=Sized) == r
    assert b'"qty":"0.00833"' in text


@pytest.mark.parametrize(
    ("changes", "sentence"),
    [
        ({"entry_px": D("NaN")}, "entry_px must be a finite number, got NaN"),
        ({"entry_px": float("inf")}, "entry_px must be a finite number, got Infinity"),
        ({"entry_px": D("1e30")}, "entry_px 1.000000E+30 is outside 1e-18..1e18"),
        ({"entry_px": D("100")}, "entry_px 100 is below the lowest legal price 556.8"),
        ({"entry_px": "60000"}, "entry_px must be a number, got str"),
        ({"atr": D(0)}, "atr must be > 0, got 0"),
        ({"size_mult": 0.0}, "size_mult must be > 0, got 0"),
        ({"size_mult": -1.5}, "size_mult must be > 0, got -1.5"),
        ({"sl_mult": float("nan")}, "sl_mult must be a finite number, got NaN"),
        ({"side": "LONG"}, "side must be 'BUY' or 'SELL', got 'LONG'"),
        ({"exec_policy": None}, "exec_policy must be a string, got NoneType"),
        ({"params": fut(leverage=0)}, "leverage must be an integer >= 1, got 0"),
        ({"params": fut(fee_taker=D(1))}, "fee_taker must be below 1, got 1"),
        ({"params": fut(max_loss_usdt=D(0))}, "max_loss_usdt must be > 0, got 0"),
        (
            {"filters": msgspec.structs.replace(BTC_FUT, tick_size=D(0))},
            "tick_size must be > 0, got 0",
        ),
        (
            {"filters": msgspec.structs.replace(BTC_FUT, max_qty=D("0.0005"))},
            "max_qty 0.0005 is below min_qty 0.001",
        ),
        (
            {"filters": msgspec.structs.replace(BTC_FUT, market_min_qty=D("0.0015"))},
            "LOT_SIZE (step 0.001 from 0.001) and MARKET_LOT_SIZE (step 0.001 from 0.0015) "
            "share no quantity",
        ),
        (
            {"entry_px": D("60000." + "1" * 60)},
            "the inputs need more than 50 exact digits (Inexact)",
        ),
    ],
)
def test_bad_input_is_a_skip_with_a_sentence(changes: dict[str, Any], sentence: str) -> None:
    assert run(**changes) == SizingSkip("SIZING.BAD_INPUT", sentence)


BAD_TICK = msgspec.structs.replace(BTC_FUT, tick_size=D(0))
BAD_STEP = msgspec.structs.replace(BTC_FUT, step_size=D(0))


@pytest.mark.parametrize(
    ("changes", "sentence"),
    [  # inputs are read in order: side, params, size_mult, price filter, entry, atr, lot sizes
        ({"params": fut(max_loss_usdt=D(0)), "size_mult": 0.0}, "max_loss_usdt must be > 0, got 0"),
        ({"filters": BAD_TICK, "size_mult": 0.0}, "size_mult must be > 0, got 0"),
        ({"filters": BAD_TICK, "entry_px": D(0)}, "tick_size must be > 0, got 0"),
        ({"filters": BAD_STEP, "atr": D(0)}, "atr must be > 0, got 0"),
        ({"filters": BAD_STEP, "tp_mult": -1.0}, "tp_mult must be > 0, got -1"),
        ({"filters": BAD_STEP}, "step_size must be > 0, got 0"),
        ({"params": fut(leverage=0), "side": "LONG"}, "side must be 'BUY' or 'SELL', got 'LONG'"),
    ],
)
def test_the_first_problem_in_reading_order_is_reported_every_time(
    changes: dict[str, Any], sentence: str
) -> None:
    # The parameters and filters are checked once per (params, filters, policy) and remembered,
    # problems included: the second call must report the same first problem as the first.
    assert run(**changes) == run(**changes) == SizingSkip("SIZING.BAD_INPUT", sentence)


def test_a_spot_sell_skips_before_the_parameters_are_read() -> None:
    r = run(side="SELL", params=spot(max_loss_usdt=D(0)), filters=BTC_SPOT)
    assert isinstance(r, SizingSkip) and r.reason_detail == "SIZING.SPOT_SELL_NO_POSITION"


@settings(max_examples=500, deadline=None)
@given(
    st.decimals(allow_nan=False, allow_infinity=False) | st.sampled_from([D("-0.000"), D("1E+3")])
)
def test_sentence_numbers_are_plain_decimals_without_trailing_zeros(x: Decimal) -> None:
    from s3.core.sizing_inputs import fmt as _fmt

    plain = "0" if x == 0 else format(x, "f")
    if x != 0 and "." in plain:
        plain = plain.rstrip("0").rstrip(".")
    assert _fmt(x) == plain


def test_a_float_subclass_is_never_served_a_remembered_multiplier() -> None:
    class Odd(float):
        def __repr__(self) -> str:
            return "0.5000001"

    assert sized(size_mult=0.5).notes[1].startswith("qty 0.003 = 200 USDT")
    assert sized(size_mult=Odd(0.5)).notes[1].startswith("qty 0.003 = 200.00004 USDT")


def test_long_stop_is_raised_to_the_lowest_legal_price() -> None:
    # L1 with a 59800 stop distance: 60000 - 59800 = 200 is below BTCUSDT's minPrice 556.80.
    params = fut(leverage=1, margin_base_usdt=D(400), max_loss_usdt=D(500), atr_mult=D(1))
    r = sized(exec_policy="Maker", atr=D(59800), params=params)
    assert (r.qty, r.sl_px, r.sl_distance) == (D("0.006"), D("556.80"), D("59443.2"))
    assert r.loss_at_sl_usdt == D("356.7328704")  # 356.6592 + 0.072 + 0.0016704
    assert r.notes[2] == "SL raised to the lowest legal price 556.8"


SYNTH = SymbolFilters(
    tick_size=D("0.01"), step_size=D("0.001"), min_qty=D("0.001"), min_notional=D(5)
)
EDGE = fut(
    leverage=10,
    max_loss_usdt=D(20),
    atr_mult=D(1),
    maintenance_margin_rate=D(0),
    liquidation_buffer=D("0.5"),
)


def test_stop_exactly_on_the_liquidation_buffer_skips() -> None:
    # qty 2, LP = (200 - 20)/2 = 90, buffer edge 90 + 0.5 x 10 = 95: the SL must be above 95.
    r = run(filters=SYNTH, entry_px=D("100.00"), atr=D(5), params=EDGE)
    assert r == SizingSkip(
        "SIZING.LIQUIDATION",
        "SL 95 is not above the liquidation buffer 95 (LP 90 + 0.5 x |100 - LP|; leverage 10, "
        "maintenance rate 0, amount 0)",
    )
    inside = sized(filters=SYNTH, entry_px=D("100.00"), atr=D("4.99"), params=EDGE)
    assert (inside.qty, inside.sl_px, inside.liq_px) == (D(2), D("95.01"), D("90.00"))


def test_long_that_cannot_be_liquidated_has_no_liq_px() -> None:
    r = sized(exec_policy="Maker", params=fut(leverage=1, margin_base_usdt=D(400)))
    assert (r.qty, r.liq_px) == (D("0.006"), None)
    assert "no liquidation price above zero (LP 0)" in r.notes


# --- docs/sizing.md cannot rot ---------------------------------------------------------------

SIZING_MD = Path(__file__).resolve().parents[3] / "docs" / "sizing.md"


def test_the_docs_example_runs() -> None:
    block = re.search(r"```python\n(.*?)```", SIZING_MD.read_text(), re.S)
    assert block is not None
    exec(compile(block.group(1), str(SIZING_MD), "exec"), {})


def test_every_test_the_docs_name_exists() -> None:
    named = set(re.findall(r"`(test_[a-z0-9_]+)`", SIZING_MD.read_text()))
    assert len(named) >= 12
    assert named <= set(globals())


# --- properties --------------------------------------------------------------------------------

F = Fraction
DETAILS = {
    "SIZING.BELOW_MIN_NOTIONAL",
    "SIZING.SL_TOO_TIGHT",
    "SIZING.LIQUIDATION",
    "SIZING.LOSS_CAP",
    "SIZING.TP_INVALID",
    "SIZING.SPOT_SELL_NO_POSITION",
    "SIZING.OCO_LEG_BELOW_MIN_NOTIONAL",
    "SIZING.BAD_INPUT",
}


DIGIT = st.sampled_from([1, 2, 5, 10, 25])
MULT = st.floats(0.05, 3.0)


@st.composite
def filters_st(draw: st.DrawFn, magnitude: int) -> SymbolFilters:
    """Filters for a price near 10**magnitude: tick 1e-2..1e-6 of it, step x price 1e-3..2.5 USDT."""
    tick = D(draw(DIGIT)).scaleb(magnitude - draw(st.integers(2, 6)))
    step = D(draw(DIGIT)).scaleb(-magnitude + draw(st.integers(-3, -1)))
    min_qty = step * draw(st.integers(1, 4)) + draw(st.sampled_from([D(0), step / 2]))
    min_price = draw(st.sampled_from([D(0), tick * 3, tick * 3 + tick / 2]))
    market = draw(st.booleans())
    return SymbolFilters(
        tick_size=tick,
        step_size=step,
        min_qty=min_qty,
        min_notional=D(draw(st.integers(0, 10))),
        min_price=min_price,
        max_qty=draw(st.sampled_from([None, min_qty + step * 10**5, D(10**9)])),
        market_step_size=step * draw(st.sampled_from([1, 2, 5])) if market else None,
        market_min_qty=draw(st.sampled_from([None, min_qty])) if market else None,
        market_max_qty=draw(st.sampled_from([None, min_qty + step * 10**4])) if market else None,
        anchored=draw(st.booleans()),
    )


@st.composite
def params_st(draw: st.DrawFn, market: str) -> SizingParams:
    maker = D(draw(st.integers(0, 20))).scaleb(-4)
    return SizingParams(
        market=market,  # type: ignore[arg-type]
        margin_base_usdt=D(draw(st.integers(5, 200))),
        leverage=draw(st.sampled_from([1, 2, 3, 5, 7, 10, 20, 50, 75, 125])),
        quote_budget_usdt=D(draw(st.integers(10, 5000))),
        max_loss_usdt=D(draw(st.integers(1, 10_000))).scaleb(-2),
        atr_mult=D(draw(st.integers(5, 30))).scaleb(-1),
        tp_min_net_roe=D(draw(st.integers(0, 50))).scaleb(-2),
        fee_maker=maker,
        fee_taker=maker + D(draw(st.integers(0, 20))).scaleb(-4),
        maintenance_margin_rate=D(draw(st.integers(0, 200))).scaleb(-4),
        maintenance_amount=D(draw(st.sampled_from([0, 0, 0, 1, 25]))),
        liquidation_buffer=D(draw(st.integers(0, 20))).scaleb(-2),
        spot_protection=draw(st.sampled_from(["oco", "guardian"])),
        stop_limit_offset=D(draw(st.integers(0, 50))).scaleb(-4),
    )


@st.composite
def calls(draw: st.DrawFn) -> dict[str, Any]:
    """Realistic calls over eight orders of magnitude of price (1e-4 .. 1e5)."""
    magnitude = draw(st.integers(-3, 5))
    filters = draw(filters_st(magnitude))
    market = draw(st.sampled_from(["FUT", "SPOT"]))
    entry = filters.min_price + D(draw(st.integers(10**4, 10**6))).scaleb(magnitude - 5)
    return {
        "side": "BUY" if market == "SPOT" else draw(st.sampled_from(["BUY", "SELL"])),
        "entry_px": entry,
        "atr": entry * D(draw(st.integers(1, 500) | st.integers(1, 5000))).scaleb(-4),
        "size_mult": draw(MULT),
        "sl_mult": draw(MULT),
        "tp_mult": draw(MULT),
        "exec_policy": draw(st.sampled_from(["Maker", "MakerThenTaker", "Taker", "Other"])),
        "filters": filters,
        "params": draw(params_st(market)),
    }


def on_grid(x: Decimal, anchor: Decimal, step: Decimal) -> bool:
    return (F(x) - F(anchor)) % F(step) == 0


def check_sized(call: dict[str, Any], r: Sized) -> None:
    f: SymbolFilters = call["filters"]
    p: SizingParams = call["params"]
    long, is_spot, maker = call["side"] == "BUY", p.market == "SPOT", call["exec_policy"] == "Maker"
    px_anchor = f.min_price if f.anchored else D(0)
    qty_anchor = f.min_qty if f.anchored else D(0)
    q, e, sl, tp = F(r.qty), F(r.entry_px), F(r.sl_px), F(r.tp_px)
    f_in = F(p.fee_maker if maker else p.fee_taker)
    f_sl, f_tp = F(p.fee_taker), F(p.fee_maker)
    assert (r.fee_entry_rate, r.fee_exit_sl_rate, r.fee_exit_tp_rate) == (f_in, f_sl, f_tp)

    # Quantity: on the lot grid (and the market lot grid when it applies), within the budget.
    assert on_grid(r.qty, qty_anchor, f.step_size)
    assert r.qty >= f.min_qty and r.qty > 0
    assert f.max_qty is None or r.qty <= f.max_qty
    market_lot = not maker and any(
        x is not None for x in (f.market_step_size, f.market_min_qty, f.market_max_qty)
    )
    if market_lot:
        m_min = f.min_qty if f.market_min_qty is None else f.market_min_qty
        assert on_grid(r.qty, m_min if f.anchored else D(0), f.market_step_size or f.step_size)
        assert r.qty >= m_min
        assert f.market_max_qty is None or r.qty <= f.market_max_qty
    size = F(repr(call["size_mult"]))
    budget = F(p.quote_budget_usdt) * size if is_spot else F(p.margin_base_usdt) * size * p.leverage
    assert F(r.notional) == q * e <= budget
    assert F(r.notional) >= F(f.min_notional)
    if not market_lot:  # one more step would break the budget or max_qty
        more = q + F(f.step_size)
        assert more * e > budget or (f.max_qty is not None and more > F(f.max_qty))

    # Prices: on the tick grid, on the right side of entry, SL above zero.
    for px in (r.entry_px, r.sl_px, r.tp_px):
        assert on_grid(px, px_anchor, f.tick_size)
        assert px >= f.min_price and px > 0
    given = F(call["entry_px"])
    assert abs(given - e) < F(f.tick_size)
    assert (e <= given) if long == maker else (e >= given)  # Maker passive, others adverse
    assert (sl < e < tp) if long else (tp < e < sl)
    assert F(r.sl_distance) == abs(e - sl) >= F(f.tick_size)

    # Loss at the SL and net profit at the TP, fees included, against the caps.
    if is_spot:
        base, leg = q * (1 - f_in), F(r.exit_qty)
        assert on_grid(r.exit_qty, qty_anchor, f.step_size)
        assert F(f.min_qty) <= leg <= base
        if p.spot_protection == "oco":  # a limit order: LOT_SIZE alone
            assert base < leg + F(f.step_size)

        def loss(x: Fraction) -> Fraction:
            return q * e - base * x + leg * x * f_sl

        def net(x: Fraction) -> Fraction:
            return base * x - leg * x * f_tp - q * e

        margin = q * e
    else:
        sign = 1 if long else -1

        def loss(x: Fraction) -> Fraction:
            return sign * q * (e - x) + q * e * f_in + q * x * f_sl

        def net(x: Fraction) -> Fraction:
            return sign * q * (x - e) - q * e * f_in - q * x * f_tp

        margin = F(math.ceil(q * e / p.leverage * 10**8), 10**8)
    cap = F(p.max_loss_usdt)
    assert F(r.margin) == margin
    assert F(r.loss_at_sl_usdt) == loss(sl) <= cap
    target = F(p.tp_min_net_roe) * margin * F(repr(call["tp_mult"]))
    assert F(r.tp_target_usdt) == target
    assert F(r.net_profit_at_tp_usdt) == net(tp) >= target

    # Tight: one tick further out breaks a limit, one tick closer in misses the target.
    tick = F(f.tick_size) * (1 if long else -1)
    d_atr = F(p.atr_mult) * F(repr(call["sl_mult"])) * F(call["atr"])
    assert F(r.sl_distance) <= d_atr  # rounding and clamping only move the stop toward entry
    wider = sl - tick
    assert abs(e - wider) > d_atr or loss(wider) > cap or wider < F(f.min_price) or wider <= 0
    closer = tp - tick
    assert net(closer) < target or closer == e

    if is_spot:
        assert r.liq_px is None
        if p.spot_protection == "guardian":
            assert (r.oco, r.guardian_stop_px) == (None, r.sl_px)
            assert leg * sl >= F(f.min_notional)
        else:
            assert r.oco is not None and r.guardian_stop_px is None
            limit = F(r.oco.below_limit_px)
            assert (r.oco.qty, r.oco.above_px, r.oco.below_stop_px) == (
                r.exit_qty,
                r.tp_px,
                r.sl_px,
            )
            assert on_grid(r.oco.below_limit_px, px_anchor, f.tick_size)
            assert 0 < limit <= sl
            assert leg * tp >= F(f.min_notional) and leg * limit >= F(f.min_notional)
            assert F(r.oco.loss_at_below_limit_usdt) == loss(limit)
        return

    # Futures: the SL sits strictly inside the liquidation buffer (isolated, one-way).
    mmr, cum, buf = F(p.maintenance_margin_rate), F(p.maintenance_amount), F(p.liquidation_buffer)
    wb = q * e / p.leverage
    lp = (q * e - wb - cum) / (q * (1 - mmr)) if long else (wb + cum + q * e) / (q * (1 + mmr))
    if long and lp <= 0:
        assert r.liq_px is None
        return
    assert r.liq_px is not None and on_grid(r.liq_px, px_anchor, f.tick_size)
    assert abs(F(r.liq_px) - lp) < F(f.tick_size)
    if long:
        assert lp < e and sl > lp + buf * abs(e - lp) and F(r.liq_px) >= lp
    else:
        assert lp > e and sl < lp - buf * abs(e - lp) and F(r.liq_px) <= lp


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls())
def test_every_sized_entry_is_legal_and_within_the_caps(call: dict[str, Any]) -> None:
    r = size_entry(**call)
    assert r == size_entry(**call)  # deterministic
    if isinstance(r, SizingSkip):
        assert r.reason_detail in DETAILS and r.sentence
        return
    check_sized(call, r)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls(), MULT, MULT)
def test_size_is_monotone_in_size_mult(call: dict[str, Any], a: float, b: float) -> None:
    small = size_entry(**(call | {"size_mult": min(a, b)}))
    large = size_entry(**(call | {"size_mult": max(a, b)}))
    if isinstance(small, Sized) and isinstance(large, Sized):
        assert small.qty <= large.qty
    if isinstance(large, SizingSkip) and large.reason_detail == "SIZING.BELOW_MIN_NOTIONAL":
        assert isinstance(small, SizingSkip)
        assert small.reason_detail in {"SIZING.BELOW_MIN_NOTIONAL", "SIZING.BAD_INPUT"}


JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=5),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.sampled_from([D("sNaN"), D("-0"), D("1e-400"), D("9e999999"), D("0.1")]),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls(), st.data())
def test_any_input_gives_a_result_never_an_exception(
    call: dict[str, Any], data: st.DataObject
) -> None:
    name = data.draw(st.sampled_from([*call, "filters.*", "params.*"]))
    if name == "filters.*":
        field = data.draw(st.sampled_from(SymbolFilters.__struct_fields__))
        call["filters"] = msgspec.structs.replace(call["filters"], **{field: data.draw(JUNK)})
    elif name == "params.*":
        field = data.draw(st.sampled_from(SizingParams.__struct_fields__))
        call["params"] = msgspec.structs.replace(call["params"], **{field: data.draw(JUNK)})
    else:
        call[name] = data.draw(JUNK)
    r = size_entry(**call)
    assert isinstance(r, Sized | SizingSkip)
    if isinstance(r, SizingSkip):
        assert r.reason_detail in DETAILS and r.sentence


def test_once_per_object_remembers_by_identity_and_only_hashable_arguments() -> None:
    from s3.core.sizing_inputs import once_per_object

    calls: list[object] = []

    @once_per_object
    def work(x: object) -> int:
        calls.append(x)
        return len(calls)

    a, b = tuple([1, 2]), tuple([1, 2])  # equal, not identical
    assert work(a) == work(a) == 1 and len(calls) == 1
    assert work(b) == 2  # another object: worked out again (a value match is not needed)
    unhashable = [1, 2]
    assert work(unhashable) == 3 and work(unhashable) == 4  # may change: never remembered
    for k in range(300):  # bounded: the table starts afresh
        work((k, "x"))
    assert work(a) == len(calls)
