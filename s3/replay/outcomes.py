"""Outcome simulation: every open followed along the tape's later prices to its exit.

An open decision becomes a `Trade`: its entry fill, its exit (take profit, stop loss, time stop or
end of tape), fees and funding, and its P&L in USDT as a `Decimal`. The fill model never flatters:

**Quote tapes** (one event per quote change; every event's ``bid``/``ask``, or ``mid ∓ spread/2``
when the tape has no ``bid``/``ask``):

- *entry*: ``Taker`` and ``Sliced`` cross at the touch the order meets (a buy pays the ask, a sell
  gets the bid) of the first quote at or after the decision's clock reading, made worse by the
  slippage model; ``Limit`` fills at the intent's ``entry_px`` (a marketable limit: no slippage);
  ``Maker`` rests at the near touch (a buy at the bid) and fills only when a later quote trades
  through it (the ask falls below the buy's price) within ``maker_wait_ms``, else it is
  ``unfilled`` and its reservation is released; ``MakerThenTaker`` crosses at the first quote at
  or after the wait instead. Maker fills pay the maker fee, the others the taker fee.
- *stop loss*: a stop-market triggered by the first quote whose touch reaches the stop (a long's
  bid at or below ``sl_px``, a short's ask at or above), filled at that quote's touch (not at the
  stop price), made worse by the slippage model; taker fee.
- *take profit*: a resting limit at ``tp_px``, filled at ``tp_px`` when a quote trades through it
  (a long's bid above ``tp_px``, a short's ask below); maker fee.
- *time stop*: at the first quote ``time_stop_ms`` (bundle ``[exits]``) or more after the entry
  fill, a market close at the touch plus slippage; taker fee.
- *end of tape*: a position still open is marked at the last quote's touch plus slippage and the
  taker fee (what closing it would cost), flagged ``end``. A hole in the tape (no quote within
  60 s after the time stop: a tape of several windows) ends a position the same way, at the last
  quote before the hole.

**Bar tapes** (every event a bar with ``open``/``high``/``low``/``close`` at its close time; the
bid/ask are the bar's prices ∓ the event's half spread): entries at the *next* bar's open plus a
half spread plus the slippage model (taker); within a bar the stop loss is assumed to come first
when both it and the take profit lie inside the bar; a stop fills at the bar's open when the bar
opens beyond it, else one tick beyond the stop, plus slippage; a take profit needs the bar's
bid (ask) high (low) strictly beyond ``tp_px``; the time stop closes at the bar's close.

**Slippage model** (bundle ``[exits] market_slip_bps``): a market fill is ``market_slip_bps`` worse
than the touch, plus half the spread for every top-1 depth the order eats beyond the first
(`s3.core.execution.estimate_slip_bps` minus the half spread the touch already pays), rounded to the
tick against the trader.

**Funding** (futures only): at every settlement time of the symbol's ``funding_interval_hours``
grid that a position spans (entry fill < T <= exit), the tape's funding record for T (within 60 s)
is charged: ``qty × mid(T) × rate``, paid by longs when the rate is positive. A crossed settlement
with no record on the tape is an `OutcomeError` (it is never counted as zero).

**No look-ahead.** A decision reads its own event only. A trade's exit is computed when it opens
(it needs later quotes), but its reservation is released only before the first event *after* the
exit's quote, so no decision sees a release earlier than the tape reaches it.

Not modelled: queue position (a resting order fills only on a trade-through, which is
conservative), partial fills, the exchange's liquidation, latency beyond the clock reading.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Any

import numpy as np

from s3.core.params import EngineParams
from s3.core.types import Decision
from s3.replay.tape import Tape, TapeEvent

FUNDING_TOLERANCE_MS = 60_000
"""A funding record counts for a settlement time T when it is within this of T."""
HOUR_MS = 3_600_000
GAP_MS = 60_000
"""No quote within this of a position's time stop is a hole in the tape (a tape made of several
windows): the position ends at the last quote before the hole, as at the end of the tape."""
E8 = Decimal("0.00000001")
_ZERO = Decimal(0)
_BPS = Decimal(10_000)

EXIT_REASONS = ("tp", "sl", "time", "end", "unfilled")

Array = np.ndarray[Any, Any]


class OutcomeError(ValueError):
    """The tape cannot be followed to an outcome (missing funding history, no prices)."""


@dataclass(frozen=True, slots=True)
class FundingPayment:
    time: int
    rate: float
    mark: Decimal
    amount: Decimal
    """What the position received (negative: paid), in USDT."""


@dataclass(frozen=True)
class Trade:
    """One open decision followed to its exit. Money in USDT, exact `Decimal`s."""

    index: int
    """The tape index of the deciding event."""
    intent_id: str
    symbol: str
    side: str
    market: str
    qty: Decimal
    policy: str
    decision_ts: int
    tp_px: Decimal
    sl_px: Decimal
    entry_liquidity: str
    """maker, taker or none (unfilled)."""
    entry_ts: int | None
    entry_px: Decimal | None
    exit_reason: str
    """tp, sl, time (time stop), end (still open at the end of the tape: marked), unfilled."""
    exit_ts: int | None
    exit_px: Decimal | None
    exit_liquidity: str
    gross: Decimal
    fees: Decimal
    """entry_fee + exit_fee."""
    funding: Decimal
    funding_payments: tuple[FundingPayment, ...]
    pnl: Decimal
    """gross - fees + funding."""
    release_after: int
    """The tape index of the event after which the reservation is released."""
    features: Mapping[str, Any] = field(repr=False, compare=False)
    """The deciding event's features (what a model trained on outcomes reads)."""
    size_mult: float = 1.0
    rules_fired: tuple[str, ...] = ()
    entry_fee: Decimal = _ZERO
    exit_fee: Decimal = _ZERO

    @property
    def filled(self) -> bool:
        return self.exit_reason != "unfilled"

    @property
    def reached_tp(self) -> bool:
        """The label of a trade: its take profit filled before its stop or its time stop."""
        return self.exit_reason == "tp"

    @property
    def sign(self) -> int:
        return 1 if self.side == "BUY" else -1

    @property
    def notional(self) -> Decimal:
        return self.qty * self.entry_px if self.entry_px is not None else _ZERO

    @property
    def duration_ms(self) -> int:
        if self.entry_ts is None or self.exit_ts is None:
            return 0
        return self.exit_ts - self.entry_ts

    def to_json(self) -> dict[str, Any]:
        def s(x: Decimal | None) -> str | None:
            return None if x is None else format(x, "f")

        return {
            "index": self.index,
            "intent_id": self.intent_id,
            "symbol": self.symbol,
            "side": self.side,
            "qty": s(self.qty),
            "policy": self.policy,
            "decision_ts": self.decision_ts,
            "entry": {"ts": self.entry_ts, "px": s(self.entry_px), "liq": self.entry_liquidity},
            "tp_px": s(self.tp_px),
            "sl_px": s(self.sl_px),
            "exit": {
                "reason": self.exit_reason,
                "ts": self.exit_ts,
                "px": s(self.exit_px),
                "liq": self.exit_liquidity,
            },
            "gross": s(self.gross),
            "fees": s(self.fees),
            "entry_fee": s(self.entry_fee),
            "exit_fee": s(self.exit_fee),
            "funding": s(self.funding),
            "funding_payments": [
                {"time": f.time, "rate": f.rate, "mark": s(f.mark), "amount": s(f.amount)}
                for f in self.funding_payments
            ],
            "pnl": s(self.pnl),
            "size_mult": round(self.size_mult, 12),
            "rules_fired": list(self.rules_fired),
        }


# -- prices --------------------------------------------------------------------------------------------
BAR_FIELDS = ("open", "high", "low", "close")


@dataclass
class Series:
    """One symbol's prices on the tape, as arrays (quotes: the *_lo/_hi/_open/_close arrays of a
    side are the same array)."""

    symbol: str
    bars: bool
    ts: Array
    index: Array
    bid_lo: Array
    bid_hi: Array
    ask_lo: Array
    ask_hi: Array
    bid_open: Array
    ask_open: Array
    bid_close: Array
    ask_close: Array
    mid: Array
    spread_bps: Array
    depth: Array
    pos: dict[int, int]
    """Tape index -> position in the arrays."""

    @property
    def n(self) -> int:
        return len(self.ts)


def tape_kind(tape: Tape) -> str:
    """``bars`` when every priced event is a bar with open/high/low/close, else ``quotes``."""
    priced = [e for e in tape.events if e.features is not None and e.ts is not None]
    if priced and all(all(k in e.features for k in BAR_FIELDS) for e in priced if e.features):
        return "bars"
    return "quotes"


def _num(features: Mapping[str, Any], name: str) -> float | None:
    v = features.get(name)
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    x = float(v)
    return x if np.isfinite(x) and x > 0 else None


def build_series(tape: Tape) -> dict[str, Series]:
    """Every symbol's price arrays, in tape order (events without a usable mid are left out)."""
    bars = tape_kind(tape) == "bars"
    cols: dict[str, list[list[float]]] = {}
    for ev in tape.events:
        f = ev.features
        if f is None or ev.ts is None:
            continue
        mid = _num(f, "mid")
        if mid is None:
            continue
        spread = f.get("spread_bps")
        spread_bps = float(spread) if isinstance(spread, int | float) and spread >= 0 else 0.0
        depth = f.get("depth_top1_usdt")
        depth_f = float(depth) if isinstance(depth, int | float) and depth > 0 else 0.0
        hs = spread_bps / 20_000
        if bars:
            o, h, lo, c = (float(f[k]) for k in BAR_FIELDS)
            row = [
                ev.ts,
                ev.index,
                lo * (1 - hs),
                h * (1 - hs),
                lo * (1 + hs),
                h * (1 + hs),
                o * (1 - hs),
                o * (1 + hs),
                c * (1 - hs),
                c * (1 + hs),
                c,
                spread_bps,
                depth_f,
            ]
        else:
            bid, ask = _num(f, "bid"), _num(f, "ask")
            if bid is None or ask is None:
                bid, ask = mid * (1 - hs), mid * (1 + hs)
            row = [
                ev.ts,
                ev.index,
                bid,
                bid,
                ask,
                ask,
                bid,
                ask,
                bid,
                ask,
                mid,
                spread_bps,
                depth_f,
            ]
        cols.setdefault(ev.symbol, []).append(row)
    out: dict[str, Series] = {}
    for sym, rows in cols.items():
        a = np.array(rows, dtype=np.float64)
        ts = a[:, 0].astype(np.int64)
        idx = a[:, 1].astype(np.int64)
        if bars:
            cs = [np.ascontiguousarray(a[:, k]) for k in range(2, 13)]
        else:
            b_arr, a_arr = np.ascontiguousarray(a[:, 2]), np.ascontiguousarray(a[:, 4])
            cs = [b_arr, b_arr, a_arr, a_arr, b_arr, a_arr, b_arr, a_arr] + [
                np.ascontiguousarray(a[:, k]) for k in (10, 11, 12)
            ]
        bl, bh, al, ah, bo, ao, bc, ac, mids, spreads, depths = cs
        out[sym] = Series(
            sym,
            bars,
            ts,
            idx,
            bl,
            bh,
            al,
            ah,
            bo,
            ao,
            bc,
            ac,
            mids,
            spreads,
            depths,
            pos={int(i): p for p, i in enumerate(idx.tolist())},
        )
    return out


# -- exits (array code) ------------------------------------------------------------------------------
_FIRST_CHUNK = 64


def first_exit(
    s: Series, start: int, stop: int, long: bool, sl: float, tp: float, eps: float
) -> tuple[int, str] | None:
    """The first position in [start, stop] (inclusive) where the stop or the take profit is hit
    (the stop first when both are, as on a bar), searched in growing chunks of the arrays."""
    if long:
        sl_arr, tp_arr = s.bid_lo, s.bid_hi
        sl_lim, tp_lim = sl + eps, tp + eps
    else:
        sl_arr, tp_arr = s.ask_hi, s.ask_lo
        sl_lim, tp_lim = sl - eps, tp - eps
    a = start
    chunk = _FIRST_CHUNK
    while a <= stop:
        b = min(stop + 1, a + chunk)
        if long:
            sl_hit = sl_arr[a:b] <= sl_lim
            tp_hit = tp_arr[a:b] > tp_lim
        else:
            sl_hit = sl_arr[a:b] >= sl_lim
            tp_hit = tp_arr[a:b] < tp_lim
        hits = np.flatnonzero(sl_hit | tp_hit)
        if hits.size:
            k = int(hits[0])
            return a + k, ("sl" if sl_hit[k] else "tp")
        a = b
        chunk *= 4
    return None


def _to_tick(px: Decimal, tick: Decimal, up: bool) -> Decimal:
    """Round to the tick against the trader (up for a buy), snapping float noise to the grid."""
    steps = px / tick
    near = steps.to_integral_value(rounding=ROUND_HALF_EVEN)
    if abs(steps - near) < Decimal("0.000001"):
        return near * tick
    return steps.to_integral_value(rounding=ROUND_CEILING if up else ROUND_FLOOR) * tick


def _dec(x: float) -> Decimal:
    return Decimal(repr(float(x)))


class OutcomeSim:
    """Follows open decisions of one tape and one bundle's parameters to their outcomes."""

    def __init__(self, tape: Tape, params: EngineParams, series: dict[str, Series] | None = None):
        self.tape = tape
        self.params = params
        self.series = series if series is not None else build_series(tape)
        self.funding = tape.funding
        self.last_index = len(tape.events) - 1

    # fills
    def _slip_bps(self, s: Series, k: int, qty: Decimal, touch: float) -> Decimal:
        extra = 0.0
        depth = float(s.depth[k])
        if depth > 0:
            levels = float(qty) * touch / depth
            if levels > 1:
                extra = float(s.spread_bps[k]) / 2 * (levels - 1)
        return _dec(self.params.exits.market_slip_bps + extra)

    def _market(
        self, s: Series, k: int, buy: bool, qty: Decimal, tick: Decimal, touch: float
    ) -> Decimal:
        slip = self._slip_bps(s, k, qty, touch) / _BPS
        px = _dec(touch) * (1 + slip if buy else 1 - slip)
        return _to_tick(px, tick, up=buy)

    def trade(self, ev: TapeEvent, d: Decision) -> Trade:
        """The outcome of the open decision ``d`` taken on event ``ev``."""
        intent = d.intent
        if intent is None or ev.ts is None:
            raise ValueError("trade() takes an open decision with its intent")
        s = self.series.get(ev.symbol)
        if s is None or ev.index not in s.pos:
            raise OutcomeError(f"event {ev.index}: {ev.symbol} has no price on the tape")
        spec = self.params.symbols[ev.symbol]
        tick = spec.filters.tick_size
        sizing = self.params.sizing if intent.market == "FUT" else self.params.spot_sizing
        fee_maker, fee_taker = sizing.fee_maker, sizing.fee_taker
        long = intent.side == "BUY"
        qty = intent.qty
        exit_qty = intent.exit_qty if intent.exit_qty is not None else qty
        j = s.pos[ev.index]
        n = s.n
        ts = s.ts

        # entry
        entry_k: int | None = None
        entry_px: Decimal | None = None
        liq = "taker"
        policy = intent.exec_policy
        release_k: int = n - 1
        if s.bars:
            if j + 1 < n:
                entry_k = j + 1
                touch = float(s.ask_open[entry_k] if long else s.bid_open[entry_k])
                entry_px = self._market(s, entry_k, long, qty, tick, touch)
        else:
            k0 = max(j, int(np.searchsorted(ts, d.now_ms, "left")))
            if policy in ("Maker", "MakerThenTaker"):
                near = _to_tick(_dec(s.bid_lo[j] if long else s.ask_hi[j]), tick, up=not long)
                deadline = d.now_ms + intent.maker_wait_ms
                kd = int(np.searchsorted(ts, deadline, "left"))
                lim = float(near)
                eps = float(tick) * 1e-6
                seg = s.ask_lo[j + 1 : kd] < lim - eps if long else s.bid_hi[j + 1 : kd] > lim + eps
                hits = np.flatnonzero(seg)
                if hits.size:
                    entry_k, entry_px, liq = j + 1 + int(hits[0]), near, "maker"
                elif policy == "MakerThenTaker" and kd < n:
                    entry_k = kd
                    touch = float(s.ask_lo[kd] if long else s.bid_hi[kd])
                    entry_px = self._market(s, kd, long, qty, tick, touch)
                else:
                    release_k = min(kd, n - 1)
            elif k0 < n:
                entry_k = k0
                if policy == "Limit":
                    entry_px = intent.entry_px
                else:
                    touch = float(s.ask_lo[k0] if long else s.bid_hi[k0])
                    entry_px = self._market(s, k0, long, qty, tick, touch)
        common = dict(
            index=ev.index,
            intent_id=intent.intent_id,
            symbol=ev.symbol,
            side=intent.side,
            market=intent.market,
            qty=qty,
            policy=policy,
            decision_ts=ev.ts,
            tp_px=intent.tp_px,
            sl_px=intent.sl_px,
            features=ev.features or {},
            size_mult=d.size_mult,
            rules_fired=d.rules_fired,
        )
        if entry_k is None or entry_px is None:
            return Trade(
                entry_liquidity="none",
                entry_ts=None,
                entry_px=None,
                exit_reason="unfilled",
                exit_ts=None,
                exit_px=None,
                exit_liquidity="none",
                gross=_ZERO,
                fees=_ZERO,
                funding=_ZERO,
                funding_payments=(),
                pnl=_ZERO,
                release_after=int(s.index[release_k]),
                **common,  # type: ignore[arg-type]
            )
        entry_ts = int(ts[entry_k])

        # exit
        t_stop = entry_ts + self.params.exits.time_stop_ms
        kt = int(np.searchsorted(ts, t_stop, "left"))
        hole = kt < n and int(ts[kt]) > t_stop + GAP_MS  # a tape of several windows
        last = kt - 1 if hole else min(kt, n - 1)
        search_from = entry_k if s.bars else entry_k + 1
        eps = float(tick) * 1e-6
        hit = first_exit(s, search_from, last, long, float(intent.sl_px), float(intent.tp_px), eps)
        end = False
        if hit is not None:
            k, reason = hit
        elif hole:
            k, reason = max(last, entry_k), "end"
        elif kt < n:
            k, reason = kt, "time"
        else:
            k, reason, end = n - 1, "end", True
        if reason == "tp":
            exit_px, exit_liq, exit_fee = intent.tp_px, "maker", fee_maker
        else:
            if reason == "sl":
                if s.bars:
                    if long:
                        touch = min(float(s.bid_open[k]), float(intent.sl_px - tick))
                    else:
                        touch = max(float(s.ask_open[k]), float(intent.sl_px + tick))
                else:
                    touch = float(s.bid_lo[k] if long else s.ask_hi[k])
            else:
                touch = float(s.bid_close[k] if long else s.ask_close[k])
            exit_px = self._market(s, k, not long, exit_qty, tick, touch)
            exit_liq, exit_fee = "taker", fee_taker
        exit_ts = int(ts[k])
        sign = 1 if long else -1
        gross = sign * (exit_qty * exit_px - qty * entry_px)
        fee_in = fee_maker if liq == "maker" else fee_taker
        entry_fee = qty * entry_px * fee_in
        exit_fee_usdt = exit_qty * exit_px * exit_fee
        fees = entry_fee + exit_fee_usdt
        payments: tuple[FundingPayment, ...] = ()
        if intent.market == "FUT":
            payments = self._funding(
                s, ev, spec.funding_interval_hours, qty, long, entry_ts, exit_ts
            )
        funding = sum((p.amount for p in payments), _ZERO)
        return Trade(
            entry_liquidity=liq,
            entry_ts=entry_ts,
            entry_px=entry_px,
            exit_reason=reason,
            exit_ts=exit_ts,
            exit_px=exit_px,
            exit_liquidity=exit_liq,
            gross=gross,
            fees=fees,
            funding=funding,
            funding_payments=payments,
            pnl=gross - fees + funding,
            release_after=self.last_index + 1 if end else int(s.index[k]),
            entry_fee=entry_fee,
            exit_fee=exit_fee_usdt,
            **common,  # type: ignore[arg-type]
        )

    def _funding(
        self,
        s: Series,
        ev: TapeEvent,
        hours: int,
        qty: Decimal,
        long: bool,
        entry_ts: int,
        exit_ts: int,
    ) -> tuple[FundingPayment, ...]:
        step = hours * HOUR_MS
        t = (entry_ts // step + 1) * step
        if t > exit_ts:
            return ()
        history = self.funding.get(ev.symbol, [])
        times = [h[0] for h in history]
        out = []
        while t <= exit_ts:
            i = int(np.searchsorted(times, t - FUNDING_TOLERANCE_MS, "left")) if times else 0
            rate: float | None = None
            best = FUNDING_TOLERANCE_MS + 1
            while i < len(history) and history[i][0] <= t + FUNDING_TOLERANCE_MS:
                if abs(history[i][0] - t) < best:
                    best, rate = abs(history[i][0] - t), history[i][1]
                i += 1
            if rate is None:
                raise OutcomeError(
                    f"{self.tape.path or 'tape'}: the {ev.symbol} position opened by event "
                    f"{ev.index} (ts {ev.ts}) is open across the funding time {t} "
                    f"({_utc(t)}), and the tape holds no funding rate for it "
                    f"({len(history)} funding records for {ev.symbol}): add the exchange's "
                    "funding history to the tape (funding records, docs/replay.md), or replay "
                    "with --hold-ms (fixed holding, no P&L); a missing rate is never counted as 0"
                )
            p = int(np.searchsorted(s.ts, t, "right")) - 1
            mark = _dec(s.mid[max(p, 0)])
            amount = (qty * mark * _dec(rate)).quantize(E8, rounding=ROUND_HALF_EVEN)
            out.append(FundingPayment(t, rate, mark, -amount if long else amount))
            t += step
        return tuple(out)


def _utc(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
