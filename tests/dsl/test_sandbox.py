"""Escape attempts: every one is a clear compile error (never a crash, never code that runs)."""

from __future__ import annotations

import pytest

from dsl import build_bundle
from tests.conftest import SNAPSHOT, BundleFactory


def codes(make_bundle: BundleFactory, rules: str) -> list[str]:
    result = build_bundle(make_bundle(rules))
    assert result.ruleset is None
    return sorted({d.code for d in result.diagnostics if d.is_error})


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ("rule R-1 when mid.__class__ > 1 then skip_entry", ["E105"]),
        ('rule R-1 when __import__("os") then skip_entry', ["E102"]),
        ("rule R-1 when _x > 1 then skip_entry", ["E102"]),
        ('rule R-1 when eval("1") > 0 then skip_entry', ["E202"]),
        ('rule R-1 when exec("1") > 0 then skip_entry', ["E202"]),
        ('rule R-1 when open("/etc/passwd") then skip_entry', ["E202"]),
        ('rule R-1 when getattr(mid, "real") > 0 then skip_entry', ["E202"]),
        ("rule R-1 when globals() then skip_entry", ["E202"]),
        ("rule R-1 when f > 0 then skip_entry", ["E201"]),
        ('rule R-1 when symbol[0] == "B" then skip_entry', ["E105"]),
        ("import os\nrule R-1 when mid > 0 then skip_entry", ["E111"]),
        ("from os import system", ["E111"]),
        ("rule R-1 when (lambda: 1)() then skip_entry", ["E102"]),
        ("rule R-1 when [x for x in [1]] then skip_entry", ["E111"]),
        ("rule R-1 when mid > 0 then size_mult *= __import__", ["E102"]),
        ("rule R-1 when mid > 0 then exec", ["E208"]),
        ("rule R-1 when mid > 0; import os then skip_entry", ["E102"]),
        ("rule R-1 when mid ** 99999999 > 0 then skip_entry", ["E101"]),
        ("rule R-1 when mid > 9" + "9" * 100000 + " then skip_entry", ["E108"]),
        ('rule R-1 when symbol == "' + "A" * 100000 + '" then skip_entry', ["E108"]),
        ('rule R-1 when symbol == "\\x41" then skip_entry', ["E106"]),
        ("rule R-1 when mid > 0 then skip_entry\nrule R-1 when mid > 0 then skip_entry", ["E207"]),
        ("let a = a\nrule R-1 when a then skip_entry", ["E211"]),
        ("rule R-1 when " + "not " * 200 + "halted then skip_entry", ["E109"]),
        ("rule R-1 when " + " and ".join(["mid > 1"] * 3000) + " then skip_entry", ["E109"]),
        ("rule R-1 when mid > 0 then size_mult *= mid for x", ["E111"]),
        ('rule R-1 "\\"); import os; (\\"" when mid > 0 then skip_entry', []),
    ],
)
def test_escape_attempts_are_compile_errors(
    make_bundle: BundleFactory, rules: str, expected: list[str]
) -> None:
    if not expected:  # an injection attempt inside a string is just a title
        result = build_bundle(make_bundle(rules))
        assert result.ruleset is not None
        assert result.ruleset.rules[0].rule.title == '"); import os; ("'
        return
    assert codes(make_bundle, rules) == expected


def test_let_bombs_are_bounded(make_bundle: BundleFactory) -> None:
    # Each let doubles the one before: 2**40 nodes once substituted, refused before codegen.
    lets = ["let l0 = mid > 1"] + [f"let l{i} = l{i - 1} and l{i - 1}" for i in range(1, 41)]
    assert codes(make_bundle, "\n".join(lets) + "\nrule R-1 when l40 then skip_entry") == ["E109"]


def test_strings_reach_generated_code_only_as_literals(make_bundle: BundleFactory) -> None:
    rules = (
        "rule R-1 when symbol == \"'); raise SystemExit('\" then skip_entry\n"
        'rule R-2 when symbol in ["a\\"b", "\\\\"] then skip_entry\n'
    )
    result = build_bundle(make_bundle(rules))
    assert result.ruleset is not None
    out = result.ruleset.evaluate({**SNAPSHOT, "symbol": "'); raise SystemExit('"})
    assert out.fired == ("R-1",)
    assert result.ruleset.evaluate({**SNAPSHOT, "symbol": 'a"b'}).fired == ("R-2",)


def test_generated_namespace_has_only_the_helpers(make_bundle: BundleFactory) -> None:
    result = build_bundle(make_bundle("rule R-1 when mid > 0 then skip_entry"))
    assert result.ruleset is not None
    names = set(result.ruleset._fast.__globals__)
    assert names == {
        "__builtins__",
        "_Exception",
        "_UNSET",
        "_float",
        "_mlog",
        "_msqrt",
        "_evaluate",
        "_abs",
        "_min",
        "_max",
        "_clamp",
        "_log",
        "_sqrt",
        "_between",
        "_between_wrap",
        "_hour_utc",
        "_minute_of_day_utc",
        "_weekday_utc",
        "_crossed_above",
        "_crossed_below",
        "_factor",
        "__dsl_generated__",  # the mark the audit hook knows generated frames by
    }
    assert result.ruleset._fast.__globals__["__builtins__"] == {}
