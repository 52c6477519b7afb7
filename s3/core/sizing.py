"""Exact entry sizing (spec §2 step 4, Part B3/B4): qty, SL, TP, liquidation check and OCO legs.

Pure: no I/O, clock or randomness; it imports only `decimal`, `dataclasses` and `msgspec`. Every
number it emits is a `Decimal` computed exactly, and every price and quantity lies on its grid.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DecimalException,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    getcontext,
    setcontext,
)
from typing import Any, Literal, NoReturn, TypeVar

import msgspec

__all__ = ["OcoLegs", "Sized", "SizingParams", "SizingSkip", "SymbolFilters", "size_entry"]

_PREC = 50
# The whole sizer runs in this context: a result that would need more than _PREC digits raises
# Inexact (and becomes a BAD_INPUT skip) instead of being rounded behind our back.
_EXACT = Context(
    prec=_PREC,
    rounding=ROUND_HALF_EVEN,
    Emin=-999_999,
    Emax=999_999,
    traps=[InvalidOperation, DivisionByZero, Overflow, Inexact],
)
# Only for sentences: a liquidation price or a loss-cap distance is a ratio, shown to 8 places.
_SHOW = Context(prec=_PREC, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero])
_ZERO = Decimal(0)
_ONE = Decimal(1)
_USDT_QUANTUM = Decimal("0.00000001")  # Binance reports USDT margin to 8 places
_MAX_ADJUSTED = 18  # inputs beyond 1e-18..1e18 fit no market and would exhaust _PREC
_MAX_GRID_SEARCH = 10_000


class SymbolFilters(msgspec.Struct, frozen=True):
    """Binance-style filters of one symbol, from the bundle (exchange-rules §3.1, §3.2).

    A MARKET_LOT_SIZE field that is None or 0 is off, as on Binance; `max_qty` 0 is off too.
    """

    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    min_notional: Decimal
    min_price: Decimal = _ZERO
    max_qty: Decimal | None = None
    market_step_size: Decimal | None = None
    market_min_qty: Decimal | None = None
    market_max_qty: Decimal | None = None
    anchored: bool = True
    """USD-M futures: prices on minPrice + k*tick, quantities on minQty + k*step; spot: on k*tick."""


class SizingParams(msgspec.Struct, frozen=True):
    """Sizing parameters from the bundle; defaults are the spec's (§11, Part B4)."""

    market: Literal["FUT", "SPOT"]
    margin_base_usdt: Decimal
    leverage: int
    quote_budget_usdt: Decimal
    max_loss_usdt: Decimal
    atr_mult: Decimal
    tp_min_net_roe: Decimal = Decimal("0.10")
    fee_maker: Decimal = Decimal("0.0002")
    fee_taker: Decimal = Decimal("0.0005")
    maintenance_margin_rate: Decimal = Decimal("0.004")
    maintenance_amount: Decimal = _ZERO
    liquidation_buffer: Decimal = Decimal("0.05")
    spot_protection: Literal["oco", "guardian"] = "oco"
    stop_limit_offset: Decimal = Decimal("0.001")


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


class SizingSkip(msgspec.Struct, frozen=True):
    """No entry: a machine-readable detail (spec Part B2) and a sentence with the values compared."""

    reason_detail: str
    sentence: str


class _Skip(Exception):
    def __init__(self, detail: str, sentence: str) -> None:
        super().__init__(sentence)
        self.detail = detail
        self.sentence = sentence


def _bad(sentence: str) -> _Skip:
    return _Skip("SIZING.BAD_INPUT", sentence)


def _too_many_digits(exc: DecimalException) -> SizingSkip:
    return SizingSkip(
        "SIZING.BAD_INPUT", f"the inputs need more than {_PREC} exact digits ({type(exc).__name__})"
    )


def _fmt(x: Decimal) -> str:
    """A plain decimal for a sentence: no exponent, no trailing zeros."""
    text = str(x)
    if "." in text and "E" not in text and "e" not in text:
        # str() wrote plain notation, the digits format(x, "f") writes, at a third of its cost
        text = text.rstrip("0").rstrip(".")
        return "0" if text == "-0" else text
    if x == 0:
        return "0"
    text = format(x, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _show(num: Decimal, den: Decimal) -> str:
    """A ratio for a sentence, to 8 decimal places."""
    value = _SHOW.divide(num, den)
    if value.adjusted() > _PREC - 10:
        return format(value, ".8E")
    return _fmt(_SHOW.quantize(value, _USDT_QUANTUM))


@dataclass(frozen=True, slots=True)
class _Grid:
    """The legal values anchor + k*step; ratios num/den (den > 0) snap without a rounded division."""

    anchor: Decimal
    step: Decimal
    step_text: str = field(init=False, repr=False, compare=False)
    """The step as sentences show it."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "step_text", _fmt(self.step))

    def floor(self, num: Decimal, den: Decimal = _ONE) -> Decimal:
        a, b = num - self.anchor * den, den * self.step
        n = a // b  # the exact floor of a/b (b > 0; `//` truncates toward zero)
        return self.anchor + (n - 1 if n * b > a else n) * self.step

    def ceil(self, num: Decimal, den: Decimal = _ONE) -> Decimal:
        a, b = self.anchor * den - num, den * self.step
        n = a // b
        return self.anchor - (n - 1 if n * b > a else n) * self.step

    def holds(self, x: Decimal) -> bool:
        return (x - self.anchor) % self.step == 0


_MARGIN_GRID = _Grid(_ZERO, _USDT_QUANTUM)


def _exponent(x: Decimal) -> int:
    exp = x.as_tuple().exponent
    if not isinstance(exp, int):
        raise _bad(f"{x} is not a finite number")
    return exp


def _common_grid(a: _Grid, b: _Grid) -> _Grid:
    """The quantities legal on both LOT_SIZE and MARKET_LOT_SIZE: step lcm, anchor by search."""
    if a == b:
        return a
    exp = min(_exponent(a.step), _exponent(b.step), _exponent(a.anchor), _exponent(b.anchor))
    int_a, int_b = int(a.step.scaleb(-exp)), int(b.step.scaleb(-exp))
    gcd, rest = int_a, int_b
    while rest:
        gcd, rest = rest, gcd % rest
    count = int_b // gcd  # grid-a values in one lcm period
    if count <= _MAX_GRID_SEARCH:
        for k in range(count):
            x = a.anchor + k * a.step
            if b.holds(x):
                return _Grid(x, Decimal(int_a // gcd * int_b).scaleb(exp))
    raise _bad(
        f"LOT_SIZE (step {_fmt(a.step)} from {_fmt(a.anchor)}) and MARKET_LOT_SIZE "
        f"(step {_fmt(b.step)} from {_fmt(b.anchor)}) share no quantity"
    )


def _num(value: object, name: str) -> Decimal:
    """A finite Decimal from a Decimal, int or float (floats go through repr, never binary)."""
    if isinstance(value, Decimal):
        d = value
    elif isinstance(value, int) and not isinstance(value, bool):
        d = Decimal(value)
    elif isinstance(value, float):
        d = Decimal(repr(value))
    else:
        raise _bad(f"{name} must be a number, got {type(value).__name__}")
    if not d.is_finite():
        raise _bad(f"{name} must be a finite number, got {d}")
    if d != 0 and abs(d.adjusted()) > _MAX_ADJUSTED:
        raise _bad(f"{name} {format(d, '.6E')} is outside 1e-18..1e18")
    return d


def _positive(value: object, name: str) -> Decimal:
    d = _num(value, name)
    if d <= 0:
        raise _bad(f"{name} must be > 0, got {_fmt(d)}")
    return d


_MULTIPLIERS: dict[float, Decimal] = {}


def _multiplier(value: object, name: str) -> Decimal:
    """`_positive` for a float multiplier, remembered per value: the multipliers take few values
    (products of the rules' constant factors), and a float hashes cheaply where a fresh Decimal
    does not. Only values that passed are kept (a positive float has one repr per value), and
    only exact floats (a float subclass may compare equal and print otherwise)."""
    if type(value) is not float:
        return _positive(value, name)
    d = _MULTIPLIERS.get(value)
    if d is None:
        d = _positive(value, name)
        if len(_MULTIPLIERS) >= 4096:
            _MULTIPLIERS.clear()
        _MULTIPLIERS[value] = d
    return d


def _non_negative(value: object, name: str) -> Decimal:
    d = _num(value, name)
    if d < 0:
        raise _bad(f"{name} must be >= 0, got {_fmt(d)}")
    return d


def _rate(value: object, name: str) -> Decimal:
    d = _non_negative(value, name)
    if d >= 1:
        raise _bad(f"{name} must be below 1, got {_fmt(d)}")
    return d


def _optional(value: object, name: str) -> Decimal | None:
    """An optional filter: None or 0 is off (Binance), anything else must be > 0."""
    if value is None:
        return None
    d = _non_negative(value, name)
    return d if d > 0 else None


@dataclass(frozen=True, slots=True)
class _Lots:
    """The quantity grids: the entry order's, and the spot exit's (both with their bounds)."""

    entry: _Grid
    min_qty: Decimal
    max_qty: Decimal | None
    exit: _Grid
    exit_min_qty: Decimal


@dataclass(frozen=True, slots=True)
class _Terms:
    """The sizing parameters as checked Decimals (a Struct built by hand may hold floats)."""

    budget_base: Decimal  # FUT: margin base; SPOT: quote budget
    leverage: int
    leverage_d: Decimal
    f_in: Decimal  # the entry's fee: maker for a Maker entry, else taker
    f_sl: Decimal
    f_tp: Decimal
    # 1 + fee and 1 - fee of each, for the P&L lines
    up_in: Decimal
    down_in: Decimal
    up_sl: Decimal
    down_sl: Decimal
    up_tp: Decimal
    down_tp: Decimal
    max_loss: Decimal
    atr_mult: Decimal
    tp_roe: Decimal
    mmr: Decimal
    cum: Decimal
    buffer: Decimal
    stop_limit_offset: Decimal
    # constant parts of the sentences, written once
    max_loss_text: str
    atr_mult_text: str
    tp_roe_text: str
    maintenance_text: str  # the liquidation terms: leverage, maintenance rate and amount


@dataclass(frozen=True, slots=True)
class _Prices:
    """The tick grid, the lowest legal price (> 0 and >= min_price) and min_notional."""

    grid: _Grid
    lowest: Decimal
    min_notional: Decimal


@dataclass(slots=True)
class _Case:
    """Validated inputs, every number a Decimal."""

    long: bool
    spot: bool
    guardian: bool
    entry: Decimal
    atr: Decimal
    sl_mult: Decimal
    tp_mult: Decimal
    budget: Decimal  # FUT: margin_base * size_mult; SPOT: quote_budget * size_mult
    t: _Terms
    price: _Grid
    lowest_px: Decimal
    min_notional: Decimal
    lots: _Lots


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


_R = TypeVar("_R")


def once_per_object(fn: Callable[..., _R]) -> Callable[..., _R]:
    """Memoise ``fn`` on the identity of its arguments, for values read from a bundle revision:
    the same frozen Structs come back for every decision of a revision, so a hit costs a lookup
    by their ids, not a hash of every field. Only hashable arguments are remembered (a frozen
    Struct whose fields are all hashable cannot change); others are computed every time. Bounded:
    the table starts afresh past 256 entries."""
    table: dict[tuple[int, ...], tuple[tuple[Any, ...], _R]] = {}

    @functools.wraps(fn)
    def memo(*args: Any) -> _R:
        key = tuple(map(id, args))
        hit = table.get(key)
        if hit is not None:  # the table keeps its arguments alive: their ids are still theirs
            return hit[1]
        result = fn(*args)
        try:
            hash(args)
        except TypeError:  # a hand-built Struct holding a list: check it every time
            return result
        if len(table) >= 256:
            table.clear()
        table[key] = (args, result)
        return result

    return memo


@dataclass(frozen=True, slots=True)
class _Setup:
    """What one (params, filters, exec policy) fixes for every decision, checked once: the values
    of each stage (parameters, price filter, lot sizes), or None from the stage whose first
    problem `problem` holds. `_read` raises that problem where the stage is first needed, so a
    call with several problems reports the first in the order the inputs are read."""

    spot: bool
    guardian: bool
    terms: _Terms | None
    prices: _Prices | None
    lots: _Lots | None
    lots_note: str | None
    problem: SizingSkip | None

    def fail(self) -> NoReturn:
        assert self.problem is not None
        raise _Skip(self.problem.reason_detail, self.problem.sentence)


@once_per_object
def _setup(params: object, filters: object, policy: object) -> _Setup:
    """The setup of one (params, filters, policy): the same frozen Structs come back for every
    decision of a revision. A value of the wrong type raises at once (and is not remembered)."""
    if not isinstance(params, SizingParams) or params.market not in ("FUT", "SPOT"):
        raise _bad("params must be SizingParams with market 'FUT' or 'SPOT'")
    if not isinstance(filters, SymbolFilters):
        raise _bad(f"filters must be SymbolFilters, got {type(filters).__name__}")
    if not isinstance(filters.anchored, bool):
        raise _bad(f"anchored must be a bool, got {type(filters.anchored).__name__}")
    if not isinstance(policy, str):
        raise _bad(f"exec_policy must be a string, got {type(policy).__name__}")
    spot = params.market == "SPOT"
    guardian = spot and params.spot_protection == "guardian"
    terms = prices = lots = note = problem = None
    try:
        terms = _read_terms(params, policy == "Maker")
        prices = _read_prices(filters)
        lots, note = _read_lots(filters, policy, guardian)
    except _Skip as skip:
        problem = SizingSkip(skip.detail, skip.sentence)
    except DecimalException as exc:
        problem = _too_many_digits(exc)
    return _Setup(spot, guardian, terms, prices, lots, note, problem)


def _read_terms(params: SizingParams, maker: bool) -> _Terms:
    checks = {
        "max_loss_usdt": _positive,
        "atr_mult": _positive,
        "tp_min_net_roe": _non_negative,
        "maintenance_amount": _non_negative,
        "fee_maker": _rate,
        "fee_taker": _rate,
        "maintenance_margin_rate": _rate,
        "liquidation_buffer": _rate,
        "stop_limit_offset": _rate,
    }
    if params.spot_protection not in ("oco", "guardian"):
        raise _bad(f"spot_protection must be 'oco' or 'guardian', got {params.spot_protection!r}")
    p = {name: check(getattr(params, name), name) for name, check in checks.items()}
    if params.market == "SPOT":
        budget_base, leverage = _positive(params.quote_budget_usdt, "quote_budget_usdt"), 1
    else:
        budget_base = _positive(params.margin_base_usdt, "margin_base_usdt")
        leverage = params.leverage
        if isinstance(leverage, bool) or not isinstance(leverage, int) or leverage < 1:
            raise _bad(f"leverage must be an integer >= 1, got {leverage!r}")
        _num(leverage, "leverage")
    f_in, f_sl, f_tp = (p["fee_maker"] if maker else p["fee_taker"]), p["fee_taker"], p["fee_maker"]
    return _Terms(
        budget_base=budget_base,
        leverage=leverage,
        leverage_d=Decimal(leverage),
        f_in=f_in,
        f_sl=f_sl,
        f_tp=f_tp,
        up_in=1 + f_in,
        down_in=1 - f_in,
        up_sl=1 + f_sl,
        down_sl=1 - f_sl,
        up_tp=1 + f_tp,
        down_tp=1 - f_tp,
        max_loss=p["max_loss_usdt"],
        atr_mult=p["atr_mult"],
        tp_roe=p["tp_min_net_roe"],
        mmr=p["maintenance_margin_rate"],
        cum=p["maintenance_amount"],
        buffer=p["liquidation_buffer"],
        stop_limit_offset=p["stop_limit_offset"],
        max_loss_text=_fmt(p["max_loss_usdt"]),
        atr_mult_text=_fmt(p["atr_mult"]),
        tp_roe_text=_fmt(p["tp_min_net_roe"]),
        maintenance_text=f"leverage {leverage}, maintenance rate "
        f"{_fmt(p['maintenance_margin_rate'])}, amount {_fmt(p['maintenance_amount'])}",
    )


def _read_prices(filters: SymbolFilters) -> _Prices:
    tick = _positive(filters.tick_size, "tick_size")
    min_price = _non_negative(filters.min_price, "min_price")
    price = _Grid(min_price if filters.anchored else _ZERO, tick)
    lowest = price.ceil(min_price)
    min_notional = _non_negative(filters.min_notional, "min_notional")
    return _Prices(price, (lowest if lowest > 0 else lowest + tick), min_notional)


def _snap_entry(
    prices: _Prices, buy: bool, entry_px: object, policy: str, notes: list[str]
) -> Decimal:
    """The entry price on the tick grid, at or above the lowest legal price."""
    price = prices.grid
    given = _positive(entry_px, "entry_px")
    maker = policy == "Maker"
    # A Maker entry rests passively (BUY below, SELL above); any other policy may take, so the
    # sizer assumes the worse price (BUY above, SELL below).
    entry = price.floor(given) if buy == maker else price.ceil(given)
    if entry < prices.lowest:
        raise _bad(f"entry_px {_fmt(given)} is below the lowest legal price {_fmt(prices.lowest)}")
    if entry != given:
        how = "passive side, Maker" if maker else f"adverse side, {policy}"
        notes.append(
            f"entry {_fmt(given)} snapped to tick {price.step_text}: {_fmt(entry)} ({how})"
        )
    return entry


def _read_lots(filters: SymbolFilters, policy: str, guardian: bool) -> tuple[_Lots, str | None]:
    """LOT_SIZE, and MARKET_LOT_SIZE for orders that may execute at market (the stricter wins),
    with the note that says so."""
    step = _positive(filters.step_size, "step_size")
    min_qty = _non_negative(filters.min_qty, "min_qty")
    max_qty = _optional(filters.max_qty, "max_qty")
    if max_qty is not None and max_qty < min_qty:
        raise _bad(f"max_qty {_fmt(max_qty)} is below min_qty {_fmt(min_qty)}")
    lot = _Grid(min_qty if filters.anchored else _ZERO, step)
    m_step = _optional(filters.market_step_size, "market_step_size")
    m_max = _optional(filters.market_max_qty, "market_max_qty")
    m_min = None
    if filters.market_min_qty is not None:
        m_min = _non_negative(filters.market_min_qty, "market_min_qty")
    maker = policy == "Maker"
    plain = _Lots(lot, min_qty, max_qty, lot, min_qty)
    if not (m_step or m_max or m_min) or (maker and not guardian):
        return plain, None
    # Anything but a pure Maker entry may reach the book as a market order (spec §6 slippage
    # guard, MakerThenTaker's fallback); so does the guardian's exit. OCO legs are limit orders.
    anchor = (min_qty if m_min is None else m_min) if filters.anchored else _ZERO
    market = _Grid(anchor, m_step or step)
    grid = _common_grid(lot, market)
    low = max(min_qty, m_min or _ZERO)
    high = m_max if max_qty is None else min(max_qty, m_max or max_qty)
    if maker:
        return _Lots(lot, min_qty, max_qty, grid, low), None
    note = f"MARKET_LOT_SIZE applied with LOT_SIZE: {policy} may fill at market"
    return _Lots(grid, low, high, grid if guardian else lot, low if guardian else min_qty), note


def _read(
    side: object,
    entry_px: object,
    atr: object,
    mults: tuple[object, object, object],
    exec_policy: object,
    filters: object,
    params: object,
    notes: list[str],
) -> _Case:
    if side not in ("BUY", "SELL"):
        raise _bad(f"side must be 'BUY' or 'SELL', got {side!r}")
    s = _setup(params, filters, exec_policy)
    assert isinstance(exec_policy, str)  # _setup checked it
    if s.spot and side == "SELL":
        raise _Skip(
            "SIZING.SPOT_SELL_NO_POSITION",
            "a SPOT SELL sells a held base asset, and sizing has no position source (spec Part B1)",
        )
    terms = s.terms or s.fail()
    size_mult = _multiplier(mults[0], "size_mult")
    prices = s.prices or s.fail()
    entry = _snap_entry(prices, side == "BUY", entry_px, exec_policy, notes)
    atr_d = _positive(atr, "atr")
    sl_mult = _multiplier(mults[1], "sl_mult")
    tp_mult = _multiplier(mults[2], "tp_mult")
    budget = terms.budget_base * size_mult
    lots = s.lots or s.fail()
    if s.lots_note is not None:
        notes.append(s.lots_note)
    return _Case(
        side == "BUY",
        s.spot,
        s.guardian,
        entry,
        atr_d,
        sl_mult,
        tp_mult,
        budget,
        terms,
        prices.grid,
        prices.lowest,
        prices.min_notional,
        lots,
    )


def _quantity(case: _Case, notes: list[str]) -> tuple[Decimal, Decimal]:
    """Round the budget's quantity DOWN to the lot grid (Part B3: never above the budget).
    Returns the quantity and its notional at the entry price."""
    e = case.entry
    notional_budget = case.budget if case.spot else case.budget * case.t.leverage
    lots = case.lots
    qty = lots.entry.floor(notional_budget, e)
    notes.append(
        f"qty {_fmt(qty)} = {_fmt(notional_budget)} USDT / entry {_fmt(e)}, "
        f"rounded down to step {lots.entry.step_text}"
    )
    if lots.max_qty is not None and qty > lots.max_qty:
        qty = lots.entry.floor(lots.max_qty)
        notes.append(f"qty clamped to max_qty {_fmt(lots.max_qty)}: {_fmt(qty)}")
    if qty < lots.min_qty or qty <= 0:
        raise _Skip(
            "SIZING.BELOW_MIN_NOTIONAL",
            f"qty {_fmt(max(qty, _ZERO))} below min_qty {_fmt(lots.min_qty)} (notional "
            f"{_fmt(notional_budget)} USDT at {_fmt(e)}, {_budget_text(case)})",
        )
    cost = qty * e
    if cost < case.min_notional:
        raise _Skip(
            "SIZING.BELOW_MIN_NOTIONAL",
            f"notional {_fmt(cost)} USDT (qty {_fmt(qty)} at {_fmt(e)}) below min_notional "
            f"{_fmt(case.min_notional)} ({_budget_text(case)})",
        )
    return qty, cost


def _budget_text(case: _Case) -> str:
    if case.spot:
        return f"budget quote {_fmt(case.budget)} USDT"
    return f"budget margin {_fmt(case.budget)} x leverage {case.t.leverage}"


def _spot_exit_qty(case: _Case, qty: Decimal, notes: list[str]) -> tuple[Decimal, Decimal]:
    """The base left after the buy fee (taken in base) and the exit quantity on its grid."""
    base = qty * (1 - case.t.f_in)
    leg = case.lots.exit.floor(base)
    notes.append(
        f"entry fee {_fmt(case.t.f_in)} taken in base: {_fmt(base)} left, exit qty {_fmt(leg)}"
    )
    if leg < case.lots.exit_min_qty or leg <= 0:
        raise _Skip(
            "SIZING.OCO_LEG_BELOW_MIN_NOTIONAL",
            f"exit qty {_fmt(max(leg, _ZERO))} below min_qty {_fmt(case.lots.exit_min_qty)} "
            f"(bought {_fmt(qty)}, {_fmt(base)} left after the {_fmt(case.t.f_in)} base fee)",
        )
    return base, leg


def _pnl(case: _Case, qty: Decimal, cost: Decimal, base: Decimal, leg: Decimal) -> _Pnl:
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


def _solve(case: _Case, coef: Decimal, rhs: Decimal) -> Decimal:
    """The grid price nearest the bound with coef*P >= rhs (coef > 0: ceil; coef < 0: floor)."""
    if coef > 0:
        return case.price.ceil(rhs, coef)
    return case.price.floor(-rhs, -coef)


def _stop(case: _Case, pnl: _Pnl, qty: Decimal, notes: list[str]) -> tuple[Decimal, Decimal]:
    """Part B4: d = min(ATR distance, loss-cap distance); the SL rounds toward entry. Returns
    the SL and the loss there."""
    e, cap = case.entry, case.t.max_loss
    fees_only = pnl.loss(e)
    if fees_only >= cap:
        fee_in = qty * e * case.t.f_in
        raise _Skip(
            "SIZING.LOSS_CAP",
            f"fees alone reach max_loss_usdt {case.t.max_loss_text}: entry fee {_fmt(fee_in)} + exit fee "
            f"{_fmt(fees_only - fee_in)} at entry {_fmt(e)} = {_fmt(fees_only)} USDT "
            f"for qty {_fmt(qty)}",
        )
    d_atr = case.t.atr_mult * case.sl_mult * case.atr
    d_cap = _show(abs(e * pnl.b - (pnl.a - cap)), abs(pnl.b))
    at_atr = e - d_atr if case.long else e + d_atr
    atr_text = f"{case.t.atr_mult_text} x {_fmt(case.sl_mult)} x {_fmt(case.atr)} = {_fmt(d_atr)}"
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
        notes.append(f"SL raised to the lowest legal price {_fmt(sl)}")
    if abs(e - sl) < case.price.step:
        raise _Skip(
            "SIZING.SL_TOO_TIGHT",
            f"SL distance under one tick {case.price.step_text}: ATR distance {atr_text}, "
            f"loss-cap distance {d_cap}; the stop rounds to the entry {_fmt(e)}",
        )
    loss = pnl.loss(sl)
    if loss > cap:  # unreachable by construction; never emit a stop that breaks the cap
        raise _Skip("SIZING.LOSS_CAP", f"loss at SL {_fmt(loss)} above {_fmt(cap)}")
    return sl, loss


def _liquidation(
    case: _Case, qty: Decimal, cost: Decimal, sl: Decimal, notes: list[str]
) -> Decimal | None:
    """Isolated one-way LP (exchange-rules §3.3) as num/den, with WB = qty*entry/leverage.

    An SL outside LP ± buffer*|EP - LP| skips: tightening it would silently change the stop.
    """
    e, lev, mmr, cum, buf = case.entry, case.t.leverage, case.t.mmr, case.t.cum, case.t.buffer
    if case.long:
        num, den = cost * (lev - 1) - cum * lev, qty * (1 - mmr) * lev
    else:
        num, den = cost * (lev + 1) + cum * lev, qty * (1 + mmr) * lev
    lp = _show(num, den)
    if case.long and num <= 0:
        notes.append(f"no liquidation price above zero (LP {lp})")
        return None
    where = case.t.maintenance_text
    if (num >= e * den) if case.long else (num <= e * den):
        raise _Skip(
            "SIZING.LIQUIDATION",
            f"liquidation price {lp} is not {'below' if case.long else 'above'} entry {_fmt(e)}: "
            f"the margin is under the maintenance margin ({where})",
        )
    edge_num = (1 - buf) * num + buf * e * den  # (LP ± buf*|E - LP|) * den
    edge = _show(edge_num, den)
    if (sl * den <= edge_num) if case.long else (sl * den >= edge_num):
        word, sign = ("above", "+") if case.long else ("below", "-")
        raise _Skip(
            "SIZING.LIQUIDATION",
            f"SL {_fmt(sl)} is not {word} the liquidation buffer {edge} (LP {lp} {sign} "
            f"{_fmt(buf)} x |{_fmt(e)} - LP|; {where})",
        )
    notes.append(f"SL {_fmt(sl)} clears the liquidation buffer {edge} (LP {lp})")
    # Reported on the tick grid toward entry, so the shown LP never understates the danger.
    return case.price.ceil(num, den) if case.long else case.price.floor(num, den)


def _take_profit(
    case: _Case, pnl: _Pnl, qty: Decimal, target: Decimal, notes: list[str]
) -> tuple[Decimal, Decimal]:
    """The nearest grid price whose profit net of both fees is >= target (rounded away), and
    the net profit there."""
    e, tick = case.entry, case.price.step
    tp = _solve(case, pnl.c, target + pnl.d)
    if (tp <= e) if case.long else (tp >= e):
        tp = e + tick if case.long else e - tick
        notes.append(f"TP moved to one tick from entry {_fmt(e)}")
    if tp < case.lowest_px:
        raise _Skip(
            "SIZING.TP_INVALID",
            f"short TP {_fmt(tp)} for net target {_fmt(target)} USDT is below the lowest legal "
            f"price {_fmt(case.lowest_px)} (entry {_fmt(e)}, qty {_fmt(qty)})",
        )
    net = pnl.net(tp)
    if net < target:  # unreachable by construction
        raise _Skip("SIZING.TP_INVALID", f"net at TP {_fmt(net)} below {_fmt(target)}")
    return tp, net


def _oco(case: _Case, pnl: _Pnl, leg: Decimal, sl: Decimal, tp: Decimal) -> OcoLegs:
    """Exchange-rules §3.4/§3.5: each leg must pass NOTIONAL at its own price."""
    limit = max(case.price.floor(sl * (1 - case.t.stop_limit_offset)), case.lowest_px)
    for name, px in (("above (TP)", tp), ("below (stop-limit)", limit)):
        if leg * px < case.min_notional:
            raise _Skip(
                "SIZING.OCO_LEG_BELOW_MIN_NOTIONAL",
                f"OCO {name} leg notional {_fmt(leg * px)} USDT (qty {_fmt(leg)} at {_fmt(px)}) "
                f"below min_notional {_fmt(case.min_notional)}",
            )
    return OcoLegs(
        qty=leg,
        above_px=tp,
        below_stop_px=sl,
        below_limit_px=limit,
        loss_at_below_limit_usdt=pnl.loss(limit),
    )


def _guardian(case: _Case, leg: Decimal, sl: Decimal) -> Decimal:
    """The guardian sells `leg` at market once the SL trades: it too must pass NOTIONAL."""
    if leg * sl < case.min_notional:
        raise _Skip(
            "SIZING.OCO_LEG_BELOW_MIN_NOTIONAL",
            f"guardian stop notional {_fmt(leg * sl)} USDT (qty {_fmt(leg)} at {_fmt(sl)}) "
            f"below min_notional {_fmt(case.min_notional)}",
        )
    return sl


def _size(case: _Case, notes: list[str]) -> Sized:
    e = case.entry
    qty, cost = _quantity(case, notes)
    base = leg = qty
    if case.spot:
        base, leg = _spot_exit_qty(case, qty, notes)
        margin = cost
    else:
        margin = _MARGIN_GRID.ceil(cost, case.t.leverage_d)
    pnl = _pnl(case, qty, cost, base, leg)
    sl, loss_at_sl = _stop(case, pnl, qty, notes)
    liq = None if case.spot else _liquidation(case, qty, cost, sl, notes)
    target = case.t.tp_roe * margin * case.tp_mult
    notes.append(
        f"TP for net profit >= {_fmt(target)} USDT = {case.t.tp_roe_text} x margin {_fmt(margin)} "
        f"x tp_mult {_fmt(case.tp_mult)}"
    )
    tp, net_at_tp = _take_profit(case, pnl, qty, target, notes)
    guardian = _guardian(case, leg, sl) if case.guardian else None
    oco = _oco(case, pnl, leg, sl, tp) if case.spot and not case.guardian else None
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
    # _EXACT itself, not `localcontext(_EXACT)`: that copies the context on every call. Nothing
    # here changes the context; the flags it gathers are never read.
    setcontext(_EXACT)
    try:
        mults = (size_mult, sl_mult, tp_mult)
        case = _read(side, entry_px, atr, mults, exec_policy, filters, params, notes)
        return _size(case, notes)
    except _Skip as skip:
        return SizingSkip(skip.detail, skip.sentence)
    except DecimalException as exc:
        return _too_many_digits(exc)
    finally:
        setcontext(saved)
