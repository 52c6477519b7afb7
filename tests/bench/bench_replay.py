"""Benchmark of `s3 replay`: events per second on one core, and where the time goes.

Run from the repository root:  python -m tests.bench.bench_replay  [--json] [--strict]
                                 [--events N] [--repeats N] [--profile]

1. Tapes: a seeded synthetic tape of ``--events`` events (default 100,000; `s3.replay.synth`)
   written to a temporary .jsonl.gz and loaded (timed: read + decode + the worker's parser), and
   the shipped real tape `data/tapes/real_sample.jsonl.gz` (312 events, replayed as it is).
2. Replays with `rulesets/default`, each timed ``--repeats`` times (best and median reported):
   budgets simulated with the default 60 s hold (what `s3 replay TAPE --bundle A` does), budgets
   off (every decision runs the whole pipeline down to sizing), and A/B against a copy of the
   default bundle with `flow_strong` 0.5 -> 0.4 (two decisions per event).
3. The ceiling: `s3.core.decide.decide` alone, called on exactly the inputs the replay built
   (captured in a first pass), in a bare loop. The gap between it and the replay is the replay's
   own overhead (tape handling, state, simulated ledger, outcomes).
4. Where `decide()` spends its time: each stage wrapped with a timer (gates, schema validation, the
   compiled rules, the model, entry price, sizing, execution hints, intent id, and the rest of
   `decide` itself: building the records), on the synthetic tape without budgets. ``--profile``
   adds the cProfile functions with the most own time.
Target (issue 8): >= 20,000 events/s for the default bundle on one core (the default replay of
the synthetic tape). Exit status is 0 unless --strict is given and the target is missed (1).
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import io
import json
import platform
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # also runnable as `python tests/bench/bench_replay.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import s3.core.decide as decide_mod
import s3.replay.replay as replay_mod
from s3.config.bundle import load_dir
from s3.core.decide import BundleSnapshot
from s3.core.model import build_model
from s3.core.types import DecisionInput
from s3.replay import synth
from s3.replay.diff import diff
from s3.replay.replay import ReplayConfig, replay
from s3.replay.tape import Tape, load, write_tape

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "rulesets" / "default"
REAL_TAPE = ROOT / "data" / "tapes" / "real_sample.jsonl.gz"
TARGET = 20_000.0


def snapshot_of(path: Path) -> BundleSnapshot:
    result = load_dir(path)
    assert result.snapshot is not None, [d.render(result.texts) for d in result.diagnostics]
    return result.snapshot


def bundle_b(tmp: Path) -> BundleSnapshot:
    b = tmp / "bundle_b"
    shutil.copytree(DEFAULT, b)
    text = (b / "bundle.toml").read_text()
    text = text.replace("rev = 1\n", "rev = 2\n", 1).replace(
        "flow_strong = { value = 0.5,", "flow_strong = { value = 0.4,", 1
    )
    (b / "bundle.toml").write_text(text)
    return snapshot_of(b)


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """(best, median) seconds of ``repeats`` calls, GC off while timing."""
    times = []
    for _ in range(repeats):
        gc.collect()
        gc.disable()
        try:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        finally:
            gc.enable()
    return min(times), statistics.median(times)


def rate(n: int, best_median: tuple[float, float]) -> dict[str, float]:
    best, median = best_median
    return {"best_per_s": n / best, "median_per_s": n / median, "best_s": best}


def capture_inputs(tape: Tape, snap: BundleSnapshot, cfg: ReplayConfig) -> list[DecisionInput]:
    """The DecisionInputs the replay hands to decide(), in order (one untimed pass)."""
    seen: list[DecisionInput] = []
    real = getattr(replay_mod, "decide")  # noqa: B009 (patched for this pass only)

    def spy(inp: DecisionInput, s: BundleSnapshot, m: Any) -> Any:
        seen.append(inp)
        return real(inp, s, m)

    setattr(replay_mod, "decide", spy)  # noqa: B010
    try:
        replay(tape, snap, cfg)
    finally:
        setattr(replay_mod, "decide", real)  # noqa: B010
    return seen


# -- stage breakdown ----------------------------------------------------------------------------------
class Stages:
    """Wraps the callables decide() reaches through module or class attributes with timers."""

    def __init__(self) -> None:
        self.ns: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, attr: str, name: str) -> None:
        original = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
        ns, calls = self.ns, self.calls
        ns.setdefault(name, 0)
        calls.setdefault(name, 0)
        clock = time.perf_counter_ns

        @functools.wraps(original)
        def timed_call(*a: Any, **k: Any) -> Any:
            t = clock()
            try:
                return original(*a, **k)
            finally:
                ns[name] += clock() - t
                calls[name] += 1

        setattr(owner, attr, timed_call)
        self._undo.append(lambda: setattr(owner, attr, original))

    def restore(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()


def stage_breakdown(tape: Tape, snap: BundleSnapshot, cfg: ReplayConfig) -> dict[str, Any]:
    import dsl.compiler
    import dsl.schema
    from s3.core import execution, gates

    model = build_model(snap.params.model)
    st = Stages()
    st.wrap(gates, "check", "L0 gates (gates.check)")
    st.wrap(dsl.schema.Schema, "validate", "schema validation (Schema.validate)")
    st.wrap(dsl.compiler.CompiledRuleset, "evaluate", "L1 rules (CompiledRuleset.evaluate)")
    st.wrap(decide_mod, "entry_price", "entry price (decide.entry_price)")
    st.wrap(decide_mod, "size_entry", "sizing (sizing.size_entry)")
    st.wrap(execution, "hints", "execution hints (execution.hints)")
    st.wrap(decide_mod, "intent_id", "intent id (decide.intent_id)")
    st.wrap(decide_mod, "_risk_precheck", "risk pre-check (decide._risk_precheck)")
    clock = time.perf_counter_ns
    model_ns = [0]

    def timed_model(features: Any) -> Any:
        t = clock()
        try:
            return model(features)
        finally:
            model_ns[0] += clock() - t

    total = [0]
    real = getattr(replay_mod, "decide")  # noqa: B009

    def timed_decide(inp: DecisionInput, s: BundleSnapshot, m: Any) -> Any:
        t = clock()
        try:
            return real(inp, s, timed_model)
        finally:
            total[0] += clock() - t

    setattr(replay_mod, "decide", timed_decide)  # noqa: B010
    try:
        started = time.perf_counter_ns()
        result = replay(tape, snap, cfg)
        loop_ns = time.perf_counter_ns() - started
    finally:
        setattr(replay_mod, "decide", real)  # noqa: B010
        st.restore()
    st.ns["L2 model (logistic)"] = model_ns[0]
    inner = sum(st.ns.values())
    st.ns["rest of decide(): records, checks, dict copies"] = total[0] - inner
    n = sum(1 for o in result.outcomes if o.decision is not None and not o.replayed)
    return {
        "decisions": n,
        "decide_us_per_decision": total[0] / 1000 / n,
        "replay_us_per_event": loop_ns / 1000 / len(result.outcomes),
        "stages": [
            {
                "stage": k,
                "us_per_decision": v / 1000 / n,
                "share_of_decide": v / total[0],
                "calls": st.calls.get(k),
            }
            for k, v in sorted(st.ns.items(), key=lambda kv: -kv[1])
        ],
    }


def profile_top(tape: Tape, snap: BundleSnapshot, cfg: ReplayConfig, n: int = 15) -> str:
    pr = cProfile.Profile()
    pr.enable()
    replay(tape, snap, cfg)
    pr.disable()
    out = io.StringIO()
    pstats.Stats(pr, stream=out).sort_stats("tottime").print_stats(n)
    return out.getvalue()


def ab(tape: Tape, a: BundleSnapshot, b: BundleSnapshot, cfg: ReplayConfig) -> Any:
    return diff(replay(tape, a, cfg), replay(tape, b, cfg))


# -- the run ----------------------------------------------------------------------------------------------
def run_benchmark(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    snap = snapshot_of(DEFAULT)
    snap_b = bundle_b(tmp)
    fig: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "events": args.events,
        "seed": args.seed,
        "repeats": args.repeats,
        "target_per_s": TARGET,
    }
    path = tmp / "synth.jsonl.gz"
    t = time.perf_counter()
    write_tape(
        path,
        synth.synth_header(args.events, args.seed),
        synth.synth_records(args.events, seed=args.seed),
    )
    fig["synth_write_s"] = time.perf_counter() - t
    t = time.perf_counter()
    tape = load(path)
    load_s = time.perf_counter() - t
    fig["tape_load"] = {"s": load_s, "events_per_s": len(tape.events) / load_s}
    real = load(REAL_TAPE)
    default_cfg = ReplayConfig()
    free_cfg = ReplayConfig(budgets=False)
    tapes = {"synthetic": tape, "real_sample": real}
    replays: dict[str, Any] = {}
    for name, tp in tapes.items():
        n = len(tp.events)
        reps = args.repeats if name == "synthetic" else max(args.repeats, 20)
        replay(tp, snap, default_cfg)  # warm-up
        one = replay(tp, snap, default_cfg)
        opens = sum(
            1 for o in one.outcomes if o.decision is not None and o.decision.decision == "open"
        )
        free = replay(tp, snap, free_cfg)
        free_opens = sum(
            1 for o in free.outcomes if o.decision is not None and o.decision.decision == "open"
        )
        inputs = capture_inputs(tp, snap, free_cfg)
        model = build_model(snap.params.model)

        def bare(inputs: list[DecisionInput] = inputs, model: Any = model) -> None:
            decide = decide_mod.decide
            for inp in inputs:
                decide(inp, snap, model)

        replays[name] = {
            "events": n,
            "opens_with_budgets": opens,
            "opens_without_budgets": free_opens,
            "replay_default": rate(
                n, timed(functools.partial(replay, tp, snap, default_cfg), reps)
            ),
            "replay_no_budgets": rate(
                n, timed(functools.partial(replay, tp, snap, free_cfg), reps)
            ),
            "decide_only_no_budgets": rate(len(inputs), timed(bare, reps)),
            "ab_default": rate(
                n,
                timed(functools.partial(ab, tp, snap, snap_b, default_cfg), max(1, reps // 2)),
            ),
        }
    fig["replays"] = replays
    fig["breakdown"] = stage_breakdown(tape, snap, free_cfg)
    headline = replays["synthetic"]["replay_default"]["best_per_s"]
    fig["headline_per_s"] = headline
    fig["pass"] = headline >= TARGET
    if args.profile:
        fig["profile"] = profile_top(tape, snap, free_cfg)
    return fig


def print_table(fig: dict[str, Any]) -> None:
    print(
        f"s3 replay benchmark: Python {fig['python']} on {fig['machine']}, one core, "
        f"best of {fig['repeats']} (median in brackets)"
    )
    tl = fig["tape_load"]
    print(
        f"synthetic tape: {fig['events']:,} events, seed {fig['seed']}; load + parse "
        f"{tl['s']:.2f} s ({tl['events_per_s']:,.0f} events/s)"
    )
    for name, r in fig["replays"].items():
        print(
            f"\n{name} tape ({r['events']:,} events; opens: {r['opens_with_budgets']:,} with "
            f"budgets, {r['opens_without_budgets']:,} without)"
        )
        for key, label in (
            ("replay_default", "s3 replay (budgets simulated, 60 s hold)"),
            ("replay_no_budgets", "s3 replay --no-budgets"),
            ("decide_only_no_budgets", "decide() alone on the same inputs"),
            ("ab_default", "A/B (--against), events/s"),
        ):
            x = r[key]
            print(f"  {label:<44} {x['best_per_s']:>10,.0f} /s  [{x['median_per_s']:,.0f}]")
    b = fig["breakdown"]
    print(
        f"\nwhere decide() spends its time (synthetic tape, no budgets, {b['decisions']:,} "
        f"decisions): {b['decide_us_per_decision']:.1f} us per decision, replay "
        f"{b['replay_us_per_event']:.1f} us per event (timers included)"
    )
    for s in b["stages"]:
        print(
            f"  {s['stage']:<50} {s['us_per_decision']:7.2f} us  {100 * s['share_of_decide']:5.1f}%"
        )
    if "profile" in fig:
        print("\n" + fig["profile"])
    verdict = "PASS" if fig["pass"] else "MISS"
    print(
        f"\nheadline: {fig['headline_per_s']:,.0f} events/s (synthetic tape, default replay); "
        f"target {fig['target_per_s']:,.0f}: {verdict}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tests.bench.bench_replay", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument("--json", action="store_true", help="the figures as JSON")
    p.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--profile", action="store_true", help="add the cProfile top functions")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="s3-bench-replay-") as tmp:
        fig = run_benchmark(args, Path(tmp))
    if args.json:
        print(json.dumps(fig, indent=2))
    else:
        print_table(fig)
    return 1 if args.strict and not fig["pass"] else 0


if __name__ == "__main__":
    sys.exit(main())
