"""Units: declared on features and params, inferred through arithmetic, checked at build time only."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from dsl import build_bundle, interpret
from dsl.units import LITERAL, UNKNOWN, parse_unit, unify
from tests.conftest import BundleFactory

ROOT = Path(__file__).resolve().parents[2]

FEATURES = """\
spread_bps = { type = "number", unit = "bps" }
funding_next = { type = "number", unit = "per_8h" }
mid = { type = "number", unit = "USDT/base" }
atr = { type = "number", unit = "USDT/base" }
depth = { type = "number", unit = "USDT" }
ret = { type = "number", unit = "fraction" }
ts = { type = "int", unit = "ms" }
raw = "number"
"""
PARAMS = """\
max_spread_ratio = { value = 0.005, unit = "fraction" }
max_bps = { value = 1.5, unit = "bps" }
ticks = { value = [1, 2], unit = "count" }
plain = 2.0
"""
SNAP = {
    "spread_bps": 2.0,
    "funding_next": 0.0004,
    "mid": 60000.0,
    "atr": 300.0,
    "depth": 8000.0,
    "ret": 0.0005,
    "ts": 1_700_000_000_000,
    "raw": 3.0,
}


def errors(make_bundle: BundleFactory, rules: str, **kw: str) -> list[tuple[str, str, str | None]]:
    result = build_bundle(
        make_bundle(rules, features=kw.get("features", FEATURES), params=PARAMS), strict=False
    )
    return [(d.code, d.message, d.hint) for d in result.diagnostics if d.is_error]


def test_the_issues_examples_are_errors_naming_both_sides_and_the_conversion(
    make_bundle: BundleFactory,
) -> None:
    got = errors(make_bundle, "rule R-1 when spread_bps > max_spread_ratio then skip_entry\n")
    assert got == [
        (
            "E218",
            "cannot compare spread_bps (bps) and max_spread_ratio (fraction): the units differ "
            "in rule R-1",
            "convert with to_bps(max_spread_ratio)",
        )
    ]
    got = errors(make_bundle, "rule R-1 when spread_bps > funding_next then skip_entry\n")
    assert got[0][0] == "E218" and "funding_next (per_8h)" in got[0][1]
    assert got[0][2] == "bps and per_8h measure different things: compare like with like"


@pytest.mark.parametrize(
    ("rule", "code", "fragment"),
    [
        ("spread_bps * spread_bps > max_bps", "E218", "(bps^2) and max_bps (bps)"),
        ("spread_bps + ret > 1", "E218", "cannot add spread_bps (bps) and ret (fraction)"),
        ("ret - funding_next > 1", "E218", "cannot subtract"),
        ("max(spread_bps, ret) > 1", "E218", "max() takes values of one unit"),
        ("between(spread_bps, 0, max_spread_ratio)", "E218", "between() takes values"),
        ("clamp(depth, 1, mid) > 1", "E218", "clamp() takes values"),
        ("depth in ticks", "E218", "cannot compare depth (USDT) and ticks (count)"),
        ("log(depth) > 1", "E219", "the argument of log() must be a pure number"),
        ("to_bps(funding_next) > 1", "E219", "to_bps() converts fraction, percent, bps"),
        ("to_bps(raw) > 1", "E219", "a value with no unit"),
        ("to_bps(3) > 1", "E219", "a number literal"),
        ("to_minutes(mid) > 1", "E219", "to_minutes() converts"),
        ("atr / mid > ret * 2 and spread_bps / 1e4 * mid > 0.25 * atr", "E218", "(USDT*bps/base)"),
    ],
)
def test_mismatches(make_bundle: BundleFactory, rule: str, code: str, fragment: str) -> None:
    got = errors(make_bundle, f"rule R-1 when {rule} then skip_entry\n")
    assert [c for c, _, _ in got] == [code], got
    assert fragment in got[0][1], got


def test_a_factor_must_be_a_pure_number(make_bundle: BundleFactory) -> None:
    got = errors(make_bundle, "rule R-1 when ret > 0 then size_mult *= spread_bps\n")
    assert got == [
        (
            "E219",
            "the factor of size_mult must be a pure number, found spread_bps (bps) in rule R-1",
            "convert it with to_fraction(...)",
        )
    ]
    assert errors(make_bundle, "rule R-1 when ret > 0 then size_mult *= atr / mid * 10\n") == []


@pytest.mark.parametrize(
    "rule",
    [
        "spread_bps > 1.5 and spread_bps > max_bps and -spread_bps < 0",  # literals adopt
        "to_bps(max_spread_ratio) < spread_bps",
        "to_fraction(spread_bps) * mid > 0.25 * atr",  # a price against a price
        "atr / mid >= ret",  # a pure number is a fraction
        "sqrt(spread_bps * spread_bps) <= max_bps",  # sqrt halves the unit
        "raw * spread_bps > ret and raw > funding_next",  # no unit: unchecked
        "plain > spread_bps and plain > funding_next",  # a param without a unit: unchecked
        "to_minutes(ts - ts) < 5 and to_per_hour(funding_next) > 0",
        "abs(ret) >= 3 * max_spread_ratio and log(depth / depth) == 0",
    ],
)
def test_agreeing_units_are_accepted(make_bundle: BundleFactory, rule: str) -> None:
    assert errors(make_bundle, f"rule R-1 when {rule} then skip_entry\n") == []


def test_conversions_compute_the_right_values_compiled_and_interpreted(
    make_bundle: BundleFactory,
) -> None:
    rules = (
        "rule A when to_bps(ret) == 5 then size_mult *= 1.1\n"  # 0.0005 -> 5 bps
        "rule B when to_fraction(spread_bps) == 0.0002 then tp_mult *= 1.1\n"
        "rule C when to_per_hour(funding_next) == 0.00005 then sl_mult *= 0.9\n"
        "rule D when to_s(ts) == 1_700_000_000 then size_mult *= 1.2\n"
        "rule E when to_percent(ret) == 0.05 then size_mult *= 1.3\n"
    )
    result = build_bundle(make_bundle(rules, features=FEATURES, params=PARAMS))
    assert result.ok, [d.message for d in result.diagnostics]
    rs = result.ruleset
    assert rs is not None
    assert "(f['spread_bps'] / 10000.0)" in rs.source  # an exact division, not * 1e-4
    out = rs.evaluate(SNAP)
    assert out.fired == ("A", "B", "C", "D", "E")
    assert out == interpret(rs.checked, SNAP, revision=rs.revision)


def test_units_are_build_time_only(make_bundle: BundleFactory) -> None:
    """The same rules with and without unit declarations compile to the same code."""
    rules = (
        "let wide = spread_bps > max_bps\n"
        "rule R-1 when wide and atr / mid >= ret then size_mult *= atr / mid * 10\n"
    )
    with_units = build_bundle(make_bundle(rules, features=FEATURES, params=PARAMS))
    bare_features = re.sub(r', unit = "[^"]*"', "", FEATURES)
    bare_params = "max_bps = 1.5\nmax_spread_ratio = 0.005\n"
    without = build_bundle(make_bundle(rules, features=bare_features, params=bare_params))
    assert with_units.ruleset is not None and without.ruleset is not None
    assert with_units.ruleset.source == without.ruleset.source.replace("/b1/", "/b0/")
    assert "bps" not in with_units.ruleset.source.replace("spread_bps", "").replace("max_bps", "")


def test_unitless_bundles_work_and_warn_only_under_strict(make_bundle: BundleFactory) -> None:
    root = make_bundle(
        "rule R-1 when spread_bps > max_spread then skip_entry\n",
        params="max_spread = 1.5\n",
    )
    assert build_bundle(root).ok and build_bundle(root).diagnostics == ()
    strict = build_bundle(root, strict=True)
    codes = sorted({d.code for d in strict.diagnostics})
    assert codes == ["W302"]
    named = {re.search(r"'(\w+)'", d.message).group(1) for d in strict.diagnostics}  # type: ignore[union-attr]
    assert {"mid", "spread_bps", "trades", "max_spread"} <= named
    assert "symbol" not in named and "halted" not in named  # only numbers have units


@pytest.mark.parametrize(
    ("features", "message"),
    [
        ('x = { type = "number", unit = "parsecs" }', "unknown unit 'parsecs'"),
        ('x = { type = "bool", unit = "bps" }', "a unit is only for number and int features"),
        ('x = { type = "number", unit = "bps*" }', "is not atoms joined by"),
    ],
)
def test_bad_unit_declarations_are_manifest_errors(
    make_bundle: BundleFactory, features: str, message: str
) -> None:
    result = build_bundle(make_bundle("rule R-1 when true then skip_entry\n", features=features))
    assert [d.code for d in result.diagnostics] == ["E303"]
    assert message in result.diagnostics[0].message


def test_every_number_feature_and_param_of_the_default_bundle_has_a_unit() -> None:
    manifest = tomllib.loads((ROOT / "rulesets/default/bundle.toml").read_text())
    for name, spec in manifest["features"].items():
        if spec["type"] in ("number", "int"):
            assert "unit" in spec, name
    for name, value in manifest["params"].items():
        if isinstance(value, int | float) or (
            isinstance(value, list) and value and isinstance(value[0], int | float)
        ):
            raise AssertionError(f"param {name} has no unit")
    result = build_bundle(ROOT / "rulesets/default", strict=True, known_sections=manifest)
    assert result.ok and result.diagnostics == ()


def test_unit_algebra() -> None:
    bps, frac = parse_unit("bps"), parse_unit("fraction")
    assert not bps.same(frac) and bps.same_dims(frac)
    assert parse_unit("1").same(frac) and parse_unit("dimensionless").same(frac)
    assert str(bps * bps) == "bps^2" and (bps / bps).same(frac)
    assert str(parse_unit("USDT/base")) == "USDT/base"
    assert (parse_unit("USDT") / parse_unit("USDT/base")).same(parse_unit("base"))
    assert parse_unit("ms").same_dims(parse_unit("hours"))
    assert unify([LITERAL, bps, LITERAL]) == bps
    assert unify([UNKNOWN, bps]) == UNKNOWN
    assert unify([bps, frac]) is None
