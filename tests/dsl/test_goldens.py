"""Golden files: every tests/dsl/cases/*.rule is checked against cases/bundle.toml and snapshotted.

The snapshot holds the rendered diagnostics, the generated Python and the outcome on a fixed
snapshot, so any change to messages, codegen or semantics shows up as a reviewed diff
(`pytest --snapshot-update` is deliberate).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import msgspec
import pytest
from syrupy.assertion import SnapshotAssertion

from dsl import build_bundle, interpret
from tests.conftest import SNAPSHOT

CASES = Path(__file__).parent / "cases"
RULE_FILES = sorted(CASES.glob("*.rule"))


def render_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rule_file: Path) -> str:
    root = tmp_path / "golden"
    root.mkdir()
    shutil.copy(CASES / "bundle.toml", root / "bundle.toml")
    shutil.copy(rule_file, root / rule_file.name)
    monkeypatch.chdir(tmp_path)
    result = build_bundle("golden")
    parts = ["== diagnostics"]
    parts += [d.render(result.texts) for d in result.diagnostics] or ["(none)"]
    if result.ruleset is not None:
        rs = result.ruleset
        parts += ["== evaluation order", " ".join(rs.rule_ids), f"cost {rs.cost}"]
        parts += ["== generated source", rs.source]
        outcome = rs.evaluate(SNAPSHOT, trace=True)
        # The oracle agrees with the compiled code on the golden snapshot too.
        assert interpret(rs.checked, SNAPSHOT, revision=rs.revision) == rs.evaluate(SNAPSHOT)
        parts += [
            "== outcome",
            msgspec.json.format(msgspec.json.encode(outcome), indent=1).decode(),
        ]
    return "\n".join(parts) + "\n"


@pytest.mark.parametrize("rule_file", RULE_FILES, ids=[p.stem for p in RULE_FILES])
def test_golden(
    rule_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, snapshot: SnapshotAssertion
) -> None:
    assert render_case(tmp_path, monkeypatch, rule_file) == snapshot


def test_valid_cases_compile_and_invalid_ones_do_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i, rule_file in enumerate(RULE_FILES):
        sub = tmp_path / str(i)
        sub.mkdir()
        text = render_case(sub, monkeypatch, rule_file)
        compiled = "== generated source" in text
        assert compiled == (rule_file.stem.startswith(("ok_", "warnings"))), rule_file.name
