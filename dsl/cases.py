"""Case files: feature snapshots with the L1 outcome a rule author expects, for `s3 rules test`.

A case file is TOML: an optional `[base]` table (the snapshot every case of the file starts
from) and `[[case]]` tables, each with a `name`, the `features` that differ from the base (and
`unset`, base features it drops), and an `expect` table whose keys are all optional:

- exact: `fired`, `veto`, `faults`, `size_mult`/`tp_mult`/`sl_mult` (to `tolerance`, absolute,
  when given; else a relative 1e-9);
- partial: `fired_includes`, `fired_excludes`, `decision` (`"skip"`: a rule vetoed, `"pass"`:
  none did), `reason` (`"RULE.SKIP:R-040"`, as `/decide` reports a rule veto).

A case whose shape is wrong (a typo'd key) is an E307 diagnostic pointing at the key, with a
did-you-mean; the file's other cases still load. `update_files` rewrites the failing expectations
of cases in place (comments, order and layout kept). Imports nothing outside `dsl` (and tomlkit).
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dsl.compiler import CompiledRuleset
from dsl.errors import Diagnostic
from dsl.runtime import Outcome
from dsl.schema import OUTPUTS
from dsl.source import Span
from dsl.suggest import did_you_mean

REL_TOL = 1e-9


class _Expect(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    fired: list[str] | None = None
    fired_includes: list[str] | None = None
    fired_excludes: list[str] | None = None
    veto: str | bool | None = None
    decision: Literal["skip", "pass"] | None = None
    reason: str | None = None
    size_mult: Annotated[float, Field(gt=0)] | None = None
    tp_mult: Annotated[float, Field(gt=0)] | None = None
    sl_mult: Annotated[float, Field(gt=0)] | None = None
    tolerance: Annotated[float, Field(ge=0)] | None = None
    faults: list[str] | None = None


class _Case(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1)]
    features: dict[str, Any] = {}
    unset: list[str] = []
    expect: _Expect = _Expect()


EXPECT_KEYS = tuple(_Expect.model_fields)
CASE_KEYS = tuple(_Case.model_fields)
FILE_KEYS = ("base", "case")


@dataclass(frozen=True)
class Case:
    name: str
    features: dict[str, Any]
    expect: _Expect
    where: Span
    path: Path | None = None
    index: int = 0
    """The case's position among the file's `[[case]]` tables (for `update_files`)."""
    own_features: tuple[str, ...] = ()
    """The feature keys the case states itself (not inherited from `[base]`)."""
    key_spans: dict[str, Span] = field(default_factory=dict)
    """Where each feature key is written (its case's, else the `[base]` table's)."""

    @property
    def label(self) -> str:
        return f"{Path(self.where.path).name}: {self.name}"


@dataclass(frozen=True)
class CaseResult:
    case: Case
    outcome: Outcome | None
    failures: tuple[str, ...] = field(default=())
    warnings: tuple[str, ...] = field(default=())
    wrong: tuple[str, ...] = field(default=())
    """The `expect` keys whose check failed (what `update_files` rewrites)."""

    @property
    def passed(self) -> bool:
        return not self.failures


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _key_span(shown: str, text: str, key: str, start: int, end: int, fallback: int) -> Span:
    """Where ``key = ...`` first appears between offsets ``start`` and ``end`` of ``text``."""
    m = re.compile(rf"(?m)(^|[{{,\s])(\"?){re.escape(key)}\2\s*=").search(text, start, end)
    if m is None:
        return Span(shown, fallback, 1, fallback, 2)
    at = m.start() + len(m.group(1))
    line = _line_of(text, at)
    col = at - (text.rfind("\n", 0, at) + 1) + 1
    return Span(shown, line, col, line, col + len(key))


def _shape_diag(
    err: Any, shown: str, text: str, start: int, end: int, line: int, prefix: str
) -> Diagnostic:
    loc = [str(p) for p in err["loc"]]
    where = ".".join([prefix, *loc]) if prefix else ".".join(loc)
    if err["type"] == "extra_forbidden":
        key = loc[-1]
        table = ".".join(["case", *loc[:-1]]) if prefix.startswith("case") else "the file"
        known = {"expect": EXPECT_KEYS}.get(loc[-2] if len(loc) > 1 else "", CASE_KEYS)
        hint = did_you_mean(key, known)
        msg = f"{where}: unknown key '{key}' in {table}" + (f"; {hint}" if hint else "")
        if not hint:
            msg += f" (known: {', '.join(known)})"
        return Diagnostic("E307", msg, _key_span(shown, text, key, start, end, line))
    msg = err["msg"][0].lower() + err["msg"][1:]
    span = (
        _key_span(shown, text, loc[-1], start, end, line)
        if loc and err["type"] != "missing"
        else Span(shown, line, 1, line, 2)
    )
    return Diagnostic("E307", f"{where}: {msg}", span)


def load_cases(
    paths: Sequence[Path], display: dict[Path, str] | None = None
) -> tuple[list[Case], list[Diagnostic]]:
    """Read case files. Invalid TOML is an E307 for the whole file; a case of the wrong shape
    is an E307 at its key, and the file's other cases still load."""
    cases: list[Case] = []
    diags: list[Diagnostic] = []
    for path in paths:
        shown = (display or {}).get(path, str(path))
        text = path.read_bytes().decode("utf-8", errors="replace")
        starts = [m.start() for m in re.finditer(r"^[ \t]*\[\[case\]\]", text, re.M)]
        try:
            raw = tomllib.loads(text)
        except ValueError as exc:  # TOMLDecodeError, or an integer too long to convert
            m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
            line, col = (int(m.group(1)), int(m.group(2))) if m else (1, 1)
            msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc)).lower()
            span = Span(shown, line, col, line, col + 1)
            diags.append(Diagnostic("E307", f"invalid TOML in case file: {msg}", span))
            continue
        head_end = starts[0] if starts else len(text)
        for key in raw:
            if key not in FILE_KEYS:
                hint = did_you_mean(key, FILE_KEYS)
                diags.append(
                    Diagnostic(
                        "E307",
                        f"unknown key '{key}' in the file"
                        + (f"; {hint}" if hint else " (known: [base], [[case]])"),
                        _key_span(shown, text, key, 0, len(text), 1)
                        if not isinstance(raw[key], dict)
                        else _table_span(shown, text, key),
                    )
                )
        base = raw.get("base", {})
        if not isinstance(base, dict):
            diags.append(
                Diagnostic(
                    "E307",
                    "base: expected a table of feature values ([base])",
                    _key_span(shown, text, "base", 0, head_end, 1),
                )
            )
            continue
        listed = raw.get("case", [])
        if not isinstance(listed, list):
            diags.append(
                Diagnostic("E307", "case: expected [[case]] tables", Span(shown, 1, 1, 1, 2))
            )
            continue
        for i, c in enumerate(listed):
            start = starts[i] if i < len(starts) else 0
            end = starts[i + 1] if i + 1 < len(starts) else len(text)
            line = _line_of(text, start) if i < len(starts) else 1
            try:
                model = _Case.model_validate(c)
            except ValidationError as exc:
                for err in exc.errors(include_url=False):
                    diags.append(_shape_diag(err, shown, text, start, end, line, f"case.{i}"))
                continue
            features = {**base, **model.features}
            for k in model.unset:
                features.pop(k, None)
            spans = {k: _key_span(shown, text, k, 0, head_end, line) for k in base}
            spans |= {k: _key_span(shown, text, k, start, end, line) for k in model.features}
            cases.append(
                Case(
                    model.name,
                    features,
                    model.expect,
                    Span(shown, line, 1, line, 9),
                    path,
                    i,
                    tuple(model.features),
                    spans,
                )
            )
    return cases, diags


def _table_span(shown: str, text: str, key: str) -> Span:
    m = re.search(rf"(?m)^[ \t]*\[{re.escape(key)}\]", text)
    if m is None:
        return Span(shown, 1, 1, 1, 2)
    line = _line_of(text, m.start())
    return Span(shown, line, 1, line, 3 + len(key))


def unknown_features(
    ruleset: CompiledRuleset, keys: Iterable[str], *, ignore: Iterable[str] = ()
) -> list[str]:
    """One warning per key the bundle's schema does not declare, with a did-you-mean."""
    known = set(ruleset.schema.features)
    skip = set(ignore)
    out = []
    for k in keys:
        if k in known or k in skip:
            continue
        hint = did_you_mean(k, known)
        out.append(
            f"unknown feature '{k}' (not in the bundle's [features]; ignored)"
            + (f"; {hint}" if hint else "")
        )
    return out


# Keys a snapshot may carry that are not features (the event's own fields).
NOT_FEATURES = ("ts", "side_hint")


def run_case(ruleset: CompiledRuleset, case: Case, *, strict: bool = False) -> CaseResult:
    """Evaluate one case and compare with what it expects; every mismatch is listed. Unknown
    feature keys are warnings (failures under ``strict``)."""
    warnings = tuple(unknown_features(ruleset, case.features, ignore=NOT_FEATURES))
    features, problems = ruleset.schema.validate(case.features)
    if problems:
        return CaseResult(case, None, tuple(f"{p.code} {p.message}" for p in problems), warnings)
    outcome = ruleset.evaluate(features)
    failures, wrong = check(case.expect, outcome)
    if strict:
        failures = [*failures, *(f"--strict: {w}" for w in warnings)]
    return CaseResult(case, outcome, tuple(failures), warnings, tuple(wrong))


def check(exp: _Expect, outcome: Outcome) -> tuple[list[str], list[str]]:
    """The mismatches between ``exp`` and ``outcome``, and the keys that failed."""
    failures: list[str] = []
    wrong: list[str] = []

    def fail(key: str, why: str) -> None:
        failures.append(why)
        if key not in wrong:
            wrong.append(key)

    fired = list(outcome.fired)
    if exp.fired is not None and fired != exp.fired:
        fail("fired", f"fired {fired}, expected {exp.fired}")
    for rid in exp.fired_includes or ():
        if rid not in fired:
            fail("fired_includes", f"{rid} did not fire (fired_includes); fired {fired}")
    for rid in exp.fired_excludes or ():
        if rid in fired:
            fail("fired_excludes", f"{rid} fired (fired_excludes); fired {fired}")
    if exp.veto is not None:
        if exp.veto is True:
            if outcome.veto is None:
                fail("veto", "no veto, expected one")
        elif outcome.veto != (None if exp.veto is False else exp.veto):
            fail(
                "veto",
                f"veto {outcome.veto!r}, expected {None if exp.veto is False else exp.veto!r}",
            )
    decision = "skip" if outcome.veto else "pass"
    if exp.decision is not None and decision != exp.decision:
        fail("decision", f"decision {decision!r}, expected {exp.decision!r}")
    reason = f"RULE.SKIP:{outcome.veto}" if outcome.veto else "RULE.PASS"
    if exp.reason is not None and reason != exp.reason:
        fail("reason", f"reason {reason!r}, expected {exp.reason!r}")
    for out in OUTPUTS:
        want_v = getattr(exp, out)
        got = outcome.clamped[out]
        if want_v is None:
            continue
        ok = (
            abs(got - want_v) <= exp.tolerance
            if exp.tolerance is not None
            else math.isclose(got, want_v, rel_tol=REL_TOL)
        )
        if not ok:
            tol = f" ± {exp.tolerance:g}" if exp.tolerance is not None else ""
            fail(out, f"{out} {got!r}, expected {want_v!r}{tol}")
    if exp.faults is not None:
        got_faults = [f.rule_id for f in outcome.faults]
        if got_faults != exp.faults:
            fail("faults", f"faults in {got_faults}, expected {exp.faults}")
    return failures, wrong


def case_files(bundle_dir: Path) -> list[Path]:
    return sorted(p for p in (bundle_dir / "cases").glob("*.toml") if p.is_file())


# -- `s3 rules test --update` ----------------------------------------------------------------------
PARTIAL = ("fired_includes", "fired_excludes", "tolerance")


@dataclass
class Updated:
    """What `update_files` did: cases rewritten per file, and keys it left for a person."""

    files: dict[str, list[str]] = field(default_factory=dict)
    by_hand: list[str] = field(default_factory=list)


def _actual(key: str, stated: Any, o: Outcome) -> Any:
    if key == "fired":
        return list(o.fired)
    if key == "faults":
        return [f.rule_id for f in o.faults]
    if key == "veto":
        if stated is True and o.veto is not None:
            return True
        return o.veto if o.veto is not None else False
    if key == "decision":
        return "skip" if o.veto else "pass"
    if key == "reason":
        return f"RULE.SKIP:{o.veto}" if o.veto else "RULE.PASS"
    return float(f"{o.clamped[key]:.12g}")  # a multiplier, without float noise


def update_files(results: Sequence[CaseResult]) -> Updated:
    """Rewrite, in place, each failing exact expectation (`fired`, `veto`, `decision`, `reason`,
    `faults`, multipliers) to the actual outcome, keeping comments, order and layout. Partial
    expectations (`fired_includes`, `fired_excludes`) state intent: they are left for a person
    and listed in `by_hand`."""
    import tomlkit

    done = Updated()
    by_path: dict[Path, list[CaseResult]] = {}
    for r in results:
        if r.outcome is not None and r.wrong and r.case.path is not None:
            by_path.setdefault(r.case.path, []).append(r)
    for path, rs in by_path.items():
        doc = tomlkit.parse(path.read_text(encoding="utf-8"))
        tables = doc["case"]
        for r in rs:
            assert r.outcome is not None
            table = tables[r.case.index]
            expect = table["expect"]
            changed = False
            for key in r.wrong:
                if key in PARTIAL:
                    done.by_hand.append(f"{r.case.where} {r.case.name}: {key}")
                    continue
                old = expect.item(key) if hasattr(expect, "item") else None
                new = tomlkit.item(_actual(key, expect[key], r.outcome))
                if old is not None and hasattr(old, "trivia"):
                    new.trivia.comment = old.trivia.comment
                    new.trivia.comment_ws = old.trivia.comment_ws
                expect[key] = new
                changed = True
            if changed:
                done.files.setdefault(str(path), []).append(r.case.name)
        path.write_text(tomlkit.dumps(doc), encoding="utf-8")
    return done
