"""The critical vector: a rule file whose *name* held a newline injected Python into the
generated evaluator (the name was written unescaped into a ``#`` comment), and `s3 rules lint`,
`test`, `explain`, `s3 bundle publish` and a hot reload all executed it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dsl import build_bundle
from s3.cli import main as s3_main
from s3.config.bundle import load_dir
from s3.config.reload import BundleDoc, compile_doc
from tests.conftest import SNAPSHOT, BundleFactory

# Run by the code of the old comment: reaches os.system through the subclasses of object.
PAYLOAD = (
    "[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]"
    ".__init__.__globals__['system']('echo PWNED > pwned')"
)
INJECTING_NAME = f"zz\n{PAYLOAD}\ndef _g(f):\n#.rule"


def _bundle(make_bundle: BundleFactory) -> Path:
    root = make_bundle("rule R-1 when mid > 0 then skip_entry\n")
    (root / INJECTING_NAME).write_text("rule X-1 when mid > 0 then skip_entry\n")
    return root


def test_a_newline_in_a_file_name_runs_nothing_and_is_refused(
    make_bundle: BundleFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = build_bundle(_bundle(make_bundle))
    assert not (tmp_path / "pwned").exists(), "the file name was executed"
    assert result.ruleset is None
    assert [d.code for d in result.diagnostics] == ["E312"]
    message = result.diagnostics[0].message
    assert "\n" not in message and "\\n" in message  # the name is shown escaped


@pytest.mark.parametrize(
    "argv",
    [
        ["rules", "lint", "{root}"],
        ["rules", "test", "{root}"],
        ["rules", "explain", "{root}", "--features", json.dumps(SNAPSHOT)],
        ["bundle", "publish", "{root}"],
    ],
    ids=["lint", "test", "explain", "publish"],
)
def test_no_command_runs_the_file_name(
    make_bundle: BundleFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
) -> None:
    root = _bundle(make_bundle)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("S3_SQLITE_PATH", str(tmp_path / "store.db"))
    code = s3_main([str(root) if a == "{root}" else a for a in argv])
    assert not (tmp_path / "pwned").exists(), "the file name was executed"
    assert code != 0
    assert "E312" in capsys.readouterr().out


def test_a_reload_from_the_store_runs_nothing_and_rejects_the_bundle(
    make_bundle: BundleFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from s3.config.bundle import checksum_files

    root = make_bundle("rule R-1 when mid > 0 then skip_entry\n")
    files = {
        "bundle.toml": (root / "bundle.toml").read_text(),
        "main.rule": (root / "main.rule").read_text(),
        INJECTING_NAME: "rule X-1 when mid > 0 then skip_entry\n",
    }
    monkeypatch.chdir(tmp_path)
    doc = BundleDoc("t", 7, checksum_files(files), files)
    snap, reasons = compile_doc(doc)
    assert not (tmp_path / "pwned").exists(), "the file name was executed"
    assert snap is None
    assert any("E312" in r for r in reasons)


def test_without_the_name_check_the_name_still_reaches_code_only_as_a_literal(
    make_bundle: BundleFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The class of the bug, not the instance: with the file-name check switched off, the name
    # is still only ever written into the generated module through repr().
    monkeypatch.setattr("dsl.bundle.bad_char", lambda text: None)
    monkeypatch.setattr("dsl.bundle._SAFE_PART", re.compile(r"(?s).*"))
    monkeypatch.chdir(tmp_path)
    result = build_bundle(_bundle(make_bundle))
    assert not (tmp_path / "pwned").exists(), "the file name was executed"
    assert result.ruleset is not None
    assert result.ruleset.rule_ids == ("R-1", "X-1")
    source = result.ruleset.source
    assert "__subclasses__" in source  # it is there, as a quoted literal in a comment
    for line in source.splitlines():
        if "__subclasses__" in line:
            assert line.startswith("    # 'X-1' at ") and "\\n" in line
    assert result.ruleset.evaluate(SNAPSHOT).vetoes == ("R-1", "X-1")


def test_load_dir_refuses_it_too(make_bundle: BundleFactory) -> None:
    result = load_dir(_bundle(make_bundle))  # (the engine adds that no symbol is configured)
    assert result.snapshot is None
    assert "E312" in {d.code for d in result.diagnostics}
