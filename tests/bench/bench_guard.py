"""Benchmark of the hardening of issue 16: old against new, measured in the same run.

Run from the repository root:  python -m tests.bench.bench_guard  [--repeats N] [--quick]

1. Parser error path: the old ``re.search(r"([A-Za-z_]+)\\s*$", text[:offset])`` against the new
   backward scan, on a 40 KB rule file whose error follows a long name; then a whole parse of it.
2. Error recovery: a file with 50 syntax errors after 100 KB of good rules, parsed the old way
   (the whole text again after each error) and the new way (each part about once).
3. The clamp lint: all pairs (the old code, on 1,000 and 2,000 rules: it is quadratic) against the
   linear lint on 2,000 and 20,000 rules.
4. Code generation: `compile(src)` + `exec` (old) against `exec_generated` (ast.parse, allowlist,
   compile of the tree, armed exec) on the default bundle and a 1,000-rule bundle.
5. Evaluation: the evaluator run under `guard.armed()` against the same not armed (what
   `CompiledRuleset.evaluate` does: the tripwire watches generated frames without arming), over
   the default bundle's real snapshots and the 50-rule generated bundle; medians of interleaved
   repeats and their ratio.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import gc
import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import dsl
from dsl import compiler, guard, lints, parser
from dsl.runtime import build_outcome
from dsl.source import Source
from tests.bench import rulegen

ROOT = Path(__file__).resolve().parents[2]


def once(fn: Callable[[], Any]) -> float:
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for i in range(repeats):
        for k in names[i % len(names) :] + names[: i % len(names)]:
            times[k].append(once(fns[k]))
    return {k: statistics.median(v) for k, v in times.items()}


def parser_error_path(repeats: int) -> dict[str, float]:
    text = "rule R-1 when " + "a" * 40_000 + "1 > 0 then skip_entry )\n"
    offset = text.index(")")
    pattern = re.compile(r"([A-Za-z_]+)\s*$")
    old = once(lambda: pattern.search(text[:offset]))
    new = interleaved({"new": lambda: parser._word_before(text, offset)}, repeats)["new"]
    parse = interleaved({"p": lambda: _parse_quiet(text)}, repeats)["p"]
    return {"file_bytes": len(text), "old_regex_s": old, "new_scan_s": new, "new_parse_s": parse}


def _parse_quiet(text: str) -> None:
    with contextlib.suppress(dsl.DslError):
        dsl.parse_text(text)


def _old_recovery(text: str) -> int:
    source = Source("<bench>", text)
    errors = 0
    for _ in range(parser.MAX_SYNTAX_ERRORS):
        try:
            parser._lark().parse(text)
            break
        except (parser.UnexpectedCharacters, parser.UnexpectedToken, parser.UnexpectedEOF) as exc:
            errors += 1
            _, offset = parser._syntax_diagnostic(source, text, exc)
            where = parser._blank_item_at(text, offset)
            if where is None:
                break
            start, end = where
            text = text[:start] + parser._blank(text[start:end]) + text[end:]
    return errors


def error_recovery() -> dict[str, float]:
    good = "".join(
        f"rule R-{i} when mid > {i} and spread_bps < 2 then size_mult *= 1.1\n" for i in range(1500)
    )
    bad = "".join(f"rule B-{i} when mid > > 1 then skip_entry\n" for i in range(50))
    text = good + bad
    return {
        "file_bytes": len(text),
        "old_s": once(lambda: _old_recovery(text)),
        "new_s": once(lambda: _parse_quiet(text)),
    }


def _fake_rules(n: int) -> list[Any]:
    import random
    import types

    from dsl import nodes

    rng = random.Random(3)
    return [
        types.SimpleNamespace(
            rule_id=f"R-{i}",
            scales=(("size_mult", nodes.Number(rng.choice([0.9, 1.1]), "x")),),
            rule=types.SimpleNamespace(id_span=None),
        )
        for i in range(n)
    ]


def _old_clamp(rules: list[Any], clamp: Any) -> int:
    hits = 0
    for out in ("size_mult", "tp_mult", "sl_mult"):
        b = clamp.bounds(out)
        consts = [(r, e.value) for r in rules for t, e in r.scales if t == out]
        for r, c in consts:
            low = high = c
            for x in [x for rr, x in consts if rr is not r]:
                low *= min(x, 1.0)
                high *= max(x, 1.0)
            hits += low > b.max or high < b.min
    return hits


def clamp_lint(quick: bool) -> dict[str, float]:
    from dsl.schema import Bounds, Clamp

    clamp = Clamp(Bounds(0.25, 2.0), Bounds(0.5, 2.0), Bounds(0.5, 1.5))
    out: dict[str, float] = {}
    for n in (1000, 2000):
        rules = _fake_rules(n)
        out[f"old_{n}_s"] = once(lambda rules=rules: _old_clamp(rules, clamp))
    for n in (2000, 20_000):
        rules = _fake_rules(n)
        out[f"new_{n}_s"] = once(lambda rules=rules: list(lints._clamp_hits(rules, clamp)))
    out["old_20000_s_extrapolated"] = out["old_2000_s"] * 100
    return out


def _old_exec(src: str, name: str, filename: str) -> Any:
    namespace = compiler._namespace()
    exec(compile(src, filename, "exec"), namespace)
    return namespace[name]


def codegen(repeats: int, big_root: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    for label, root in (("default", ROOT / "rulesets" / "default"), ("rules1000", big_root)):
        rs = dsl.build_bundle(root).ruleset
        assert rs is not None
        src = rs.source
        t = interleaved(
            {
                "old": lambda src=src: _old_exec(src, "_evaluate", "<bundle bench rev 1>"),
                "new": lambda src=src: compiler.exec_generated(
                    src, "_evaluate", ("f",), "<bundle bench rev 1>"
                ),
                "verify": lambda src=src: guard.verify(
                    ast.parse(src), "_evaluate", ("f",), compiler._HELPER_NAMES
                ),
            },
            repeats,
        )
        out[f"{label}_source_lines"] = src.count("\n")
        out[f"{label}_old_ms"] = t["old"] * 1e3
        out[f"{label}_new_ms"] = t["new"] * 1e3
        out[f"{label}_parse_and_verify_ms"] = t["verify"] * 1e3
        build = interleaved({"b": lambda root=root: dsl.build_bundle(root)}, max(3, repeats // 3))
        out[f"{label}_whole_build_ms"] = build["b"] * 1e3
    return out


def evaluation(repeats: int) -> dict[str, float]:
    out: dict[str, float] = {}
    rs = dsl.build_bundle(ROOT / "rulesets" / "default").ruleset
    assert rs is not None
    lines = (ROOT / "data" / "samples" / "features_real.jsonl").read_text().splitlines()
    snaps = []
    for i, line in enumerate(lines[:2000]):
        raw = {**json.loads(line), "side": ("BUY", "SELL")[i % 2]}
        snap, problems = rs.schema.validate(
            {k: v for k, v in raw.items() if k in rs.schema.features}
        )
        if not problems:
            snaps.append(snap)
    gen_rules = rulegen.generate_rules(50, 1)
    tmp = Path(tempfile.mkdtemp())
    gen_rs = dsl.build_bundle(rulegen.write_bundle(tmp / "b50", gen_rules, seed=1)).ruleset
    assert gen_rs is not None
    gen_snaps = []
    for raw in rulegen.snapshots(5000, 2):
        snap, problems = gen_rs.schema.validate(raw)
        if not problems:
            gen_snaps.append(snap)
    for label, r, ss in (("default", rs, snaps), ("generated50", gen_rs, gen_snaps)):
        assert ss, label

        def armed(r: Any = r, ss: list[Any] = ss) -> None:
            for s in ss:
                with guard.armed():
                    raw = r.run(s)
                build_outcome(raw, r.infos, r.clamp, r.revision)

        def unarmed(r: Any = r, ss: list[Any] = ss) -> None:
            for s in ss:
                r.evaluate(s)

        t = interleaved({"armed": armed, "unarmed": unarmed}, repeats)
        out[f"{label}_snapshots"] = len(ss)
        out[f"{label}_armed_us_per_eval"] = t["armed"] / len(ss) * 1e6
        out[f"{label}_unarmed_us_per_eval"] = t["unarmed"] / len(ss) * 1e6
        out[f"{label}_ratio"] = t["armed"] / t["unarmed"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    dsl.parse_text("rule R-0 when mid > 0 then skip_entry")  # build the parser once
    tmp = Path(tempfile.mkdtemp())
    big = rulegen.write_bundle(tmp / "b1000", rulegen.generate_rules(1000, 3), seed=3, per_file=20)
    sections: dict[str, Callable[[], dict[str, float]]] = {
        "evaluation": lambda: evaluation(args.repeats),
        "codegen": lambda: codegen(args.repeats, big),
        "parser_error_path": lambda: parser_error_path(args.repeats),
        "error_recovery_50_errors": error_recovery,
        "clamp_lint": lambda: clamp_lint(args.quick),
    }
    for section, run in sections.items():
        print(section, flush=True)
        for k, v in run().items():
            print(f"  {k:36s} {v:12.6g}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
