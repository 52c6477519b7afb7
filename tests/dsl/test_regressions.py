"""Regression tests for problems found while writing the docs (each failed before its fix)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dsl import Source, build_bundle, parse
from dsl.checker import MAX_INLINED_DEPTH
from dsl.errors import DslSyntaxError
from dsl.source import MAX_SOURCE_BYTES
from s3.cli import main
from tests.conftest import SNAPSHOT, BundleFactory


def test_the_deepest_accepted_rule_can_be_explained(make_bundle: BundleFactory) -> None:
    # Lets stack their depth: each level below is one unary minus.
    half = MAX_INLINED_DEPTH // 2 - 4
    rules = f"let d1 = {'-' * half}mid\nrule R-1 when {'-' * half}d1 > 0 then skip_entry\n"
    result = build_bundle(make_bundle(rules))
    assert result.ruleset is not None
    out = result.ruleset.evaluate(SNAPSHOT, trace=True)
    assert out.trace is not None and out.fired == ("R-1",)
    too_deep = f"let d1 = {'-' * 50}mid\nrule R-1 when {'-' * 50}d1 > 0 then skip_entry\n"
    assert [d.code for d in build_bundle(make_bundle(too_deep)).diagnostics] == ["E109"]


def test_huge_integer_factor_is_a_clean_e405(make_bundle: BundleFactory) -> None:
    big = " * ".join(["1" + "0" * 39] * 50)  # about 6,500 bits, built from int literals
    result = build_bundle(make_bundle(f"rule R-1 when mid > 0 then size_mult *= {big}\n"))
    assert result.ruleset is not None
    (fault,) = result.ruleset.evaluate(SNAPSHOT).faults
    assert fault.code == "E405"
    assert fault.message.startswith("factor of size_mult is too large (an integer of ")
    traced = result.ruleset.evaluate(SNAPSHOT, trace=True)
    assert traced.trace is not None  # huge values never reach the trace as raw ints


def test_int_features_are_bounded_and_evaluated_as_floats(make_bundle: BundleFactory) -> None:
    result = build_bundle(make_bundle("rule R-1 when trades * trades > 1 then skip_entry\n"))
    assert result.ruleset is not None
    features, problems = result.ruleset.schema.validate({**SNAPSHOT, "trades": 10**4000 + 7})
    assert [(p.feature, p.code, p.message) for p in problems] == [
        (
            "trades",
            "E411",
            "feature 'trades' is out of range (|value| <= 2**53), found an integer of 13288 bits",
        ),
    ]
    features, problems = result.ruleset.schema.validate(SNAPSHOT)
    assert problems == [] and features["trades"] == 120.0 and isinstance(features["trades"], float)


def test_output_and_action_words_cannot_be_lets(make_bundle: BundleFactory) -> None:
    result = build_bundle(
        make_bundle(
            "let size_mult = 2\nlet skip_entry = 1\nrule R-1 when mid > 0 then skip_entry\n"
        )
    )
    assert [(d.code, d.message) for d in result.diagnostics] == [
        ("E213", "let 'size_mult' has the name of an action"),
        ("E213", "let 'skip_entry' has the name of an action"),
    ]


def test_param_named_like_a_feature_points_at_the_param(make_bundle: BundleFactory) -> None:
    root = make_bundle("rule R-1 when mid > 0 then skip_entry\n", params="mid = 3")
    (diag,) = build_bundle(root).diagnostics
    assert diag.code == "E305" and diag.span is not None
    lines = (root / "bundle.toml").read_text().splitlines()
    assert lines[diag.span.line - 1] == "mid = 3" and lines[diag.span.line - 2] == "[params]"


def test_capped_reports_say_how_many_were_left_out(make_bundle: BundleFactory) -> None:
    rules = "\n".join(f"rule R-{i} when unknown_{i} > 1 then skip_entry" for i in range(60))
    diags = build_bundle(make_bundle(rules)).diagnostics
    assert len(diags) == 51
    assert (diags[-1].code, diags[-1].message) == (
        "E100",
        "10 more diagnostics not shown (10 errors, 0 warnings); at most 50 are reported",
    )


def test_a_too_large_file_is_named() -> None:
    with pytest.raises(DslSyntaxError) as info:
        parse(Source("rules/big.rule", "#" * (MAX_SOURCE_BYTES + 1)))
    assert str(info.value).startswith("rules/big.rule:1:1: E107 rule file larger than 256 KiB")


def test_lint_of_a_subdirectory_of_a_bundle(
    make_bundle: BundleFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_bundle(
        {
            "a.rule": "rule R-1 when mid > 0 then skip_entry\n",
            "sub/b.rule": "rule R-2 when sprd > 1 then skip_entry\n",
        }
    )
    assert main(["rules", "lint", "--format", "json", str(root / "sub")]) == 1
    assert [d["code"] for d in json.loads(capsys.readouterr().out)] == ["E201"]


def test_explain_survives_unreadable_json(
    make_bundle: BundleFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_bundle("rule R-1 when mid > 0 then skip_entry\n")
    assert main(["rules", "explain", str(root), "--features", '{"mid": ' + "9" * 5000 + "}"]) == 2
    assert "unreadable JSON" in capsys.readouterr().err


def test_duplicate_rule_id_message_names_no_other_rule(make_bundle: BundleFactory) -> None:
    rules = "rule R-1 when mid > 0 then skip_entry\nrule R-2 when mid > 1 then skip_entry\nrule R-1 when mid > 2 then skip_entry\n"
    (diag,) = build_bundle(make_bundle(rules)).diagnostics
    assert diag.message == "rule id 'R-1' is used twice"


def test_case_file_errors_point_at_the_case(tmp_path: Path) -> None:
    from dsl.cases import load_cases

    p = tmp_path / "c.toml"
    p.write_text('[[case]]\nname = "a"\nfeatures = {}\n\n[[case]]\nname = "b"\nfeaturez = {}\n')
    cases, diags = load_cases([p])
    # the typo is pointed at (its line and column), with the key meant; case "a" still loads
    assert [(d.span.line, d.span.col) if d.span else 0 for d in diags] == [(7, 1)]
    assert [d.message for d in diags] == [
        "case.1.featurez: unknown key 'featurez' in case; did you mean 'features'?"
    ]
    assert [c.name for c in cases] == ["a"]
    p.write_text("[[case]\n")
    _, diags = load_cases([p])
    assert (
        diags[0].message.startswith("invalid TOML in case file: ")
        and "(at line" not in diags[0].message
    )
