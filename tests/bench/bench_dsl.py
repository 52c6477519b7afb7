"""Benchmark of the rule DSL: compiled evaluation against hand-written Python, and build time.

Run from the repository root:  python -m tests.bench.bench_dsl  [--json] [--strict] [--repeats N]

1. A seeded 50-rule bundle (tests/bench/rulegen.py) is written to a temporary directory and built
   with `dsl.build_bundle`; the same rules are rendered as a hand-written Python function ``hand``.
2. 10,000 seeded snapshots are validated with the bundle's schema. Before any timing, ``hand`` and
   `CompiledRuleset.run` must agree exactly on every snapshot (fired, fault indexes, dynamic
   factors, products), and `dsl.interpret` must agree with `CompiledRuleset.evaluate` on a sample.
3. Each repeat times one pass over all snapshots per variant, variants interleaved (rotated order).
   Target: `run` at most 1.3x ``hand`` (median of the per-repeat ratios).
4. A 1,000-rule bundle from the same generator: `dsl.build_bundle` (read, parse, check, lint,
   compile), median of several runs, plus its stages. Target: under 1 s.

Exit status is 0 unless --strict is given and a target is missed (then 1); 2 if verification fails.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # also runnable as `python tests/bench/bench_dsl.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import dsl
from dsl.checker import check
from dsl.compiler import CompiledRuleset, compile_ruleset
from dsl.interpreter import run as interpret_raw
from tests.bench import rulegen

EVAL_TARGET = 1.3  # compiled run / hand-written, at most
BUILD_TARGET_S = 1.0  # verify + compile of a 1,000-rule bundle, under


class VerificationError(AssertionError):
    pass


# -- building ---------------------------------------------------------------------------------------


def build(root: Path) -> CompiledRuleset:
    result = dsl.build_bundle(root)
    errors = [d for d in result.diagnostics if d.is_error]
    if not result.ok or result.ruleset is None:
        raise VerificationError(f"bundle {root} did not build: {errors}")
    return result.ruleset


def _median_ns(fn: Callable[[], Any], runs: int) -> tuple[float, float, Any]:
    times, value = [], None
    for _ in range(runs):
        gc.collect()
        t0 = time.perf_counter_ns()
        value = fn()
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times), min(times), value


def time_build(root: Path, runs: int) -> dict[str, Any]:
    """`build_bundle` end to end, then its stages on their own (load = read + parse)."""
    med, best, result = _median_ns(lambda: dsl.build_bundle(root), runs)
    if not result.ok:
        raise VerificationError(f"bundle {root} did not build")
    rs = result.ruleset
    load_med, _, loaded = _median_ns(lambda: dsl.load_bundle(root), runs)
    m = loaded.manifest

    def do_check() -> Any:
        return check(
            loaded.modules, schema=m.schema, params=m.params, clamp=m.clamp, texts=loaded.texts
        )

    check_med, _, checked = _median_ns(do_check, runs)
    compile_med, _, _ = _median_ns(
        lambda: compile_ruleset(checked, revision=m.rev, bundle_id=m.bundle_id), runs
    )
    return {
        "rules": len(rs.rules),
        "cost": rs.cost,
        "warnings": len(result.diagnostics),
        "source_lines": rs.source.count("\n"),
        "build_median_s": med / 1e9,
        "build_min_s": best / 1e9,
        "stage_load_parse_s": load_med / 1e9,
        "stage_check_lint_s": check_med / 1e9,
        "stage_compile_s": compile_med / 1e9,
    }


def cold_build(root: Path) -> float | None:
    """A fresh interpreter: import dsl, build the Lark parser, build the bundle (informational)."""
    code = (
        "import time; t0 = time.perf_counter(); import dsl; "
        f"r = dsl.build_bundle({str(root)!r}); assert r.ok; print(time.perf_counter() - t0)"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
        )
        return float(out.stdout.strip())
    except (subprocess.SubprocessError, ValueError):
        return None


# -- verification -----------------------------------------------------------------------------------


def verify(
    hand: Callable[[Any], Any], rs: CompiledRuleset, snaps: list[dict[str, Any]], sample_every: int
) -> dict[str, Any]:
    """``hand`` and ``rs.run`` agree exactly on every snapshot; the interpreter on every k-th one."""
    fired_total = faults_total = vetoed = dyn_total = 0
    ever_fired: set[int] = set()
    for k, s in enumerate(snaps):
        h, c = hand(s), rs.run(s)
        if (
            h[0] != c[0]
            or [i for i, _ in h[1]] != [i for i, _ in c[1]]
            or h[2] != c[2]
            or h[3:] != c[3:]
        ):
            raise VerificationError(
                f"snapshot {k}: hand-written and compiled disagree\n  hand:     {_show(h)}\n  compiled: {_show(c)}\n"
                f"  snapshot: {s}"
            )
        fired_total += len(c[0])
        faults_total += len(c[1])
        dyn_total += len(c[2])
        ever_fired.update(c[0])
        vetoed += any(rs.infos[i].skip for i in c[0])
        if k % sample_every == 0:
            raw = interpret_raw(rs.checked, s)
            if raw[0] != c[0] or [i for i, _ in raw[1]] != [i for i, _ in c[1]] or raw[2:] != c[2:]:
                raise VerificationError(
                    f"snapshot {k}: interpreter and compiled disagree: {_show(raw)} vs {_show(c)}"
                )
            if dsl.interpret(rs.checked, s, revision=rs.revision) != rs.evaluate(s):
                raise VerificationError(
                    f"snapshot {k}: dsl.interpret and evaluate() give different outcomes"
                )
    n = len(snaps)
    return {
        "snapshots": n,
        "fired_per_snapshot": fired_total / n,
        "faults_per_snapshot": faults_total / n,
        "dynamic_factors_per_snapshot": dyn_total / n,
        "vetoed_share": vetoed / n,
        "rules_never_fired": len(rs.rules) - len(ever_fired),
        "interpreter_sample": len(range(0, n, sample_every)),
    }


def _show(raw: Any) -> str:
    fired, faults, dyn, *products = raw
    return f"fired={fired} faults={[(i, type(e).__name__) for i, e in faults]} dyn={dyn} products={products}"


# -- timing -----------------------------------------------------------------------------------------


def _one_pass(fn: Callable[[Any], Any], snaps: list[dict[str, Any]]) -> int:
    t0 = time.perf_counter_ns()
    for s in snaps:
        fn(s)
    return time.perf_counter_ns() - t0


def time_eval(
    variants: dict[str, Callable[[Any], Any]], snaps: list[dict[str, Any]], repeats: int
) -> dict[str, list[int]]:
    """Per variant, the ns of each repeat's pass; the order of variants rotates every repeat."""
    names = list(variants)
    times: dict[str, list[int]] = {name: [] for name in names}
    for name in names:  # warm-up: specialise the bytecode, fill caches
        _one_pass(variants[name], snaps[:2000])
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for rep in range(repeats):
            for name in names[rep % len(names) :] + names[: rep % len(names)]:
                times[name].append(_one_pass(variants[name], snaps))
    finally:
        if was_enabled:
            gc.enable()
    return times


def _noop(f: Any) -> None:
    return None


# -- main -------------------------------------------------------------------------------------------


def run_benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    fig: dict[str, Any] = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "machine": platform.machine(),
        "seed": args.seed,
    }

    # 1. the 50-rule bundle and its hand-written twin
    rules = rulegen.generate_rules(args.rules, args.seed)
    root = rulegen.write_bundle(workdir / f"bundle{args.rules}", rules, seed=args.seed, per_file=20)
    rs = build(root)
    if rs.rule_ids != tuple(r.rule_id for r in rulegen.evaluation_order(rules)):
        raise VerificationError("the compiled rule order is not priority desc, then file order")
    hand_src = rulegen.render_hand(rules)
    hand = rulegen.compile_hand(hand_src)
    hand_inline = rulegen.compile_hand(
        rulegen.render_hand(rules, inline_lets=True, name="hand_inline"), "hand_inline"
    )
    if args.dump:
        dump = Path(args.dump)
        dump.mkdir(parents=True, exist_ok=True)
        rulegen.write_bundle(dump / "bundle", rules, seed=args.seed, per_file=20)
        (dump / "hand.py").write_text(hand_src)
        (dump / "compiled.py").write_text(rs.source)

    # 2. snapshots, validated by the schema
    raw_snaps = rulegen.snapshots(args.snapshots, args.seed + 1)
    snaps = []
    for k, raw in enumerate(raw_snaps):
        clean, problems = rs.schema.validate(raw)
        if problems:
            raise VerificationError(f"snapshot {k} does not validate: {problems}")
        snaps.append(clean)
    fig["bundle"] = {
        "rules": len(rs.rules),
        "cost": rs.cost,
        "features": len(rs.schema.features),
        "lets": len(rulegen.LETS),
        "templates": len({r.template for r in rules}),
    }
    fig["verify"] = verify(hand, rs, snaps, sample_every=max(1, len(snaps) // 500))
    verify(hand_inline, rs, snaps[:1000], sample_every=10**9)

    # 3. evaluation timing
    variants: dict[str, Callable[[Any], Any]] = {
        "hand": hand,
        "run": rs.run,
        "evaluate": rs.evaluate,
        "hand_inline_lets": hand_inline,
        "compiled_fn": rs._fast,  # the generated function itself, without the run() wrapper
        "loop_noop": _noop,
    }
    times = time_eval(variants, snaps, args.repeats)
    n = len(snaps)
    ev: dict[str, Any] = {"repeats": args.repeats, "variants": {}}
    for name, ts in times.items():
        ratios = [t / h for t, h in zip(ts, times["hand"], strict=True)]
        ev["variants"][name] = {
            "median_us": statistics.median(ts) / n / 1e3,
            "min_us": min(ts) / n / 1e3,
            "ratio_vs_hand": statistics.median(ratios),
        }
    ev["run_vs_hand"] = ev["variants"]["run"]["ratio_vs_hand"]
    ev["evaluate_vs_hand"] = ev["variants"]["evaluate"]["ratio_vs_hand"]
    ev["run_vs_hand_min"] = ev["variants"]["run"]["min_us"] / ev["variants"]["hand"]["min_us"]
    ev["target"] = EVAL_TARGET
    ev["pass"] = ev["run_vs_hand"] <= EVAL_TARGET
    fig["eval"] = ev

    # 4. the 1,000-rule bundle
    big_rules = rulegen.generate_rules(args.big_rules, args.seed + 2)
    big_root = rulegen.write_bundle(
        workdir / f"bundle{args.big_rules}", big_rules, seed=args.seed + 2
    )
    big_rs = build(big_root)
    big_hand = rulegen.compile_hand(rulegen.render_hand(big_rules))
    fig["big_verify"] = verify(big_hand, big_rs, snaps[:500], sample_every=25)
    b = time_build(big_root, args.build_runs)
    b["cold_process_s"] = None if args.no_cold else cold_build(big_root)
    b["target_s"] = BUILD_TARGET_S
    b["pass"] = b["build_median_s"] < BUILD_TARGET_S
    fig["build"] = b
    small = time_build(root, args.build_runs)
    fig["build_small"] = {"rules": small["rules"], "build_median_s": small["build_median_s"]}
    fig["pass"] = ev["pass"] and b["pass"]
    return fig


def ok(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def print_table(fig: dict[str, Any]) -> None:
    ev, b, v = fig["eval"], fig["build"], fig["verify"]
    bd = fig["bundle"]
    print(
        f"S3 DSL benchmark  ({fig['implementation']} {fig['python']}, {fig['machine']}, seed {fig['seed']})"
    )
    print(
        f"bundle: {bd['rules']} rules from {bd['templates']} templates, {bd['features']} features, "
        f"{bd['lets']} lets, cost {bd['cost']}"
    )
    print(
        f"snapshots: {v['snapshots']} validated; per snapshot {v['fired_per_snapshot']:.2f} rules fire, "
        f"{v['faults_per_snapshot']:.3f} faults, {v['dynamic_factors_per_snapshot']:.2f} dynamic factors; "
        f"{v['vetoed_share']:.1%} vetoed; {v['rules_never_fired']} rules never fired"
    )
    print(
        f"verified: hand == compiled on all {v['snapshots']}, interpreter == compiled on {v['interpreter_sample']}; "
        f"1000-rule bundle on {fig['big_verify']['snapshots']}"
    )
    print()
    print(
        f"evaluation, {ev['repeats']} repeats x {v['snapshots']} snapshots   median us/snap   min us/snap   x hand"
    )
    labels = {
        "hand": "hand-written Python (lets once)",
        "run": "CompiledRuleset.run",
        "evaluate": "CompiledRuleset.evaluate",
        "hand_inline_lets": "hand-written, lets inlined (info)",
        "compiled_fn": "generated fn, no run() wrapper (info)",
        "loop_noop": "loop + call of a no-op (info)",
    }
    for name, row in ev["variants"].items():
        print(
            f"  {labels[name]:<41}{row['median_us']:>12.3f}{row['min_us']:>14.3f}"
            f"{row['ratio_vs_hand']:>9.2f}"
        )
    print(
        f"  run / hand = {ev['run_vs_hand']:.2f}x (median of ratios; {ev['run_vs_hand_min']:.2f}x on minima)"
        f"   target <= {ev['target']}x   {ok(ev['pass'])}"
    )
    print(f"  evaluate / hand = {ev['evaluate_vs_hand']:.2f}x (informational)")
    print()
    print(
        f"build of a {b['rules']}-rule bundle (cost {b['cost']}, {b['warnings']} warnings, "
        f"{b['source_lines']} generated lines)"
    )
    print(
        f"  build_bundle median {b['build_median_s'] * 1e3:.0f} ms (min {b['build_min_s'] * 1e3:.0f} ms)"
        f"   target < {b['target_s'] * 1e3:.0f} ms   {ok(b['pass'])}"
    )
    print(
        f"  stages: load+parse {b['stage_load_parse_s'] * 1e3:.0f} ms, check+lint {b['stage_check_lint_s'] * 1e3:.0f} ms, "
        f"compile {b['stage_compile_s'] * 1e3:.0f} ms"
    )
    if b["cold_process_s"] is not None:
        print(
            f"  fresh process incl. imports and parser construction: {b['cold_process_s'] * 1e3:.0f} ms (info)"
        )
    print(
        f"  {fig['build_small']['rules']}-rule bundle: {fig['build_small']['build_median_s'] * 1e3:.0f} ms"
    )
    print()
    print(f"overall: {ok(fig['pass'])}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tests.bench.bench_dsl", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--json", action="store_true", help="print the figures as JSON instead of a table"
    )
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("--repeats", type=int, default=7, help="timed passes per variant (default 7)")
    p.add_argument("--snapshots", type=int, default=10_000)
    p.add_argument("--rules", type=int, default=50)
    p.add_argument("--big-rules", type=int, default=1000)
    p.add_argument("--build-runs", type=int, default=5)
    p.add_argument("--seed", type=int, default=20240601)
    p.add_argument(
        "--no-cold", action="store_true", help="skip the fresh-process build measurement"
    )
    p.add_argument(
        "--dump", metavar="DIR", help="also write the bundle, hand.py and compiled.py to DIR"
    )
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="s3-bench-") as tmp:
        try:
            fig = run_benchmark(args, Path(tmp))
        except VerificationError as exc:
            print(f"VERIFICATION FAILED: {exc}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(fig, indent=2))
    else:
        print_table(fig)
    return 1 if args.strict and not fig["pass"] else 0


if __name__ == "__main__":
    sys.exit(main())
