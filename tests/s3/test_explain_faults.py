"""`s3 rules explain` decides as the engine does on a faulted veto rule, and points at the fault."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from dsl import build_bundle
from s3.cli import main
from tests.conftest import SNAPSHOT, BundleFactory

SYMBOLS = """
[symbols.BTCUSDT]
market = "FUT"
tick_size = "0.10"
step_size = "0.001"
min_qty = "0.001"
min_notional = "100"
"""
RULES = (
    'rule V "veto on depth per trade" priority 10\n'
    "  when depth_top1_usdt / (trades - 120) < 10\n"
    "  then skip_entry\n"
    "rule S when spread_bps > 0 then size_mult *= 1 / (mid - 60000)\n"
)


def explain(root: Path) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["rules", "explain", str(root), "--features", json.dumps(SNAPSHOT)])
    return out.getvalue()


@pytest.mark.parametrize("engine", ["", "[engine]\nveto_on_rule_fault = true\n" + SYMBOLS])
def test_a_faulted_veto_rule_skips_as_in_the_engine(
    make_bundle: BundleFactory, engine: str
) -> None:
    root = make_bundle(RULES)
    if engine:
        (root / "bundle.toml").write_text((root / "bundle.toml").read_text() + engine)
    text = explain(root)
    assert (
        "decision: skip_entry, RULE.FAULT:V: veto rule V could not be evaluated "
        "(E401 division by zero) and [engine] veto_on_rule_fault is true"
    ) in text
    # the engine's own test of the same rule set
    rs = build_bundle(root).ruleset
    assert rs is not None
    outcome = rs.evaluate(SNAPSHOT)
    assert outcome.veto is None and [f.rule_id for f in rs.faulted_vetoes(outcome)] == ["V"]


def test_without_veto_on_rule_fault_there_is_no_veto(make_bundle: BundleFactory) -> None:
    root = make_bundle(RULES)
    (root / "bundle.toml").write_text(
        (root / "bundle.toml").read_text() + "[engine]\nveto_on_rule_fault = false\n" + SYMBOLS
    )
    assert "decision: no veto" in explain(root)


def test_the_fault_points_at_its_clause_with_the_operands(make_bundle: BundleFactory) -> None:
    text = explain(make_bundle(RULES))
    lines = text.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith("fault: V E401"))
    assert lines[i + 1].startswith("  at depth_top1_usdt / (trades - 120) [")
    assert lines[i + 1].endswith(": depth_top1_usdt = 8000, trades - 120 = 0")
    k = next(k for k, line in enumerate(lines) if line.startswith("fault: S E401"))
    assert lines[k + 1].startswith("  at size_mult *= 1 / (mid - 60000) [") and lines[
        k + 1
    ].endswith(": mid - 60000 = 0")
    trace = [line for line in lines if "FAULT E401" in line and line.startswith("    ")]
    assert [t.split()[0] for t in trace] == ["depth_top1_usdt", "size_mult"]


def test_a_factor_fault_points_at_the_factor(make_bundle: BundleFactory) -> None:
    rs = build_bundle(make_bundle("rule F when mid > 0 then size_mult *= mid - 60000\n")).ruleset
    assert rs is not None
    out = rs.evaluate(SNAPSHOT, trace=True)
    assert [(f.rule_id, f.code) for f in out.faults] == [("F", "E405")]
    at = [s for s in out.trace or () if s.fault is not None]
    assert [(s.text, s.evaluated) for s in at] == [("size_mult *= mid - 60000", True)]
    assert at[0].fault is not None and at[0].fault.startswith("E405 ")
