"""A pytest plugin for rules repositories: snapshot-test rule outcomes with syrupy.

Installed with the package and registered under the `pytest11` entry point, so a repository
that installs `s3-strategy-engine` (and `syrupy`) can write::

    # pyproject.toml: [tool.pytest.ini_options] s3_bundle = "rules"
    def test_btc_long(bundle, decide, snapshot):
        assert decide(bundle, "features/btc_long.json") == snapshot

    def test_cases(bundle, cases, snapshot):
        assert cases(bundle) == snapshot

    def test_tape(bundle, replay, snapshot):
        assert replay(bundle, "tapes/window.jsonl.gz") == snapshot

and review outcome changes with `pytest --snapshot-update` and `git diff`. Every record is made of
plain strings, numbers, lists and dicts, so syrupy's output is stable and a failing test shows the
fields that changed.

Fixtures:

- `bundle`: the bundle at the `s3_bundle` ini option (or `--s3-bundle`), built once per session;
  a bundle that does not compile fails the test with its diagnostics.
- `s3_bundle`: a function `s3_bundle(path)` that builds another bundle.
- `decide`: `decide(bundle, features, *, trace=True)`: the L1 outcome of one snapshot (a dict or
  a .json file) with, per rule in evaluation order, whether it fired and each clause's value.
- `cases`: `cases(bundle, pattern=None)`: the outcome of each case of the bundle's case files.
- `replay`: `replay(bundle, tape)`: one line per tape event through the whole pipeline (gates,
  rules, model, sizing, simulated budgets).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

INI = "s3_bundle"


@dataclass(frozen=True)
class Bundle:
    """A built bundle: its compiled rules (and, for tapes, the engine's snapshot)."""

    path: Path
    ruleset: Any

    @property
    def bundle_id(self) -> str:
        return str(self.ruleset.bundle_id)


def build(path: str | Path) -> Bundle:
    from dsl import build_bundle
    from s3.config.engine import ENGINE_SECTIONS

    p = Path(path)
    if not (p / "bundle.toml").is_file():
        pytest.fail(f"s3: no bundle.toml in {p.resolve()} (set the s3_bundle ini option)")
    result = build_bundle(p, known_sections=ENGINE_SECTIONS)
    if result.ruleset is None:
        shown = "\n".join(d.render(result.texts) for d in result.diagnostics)
        pytest.fail(f"s3: the bundle {p} does not compile:\n{shown}", pytrace=False)
    return Bundle(p, result.ruleset)


def _num(v: Any) -> Any:
    if isinstance(v, float):
        return float(f"{v:.12g}")  # no float noise in snapshots
    return v


def _features(spec: dict[str, Any] | str | Path, root: Path) -> dict[str, Any]:
    if isinstance(spec, dict):
        return dict(spec)
    p = Path(spec)
    if not p.is_absolute() and not p.is_file():
        p = root / p
    value = json.loads(p.read_text(encoding="utf-8"))
    if not isinstance(value, dict):
        pytest.fail(f"s3: {spec} does not hold a JSON object of features")
    return value


def outcome_record(rs: Any, features: dict[str, Any], *, trace: bool = True) -> dict[str, Any]:
    """The L1 outcome as plain data: decision, fired rules, outputs, faults, unknown keys, and
    (with ``trace``) per rule its state and each clause with its value."""
    from s3.unknown_keys import warnings_for

    snapshot, problems = rs.schema.validate(features)
    record: dict[str, Any] = {"unknown_features": warnings_for([features], rs.schema.features)}
    if problems:
        record["problems"] = [f"{p.code} {p.message}" for p in problems]
        return record
    o = rs.evaluate(snapshot, trace=trace)
    record |= {
        "decision": "skip" if o.veto else "pass",
        "veto": o.veto,
        "fired": list(o.fired),
        "size_mult": _num(o.clamped["size_mult"]),
        "tp_mult": _num(o.clamped["tp_mult"]),
        "sl_mult": _num(o.clamped["sl_mult"]),
        "faults": [f"{f.rule_id} {f.code} {f.message}" for f in o.faults],
    }
    if trace:
        fired = set(o.fired)
        rules: dict[str, list[str]] = {}
        for step in o.trace or ():
            lines = rules.setdefault(
                step.rule_id, ["FIRED" if step.rule_id in fired else "not fired"]
            )
            value = json.dumps(_num(step.value)) if step.evaluated else "(not evaluated)"
            lines.append(f"{'  ' * step.depth}{step.text} -> {value}")
        record["rules"] = rules
    return record


def _ini_bundle(config: pytest.Config) -> Path:
    given = config.getoption("s3_bundle") or config.getini(INI) or "."
    return Path(str(config.rootpath)) / str(given)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(INI, "the rules bundle directory the `bundle` fixture builds", default="")
    parser.addoption(
        "--s3-bundle", dest="s3_bundle", default=None, help="the bundle the `bundle` fixture builds"
    )


@pytest.fixture(scope="session")
def bundle(request: pytest.FixtureRequest) -> Bundle:
    """The bundle at the `s3_bundle` ini option (or --s3-bundle), built once."""
    return build(_ini_bundle(request.config))


@pytest.fixture(scope="session")
def s3_bundle() -> Callable[[str | Path], Bundle]:
    """Build another bundle: `s3_bundle("rules/other")`."""
    return build


@pytest.fixture
def decide(request: pytest.FixtureRequest) -> Callable[..., dict[str, Any]]:
    """`decide(bundle, features, *, trace=True)`: one snapshot's L1 outcome record."""
    root = Path(str(request.config.rootpath))

    def run(
        b: Bundle, features: dict[str, Any] | str | Path, *, trace: bool = True
    ) -> dict[str, Any]:
        return outcome_record(b.ruleset, _features(features, root), trace=trace)

    return run


@pytest.fixture
def cases() -> Callable[..., dict[str, Any]]:
    """`cases(bundle, pattern=None)`: each case's outcome record (no trace), by `file: name`,
    with whether it passes its own expectations."""

    def run(b: Bundle, pattern: str | None = None) -> dict[str, Any]:
        from dsl.cases import case_files, load_cases, run_case
        from s3.case_report import matches

        loaded, diags = load_cases(case_files(b.path))
        if diags:
            pytest.fail("s3: case file errors:\n" + "\n".join(d.render() for d in diags))
        out: dict[str, Any] = {}
        for c in loaded:
            if pattern and not matches(c, pattern):
                continue
            record = outcome_record(b.ruleset, c.features, trace=False)
            record["passes_its_expectations"] = list(run_case(b.ruleset, c).failures) or True
            out[c.label] = record
        return out

    return run


@pytest.fixture
def replay(request: pytest.FixtureRequest) -> Callable[..., dict[str, str]]:
    """`replay(bundle, tape)`: per event, `decision reason x size [qty tp sl] [rules]`."""
    root = Path(str(request.config.rootpath))

    def run(b: Bundle, tape: str | Path) -> dict[str, str]:
        from s3.config.bundle import load_dir
        from s3.config.settings import Settings
        from s3.replay import output
        from s3.replay import replay as replay_mod
        from s3.replay.tape import load

        p = Path(tape)
        if not p.is_absolute() and not p.is_file():
            p = root / p
        snap = load_dir(b.path, Settings()).snapshot
        if snap is None:
            pytest.fail(f"s3: the bundle {b.path} does not load with its engine sections")
        return output.compact(replay_mod.replay(load(p), snap))

    return run


__all__ = ["Bundle", "build", "outcome_record"]
