"""A/B with outcomes, walk-forward windows: what a change of bundle does to the money.

- `ab_outcomes`: Δ P&L (B − A) with a 95 % block-bootstrap interval (the method of
  `s3.replay.attribution`: equal time blocks, trades in the block of their deciding event,
  ``resamples`` seeded draws), both equity curves, both sets of figures, and per rule the P&L of the
  trades it fired in under A and under B.
- `walk_forward`: the tape cut into consecutive windows of equal event count; each is replayed
  on its own (budgets, positions and exits start afresh, a position still open at a window's end
  is marked there) and reported, so that a change that pays in one window only shows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import numpy as np

from s3.core.decide import BundleSnapshot
from s3.replay.attribution import RESAMPLES, block_count, block_pnl, bootstrap_ci
from s3.replay.figures import equity_curve, figures, money
from s3.replay.outcomes import Trade
from s3.replay.replay import ReplayConfig, ReplayResult, replay
from s3.replay.tape import Tape


def _capital(r: ReplayResult) -> Decimal:
    return Decimal(repr(r.params.risk.fut_margin_usdt_max)) if r.params is not None else Decimal(0)


def _pnl(trades: Sequence[Trade]) -> Decimal:
    return sum((t.pnl for t in trades), Decimal(0))


def rule_pnl(trades: Sequence[Trade]) -> dict[str, tuple[int, Decimal]]:
    """Per rule: the trades it fired in and their P&L."""
    out: dict[str, tuple[int, Decimal]] = {}
    for t in trades:
        if not t.filled:
            continue
        for r in t.rules_fired:
            n, p = out.get(r, (0, Decimal(0)))
            out[r] = (n + 1, p + t.pnl)
    return out


def ab_outcomes(
    a: ReplayResult,
    b: ReplayResult,
    *,
    blocks: int | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    first = a.first_ts or 0
    span = max(1, (a.last_ts or 0) - first + 1)
    stop = a.params.exits.time_stop_ms if a.params is not None else 300_000
    k = blocks or block_count(span, stop)
    draws = np.random.default_rng(seed).integers(0, k, size=(resamples, k))
    deltas = block_pnl(b.trades, first, span, k) - block_pnl(a.trades, first, span, k)
    lo, hi = bootstrap_ci(deltas, draws)
    pa, pb = _pnl(a.trades), _pnl(b.trades)
    ra, rb = rule_pnl(a.trades), rule_pnl(b.trades)
    ids = list(a.rule_ids) + [r for r in b.rule_ids if r not in a.rule_ids]
    rules: list[dict[str, Any]] = []
    for r in ids:
        na, xa = ra.get(r, (0, Decimal(0)))
        nb, xb = rb.get(r, (0, Decimal(0)))
        if na or nb:
            rules.append(
                {
                    "rule_id": r,
                    "a_trades": na,
                    "a_pnl": money(xa),
                    "b_trades": nb,
                    "b_pnl": money(xb),
                    "d_pnl": money(xb - xa),
                }
            )
    rules.sort(key=lambda x: (-abs(Decimal(str(x["d_pnl"]))), str(x["rule_id"])))
    ca, cb = _capital(a), _capital(b)
    return {
        "pnl": {"a": money(pa), "b": money(pb)},
        "d_pnl": money(pb - pa),
        "d_pnl_ci95": [round(lo, 8), round(hi, 8)],
        "distinguishable_from_zero": lo > 0 or hi < 0,
        "method": f"B - A; block bootstrap, {k} equal time blocks, {resamples} draws, seed {seed}",
        "trades": {"a": sum(t.filled for t in a.trades), "b": sum(t.filled for t in b.trades)},
        "figures": {
            "a": figures(a.trades, a.first_ts, a.last_ts, ca),
            "b": figures(b.trades, b.first_ts, b.last_ts, cb),
        },
        "equity": {
            "a": [[ts, money(eq)] for ts, eq in equity_curve(a.trades, ca)],
            "b": [[ts, money(eq)] for ts, eq in equity_curve(b.trades, cb)],
        },
        "rules": rules,
    }


def ab_text(doc: dict[str, Any]) -> str:
    lo, hi = doc["d_pnl_ci95"]
    verdict = (
        "distinguishable from zero"
        if doc["distinguishable_from_zero"]
        else "not distinguishable from zero"
    )
    fa, fb = doc["figures"]["a"]["all"], doc["figures"]["b"]["all"]
    lines = [
        f"outcomes: P&L A {doc['pnl']['a']} USDT ({fa['trades']} trades), B {doc['pnl']['b']} "
        f"USDT ({fb['trades']} trades); Δ P&L (B - A) {doc['d_pnl']} USDT, 95 % interval "
        f"[{lo:.4f}, {hi:.4f}]: {verdict}",
        f"  max drawdown A {fa['max_drawdown']}, B {fb['max_drawdown']}; win rate A "
        f"{_pct(fa['win_rate'])}, B {_pct(fb['win_rate'])}; exits tp/sl/time/end A "
        f"{_exits(fa)}, B {_exits(fb)}",
    ]
    if doc["rules"]:
        lines.append("  P&L of the trades each rule fired in (A -> B), largest change first:")
        for r in doc["rules"][:15]:
            lines.append(
                f"    {r['rule_id']:<8} {r['a_trades']:>5} trades {r['a_pnl']:>12} -> "
                f"{r['b_trades']:>5} trades {r['b_pnl']:>12}  (Δ {r['d_pnl']})"
            )
    return "\n".join(lines) + "\n"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _exits(g: dict[str, Any]) -> str:
    e = g["exits"]
    return f"{e['tp']}/{e['sl']}/{e['time']}/{e['end']}"


# -- walk-forward -------------------------------------------------------------------------------------
def split(tape: Tape, windows: int) -> list[Tape]:
    """``windows`` consecutive tapes of (nearly) equal event counts, events re-indexed."""
    if windows < 1:
        raise ValueError("walk-forward needs at least one window")
    n = len(tape.events)
    out = []
    for w in range(windows):
        lo, hi = n * w // windows, n * (w + 1) // windows
        events = [dataclasses.replace(e, index=e.index - lo) for e in tape.events[lo:hi]]
        out.append(dataclasses.replace(tape, events=events))
    return out


def walk_forward(
    tape: Tape,
    snaps: Sequence[BundleSnapshot],
    config: ReplayConfig,
    windows: int,
) -> list[dict[str, Any]]:
    """Each window replayed with each bundle: its span, and P&L/trades/figures per bundle (and
    Δ with its interval when there are two bundles)."""
    rows = []
    for n, part in enumerate(split(tape, windows)):
        results = [replay(part, s, config) for s in snaps]
        first = results[0]
        row: dict[str, Any] = {
            "window": n + 1,
            "events": len(part.events),
            "first_ts": first.first_ts,
            "last_ts": first.last_ts,
            "bundles": [
                {
                    "label": r.label,
                    "pnl": money(_pnl(r.trades)),
                    "trades": sum(t.filled for t in r.trades),
                    "figures": figures(r.trades, r.first_ts, r.last_ts, _capital(r))["all"],
                }
                for r in results
            ],
        }
        if len(results) == 2:
            ab = ab_outcomes(results[0], results[1])
            row["d_pnl"], row["d_pnl_ci95"] = ab["d_pnl"], ab["d_pnl_ci95"]
        rows.append(row)
    return rows


def walk_forward_text(rows: list[dict[str, Any]]) -> str:
    from s3.replay.output import when

    lines = ["walk-forward (each window replayed on its own):"]
    for r in rows:
        parts = [
            f"{b['label']}: {b['trades']} trades, P&L {b['pnl']}, max DD "
            f"{b['figures']['max_drawdown']}"
            for b in r["bundles"]
        ]
        d = ""
        if "d_pnl" in r:
            lo, hi = r["d_pnl_ci95"]
            d = f"; Δ {r['d_pnl']} [{lo:.4f}, {hi:.4f}]"
        lines.append(
            f"  #{r['window']} {when(r['first_ts'])} -> {when(r['last_ts'])} ({r['events']} "
            f"events): " + "; ".join(parts) + d
        )
    return "\n".join(lines) + "\n"
