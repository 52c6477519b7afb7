"""The formatter: canonical, idempotent, comment-preserving, and a round trip through the parser."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dsl import format_module, parse_text
from tests.dsl.strategies import rule_sources


def fmt(text: str) -> str:
    return format_module(parse_text(text))


def test_canonical_layout() -> None:
    src = (
        "# header\n"
        "let   tight=spread_bps<=1.5   and depth>=5_000\n"
        "let wide = not tight\n"
        'rule R-023 "tight book" priority 10 when tight and (regime=="trend" or x<-1)\n'
        "then size_mult*=1.2,tp_mult *= 1.1   # why\n"
        "rule R-2 priority 0 when a-(b-c)>2*-d then skip_entry\n"
        "# trailing note\n"
    )
    assert fmt(src) == (
        "# header\n"
        "let tight = spread_bps <= 1.5 and depth >= 5_000\n"
        "let wide = not tight\n"
        "\n"
        "# why\n"
        'rule R-023 "tight book" priority 10\n'
        '  when tight and (regime == "trend" or x < -1)\n'
        "  then size_mult *= 1.2, tp_mult *= 1.1\n"
        "\n"
        "rule R-2\n"
        "  when a - (b - c) > 2 * -d\n"
        "  then skip_entry\n"
        "\n"
        "# trailing note\n"
    )


def test_long_conditions_break_before_each_clause() -> None:
    clauses = [f"feature_number_{i} > {i}" for i in range(6)]
    out = fmt(f"rule R-1 when {' and '.join(clauses)} then skip_entry")
    assert out == (
        "rule R-1\n"
        "  when feature_number_0 > 0\n"
        + "".join(f"    and feature_number_{i} > {i}\n" for i in range(1, 6))
        + "  then skip_entry\n"
    )


def test_idempotent_and_keeps_every_comment() -> None:
    src = "rule R-1 # a\n  # b\n  when x > 1 # c\n  then skip_entry # d\n# e\n"
    once = fmt(src)
    assert fmt(once) == once
    for c in "abcde":
        assert f"# {c}" in once


def test_nested_parentheses_survive() -> None:
    for src in [
        "let v = a and (b and c)",
        "let v = (a or b) and c",
        "let v = -(-a)",
        "let v = (a < b) == true",
        "let v = not (a in [1, 2])",
        "let v = (a - b) - (c - d)",
        "let v = a / (b * c)",
    ]:
        assert parse_text(fmt(src)) == parse_text(src), src


@settings(max_examples=150, deadline=None)
@given(source=rule_sources())
def test_round_trip(source: str) -> None:
    module = parse_text(source)
    text = format_module(module)
    assert parse_text(text) == module
    assert format_module(parse_text(text)) == text


@settings(max_examples=100, deadline=None)
@given(source=rule_sources(), junk=st.text(alphabet=" #x", max_size=20))
def test_round_trip_with_comments(source: str, junk: str) -> None:
    # Comments sprinkled at line ends must all survive and keep the code the same.
    lines = source.splitlines()
    commented = "\n".join(
        f"{line}  # c{i} {junk.strip()}" if line.strip() else line for i, line in enumerate(lines)
    )
    module = parse_text(commented)
    text = format_module(module)
    assert parse_text(text) == module
    for i, line in enumerate(lines):
        if line.strip():
            assert f"# c{i}" in text
