"""The A/B diff on a known pair: rulesets/default (A) against the same bundle with one threshold
changed (B: `flow_strong` 0.5 -> 0.4), on the real tape (data/tapes/real_sample.jsonl.gz).

Hand check. R-023 ("strong taker flow against the entry", priority 80) vetoes when the one-minute
taker flow against the entry side is at least `flow_strong`: ``trade_flow_1m <= -flow_strong`` for
a BUY, ``>= flow_strong`` for a SELL. Lowering it to 0.4 adds a veto exactly where that adverse
flow lies in [0.4, 0.5). Listing the tape's features, 13 events are in that band:

    #7   BTCUSDT 1680652803000 SELL  flow +0.4356        #195 ETHUSDT 1721347437000 BUY  -0.4334
    #76  BTCUSDT 1721347083000 SELL  flow +0.4487        #198 BTCUSDT 1721347449000 BUY  -0.4511
    #78  BTCUSDT 1721347089000 SELL  flow +0.4306        #201 ETHUSDT 1721347455000 BUY  -0.4846
    #100 BTCUSDT 1721347155000 BUY   flow -0.4165        #202 BTCUSDT 1721347461000 BUY  -0.4498
    #174 BTCUSDT 1721347377000 BUY   flow -0.4275        #203 ETHUSDT 1721347461000 BUY  -0.4791
    #257 ETHUSDT 1723161437000 SELL  flow +0.4177        #301 ETHUSDT 1723161569000 SELL +0.4082
    #303 ETHUSDT 1723161575000 SELL  flow +0.4114

#301 has a top-1 depth of 101.97 USDT, below the L0 floor of 200: the depth gate skips it under
both bundles before any rule runs. None of the other 12 is vetoed under A by a rule of higher
priority (R-040/R-041/R-060 at 100, R-001/R-002 at 90: funding, one-second volatility, spread and
depth are all far from those thresholds there), and each opens under A when budgets are unlimited.
So without budgets the diff is exactly these 12 events, open -> skip with RULE.SKIP:R-023, R-023
gained, nothing else changed; R-023's hits go from 15 to 27.
"""

from __future__ import annotations

from pathlib import Path

from s3.cli import main
from s3.core.decide import BundleSnapshot
from s3.replay.diff import diff
from s3.replay.replay import ReplayConfig, replay
from s3.replay.tape import Tape
from tests.replay.conftest import DEFAULT, REAL

FLIPS = [
    (7, "BTCUSDT", 1680652803000, "SELL"),
    (76, "BTCUSDT", 1721347083000, "SELL"),
    (78, "BTCUSDT", 1721347089000, "SELL"),
    (100, "BTCUSDT", 1721347155000, "BUY"),
    (174, "BTCUSDT", 1721347377000, "BUY"),
    (195, "ETHUSDT", 1721347437000, "BUY"),
    (198, "BTCUSDT", 1721347449000, "BUY"),
    (201, "ETHUSDT", 1721347455000, "BUY"),
    (202, "BTCUSDT", 1721347461000, "BUY"),
    (203, "ETHUSDT", 1721347461000, "BUY"),
    (257, "ETHUSDT", 1723161437000, "SELL"),
    (303, "ETHUSDT", 1723161575000, "SELL"),
]


def test_the_hand_checked_band_from_the_raw_features(real_tape: Tape) -> None:
    band = []
    for e in real_tape.events:
        assert e.features is not None
        against = -e.features["trade_flow_1m"] if e.side == "BUY" else e.features["trade_flow_1m"]
        if 0.4 <= against < 0.5:
            band.append((e.index, e.features["depth_top1_usdt"]))
    assert [i for i, _ in band] == sorted([f[0] for f in FLIPS] + [301])
    assert dict(band)[301] == 101.97  # below the depth gate's 200 USDT


def test_ab_diff_without_budgets_is_the_hand_checked_list(
    real_tape: Tape, default_snap: BundleSnapshot, b_snap: BundleSnapshot
) -> None:
    cfg = ReplayConfig(budgets=False)
    d = diff(replay(real_tape, default_snap, cfg), replay(real_tape, b_snap, cfg))
    assert [(c.index, c.symbol, c.ts, c.side) for c in d.changes] == FLIPS
    for c in d.changes:
        assert c.kinds == ["open_to_skip", "rules"] and c.cause == "rules"
        assert (c.a["reason_detail"], c.b["reason_detail"]) == ("OK", "RULE.SKIP:R-023")
        assert c.gained == ["R-023"] and c.lost == []
    assert (d.a.opens, d.b.opens) == (281, 269)
    assert (d.a.rule_hits["R-023"], d.b.rule_hits["R-023"]) == (15, 27)
    assert {r["rule_id"]: r["delta"] for r in d.rule_deltas() if r["delta"]} == {"R-023": 12}
    assert d.reason_flows() == {"OK -> RULE.SKIP:R-023": 12}
    assert d.a.never_fired == d.b.never_fired
    assert "R-023" not in d.a.never_fired


def test_ab_diff_with_budgets_separates_rule_changes_from_knock_ons(
    real_tape: Tape, default_snap: BundleSnapshot, b_snap: BundleSnapshot
) -> None:
    """With the simulated ledger, the same 12 events are the only ones whose rules changed; every
    other change is a knock-on (a veto under B frees the symbol's slot for a later event)."""
    d = diff(replay(real_tape, default_snap), replay(real_tape, b_snap))
    by_rules = [(c.index, c.symbol, c.ts, c.side) for c in d.changes if c.cause == "rules"]
    assert by_rules == FLIPS
    knock_ons = [c for c in d.changes if c.cause != "rules"]
    assert knock_ons and all(c.cause == "budget" for c in knock_ons)
    for c in knock_ons:
        assert "RISK_BUDGET.CONCURRENCY" in (c.a["reason_detail"], c.b["reason_detail"])
        assert c.a["rules_fired"] == c.b["rules_fired"]


def test_ab_cli_reports_the_flips(bundle_b_dir: Path, capsys: object, tmp_path: Path) -> None:
    import json

    out = tmp_path / "ab.json"
    code = main(
        [
            "replay",
            str(REAL),
            "--bundle",
            str(DEFAULT),
            "--against",
            str(bundle_b_dir),
            "--no-budgets",
            "--quiet",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "open->skip 12, skip->open 0" in text
    assert "R-023         15 -> 27      (+12)" in text
    doc = json.loads(out.read_text())["diff"]
    assert doc["counts"]["open_to_skip"] == 12 and doc["changed_events"] == 12
    assert [c["index"] for c in doc["changes"]] == [f[0] for f in FLIPS]
