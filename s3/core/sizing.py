"""Exact entry sizing (spec §2 step 4, Part B3/B4): qty, SL, TP, liquidation check and OCO legs.

Pure: no I/O, clock or randomness; it imports only `decimal`, `dataclasses`, `msgspec` and its
inputs' reader (`s3.core.sizing_inputs`). Every number it emits is a `Decimal` computed exactly,
and every price and quantity lies on its grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import (
    Decimal,
    DecimalException,
    getcontext,
    setcontext,
)
from typing import Literal

import msgspec

from s3.core.sizing_inputs import (
    EXACT,
    MARGIN_GRID,
    ZERO,
    Bracket,
    Case,
    SizingParams,
    SizingSkip,
    Skip,
    SymbolFilters,
    fmt,
    read_case,
    show,
    too_many_digits,
)

__all__ = [
    "Bracket",
    "OcoLegs",
    "Sized",
    "SizingParams",
    "SizingSkip",
    "SymbolFilters",
    "size_entry",
]


class OcoLegs(msgspec.Struct, frozen=True, kw_only=True):
    """The SELL OCO protecting a spot entry (exchange-rules §3.4); one quantity for both legs."""

    qty: Decimal
    above_px: Decimal
    below_stop_px: Decimal
    below_limit_px: Decimal
    loss_at_below_limit_usdt: Decimal
    """Loss if the stop-limit fills at its limit rather than at the stop (slippage allowance)."""
    above_type: Literal["LIMIT_MAKER"] = "LIMIT_MAKER"
    below_type: Literal["STOP_LOSS_LIMIT"] = "STOP_LOSS_LIMIT"


class Sized(msgspec.Struct, frozen=True, kw_only=True):
    """An exchange-legal entry: every price on the tick grid, every quantity on the lot grid."""

    market: Literal["FUT", "SPOT"]
    side: Literal["BUY", "SELL"]
    qty: Decimal
    entry_px: Decimal
    notional: Decimal
    margin: Decimal
    """FUT: qty*entry/leverage rounded up to 1e-8 USDT; SPOT: the quote spent, qty*entry."""
    leverage: int
    exit_qty: Decimal
    """What the SL/TP exits sell: FUT the position (qty); SPOT the base left after the entry fee,
    rounded down to the exit's lot grid (the OCO's quantity, or the guardian's)."""
    sl_px: Decimal
    tp_px: Decimal
    sl_distance: Decimal
    liq_px: Decimal | None
    fee_entry_rate: Decimal
    fee_exit_sl_rate: Decimal
    fee_exit_tp_rate: Decimal
    loss_at_sl_usdt: Decimal
    net_profit_at_tp_usdt: Decimal
    tp_target_usdt: Decimal
    oco: OcoLegs | None
    guardian_stop_px: Decimal | None
    notes: tuple[str, ...]


@dataclass(slots=True)
class _Pnl:
    """P&L of the position at an exit price P, fees included: loss = a - b*P, net = c*P - d."""

    a: Decimal
    b: Decimal
    c: Decimal
    d: Decimal

    def loss(self, p: Decimal) -> Decimal:
        return self.a - self.b * p

    def net(self, p: Decimal) -> Decimal:
        return self.c * p - self.d


def _quantity(case: Case, notes: list[str]) -> tuple[Decimal, Decimal]:
    """Round the budget's quantity DOWN to the lot grid (Part B3: never above the budget).
    Returns the quantity and its notional at the entry price."""
    e = case.entry
    notional_budget = case.budget if case.spot else case.budget * case.t.leverage
    lots = case.lots
    qty = lots.entry.floor(notional_budget, e)
    notes.append(
        f"qty {fmt(qty)} = {fmt(notional_budget)} USDT / entry {fmt(e)}, "
        f"rounded down to step {lots.entry.step_text}"
    )
    if lots.max_qty is not None and qty > lots.max_qty:
        qty = lots.entry.floor(lots.max_qty)
        notes.append(f"qty clamped to max_qty {fmt(lots.max_qty)}: {fmt(qty)}")
    if qty < lots.min_qty or qty <= 0:
        raise Skip(
            "SIZING.BELOW_MIN_NOTIONAL",
            f"qty {fmt(max(qty, ZERO))} below min_qty {fmt(lots.min_qty)} (notional "
            f"{fmt(notional_budget)} USDT at {fmt(e)}, {_budget_text(case)})",
        )
    cost = qty * e
    if cost < case.min_notional:
        raise Skip(
            "SIZING.BELOW_MIN_NOTIONAL",
            f"notional {fmt(cost)} USDT (qty {fmt(qty)} at {fmt(e)}) below min_notional "
            f"{fmt(case.min_notional)} ({_budget_text(case)})",
        )
    return qty, cost


def _budget_text(case: Case) -> str:
    if case.spot:
        return f"budget quote {fmt(case.budget)} USDT"
    return f"budget margin {fmt(case.budget)} x leverage {case.t.leverage}"


def _spot_exit_qty(case: Case, qty: Decimal, notes: list[str]) -> tuple[Decimal, Decimal]:
    """The base left after the buy fee (taken in base) and the exit quantity on its grid."""
    base = qty * (1 - case.t.f_in)
    leg = case.lots.exit.floor(base)
    notes.append(
        f"entry fee {fmt(case.t.f_in)} taken in base: {fmt(base)} left, exit qty {fmt(leg)}"
    )
    if leg < case.lots.exit_min_qty or leg <= 0:
        raise Skip(
            "SIZING.OCO_LEG_BELOW_MIN_NOTIONAL",
            f"exit qty {fmt(max(leg, ZERO))} below min_qty {fmt(case.lots.exit_min_qty)} "
            f"(bought {fmt(qty)}, {fmt(base)} left after the {fmt(case.t.f_in)} base fee)",
        )
    return base, leg


def _pnl(case: Case, qty: Decimal, cost: Decimal, base: Decimal, leg: Decimal) -> _Pnl:
    t = case.t
    if case.spot:
        # Fee in base: the position is `base`; `leg` of it is sold, paying the exit fee, and the
        # dust left over is valued at the exit price.
        return _Pnl(cost, base - leg * t.f_sl, base - leg * t.f_tp, cost)
    if case.long:
        paid = cost * t.up_in
        return _Pnl(paid, qty * t.down_sl, qty * t.down_tp, paid)
    got = cost * t.down_in
    return _Pnl(-got, -qty * t.up_sl, -qty * t.up_tp, -got)


def _solve(case: Case, coef: Decimal, rhs: Decimal) -> Decimal:
    """The grid price nearest the bound with coef*P >= rhs (coef > 0: ceil; coef < 0: floor)."""
    if coef > 0:
        return case.price.ceil(rhs, coef)
    return case.price.floor(-rhs, -coef)


def _stop(case: Case, pnl: _Pnl, qty: Decimal, notes: list[str]) -> tuple[Decimal, Decimal]:
    """Part B4: d = min(ATR distance, loss-cap distance); the SL rounds toward entry. Returns
    the SL and the loss there."""
    e, cap = case.entry, case.t.max_loss
    fees_only = pnl.loss(e)
    if fees_only >= cap:
        fee_in = qty * e * case.t.f_in
        raise Skip(
            "SIZING.LOSS_CAP",
            f"fees alone reach max_loss_usdt {case.t.max_loss_text}: entry fee {fmt(fee_in)} + exit fee "
            f"{fmt(fees_only - fee_in)} at entry {fmt(e)} = {fmt(fees_only)} USDT "
            f"for qty {fmt(qty)}",
        )
    d_atr = case.t.atr_mult * case.sl_mult * case.atr
    d_cap = show(abs(e * pnl.b - (pnl.a - cap)), abs(pnl.b))
    at_atr = e - d_atr if case.long else e + d_atr
    atr_text = f"{case.t.atr_mult_text} x {fmt(case.sl_mult)} x {fmt(case.atr)} = {fmt(d_atr)}"
    if pnl.loss(at_atr) > cap:
        sl = _solve(case, pnl.b, pnl.a - cap)
        notes.append(
            f"SL distance capped by max_loss_usdt {case.t.max_loss_text}: loss-cap distance {d_cap} "
            f"< ATR distance {atr_text}"
        )
    else:
        sl = case.price.ceil(at_atr) if case.long else case.price.floor(at_atr)
        notes.append(f"SL distance from ATR: {atr_text} (loss-cap distance {d_cap})")
    if sl < case.lowest_px:
        sl = case.lowest_px
        notes.append(f"SL raised to the lowest legal price {fmt(sl)}")
    if abs(e - sl) < case.price.step:
        raise Skip(
            "SIZING.SL_TOO_TIGHT",
            f"SL distance under one tick {case.price.step_text}: ATR distance {atr_text}, "
            f"loss-cap distance {d_cap}; the stop rounds to the entry {fmt(e)}",
        )
    loss = pnl.loss(sl)
    if loss > cap:  # unreachable by construction; never emit a stop that breaks the cap
        raise Skip("SIZING.LOSS_CAP", f"loss at SL {fmt(loss)} above {fmt(cap)}")
    return sl, loss


@dataclass(slots=True)
class _Maintenance:
    """The maintenance terms of the position: its bracket's, or the parameters' without brackets."""

    mmr: Decimal
    cum: Decimal
    text: str


def _bracket(case: Case, cost: Decimal, notes: list[str]) -> _Maintenance:
    """Exchange-rules §3.3/§3.5: the bracket with floor <= notional < cap must allow the leverage;
    its maintenance rate and amount then price the liquidation."""
    if not case.brackets:
        return _Maintenance(case.t.mmr, case.t.cum, case.t.maintenance_text)
    lev = case.t.leverage
    for n, b in enumerate(case.brackets, 1):
        if b.notional_floor <= cost < b.notional_cap:
            return _in_bracket(n, b, lev, cost, notes)
    last = case.brackets[-1]
    raise Skip(
        "SIZING.LEVERAGE_BRACKET",
        f"notional {fmt(cost)} USDT is not below the last leverage bracket's cap "
        f"{fmt(last.notional_cap)}",
    )


def _in_bracket(n: int, b: Bracket, lev: int, cost: Decimal, notes: list[str]) -> _Maintenance:
    span = f"bracket {n}: {fmt(b.notional_floor)} <= notional < {fmt(b.notional_cap)}"
    if lev > b.initial_leverage:
        raise Skip(
            "SIZING.LEVERAGE_BRACKET",
            f"leverage {lev} above {b.initial_leverage}, the most the {span} allows "
            f"(notional {fmt(cost)} USDT)",
        )
    mmr, cum = fmt(b.maint_margin_ratio), fmt(b.cum)
    notes.append(f"notional {fmt(cost)} USDT in leverage {span}, max leverage {b.initial_leverage}")
    return _Maintenance(
        b.maint_margin_ratio,
        b.cum,
        f"leverage {lev}, {span}, maintenance rate {mmr}, amount {cum}",
    )


def _liquidation(
    case: Case, qty: Decimal, cost: Decimal, sl: Decimal, m: _Maintenance, notes: list[str]
) -> Decimal | None:
    """Isolated one-way LP (exchange-rules §3.3) as num/den, with WB = qty*entry/leverage and
    the maintenance rate and amount of the position's bracket.

    An SL outside LP ± buffer*|EP - LP| skips: tightening it would silently change the stop.
    """
    e, lev, mmr, cum, buf = case.entry, case.t.leverage, m.mmr, m.cum, case.t.buffer
    if case.long:
        num, den = cost * (lev - 1) - cum * lev, qty * (1 - mmr) * lev
    else:
        num, den = cost * (lev + 1) + cum * lev, qty * (1 + mmr) * lev
    lp = show(num, den)
    if case.long and num <= 0:
        notes.append(f"no liquidation price above zero (LP {lp})")
        return None
    where = m.text
    if (num >= e * den) if case.long else (num <= e * den):
        raise Skip(
            "SIZING.LIQUIDATION",
            f"liquidation price {lp} is not {'below' if case.long else 'above'} entry {fmt(e)}: "
            f"the margin is under the maintenance margin ({where})",
        )
    edge_num = (1 - buf) * num + buf * e * den  # (LP ± buf*|E - LP|) * den
    edge = show(edge_num, den)
    if (sl * den <= edge_num) if case.long else (sl * den >= edge_num):
        word, sign = ("above", "+") if case.long else ("below", "-")
        raise Skip(
            "SIZING.LIQUIDATION",
            f"SL {fmt(sl)} is not {word} the liquidation buffer {edge} (LP {lp} {sign} "
            f"{fmt(buf)} x |{fmt(e)} - LP|; {where})",
        )
    notes.append(f"SL {fmt(sl)} clears the liquidation buffer {edge} (LP {lp})")
    # Reported on the tick grid toward entry, so the shown LP never understates the danger.
    return case.price.ceil(num, den) if case.long else case.price.floor(num, den)


def _take_profit(
    case: Case, pnl: _Pnl, qty: Decimal, target: Decimal, notes: list[str]
) -> tuple[Decimal, Decimal]:
    """The nearest grid price whose profit net of both fees is >= target (rounded away), and
    the net profit there."""
    e, tick = case.entry, case.price.step
    tp = _solve(case, pnl.c, target + pnl.d)
    if (tp <= e) if case.long else (tp >= e):
        tp = e + tick if case.long else e - tick
        notes.append(f"TP moved to one tick from entry {fmt(e)}")
    if tp < case.lowest_px:
        raise Skip(
            "SIZING.TP_INVALID",
            f"short TP {fmt(tp)} for net target {fmt(target)} USDT is below the lowest legal "
            f"price {fmt(case.lowest_px)} (entry {fmt(e)}, qty {fmt(qty)})",
        )
    net = pnl.net(tp)
    if net < target:  # unreachable by construction
        raise Skip("SIZING.TP_INVALID", f"net at TP {fmt(net)} below {fmt(target)}")
    return tp, net


def _oco(case: Case, pnl: _Pnl, leg: Decimal, sl: Decimal, tp: Decimal) -> OcoLegs:
    """Exchange-rules §3.4/§3.5: each leg must pass NOTIONAL at its own price."""
    limit = max(case.price.floor(sl * (1 - case.t.stop_limit_offset)), case.lowest_px)
    for name, px in (("above (TP)", tp), ("below (stop-limit)", limit)):
        if leg * px < case.min_notional:
            raise Skip(
                "SIZING.OCO_LEG_BELOW_MIN_NOTIONAL",
                f"OCO {name} leg notional {fmt(leg * px)} USDT (qty {fmt(leg)} at {fmt(px)}) "
                f"below min_notional {fmt(case.min_notional)}",
            )
    return OcoLegs(
        qty=leg,
        above_px=tp,
        below_stop_px=sl,
        below_limit_px=limit,
        loss_at_below_limit_usdt=pnl.loss(limit),
    )


def _bands(case: Case, legs: tuple[tuple[str, Decimal], ...]) -> None:
    """PRICE_FILTER maxPrice and PERCENT_PRICE (exchange-rules §3.2, §3.5): every exit price
    within [entry x down, entry x up] and at most the highest legal price, or no entry."""
    e, top, up, down = case.entry, case.highest_px, case.up, case.down
    for name, px in legs:
        if top is not None and px > top:
            raise Skip(
                "SIZING.PRICE_BAND",
                f"{name} {fmt(px)} is above the highest legal price {fmt(top)} (maxPrice)",
            )
        if up is not None and px > e * up:
            raise Skip(
                "SIZING.PRICE_BAND",
                f"{name} {fmt(px)} is above the PERCENT_PRICE band: entry {fmt(e)} x "
                f"multiplierUp {fmt(up)} = {fmt(e * up)}",
            )
        if down is not None and px < e * down:
            raise Skip(
                "SIZING.PRICE_BAND",
                f"{name} {fmt(px)} is below the PERCENT_PRICE band: entry {fmt(e)} x "
                f"multiplierDown {fmt(down)} = {fmt(e * down)}",
            )


def _guardian(case: Case, leg: Decimal, sl: Decimal) -> Decimal:
    """The guardian sells `leg` at market once the SL trades: it too must pass NOTIONAL."""
    if leg * sl < case.min_notional:
        raise Skip(
            "SIZING.OCO_LEG_BELOW_MIN_NOTIONAL",
            f"guardian stop notional {fmt(leg * sl)} USDT (qty {fmt(leg)} at {fmt(sl)}) "
            f"below min_notional {fmt(case.min_notional)}",
        )
    return sl


def _size(case: Case, notes: list[str]) -> Sized:
    e = case.entry
    qty, cost = _quantity(case, notes)
    base = leg = qty
    if case.spot:
        base, leg = _spot_exit_qty(case, qty, notes)
        margin = cost
    else:
        margin = MARGIN_GRID.ceil(cost, case.t.leverage_d)
    maintenance = None if case.spot else _bracket(case, cost, notes)
    pnl = _pnl(case, qty, cost, base, leg)
    sl, loss_at_sl = _stop(case, pnl, qty, notes)
    liq = None if maintenance is None else _liquidation(case, qty, cost, sl, maintenance, notes)
    target = case.t.tp_roe * margin * case.tp_mult
    notes.append(
        f"TP for net profit >= {fmt(target)} USDT = {case.t.tp_roe_text} x margin {fmt(margin)} "
        f"x tp_mult {fmt(case.tp_mult)}"
    )
    tp, net_at_tp = _take_profit(case, pnl, qty, target, notes)
    guardian = _guardian(case, leg, sl) if case.guardian else None
    oco = _oco(case, pnl, leg, sl, tp) if case.spot and not case.guardian else None
    legs = (("SL", sl), ("TP", tp))
    _bands(case, legs if oco is None else (*legs, ("OCO stop-limit", oco.below_limit_px)))
    return Sized(
        market="SPOT" if case.spot else "FUT",
        side="BUY" if case.long else "SELL",
        qty=qty,
        entry_px=e,
        notional=cost,
        margin=margin,
        leverage=case.t.leverage,
        exit_qty=leg,
        sl_px=sl,
        tp_px=tp,
        sl_distance=abs(e - sl),
        liq_px=liq,
        fee_entry_rate=case.t.f_in,
        fee_exit_sl_rate=case.t.f_sl,
        fee_exit_tp_rate=case.t.f_tp,
        loss_at_sl_usdt=loss_at_sl,
        net_profit_at_tp_usdt=net_at_tp,
        tp_target_usdt=target,
        oco=oco,
        guardian_stop_px=guardian,
        notes=tuple(notes),
    )


def size_entry(
    *,
    side: Literal["BUY", "SELL"],
    entry_px: Decimal,
    atr: Decimal,
    size_mult: float,
    sl_mult: float,
    tp_mult: float,
    exec_policy: str,
    filters: SymbolFilters,
    params: SizingParams,
) -> Sized | SizingSkip:
    """Size one entry: qty on the lot grid, SL and TP on the tick grid, fees and LP checked.

    Args:
        side: "BUY" (long) or "SELL" (short); a SPOT SELL skips (spec Part B1).
        entry_px: the expected entry price; snapped to the tick (passive for Maker, else adverse).
        atr: the ATR in price units.
        size_mult: the clamped L1 x L2 size multiplier; a float is read through `repr`.
        sl_mult: multiplies the ATR stop distance.
        tp_mult: multiplies the net profit target.
        exec_policy: "Maker" pays the maker fee on entry; any other policy pays taker.
        filters: the symbol's exchange filters.
        params: the bundle's sizing parameters.

    Returns:
        `Sized`, or `SizingSkip` with a `SIZING.*` detail and a sentence. It never raises.
    """
    notes: list[str] = []
    saved = getcontext()
    # EXACT itself, not `localcontext(EXACT)`: that copies the context on every call. Nothing
    # here changes the context; the flags it gathers are never read.
    setcontext(EXACT)
    try:
        mults = (size_mult, sl_mult, tp_mult)
        case = read_case(side, entry_px, atr, mults, exec_policy, filters, params, notes)
        return _size(case, notes)
    except Skip as skip:
        return SizingSkip(skip.detail, skip.sentence)
    except DecimalException as exc:
        return too_many_digits(exc)
    finally:
        setcontext(saved)
