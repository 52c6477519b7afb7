"""Time functions: hour_utc, minute_of_day_utc, weekday_utc of a timestamp, and between_wrap."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsl import build_bundle, interpret
from dsl.runtime import between_wrap, hour_utc, minute_of_day_utc, weekday_utc
from tests.conftest import BundleFactory

FEATURES = """\
ts = { type = "int", unit = "ms" }
ts_s = { type = "number", unit = "s" }
next_funding_ms = { type = "int", unit = "ms" }
raw = "number"
"""


@settings(max_examples=300, deadline=None)
@given(st.integers(-(2**40), 2**43))
def test_helpers_agree_with_datetime(ms: int) -> None:
    when = datetime.fromtimestamp(ms / 1000, UTC)
    assert hour_utc(float(ms)) == when.hour
    assert minute_of_day_utc(float(ms)) == when.hour * 60 + when.minute
    assert weekday_utc(float(ms)) == when.weekday()


@pytest.mark.parametrize(
    ("x", "lo", "hi", "expected"),
    [
        (23, 22, 2, True),
        (1, 22, 2, True),
        (2, 22, 2, True),
        (12, 22, 2, False),
        (5, 2, 8, True),
        (9, 2, 8, False),
        (22, 22, 22, True),
    ],
)
def test_between_wrap(x: int, lo: int, hi: int, expected: bool) -> None:
    assert between_wrap(x, lo, hi) is expected


def test_rules_over_time(make_bundle: BundleFactory) -> None:
    rules = (
        'rule NIGHT "22:00-02:00 UTC" when between_wrap(hour_utc(ts), 22, 2) then size_mult *= 0.5\n'
        "rule WEEKEND when weekday_utc(ts) >= 5 then skip_entry\n"
        "rule FUNDING_SOON when to_minutes(next_funding_ms - ts) < 5 then skip_entry\n"
        "rule SECONDS when minute_of_day_utc(ts_s) == minute_of_day_utc(ts) then tp_mult *= 1.1\n"
    )
    result = build_bundle(make_bundle(rules, features=FEATURES))
    assert result.ok, [d.message for d in result.diagnostics]
    rs = result.ruleset
    assert rs is not None
    assert (
        "_hour_utc(f['ts'])" in rs.source
        and "_minute_of_day_utc((f['ts_s'] * 1000.0))" in rs.source
    )
    ts = 1_700_000_000_000  # Tuesday 2023-11-14 22:13:20 UTC
    for shift_ms, fired in [
        (0, ("NIGHT", "SECONDS")),
        (4 * 86_400_000, ("NIGHT", "WEEKEND", "SECONDS")),  # Saturday
        (12 * 3_600_000, ("SECONDS",)),  # 10:13 on Wednesday
    ]:
        snap = {
            "ts": ts + shift_ms,
            "ts_s": (ts + shift_ms) / 1000,
            "next_funding_ms": ts + shift_ms + 3_600_000,
            "raw": 0.0,
        }
        features, problems = rs.schema.validate(snap)
        assert problems == []
        out = rs.evaluate(features)
        assert out.fired == fired
        assert out == interpret(rs.checked, features, revision=rs.revision)
    soon = {"ts": ts, "ts_s": ts / 1000, "next_funding_ms": ts + 4 * 60_000, "raw": 0.0}
    assert "FUNDING_SOON" in rs.evaluate(rs.schema.validate(soon)[0]).fired


@pytest.mark.parametrize(
    ("rule", "code", "fragment"),
    [
        (
            "hour_utc(raw) > 1",
            "E219",
            "takes a timestamp in ms or s since the Unix epoch, found raw (no unit)",
        ),
        ("hour_utc(1700000000000) > 1", "E219", "found 1700000000000 (a literal)"),
        ("hour_utc(to_minutes(ts)) > 1", "E219", "(minutes)"),
        (
            "hour_utc(ts) > to_minutes(ts)",
            "E218",
            "hour_utc(ts) (hours) and to_minutes(ts) (minutes)",
        ),
        ("between_wrap(hour_utc(ts), 22, ts)", "E218", "between_wrap() takes values of one unit"),
        ("weekday_utc(ts, 1) > 1", "E203", "weekday_utc() takes 1 argument"),
    ],
)
def test_misuse(make_bundle: BundleFactory, rule: str, code: str, fragment: str) -> None:
    result = build_bundle(make_bundle(f"rule R when {rule} then skip_entry\n", features=FEATURES))
    assert [d.code for d in result.diagnostics] == [code], result.diagnostics
    assert fragment in result.diagnostics[0].message
