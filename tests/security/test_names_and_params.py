"""Names and params from `bundle.toml` and rule text: matched in full, control characters refused
with the offending name escaped, and no non-finite number in a param list."""

from __future__ import annotations

import pytest

from dsl import build_bundle
from tests.conftest import BASE_FEATURES, BundleFactory

RULE = "rule R-1 when mid > 0 then skip_entry\n"


def toml_key(name: str) -> str:
    """``name`` as a quoted TOML key, every unprintable character as a \\uXXXX escape."""
    return '"' + "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in name) + '"'


def errors(result: object) -> list[tuple[str, str]]:
    return [(d.code, d.message) for d in result.diagnostics if d.is_error]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "name",
    ["pp\n", "pp\r", "p\tp", "pp\x00", "pp\x1b[31m", "pp\u200b", "pp\u2028", "pp\x85"],
)
def test_a_param_name_with_a_control_character_is_refused_and_shown_escaped(
    make_bundle: BundleFactory, name: str
) -> None:
    result = build_bundle(make_bundle(RULE, params=f"{toml_key(name)} = 1.5"))
    assert result.ruleset is None
    [(code, message)] = errors(result)
    assert code == "E303"
    assert message.isprintable(), message  # the name is escaped, never raw
    assert repr(name) in message


@pytest.mark.parametrize("name", ["mid\n", "x\u200by", "a\x7f"])
def test_a_feature_name_with_a_control_character_is_refused(
    make_bundle: BundleFactory, name: str
) -> None:
    result = build_bundle(
        make_bundle(RULE, features=BASE_FEATURES + f'{toml_key(name)} = "number"\n')
    )
    assert result.ruleset is None
    assert [c for c, _ in errors(result)] == ["E303"]
    assert all(m.isprintable() for _, m in errors(result))


def test_names_match_in_full(make_bundle: BundleFactory) -> None:
    # `re.match("^...$")` accepted "pp\n": `$` matches before a trailing newline.
    result = build_bundle(make_bundle(RULE, params='"pp\\n" = 2'))
    assert [c for c, _ in errors(result)] == ["E303"]
    result = build_bundle(make_bundle(RULE, head='bundle_id = "t\\n"\nrev = 7\n'))
    assert [c for c, _ in errors(result)] == ["E303"]


@pytest.mark.parametrize(
    "rule",
    [
        "rule R-1\x0b when mid > 0 then skip_entry",
        "rule R\u200b-1 when mid > 0 then skip_entry",
        "let a\x00b = mid > 0\nrule R-1 when a then skip_entry",
        "rule R-1 when mi\u200bd > 0 then skip_entry",
    ],
)
def test_rule_ids_and_names_with_control_characters_are_syntax_errors(
    make_bundle: BundleFactory, rule: str
) -> None:
    result = build_bundle(make_bundle(rule))
    assert result.ruleset is None
    assert "E102" in {c for c, _ in errors(result)}


@pytest.mark.parametrize(
    "value",
    ["[nan, 1.0]", "[1.0, inf]", "[-inf]", "[1.0, -nan]", "nan", "inf"],
)
def test_non_finite_params_are_refused(make_bundle: BundleFactory, value: str) -> None:
    # `[nan, inf]` compiled to code that faulted on every evaluation (a silently disabled veto).
    rules = "rule R-1 when mid in xs then skip_entry\n" if value.startswith("[") else RULE
    result = build_bundle(make_bundle(rules, params=f"xs = {value}"))
    assert result.ruleset is None
    [(code, message)] = errors(result)
    assert code == "E303" and "must be finite" in message


def test_integer_params_stay_within_64_bits(make_bundle: BundleFactory) -> None:
    result = build_bundle(make_bundle(RULE, params="big = 9223372036854775808"))
    assert [c for c, _ in errors(result)] == ["E303"]
    # 5000 digits: tomllib raises a plain ValueError, which used to escape the loader.
    result = build_bundle(make_bundle(RULE, params="big = " + "9" * 5000))
    assert [c for c, _ in errors(result)] == ["E302"]


def test_a_case_file_with_a_huge_integer_is_a_diagnostic(make_bundle: BundleFactory) -> None:
    from dsl.cases import load_cases

    root = make_bundle(RULE)
    (root / "cases").mkdir()
    (root / "cases" / "c.toml").write_text("x = " + "9" * 5000 + "\n")
    cases, diags = load_cases([root / "cases" / "c.toml"])
    assert cases == [] and [d.code for d in diags] == ["E307"]


@pytest.mark.parametrize("ch", ["\x01", "\x1b", "\x7f", "\u202e", "\u2028", "\x85"])
def test_strings_and_diagnostics_never_carry_control_characters(
    make_bundle: BundleFactory, ch: str
) -> None:
    # A string with a terminal escape (or a bidi override) would reach messages such as
    # "... cannot both hold" and the terminal; a comment with one would reach the excerpt.
    rules = (
        f'rule R-1 "ti{ch}tle" when symbol == "a{ch}b" and symbol == "x" then skip_entry # {ch}\n'
        f"rule R-2 when mid > 0 then skip_entry # {ch}\n"
        "rule R-3 when mid > 0 and mid > 0 then skip_entry\n"
    )
    result = build_bundle(make_bundle(rules))
    assert result.ruleset is None
    assert {c for c, _ in errors(result)} == {"E106"}
    for d in result.diagnostics:
        for line in d.render(result.texts).splitlines():
            assert line.isprintable(), line


def test_enum_values_are_printable(make_bundle: BundleFactory) -> None:
    features = BASE_FEATURES + 'venue = { type = "enum", values = ["a", "b\\u001b[2J"] }\n'
    result = build_bundle(make_bundle(RULE, features=features))
    [(code, message)] = errors(result)
    assert code == "E303" and message.isprintable() and "\\x1b" in message
