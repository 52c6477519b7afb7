"""What a bundle directory may hold: no symbolic links (a link used to be read and its first line
printed by lint), and caps on entries, bytes per file, total bytes and rules, each reported with
a clear diagnostic by lint and by publish, before anything slow runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsl import build_bundle
from dsl.bundle import MAX_BUNDLE_BYTES, MAX_BUNDLE_ENTRIES, MAX_RULES
from dsl.source import MAX_SOURCE_BYTES
from s3.cli import main as s3_main
from s3.config.bundle import write_bundle_files
from tests.conftest import BundleFactory

RULE = "rule R-1 when mid > 0 then skip_entry\n"
SECRET = "SECRET-LINE-4711 must never be read\n"


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "outside" / "secret.rule"
    path.parent.mkdir()
    path.write_text(SECRET)
    return path


def _everything_shown(result: object) -> str:
    texts = result.texts  # type: ignore[attr-defined]
    rendered = "\n".join(d.render(texts) for d in result.diagnostics)  # type: ignore[attr-defined]
    return rendered + "\n".join(texts.values())


def test_a_linked_rule_file_is_refused_unread(
    make_bundle: BundleFactory, secret: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_bundle(RULE)
    (root / "leak.rule").symlink_to(secret)
    result = build_bundle(root)
    assert result.ruleset is None
    assert [d.code for d in result.diagnostics] == ["E313"]
    assert "SECRET" not in _everything_shown(result)
    assert s3_main(["rules", "lint", str(root)]) == 1
    out = capsys.readouterr().out
    assert "E313" in out and "SECRET" not in out


def test_a_linked_directory_and_a_linked_manifest_are_refused(
    make_bundle: BundleFactory, secret: Path
) -> None:
    root = make_bundle(RULE)
    (root / "more").symlink_to(secret.parent, target_is_directory=True)
    result = build_bundle(root)
    assert [d.code for d in result.diagnostics] == ["E313"]
    assert "SECRET" not in _everything_shown(result)
    other = make_bundle(RULE)
    (other / "bundle.toml").rename(other / "real.toml")
    (other / "bundle.toml").symlink_to(other / "real.toml")
    assert [d.code for d in build_bundle(other).diagnostics] == ["E313"]


def test_a_linked_directory_is_not_walked_by_loose_lint(
    tmp_path: Path, secret: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / "a.rule").write_text(RULE)
    (loose / "leak.rule").symlink_to(secret)
    assert s3_main(["rules", "lint", str(loose)]) == 1
    out = capsys.readouterr().out
    assert "E313" in out and "SECRET" not in out


def test_too_many_entries(make_bundle: BundleFactory, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_bundle(RULE)
    notes = root / "notes"
    notes.mkdir()
    for i in range(MAX_BUNDLE_ENTRIES):
        (notes / f"{i}.txt").touch()
    result = build_bundle(root)
    assert [d.code for d in result.diagnostics] == ["E310"]
    assert f"more than {MAX_BUNDLE_ENTRIES} files and directories" in result.diagnostics[0].message
    assert s3_main(["bundle", "publish", str(root)]) == 1
    out = capsys.readouterr().out
    assert "E310" in out and "not published" in out


def test_one_file_too_large_is_read_no_further_than_the_cap(make_bundle: BundleFactory) -> None:
    root = make_bundle(RULE)
    (root / "big.rule").write_bytes(b"#" * (10 * MAX_SOURCE_BYTES))
    result = build_bundle(root)
    assert [d.code for d in result.diagnostics] == ["E107"]
    assert len(result.texts[f"{root}/big.rule"]) == MAX_SOURCE_BYTES + 1


def test_too_many_bytes_in_all(make_bundle: BundleFactory) -> None:
    part = "# padding\n" * (MAX_SOURCE_BYTES // 10 - 1)
    files = {f"p{i}.rule": part for i in range(MAX_BUNDLE_BYTES // len(part) + 1)}
    result = build_bundle(make_bundle({"main.rule": RULE, **files}))
    assert [d.code for d in result.diagnostics] == ["E310"]
    assert "more than the 512 KiB a bundle may hold" in result.diagnostics[0].message
    assert result.texts == {}  # nothing was read


def test_a_manifest_too_large(make_bundle: BundleFactory) -> None:
    root = make_bundle(RULE)
    with (root / "bundle.toml").open("a") as fh:
        fh.write("# padding\n" * (MAX_SOURCE_BYTES // 10 + 1))
    result = build_bundle(root)
    assert [d.code for d in result.diagnostics] == ["E310"]
    assert result.diagnostics[0].message == "bundle.toml is larger than 256 KiB"


def test_too_many_rules(make_bundle: BundleFactory) -> None:
    rules = "".join(f"rule G-{i} when mid > {i} then size_mult *= 1.01\n" for i in range(MAX_RULES))
    ok = build_bundle(make_bundle(rules))
    assert ok.ruleset is not None and len(ok.ruleset.rules) == MAX_RULES
    over = build_bundle(make_bundle(rules + "rule G-X when mid > 1 then skip_entry\n"))
    assert [d.code for d in over.diagnostics] == ["E310"]
    assert over.diagnostics[0].message.endswith(
        f"holds more than {MAX_RULES} rules; a bundle is capped"
    )


def test_a_store_document_over_the_caps_is_not_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="E310"):
        write_bundle_files(tmp_path, {"bundle.toml": "x" * (MAX_BUNDLE_BYTES + 1)})
    with pytest.raises(ValueError, match="E310"):
        write_bundle_files(tmp_path, {f"{i}.rule": "" for i in range(MAX_BUNDLE_ENTRIES + 1)})
    assert list(tmp_path.iterdir()) == []
