"""Sizing's inputs (spec §2 step 4, Part B3/B4), read for `s3.core.sizing`: the exact context,
numbers checked by name, the tick and lot grids, and what one (params, filters, exec policy)
fixes for every decision of a bundle revision, checked once.

Pure, like the sizer: no I/O, clock or randomness; it imports only `decimal`, `dataclasses`,
`functools` and `msgspec`.
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
)
from typing import Any, Literal, NoReturn, TypeVar

import msgspec

_PREC = 50
# The whole sizer runs in this context: a result that would need more than _PREC digits raises
# Inexact (and becomes a BAD_INPUT skip) instead of being rounded behind our back.
EXACT = Context(
    prec=_PREC,
    rounding=ROUND_HALF_EVEN,
    Emin=-999_999,
    Emax=999_999,
    traps=[InvalidOperation, DivisionByZero, Overflow, Inexact],
)
# Only for sentences: a liquidation price or a loss-cap distance is a ratio, shown to 8 places.
_SHOW = Context(prec=_PREC, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero])
ZERO = Decimal(0)
_ONE = Decimal(1)
_USDT_QUANTUM = Decimal("0.00000001")  # Binance reports USDT margin to 8 places
_MAX_ADJUSTED = 18  # inputs beyond 1e-18..1e18 fit no market and would exhaust _PREC
_MAX_GRID_SEARCH = 10_000


class Bracket(msgspec.Struct, frozen=True):
    """One leverage bracket of a USD-M symbol (`GET /fapi/v1/leverageBracket`, exchange-rules
    §3.3): a position of notional N with ``notional_floor <= N < notional_cap`` may use leverage up
    to ``initial_leverage``; its liquidation uses ``maint_margin_ratio`` and ``cum``."""

    notional_floor: Decimal
    notional_cap: Decimal
    initial_leverage: int
    maint_margin_ratio: Decimal
    cum: Decimal = ZERO


class SymbolFilters(msgspec.Struct, frozen=True):
    """Binance-style filters of one symbol, from the bundle (exchange-rules §3.1, §3.2).

    A MARKET_LOT_SIZE field that is None or 0 is off, as on Binance; `max_qty` 0 is off too, and
    so are `max_price` and the PERCENT_PRICE multipliers. No brackets: the sizing parameters'
    maintenance rate and amount, and no leverage cap.
    """

    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    min_notional: Decimal
    min_price: Decimal = ZERO
    max_qty: Decimal | None = None
    market_step_size: Decimal | None = None
    market_min_qty: Decimal | None = None
    market_max_qty: Decimal | None = None
    anchored: bool = True
    """USD-M futures: prices on minPrice + k*tick, quantities on minQty + k*step; spot: on k*tick."""
    max_price: Decimal | None = None
    """PRICE_FILTER maxPrice: no price (entry, SL, TP, OCO leg) above it."""
    percent_price_up: Decimal | None = None
    """PERCENT_PRICE multiplierUp (>= 1): SL and TP at most entry x up (the entry, at the touch,
    stands in for the mark price)."""
    percent_price_down: Decimal | None = None
    """PERCENT_PRICE multiplierDown (0 < down <= 1): SL, TP and OCO legs at least entry x down."""
    brackets: tuple[Bracket, ...] = ()
    """USD-M leverage brackets, lowest first, floors from 0 and each floor the previous cap."""


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
    maintenance_amount: Decimal = ZERO
    liquidation_buffer: Decimal = Decimal("0.05")
    spot_protection: Literal["oco", "guardian"] = "oco"
    stop_limit_offset: Decimal = Decimal("0.001")


class SizingSkip(msgspec.Struct, frozen=True):
    """No entry: a machine-readable detail (spec Part B2) and a sentence with the values compared."""

    reason_detail: str
    sentence: str


class Skip(Exception):
    def __init__(self, detail: str, sentence: str) -> None:
        super().__init__(sentence)
        self.detail = detail
        self.sentence = sentence


def _bad(sentence: str) -> Skip:
    return Skip("SIZING.BAD_INPUT", sentence)


def too_many_digits(exc: DecimalException) -> SizingSkip:
    return SizingSkip(
        "SIZING.BAD_INPUT", f"the inputs need more than {_PREC} exact digits ({type(exc).__name__})"
    )


def fmt(x: Decimal) -> str:
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


def show(num: Decimal, den: Decimal) -> str:
    """A ratio for a sentence, to 8 decimal places."""
    value = _SHOW.divide(num, den)
    if value.adjusted() > _PREC - 10:
        return format(value, ".8E")
    return fmt(_SHOW.quantize(value, _USDT_QUANTUM))


@dataclass(frozen=True, slots=True)
class _Grid:
    """The legal values anchor + k*step; ratios num/den (den > 0) snap without a rounded division."""

    anchor: Decimal
    step: Decimal
    step_text: str = field(init=False, repr=False, compare=False)
    """The step as sentences show it."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "step_text", fmt(self.step))

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


MARGIN_GRID = _Grid(ZERO, _USDT_QUANTUM)


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
        f"LOT_SIZE (step {fmt(a.step)} from {fmt(a.anchor)}) and MARKET_LOT_SIZE "
        f"(step {fmt(b.step)} from {fmt(b.anchor)}) share no quantity"
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
        raise _bad(f"{name} must be > 0, got {fmt(d)}")
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
        raise _bad(f"{name} must be >= 0, got {fmt(d)}")
    return d


def _rate(value: object, name: str) -> Decimal:
    d = _non_negative(value, name)
    if d >= 1:
        raise _bad(f"{name} must be below 1, got {fmt(d)}")
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
    """The tick grid, the lowest legal price (> 0 and >= min_price), the highest (<= max_price,
    or None), min_notional, the PERCENT_PRICE multipliers (or None) and the leverage brackets."""

    grid: _Grid
    lowest: Decimal
    min_notional: Decimal
    highest: Decimal | None = None
    up: Decimal | None = None
    down: Decimal | None = None
    brackets: tuple[Bracket, ...] = ()


@dataclass(slots=True)
class Case:
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
    highest_px: Decimal | None = None
    up: Decimal | None = None
    down: Decimal | None = None
    brackets: tuple[Bracket, ...] = ()


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
    problem `problem` holds. `read_case` raises that problem where the stage is first needed, so a
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
        raise Skip(self.problem.reason_detail, self.problem.sentence)


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
    except Skip as skip:
        problem = SizingSkip(skip.detail, skip.sentence)
    except DecimalException as exc:
        problem = too_many_digits(exc)
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
        max_loss_text=fmt(p["max_loss_usdt"]),
        atr_mult_text=fmt(p["atr_mult"]),
        tp_roe_text=fmt(p["tp_min_net_roe"]),
        maintenance_text=f"leverage {leverage}, maintenance rate "
        f"{fmt(p['maintenance_margin_rate'])}, amount {fmt(p['maintenance_amount'])}",
    )


def _read_prices(filters: SymbolFilters) -> _Prices:
    tick = _positive(filters.tick_size, "tick_size")
    min_price = _non_negative(filters.min_price, "min_price")
    price = _Grid(min_price if filters.anchored else ZERO, tick)
    lowest = price.ceil(min_price)
    lowest = lowest if lowest > 0 else lowest + tick
    min_notional = _non_negative(filters.min_notional, "min_notional")
    max_price = _optional(filters.max_price, "max_price")
    highest = None
    if max_price is not None:
        highest = price.floor(max_price)
        if highest < lowest:
            raise _bad(f"max_price {fmt(max_price)} leaves no legal price (lowest {fmt(lowest)})")
    up = _optional(filters.percent_price_up, "percent_price_up")
    if up is not None and up < 1:
        raise _bad(f"percent_price_up must be >= 1, got {fmt(up)}")
    down = _optional(filters.percent_price_down, "percent_price_down")
    if down is not None and down > 1:
        raise _bad(f"percent_price_down must be in (0, 1], got {fmt(down)}")
    brackets = _read_brackets(filters.brackets)
    return _Prices(price, lowest, min_notional, highest, up, down, brackets)


def _read_brackets(raw: object) -> tuple[Bracket, ...]:
    """Checked brackets: lowest first, the first from 0, each floor the previous cap."""
    if not isinstance(raw, tuple | list):
        raise _bad(f"brackets must be a tuple of Bracket, got {type(raw).__name__}")
    out: list[Bracket] = []
    cap = ZERO
    for n, b in enumerate(raw, 1):
        if not isinstance(b, Bracket):
            raise _bad(f"bracket {n} must be a Bracket, got {type(b).__name__}")
        floor = _non_negative(b.notional_floor, f"bracket {n} notional_floor")
        if floor != cap:
            raise _bad(
                f"bracket {n} notional_floor {fmt(floor)} is not the previous cap {fmt(cap)}"
            )
        cap = _num(b.notional_cap, f"bracket {n} notional_cap")
        if cap <= floor:
            raise _bad(f"bracket {n} notional_cap {fmt(cap)} is not above its floor {fmt(floor)}")
        lev = b.initial_leverage
        if isinstance(lev, bool) or not isinstance(lev, int) or lev < 1:
            raise _bad(f"bracket {n} initial_leverage must be an integer >= 1, got {lev!r}")
        mmr = _rate(b.maint_margin_ratio, f"bracket {n} maint_margin_ratio")
        cum = _non_negative(b.cum, f"bracket {n} cum")
        out.append(Bracket(floor, cap, lev, mmr, cum))
    return tuple(out)


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
        raise _bad(f"entry_px {fmt(given)} is below the lowest legal price {fmt(prices.lowest)}")
    if prices.highest is not None and entry > prices.highest:
        raise _bad(f"entry_px {fmt(given)} is above the highest legal price {fmt(prices.highest)}")
    if entry != given:
        how = "passive side, Maker" if maker else f"adverse side, {policy}"
        notes.append(f"entry {fmt(given)} snapped to tick {price.step_text}: {fmt(entry)} ({how})")
    return entry


def _read_lots(filters: SymbolFilters, policy: str, guardian: bool) -> tuple[_Lots, str | None]:
    """LOT_SIZE, and MARKET_LOT_SIZE for orders that may execute at market (the stricter wins),
    with the note that says so."""
    step = _positive(filters.step_size, "step_size")
    min_qty = _non_negative(filters.min_qty, "min_qty")
    max_qty = _optional(filters.max_qty, "max_qty")
    if max_qty is not None and max_qty < min_qty:
        raise _bad(f"max_qty {fmt(max_qty)} is below min_qty {fmt(min_qty)}")
    lot = _Grid(min_qty if filters.anchored else ZERO, step)
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
    anchor = (min_qty if m_min is None else m_min) if filters.anchored else ZERO
    market = _Grid(anchor, m_step or step)
    grid = _common_grid(lot, market)
    low = max(min_qty, m_min or ZERO)
    high = m_max if max_qty is None else min(max_qty, m_max or max_qty)
    if maker:
        return _Lots(lot, min_qty, max_qty, grid, low), None
    note = f"MARKET_LOT_SIZE applied with LOT_SIZE: {policy} may fill at market"
    return _Lots(grid, low, high, grid if guardian else lot, low if guardian else min_qty), note


def read_case(
    side: object,
    entry_px: object,
    atr: object,
    mults: tuple[object, object, object],
    exec_policy: object,
    filters: object,
    params: object,
    notes: list[str],
) -> Case:
    if side not in ("BUY", "SELL"):
        raise _bad(f"side must be 'BUY' or 'SELL', got {side!r}")
    s = _setup(params, filters, exec_policy)
    assert isinstance(exec_policy, str)  # _setup checked it
    if s.spot and side == "SELL":
        raise Skip(
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
    return Case(
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
        prices.highest,
        prices.up,
        prices.down,
        prices.brackets,
    )
