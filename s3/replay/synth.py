"""Tapes without Redis: derived from the real feature sample, or synthetic (seeded, any length).

`sample_records` turns `data/samples/features_real.jsonl` (real Binance USD-M features; origin in
`data/samples/README.md`) into a tape: events merged in time order across symbols, every value
written as the stream producer writes it (a string), and a `side_hint` the sample does not have:
the side the top-of-book queue leans to (``BUY`` when ``imbalance_top1 >= 0.5``), a hint that is
independent of the flow and momentum the rules test, so vetoes such as R-023 (strong flow against
the entry) do occur. The state is fixed: kill switch OFF, health GREEN, no
`funding:next` key (the feature carries the funding).

`synth_records` generates a random but plausible stream for two perpetuals (with funding records
on the 8 h grid, the walk's own rate): a mid that follows a random walk with changing volatility, a one-tick book that now and then widens, log-normal top
depth with occasional crumbs, autocorrelated taker flow, drifting funding, the one-minute return,
volatility and the trend/range label computed from the walk itself, state changes (health, now and
then a kill switch, a `funding:next` key) and a few malformed entries. Same seed, same bytes.
"""

from __future__ import annotations

import json
import math
import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s3.replay.tape import Event, Funding, Header, Record, State, stream_fields

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "samples" / "features_real.jsonl"
FUNDING = ROOT / "data" / "samples" / "funding_real.jsonl"
"""The exchange's settled funding rates around the sample's windows (tools/derive_tapes.py)."""
SYNTH_START_MS = 1_704_067_200_000  # 2024-01-01 00:00:00 UTC
EIGHT_H_MS = 8 * 3_600_000


# -- the real sample --------------------------------------------------------------------------------
def sample_rows(path: str | Path = SAMPLE) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return sorted(rows, key=lambda r: (r["ts"], r["symbol"]))


def book_side(row: dict[str, Any]) -> str:
    return "BUY" if float(row.get("imbalance_top1", 0.5)) >= 0.5 else "SELL"


def sample_records(
    rows: list[dict[str, Any]], *, health: str = "GREEN", limit: int = 0
) -> Iterator[Record]:
    rows = rows[:limit] if limit else rows
    yield State(ts=rows[0]["ts"] if rows else 0, kill_switch="OFF", health=health)
    for row in rows:
        fields = stream_fields(row)
        fields["side_hint"] = book_side(row)
        yield Event(symbol=row["symbol"], id="", fields=fields)


def sample_funding(rows: list[dict[str, Any]], path: str | Path = FUNDING) -> list[Funding]:
    """The settled funding rates of the rows' symbols within 8 h of their time span, as tape
    records (so the outcome simulation can charge the funding a position crosses)."""
    if not rows or not Path(path).is_file():
        return []
    lo = min(r["ts"] for r in rows) - EIGHT_H_MS
    hi = max(r["ts"] for r in rows) + EIGHT_H_MS
    symbols = {r["symbol"] for r in rows}
    out = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            f = json.loads(line)
            if f["symbol"] in symbols and lo <= f["time"] <= hi:
                out.append(Funding(symbol=f["symbol"], time=f["time"], rate=f["rate"]))
    return sorted(out, key=lambda f: (f.time, f.symbol))


def sample_header(path: str | Path = SAMPLE, note: str = "") -> Header:
    return Header(
        source=f"derived from {Path(path).name} (real Binance USD-M features, see "
        "data/samples/README.md); side_hint = BUY if imbalance_top1 >= 0.5 else SELL",
        symbols=sorted({r["symbol"] for r in sample_rows(path)}),
        note=note,
    )


# -- synthetic ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Spec:
    symbol: str
    mid: float
    tick: float
    depth_median: float
    atr_rel: float
    mid_dp: int


SPECS = (
    _Spec("BTCUSDT", 62_000.0, 0.1, 60_000.0, 0.006, 2),
    _Spec("ETHUSDT", 3_300.0, 0.01, 25_000.0, 0.013, 3),
)


class _Walk:
    def __init__(self, spec: _Spec, rng: random.Random):
        self.spec = spec
        self.rng = rng
        self.mid = spec.mid
        self.vol_bps = 0.6
        self.flow = 0.0
        self.funding = 0.00003
        self.history: deque[float] = deque([spec.mid] * 301, maxlen=301)  # 5 min at 1 s
        self.returns: deque[float] = deque([0.0] * 60, maxlen=60)  # the last minute's 1 s returns
        self.atr = spec.mid * spec.atr_rel

    def step(self) -> dict[str, Any]:
        rng, spec = self.rng, self.spec
        # volatility regime: mean-reverting in log space, with rare bursts
        lv = math.log(self.vol_bps) * 0.98 + math.log(0.6) * 0.02 + rng.gauss(0, 0.12)
        if rng.random() < 0.0015:
            lv += 1.6
        self.vol_bps = min(max(math.exp(lv), 0.02), 12.0)
        prev = self.mid
        self.mid *= math.exp(rng.gauss(0, self.vol_bps / 1e4))
        self.history.append(self.mid)
        self.returns.append(self.mid / prev - 1)
        rets = self.returns
        mean = sum(rets) / len(rets)
        vol_1m = math.sqrt(sum((r - mean) ** 2 for r in rets) / (len(rets) - 1)) * 1e4
        ret_1m = self.mid / self.history[-61] - 1
        ret_5m = self.mid / self.history[0] - 1
        u = rng.random()
        ticks = 1 if u < 0.9 else (2 if u < 0.97 else (3 if u < 0.995 else rng.randint(20, 140)))
        spread_bps = ticks * spec.tick / self.mid * 1e4
        depth = spec.depth_median * math.exp(rng.gauss(0, 1.1))
        if rng.random() < 0.02:
            depth = rng.uniform(80, 480)
        imb = min(max(rng.betavariate(0.7, 0.7), 0.0005), 0.9995)
        self.flow = min(max(0.93 * self.flow + rng.gauss(0, 0.12), -0.95), 0.95)
        # funding: mean-reverting around 0.3 bp per 8 h, with rare jumps that decay
        self.funding = 0.998 * self.funding + 0.002 * 0.00003 + rng.gauss(0, 0.0000015)
        if rng.random() < 0.0002:
            self.funding = rng.choice((0.00035, -0.00035, 0.0006, 0.00001))
        self.funding = min(max(self.funding, -0.0009), 0.0009)
        self.atr *= math.exp(rng.gauss(0, 0.002))
        row: dict[str, Any] = {
            "mid": round(round(self.mid / spec.tick) * spec.tick, spec.mid_dp),
            "spread_bps": round(spread_bps, 5),
            "depth_top1_usdt": round(depth, 2),
            "atr": round(self.atr, 3),
            "funding_next": round(self.funding, 8),
            "ret_1m": round(ret_1m, 7),
            "vol_1m_bps": round(vol_1m, 4),
            "imbalance_top1": round(imb, 4),
            "trade_flow_1m": round(self.flow, 4),
            "regime": "trend" if abs(ret_5m) > 0.0008 else "range",
        }
        if rng.random() < 0.5:
            row["oi_change_1h"] = round(rng.gauss(0, 0.03), 4)
        return row


HEALTH_WEIGHTS = (("GREEN", 0.8), ("YELLOW", 0.1), ("ORANGE", 0.07), ("RED", 0.03))


def synth_records(
    events: int,
    *,
    seed: int = 1,
    start_ms: int = SYNTH_START_MS,
    state_every: int = 2_000,
    bad_every: int = 5_000,
) -> Iterator[Record]:
    """``events`` events alternating between BTCUSDT and ETHUSDT, 500 ms apart (each symbol once
    a second); a state record every ``state_every`` events on average; one malformed entry in
    about ``bad_every``."""
    rng = random.Random(seed)
    walks = [_Walk(s, rng) for s in SPECS]
    ts = start_ms
    health, kill = "GREEN", "OFF"
    funding_keys: dict[str, float] = {}
    next_funding = (start_ms // EIGHT_H_MS + 1) * EIGHT_H_MS
    yield State(ts=ts, kill_switch=kill, health=health)
    for n in range(events):
        while ts >= next_funding:  # the walk's funding settles on the 8 h grid (synthetic too)
            for w in walks:
                yield Funding(symbol=w.spec.symbol, time=next_funding, rate=round(w.funding, 8))
            next_funding += EIGHT_H_MS
        if n and rng.random() < 1 / state_every:
            health = rng.choices([h for h, _ in HEALTH_WEIGHTS], [w for _, w in HEALTH_WEIGHTS])[0]
            kill = "ON" if rng.random() < 0.05 else "OFF"
            funding_keys = (
                {rng.choice(SPECS).symbol: round(rng.gauss(0.00005, 0.0001), 8)}
                if rng.random() < 0.3
                else {}
            )
            yield State(ts=ts, kill_switch=kill, health=health, funding=funding_keys)
        walk = walks[n % len(walks)]
        row = walk.step()
        row["ts"] = ts
        fields = stream_fields(row)
        u = rng.random()
        if u < 0.02:
            pass  # no side hint: GATE.NO_SIDE
        else:
            lean = row["trade_flow_1m"] + rng.gauss(0, 0.3)
            fields["side_hint"] = "BUY" if lean >= 0 else "SELL"
        if rng.random() < 1 / bad_every:
            fields["mid"] = rng.choice(("NaN", "", "abc"))
        yield Event(symbol=walk.spec.symbol, id="", fields=fields)
        ts += 500
    for w in walks:  # the settlement after the last event (a position may still be open)
        yield Funding(symbol=w.spec.symbol, time=next_funding, rate=round(w.funding, 8))


def synth_header(events: int, seed: int) -> Header:
    return Header(
        source=f"synthetic: s3.replay.synth, seed {seed}, {events} events",
        symbols=[s.symbol for s in SPECS],
    )
