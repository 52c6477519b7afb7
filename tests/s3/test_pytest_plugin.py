"""The `s3.testing` pytest plugin in a user's own rules repository: a temporary project with a
bundle, a feature file, the bundle's cases and a tape, tested by a real `pytest` run with syrupy
(registered through the package's `pytest11` entry point, nothing imported by hand)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "rulesets" / "default"

TESTS = """
def test_btc_long(bundle, decide, snapshot):
    assert decide(bundle, "features/btc_long.json") == snapshot


def test_cases(bundle, cases, snapshot):
    assert cases(bundle, "*funding*") == snapshot


def test_tape(bundle, replay, snapshot):
    assert replay(bundle, "tapes/window.jsonl") == snapshot
"""


def pytest_in(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "S3_"))}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_rules_project_snapshots_its_outcomes(tmp_path: Path) -> None:
    project = tmp_path / "my-rules"
    shutil.copytree(DEFAULT, project / "rules", ignore=shutil.ignore_patterns("examples"))
    (project / "features").mkdir()
    example = json.loads((DEFAULT / "examples" / "btc_buy_real.json").read_text())
    (project / "features" / "btc_long.json").write_text(json.dumps(example))
    (project / "tapes").mkdir()
    shutil.copy(
        ROOT / "data" / "tapes" / "real_window_a_40.jsonl", project / "tapes" / "window.jsonl"
    )
    (project / "tests").mkdir()
    (project / "tests" / "test_rules.py").write_text(TESTS)
    (project / "pyproject.toml").write_text('[tool.pytest.ini_options]\ns3_bundle = "rules"\n')

    first = pytest_in(project, "--snapshot-update")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "3 snapshots generated" in first.stdout, first.stdout
    stored = (project / "tests" / "__snapshots__" / "test_rules.ambr").read_text()
    assert "'fired': list([" in stored and "'R-026'" in stored  # the real outcome, readable
    again = pytest_in(project)
    assert again.returncode == 0 and "3 passed" in again.stdout, again.stdout

    # a rule changes: R-026 (fires on this snapshot) trims size 1.05 -> 1.02
    rule = project / "rules" / "momentum.rule"
    rule.write_text(
        rule.read_text().replace(
            "size_mult *= 1.05, tp_mult *= 0.9", "size_mult *= 1.02, tp_mult *= 0.9"
        )
    )
    failed = pytest_in(project)
    assert failed.returncode == 1, failed.stdout
    out = failed.stdout
    assert "test_btc_long" in out and "test_tape" in out
    # syrupy's diff names the field that changed, before and after
    assert "-   'size_mult': 0.756," in out and "+   'size_mult': 0.7344," in out, out[-4000:]
    updated = pytest_in(project, "--snapshot-update")
    assert updated.returncode == 0 and "3 passed" in updated.stdout, updated.stdout
    assert "snapshots updated" in updated.stdout, updated.stdout
    assert (
        "'size_mult': 0.7344,"
        in (project / "tests" / "__snapshots__" / "test_rules.ambr").read_text()
    )
