"""Synthetic tapes with planted edges, to check the attribution against a known truth.

A small bundle trades BTCUSDT with two veto rules:

- ``R-EDGE`` (``when edge_x > 0.5 then skip_entry``) fires on a fraction ``q_edge`` of the entries,
  and those entries are followed, by construction, by a move that mostly hits the stop loss
  (take profit with probability ``p_bad``): a real edge, the veto saves money;
- ``R-NOISE`` (``when noise_x > 0.5 then skip_entry``) fires on a fraction ``q_noise`` of the
  entries, independently of what the price does next: pure noise.

Each cycle of ``CYCLE_MS`` is one entry (side BUY, a taker at the ask) and the path after it: a
quote beyond the take profit or beyond the stop loss one second later, then the next entry back
at the starting price (the position is closed by then, so trades never interact). The win
probability of the other entries is set so that their expected P&L is exactly zero
(``p0 = -L / (W - L)`` with W and L the P&L of a win and of a loss, which the simulator
computes), so the planted contribution of the noise rule is 0 and that of the edge rule is
``cycles · q_edge · (1 - q_noise) · -(p_bad W + (1 - p_bad) L)``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from s3.core.decide import BundleSnapshot
from s3.replay.tape import Event, Header, Record, State, Tape, from_records, stream_fields

T0 = 1_704_070_800_000  # 2024-01-01 01:00 UTC: no funding time within the cycles used here
CYCLE_MS = 60_000
MID = 60_000.0
TP_AT = 61_000.0  # a win: the bid well above any TP
SL_AT = 59_000.0  # a loss: the bid well below any SL

BUNDLE_TOML = """\
bundle_id = "planted"
rev = 1
description = "synthetic: one planted edge, one noise rule"

[features]
symbol = { type = "enum", values = ["BTCUSDT"] }
side = { type = "enum", values = ["BUY", "SELL"] }
mid = { type = "number" }
spread_bps = { type = "number" }
depth_top1_usdt = { type = "number" }
funding_next = { type = "number" }
atr = { type = "number", optional = true }
bid = { type = "number", optional = true }
ask = { type = "number", optional = true }
edge_x = { type = "number" }
noise_x = { type = "number" }

[gates]
spread_bp_limit = 3.0
depth_top1_usdt_min = 200
max_funding_abs = 0.0005
max_feature_age_ms = 5_000

[symbols.BTCUSDT]
market = "FUT"
tick_size = "0.10"
step_size = "0.001"
min_qty = "0.001"
min_notional = "100"

[sizing]
margin_base_usdt = 20
leverage = 20
max_loss_usdt = 1.2
atr_mult = 1.5

[execution]
default_policy = "Taker"

[risk]
fut_margin_usdt_max = 1000
concurrent_entries_per_symbol = 1

[exits]
time_stop_ms = 20_000
market_slip_bps = 0.0
"""

RULES = """\
rule R-EDGE "planted edge: what follows is mostly a loss"
  when edge_x > 0.5
  then skip_entry

rule R-NOISE "pure noise"
  when noise_x > 0.5
  then skip_entry
"""


def write_bundle(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "bundle.toml").write_text(BUNDLE_TOML)
    (root / "planted.rule").write_text(RULES)
    return root


def _quote(ts: int, mid: float, side: str | None = None, **extra: float) -> Event:
    bid = round(mid - 0.05, 1)
    row = {
        "ts": ts,
        "mid": round(bid + 0.05, 2),
        "bid": bid,
        "ask": round(bid + 0.1, 1),
        "spread_bps": round(0.1 / mid * 1e4, 6),
        "depth_top1_usdt": 1_000_000.0,
        "funding_next": 0.0001,
        "atr": 600.0,
        "edge_x": 0.0,
        "noise_x": 0.0,
        **extra,
    }
    fields = stream_fields(row)
    if side:
        fields["side_hint"] = side
    return Event(symbol="BTCUSDT", id="", fields=fields)


@dataclass(frozen=True)
class Design:
    cycles: int = 300
    q_edge: float = 0.3
    q_noise: float = 0.3
    p_bad: float = 0.1


def tape(design: Design, seed: int, p0: float) -> tuple[Tape, list[tuple[bool, bool, bool]]]:
    """The tape of one seed, and per cycle (edge fired, noise fired, won)."""
    rng = random.Random(seed)
    records: list[Record] = [State(ts=T0, kill_switch="OFF", health="GREEN")]
    truth = []
    for k in range(design.cycles):
        t = T0 + k * CYCLE_MS
        edge = rng.random() < design.q_edge
        noise = rng.random() < design.q_noise
        won = rng.random() < (design.p_bad if edge else p0)
        truth.append((edge, noise, won))
        records.append(
            _quote(t, MID, "BUY", edge_x=1.0 if edge else 0.0, noise_x=1.0 if noise else 0.0)
        )
        records.append(_quote(t + 1_000, TP_AT if won else SL_AT))
    return from_records(Header(source=f"planted edge, seed {seed}"), records), truth


def win_loss(snap: BundleSnapshot) -> tuple[Decimal, Decimal]:
    """W and L: the P&L of one entry that wins and of one that loses, as simulated."""
    from s3.replay.replay import simulate_outcomes

    records: list[Record] = [State(ts=T0, kill_switch="OFF", health="GREEN")]
    for k, px in enumerate((TP_AT, SL_AT)):
        t = T0 + k * CYCLE_MS
        records += [_quote(t, MID, "BUY"), _quote(t + 1_000, px), _quote(t + 30_000, MID)]
    trades = simulate_outcomes(from_records(Header(source="calibration"), records), snap)
    win, loss = trades
    assert win.exit_reason == "tp" and loss.exit_reason == "sl"
    return win.pnl, loss.pnl


def planted_values(design: Design, w: Decimal, loss: Decimal) -> dict[str, float]:
    """The expected contribution of each rule (P&L with it minus without it)."""
    bad = design.p_bad * float(w) + (1 - design.p_bad) * float(loss)
    return {
        "R-EDGE": -design.cycles * design.q_edge * (1 - design.q_noise) * bad,
        "R-NOISE": 0.0,
    }


def p_zero(w: Decimal, loss: Decimal) -> float:
    """The win probability that makes an entry's expected P&L zero."""
    return float(-loss / (w - loss))
