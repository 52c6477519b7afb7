"""`s3 rules explain` shows why: params with their values, each comparison's margin, and for a
rule that did not fire the smallest single-feature change that makes it fire."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dsl import build_bundle, whynot
from dsl.interpreter import eval_expr
from s3.cli import main

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "rulesets" / "default"
EXAMPLE = str(DEFAULT / "examples" / "btc_buy_real.json")
SAMPLE = ROOT / "data" / "samples" / "features_real.jsonl"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out + out.err


def test_human_explain_shows_values_margins_and_the_nearest_change(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out = run(
        capsys, "rules", "explain", str(DEFAULT), "--features", EXAMPLE, "--rule", "R-042"
    )
    assert code == 0
    assert (
        "    when is_long and funding_elevated (0.0001) < funding_next <= funding_rich_long (0.0003)"
        in out
    )
    assert (
        "      funding_elevated (0.0001) < funding_next: 0.0001 < 1.147e-05 fails by 8.853e-05\n"
        in out
    )
    assert (
        "      funding_next <= funding_rich_long (0.0003): 1.147e-05 <= 0.0003 holds by 0.00028853\n"
        in out
    )
    assert '      side == "BUY": "BUY" == "BUY" holds  [via is_long]\n' in out
    assert (
        "    would fire with: funding_next just above 0.0001 (now 1.147e-05, +8.853e-05)\n" in out
    )
    assert "R-001" not in out  # --rule


def test_json_explain_honours_rule_and_carries_the_why(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(
        capsys,
        "rules",
        "explain",
        str(DEFAULT),
        "--features",
        EXAMPLE,
        "--format",
        "json",
        "--rule",
        "R-001",
    )
    assert code == 0
    doc = json.loads(out)
    assert {t["rule_id"] for t in doc["trace"]} == {"R-001"}
    assert list(doc["why"]) == ["R-001"] and doc["params"] == {"max_spread_veto_bps": 1.5}
    (m,) = doc["why"]["R-001"]["margins"]
    assert (m["left"], m["op"], m["right"], m["held"]) == (0.01619, ">", 1.5, False)
    assert m["margin"] == pytest.approx(0.01619 - 1.5)
    change = doc["why"]["R-001"]["nearest_change"]
    assert change["feature"] == "spread_bps" and 1.5 < change["to"] < 1.5 + 1e-9
    assert doc["fired"] == ["R-008", "R-026", "R-063"]  # the outcome itself is unchanged
    assert (
        run(capsys, "rules", "explain", str(DEFAULT), "--features", EXAMPLE, "--rule", "R-999")[0]
        == 2
    )


def test_nearest_change_fires_and_half_of_it_does_not_on_real_snapshots() -> None:
    rs = build_bundle(DEFAULT).ruleset
    assert rs is not None
    lets = rs.checked.lets
    rows = [json.loads(x) for x in SAMPLE.read_text().splitlines()[:60] if x.strip()]
    found = 0
    for row in rows:
        snap, problems = rs.schema.validate({**row, "side": "BUY"})
        assert problems == []
        fired = set(rs.evaluate(snap).fired)
        for rule in rs.checked.rules:
            change = whynot.nearest_change(rule, snap, rs.schema, lets)
            if rule.rule_id in fired:
                assert change is None
                continue
            if change is None:
                continue
            found += 1
            assert eval_expr(rule.when, {**snap, change.feature: change.new}, lets), change
            if isinstance(change.new, float) and change.new != change.old:
                half = (change.old + change.new) / 2  # a change half as large does not fire it
                assert not eval_expr(rule.when, {**snap, change.feature: half}, lets), change
    assert found > 100
