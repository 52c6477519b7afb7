"""The compiled evaluator: semantics of spec §2 L1, and equality with the interpreter oracle."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsl import (
    CompiledRuleset,
    DslError,
    build_bundle,
    check,
    compile_ruleset,
    interpret,
    parse_text,
)
from dsl.schema import Schema
from tests.conftest import SNAPSHOT, BundleFactory
from tests.dsl.strategies import SCHEMA_TOML, rule_sources, snapshots


def compiled(make_bundle: BundleFactory, rules: str, **kw: str) -> CompiledRuleset:
    result = build_bundle(make_bundle(rules, **kw))
    assert result.ruleset is not None, "\n".join(d.render(result.texts) for d in result.diagnostics)
    return result.ruleset


def test_priority_order_then_file_order(make_bundle: BundleFactory) -> None:
    rs = compiled(
        make_bundle,
        {
            "b.rule": "rule B-1 when mid > 0 then size_mult *= 1.1\nrule B-2 priority 3 when mid > 0 then skip_entry",
            "a.rule": "rule A-1 when mid > 0 then skip_entry\nrule A-2 priority 3 when mid > 0 then tp_mult *= 1.1",
        },
    )
    assert rs.rule_ids == ("A-2", "B-2", "A-1", "B-1")
    out = rs.evaluate(SNAPSHOT)
    assert out.fired == ("A-2", "B-2", "A-1", "B-1")
    assert out.veto == "B-2" and out.vetoes == ("B-2", "A-1")


def test_factors_multiply_per_output_then_clamp(make_bundle: BundleFactory) -> None:
    rs = compiled(
        make_bundle,
        "rule R-1 when mid > 0 then size_mult *= 1.5, tp_mult *= 1.2\n"
        "rule R-2 when mid > 0 then size_mult *= 1.5, sl_mult *= 0.5\n"
        "rule R-3 when mid < 0 then size_mult *= 0.1\n",
        clamp="size_mult = { min = 0.25, max = 2.0 }\nsl_mult = { min = 0.6, max = 1.5 }",
    )
    out = rs.evaluate(SNAPSHOT)
    assert out.fired == ("R-1", "R-2")
    assert out.factors == {
        "R-1": {"size_mult": 1.5, "tp_mult": 1.2},
        "R-2": {"size_mult": 1.5, "sl_mult": 0.5},
    }
    assert out.raw == {"size_mult": 2.25, "tp_mult": 1.2, "sl_mult": 0.5}
    assert out.clamped == {"size_mult": 2.0, "tp_mult": 1.2, "sl_mult": 0.6}
    assert out.veto is None and out.faults == ()
    assert out.revision == 7


def test_runtime_faults_are_recorded_never_raised(make_bundle: BundleFactory) -> None:
    rs = compiled(
        make_bundle,
        "rule R-1 when mid / (spread_bps - 1) > 0 then size_mult *= 2\n"
        "rule R-2 when log(funding_next - 1) > 0 then size_mult *= 2\n"
        "rule R-3 when sqrt(-mid) > 0 then size_mult *= 2\n"
        "rule R-4 when mid > 0 then tp_mult *= spread_bps - 2\n"
        "rule R-5 when clamp(mid, 2, 1) > 0 then size_mult *= 2\n"
        "rule R-6 when mid > 0 then sl_mult *= 0.9\n",
    )
    out = rs.evaluate(SNAPSHOT)
    assert out.fired == ("R-6",)
    assert [(f.rule_id, f.code) for f in out.faults] == [
        ("R-1", "E401"),
        ("R-2", "E402"),
        ("R-3", "E403"),
        ("R-4", "E405"),
        ("R-5", "E408"),
    ]
    assert out.faults[1].message == "log of a non-positive number (-0.9999)"
    assert out.faults[0].where.endswith("main.rule:1:1")
    assert out.raw["tp_mult"] == 1.0  # a faulting rule applies none of its factors


def test_short_circuit_skips_faults(make_bundle: BundleFactory) -> None:
    rs = compiled(
        make_bundle,
        "rule R-1 when mid < 0 and mid / 0 > 1 then skip_entry\n"
        "rule R-2 when mid > 0 or mid / 0 > 1 then skip_entry\n"
        "rule R-3 when has(atr) and atr / mid > 0 then size_mult *= 1.1\n",
    )
    out = rs.evaluate({k: v for k, v in SNAPSHOT.items() if k != "atr"})
    assert out.fired == ("R-2",) and out.faults == ()


def test_dynamic_factors_are_reported(make_bundle: BundleFactory) -> None:
    rs = compiled(make_bundle, "rule R-1 when has(atr) then sl_mult *= atr / 100, sl_mult *= 1.1\n")
    out = rs.evaluate(SNAPSHOT)
    assert out.factors == {"R-1": {"sl_mult": 1.1 * 0.9}}
    assert out.raw["sl_mult"] == 1.0 * 0.9 * 1.1


def test_params_and_lets(make_bundle: BundleFactory) -> None:
    rs = compiled(
        make_bundle,
        "let tight = spread_bps <= tight_bps\nrule R-1 when tight and symbol in majors then size_mult *= boost\n",
        params='tight_bps = 1.5\nmajors = ["BTCUSDT"]\nboost = 1.25',
    )
    assert rs.evaluate(SNAPSHOT).clamped["size_mult"] == 1.25
    assert rs.evaluate({**SNAPSHOT, "symbol": "DOGEUSDT"}).fired == ()


def test_trace_shows_every_clause_and_what_was_not_evaluated(make_bundle: BundleFactory) -> None:
    rs = compiled(make_bundle, "rule R-1 when mid < 0 and spread_bps > 1 then skip_entry\n")
    out = rs.evaluate(SNAPSHOT, trace=True)
    assert out.trace is not None
    got = [(s.depth, s.text, s.evaluated, s.value) for s in out.trace]
    assert got == [
        (0, "when mid < 0 and spread_bps > 1", True, False),
        (1, "mid < 0", True, False),
        (2, "mid", True, 60000.0),
        (1, "spread_bps > 1", False, None),
        (2, "spread_bps", False, None),
    ]
    assert rs.evaluate(SNAPSHOT).trace is None


def test_source_of_rule(make_bundle: BundleFactory) -> None:
    rs = compiled(make_bundle, "rule R-1 when mid > 1 then size_mult *= 1.1\n")
    assert rs.source_of("R-1").splitlines()[2] == "        if (f['mid'] > 1):"


def test_generated_code_has_no_builtins(make_bundle: BundleFactory) -> None:
    rs = compiled(make_bundle, "rule R-1 when mid > 1 then size_mult *= 1.1\n")
    assert rs._fast.__globals__["__builtins" + "__"] == {}


def test_cost_is_reported(make_bundle: BundleFactory) -> None:
    rs = compiled(
        make_bundle, "let t = mid > 1 and mid < 5\nrule R-1 when t and t then size_mult *= 1.1\n"
    )
    # Each use of a let counts its whole body: the bound is on evaluated nodes.
    assert rs.cost == 1 + 2 * 7 + 1  # the and, twice the let body, the factor


def test_check_raises_all_errors_at_once() -> None:
    module = parse_text(
        "rule R-1 when zz > 1 then skip_entry\nrule R-2 when yy > 1 then skip_entry\n", "m.rule"
    )
    with pytest.raises(DslError) as info:
        check([module], schema=Schema({}))
    assert [d.code for d in info.value.diagnostics] == ["E201", "E201"]


# -- the oracle -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prop_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prop")
    (root / "bundle.toml").write_text(SCHEMA_TOML)
    return root


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=rule_sources(), snaps=st.lists(snapshots(), min_size=1, max_size=5))
def test_compiled_equals_interpreter(
    prop_dir: Path, source: str, snaps: list[dict[str, object]]
) -> None:
    (prop_dir / "gen.rule").write_text(source)
    result = build_bundle(prop_dir)
    assert result.ruleset is not None, source + "\n".join(
        d.render(result.texts) for d in result.diagnostics
    )
    rs = result.ruleset
    again = compile_ruleset(rs.checked, revision=rs.revision, bundle_id=rs.bundle_id)
    for snap in snaps:
        features, problems = rs.schema.validate(snap)
        assert problems == []
        expected = interpret(rs.checked, features, revision=rs.revision)
        assert rs.evaluate(features) == expected, source
        assert rs.evaluate(features, trace=True).fired == expected.fired
        assert again.evaluate(features) == expected  # compiling is deterministic


def test_a_let_read_by_several_rules_is_computed_once_and_faults_in_each(
    make_bundle: BundleFactory,
) -> None:
    rs = compiled(
        make_bundle,
        "let ratio = mid / (spread_bps - 1)\nlet big = ratio > 10\n"
        "rule R-1 when big then size_mult *= 1.1\nrule R-2 when big or mid > 0 then tp_mult *= 1.1\n"
        "rule R-3 when mid > 0 or big then sl_mult *= 0.9\n",
    )
    assert "_L0 = _U" in rs.source  # big is read three times: cached (lets are numbered)
    out = rs.evaluate(SNAPSHOT)  # spread_bps == 1: the let faults
    assert [(f.rule_id, f.code) for f in out.faults] == [("R-1", "E401"), ("R-2", "E401")]
    assert out.fired == ("R-3",)
    ok = rs.evaluate({**SNAPSHOT, "spread_bps": 2.0})
    assert ok.fired == ("R-1", "R-2", "R-3") and ok.faults == ()
    assert ok == interpret(rs.checked, {**SNAPSHOT, "spread_bps": 2.0}, revision=7)
