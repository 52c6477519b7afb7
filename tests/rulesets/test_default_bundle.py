"""The shipped bundle: lint-clean, every case passes, every rule is covered, and its outcomes are
snapshotted (syrupy) on its cases and on the real market sample, the workflow rule authors follow.

After an intended rule change: `pytest tests/rulesets --snapshot-update`, then review the diff.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension

from dsl import CompiledRuleset, interpret
from dsl.cases import case_files, load_cases, run_case
from s3.config.bundle import load_dir

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "rulesets" / "default"
SAMPLE = ROOT / "data" / "samples" / "features_real.jsonl"


@pytest.fixture(scope="module")
def ruleset() -> CompiledRuleset:
    result = load_dir(BUNDLE)  # the rules and the engine sections
    assert result.diagnostics == (), "\n".join(d.render(result.texts) for d in result.diagnostics)
    assert result.snapshot is not None
    return result.snapshot.ruleset


@pytest.fixture
def json_snapshot(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(JSONSnapshotExtension)


def _summary(o: Any) -> dict[str, Any]:
    return {
        "fired": list(o.fired),
        "veto": o.veto,
        "size_mult": round(o.clamped["size_mult"], 12),
        "tp_mult": round(o.clamped["tp_mult"], 12),
        "sl_mult": round(o.clamped["sl_mult"], 12),
        "faults": [f"{f.rule_id} {f.code}" for f in o.faults],
    }


def test_shape_of_the_bundle(ruleset: CompiledRuleset) -> None:
    assert len(ruleset.rules) >= 20
    assert {"mid", "spread_bps", "atr", "depth_top1_usdt", "funding_next", "side"} <= set(
        ruleset.schema.features
    )
    assert ruleset.revision == 1 and ruleset.bundle_id == "default"


def test_cases_pass_and_cover_every_rule(ruleset: CompiledRuleset) -> None:
    cases, problems = load_cases(case_files(BUNDLE))
    assert problems == [] and len(cases) >= 30
    results = [run_case(ruleset, c) for c in cases]
    failures = [f"{r.case.name}: {r.failures}" for r in results if not r.passed]
    assert failures == []
    fired = {rid for r in results if r.outcome for rid in r.outcome.fired}
    assert set(ruleset.rule_ids) - fired == set()


def test_case_outcomes_snapshot(ruleset: CompiledRuleset, json_snapshot: SnapshotAssertion) -> None:
    cases, _ = load_cases(case_files(BUNDLE))
    got = {}
    for c in cases:
        features, problems = ruleset.schema.validate(c.features)
        assert problems == []
        got[f"{Path(c.where.path).name}: {c.name}"] = _summary(ruleset.evaluate(features))
    assert got == json_snapshot


def test_real_sample_outcomes_snapshot(
    ruleset: CompiledRuleset, json_snapshot: SnapshotAssertion
) -> None:
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines() if line.strip()]
    got = {}
    for row in rows:
        for side in ("BUY", "SELL"):
            features, problems = ruleset.schema.validate({**row, "side": side})
            assert problems == []
            outcome = ruleset.evaluate(features)
            assert interpret(ruleset.checked, features, revision=1) == outcome
            got[f"{row['symbol']} {row['ts']} {side}"] = _summary(outcome)
    assert len(got) == 2 * len(rows) >= 400
    assert got == json_snapshot


def test_examples_are_valid_snapshots(ruleset: CompiledRuleset) -> None:
    for path in sorted((BUNDLE / "examples").glob("*.json")):
        _, problems = ruleset.schema.validate(json.loads(path.read_text()))
        assert problems == [], path.name
