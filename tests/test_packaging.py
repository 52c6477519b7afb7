"""Packaging and layering: the wheel carries the grammar, and `dsl` never imports `s3`.

The wheel test builds the project, installs the wheel into a fresh virtual environment (its
dependencies come from the package index or pip's cache) and runs the *installed* `s3` on
rulesets/default, then parses one rule with the installed `dsl`.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_dsl_never_imports_s3_and_only_the_parser_imports_lark() -> None:
    for path in sorted((ROOT / "dsl").glob("*.py")):
        mods = _imports(path)
        assert not any(m == "s3" or m.startswith("s3.") for m in mods), path.name
        if path.name != "parser.py":
            assert not any(m == "lark" or m.startswith("lark.") for m in mods), path.name


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    (whl,) = out.glob("*.whl")
    return whl


def test_wheel_contains_the_grammar(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "dsl/grammar/rules.lark" in names
    assert "s3/cli.py" in names and "dsl/parser.py" in names
    assert not any(n.startswith(("tests/", "rulesets/")) for n in names)
    # typed for the users' mypy; the proprietary notice travels with it
    assert "s3/py.typed" in names and "dsl/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    meta = zipfile.ZipFile(wheel).read(meta_name).decode()
    # the ArangoDB client is an extra (`.[arango]`), not something every install pulls in
    assert "Provides-Extra: arango" in meta
    requires = [
        line for line in meta.splitlines() if line.startswith("Requires-Dist: python-arango")
    ]
    assert requires and all('extra == "arango"' in line for line in requires), requires


def test_installed_wheel_lints_the_default_bundle(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    subprocess.run(
        [
            str(bin_dir / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    # Run from an empty directory so that nothing of the source tree can be imported by accident.
    work = tmp_path / "elsewhere"
    work.mkdir()
    lint = subprocess.run(
        [str(bin_dir / "s3"), "rules", "lint", str(ROOT / "rulesets" / "default")],
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "31 rules" in lint.stdout
    version = subprocess.run(
        [str(bin_dir / "s3"), "--version"], cwd=work, capture_output=True, text=True, check=True
    )
    assert version.stdout.strip() == "s3 0.1.0"
    # installed without the extra: asking for ArangoDB says what to install, no traceback
    arango = subprocess.run(
        [str(bin_dir / "s3"), "bundle", "list"],
        cwd=work,
        env={"PATH": "/usr/bin:/bin", "S3_DB_ARANGO_URI": "http://127.0.0.1:1/s3"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert arango.returncode == 2, arango.stdout + arango.stderr
    assert "pip install 's3-strategy-engine[arango]'" in arango.stderr
    assert "Traceback" not in arango.stderr
    probe = subprocess.run(
        [
            str(bin_dir / "python"),
            "-c",
            "import dsl, s3; from dsl import parse_text; "
            "m = parse_text('rule R-1 when x > 1 then skip_entry'); "
            "print(m.items[0].rule_id, dsl.__file__.startswith(s3.__file__.rsplit('/s3/', 1)[0]))",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
    )
    assert probe.stdout.split() == ["R-1", "True"], probe.stderr
    assert str(ROOT) not in probe.stdout
