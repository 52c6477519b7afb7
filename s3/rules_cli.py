"""The `s3 rules` subcommands: thin wrappers that call `dsl` and print for people or machines."""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from dsl import BuildResult, Diagnostic, DslError, Source, build_bundle, format_module, parse
from dsl.bundle import MANIFEST, scan_bundle
from dsl.cases import load_cases, run_case
from dsl.errors import sort_and_cap
from dsl.runtime import Outcome
from dsl.schema import OUTPUTS, show
from s3.config.engine import ENGINE_SECTIONS, engine_params


class UsageError(Exception):
    """A command line that names something that does not exist or cannot be read."""


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _bundle_root(path: Path) -> Path | None:
    for p in [path, *path.parents] if path.is_dir() else list(path.parents):
        if (p / MANIFEST).is_file():
            return p
    return None


def _build(path: str, strict: bool = False) -> BuildResult:
    p = Path(path)
    if not p.exists():
        raise UsageError(f"'{path}' does not exist")
    result = build_bundle(path, known_sections=ENGINE_SECTIONS, strict=strict)
    if result.manifest is None or not set(result.manifest.raw) & set(ENGINE_SECTIONS):
        return result  # a rules-only bundle: nothing of the engine's to check
    params, more = engine_params(result.manifest)  # the engine sections are checked by lint too
    if params is not None and params.model.kind == "onnx":  # and the model file against them
        from s3.config.bundle import load_model_file

        more = load_model_file(p, result.manifest, params.model)[2]
    if not more:
        return result
    diags = tuple(sort_and_cap([*result.diagnostics, *more]))
    return BuildResult(None, result.manifest, diags, result.texts)


def _lint_one(path: str, strict: bool = False) -> tuple[list[Diagnostic], dict[str, str], str]:
    """Diagnostics for one PATH: a whole bundle, or a lone .rule file (syntax only without a bundle)."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"'{path}' does not exist")
    root = _bundle_root(p)
    if p.is_dir() and root == p:
        result = _build(path, strict)
        summary = _summary(path, result)
        return list(result.diagnostics), result.texts, summary
    if root is not None:
        result = build_bundle(root, known_sections=ENGINE_SECTIONS, strict=strict)
        target = p.resolve()
        mine = [
            d
            for d in result.diagnostics
            if d.span is None
            or (resolved := Path(d.span.path).resolve()) == target
            or target in resolved.parents
        ]
        return mine, result.texts, f"{path}: checked as part of the bundle in {root}"
    diags: list[Diagnostic] = []
    if p.is_dir():
        scan = scan_bundle(p)  # no links followed, no unsafe names (E312, E313, E310)
        files = scan.rule_files
        diags.extend(scan.diagnostics)
        if not files and not diags:
            raise UsageError(f"'{path}' holds no {MANIFEST} and no .rule files")
    else:
        files = [p]
    texts: dict[str, str] = {}
    for f in files:
        source = Source.from_path(f)
        texts[source.path] = source.text
        try:
            parse(source)
        except DslError as exc:
            diags.extend(exc.diagnostics)
    return diags, texts, f"{path}: no {MANIFEST} found, so only the syntax was checked"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def _summary(path: str, result: BuildResult) -> str:
    shown = [d for d in result.diagnostics if d.code not in ("E100", "W100")]
    errors = sum(d.is_error for d in shown)
    warnings = len(shown) - errors
    more = " (and more not shown)" if len(shown) < len(result.diagnostics) else ""
    if result.ruleset is None:
        return f"{path}: {_plural(errors, 'error')}, {_plural(warnings, 'warning')}{more}"
    rs = result.ruleset
    return (
        f"{path}: bundle {rs.bundle_id} rev {rs.revision}, {len(rs.rules)} rules, "
        f"{len(rs.checked.lets)} lets, {errors} errors, {_plural(warnings, 'warning')}{more}; "
        f"evaluation cost at most {rs.cost} nodes per snapshot"
    )


def lint(args: argparse.Namespace) -> int:
    all_diags: list[Diagnostic] = []
    texts: dict[str, str] = {}
    summaries = []
    for path in args.paths:
        diags, t, summary = _lint_one(path, args.strict)
        all_diags.extend(diags)
        texts.update(t)
        summaries.append(summary)
    all_diags = sort_and_cap(all_diags)
    failed = any(d.is_error for d in all_diags) or (args.strict and bool(all_diags))
    if args.format == "json":
        _out(json.dumps([d.to_json() for d in all_diags], indent=2))
        return 1 if failed else 0
    for d in all_diags:
        _out(d.render(texts))
    for s in summaries:
        _out(s)
    return 1 if failed else 0


def fmt(args: argparse.Namespace) -> int:
    files: list[Path] = []
    for path in args.paths:
        p = Path(path)
        if not p.exists():
            raise UsageError(f"'{path}' does not exist")
        files.extend(sorted(p.rglob("*.rule")) if p.is_dir() else [p])
    changed, broken = [], 0
    for f in files:
        source = Source.from_path(f)
        try:
            module = parse(source)
        except DslError as exc:
            broken += 1
            for d in exc.diagnostics:
                _out(d.render({source.path: source.text}))
            continue
        text = format_module(module)
        if text != source.text:
            changed.append(f)
            if not args.check:
                f.write_text(text, encoding="utf-8")
    verb = "would reformat" if args.check else "reformatted"
    for f in changed:
        _out(f"{verb} {f}")
    _out(
        f"{len(files)} file{'s' * (len(files) != 1)}: {len(changed)} {verb}, {broken} with syntax errors"
    )
    return 1 if broken or (args.check and changed) else 0


def _load_features(spec: str) -> dict[str, Any]:
    text = spec
    if not spec.lstrip().startswith("{"):
        p = Path(spec)
        if not p.is_file():
            raise UsageError(f"--features: '{spec}' is neither a JSON object nor a file")
        text = p.read_text(encoding="utf-8")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"--features: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except ValueError as exc:  # e.g. an integer literal beyond Python's digit limit
        raise UsageError(f"--features: unreadable JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError("--features: expected a JSON object of feature values")
    return value


def _fail_build(result: BuildResult) -> int:
    for d in result.diagnostics:
        _out(d.render(result.texts))
    _out("the bundle has errors (above); nothing was evaluated")
    return 1


def _value(v: Any) -> str:
    if isinstance(v, int) and not isinstance(v, bool):
        return show(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, str):
        return json.dumps(v)
    return str(v)


def explain(args: argparse.Namespace) -> int:
    result = _build(args.bundle)
    features = _load_features(args.features)
    if result.ruleset is None:
        return _fail_build(result)
    rs = result.ruleset
    from s3.unknown_keys import warnings_for

    unknown = warnings_for([features], rs.schema.features)
    for w in unknown:
        print(f"features: {'error' if args.strict else 'warning'}: {w}", file=sys.stderr)
    snapshot, problems = rs.schema.validate(features)
    if problems:
        for p in problems:
            _out(f"features: {p.code} {p.message}")
        return 1
    if unknown and args.strict:
        return 1
    outcome = rs.evaluate(snapshot, trace=True)
    only = set(args.rule or ())
    unknown_rules = only - set(rs.rule_ids)
    if unknown_rules:
        raise UsageError(f"--rule: no rule {', '.join(sorted(unknown_rules))} in the bundle")
    why = explain_why(rs, snapshot, outcome, only)
    if args.format == "json":
        doc = msgspec.to_builtins(outcome)
        if only:
            doc["trace"] = [t for t in doc["trace"] or () if t["rule_id"] in only]
        doc["params"] = {k: v for w in why.values() for k, v in w["params"].items()}
        doc["why"] = why
        _out(json.dumps(doc))
        return 0
    render_outcome(
        rs.bundle_id,
        outcome,
        rs.clamp,
        only=only,
        titles=_titles(result),
        why=why,
        fault_veto=_fault_veto(result, outcome),
    )
    return 0


def _fault_veto(result: BuildResult, outcome: Outcome) -> Any:
    """The faulted veto rule that makes the engine skip (RULE.FAULT), as `decide` does: only
    when no rule vetoed and the bundle's [engine] veto_on_rule_fault is on (the default)."""
    assert result.ruleset is not None and result.manifest is not None
    if outcome.veto is not None:
        return None
    faulted = result.ruleset.faulted_vetoes(outcome)
    if not faulted:
        return None
    params, _ = engine_params(result.manifest)
    on = params.veto_on_rule_fault if params is not None else True
    return faulted[0] if on else None


def explain_why(
    rs: Any, snapshot: dict[str, Any], outcome: Outcome, only: set[str]
) -> dict[str, Any]:
    """Per rule (``only``, else all): the params it reads with their values, every comparison's
    margin, and for a rule that did not fire the smallest single-feature change that fires it."""
    from dsl import whynot

    lets = rs.checked.lets
    fired = set(outcome.fired)
    out: dict[str, Any] = {}
    for rule in rs.checked.rules:
        if only and rule.rule_id not in only:
            continue
        change = (
            None
            if rule.rule_id in fired
            else whynot.nearest_change(rule, snapshot, rs.schema, lets)
        )
        out[rule.rule_id] = {
            "params": whynot.params_of(rule.when, lets),
            "margins": [
                {
                    "text": m.text,
                    "left": m.left,
                    "op": m.op,
                    "right": m.right,
                    "held": m.held,
                    "margin": m.margin,
                    "via": m.via,
                    "shown": m.render(),
                }
                for m in whynot.margins(rule, snapshot, lets)
            ],
            "nearest_change": None
            if change is None
            else {
                "feature": change.feature,
                "from": change.old,
                "to": change.new,
                "relative": change.size,
                "shown": change.render(),
            },
        }
    return out


def _titles(result: BuildResult) -> dict[str, tuple[str | None, int, str]]:
    assert result.ruleset is not None
    return {
        r.rule_id: (r.rule.title, r.rule.priority, str(r.rule.span)) for r in result.ruleset.rules
    }


def render_outcome(
    bundle_id: str,
    o: Outcome,
    clamp: Any,
    *,
    only: set[str],
    titles: dict[str, Any],
    why: dict[str, Any] | None = None,
    fault_veto: Any = None,
) -> None:
    _out(f"bundle {bundle_id} rev {o.revision}")
    if o.veto:
        title = titles[o.veto][0]
        _out(f"decision: skip_entry by {o.veto}" + (f' "{title}"' if title else ""))
    elif fault_veto is not None:
        _out(
            f"decision: skip_entry, RULE.FAULT:{fault_veto.rule_id}: veto rule "
            f"{fault_veto.rule_id} could not be evaluated ({fault_veto.code} "
            f"{fault_veto.message}) and [engine] veto_on_rule_fault is true"
        )
    else:
        _out("decision: no veto")
    _out("fired: " + (", ".join(o.fired) if o.fired else "(none)"))
    for out in OUTPUTS:
        b = clamp.bounds(out)
        note = " (clamped)" if o.raw[out] != o.clamped[out] else ""
        _out(
            f"{out}: {o.clamped[out]:.6g}  product {o.raw[out]:.6g}, bounds [{b.min:g}, {b.max:g}]{note}"
        )
    at = {s.rule_id: s for s in o.trace or () if s.fault is not None}
    for f in o.faults:
        _out(f"fault: {f.rule_id} {f.code} {f.message} ({f.where})")
        if f.rule_id in at:
            step = at[f.rule_id]
            operands = _operands(o.trace or (), step)
            _out(f"  at {step.text} [{step.where}]" + (f": {operands}" if operands else ""))
    _out("")
    _out("trace:")
    fired, faulted = set(o.fired), {f.rule_id: f for f in o.faults}
    why = why or {}
    current = None
    for step in o.trace or ():
        if only and step.rule_id not in only:
            continue
        if step.rule_id != current:
            if current is not None:
                _why_lines(why.get(current))
            current = step.rule_id
            title, priority, where = titles[current]
            if current in faulted:
                state = f"FAULT {faulted[current].code} {faulted[current].message}"
            elif current in fired:
                factors = o.factors.get(current, {})
                state = "FIRED" + (
                    "  " + ", ".join(f"{k} x{v:.6g}" for k, v in factors.items()) if factors else ""
                )
                if current in o.vetoes:
                    state += "  skip_entry"
            else:
                state = "not fired"
            head = (
                current
                + (f' "{title}"' if title else "")
                + (f" priority {priority}" if priority else "")
            )
            _out(f"  {head}  [{where}]  {state}")
        text = _with_params(step.text, why.get(step.rule_id, {}).get("params", {}))
        text = text if len(text) <= 100 else text[:97] + "..."
        value = (
            _value(step.value)
            if step.evaluated
            else f"FAULT {step.fault}"
            if step.fault is not None
            else "(not evaluated)"
        )
        indent = "    " + "  " * step.depth
        _out(f"{indent}{text:<{max(8, 76 - len(indent))}} {value}")
    if current is not None:
        _why_lines(why.get(current))


def _with_params(text: str, params: dict[str, Any]) -> str:
    """`funding_elevated` -> `funding_elevated (0.0001)` for each param the text names."""
    for name, value in params.items():
        text = re.sub(rf"(?<![\w.]){re.escape(name)}(?![\w(])", f"{name} ({_value(value)})", text)
    return text


def _why_lines(w: dict[str, Any] | None) -> None:
    if not w:
        return
    if w["margins"]:
        _out("    margins:")
        for m in w["margins"]:
            via = f"  [via {m['via']}]" if m["via"] else ""
            _out(f"      {m['shown']}{via}")
    change = w["nearest_change"]
    if change is not None:
        _out(f"    would fire with: {change['shown']}")


def _operands(trace: Any, step: Any) -> str:
    """The evaluated clauses right below a faulting one, as ``text = value``."""
    steps = list(trace)
    i = steps.index(step)
    out = []
    for s in steps[i + 1 :]:
        if s.rule_id != step.rule_id or s.depth <= step.depth:
            break
        if s.depth == step.depth + 1 and s.evaluated:
            out.append(f"{s.text} = {_value(s.value)}")
    return ", ".join(out)


TAPE_SUFFIXES = (".jsonl", ".jsonl.gz")


def _is_tape(p: Path) -> bool:
    return p.name.endswith(TAPE_SUFFIXES)


def _test_inputs(args: argparse.Namespace) -> tuple[list[Path], list[Path]]:
    """The case files and the tapes named by ``--cases`` (directories: both kinds inside)."""
    cases: list[Path] = []
    tapes: list[Path] = []
    for spec in args.cases or [str(Path(args.bundle) / "cases")]:
        p = Path(spec)
        if not p.exists():
            raise UsageError(f"'{spec}' does not exist")
        if p.is_dir():
            cases.extend(sorted(p.glob("*.toml")))
            tapes.extend(sorted(x for x in p.iterdir() if x.is_file() and _is_tape(x)))
        else:
            (tapes if _is_tape(p) else cases).append(p)
    return cases, tapes


@dataclass
class TapeRun:
    """One tape replayed by `s3 rules test`: the replay and, when the tape holds the live
    engine's decisions (`s3 record --decisions`), how they compare."""

    path: str
    result: Any
    check: Any
    failures: list[str]

    @property
    def passed(self) -> bool:
        return not self.failures


def _run_tape(path: Path, snap: Any) -> TapeRun:
    from s3.replay.replay import check_live, replay
    from s3.replay.tape import TapeError, load

    try:
        tape = load(path)
    except (TapeError, OSError, EOFError) as exc:
        raise UsageError(f"{path}: {exc}") from None
    result = replay(tape, snap)
    check = check_live(tape, result)
    failures = [
        f"{m.key} {m.path}: live {m.live!r} != replay {m.replay!r}" for m in check.mismatches
    ] + [f"live decision {k} has no replayed decision" for k in check.live_not_replayed]
    return TapeRun(str(path), result, check, failures)


def _tape_line(t: TapeRun) -> str:
    r = t.result
    decided = [o for o in r.outcomes if o.decision is not None]
    opens = sum(1 for o in decided if o.decision.decision == "open")
    errors: dict[str, int] = {}
    for o in r.outcomes:
        if o.decision is None:
            code = (o.error or "?").split(":", 1)[0]
            errors[code] = errors.get(code, 0) + 1
    live = (
        f"; live decisions: {t.check.matched} of {t.check.compared} identical"
        if t.check.compared
        else "; no live decisions on the tape"
    )
    undecided = (
        " (" + ", ".join(f"{n} {code}" for code, n in sorted(errors.items())) + ")"
        if errors
        else ""
    )
    return (
        f"{'ok  ' if t.passed else 'FAIL'} {t.path}: {len(r.outcomes)} events, {opens} open, "
        f"{len(decided) - opens} skip, {len(r.outcomes) - len(decided)} not decided"
        f"{undecided}{live}"
    )


def _snapshot_doc(rs: Any, results: list[Any], tapes: list[TapeRun]) -> dict[str, Any]:
    from s3.replay import output

    doc: dict[str, Any] = {
        "bundle": {"bundle_id": rs.bundle_id, "rev": rs.revision},
        "cases": {
            f"{Path(r.case.where.path).name}: {r.case.name}": {
                "passed": r.passed,
                "failures": list(r.failures),
                "outcome": None if r.outcome is None else _outcome_doc(r.outcome),
            }
            for r in results
        },
        "tapes": {},
    }
    for t in tapes:  # each exactly what `s3 replay TAPE --snapshot` writes
        doc["tapes"][Path(t.path).name] = output.snapshot_data(t.result)
    return doc


def _outcome_doc(o: Outcome) -> dict[str, Any]:
    return {
        "fired": list(o.fired),
        "veto": o.veto,
        "clamped": dict(o.clamped),
        "faults": [f"{f.rule_id} {f.code} {f.message}" for f in o.faults],
    }


def _warn_at(case: Any, why: str) -> str:
    """Where an unknown-feature warning points: the key's line, else the case's."""
    m = re.search(r"unknown feature '([^']+)'", why)
    span = case.key_spans.get(m.group(1)) if m else None
    return str(span or case.where)


def _update(rs: Any, results: list[Any], strict: bool) -> list[Any]:
    """`--update`: rewrite failing expectations in place, then run the cases again."""
    from dsl.cases import update_files

    done = update_files(results)
    for path, names in done.files.items():
        _out(f"updated {path}: {_plural(len(names), 'case')} ({', '.join(names)})")
    for what in done.by_hand:
        _out(f"not updated (a partial expectation states intent; edit it by hand): {what}")
    if not done.files:
        return results
    again, _ = load_cases(sorted({r.case.path for r in results if r.case.path is not None}))
    by_key = {(c.path, c.index): c for c in again}
    return [
        run_case(rs, by_key.get((r.case.path, r.case.index), r.case), strict=strict)
        for r in results
    ]


def test(args: argparse.Namespace) -> int:
    result = _build(args.bundle)
    if result.ruleset is None:
        return _fail_build(result)
    rs = result.ruleset
    paths, tape_paths = _test_inputs(args)
    cases, diags = load_cases(paths)
    for d in diags:
        _out(d.render())
    if not cases and not diags and not tape_paths:
        raise UsageError(f"no case files or tapes found for {args.bundle}")
    pattern = getattr(args, "run", None)
    if pattern:
        from s3.case_report import matches

        cases = [c for c in cases if matches(c, pattern)]
        tape_paths = [p for p in tape_paths if pattern.lower() in p.name.lower()]
        if not cases and not tape_paths:
            raise UsageError(f"--run {pattern!r} matches no case")
    strict = bool(getattr(args, "strict", False))
    results = [run_case(rs, c, strict=strict) for c in cases]
    if getattr(args, "update", False):
        results = _update(rs, results, strict)
    tapes: list[TapeRun] = []
    if tape_paths:  # the whole pipeline: the bundle's engine parameters too
        from s3.replay_cli import _bundle

        snap = _bundle(args.bundle)
        if snap is None:
            return 1
        tapes = [_run_tape(p, snap) for p in tape_paths]
    hit = {rid for r in results if r.outcome for rid in (*r.outcome.fired,)}
    for t in tapes:
        hit |= {rid for o in t.result.outcomes if o.decision for rid in o.decision.rules_fired}
    never = [rid for rid in rs.rule_ids if rid not in hit]
    failed = [r for r in results if not r.passed]
    tapes_failed = [t for t in tapes if not t.passed]
    if getattr(args, "junit", None):
        from s3.case_report import junit

        junit(args.junit, results, diags, tapes, bundle=rs.bundle_id)
    if args.snapshot:
        from s3.replay import output

        text = output.snapshot_text(_snapshot_doc(rs, results, tapes))
        if args.snapshot == "-":
            sys.stdout.write(text)
            return 1 if failed or diags or tapes_failed else 0
        Path(args.snapshot).parent.mkdir(parents=True, exist_ok=True)
        Path(args.snapshot).write_text(text, encoding="utf-8")
    if args.format == "json":
        _out(
            json.dumps(
                {
                    "cases": [
                        {
                            "name": r.case.name,
                            "where": str(r.case.where),
                            "passed": r.passed,
                            "failures": list(r.failures),
                            "warnings": list(r.warnings),
                        }
                        for r in results
                    ],
                    "tapes": [
                        {
                            "path": t.path,
                            "passed": t.passed,
                            "events": len(t.result.outcomes),
                            "live_compared": t.check.compared,
                            "live_identical": t.check.matched,
                            "failures": t.failures,
                        }
                        for t in tapes
                    ],
                    "passed": len(results) - len(failed),
                    "failed": len(failed),
                    "tapes_failed": len(tapes_failed),
                    "errors": len(diags),
                    "never_fired": never,
                    "coverage": (len(hit & set(rs.rule_ids)) / len(rs.rule_ids))
                    if rs.rule_ids
                    else 1.0,
                },
                indent=2,
            )
        )
        return 1 if failed or diags or tapes_failed else 0
    for r in results:
        if r.warnings and r.passed:
            for why in r.warnings:
                _out(f"{_warn_at(r.case, why)}: warning: {why} (case {r.case.name!r})")
    for r in failed:
        _out(f"FAIL {r.case.where} {r.case.name}")
        for why in r.failures:
            _out(f"     {why}")
        if not strict:
            for why in r.warnings:
                _out(f"     warning: {why}")
    for t in tapes:
        _out(_tape_line(t))
        for why in t.failures[:20]:
            _out(f"     {why}")
    covered = len(rs.rule_ids) - len(never)
    _out(
        f"{_plural(len(results), 'case')}: {len(results) - len(failed)} passed, {len(failed)} failed"
        + (f", {len(diags)} case file error{'s' * (len(diags) != 1)}" if diags else "")
        + (f"; {len(tapes)} tapes: {len(tapes) - len(tapes_failed)} passed" if tapes else "")
    )
    by = "case or tape event" if tapes else "case"
    selected = " selected by --run" if getattr(args, "run", None) else ""
    _out(f"rule coverage: {covered}/{len(rs.rule_ids)} rules fired by at least one {by}{selected}")
    if never and not selected:
        _out("never fired: " + ", ".join(never))
    if args.snapshot and args.snapshot != "-":
        _out(f"snapshot: {args.snapshot}")
    return 1 if failed or diags or tapes_failed else 0
