"""Case files that survive a new rule: a per-file `[base]`, partial expectations, `--update`
(comments and order kept), `--run`, `--junit`, and a typo'd key that stops only its case."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from s3.cli import main

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "rulesets" / "default"

CASES = """\
# Funding cases. The base is a calm BTCUSDT long.
[base]
symbol = "BTCUSDT"
side = "BUY"
mid = 60000.0
spread_bps = 0.0167
depth_top1_usdt = 20000.0
funding_next = 0.00005
ret_1m = 0.0
vol_1m_bps = 0.8
imbalance_top1 = 0.5
trade_flow_1m = 0.0
atr = 600.0
regime = "range"

[[case]]
name = "rich funding vetoes the long"
features = { funding_next = 0.00035 }
[case.expect]
decision = "skip"  # the point of the case
reason = "RULE.SKIP:R-040"

[[case]]
name = "elevated funding trims the long"
features = { funding_next = 0.0002 }
unset = ["atr"]
[case.expect]
# R-042: size 0.8, tp 0.9; no ATR: R-065 0.8
fired_includes = ["R-042"]
fired_excludes = ["R-040"]
size_mult = 0.64
tp_mult = 0.9   # R-042's
sl_mult = 1.0

[[case]]
name = "near the clamp, to a tolerance"
features = { funding_next = 0.0002 }
[case.expect]
size_mult = 0.79
tolerance = 0.02
"""


ELEVATED = 'name = "elevated'


def line_of(text: str, start: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith(start))


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    root = tmp_path / "b"
    shutil.copytree(DEFAULT, root, ignore=shutil.ignore_patterns("cases", "examples"))
    (root / "cases").mkdir()
    (root / "cases" / "funding.toml").write_text(CASES)
    return root


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out + out.err


def test_base_unset_and_partial_expectations(
    bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(capsys, "rules", "test", str(bundle))
    assert code == 0, out
    assert out.startswith("3 cases: 3 passed, 0 failed\n"), out


def test_a_changed_rule_fails_readably_and_update_rewrites_in_place(
    bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rule = bundle / "funding.rule"
    rule.write_text(
        rule.read_text()
        .replace("funding_next > funding_rich_long", "funding_next > 0.0001")
        .replace("then size_mult *= 0.8, tp_mult *= 0.9", "then size_mult *= 0.8, tp_mult *= 0.8")
    )
    code, out = run(capsys, "rules", "test", str(bundle))
    assert code == 1
    assert "R-040 fired (fired_excludes); fired ['R-040', 'R-042', 'R-065']" in out, out
    assert "decision 'skip', expected 'pass'" not in out  # not stated: not checked
    assert "     tp_mult 0.8, expected 0.9\n" in out  # an exact expectation, stated
    path = bundle / "cases" / "funding.toml"
    code, out = run(capsys, "rules", "test", str(bundle), "--update")
    assert f"updated {path}: 1 case (elevated funding trims the long)" in out, out
    assert (
        "not updated (a partial expectation states intent; edit it by hand): "
        f"{path}:{line_of(CASES, ELEVATED) - 1}:1 elevated funding trims the long: "
        "fired_excludes"
    ) in out
    text = path.read_text()
    # the failing exact keys took the actual values; comments, order and the rest are as written
    before, after = CASES.splitlines(), text.splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert changed == [("tp_mult = 0.9   # R-042's", "tp_mult = 0.8   # R-042's")], changed
    assert code == 1  # fired_excludes still fails until a person decides


def test_run_selects_cases_and_junit_reports_them(
    bundle: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    report = tmp_path / "out" / "junit.xml"
    code, out = run(
        capsys, "rules", "test", str(bundle), "--run", "*the long", "--junit", str(report)
    )
    assert code == 0 and out.startswith("2 cases: 2 passed"), out
    assert "selected by --run" in out and "never fired" not in out
    code, out = run(capsys, "rules", "test", str(bundle), "--run", "CLAMP")
    assert out.startswith("1 case: 1 passed"), out
    assert run(capsys, "rules", "test", str(bundle), "--run", "nothing-like-it")[0] == 2
    suite = ET.parse(report).getroot().find("testsuite")
    assert suite is not None and suite.get("name") == "funding.toml"
    assert [t.get("name") for t in suite] == [
        "rich funding vetoes the long",
        "elevated funding trims the long",
    ]
    # a failure is a <failure> with every mismatch
    (bundle / "cases" / "funding.toml").write_text(CASES.replace('"RULE.SKIP:R-040"', '"R-040"'))
    run(capsys, "rules", "test", str(bundle), "--junit", str(report))
    failure = ET.parse(report).getroot().find("testsuite/testcase/failure")
    assert failure is not None
    assert failure.get("message") == "reason 'RULE.SKIP:R-040', expected 'R-040'"


def test_a_typod_key_points_at_itself_and_the_other_cases_run(
    bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = bundle / "cases" / "funding.toml"
    text = CASES.replace("tp_mult = 0.9", "tp_mul = 0.9")
    path.write_text(text)
    code, out = run(capsys, "rules", "test", str(bundle))
    assert code == 1
    assert out.splitlines()[:2] == [
        f"{path}:{line_of(text, 'tp_mul')}:1: E307 case.1.expect.tp_mul: unknown key 'tp_mul' in case.expect; "
        "did you mean 'tp_mult'?",
        "2 cases: 2 passed, 0 failed, 1 case file error",
    ], out


def test_unknown_feature_warns_with_did_you_mean_and_fails_under_strict(
    bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = bundle / "cases" / "funding.toml"
    path.write_text(
        CASES.replace(
            "features = { funding_next = 0.00035 }",
            'features = { funding_next = 0.00035, regmie = "trend" }',
        )
    )
    code, out = run(capsys, "rules", "test", str(bundle))
    assert code == 0, out
    assert (
        f"{path}:{line_of(CASES, 'features = { funding_next = 0.00035')}:38: warning: unknown feature 'regmie' (not in the bundle's [features]; "
        "ignored); did you mean 'regime'? (case 'rich funding vetoes the long')"
    ) in out, out
    code, out = run(capsys, "rules", "test", str(bundle), "--strict")
    assert code == 1 and "--strict: unknown feature 'regmie'" in out


def test_default_cases_survive_a_sensible_new_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The default cases state intent: a new rule that trims calm-range longs (it fires on the
    neutral base and on many cases) breaks only the case that says nothing fires on the base
    (it broke 21 of the 57 cases when each pinned its full outcome)."""
    root = tmp_path / "b"
    shutil.copytree(DEFAULT, root)
    with (root / "momentum.rule").open("a") as f:
        f.write(
            '\nrule R-099 "trim longs in a calm range"\n'
            '  when is_long and has(regime) and regime == "range" and vol_1m_bps < 1.0\n'
            "  then size_mult *= 0.95\n"
        )
    code, out = run(capsys, "rules", "test", str(root))
    assert code == 1
    assert [line for line in out.splitlines() if line.startswith("FAIL")] == [
        f"FAIL {root}/cases/edges.toml:27:1 neutral snapshot: no rule fires"
    ], out
    assert "57 cases: 56 passed, 1 failed" in out
