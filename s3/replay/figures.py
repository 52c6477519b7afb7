"""Figures of a replay's trades, after freqtrade's backtest report: per run, per symbol and per
symbol and side.

Money is exact (`Decimal` USDT, written as strings); ratios are floats rounded to 6 places.

- ``trades``: filled trades (an ``unfilled`` maker entry is counted apart); ``wins``: P&L > 0.
- ``pnl`` = Σ (gross − fees + funding); ``expectancy``: mean P&L per trade; ``profit_factor``:
  Σ winning P&L / |Σ losing P&L| (None without a losing trade).
- ``max_drawdown``: the largest fall of the equity curve (realised P&L in exit order, starting at
  the bundle's futures margin budget, ``capital``) from a running peak, in USDT and as a fraction
  of that peak; ``time_under_water_ms``: the tape time the curve spent below its last peak (the
  spell still running at the end counts to the last exit), and the longest spell.
- ``exposure``: the fraction of the tape's time span with at least one position open.
- ``sharpe``, ``sortino`` and ``sqn`` are *per trade* (not annualised): mean / sample stdev,
  mean / downside deviation (root mean square of the losses, over all trades), and
  √min(n, 100) × mean / stdev (Van Tharp). None when n < 2 or the deviation is 0; the report flags
  samples under 30 trades as too small to read.
- ``exits``: the count per exit reason (tp, sl, time, end).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from s3.replay.outcomes import EXIT_REASONS, Trade

SMALL_SAMPLE = 30
_ZERO = Decimal(0)


def money(x: Decimal) -> str:
    """A Decimal as plain text, without exponent or trailing zeros ("0" for zero)."""
    if not x:
        return "0"
    text = format(x.normalize(), "f")
    return text


def _r(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, 6)


def equity_curve(trades: Sequence[Trade], start: Decimal = _ZERO) -> list[tuple[int, Decimal]]:
    """(exit ts, equity after it) for every filled trade, in exit order (ties: tape order)."""
    eq = start
    out = []
    for t in sorted((t for t in trades if t.filled), key=lambda t: (t.exit_ts or 0, t.index)):
        eq += t.pnl
        out.append((t.exit_ts or 0, eq))
    return out


def cash_flows(trades: Iterable[Trade]) -> list[tuple[int, int, Decimal]]:
    """Every movement of cash, in time order: (ts, tape index, amount): the entry fee when the
    entry fills, each funding payment at its time, the gross result and the exit fee at the exit.
    Its sum is the P&L (`tests/replay` checks it against the trades' own sums)."""
    flows: list[tuple[int, int, Decimal]] = []
    for t in trades:
        if not t.filled or t.entry_ts is None or t.exit_ts is None or t.entry_px is None:
            continue
        flows.append((t.entry_ts, t.index, -t.entry_fee))
        for p in t.funding_payments:
            flows.append((p.time, t.index, p.amount))
        flows.append((t.exit_ts, t.index, t.gross - t.exit_fee))
    flows.sort(key=lambda f: (f[0], f[1]))
    return flows


def drawdown(curve: Sequence[tuple[int, Decimal]], start: Decimal) -> dict[str, Any]:
    """The largest fall from a running peak, and the time spent below a peak: from the exit that
    first fell below it to the exit that regained it (or the last exit)."""
    peak = start
    fell: int | None = None
    max_dd = _ZERO
    max_dd_rel = 0.0
    under = longest = 0
    for ts, eq in curve:
        if eq >= peak:
            if fell is not None:
                under += ts - fell
                longest = max(longest, ts - fell)
                fell = None
            peak = eq
            continue
        if fell is None:
            fell = ts
        if peak - eq > max_dd:
            max_dd = peak - eq
            max_dd_rel = float(max_dd / peak) if peak > 0 else 0.0
    if fell is not None:
        under += curve[-1][0] - fell
        longest = max(longest, curve[-1][0] - fell)
    return {
        "max_drawdown": money(max_dd),
        "max_drawdown_rel": _r(max_dd_rel),
        "time_under_water_ms": under,
        "longest_under_water_ms": longest,
    }


def exposure(trades: Iterable[Trade], first_ts: int | None, last_ts: int | None) -> float | None:
    if first_ts is None or last_ts is None or last_ts <= first_ts:
        return None
    spans = sorted(
        (t.entry_ts, t.exit_ts)
        for t in trades
        if t.filled and t.entry_ts is not None and t.exit_ts is not None
    )
    covered = 0
    cur_a: int | None = None
    cur_b = 0
    for a, b in spans:
        assert a is not None and b is not None
        if cur_a is None or a > cur_b:
            if cur_a is not None:
                covered += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_a is not None:
        covered += cur_b - cur_a
    return covered / (last_ts - first_ts)


def ratios(pnls: Sequence[float]) -> dict[str, float | None]:
    n = len(pnls)
    if n < 2:
        return {"sharpe": None, "sortino": None, "sqn": None}
    mean = sum(pnls) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in pnls) / (n - 1))
    down = math.sqrt(sum(min(0.0, x) ** 2 for x in pnls) / n)
    return {
        "sharpe": _r(mean / sd) if sd > 0 else None,
        "sortino": _r(mean / down) if down > 0 else None,
        "sqn": _r(math.sqrt(min(n, 100)) * mean / sd) if sd > 0 else None,
    }


def group_figures(
    trades: Sequence[Trade], first_ts: int | None, last_ts: int | None, capital: Decimal
) -> dict[str, Any]:
    filled = [t for t in trades if t.filled]
    pnls = [t.pnl for t in filled]
    wins = [p for p in pnls if p > 0]
    losses = [p for p in pnls if p <= 0]
    total = sum(pnls, _ZERO)
    n = len(filled)
    lost = sum(losses, _ZERO)
    exits = {r: 0 for r in EXIT_REASONS if r != "unfilled"}
    for t in filled:
        exits[t.exit_reason] += 1
    curve = equity_curve(filled, capital)
    return {
        "trades": n,
        "unfilled": len(trades) - n,
        "wins": len(wins),
        "losses": len(losses),
        "win_rate": _r(len(wins) / n) if n else None,
        "pnl": money(total),
        "gross": money(sum((t.gross for t in filled), _ZERO)),
        "fees": money(sum((t.fees for t in filled), _ZERO)),
        "funding": money(sum((t.funding for t in filled), _ZERO)),
        "expectancy": money((total / n).quantize(Decimal("0.00000001"))) if n else None,
        "avg_win": money((sum(wins, _ZERO) / len(wins)).quantize(Decimal("0.00000001")))
        if wins
        else None,
        "avg_loss": money((lost / len(losses)).quantize(Decimal("0.00000001"))) if losses else None,
        "best": money(max(pnls)) if pnls else None,
        "worst": money(min(pnls)) if pnls else None,
        "profit_factor": _r(float(sum(wins, _ZERO) / -lost)) if lost < 0 else None,
        **drawdown(curve, capital),
        "exposure": _r(exposure(filled, first_ts, last_ts)),
        "avg_duration_ms": round(sum(t.duration_ms for t in filled) / n) if n else None,
        **ratios([float(p) for p in pnls]),
        "small_sample": n < SMALL_SAMPLE,
        "exits": exits,
    }


def figures(
    trades: Sequence[Trade], first_ts: int | None, last_ts: int | None, capital: Decimal
) -> dict[str, Any]:
    """The whole run, each symbol, and each symbol and side."""
    out: dict[str, Any] = {
        "capital": money(capital),
        "all": group_figures(trades, first_ts, last_ts, capital),
        "by_symbol": {},
        "by_symbol_side": {},
    }
    for sym in sorted({t.symbol for t in trades}):
        mine = [t for t in trades if t.symbol == sym]
        out["by_symbol"][sym] = group_figures(mine, first_ts, last_ts, capital)
        for side in ("BUY", "SELL"):
            these = [t for t in mine if t.side == side]
            if these:
                out["by_symbol_side"][f"{sym} {side}"] = group_figures(
                    these, first_ts, last_ts, capital
                )
    return out
