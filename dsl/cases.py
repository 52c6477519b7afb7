"""Case files: feature snapshots with the L1 outcome a rule author expects, for `s3 rules test`.

A case file is TOML with `[[case]]` tables (`name`, `features`, and an `expect` table whose keys
are all optional: `fired`, `veto`, `size_mult`, `tp_mult`, `sl_mult`, `faults`). Imports nothing
outside `dsl`.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dsl.compiler import CompiledRuleset
from dsl.errors import Diagnostic
from dsl.runtime import Outcome
from dsl.schema import OUTPUTS
from dsl.source import Span

REL_TOL = 1e-9


class _Expect(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    fired: list[str] | None = None
    veto: str | bool | None = None
    size_mult: Annotated[float, Field(gt=0)] | None = None
    tp_mult: Annotated[float, Field(gt=0)] | None = None
    sl_mult: Annotated[float, Field(gt=0)] | None = None
    faults: list[str] | None = None


class _Case(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1)]
    features: dict[str, Any]
    expect: _Expect = _Expect()


class _CaseFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    case: list[_Case] = []


@dataclass(frozen=True)
class Case:
    name: str
    features: dict[str, Any]
    expect: _Expect
    where: Span


@dataclass(frozen=True)
class CaseResult:
    case: Case
    outcome: Outcome | None
    failures: tuple[str, ...] = field(default=())

    @property
    def passed(self) -> bool:
        return not self.failures


def load_cases(
    paths: Sequence[Path], display: dict[Path, str] | None = None
) -> tuple[list[Case], list[Diagnostic]]:
    """Read case files; a malformed file is an E307 diagnostic, the other files still load."""
    cases: list[Case] = []
    diags: list[Diagnostic] = []
    for path in paths:
        shown = (display or {}).get(path, str(path))
        text = path.read_bytes().decode("utf-8", errors="replace")
        starts = [m.start() for m in re.finditer(r"^[ \t]*\[\[case\]\]", text, re.M)]
        try:
            raw = tomllib.loads(text)
            model = _CaseFile.model_validate(raw)
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                loc = err["loc"]
                where = ".".join(str(p) for p in loc)
                # loc is ("case", index, field, ...): point at that case's [[case]] line.
                line = 1
                index = loc[1] if len(loc) > 1 and loc[0] == "case" else None
                if isinstance(index, int) and index < len(starts):
                    line = text.count("\n", 0, starts[index]) + 1
                msg = err["msg"][0].lower() + err["msg"][1:]
                diags.append(Diagnostic("E307", f"{where}: {msg}", Span(shown, line, 1, line, 2)))
            continue
        except ValueError as exc:  # TOMLDecodeError, or an integer too long to convert
            m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
            line, col = (int(m.group(1)), int(m.group(2))) if m else (1, 1)
            msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc)).lower()
            span = Span(shown, line, col, line, col + 1)
            diags.append(Diagnostic("E307", f"invalid TOML in case file: {msg}", span))
            continue
        for i, c in enumerate(model.case):
            line = text.count("\n", 0, starts[i]) + 1 if i < len(starts) else 1
            cases.append(Case(c.name, dict(c.features), c.expect, Span(shown, line, 1, line, 9)))
    return cases, diags


def run_case(ruleset: CompiledRuleset, case: Case) -> CaseResult:
    """Evaluate one case and compare with what it expects; every mismatch is listed."""
    features, problems = ruleset.schema.validate(case.features)
    if problems:
        return CaseResult(case, None, tuple(f"{p.code} {p.message}" for p in problems))
    outcome = ruleset.evaluate(features)
    exp = case.expect
    failures: list[str] = []
    if exp.fired is not None and list(outcome.fired) != exp.fired:
        failures.append(f"fired {list(outcome.fired)}, expected {exp.fired}")
    if exp.veto is not None:
        want = None if exp.veto is False else exp.veto
        if exp.veto is True:
            if outcome.veto is None:
                failures.append("no veto, expected one")
        elif outcome.veto != want:
            failures.append(f"veto {outcome.veto!r}, expected {want!r}")
    for out in OUTPUTS:
        want_v = getattr(exp, out)
        got = outcome.clamped[out]
        if want_v is not None and not math.isclose(got, want_v, rel_tol=REL_TOL):
            failures.append(f"{out} {got!r}, expected {want_v!r}")
    if exp.faults is not None:
        got_faults = [f.rule_id for f in outcome.faults]
        if got_faults != exp.faults:
            failures.append(f"faults in {got_faults}, expected {exp.faults}")
    return CaseResult(case, outcome, tuple(failures))


def case_files(bundle_dir: Path) -> list[Path]:
    return sorted(p for p in (bundle_dir / "cases").glob("*.toml") if p.is_file())
