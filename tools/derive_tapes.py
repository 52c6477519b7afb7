#!/usr/bin/env python3
"""Derive the replay tapes with prices and funding history (data/tapes/*_dense.jsonl.gz and the
bar tape data/tapes/real_bars_1m.jsonl.gz) from the shared Binance market data.

Run by hand from the repository root with the repo's venv (the product never reads the shared
folder):

    .venv/bin/python tools/derive_tapes.py [MARKET_DIR] [--only A,B,C,bars] [--out data/tapes]

- **Dense tapes** (windows A, B, C): one event per bookTicker row after the 60 s warm-up, the
  features of `data/samples/README.md` computed at each row by `tools/derive_samples.py` (the
  same functions), plus the exchange's settled funding history of the window's symbols (every
  ``fundingRate`` row within 8 h of the window) as tape ``funding`` records.
- **Bar tape**: the month of 1-minute klines (2025-05-04 → 2025-06-03, BTCUSDT and ETHUSDT
  perpetuals), one event per bar at its close time, with the funding history of the month. What
  bars give is derived from them (`open`/`high`/`low`/`close`, `mid` = close, `ret_1m`, the
  1-hour ATR of the bars aggregated to hours, `regime`, `funding_next` = the last settled rate);
  what bars cannot give is set to the tick windows' **typical values** and marked so in the
  header: `spread_bps` (one tick at the bar's close: the tick windows' books are one tick wide
  almost always), `depth_top1_usdt`, `vol_1m_bps`, `imbalance_top1` and `trade_flow_1m` (the
  medians of data/samples/features_real.jsonl per symbol). `side_hint` is the bar's direction
  (BUY when close >= open). The tape starts when the hourly ATR has its 14 bars.

Deterministic: the same inputs give the same bytes (gzip without name or time stamp).
"""

from __future__ import annotations

import argparse
import bisect
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import derive_samples as ds  # noqa: E402

from s3.replay.synth import sample_records  # noqa: E402
from s3.replay.tape import Funding, Header, Record, write_tape  # noqa: E402

EIGHT_H = 8 * 3_600_000
MIN_MS = 60_000
KLINES_1M = "{sym}_binance-usdm_klines1m_20250504T1533Z-20250603T1531Z.csv.gz"
TICKS = {"BTCUSDT": 0.1, "ETHUSDT": 0.01}
TYPICAL_FIELDS = ("depth_top1_usdt", "vol_1m_bps", "imbalance_top1", "trade_flow_1m")
REGIME_BARS = 5  # 5 minutes of 1m bars, as the tick windows' regime lookback


def funding_records(market: Path, symbols: list[str], t_from: int, t_to: int) -> list[Funding]:
    """The settled funding rows of ``symbols`` with t_from - 8 h <= funding_time <= t_to + 8 h."""
    out: list[Funding] = []
    for sym in symbols:
        times, rates = ds.load_funding(market / ds.FUNDING_FILES[sym])
        for t, r in zip(times, rates, strict=True):
            if t_from - EIGHT_H <= t <= t_to + EIGHT_H:
                out.append(Funding(symbol=sym, time=t, rate=r))
    return sorted(out, key=lambda f: (f.time, f.symbol))


def sample_funding(market: Path, out: Path) -> int:
    """data/samples/funding_real.jsonl: the settled rates within 8 h of every tick window, for
    `s3 tape sample` (one JSON object per line: symbol, time, rate)."""
    seen: dict[tuple[str, int], float] = {}
    for symbol, _, tag, _ in ds.WINDOWS:
        book_t, _ = ds.load_book(market / f"{symbol}_binance-usdm_bookTicker_{tag}.csv.gz")
        for f in funding_records(market, [symbol], book_t[0], book_t[-1]):
            seen[(f.symbol, f.time)] = f.rate
    rows = sorted(seen.items(), key=lambda kv: (kv[0][1], kv[0][0]))
    with out.open("w", encoding="utf-8", newline="\n") as fh:
        for (sym, t), rate in rows:
            fh.write(json.dumps({"symbol": sym, "time": t, "rate": rate}) + "\n")
    return len(rows)


def dense_tape(market: Path, label: str, out: Path) -> tuple[int, int]:
    windows = [w for w in ds.WINDOWS if w[1] == label]
    if not windows:
        raise SystemExit(f"no window {label!r}")
    rows: list[dict[str, Any]] = []
    for symbol, _, tag, mark_tag in windows:
        rows.extend(ds.derive_window(market, symbol, tag, mark_tag, dense=True))
    rows.sort(key=lambda r: (r["ts"], r["symbol"]))  # stable: a millisecond keeps file order
    symbols = sorted({str(r["symbol"]) for r in rows})
    funding = funding_records(market, symbols, rows[0]["ts"], rows[-1]["ts"])
    tag = windows[0][2]
    header = Header(
        source=f"tools/derive_tapes.py {label}: every bookTicker row of window {label} ({tag}, "
        "Binance USD-M, see data/samples/README.md) after a 60 s warm-up, features as in "
        "data/samples/README.md with each row's own quote; side_hint = BUY if imbalance_top1 >= "
        f"0.5 else SELL; {len(funding)} settled funding rates (fundingRate files) within 8 h",
        symbols=symbols,
        note=f"dense window {label}: one event per quote, with funding history",
    )
    records: list[Record] = [*funding, *sample_records(rows)]
    write_tape(out, header, records)
    return len(rows), len(funding)


def typical_values() -> dict[str, dict[str, float]]:
    """The medians per symbol of the features bars cannot give, over the real sample."""
    rows = [
        json.loads(line)
        for line in (ROOT / "data/samples/features_real.jsonl").read_text().splitlines()
    ]
    return {
        sym: {
            k: round(statistics.median(float(r[k]) for r in rows if r["symbol"] == sym), 4)
            for k in TYPICAL_FIELDS
        }
        for sym in TICKS
    }


def load_1m(path: Path) -> list[tuple[int, float, float, float, float]]:
    return [
        (
            int(r["open_time"]),
            float(r["open"]),
            float(r["high"]),
            float(r["low"]),
            float(r["close"]),
        )
        for r in ds._open(path)
    ]


def hourly_atr(bars: list[tuple[int, float, float, float, float]]) -> tuple[list[int], list[float]]:
    """ATR(EMA, 14) of the 1h bars built from the 1m bars (a whole hour each: open_time % 1 h == 0
    and 60 bars), as derive_samples.seed_atr computes it; (close time of each hour, ATR after it)."""
    hours: dict[int, list[tuple[int, float, float, float, float]]] = {}
    for b in bars:
        hours.setdefault(b[0] // ds.HOUR_MS * ds.HOUR_MS, []).append(b)
    closes: list[int] = []
    atrs: list[float] = []
    alpha = 2.0 / (ds.ATR_N + 1)
    prev_close: float | None = None
    trs: list[float] = []
    atr: float | None = None
    for start in sorted(hours):
        hb = hours[start]
        if len(hb) != 60:
            continue  # the partial first and last hours of the month
        high, low, close = max(b[2] for b in hb), min(b[3] for b in hb), hb[-1][4]
        tr = (
            high - low
            if prev_close is None
            else max(high - low, abs(high - prev_close), abs(low - prev_close))
        )
        prev_close = close
        if atr is None:
            trs.append(tr)
            if len(trs) == ds.ATR_N:
                atr = sum(trs) / ds.ATR_N
        else:
            atr = alpha * tr + (1 - alpha) * atr
        if atr is not None:
            closes.append(start + ds.HOUR_MS)
            atrs.append(atr)
    return closes, atrs


def bar_rows(market: Path, symbol: str, typical: dict[str, float]) -> list[dict[str, Any]]:
    bars = load_1m(market / KLINES_1M.format(sym=symbol))
    atr_t, atr_v = hourly_atr(bars)
    fund_t, fund_r = ds.load_funding(market / ds.FUNDING_FILES[symbol])
    tick = TICKS[symbol]
    out: list[dict[str, Any]] = []
    for i, (open_time, o, h, lo, c) in enumerate(bars):
        t = open_time + MIN_MS  # the bar's close: a decision sees the whole bar, never a later one
        k = bisect.bisect_right(atr_t, t) - 1
        if k < 0 or i < REGIME_BARS:
            continue
        prev_c = bars[i - 1][4]
        back = bars[i - REGIME_BARS][4]
        regime = "trend" if abs(c / back - 1) * 1e4 > ds.REGIME_TREND_BPS else "range"
        out.append(
            {
                "symbol": symbol,
                "ts": t,
                "open": o,
                "high": h,
                "low": lo,
                "close": c,
                "mid": c,
                "spread_bps": round(tick / c * 1e4, 5),
                "atr": round(atr_v[k], 3),
                "funding_next": fund_r[bisect.bisect_left(fund_t, t) - 1],
                "ret_1m": round(c / prev_c - 1, 7),
                "regime": regime,
                **typical,
                "side_hint": "BUY" if c >= o else "SELL",
            }
        )
    return out


def bar_tape(market: Path, out: Path) -> tuple[int, int]:
    typical = typical_values()
    rows: list[dict[str, Any]] = []
    for sym in TICKS:
        rows.extend(bar_rows(market, sym, typical[sym]))
    rows.sort(key=lambda r: (r["ts"], r["symbol"]))
    funding = funding_records(market, list(TICKS), rows[0]["ts"], rows[-1]["ts"])
    shown = "; ".join(
        f"{s}: " + ", ".join(f"{k} {v:g}" for k, v in t.items()) for s, t in typical.items()
    )
    header = Header(
        source="tools/derive_tapes.py bars: the 1m klines of BTCUSDT and ETHUSDT perpetuals "
        "(2025-05-04 -> 2025-06-03, Binance USD-M, freqtrade caches of typhonun/DcaTpStrategy; see "
        "data/tapes/README.md), one event per bar at its close; atr = ATR(EMA 14) of the hours "
        f"built from the bars; {len(funding)} settled funding rates",
        symbols=list(TICKS),
        note="BAR TAPE. TYPICAL VALUES, not measured: spread_bps = one tick at the close; "
        f"{shown} (medians of the tick windows, data/samples/features_real.jsonl); side_hint = "
        "the bar's direction",
    )
    records: list[Record] = list(funding)
    for r in rows:
        side = r.pop("side_hint")
        fields = {k: str(v) for k, v in r.items() if k != "symbol"}
        fields["side_hint"] = side
        records.append(_event(r["symbol"], fields))
    from s3.replay.tape import State

    write_tape(out, header, [State(ts=rows[0]["ts"], kill_switch="OFF", health="GREEN"), *records])
    return len(rows), len(funding)


def _event(symbol: str, fields: dict[str, str]) -> Record:
    from s3.replay.tape import Event

    return Event(symbol=symbol, id="", fields=fields)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("market", nargs="?", default="../shared/data/market", type=Path)
    ap.add_argument(
        "--only", default="funding,A,B,C,bars", help="comma-separated: funding, A, B, C, bars"
    )
    ap.add_argument("--out", default=ROOT / "data" / "tapes", type=Path)
    args = ap.parse_args(argv)
    names = {
        "A": "real_window_a_dense.jsonl.gz",
        "B": "real_window_b_dense.jsonl.gz",
        "C": "real_window_c_dense.jsonl.gz",
        "bars": "real_bars_1m.jsonl.gz",
    }
    for which in [w.strip() for w in args.only.split(",") if w.strip()]:
        if which == "funding":
            n = sample_funding(args.market, ROOT / "data" / "samples" / "funding_real.jsonl")
            print(f"data/samples/funding_real.jsonl: {n} funding rates", file=sys.stderr)
            continue
        if which not in names:
            raise SystemExit(f"--only: {which!r} is not one of {', '.join(names)}")
        path = args.out / names[which]
        if which == "bars":
            n, f = bar_tape(args.market, path)
        else:
            n, f = dense_tape(args.market, which, path)
        size = path.stat().st_size
        print(f"{path}: {n} events, {f} funding records, {size:,} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
