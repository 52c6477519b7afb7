"""The sizer at its boundaries: every `<`/`<=` of s3/core/sizing.py met exactly, the short side of
each branch, leverage brackets and price bands (issue 17; found by mutation testing, see
docs/sizing.md "Mutation testing").

Numbers are chosen so every case can be checked in one's head: a tick and a lot of 1, entry 100,
no fees unless a case needs them, so qty = budget / 100, loss at a stop = qty x distance.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
import pytest

from s3.core.sizing import Bracket, Sized, SizingParams, SizingSkip, SymbolFilters, size_entry

D = Decimal
Z = SymbolFilters(tick_size=D(1), step_size=D(1), min_qty=D(1), min_notional=D(0))
ZERO_FEES: dict[str, Any] = {"fee_maker": D(0), "fee_taker": D(0)}


def params(**changes: Any) -> SizingParams:
    base: dict[str, Any] = {
        "market": "FUT",
        "margin_base_usdt": D(100),
        "leverage": 1,
        "quote_budget_usdt": D(100),
        "max_loss_usdt": D(50),
        "atr_mult": D(1),
        "tp_min_net_roe": D("0.1"),
        "maintenance_margin_rate": D(0),
        "liquidation_buffer": D(0),
        **ZERO_FEES,
    }
    return SizingParams(**(base | changes))


def spot(**changes: Any) -> SizingParams:
    return params(market="SPOT", **changes)


def run(**changes: Any) -> Sized | SizingSkip:
    call: dict[str, Any] = {
        "side": "BUY",
        "entry_px": D(100),
        "atr": D(10),
        "size_mult": 1.0,
        "sl_mult": 1.0,
        "tp_mult": 1.0,
        "exec_policy": "Maker",
        "filters": Z,
        "params": params(),
    }
    return size_entry(**(call | changes))


def ok(**changes: Any) -> Sized:
    r = run(**changes)
    assert isinstance(r, Sized), r
    return r


def skip(detail: str, **changes: Any) -> str:
    r = run(**changes)
    assert isinstance(r, SizingSkip), r
    assert r.reason_detail == detail, r
    return r.sentence


def filters(**changes: Any) -> SymbolFilters:
    return msgspec.structs.replace(Z, **changes)


# --- sides --------------------------------------------------------------------------------------


def test_long_and_short_are_sized_on_their_own_sides() -> None:
    long, short = ok(), ok(side="SELL")
    assert (long.side, long.qty, long.sl_px, long.tp_px) == ("BUY", 1, 90, 110)
    assert (short.side, short.qty, short.sl_px, short.tp_px) == ("SELL", 1, 110, 90)
    assert (long.loss_at_sl_usdt, short.loss_at_sl_usdt) == (10, 10)
    assert (long.net_profit_at_tp_usdt, short.net_profit_at_tp_usdt) == (10, 10)


@pytest.mark.parametrize(("side", "tp"), [("BUY", 101), ("SELL", 99)])
def test_a_tp_on_the_entry_moves_one_tick_away(side: str, tp: int) -> None:
    # No fees and no target: the TP solves to the entry itself (the `<=` boundary).
    r = ok(side=side, params=params(tp_min_net_roe=D(0)))
    assert r.tp_px == tp and "TP moved to one tick from entry 100" in r.notes


# --- quantity -----------------------------------------------------------------------------------


def test_quantity_boundaries() -> None:
    assert ok(filters=filters(min_notional=D(100))).notional == 100  # cost == min_notional
    assert "below min_notional 100.01" in skip(
        "SIZING.BELOW_MIN_NOTIONAL", filters=filters(min_notional=D("100.01"))
    )
    assert ok(filters=filters(min_qty=D(1))).qty == 1  # qty == min_qty
    assert "qty 0 below min_qty 1" in skip("SIZING.BELOW_MIN_NOTIONAL", size_mult=0.99)
    at_max = ok(size_mult=3.0, filters=filters(max_qty=D(3)))
    assert at_max.qty == 3 and not any("clamped" in n for n in at_max.notes)
    over = ok(size_mult=3.0, filters=filters(max_qty=D(2)))
    assert over.qty == 2 and "qty clamped to max_qty 2: 2" in over.notes


# --- the stop -----------------------------------------------------------------------------------


def test_fees_exactly_at_the_cap_skip() -> None:
    # Taker in and out at 1 %: 1 + 1 = 2 USDT of fees on a 100 USDT position.
    fees = {"fee_maker": D("0.01"), "fee_taker": D("0.01")}
    assert "= 2 USDT for qty 1" in skip(
        "SIZING.LOSS_CAP", exec_policy="Taker", params=params(max_loss_usdt=D(2), **fees)
    )
    # just above: the ATR stop 90 loses 101 - 89.1 = 11.9 <= 12
    assert ok(exec_policy="Taker", params=params(max_loss_usdt=D(12), **fees)).sl_px == 90


def test_the_atr_stop_holds_when_its_loss_is_exactly_the_cap() -> None:
    r = ok(params=params(max_loss_usdt=D(10)))  # loss at the ATR stop 90 is exactly 10
    assert r.sl_px == 90 and r.loss_at_sl_usdt == 10
    assert r.notes[1].startswith("SL distance from ATR: 1 x 1 x 10 = 10")
    capped = ok(params=params(max_loss_usdt=D("9.5")))
    assert capped.sl_px == 91 and capped.notes[1].startswith("SL distance capped by max_loss")


def test_a_stop_exactly_on_the_lowest_legal_price_is_not_raised() -> None:
    r = ok(filters=filters(min_price=D(90)))
    assert r.sl_px == 90 and not any("raised" in n for n in r.notes)
    raised = ok(atr=D(11), filters=filters(min_price=D(90)))
    assert raised.sl_px == 90 and "SL raised to the lowest legal price 90" in raised.notes


def test_a_stop_exactly_one_tick_away_is_kept() -> None:
    assert ok(atr=D(1)).sl_px == 99
    assert "SL distance under one tick 1" in skip("SIZING.SL_TOO_TIGHT", atr=D("0.5"))


# --- liquidation --------------------------------------------------------------------------------


@pytest.mark.parametrize(("side", "word"), [("BUY", "below"), ("SELL", "above")])
def test_a_liquidation_price_exactly_at_the_entry_skips(side: str, word: str) -> None:
    # maintenance rate 1/leverage: LP = entry on both sides.
    p = params(leverage=10, maintenance_margin_rate=D("0.1"))
    assert f"liquidation price 100 is not {word} entry 100" in skip(
        "SIZING.LIQUIDATION", side=side, params=p
    )


def test_short_stop_exactly_on_the_liquidation_buffer_skips() -> None:
    # Short x10, no maintenance: LP = 100 x 11/10 = 110, buffer edge 110 - 0.5 x 10 = 105.
    p = params(leverage=10, margin_base_usdt=D(10), liquidation_buffer=D("0.5"))
    assert skip("SIZING.LIQUIDATION", side="SELL", atr=D(5), params=p) == (
        "SL 105 is not below the liquidation buffer 105 (LP 110 - 0.5 x |100 - LP|; "
        "leverage 10, maintenance rate 0, amount 0)"
    )
    inside = ok(side="SELL", atr=D(4), params=p)
    assert (inside.sl_px, inside.liq_px) == (104, 110)


# --- take profit --------------------------------------------------------------------------------


def test_a_short_tp_exactly_on_the_lowest_legal_price_is_kept() -> None:
    assert ok(side="SELL", filters=filters(min_price=D(90))).tp_px == 90
    assert "short TP 90 for net target 10 USDT is below the lowest legal price 91" in skip(
        "SIZING.TP_INVALID", side="SELL", filters=filters(min_price=D(91))
    )


# --- spot exits ---------------------------------------------------------------------------------


def test_spot_exit_quantity_after_the_base_fee() -> None:
    fee = {"fee_maker": D("0.001"), "fee_taker": D("0.001")}
    assert skip("SIZING.OCO_LEG_BELOW_MIN_NOTIONAL", params=spot(**fee)) == (
        "exit qty 0 below min_qty 1 (bought 1, 0.999 left after the 0.001 base fee)"
    )
    two = ok(params=spot(quote_budget_usdt=D(200), **fee))  # 1.998 left: exactly min_qty
    assert (two.qty, two.exit_qty) == (2, 1)


def test_oco_and_guardian_legs_exactly_at_min_notional_pass() -> None:
    # SL 90, stop-limit floor(90 x 0.999) = 89, TP 110; one unit each.
    oco = ok(params=spot(), filters=filters(min_notional=D(89)))
    assert oco.oco is not None and oco.oco.below_limit_px == 89
    assert "OCO below (stop-limit) leg notional 89 USDT" in skip(
        "SIZING.OCO_LEG_BELOW_MIN_NOTIONAL", params=spot(), filters=filters(min_notional=D("89.5"))
    )
    g = spot(spot_protection="guardian")
    assert ok(params=g, filters=filters(min_notional=D(90))).guardian_stop_px == 90
    assert (
        skip("SIZING.OCO_LEG_BELOW_MIN_NOTIONAL", params=g, filters=filters(min_notional=D("90.5")))
        == "guardian stop notional 90 USDT (qty 1 at 90) below min_notional 90.5"
    )


# --- leverage brackets --------------------------------------------------------------------------

BRACKETS = (
    Bracket(D(0), D(1000), 10, D("0.01"), D(0)),
    Bracket(D(1000), D(5000), 5, D("0.02"), D(10)),
)
FINE = filters(tick_size=D("0.01"), brackets=BRACKETS)


def test_the_bracket_of_the_notional_caps_the_leverage() -> None:
    # notional 100 at x10 in bracket 1 (rate 0.01): LP 90.91, so a stop 5 away
    r = ok(atr=D(5), params=params(leverage=10, margin_base_usdt=D(10)), filters=FINE)
    assert "notional 100 USDT in leverage bracket 1: 0 <= notional < 1000, max leverage 10" in (
        r.notes
    )
    assert skip(
        "SIZING.LEVERAGE_BRACKET", params=params(leverage=11, margin_base_usdt=D(10)), filters=FINE
    ) == (
        "leverage 11 above 10, the most the bracket 1: 0 <= notional < 1000 allows "
        "(notional 100 USDT)"
    )
    # notional 1000 is the floor of bracket 2, not inside bracket 1
    assert "the most the bracket 2: 1000 <= notional < 5000 allows" in skip(
        "SIZING.LEVERAGE_BRACKET", params=params(leverage=10), filters=FINE
    )
    assert (
        skip(
            "SIZING.LEVERAGE_BRACKET",
            params=params(leverage=5, margin_base_usdt=D(1000)),
            filters=FINE,
        )
        == "notional 5000 USDT is not below the last leverage bracket's cap 5000"
    )


def test_the_liquidation_uses_the_bracket_s_rate_and_amount() -> None:
    # x5, qty 10, notional 1000 (bracket 2: rate 0.02, amount 10):
    # LP = (1000 x 4 - 10 x 5) / (10 x 0.98 x 5) = 3950 / 49 = 80.6122..., reported 80.62.
    p = params(leverage=5, margin_base_usdt=D(200), max_loss_usdt=D(100))
    r = ok(params=p, filters=FINE)
    assert r.liq_px == D("80.62")
    assert "notional 1000 USDT in leverage bracket 2: 1000 <= notional < 5000, max leverage 5" in (
        r.notes
    )
    assert "SL 90 clears the liquidation buffer 80.6122449 (LP 80.6122449)" in r.notes
    # without brackets the parameters' rate (0.004 here): 4000 / 49.8 = 80.32...
    plain = ok(params=msgspec.structs.replace(p, maintenance_margin_rate=D("0.004")), filters=Z)
    assert plain.liq_px == 81  # on the 1-tick grid, toward entry


# --- price bands --------------------------------------------------------------------------------


def test_percent_price_bands_hold_sl_and_tp() -> None:
    bands = filters(percent_price_up=D("1.05"), percent_price_down=D("0.95"))
    assert ok(atr=D(5), params=params(tp_min_net_roe=D("0.05")), filters=bands).tp_px == 105
    assert skip("SIZING.PRICE_BAND", atr=D(5), filters=bands) == (
        "TP 110 is above the PERCENT_PRICE band: entry 100 x multiplierUp 1.05 = 105"
    )
    assert skip("SIZING.PRICE_BAND", atr=D(6), filters=bands) == (
        "SL 94 is below the PERCENT_PRICE band: entry 100 x multiplierDown 0.95 = 95"
    )
    short = ok(side="SELL", atr=D(5), params=params(tp_min_net_roe=D("0.05")), filters=bands)
    assert (short.sl_px, short.tp_px) == (105, 95)


def test_max_price_holds_every_price() -> None:
    assert ok(filters=filters(max_price=D(110))).tp_px == 110
    assert skip("SIZING.PRICE_BAND", filters=filters(max_price=D(109))) == (
        "TP 110 is above the highest legal price 109 (maxPrice)"
    )
    assert skip("SIZING.PRICE_BAND", side="SELL", filters=filters(max_price=D(109))) == (
        "SL 110 is above the highest legal price 109 (maxPrice)"
    )
    assert skip("SIZING.BAD_INPUT", entry_px=D(120), filters=filters(max_price=D(110))) == (
        "entry_px 120 is above the highest legal price 110"
    )


def test_the_oco_stop_limit_leg_is_held_to_the_band_too() -> None:
    bands = filters(percent_price_up=D("1.1"), percent_price_down=D("0.9"))
    assert skip("SIZING.PRICE_BAND", params=spot(), filters=bands) == (
        "OCO stop-limit 89 is below the PERCENT_PRICE band: entry 100 x multiplierDown 0.9 = 90"
    )


@pytest.mark.parametrize(
    ("changes", "sentence"),
    [
        ({"max_price": D(0.5)}, "max_price 0.5 leaves no legal price (lowest 1)"),
        ({"percent_price_up": D("0.99")}, "percent_price_up must be >= 1, got 0.99"),
        ({"percent_price_down": D("1.01")}, "percent_price_down must be in (0, 1], got 1.01"),
        ({"brackets": [1]}, "bracket 1 must be a Bracket, got int"),
        ({"brackets": "x"}, "brackets must be a tuple of Bracket, got str"),
        (
            {"brackets": (Bracket(D(1), D(10), 5, D(0)),)},
            "bracket 1 notional_floor 1 is not the previous cap 0",
        ),
        (
            {"brackets": (Bracket(D(0), D(10), 5, D(0)), Bracket(D(11), D(20), 5, D(0)))},
            "bracket 2 notional_floor 11 is not the previous cap 10",
        ),
        (
            {"brackets": (Bracket(D(0), D(0), 5, D(0)),)},
            "bracket 1 notional_cap 0 is not above its floor 0",
        ),
        (
            {"brackets": (Bracket(D(0), D(10), 0, D(0)),)},
            "bracket 1 initial_leverage must be an integer >= 1, got 0",
        ),
        (
            {"brackets": (Bracket(D(0), D(10), True, D(0)),)},
            "bracket 1 initial_leverage must be an integer >= 1, got True",
        ),
        (
            {"brackets": (Bracket(D(0), D(10), 5, D(1)),)},
            "bracket 1 maint_margin_ratio must be below 1, got 1",
        ),
        (
            {"brackets": (Bracket(D(0), D(10), 5, D(0), D(-1)),)},
            "bracket 1 cum must be >= 0, got -1",
        ),
        ({"min_price": D(-1)}, "min_price must be >= 0, got -1"),
        ({"min_notional": D(-1)}, "min_notional must be >= 0, got -1"),
        ({"max_price": D(-1)}, "max_price must be >= 0, got -1"),
        ({"percent_price_up": D(-1)}, "percent_price_up must be >= 0, got -1"),
        ({"percent_price_down": D(-1)}, "percent_price_down must be >= 0, got -1"),
        (
            {"brackets": (Bracket(D(-1), D(10), 5, D(0)),)},
            "bracket 1 notional_floor must be >= 0, got -1",
        ),
        (
            {"brackets": (Bracket(D(0), D("NaN"), 5, D(0)),)},
            "bracket 1 notional_cap must be a finite number, got NaN",
        ),
    ],
)
def test_bad_bands_and_brackets_are_a_skip_with_a_sentence(
    changes: dict[str, Any], sentence: str
) -> None:
    assert skip("SIZING.BAD_INPUT", filters=filters(**changes)) == sentence


# --- found by mutation testing ------------------------------------------------------------------


def test_a_spot_exit_of_nothing_skips_even_with_min_qty_0() -> None:
    fee = {"fee_maker": D("0.001"), "fee_taker": D("0.001")}
    assert skip(
        "SIZING.OCO_LEG_BELOW_MIN_NOTIONAL", params=spot(**fee), filters=filters(min_qty=D(0))
    ) == ("exit qty 0 below min_qty 0 (bought 1, 0.999 left after the 0.001 base fee)")


def test_a_liquidation_skip_names_the_bracket() -> None:
    # x10, notional 100 in bracket 1 (rate 0.01): LP 90.909..., above the ATR stop 90.
    assert skip(
        "SIZING.LIQUIDATION", params=params(leverage=10, margin_base_usdt=D(10)), filters=FINE
    ) == (
        "SL 90 is not above the liquidation buffer 90.90909091 (LP 90.90909091 + 0 x |100 - LP|; "
        "leverage 10, bracket 1: 0 <= notional < 1000, maintenance rate 0.01, amount 0)"
    )


def test_a_long_liquidation_price_just_above_zero_is_reported() -> None:
    # x2, notional 100, amount 49.5: LP = (100 - 49.5 x 2) / (1 x 2) = 0.5, reported on the tick
    # toward entry: 1. (LP <= 0 would have no liq_px.)
    r = ok(params=params(leverage=2, margin_base_usdt=D(50), maintenance_amount=D("49.5")))
    assert r.liq_px == 1 and "SL 90 clears the liquidation buffer 0.5 (LP 0.5)" in r.notes


def test_an_oco_tp_leg_below_min_notional_is_named() -> None:
    # qty 2 (notional 200), 1.998 left after the base fee: the OCO sells 1; TP leg 1 x TP < 150.
    fee = {"fee_maker": D("0.001"), "fee_taker": D("0.001")}
    sentence = skip(
        "SIZING.OCO_LEG_BELOW_MIN_NOTIONAL",
        params=spot(quote_budget_usdt=D(200), max_loss_usdt=D(100), **fee),
        filters=filters(min_notional=D(150)),
    )
    assert sentence.startswith("OCO above (TP) leg notional ") and sentence.endswith(
        " below min_notional 150"
    )


def test_a_notional_past_the_last_of_three_brackets_names_the_last_cap() -> None:
    three = (*BRACKETS, Bracket(D(5000), D(8000), 2, D("0.05"), D(160)))
    p = params(leverage=2, margin_base_usdt=D(5000))  # notional 10000
    assert skip("SIZING.LEVERAGE_BRACKET", params=p, filters=filters(brackets=three)) == (
        "notional 10000 USDT is not below the last leverage bracket's cap 8000"
    )


def test_the_guards_behind_the_exact_solving_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stop and the target are solved exactly, so the guards after them cannot fire; with
    the solver broken on purpose they must skip rather than emit a stop past the cap or a TP
    short of the target."""
    import s3.core.sizing as sizing

    monkeypatch.setattr(sizing, "_solve", lambda case, coef, rhs: case.entry - 5)
    # the stop (loss-cap branch) at 95 loses 5 > cap 4 (the ATR stop 90 would lose 10)
    assert skip("SIZING.LOSS_CAP", params=params(max_loss_usdt=D(4))) == ("loss at SL 5 above 4")
    # the ATR stop 90 holds; the TP solved to 95 is moved to 101: net 1 below the target 10
    assert skip("SIZING.TP_INVALID") == "net at TP 1 below 10"


def test_a_quantity_of_nothing_skips_even_with_min_qty_0() -> None:
    assert skip("SIZING.BELOW_MIN_NOTIONAL", size_mult=0.5, filters=filters(min_qty=D(0))) == (
        "qty 0 below min_qty 0 (notional 50 USDT at 100, budget margin 50 x leverage 1)"
    )


def test_the_lowest_legal_price_may_be_1() -> None:
    # min_price 1 on a 1-tick grid: 1 is legal (an entry there sizes; its stop cannot be below)
    assert skip("SIZING.SL_TOO_TIGHT", entry_px=D(1), filters=filters(min_price=D(1))).startswith(
        "SL distance under one tick 1"
    )


def test_bands_of_exactly_one_are_legal_and_bind() -> None:
    assert skip("SIZING.PRICE_BAND", filters=filters(percent_price_up=D(1))) == (
        "TP 110 is above the PERCENT_PRICE band: entry 100 x multiplierUp 1 = 100"
    )
    assert skip("SIZING.PRICE_BAND", filters=filters(percent_price_down=D(1))) == (
        "SL 90 is below the PERCENT_PRICE band: entry 100 x multiplierDown 1 = 100"
    )
    # max_price on the lowest legal price: one legal price, 1
    assert skip("SIZING.SL_TOO_TIGHT", entry_px=D(1), filters=filters(max_price=D(1))).startswith(
        "SL distance under one tick 1"
    )
