#!/usr/bin/env python3
"""Derive a small real-data feature sample (data/samples/features_real.jsonl).

Reads the shared Binance captures (see ``../shared/data/market/PROVENANCE.md``) and writes one
feature snapshot every ``STEP_MS`` for each USD-M perpetual tick window of BTCUSDT and ETHUSDT.
Stdlib only. This tool is run by hand; the product never reads the shared folder.

    python tools/derive_samples.py [MARKET_DIR] [--out data/samples/features_real.jsonl]

Every field is documented in ``data/samples/README.md``.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import gzip
import json
import math
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path

STEP_MS = 6_000  # one snapshot every 6 s
WARMUP_MS = 60_000  # the 1-minute features need one full minute of history
ONE_MIN_MS = 60_000
REGIME_LOOKBACK_MS = 300_000  # 5 minutes (or less, see regime_ret)
REGIME_TREND_BPS = 8.0  # |return over the regime lookback| above this -> "trend"
ATR_N = 14
HOUR_MS = 3_600_000

# (symbol, window label, window tag used in the file names, markPrice file tag or None)
WINDOWS: list[tuple[str, str, str, str | None]] = [
    ("BTCUSDT", "A", "20240808T2354Z-20240809T0000Z", None),
    ("ETHUSDT", "A", "20240808T2354Z-20240809T0000Z", None),
    ("BTCUSDT", "B", "20230404T2358Z-20230405T0006Z", "20230404T2358Z-20230405T0006Z"),
    ("BTCUSDT", "C", "20240718T2357Z-20240719T0005Z", None),
    ("ETHUSDT", "C", "20240718T2357Z-20240719T0005Z", None),
]

FUNDING_FILES = {
    "BTCUSDT": "BTCUSDT_binance-usdm_fundingRate_20190910-20260517.csv",
    "ETHUSDT": "ETHUSDT_binance-usdm_fundingRate_20191127-20260517.csv",
}
KLINES_1H = "{sym}_binance-usdm_klines1h_20230101T0000Z-20241231T2300Z.csv"


def _open(path: Path) -> Iterator[dict[str, str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as fh:
        yield from csv.DictReader(fh)


def load_book(path: Path) -> tuple[list[int], list[tuple[float, float, float, float]]]:
    """bookTicker rows in file order: (event_time list, (bid, bid_qty, ask, ask_qty) list)."""
    times: list[int] = []
    quotes: list[tuple[float, float, float, float]] = []
    for row in _open(path):
        times.append(int(row["event_time"]))
        quotes.append(
            (
                float(row["best_bid_price"]),
                float(row["best_bid_qty"]),
                float(row["best_ask_price"]),
                float(row["best_ask_qty"]),
            )
        )
    return times, quotes


def load_trades(path: Path) -> tuple[list[int], list[float]]:
    """Trades as (time list, signed taker notional list): + for taker buys, - for taker sells."""
    times: list[int] = []
    signed: list[float] = []
    for row in _open(path):
        notional = float(row["quote_qty"])
        taker_sold = row["is_buyer_maker"] == "true"
        times.append(int(row["time"]))
        signed.append(-notional if taker_sold else notional)
    return times, signed


def seed_atr(path: Path, window_start_ms: int, n: int = ATR_N) -> tuple[float, int]:
    """ATR(EMA, n) over every 1h bar that closed at or before the window start.

    TR = max(high - low, |high - prev_close|, |low - prev_close|) (the first bar: high - low);
    the EMA is seeded with the mean of the first n TRs, then ATR = a*TR + (1-a)*ATR, a = 2/(n+1).
    Returns (atr, open_time of the last bar used).
    """
    alpha = 2.0 / (n + 1)
    prev_close: float | None = None
    trs: list[float] = []
    atr: float | None = None
    last_open = -1
    for row in _open(path):
        open_time = int(row["open_time"])
        if open_time + HOUR_MS > window_start_ms:
            break
        high, low, close = float(row["high"]), float(row["low"]), float(row["close"])
        if prev_close is None:
            tr = high - low
        else:
            tr = max(high - low, abs(high - prev_close), abs(low - prev_close))
        prev_close = close
        last_open = open_time
        if atr is None:
            trs.append(tr)
            if len(trs) == n:
                atr = sum(trs) / n
        else:
            atr = alpha * tr + (1 - alpha) * atr
    if atr is None:
        raise SystemExit(f"not enough 1h bars before {window_start_ms} in {path}")
    return atr, last_open


def load_funding(path: Path) -> tuple[list[int], list[float]]:
    times: list[int] = []
    rates: list[float] = []
    for row in _open(path):
        times.append(int(row["funding_time"]))
        rates.append(float(row["funding_rate"]))
    return times, rates


def load_mark(path: Path) -> tuple[list[int], list[float]]:
    times: list[int] = []
    rates: list[float] = []
    for row in _open(path):
        times.append(int(row["event_time"]))
        rates.append(float(row["funding_rate"]))
    return times, rates


def asof(times: list[int], t: int) -> int:
    """Index of the last element with times[i] <= t (file order kept for equal times), or -1."""
    return bisect.bisect_right(times, t) - 1


def mid_at(book_t: list[int], book_q: list[tuple[float, float, float, float]], t: int) -> float:
    i = asof(book_t, t)
    if i < 0:
        raise ValueError(f"no quote at or before {t}")
    bid, _, ask, _ = book_q[i]
    return (bid + ask) / 2


def derive_window(
    market: Path, symbol: str, tag: str, mark_tag: str | None
) -> list[dict[str, object]]:
    book_t, book_q = load_book(market / f"{symbol}_binance-usdm_bookTicker_{tag}.csv.gz")
    trade_t, trade_s = load_trades(market / f"{symbol}_binance-usdm_trades_{tag}.csv.gz")
    start, end = book_t[0], book_t[-1]
    atr, _ = seed_atr(market / KLINES_1H.format(sym=symbol), start)
    fund_t, fund_r = load_funding(market / FUNDING_FILES[symbol])
    mark: tuple[list[int], list[float]] | None = None
    if mark_tag is not None:
        mark = load_mark(market / f"{symbol}_binance-usdm_markPrice_{mark_tag}.csv")

    # Cumulative signed/absolute taker notional for O(log n) one-minute windows.
    cum_signed = [0.0]
    cum_abs = [0.0]
    for s in trade_s:
        cum_signed.append(cum_signed[-1] + s)
        cum_abs.append(cum_abs[-1] + abs(s))

    out: list[dict[str, object]] = []
    # Snapshot grid: first point one whole warm-up after the first quote, aligned to the second.
    t = ((start + WARMUP_MS) // 1000 + 1) * 1000
    while t <= end:
        bid, bid_qty, ask, ask_qty = book_q[asof(book_t, t)]
        mid = (bid + ask) / 2
        spread_bps = (ask - bid) / mid * 1e4
        depth = min(bid_qty * bid, ask_qty * ask)
        imbalance = bid_qty / (bid_qty + ask_qty)

        mids = [mid_at(book_t, book_q, t - k * 1000) for k in range(60, -1, -1)]  # 61 points
        ret_1m = mids[-1] / mids[0] - 1
        rets_1s = [mids[k + 1] / mids[k] - 1 for k in range(60)]
        vol_1m_bps = statistics.stdev(rets_1s) * 1e4

        lookback = min(REGIME_LOOKBACK_MS, t - start)
        ret_regime = mid / mid_at(book_t, book_q, t - lookback) - 1
        regime = "trend" if abs(ret_regime) * 1e4 > REGIME_TREND_BPS else "range"

        lo = bisect.bisect_right(trade_t, t - ONE_MIN_MS)  # trades with time in (t-60s, t]
        hi = bisect.bisect_right(trade_t, t)
        total = cum_abs[hi] - cum_abs[lo]
        flow = (cum_signed[hi] - cum_signed[lo]) / total if total > 0 else 0.0

        if mark is not None and asof(mark[0], t) >= 0:
            funding = mark[1][asof(mark[0], t)]
        else:
            funding = fund_r[bisect.bisect_left(fund_t, t) - 1]  # last funding_time < t

        numbers = (mid, spread_bps, depth, atr, funding, ret_1m, vol_1m_bps, imbalance, flow)
        if not all(math.isfinite(x) for x in numbers):
            raise SystemExit(f"non-finite feature at {symbol} ts={t}: {numbers}")
        out.append(
            {
                "symbol": symbol,
                "ts": t,
                "mid": round(mid, 4),
                "spread_bps": round(spread_bps, 5),
                "depth_top1_usdt": round(depth, 2),
                "atr": round(atr, 3),
                "funding_next": funding,
                "ret_1m": round(ret_1m, 7),
                "vol_1m_bps": round(vol_1m_bps, 4),
                "imbalance_top1": round(imbalance, 4),
                "trade_flow_1m": round(flow, 4),
                "regime": regime,
            }
        )
        t += STEP_MS
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("market", nargs="?", default="../shared/data/market", type=Path)
    ap.add_argument("--out", default="data/samples/features_real.jsonl", type=Path)
    args = ap.parse_args(argv)

    rows: list[dict[str, object]] = []
    for symbol, label, tag, mark_tag in WINDOWS:
        window_rows = derive_window(args.market, symbol, tag, mark_tag)
        print(f"{symbol} window {label}: {len(window_rows)} snapshots", file=sys.stderr)
        rows.extend(window_rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(json.dumps(row, separators=(",", ":")) + "\n")
    print(f"wrote {len(rows)} snapshots to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
