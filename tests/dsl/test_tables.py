"""Param tables keyed by an enum feature: complete at build time, looked up by key in rules."""

from __future__ import annotations

import pytest

from dsl import build_bundle, format_module, interpret, parse_text
from tests.conftest import BundleFactory

FEATURES = """\
symbol = { type = "enum", values = ["BTCUSDT", "ETHUSDT", "SOLUSDT"] }
tier = { type = "enum", values = ["a", "b"], optional = true }
spread_bps = { type = "number", unit = "bps" }
venue = "string"
"""
PARAMS = """\
max_spread = { by = "symbol", unit = "bps", values = { BTCUSDT = 1, SOLUSDT = 3.5, ETHUSDT = 2 } }
tier_cut = { by = "tier", values = { a = -1.5, b = 0.25 } }
"""


@pytest.mark.parametrize(
    ("symbol", "spread", "fires"),
    [
        ("BTCUSDT", 1.5, True),
        ("ETHUSDT", 1.5, False),
        ("SOLUSDT", 3.6, True),
        ("SOLUSDT", 3.5, False),
    ],
)
def test_lookup_by_key(make_bundle: BundleFactory, symbol: str, spread: float, fires: bool) -> None:
    rules = (
        "rule WIDE when spread_bps > max_spread[symbol] then skip_entry\n"
        "rule T when has(tier) and spread_bps > tier_cut[tier] then size_mult *= 0.9\n"
    )
    result = build_bundle(make_bundle(rules, features=FEATURES, params=PARAMS))
    assert result.ok, [d.message for d in result.diagnostics]
    rs = result.ruleset
    assert rs is not None
    for tier in (None, "a", "b"):
        snap = {"symbol": symbol, "spread_bps": spread, "venue": "x", "tier": tier}
        features, problems = rs.schema.validate(snap)
        assert problems == []
        out = rs.evaluate(features)
        assert ("WIDE" in out.fired) == fires
        assert ("T" in out.fired) == (tier is not None and spread > {"a": -1.5, "b": 0.25}[tier])
        assert out == interpret(rs.checked, features, revision=rs.revision)
        traced = rs.evaluate(features, trace=True)
        steps = {s.text: s.value for s in traced.trace or () if s.rule_id == "WIDE"}
        assert steps["max_spread[symbol]"] == {"BTCUSDT": 1, "ETHUSDT": 2, "SOLUSDT": 3.5}[symbol]


def test_a_lookup_costs_one_node_per_entry(make_bundle: BundleFactory) -> None:
    rules = "rule WIDE when spread_bps > max_spread[symbol] then skip_entry\n"
    rs = build_bundle(make_bundle(rules, features=FEATURES, params=PARAMS)).ruleset
    assert rs is not None
    # compare, spread_bps, the lookup (3 entries), symbol
    assert rs.cost == 1 + 1 + 3 + 1


@pytest.mark.parametrize(
    ("params", "messages"),
    [
        (
            'm = { by = "symbol", values = { BTCUSDT = 1, ETHUSDT = 2 } }',
            ["param table 'm' has no entry for 'SOLUSDT' of symbol"],
        ),
        (
            'm = { by = "symbol", values = { BTCUSDT = 1, ETHUSDT = 2, SOLUSDT = 3, XRP = 4 } }',
            ["param table 'm' has entries for 'XRP', not values of symbol"],
        ),
        ('m = { by = "venue", values = { x = 1 } }', ["keyed by 'venue', a string feature"]),
        ('m = { by = "nope", values = { x = 1 } }', ["keyed by 'nope', not a declared feature"]),
    ],
)
def test_completeness_is_checked_at_build_time(
    make_bundle: BundleFactory, params: str, messages: list[str]
) -> None:
    result = build_bundle(
        make_bundle(
            "rule R when spread_bps > 1 then skip_entry\n", features=FEATURES, params=params
        )
    )
    got = [d.message for d in result.diagnostics]
    assert [d.code for d in result.diagnostics] == ["E306"] * len(messages)
    for m, g in zip(messages, got, strict=True):
        assert m in g


@pytest.mark.parametrize(
    ("rule", "code", "fragment"),
    [
        ("spread_bps > max_spread", "E221", "is read with a key"),
        (
            "spread_bps > max_spread[venue]",
            "E221",
            "keyed by the enum symbol, found venue (string)",
        ),
        ("has(tier) and spread_bps > max_spread[tier]", "E221", "no entry for 'a', 'b'"),
        ("spread_bps > nope[symbol]", "E105", "'nope' is not a param"),
        ("spread_bps > tier_cut[tier]", "E210", "without a has(tier) guard"),
        ("spread_bps > tier_cut[symbol] * 2", "E221", "no entry for 'BTCUSDT'"),
    ],
)
def test_misuse(make_bundle: BundleFactory, rule: str, code: str, fragment: str) -> None:
    result = build_bundle(
        make_bundle(f"rule R when {rule} then skip_entry\n", features=FEATURES, params=PARAMS)
    )
    assert [d.code for d in result.diagnostics] == [code]
    assert fragment in result.diagnostics[0].message


def test_units_of_a_table(make_bundle: BundleFactory) -> None:
    params = PARAMS.replace('unit = "bps"', 'unit = "fraction"')
    result = build_bundle(
        make_bundle(
            "rule R when spread_bps > max_spread[symbol] then skip_entry\n",
            features=FEATURES,
            params=params,
        )
    )
    assert [d.code for d in result.diagnostics] == ["E218"]
    assert result.diagnostics[0].hint == "convert with to_bps(max_spread[symbol])"


def test_formatter_round_trips_a_lookup() -> None:
    text = "rule R\n  when spread_bps > max_spread[symbol] * 2\n  then skip_entry\n"
    assert format_module(parse_text(text)) == text
