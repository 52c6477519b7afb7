"""Explain's near misses on a 1,000-rule bundle: how long the smallest single-feature change
that makes a non-firing rule fire takes to find, per rule (target: P95 <= 50 ms).

    python -m tests.bench.bench_explain [--rules 1000] [--snapshots 20] [--seed 7]

A seeded bundle from tests/bench/rulegen.py (the DSL benchmark's generator: comparisons,
chains, arithmetic, functions, lets, optional features, faults) is built once; for each of the
snapshots, every rule that does not fire gets `nearest_change` (and `margins`), each timed on
its own. Printed: per-rule P50/P95/P99/max of each, how many rules found a change, and, as the
reference measured in the same run, the time of one traced evaluation of the whole bundle.
Every change found is checked: with it, the rule fires.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from dsl import build_bundle, whynot
from dsl.interpreter import eval_expr
from tests.bench import rulegen


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rules", type=int, default=1000)
    ap.add_argument("--snapshots", type=int, default=20)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rules = rulegen.generate_rules(args.rules, args.seed)
        root = rulegen.write_bundle(Path(tmp) / "b", rules, seed=args.seed, per_file=50)
        rs = build_bundle(root).ruleset
        assert rs is not None, "the generated bundle does not build"
    lets = rs.checked.lets
    near: list[float] = []
    marg: list[float] = []
    whole: list[float] = []
    found = tried = 0
    for raw in rulegen.snapshots(args.snapshots, args.seed + 1):
        snap, problems = rs.schema.validate(raw)
        if problems:
            continue
        t = time.perf_counter()
        outcome = rs.evaluate(snap, trace=True)
        whole.append(time.perf_counter() - t)
        fired = set(outcome.fired)
        for rule in rs.checked.rules:
            t = time.perf_counter()
            whynot.margins(rule, snap, lets)
            marg.append(time.perf_counter() - t)
            if rule.rule_id in fired:
                continue
            tried += 1
            t = time.perf_counter()
            change = whynot.nearest_change(rule, snap, rs.schema, lets)
            near.append(time.perf_counter() - t)
            if change is not None:
                found += 1
                assert eval_expr(rule.when, {**snap, change.feature: change.new}, lets), change
    ms = 1000.0
    print(
        f"bundle: {len(rs.rules)} rules, {len(whole)} snapshots, {tried} non-firing rule evaluations"
    )
    print(
        f"nearest_change per rule: P50 {pct(near, 0.5) * ms:.2f} ms, P95 {pct(near, 0.95) * ms:.2f} ms, "
        f"P99 {pct(near, 0.99) * ms:.2f} ms, max {max(near) * ms:.2f} ms (target P95 <= 50 ms)"
    )
    print(f"margins per rule: P50 {pct(marg, 0.5) * ms:.3f} ms, P95 {pct(marg, 0.95) * ms:.3f} ms")
    print(
        f"a change was found for {found} of {tried} ({found / max(tried, 1):.0%}); each one checked"
    )
    ref = statistics.median(whole) * ms
    print(
        f"reference: one traced evaluation of all {len(rs.rules)} rules, median {ref:.2f} ms; "
        f"nearest_change P95 is {pct(near, 0.95) * ms / ref:.2f}x that"
    )
    return 0 if pct(near, 0.95) <= 0.050 else 1


if __name__ == "__main__":
    sys.exit(main())
