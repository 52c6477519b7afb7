"""`s3 rules lint|fmt|explain|test`: output, formats and exit codes (0 ok, 1 findings, 2 usage)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from s3.cli import main
from tests.conftest import SNAPSHOT, BundleFactory

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "rulesets" / "default"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out + out.err


def test_lint_default_bundle_is_clean(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "rules", "lint", str(DEFAULT))
    assert code == 0
    assert out.startswith(
        f"{DEFAULT}: bundle default rev 1, 31 rules, 14 lets, 0 errors, 0 warnings; "
    )


def test_lint_errors_exit_1_with_every_diagnostic(
    make_bundle: BundleFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_bundle(
        "rule R-1 when sprd_bps > 1 then skip_entry\nrule R-2 when mid > then skip_entry\n"
    )
    code, out = run(capsys, "rules", "lint", str(root))
    assert code == 1
    assert out == (
        f"{root}/main.rule:1:15: E201 unknown name 'sprd_bps' in rule R-1\n"
        "    1 | rule R-1 when sprd_bps > 1 then skip_entry\n"
        "      |               ^^^^^^^^ help: did you mean 'spread_bps'?\n"
        f"{root}/main.rule:2:21: E101 expected a value, found 'then' in rule R-2\n"
        "    2 | rule R-2 when mid > then skip_entry\n"
        "      |                     ^^^^\n"
        f"{root}: 2 errors, 0 warnings\n"
    )


def test_lint_json_format(make_bundle: BundleFactory, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_bundle(
        "rule R-1 when sprd_bps > 1 then skip_entry\nrule R-2 when 1 < 2 then skip_entry\n"
    )
    code, out = run(capsys, "rules", "lint", "--format", "json", str(root))
    assert code == 1
    items = json.loads(out)
    assert items == [
        {
            "severity": "error",
            "code": "E201",
            "message": "unknown name 'sprd_bps' in rule R-1",
            "file": f"{root}/main.rule",
            "line": 1,
            "col": 15,
            "end_line": 1,
            "end_col": 23,
            "hint": "did you mean 'spread_bps'?",
        },
    ]


def test_lint_warnings_only_exit_0_unless_strict(
    make_bundle: BundleFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_bundle("rule R-2 when 1 < 2 then skip_entry\n")
    code, out = run(capsys, "rules", "lint", "--format", "json", str(root))
    assert code == 0 and [d["code"] for d in json.loads(out)] == ["W202"]
    assert run(capsys, "rules", "lint", "--strict", str(root))[0] == 1


def test_lint_a_lone_rule_file_checks_syntax(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "x.rule").write_text("rule R-1 when anything > 1 then skip_entry\n")
    code, out = run(capsys, "rules", "lint", str(tmp_path / "x.rule"))
    assert code == 0 and "only the syntax was checked" in out


def test_lint_a_file_inside_a_bundle_reports_that_file(
    make_bundle: BundleFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_bundle(
        {
            "a.rule": "rule R-1 when zz > 1 then skip_entry\n",
            "b.rule": "rule R-2 when yy > 1 then skip_entry\n",
        }
    )
    code, out = run(capsys, "rules", "lint", "--format", "json", str(root / "b.rule"))
    assert code == 1 and [d["message"] for d in json.loads(out)] == [
        "unknown name 'yy' in rule R-2"
    ]


@pytest.mark.parametrize(
    "args",
    [
        ["rules", "lint", "/no/such/path"],
        ["rules", "lint"],
        ["rules", "frobnicate"],
        ["rules", "lint", "--format", "xml", "."],
        ["rules", "explain", str(DEFAULT)],
        ["rules", "explain", str(DEFAULT), "--features", "{not json"],
        ["rules", "explain", str(DEFAULT), "--features", "[1, 2]"],
        ["rules", "test", "/no/such/bundle"],
    ],
)
def test_usage_errors_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        sys.exit(main(args))
    assert info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_fmt_check_and_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    messy = tmp_path / "m.rule"
    messy.write_text("rule R-1 when mid>1 then skip_entry\n")
    code, out = run(capsys, "rules", "fmt", "--check", str(tmp_path))
    assert code == 1 and f"would reformat {messy}" in out
    assert messy.read_text() == "rule R-1 when mid>1 then skip_entry\n"
    assert run(capsys, "rules", "fmt", str(tmp_path))[0] == 0
    assert messy.read_text() == "rule R-1\n  when mid > 1\n  then skip_entry\n"
    assert run(capsys, "rules", "fmt", "--check", str(messy))[0] == 0


def test_fmt_refuses_broken_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "b.rule").write_text("rule R-1 when mid > then skip_entry\n")
    code, out = run(capsys, "rules", "fmt", str(tmp_path))
    assert code == 1 and "E101" in out
    assert (tmp_path / "b.rule").read_text() == "rule R-1 when mid > then skip_entry\n"


def test_default_bundle_is_formatted(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "rules", "fmt", "--check", str(DEFAULT))
    assert code == 0, out


def test_explain_human_and_json(
    make_bundle: BundleFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_bundle(
        'rule R-1 "wide" when spread_bps > 0.5 then size_mult *= 0.5\nrule R-2 when mid < 0 then skip_entry\n'
    )
    code, out = run(capsys, "rules", "explain", str(root), "--features", json.dumps(SNAPSHOT))
    assert code == 0
    lines = out.splitlines()
    assert lines[:6] == [
        "bundle t rev 7",
        "decision: no veto",
        "fired: R-1",
        "size_mult: 0.5  product 0.5, bounds [0.25, 2]",
        "tp_mult: 1  product 1, bounds [0.5, 2]",
        "sl_mult: 1  product 1, bounds [0.5, 2]",
    ]
    assert any("R-1" in x and "FIRED" in x and "size_mult x0.5" in x for x in lines)
    assert any(x.strip().startswith("R-2") and x.endswith("not fired") for x in lines)
    code, out = run(
        capsys,
        "rules",
        "explain",
        "--format",
        "json",
        str(root),
        "--features",
        json.dumps(SNAPSHOT),
    )
    doc = json.loads(out)
    assert doc["fired"] == ["R-1"] and doc["clamped"]["size_mult"] == 0.5 and len(doc["trace"]) >= 4


def test_explain_reports_bad_features(
    make_bundle: BundleFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_bundle("rule R-1 when mid > 0 then skip_entry\n")
    features = {k: v for k, v in SNAPSHOT.items() if k != "mid"} | {"side": "LONG"}
    code, out = run(capsys, "rules", "explain", str(root), "--features", json.dumps(features))
    assert code == 1
    assert out.splitlines() == [
        "features: E410 required feature 'mid' is missing",
        "features: E411 feature 'side' must be one of BUY, SELL, found 'LONG'",
    ]


def test_rules_test_default_bundle(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "rules", "test", str(DEFAULT))
    assert code == 0
    assert out.splitlines()[-2:] == [
        "57 cases: 57 passed, 0 failed",
        "rule coverage: 31/31 rules fired by at least one case",
    ]


def test_rules_test_reports_failures_and_coverage(
    make_bundle: BundleFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_bundle(
        "rule R-1 when mid > 0 then size_mult *= 1.5\nrule R-2 when mid < 0 then skip_entry\n"
    )
    (root / "cases").mkdir()
    feats = ", ".join(f"{k} = {json.dumps(v)}" for k, v in SNAPSHOT.items())
    (root / "cases" / "c.toml").write_text(
        f'[[case]]\nname = "sized"\nfeatures = {{ {feats} }}\n[case.expect]\nfired = ["R-1"]\nsize_mult = 1.5\n\n'
        f'[[case]]\nname = "wrong"\nfeatures = {{ {feats} }}\n[case.expect]\nveto = "R-2"\nsize_mult = 1.2\n'
    )
    code, out = run(capsys, "rules", "test", str(root))
    assert code == 1
    assert out.splitlines() == [
        f"FAIL {root}/cases/c.toml:8:1 wrong",
        "     veto None, expected 'R-2'",
        "     size_mult 1.5, expected 1.2",
        "2 cases: 1 passed, 1 failed",
        "rule coverage: 1/2 rules fired by at least one case",
        "never fired: R-2",
    ]


def test_rules_test_bad_case_file(
    make_bundle: BundleFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_bundle("rule R-1 when mid > 0 then size_mult *= 1.5\n")
    (root / "cases").mkdir()
    (root / "cases" / "c.toml").write_text('[[case]]\nname = "x"\nfeaturez = {}\n')
    code, out = run(capsys, "rules", "test", str(root))
    assert code == 1 and "E307" in out and "featurez" in out


def test_console_script_is_installed() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "s3.cli", "rules", "lint", str(DEFAULT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
