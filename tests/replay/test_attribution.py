"""Leave-one-out attribution: the fast path (rules evaluated once, variants derived from the fired
sets) gives exactly the trades of real replays of bundles compiled without each rule; intervals
are seeded and behave."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import msgspec
import numpy as np
import pytest

from dsl.compiler import compile_ruleset
from s3.core.decide import BundleSnapshot
from s3.core.params import ExitParams
from s3.replay import synth
from s3.replay.attribution import Attributor, attribute, bootstrap_ci, raw_without
from s3.replay.outcomes import Trade
from s3.replay.replay import ReplayConfig, replay
from s3.replay.tape import Header, Tape, from_records, load
from tests.replay.conftest import TAPES

EXITS = ReplayConfig(exits=True)


def without_rule(snap: BundleSnapshot, rule_id: str) -> BundleSnapshot:
    """The bundle compiled without one rule (the others re-indexed, in the same order)."""
    checked = snap.ruleset.checked
    kept = [r for r in checked.rules if r.rule_id != rule_id]
    assert len(kept) == len(checked.rules) - 1
    rules = tuple(dataclasses.replace(r, index=n) for n, r in enumerate(kept))
    rs = compile_ruleset(
        dataclasses.replace(checked, rules=rules), revision=snap.rev, bundle_id=snap.bundle_id
    )
    return msgspec.structs.replace(snap, ruleset=rs)


def short_stop(snap: BundleSnapshot, ms: int = 20_000) -> BundleSnapshot:
    return msgspec.structs.replace(
        snap, params=msgspec.structs.replace(snap.params, exits=ExitParams(time_stop_ms=ms))
    )


def brief(trades: list[Trade]) -> list[tuple[object, ...]]:
    return [
        (t.index, t.side, t.qty, t.entry_px, t.exit_reason, t.exit_ts, t.exit_px, t.pnl)
        for t in trades
    ]


@pytest.fixture(scope="module")
def synth_tape() -> Tape:
    return from_records(Header(source="synth"), synth.synth_records(1_500, seed=7))


def test_fast_path_equals_real_replays_without_each_rule(
    default_snap: BundleSnapshot, synth_tape: Tape
) -> None:
    snap = short_stop(default_snap)
    at = Attributor(synth_tape, snap)
    full = replay(synth_tape, snap, EXITS)
    assert len(full.trades) >= 20
    assert brief(at.run().trades) == brief(full.trades)
    changed = 0
    for rid in snap.ruleset.rule_ids:
        real = replay(synth_tape, without_rule(snap, rid), EXITS).trades
        fast = at.without(rid).trades
        assert brief(fast) == brief(real), rid
        changed += brief(real) != brief(full.trades)
    assert changed >= 5  # the comparison is not vacuous: many rules change the trade set
    # the rules were evaluated once per event: the variants re-ran the rest of the pipeline on
    # the events where the rule's output mattered, far fewer than 31 replays
    assert at.decides < len(synth_tape.events) * 3


def test_fast_path_on_the_real_bar_tape(default_snap: BundleSnapshot) -> None:
    tape = load(TAPES / "real_bars_1m.jsonl.gz", limit=2_500)
    at = Attributor(tape, default_snap)
    assert brief(at.run().trades) == brief(replay(tape, default_snap, EXITS).trades)
    for rid in ("R-002", "R-062", "R-064", "R-023"):
        real = replay(tape, without_rule(default_snap, rid), EXITS).trades
        assert brief(at.without(rid).trades) == brief(real), rid


def test_products_are_rebuilt_bit_for_bit(default_snap: BundleSnapshot, synth_tape: Tape) -> None:
    at = Attributor(synth_tape, default_snap)
    rs = default_snap.ruleset
    compiled = {rid: without_rule(default_snap, rid).ruleset for rid in rs.rule_ids}
    checked = 0
    for i, raw in list(at.base.raws.items())[:400]:
        for r in raw[0]:
            fast = raw_without(raw, r, default_snap)
            assert fast is not None
            other = compiled[rs.rule_ids[r]]
            snapshot, _ = rs.schema.validate(
                {
                    **at.base.inputs[i].features,
                    "side": at.base.decisions[i].side,
                    "symbol": at.base.decisions[i].symbol,
                }
            )
            real = other.run(snapshot)
            assert fast[3:] == real[3:]  # the products, as floats, exactly
            checked += 1
    assert checked > 500


def test_attribution_table_is_seeded_and_sorted(
    default_snap: BundleSnapshot, synth_tape: Tape
) -> None:
    snap = short_stop(default_snap)
    one = attribute(synth_tape, snap, seed=3)
    two = attribute(synth_tape, snap, seed=3)
    assert one.to_json() == two.to_json()
    contributions = [abs(r.contribution) for r in one.rows]
    assert contributions == sorted(contributions, reverse=True)
    assert len(one.rows) == len(snap.ruleset.rule_ids)
    for r in one.rows:
        lo, hi = r.ci
        assert lo <= hi
        if r.changed == 0:  # nothing changes without the rule: exactly zero, no interval
            assert r.contribution == 0 and r.ci == (0.0, 0.0) and not r.distinguishable
    other = attribute(synth_tape, snap, seed=4)
    assert [r.ci for r in other.rows] != [r.ci for r in one.rows]


def test_bootstrap_interval_of_a_known_sum() -> None:
    """Blocks of a known distribution: the interval of the sum is about ±1.96 σ √n."""
    rng = np.random.default_rng(0)
    deltas = rng.normal(0.5, 2.0, size=400)
    draws = np.random.default_rng(1).integers(0, 400, size=(4_000, 400))
    lo, hi = bootstrap_ci(deltas, draws)
    total, half = deltas.sum(), 1.96 * deltas.std(ddof=1) * np.sqrt(400)
    assert abs((lo + hi) / 2 - total) < 0.1 * half
    assert 0.9 * half < (hi - lo) / 2 < 1.1 * half


def test_cli_tapes_exist() -> None:
    for name in ("real_bars_1m.jsonl.gz", "real_window_a_dense.jsonl.gz"):
        assert Path(TAPES / name).is_file()
