"""The outcome simulation: hand-worked trades (the arithmetic is in each test), the fill model's
rules one by one, funding history, budgets released at the exit, no look-ahead, determinism."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from syrupy.assertion import SnapshotAssertion

from s3.core.decide import BundleSnapshot
from s3.core.params import EngineParams, ExitParams
from s3.core.types import Decision, OrderIntent
from s3.replay import output
from s3.replay.figures import cash_flows, equity_curve, figures
from s3.replay.outcomes import OutcomeError, OutcomeSim, Trade
from s3.replay.replay import ReplayConfig, replay
from s3.replay.tape import Event, Funding, Header, State, Tape, from_records, load, stream_fields
from tests.replay.conftest import DEFAULT, TAPES
from tests.replay.test_replay import EXAMPLE

D = Decimal
GREEN = State(ts=0, kill_switch="OFF", health="GREEN")
T0 = 1_721_346_000_000  # 2024-07-18 23:40:00 UTC (the 00:00 funding time is 20 minutes later)
FUNDING_T = 1_721_347_200_000  # 2024-07-19 00:00:00 UTC


def quote(ts: int, bid: str, ask: str, symbol: str = "BTCUSDT", **extra: Any) -> Event:
    b, a = float(bid), float(ask)
    mid = (b + a) / 2
    row = {
        "ts": ts,
        "mid": mid,
        "bid": b,
        "ask": a,
        "spread_bps": (a - b) / mid * 1e4,
        "depth_top1_usdt": 5_000_000.0,  # deep: no extra slippage from depth
        "funding_next": 0.0001,
        **extra,
    }
    return Event(symbol=symbol, id="", fields=stream_fields(row))


def bar(ts: int, o: str, h: str, lo: str, c: str, spread_bps: float = 0.2) -> Event:
    row = {
        "ts": ts,
        "open": float(o),
        "high": float(h),
        "low": float(lo),
        "close": float(c),
        "mid": float(c),
        "spread_bps": spread_bps,
        "depth_top1_usdt": 5_000_000.0,
        "funding_next": 0.0001,
    }
    return Event(symbol="BTCUSDT", id="", fields=stream_fields(row))


def tape(*records: Any) -> Tape:
    return from_records(Header(source="test"), [GREEN, *records])


def opened(
    symbol: str,
    side: str,
    qty: str,
    tp: str,
    sl: str,
    *,
    now_ms: int,
    policy: str = "Taker",
    wait_ms: int = 0,
    entry: str = "0",
) -> Decision:
    intent = OrderIntent(
        intent_id="s3-test",
        market="FUT",
        symbol=symbol,
        side=side,  # type: ignore[arg-type]
        qty=D(qty),
        exec_policy=policy,
        tp_px=D(tp),
        sl_px=D(sl),
        entry_px=D(entry),
        notional_usdt=D(0),
        margin_usdt=D(0),
        leverage=20,
        maker_wait_ms=wait_ms,
    )
    return Decision(
        decision="open",
        reason="OK",
        reason_detail="OK",
        sentence="",
        symbol=symbol,
        side=side,
        config_rev=1,
        bundle_id="test",
        t0_ms=now_ms,
        now_ms=now_ms,
        gates=(),
        intent=intent,
    )


def params(default_snap: BundleSnapshot, **exits: Any) -> EngineParams:
    return msgspec.structs.replace(default_snap.params, exits=ExitParams(**exits))


def follow(t: Tape, p: EngineParams, d: Decision, at: int = 0) -> Trade:
    return OutcomeSim(t, p).trade(t.events[at], d)


# -- hand-worked trades -----------------------------------------------------------------------------
def test_long_hits_take_profit(default_snap: BundleSnapshot) -> None:
    t = tape(
        quote(T0, "60000.0", "60000.1"),
        quote(T0 + 1_000, "60100.0", "60100.1"),
        quote(T0 + 2_000, "60300.0", "60300.1"),  # bid AT the TP: not through it, no fill
        quote(T0 + 3_000, "60300.1", "60300.2"),  # bid above the TP: filled at the TP
    )
    tr = follow(
        t,
        params(default_snap, market_slip_bps=0.5),
        opened("BTCUSDT", "BUY", "0.010", tp="60300.0", sl="59900.0", now_ms=T0),
    )
    # entry: a taker buy at the ask 60000.1, 0.5 bps worse: 60000.1 x 1.00005 = 60003.100005,
    # rounded up to the 0.1 tick -> 60003.2
    assert (tr.entry_px, tr.entry_ts, tr.entry_liquidity) == (D("60003.2"), T0, "taker")
    assert (tr.exit_reason, tr.exit_px, tr.exit_ts, tr.exit_liquidity) == (
        "tp",
        D("60300.0"),
        T0 + 3_000,
        "maker",
    )
    # gross = 0.010 x (60300.0 - 60003.2) = 0.010 x 296.8 = 2.968
    # fees  = 0.010 x 60003.2 x 0.0005 (taker) + 0.010 x 60300.0 x 0.0002 (maker)
    #       = 0.300016 + 0.1206 = 0.420616
    # pnl   = 2.968 - 0.420616 = 2.547384 (no funding time crossed)
    assert tr.gross == D("2.968")
    assert tr.fees == D("0.420616")
    assert tr.funding == 0 and tr.funding_payments == ()
    assert tr.pnl == D("2.547384")
    assert tr.reached_tp and tr.release_after == 3


def test_short_hits_stop_loss_at_the_touch_not_the_stop_price(
    default_snap: BundleSnapshot,
) -> None:
    t = tape(
        quote(T0, "3000.00", "3000.01", "ETHUSDT"),
        quote(T0 + 500, "3004.99", "3005.00", "ETHUSDT"),
        quote(T0 + 900, "3009.98", "3009.99", "ETHUSDT"),  # one tick short of the stop
        quote(T0 + 1_000, "3012.33", "3012.34", "ETHUSDT"),  # a gap through the stop 3010.00
        quote(T0 + 2_000, "2970.00", "2970.01", "ETHUSDT"),  # the TP would have filled here
    )
    d = opened("ETHUSDT", "SELL", "0.5", tp="2980.00", sl="3010.00", now_ms=T0)
    tr = follow(t, params(default_snap, market_slip_bps=0.5), d)
    # entry: a taker sell at the bid 3000.00 x (1 - 0.00005) = 2999.85, on the 0.01 tick
    assert tr.entry_px == D("2999.85")
    # the stop triggers at the first ask >= 3010.00: 3012.34 (the gap), filled there 0.5 bps
    # worse: 3012.34 x 1.00005 = 3012.490617, rounded up to the tick -> 3012.50
    assert (tr.exit_reason, tr.exit_px, tr.exit_ts) == ("sl", D("3012.50"), T0 + 1_000)
    # gross = -(0.5 x (3012.50 - 2999.85)) = -(0.5 x 12.65) = -6.325
    # fees  = 0.5 x 2999.85 x 0.0005 + 0.5 x 3012.50 x 0.0005 = 0.7499625 + 0.753125 = 1.5030875
    # pnl   = -6.325 - 1.5030875 = -7.8280875
    assert (tr.gross, tr.fees, tr.pnl) == (D("-6.325"), D("1.5030875"), D("-7.8280875"))
    assert not tr.reached_tp


def test_time_stop(default_snap: BundleSnapshot) -> None:
    t = tape(
        quote(T0, "60000.0", "60000.1"),
        quote(T0 + 30_000, "60050.0", "60050.1"),
        quote(T0 + 59_999, "60080.0", "60080.1"),
        quote(T0 + 60_000, "60020.0", "60020.1"),  # 60 s after the entry fill: the time stop
        quote(T0 + 61_000, "61000.0", "61000.1"),
    )
    d = opened("BTCUSDT", "BUY", "0.002", tp="60500.0", sl="59500.0", now_ms=T0)
    tr = follow(t, params(default_snap, time_stop_ms=60_000, market_slip_bps=1.0), d)
    # entry: 60000.1 x 1.0001 = 60006.10001 -> up to 60006.2
    # exit: a market sell at the bid 60020.0 x 0.9999 = 60013.998 -> down to 60013.9
    assert (tr.entry_px, tr.exit_reason, tr.exit_px, tr.exit_ts) == (
        D("60006.2"),
        "time",
        D("60013.9"),
        T0 + 60_000,
    )
    # gross = 0.002 x (60013.9 - 60006.2) = 0.002 x 7.7 = 0.0154
    # fees  = 0.002 x 60006.2 x 0.0005 + 0.002 x 60013.9 x 0.0005 = 0.0600062 + 0.0600139
    #       = 0.1200201
    # pnl   = 0.0154 - 0.1200201 = -0.1046201
    assert (tr.gross, tr.fees, tr.pnl) == (D("0.0154"), D("0.1200201"), D("-0.1046201"))


def test_funding_crossing(default_snap: BundleSnapshot) -> None:
    start = FUNDING_T - 60_000  # 23:59:00
    records = [
        Funding(symbol="BTCUSDT", time=FUNDING_T - 8 * 3_600_000, rate=0.0003),
        Funding(symbol="BTCUSDT", time=FUNDING_T, rate=0.000125),  # the one crossed
        quote(start, "64000.0", "64000.1"),
        quote(FUNDING_T - 1, "64100.0", "64100.2"),  # the mid as of 00:00: 64100.1
        quote(FUNDING_T + 1, "64200.0", "64200.1"),
        quote(FUNDING_T + 60_000, "64100.0", "64100.1"),  # time stop (120 s)
    ]
    t = tape(*records)
    d = opened("BTCUSDT", "BUY", "0.004", tp="65000.0", sl="63000.0", now_ms=start)
    tr = follow(t, params(default_snap, time_stop_ms=120_000, market_slip_bps=0.0), d)
    # entry at the ask 64000.1; exit at the bid 64100.0 (no slippage)
    assert (tr.entry_px, tr.exit_px, tr.exit_reason) == (D("64000.1"), D("64100.0"), "time")
    # funding at 00:00: 0.004 x 64100.1 (mid as of 00:00) x 0.000125 = 0.03205005 USDT, paid by
    # the long (a positive rate) -> -0.03205005
    (pay,) = tr.funding_payments
    assert (pay.time, pay.rate, pay.mark, pay.amount) == (
        FUNDING_T,
        0.000125,
        D("64100.1"),
        D("-0.03205005"),
    )
    # gross = 0.004 x 99.9 = 0.3996; fees = 0.004 x (64000.1 + 64100.0) x 0.0005 = 0.2562002
    # pnl   = 0.3996 - 0.2562002 - 0.03205005 = 0.11134975
    assert (tr.gross, tr.fees, tr.funding, tr.pnl) == (
        D("0.3996"),
        D("0.2562002"),
        D("-0.03205005"),
        D("0.11134975"),
    )
    # the same position short receives it
    d = opened("BTCUSDT", "SELL", "0.004", tp="63000.0", sl="65000.0", now_ms=start)
    short = follow(t, params(default_snap, time_stop_ms=120_000, market_slip_bps=0.0), d)
    assert short.funding == D("0.03205005")


def test_a_missing_funding_rate_fails_the_run(default_snap: BundleSnapshot) -> None:
    start = FUNDING_T - 60_000
    t = tape(
        Funding(symbol="BTCUSDT", time=FUNDING_T - 8 * 3_600_000, rate=0.0003),
        quote(start, "64000.0", "64000.1"),
        quote(start + 30_000, "64000.0", "64000.1"),
        quote(FUNDING_T + 60_000, "64100.0", "64100.1"),
    )
    d = opened("BTCUSDT", "BUY", "0.004", tp="65000.0", sl="63000.0", now_ms=start)
    with pytest.raises(OutcomeError) as err:
        follow(t, params(default_snap, time_stop_ms=120_000), d)
    text = str(err.value)
    assert "open across the funding time 1721347200000 (2024-07-19 00:00:00 UTC)" in text
    assert "no funding rate" in text and "never counted as 0" in text
    # a position closed before 00:00 needs no rate
    ok = follow(t, params(default_snap, time_stop_ms=30_000), d)
    assert ok.exit_reason == "time" and ok.funding == 0


# -- the fill model's other rules ----------------------------------------------------------------------
def test_maker_entry_fills_only_on_a_trade_through(default_snap: BundleSnapshot) -> None:
    p = params(default_snap, market_slip_bps=0.0)
    rows = [
        quote(T0, "60000.0", "60000.1"),
        quote(T0 + 100, "59999.9", "60000.0"),  # ask AT our bid 60000.0: not through
        quote(T0 + 200, "59999.8", "59999.9"),  # ask below our bid: filled at 60000.0 (maker)
        quote(T0 + 5_000, "59999.8", "59999.9"),
    ]
    d = opened(
        "BTCUSDT", "BUY", "0.010", "60500.0", "59500.0", now_ms=T0, policy="Maker", wait_ms=1_000
    )
    tr = follow(tape(*rows), p, d)
    assert (tr.entry_px, tr.entry_ts, tr.entry_liquidity) == (D("60000.0"), T0 + 200, "maker")
    # the trade-through comes after the wait: a Maker order is not filled (its reservation is
    # given back after the first quote past the wait), MakerThenTaker crosses at that quote
    d = opened(
        "BTCUSDT", "BUY", "0.010", "60500.0", "59500.0", now_ms=T0, policy="Maker", wait_ms=150
    )
    tr = follow(tape(*rows), p, d)
    assert (tr.exit_reason, tr.entry_px, tr.pnl, tr.release_after) == ("unfilled", None, 0, 2)
    d = msgspec.structs.replace(
        d, intent=msgspec.structs.replace(d.intent, exec_policy="MakerThenTaker")
    )
    tr = follow(tape(*rows), p, d)
    assert (tr.entry_px, tr.entry_ts, tr.entry_liquidity) == (D("59999.9"), T0 + 200, "taker")


def test_depth_adds_slippage_to_market_fills(default_snap: BundleSnapshot) -> None:
    thin = {"depth_top1_usdt": 300.0}  # 0.010 BTC = ~600 USDT eats two top-1 depths
    t = tape(
        quote(T0, "60000.0", "60000.1", **thin),
        quote(T0 + 1_000, "60000.0", "60000.1", **thin),
    )
    d = opened("BTCUSDT", "BUY", "0.010", "60500.0", "59500.0", now_ms=T0)
    tr = follow(t, params(default_snap, market_slip_bps=0.5), d)
    # spread = 0.1 / 60000.05 x 1e4 = 0.016666 bps; levels = 0.010 x 60000.1 / 300 = 2.000003;
    # slip = 0.5 + 0.016666/2 x (2.000003 - 1) = 0.508333 bps: 60000.1 x 1.0000508 = 60003.15
    # -> up to 60003.2 (the tick); the same as without depth here, but the exit at the end of the
    # tape: 60000.0 x (1 - 0.0000508) = 59996.95 -> down to 59996.9
    assert tr.entry_px == D("60003.2")
    assert (tr.exit_reason, tr.exit_px) == ("end", D("59996.9"))


def test_bars_stop_first_and_next_open_entries(default_snap: BundleSnapshot) -> None:
    m = 60_000
    t = tape(
        bar(T0, "60000", "60010", "59990", "60000"),  # the deciding bar (closed at T0)
        bar(T0 + m, "60020", "60700", "59400", "60100"),  # SL and TP both inside: SL first
        bar(T0 + 2 * m, "60100", "60900", "60000", "60800"),
    )
    p = params(default_snap, market_slip_bps=0.0)
    d = opened("BTCUSDT", "BUY", "0.010", tp="60500.0", sl="59500.0", now_ms=T0)
    tr = follow(t, p, d)
    # entry at the next bar's open plus half the spread: 60020 x (1 + 0.2/20000) = 60020.6002
    # -> up to 60020.7; the stop fills one tick beyond the stop (59500.0 - 0.1 = 59499.9, the bar
    # opened above it) -> 59499.9, rounded down to the tick -> 59499.9
    assert (tr.entry_px, tr.entry_ts) == (D("60020.7"), T0 + m)
    assert (tr.exit_reason, tr.exit_px, tr.exit_ts) == ("sl", D("59499.9"), T0 + m)
    # gross = 0.010 x (59499.9 - 60020.7) = -5.208; fees = 0.010 x (60020.7 + 59499.9) x 0.0005
    # = 0.597603; pnl = -5.805603
    assert (tr.gross, tr.fees, tr.pnl) == (D("-5.208"), D("0.597603"), D("-5.805603"))


# -- through the replay -----------------------------------------------------------------------------------
def real_like(ts: int, mid: float, side: str = "BUY") -> Event:
    """The real BTC example snapshot at another time and mid (one-tick book, bid/ask given)."""
    row = {k: v for k, v in EXAMPLE.items() if k != "side"}
    bid = round(mid - 0.05, 1)
    row |= {"ts": ts, "mid": bid + 0.05, "bid": bid, "ask": round(bid + 0.1, 1)}
    fields = stream_fields(row)
    fields["side_hint"] = side
    return Event(symbol="BTCUSDT", id="", fields=fields)


def test_budgets_are_released_at_the_simulated_exit(default_snap: BundleSnapshot) -> None:
    mids = [61778.25] * 3 + [63000.0] + [61778.25] * 3  # the 4th quote takes the first TP
    t = tape(*(real_like(T0 + 10_000 * i, m) for i, m in enumerate(mids)))
    got = replay(t, default_snap, ReplayConfig(exits=True))
    details = [o.decision.reason_detail for o in got.outcomes if o.decision]
    conc = "RISK_BUDGET.CONCURRENCY"
    # open; refused while it is open (the TP quote itself too: released only after it); open
    assert details == ["OK", conc, conc, conc, "OK", conc, conc]
    first, second = got.trades
    assert (first.exit_reason, first.release_after) == ("tp", 3)
    assert (second.index, second.exit_reason) == (4, "end")
    assert (got.reserved, got.released, got.open_at_end) == (2, 1, 1)
    assert first.pnl > 0 > second.pnl


def test_no_look_ahead(default_snap: BundleSnapshot) -> None:
    """Cutting the tape after any event leaves every decision up to it unchanged."""
    mids = [61778.25, 61790.0, 62300.0, 61500.0, 61778.25, 62600.0, 61000.0, 61200.0, 61300.0]
    full_tape = [
        real_like(T0 + 20_000 * i, m, "BUY" if i % 3 else "SELL") for i, m in enumerate(mids)
    ]
    full = replay(tape(*full_tape), default_snap, ReplayConfig(exits=True))
    assert len(full.trades) >= 3
    for cut in range(1, len(mids)):
        part = replay(tape(*full_tape[:cut]), default_snap, ReplayConfig(exits=True))
        assert [o.decision for o in part.outcomes] == [o.decision for o in full.outcomes[:cut]]


# -- properties ----------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(st.integers(-40, 40), min_size=30, max_size=120),
    sides=st.lists(st.sampled_from(["BUY", "SELL"]), min_size=1, max_size=8),
    stop_s=st.integers(5, 120),
    funding=st.floats(-0.0005, 0.0005, allow_nan=False),
)
def test_pnl_sums_equal_the_equity_change(
    default_snap: BundleSnapshot, steps: list[int], sides: list[str], stop_s: int, funding: float
) -> None:
    """Whatever the path: the trades' P&L sums to the change of an equity built from every cash
    movement (entry fees, funding payments, gross result and exit fee) in time order, and each
    trade's P&L is its gross minus fees plus funding."""
    start = FUNDING_T - 45_000
    mid = 61778.25
    events: list[Any] = [Funding(symbol="BTCUSDT", time=FUNDING_T, rate=round(funding, 8))]
    for n, step in enumerate(steps):
        mid += step * 10  # 10 USDT steps: SL and TP (~0.2-0.6 % away) are reached
        events.append(real_like(start + 5_000 * n, mid, sides[n % len(sides)]))
    snap = msgspec.structs.replace(
        default_snap, params=params(default_snap, time_stop_ms=stop_s * 1000)
    )
    got = replay(tape(*events), snap, ReplayConfig(exits=True))
    capital = Decimal(200)
    flows = cash_flows(got.trades)
    equity = capital + sum((amount for _, _, amount in flows), Decimal(0))
    total = sum((t.pnl for t in got.trades), Decimal(0))
    assert equity - capital == total
    curve = equity_curve(got.trades, capital)
    assert (curve[-1][1] if curve else capital) == equity
    for t in got.trades:
        assert t.pnl == t.gross - t.fees + t.funding
        assert t.fees == t.entry_fee + t.exit_fee
        assert t.funding == sum((p.amount for p in t.funding_payments), Decimal(0))
        if t.filled:
            assert t.exit_ts is not None and t.entry_ts is not None and t.exit_ts >= t.entry_ts
            if t.exit_reason == "sl":  # a stop never fills better than its stop price
                assert (t.exit_px <= t.sl_px) if t.side == "BUY" else (t.exit_px >= t.sl_px)
            if t.exit_reason == "tp":
                assert t.exit_px == t.tp_px
    figs = figures(got.trades, got.first_ts, got.last_ts, capital)
    assert Decimal(figs["all"]["pnl"]) == total


def test_same_tape_same_bytes(default_snap: BundleSnapshot, tmp_path: Path) -> None:
    """Two replays of a real dense tape write the same JSON, byte for byte."""
    from s3.cli import main

    outs = []
    for n in (1, 2):
        out = tmp_path / f"r{n}.json"
        code = main(
            [
                "replay",
                str(TAPES / "real_window_b_dense.jsonl.gz"),
                "--bundle",
                str(DEFAULT),
                "--limit",
                "12000",
                "--quiet",
                "--json",
                str(out),
            ]
        )
        assert code == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] and b'"trades"' in outs[0]


def test_golden_outcomes_of_a_real_tape(
    default_snap: BundleSnapshot, json_snapshot: SnapshotAssertion
) -> None:
    """The JSON summary of the outcomes (figures, trades, equity) on real window B (BTCUSDT,
    2023-04-04/05, across the 00:00 funding time)."""
    result = replay(
        load(TAPES / "real_window_b_dense.jsonl.gz"), default_snap, ReplayConfig(exits=True)
    )
    doc = output.outcomes_json(result)
    assert doc["figures"]["all"]["trades"] >= 2
    assert any(t["funding_payments"] for t in doc["trades"])
    assert doc == json_snapshot


# -- the shipped tapes with prices --------------------------------------------------------------------
DENSE_TAPES = {
    # file: (events, first ts, last ts, funding records)
    "real_window_a_dense.jsonl.gz": (97_166, 1723161317000, 1723161601056, 6),
    "real_window_b_dense.jsonl.gz": (40_482, 1680652761001, 1680653214649, 3),
    "real_window_c_dense.jsonl.gz": (94_331, 1721347083025, 1721347502291, 6),
}


@pytest.mark.parametrize("name", sorted(DENSE_TAPES))
def test_dense_tapes_carry_quotes_and_funding(name: str) -> None:
    events, first, last, funding = DENSE_TAPES[name]
    t = load(TAPES / name)
    assert len(t.events) == events
    assert (t.events[0].ts, t.events[-1].ts) == (first, last)
    assert sum(len(v) for v in t.funding.values()) == funding
    for sym, rates in t.funding.items():
        assert sym in t.symbols and all(time % (8 * 3_600_000) == 0 for time, _ in rates)
    # the settlement inside the window (00:00 UTC) is on the tape
    midnight = (last // 86_400_000) * 86_400_000
    assert first < midnight <= last
    assert all(midnight in dict(rates) for rates in t.funding.values())
    for e in t.events[:: max(1, events // 2000)]:
        assert e.features is not None and e.features["bid"] < e.features["ask"]


def test_bar_tape() -> None:
    t = load(TAPES / "real_bars_1m.jsonl.gz")
    assert len(t.events) == 84_666 and t.symbols == ["BTCUSDT", "ETHUSDT"]
    assert "TYPICAL VALUES, not measured" in t.header.note
    assert sum(len(v) for v in t.funding.values()) == 180
    from s3.replay.outcomes import build_series, tape_kind

    assert tape_kind(t) == "bars"
    s = build_series(t)["BTCUSDT"]
    assert s.bars and s.n == 42_333 and bool((s.ts[1:] - s.ts[:-1] == 60_000).all())
    e = t.events[0]
    assert e.features is not None and e.ts is not None
    f = e.features
    assert f["low"] <= min(f["open"], f["close"]) <= max(f["open"], f["close"]) <= f["high"]
    assert f["mid"] == f["close"] and e.ts % 60_000 == 0


def test_exits_section_of_the_bundle(tmp_path: Path) -> None:
    import shutil

    from s3.config.bundle import load_dir

    assert load_dir(DEFAULT).snapshot.params.exits == ExitParams(300_000, 0.5)  # type: ignore[union-attr]
    b = tmp_path / "b"
    shutil.copytree(DEFAULT, b)
    text = (b / "bundle.toml").read_text()
    (b / "bundle.toml").write_text(text + "\n[exits]\ntime_stop_ms = 60_000\nmarket_slip_bps = 2\n")
    snap = load_dir(b).snapshot
    assert snap is not None and snap.params.exits == ExitParams(60_000, 2.0)
    (b / "bundle.toml").write_text(text + "\n[exits]\ntime_stop_ms = 0\n")
    bad = load_dir(b)
    assert bad.snapshot is None
    assert any("exits.time_stop_ms" in d.message for d in bad.diagnostics)
