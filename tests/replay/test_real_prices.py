"""Prices right to the tick on real data (issue 17).

- A property over real quote pairs: every row of the real sample (windows A, B, C) and every quote
  of the dense window-C tape. The entry is the touch the policy names, whether the event carries
  `bid`/`ask` or only `mid` and `spread_bps` (rounded as a producer writes them).
- A replay of the whole dense tape (94,331 real quotes, budgets off so every event is sized):
  every open at the touch of its moment, on the tick and step grids, inside its leverage bracket
  and the price bands, with the SL and TP on the right sides.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
import pytest

from s3.core.decide import BundleSnapshot, entry_touch
from s3.core.sizing import SymbolFilters
from s3.replay import synth
from s3.replay.diff import diff
from s3.replay.replay import ReplayConfig, ReplayResult, replay
from s3.replay.tape import Tape

D = Decimal
POLICIES = ("MakerThenTaker", "Taker", "Maker")


def touch(side: str, policy: str, bid: float, ask: float) -> Decimal:
    """The touch by definition: a taker BUY pays the ask, a taker SELL gets the bid; a Maker
    entry rests at the near touch (BUY at the bid, SELL at the ask)."""
    far = policy != "Maker"
    return D(repr(ask if (side == "BUY") == far else bid))


def quote_rows(dense_tape: Tape) -> list[tuple[str, dict[str, Any]]]:
    rows = [(r["symbol"], r) for r in synth.sample_rows()]
    rows += [(e.symbol, e.features) for e in dense_tape.events if e.features is not None]
    return rows


def test_the_issue_s_quote_is_priced_at_the_touch(default_snap: BundleSnapshot) -> None:
    """bid 63952.6 / ask 63952.7: mid 63952.649999999994 in floats once put the SELL at 63952.50."""
    f = default_snap.params.symbols["BTCUSDT"].filters
    mid = (63952.6 + 63952.7) / 2
    assert mid == 63952.649999999994
    spread = (63952.7 - 63952.6) / mid * 1e4
    for side, policy, want in (
        ("SELL", "MakerThenTaker", "63952.6"),
        ("BUY", "MakerThenTaker", "63952.7"),
        ("SELL", "Maker", "63952.7"),
        ("BUY", "Maker", "63952.6"),
    ):
        assert entry_touch(mid, spread, side, f, policy, None, None)[0] == D(want)
        assert entry_touch(mid, spread, side, f, policy, 63952.6, 63952.7)[0] == D(want)


def test_every_real_quote_pair_gives_the_touch(
    default_snap: BundleSnapshot, dense_tape: Tape
) -> None:
    """Every row of the sample (312) and of the dense tape (94,331), both sides, every policy:
    rebuilt from the rounded mid and spread_bps, and from the bid/ask features."""
    filters = {s: spec.filters for s, spec in default_snap.params.symbols.items()}
    rows = quote_rows(dense_tape)
    assert len(rows) == 312 + 94_331
    wrong: list[tuple[Any, ...]] = []
    for symbol, f in rows:
        bid, ask, mid, spread = f["bid"], f["ask"], f["mid"], f["spread_bps"]
        for side in ("BUY", "SELL"):
            for policy in POLICIES:
                want = touch(side, policy, bid, ask)
                rebuilt = entry_touch(mid, spread, side, filters[symbol], policy, None, None)[0]
                given = entry_touch(mid, spread, side, filters[symbol], policy, bid, ask)[0]
                if rebuilt != want or given != want:
                    wrong.append((symbol, f.get("ts"), side, policy, want, rebuilt, given))
    assert wrong == []


@pytest.fixture(scope="module")
def dense_replay(default_snap: BundleSnapshot, dense_tape: Tape) -> ReplayResult:
    return replay(dense_tape, default_snap, ReplayConfig(budgets=False))


def _on(x: Decimal, anchor: Decimal, step: Decimal) -> bool:
    return (x - anchor) % step == 0


def check_open(d: Any, f: dict[str, Any], filters: SymbolFilters, policy: str) -> list[str]:
    """Everything an open must satisfy against the quote of its moment; the failures."""
    i = d.intent
    bad = []
    if i.entry_px != touch(i.side, policy, f["bid"], f["ask"]):
        bad.append(f"entry {i.entry_px} is not the touch (bid {f['bid']}, ask {f['ask']})")
    for name in ("entry_px", "sl_px", "tp_px", "liq_px"):
        if not _on(getattr(i, name), filters.min_price, filters.tick_size):
            bad.append(f"{name} {getattr(i, name)} off the tick grid")
    if not _on(i.qty, filters.min_qty, filters.step_size) or i.qty < filters.min_qty:
        bad.append(f"qty {i.qty} off the lot grid")
    if i.notional_usdt != i.qty * i.entry_px or i.notional_usdt < filters.min_notional:
        bad.append(f"notional {i.notional_usdt}")
    first = filters.brackets[0]
    if not (i.notional_usdt < first.notional_cap and i.leverage <= first.initial_leverage):
        bad.append(f"notional {i.notional_usdt} x{i.leverage} outside bracket 1")
    long = i.side == "BUY"
    if not ((i.sl_px < i.entry_px < i.tp_px) if long else (i.tp_px < i.entry_px < i.sl_px)):
        bad.append(f"SL {i.sl_px} / TP {i.tp_px} on the wrong side of {i.entry_px}")
    if not ((i.liq_px < i.sl_px) if long else (i.liq_px > i.sl_px)):
        bad.append(f"liquidation {i.liq_px} not beyond the SL {i.sl_px}")
    assert filters.percent_price_up is not None and filters.percent_price_down is not None
    for px in (i.sl_px, i.tp_px):
        lo, hi = i.entry_px * filters.percent_price_down, i.entry_px * filters.percent_price_up
        if not lo <= px <= hi or (filters.max_price is not None and px > filters.max_price):
            bad.append(f"{px} outside the price bands")
    return bad


def test_every_open_of_the_dense_tape_is_at_the_touch_and_legal(
    default_snap: BundleSnapshot, dense_tape: Tape, dense_replay: ReplayResult
) -> None:
    filters = {s: spec.filters for s, spec in default_snap.params.symbols.items()}
    policy = default_snap.params.execution.default_policy
    opens = sides = 0
    problems: list[tuple[int, list[str]]] = []
    for o in dense_replay.outcomes:
        d = o.decision
        if d is None or o.replayed or d.decision != "open":
            continue
        f = dense_tape.events[o.index].features
        assert f is not None and d.intent is not None
        opens += 1
        sides |= 1 if d.intent.side == "BUY" else 2
        if bad := check_open(d, f, filters[o.symbol], policy):
            problems.append((o.index, bad))
        assert d.sizing_notes[0].startswith(f"entry at the {'ask' if d.side == 'BUY' else 'bid'}")
        assert any(" in leverage bracket 1: 0 <= notional < 50000" in n for n in d.sizing_notes)
    assert problems == []
    assert opens > 40_000 and sides == 3  # both sides, nearly every quote sized


def test_a_maker_entry_rests_at_the_near_touch(
    default_snap: BundleSnapshot, dense_tape: Tape
) -> None:
    """Maker: BUY at the bid, SELL at the ask, with and without the bid/ask features."""
    execution = msgspec.structs.replace(default_snap.params.execution, default_policy="Maker")
    maker = msgspec.structs.replace(
        default_snap, params=msgspec.structs.replace(default_snap.params, execution=execution)
    )
    tape = Tape(dense_tape.header, dense_tape.events[:3000])
    filters = {s: spec.filters for s, spec in default_snap.params.symbols.items()}
    for strip in (False, True):
        if strip:
            events = [
                ev.__class__(**{**_fields(ev), "features": _without_touch(ev.features)})
                for ev in tape.events
            ]
            tape = Tape(tape.header, events)
        result = replay(tape, maker, ReplayConfig(budgets=False))
        opens = 0
        for o in result.outcomes:
            d = o.decision
            if d is None or o.replayed or d.decision != "open":
                continue
            opens += 1
            f = dense_tape.events[o.index].features
            assert f is not None and d.exec_policy == "Maker"
            assert check_open(d, f, filters[o.symbol], "Maker") == []
        assert opens > 1000


def _fields(ev: Any) -> dict[str, Any]:
    return {name: getattr(ev, name) for name in ev.__dataclass_fields__}


def _without_touch(features: dict[str, Any] | None) -> dict[str, Any] | None:
    if features is None:
        return None
    return {k: v for k, v in features.items() if k not in ("bid", "ask")}


def test_ab_diff_does_not_count_idempotency_replays(
    default_snap: BundleSnapshot, b_snap: BundleSnapshot, dense_tape: Tape
) -> None:
    """On dense real quotes many events share a millisecond and get their first decision back.
    The diff counts each change once, at the event that was decided: the verdict flips add up to
    the change in opens, and the summary counts the same-millisecond events."""
    tape = Tape(dense_tape.header, dense_tape.events[:6000])
    cfg = ReplayConfig(budgets=False)
    a, b = replay(tape, default_snap, cfg), replay(tape, b_snap, cfg)
    both = [
        (oa, ob)
        for oa, ob in zip(a.outcomes, b.outcomes, strict=True)
        if oa.replayed and ob.replayed
    ]
    flipped_replays = [
        1
        for oa, ob in both
        if oa.decision.decision != ob.decision.decision  # type: ignore[union-attr]
    ]
    assert len(flipped_replays) > 20  # what the diff used to count again
    d = diff(a, b)
    assert d.count("open_to_skip") > 0
    assert d.b.opens - d.a.opens == d.count("skip_to_open") - d.count("open_to_skip")
    assert {c.index for c in d.changes}.isdisjoint(oa.index for oa, _ in both)
    assert d.a.replayed == len(both) and 0 < d.a.replayed <= d.a.same_ms
    assert d.to_json()["a"]["same_ms_events"] == d.a.same_ms
