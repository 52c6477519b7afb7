"""History in the schema, prev(), crossed_above()/crossed_below()."""

from __future__ import annotations

import pytest

from dsl import build_bundle, format_module, interpret, parse_text
from tests.conftest import BundleFactory

FEATURES = """\
fast = { type = "number", unit = "USDT/base", history = 2 }
slow = { type = "number", unit = "USDT/base", history = 1 }
rsi = { type = "number", history = 1, optional = true }
mid = { type = "number", unit = "USDT/base" }
"""
RULES = """\
let gap = fast - slow
rule UP when crossed_above(fast, slow) then size_mult *= 1.1
rule DOWN when crossed_below(fast, slow) then skip_entry
rule RISING when prev(fast, 2) < prev(fast) and prev(fast) < fast then tp_mult *= 1.1
rule GAP when prev(gap) < 0 and gap >= 0 then sl_mult *= 0.9
rule RSI when has(rsi) and crossed_above(rsi, 30) then size_mult *= 1.2
"""


def snap(fast: float, fast_prev: float, slow: float, slow_prev: float, **more: float) -> dict:
    return {
        "fast": fast,
        "fast_prev": fast_prev,
        "fast_prev2": more.pop("fast_prev2", fast_prev),
        "slow": slow,
        "slow_prev": slow_prev,
        "mid": 100.0,
        **more,
    }


@pytest.mark.parametrize(
    ("now", "before", "up", "down"),
    [
        ((101, 100), (99, 100), True, False),  # from below to above
        ((101, 100), (100, 100), True, False),  # from equal to above (prev <= prev)
        ((100, 100), (99, 100), False, False),  # touching is not crossing
        ((101, 100), (102, 100), False, False),  # stayed above
        ((99, 100), (101, 100), False, True),
        ((99, 100), (100, 100), False, True),
        ((99, 100), (98, 100), False, False),
    ],
)
def test_crossings_follow_qtpylib(
    make_bundle: BundleFactory,
    now: tuple[float, float],
    before: tuple[float, float],
    up: bool,
    down: bool,
) -> None:
    result = build_bundle(make_bundle(RULES, features=FEATURES))
    assert result.ok, [d.message for d in result.diagnostics]
    rs = result.ruleset
    assert rs is not None
    features, problems = rs.schema.validate(snap(now[0], before[0], now[1], before[1]))
    assert problems == []
    out = rs.evaluate(features)
    assert ("UP" in out.fired, "DOWN" in out.fired) == (up, down)
    assert out == interpret(rs.checked, features, revision=rs.revision)


def test_prev_reads_history_and_lets_are_shifted(make_bundle: BundleFactory) -> None:
    rs = build_bundle(make_bundle(RULES, features=FEATURES)).ruleset
    assert rs is not None
    src = rs.source_of("GAP")
    assert "f['fast_prev'] - f['slow_prev']" in src and "f['fast_prev2']" not in src
    assert "f['fast_prev2']" in rs.source_of("RISING")
    features, _ = rs.schema.validate(snap(101, 99, 100, 100, fast_prev2=98, rsi=31, rsi_prev=29))
    out = rs.evaluate(features, trace=True)
    assert out.fired == ("UP", "RISING", "GAP", "RSI")
    texts = {(s.rule_id, s.text): s.value for s in out.trace or ()}
    assert texts[("UP", "prev(fast)")] == 99.0 and texts[("UP", "prev(slow)")] == 100.0
    assert texts[("GAP", "prev(fast) - prev(slow)")] == -1.0
    assert rs.evaluate(features) == interpret(rs.checked, features, revision=rs.revision)


def test_history_is_validated_with_the_feature(make_bundle: BundleFactory) -> None:
    rs = build_bundle(make_bundle(RULES, features=FEATURES)).ruleset
    assert rs is not None
    _, problems = rs.schema.validate({"fast": 1.0, "fast_prev": 1.0, "slow": 1.0, "mid": 1.0})
    assert [(p.feature, p.code) for p in problems] == [
        ("fast_prev2", "E410"),
        ("slow_prev", "E410"),
    ]
    _, problems = rs.schema.validate({**snap(1, 1, 1, 1), "slow_prev": "x"})
    assert [(p.feature, p.code) for p in problems] == [("slow_prev", "E411")]
    # an absent optional feature needs no history; a present one does
    assert rs.schema.validate(snap(1, 1, 1, 1))[1] == []
    _, problems = rs.schema.validate({**snap(1, 1, 1, 1), "rsi": 3.0})
    assert [(p.feature, p.code) for p in problems] == [("rsi_prev", "E410")]


@pytest.mark.parametrize(
    ("rule", "fragment"),
    [
        ("crossed_above(mid, slow)", "reads 'mid' 1 snapshot back, but it carries no history"),
        ("prev(slow, 2) > 1", "reads 'slow' 2 snapshots back, but it carries history 1"),
        ("prev(fast, 0) > 1", "an integer literal from 1 to 8, found 0"),
        ("prev(prev(slow)) > 1", "reads 'slow' 2 snapshots back"),
    ],
)
def test_not_enough_history_is_e220(make_bundle: BundleFactory, rule: str, fragment: str) -> None:
    result = build_bundle(make_bundle(f"rule R when {rule} then skip_entry\n", features=FEATURES))
    assert [d.code for d in result.diagnostics] == ["E220"]
    assert fragment in result.diagnostics[0].message


def test_crossings_are_unit_and_type_checked(make_bundle: BundleFactory) -> None:
    features = FEATURES + 'ret = { type = "number", unit = "fraction", history = 1 }\n'
    result = build_bundle(
        make_bundle("rule R when crossed_above(fast, ret) then skip_entry\n", features=features)
    )
    assert [d.code for d in result.diagnostics] == ["E218"]
    result = build_bundle(
        make_bundle("rule R when crossed_above(fast, true) then skip_entry\n", features=features)
    )
    assert [d.code for d in result.diagnostics] == ["E205"]


@pytest.mark.parametrize(
    ("features", "message"),
    [
        ('x = { type = "number", history = 1 }\nx_prev = "number"', "'x_prev' is the key of 'x'"),
        ('x = { type = "bool", history = 1 }', "history is only for number and int features"),
        ('x = { type = "number", history = 9 }', "less than or equal to 8"),
    ],
)
def test_bad_history_declarations(make_bundle: BundleFactory, features: str, message: str) -> None:
    result = build_bundle(make_bundle("rule R when true then skip_entry\n", features=features))
    assert [d.code for d in result.diagnostics] == ["E303"]
    assert message in result.diagnostics[0].message


def test_formatter_round_trips_the_new_calls() -> None:
    text = "rule R\n  when crossed_above(fast, slow * 1.01) or prev(fast, 2) < prev(fast)\n  then skip_entry\n"
    module = parse_text(text)
    assert format_module(module) == text
    assert parse_text(format_module(module)) == module
