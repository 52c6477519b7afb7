"""count_true(): point systems over conditions, evaluated in full, as a number."""

from __future__ import annotations

import pytest

from dsl import build_bundle, interpret
from tests.conftest import SNAPSHOT, BundleFactory


def test_count_true_counts_and_scales(make_bundle: BundleFactory) -> None:
    rules = (
        "let wide = spread_bps > 0.5\n"
        "rule SCORE when count_true(wide, halted, mid > 1, has(atr), trades > 100) >= 3\n"
        "  then size_mult *= 1 + 0.1 * count_true(wide, mid > 1)\n"
        "rule NONE when count_true(halted) == 0 then tp_mult *= 0.9\n"
    )
    result = build_bundle(make_bundle(rules))
    assert result.ok, [d.message for d in result.diagnostics]
    rs = result.ruleset
    assert rs is not None
    out = rs.evaluate(SNAPSHOT)  # wide, mid > 1, has(atr), trades > 100: 4 of 5
    assert out.fired == ("SCORE", "NONE")
    assert out.factors["SCORE"]["size_mult"] == pytest.approx(1.2)
    assert out == interpret(rs.checked, SNAPSHOT, revision=rs.revision)
    steps = {s.text: s.value for s in rs.evaluate(SNAPSHOT, trace=True).trace or ()}
    assert steps["count_true(wide, halted, mid > 1, has(atr), trades > 100)"] == 4


def test_every_argument_is_evaluated(make_bundle: BundleFactory) -> None:
    rules = "rule R when count_true(true, mid / (spread_bps - 1) > 0) >= 1 then skip_entry\n"
    rs = build_bundle(make_bundle(rules)).ruleset
    assert rs is not None
    out = rs.evaluate(SNAPSHOT)  # spread_bps == 1: the second argument faults, no short circuit
    assert [(f.rule_id, f.code) for f in out.faults] == [("R", "E401")]
    assert out == interpret(rs.checked, SNAPSHOT, revision=rs.revision)


@pytest.mark.parametrize(
    ("rule", "code"),
    [
        ("count_true(mid) > 1", "E214"),
        ("count_true() > 1", "E203"),
        ("count_true(has(atr)) > 0 and atr > 1", "E210"),  # counting proves nothing
    ],
)
def test_misuse(make_bundle: BundleFactory, rule: str, code: str) -> None:
    result = build_bundle(make_bundle(f"rule R when {rule} then skip_entry\n"))
    assert [d.code for d in result.diagnostics] == [code]
