"""A bundle of 20 public rules (freqtrade's pairlist filters, freqtrade-strategies) ported to the
second edition of the language: lint clean under --strict (every number has a unit), formatted,
every case passes, every rule fires in some case, and every rule names its source."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dsl import CompiledRuleset, build_bundle, format_module, interpret, parse
from dsl.cases import case_files, load_cases, run_case
from dsl.source import Source

BUNDLE = Path(__file__).resolve().parent / "ported"


@pytest.fixture(scope="module")
def ruleset() -> CompiledRuleset:
    result = build_bundle(BUNDLE, strict=True)
    assert result.diagnostics == (), "\n".join(d.render(result.texts) for d in result.diagnostics)
    assert result.ruleset is not None
    return result.ruleset


def test_at_least_twenty_public_rules_each_citing_its_source(ruleset: CompiledRuleset) -> None:
    assert len(ruleset.rules) >= 20
    for r in ruleset.rules:
        text = Path(r.rule.span.path).read_text(encoding="utf-8").splitlines()
        above = "\n".join(text[max(0, r.rule.span.line - 4) : r.rule.span.line - 1])
        assert re.search(r"freqtrade/freqtrade(-strategies)? \S+\.py", above), r.rule_id


def test_the_second_edition_is_used(ruleset: CompiledRuleset) -> None:
    source = "\n".join(p.read_text() for p in sorted(BUNDLE.glob("*.rule")))
    for construct in (
        "crossed_above(",
        "crossed_below(",
        "prev(",
        "[symbol]",
        "to_bps(",
        "hour_utc(",
    ):
        assert construct in source, construct


def test_formatted(ruleset: CompiledRuleset) -> None:
    for path in sorted(BUNDLE.glob("*.rule")):
        text = path.read_text(encoding="utf-8")
        assert format_module(parse(Source(str(path), text))) == text, path


def test_cases_pass_and_cover_every_rule(ruleset: CompiledRuleset) -> None:
    cases, problems = load_cases(case_files(BUNDLE))
    assert problems == [] and len(cases) >= 20
    fired: set[str] = set()
    for case in cases:
        result = run_case(ruleset, case)
        assert result.passed, (case.name, result)
        fired |= set(result.outcome.fired) if result.outcome is not None else set()
        features, _ = ruleset.schema.validate(case.features)
        assert ruleset.evaluate(features) == interpret(
            ruleset.checked, features, revision=ruleset.revision
        )
    assert fired == set(ruleset.rule_ids)


def test_pasting_the_spread_filter_as_is_is_a_unit_error(tmp_path: Path) -> None:
    """The issue's example: freqtrade's 0.005 ratio against a bps spread."""
    (tmp_path / "bundle.toml").write_text((BUNDLE / "bundle.toml").read_text())
    (tmp_path / "r.rule").write_text("rule R when spread_bps > max_spread_ratio then skip_entry\n")
    result = build_bundle(tmp_path)
    assert [(d.code, d.hint) for d in result.diagnostics] == [
        ("E218", "convert with to_bps(max_spread_ratio)")
    ]
