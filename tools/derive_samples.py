#!/usr/bin/env python3
"""Derive a small real-data feature sample (data/samples/features_real.jsonl).

Reads the shared Binance captures (see ``../shared/data/market/PROVENANCE.md``) and writes one
feature snapshot every ``STEP_MS`` for each USD-M perpetual tick window of BTCUSDT and ETHUSDT.
Stdlib only. This tool is run by hand; the product never reads the shared folder.

    python tools/derive_samples.py [MARKET_DIR] [--out data/samples/features_real.jsonl]
    python tools/derive_samples.py [MARKET_DIR] --dense C --out data/tapes/NAME.jsonl.gz

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
    market: Path, symbol: str, tag: str, mark_tag: str | None, *, dense: bool = False
) -> list[dict[str, object]]:
    """The feature rows of one window and symbol: one every STEP_MS (the sample), or with
    ``dense`` one per bookTicker row after the warm-up (a dense tape)."""
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

    def row(t: int, quote: tuple[float, float, float, float]) -> dict[str, object]:
        """The features at time t, the quote being the book's top at t."""
        bid, bid_qty, ask, ask_qty = quote
        mid = (bid + ask) / 2
        spread_bps = (ask - bid) / mid * 1e4
        depth = min(bid_qty * bid, ask_qty * ask)
        imbalance = bid_qty / (bid_qty + ask_qty)

        mids = [mid_at(book_t, book_q, t - k * 1000) for k in range(60, 0, -1)] + [mid]
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
        return {
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
            # The touch itself, as the exchange printed it (float of the CSV text: its repr is
            # that text without trailing zeros, so the engine reads the exact price).
            "bid": bid,
            "ask": ask,
        }

    out: list[dict[str, object]] = []
    first = ((start + WARMUP_MS) // 1000 + 1) * 1000
    if dense:
        # One row per bookTicker row from the first grid point on, each with its own quote
        # (rows that share a millisecond stay separate, in file order).
        for i in range(bisect.bisect_left(book_t, first), len(book_t)):
            out.append(row(book_t[i], book_q[i]))
        return out
    # Snapshot grid: first point one whole warm-up after the first quote, aligned to the second.
    t = first
    while t <= end:
        out.append(row(t, book_q[asof(book_t, t)]))
        t += STEP_MS
    return out


def write_dense_tape(market: Path, label: str, out: Path) -> int:
    """A dense tape of one window: every bookTicker row of its USD-M symbols after the warm-up,
    merged in time order, as `s3 tape sample` writes the sample (side_hint from the queue's lean,
    kill switch OFF, health GREEN). Needs the repository's package (run from the repo's venv)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from s3.replay.synth import sample_records
    from s3.replay.tape import Header, write_tape

    rows: list[dict[str, object]] = []
    windows = [w for w in WINDOWS if w[1] == label]
    if not windows:
        raise SystemExit(f"no window {label!r}: one of {sorted({w[1] for w in WINDOWS})}")
    for symbol, _, tag, mark_tag in windows:
        window_rows = derive_window(market, symbol, tag, mark_tag, dense=True)
        print(f"{symbol} window {label}: {len(window_rows)} rows (dense)", file=sys.stderr)
        rows.extend(window_rows)
    rows.sort(key=lambda r: (r["ts"], r["symbol"]))  # stable: a millisecond keeps file order
    tag = windows[0][2]
    header = Header(
        source=f"tools/derive_samples.py --dense {label}: every bookTicker row of window {label} "
        f"({tag}, Binance USD-M, see data/samples/README.md) after a 60 s warm-up, features as "
        "in data/samples/README.md with each row's own quote; side_hint = BUY if "
        "imbalance_top1 >= 0.5 else SELL",
        symbols=sorted({str(r["symbol"]) for r in rows}),
        note=f"dense window {label}: one event per quote",
    )
    lines = write_tape(out, header, sample_records(rows))
    print(f"wrote {lines - 2} events to {out}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("market", nargs="?", default="../shared/data/market", type=Path)
    ap.add_argument("--out", default=None, type=Path)
    ap.add_argument(
        "--dense",
        metavar="WINDOW",
        default=None,
        help="write a dense tape of one window (A, B or C) to --out instead of the sample",
    )
    args = ap.parse_args(argv)
    if args.dense is not None:
        if args.out is None:
            raise SystemExit("--dense needs --out (a tape path, e.g. data/tapes/NAME.jsonl.gz)")
        return write_dense_tape(args.market, args.dense, args.out)
    out = args.out or Path("data/samples/features_real.jsonl")

    rows: list[dict[str, object]] = []
    for symbol, label, tag, mark_tag in WINDOWS:
        window_rows = derive_window(args.market, symbol, tag, mark_tag)
        print(f"{symbol} window {label}: {len(window_rows)} snapshots", file=sys.stderr)
        rows.extend(window_rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(json.dumps(row, separators=(",", ":")) + "\n")
    print(f"wrote {len(rows)} snapshots to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
