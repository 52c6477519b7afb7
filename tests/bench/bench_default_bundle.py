"""The default bundle's compiled evaluation, against a reference revision, in the same run.

Run from the repository root:  python -m tests.bench.bench_default_bundle [--ref main] [--json]

1. The reference revision's `dsl/` and `rulesets/default/` are extracted with `git archive` into
   a temporary directory. Two child interpreters of the same shape build the default bundle:
   one with this checkout's `dsl` and rules, one with the reference's (both the rules and the
   compiler are the reference's there).
2. The snapshots are the real ones of `data/samples/features_real.jsonl`, each once per side
   (BUY and SELL). Each side validates them with its own schema. Before any timing, every
   snapshot's outcome (fired, veto, faults, clamped outputs) must be the same on both sides:
   the second edition changes how the bundle is written, not what it decides.
3. Each repeat times one pass of `CompiledRuleset.run` over all snapshots in each child,
   alternating which goes first. Reported: ns per snapshot of each, and the median of the
   per-repeat ratios (this / reference). Target: at most 1.0 plus noise (`--strict` fails above
   1.05).

Exit status 0, or 1 with --strict when the target is missed, 2 when the outcomes differ.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

SAMPLES = ROOT / "data" / "samples" / "features_real.jsonl"
TARGET = 1.05

# The child: builds the bundle with whatever `dsl` is first on its path, then answers commands.
CHILD = r"""
import gc, json, sys, time
import dsl
bundle, samples = sys.argv[1], sys.argv[2]
rs = dsl.build_bundle(bundle, known_sections=("gates", "symbols", "sizing", "fees", "model",
    "health", "execution", "risk", "atr", "engine")).ruleset
assert rs is not None, "the reference bundle does not build"
snaps = []
for line in open(samples):
    raw = json.loads(line)
    for side in ("BUY", "SELL"):
        f, problems = rs.schema.validate({**raw, "side": side})
        assert not problems, problems
        snaps.append(f)
run = rs.run
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "outcomes":
        out = []
        for f in snaps:
            o = rs.evaluate(f)
            out.append([list(o.fired), o.veto, [[x.rule_id, x.code] for x in o.faults], o.clamped])
        print(json.dumps(out), flush=True)
    elif cmd == "time":
        gc.collect()
        t0 = time.perf_counter_ns()
        for f in snaps:
            run(f)
        print(time.perf_counter_ns() - t0, flush=True)
    else:
        break
"""


def extract(ref: str, into: Path) -> None:
    data = subprocess.run(
        ["git", "archive", "--format=tar", ref, "dsl", "rulesets/default"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")


def outcome_rows(rs: Any, snaps: list[dict[str, Any]]) -> list[Any]:
    rows = []
    for f in snaps:
        o = rs.evaluate(f)
        rows.append([list(o.fired), o.veto, [[x.rule_id, x.code] for x in o.faults], o.clamped])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="main", help="git revision to compare with")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--strict", action="store_true")
    args = parser.parse_args(argv)

    import dsl
    from s3.config.engine import ENGINE_SECTIONS

    rs = dsl.build_bundle(ROOT / "rulesets/default", known_sections=ENGINE_SECTIONS).ruleset
    assert rs is not None
    snaps = []
    for line in SAMPLES.read_text().splitlines():
        raw = json.loads(line)
        for side in ("BUY", "SELL"):
            f, problems = rs.schema.validate({**raw, "side": side})
            assert not problems, problems
            snaps.append(f)

    with tempfile.TemporaryDirectory() as tmp:
        extract(args.ref, Path(tmp))
        # Both sides run in a child of the same shape (same interpreter, same loop), so neither
        # gets the parent's warm caches: `here` is this checkout, `ref` the extracted revision.
        children = {
            name: subprocess.Popen(
                [sys.executable, "-c", CHILD, str(Path(root) / "rulesets/default"), str(SAMPLES)],
                cwd=root,
                env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for name, root in (("here", ROOT), ("ref", Path(tmp)))
        }

        def ask(name: str, cmd: str) -> str:
            child = children[name]
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write(cmd + "\n")
            child.stdin.flush()
            return child.stdout.readline()

        try:
            theirs = json.loads(ask("ref", "outcomes"))
            ours = outcome_rows(rs, snaps)
            if theirs != ours or json.loads(ask("here", "outcomes")) != ours:
                diff = sum(a != b for a, b in zip(theirs, ours, strict=True))
                print(f"outcomes differ from {args.ref} on {diff} of {len(ours)} snapshots")
                return 2
            mine_ns, ref_ns, ratios = [], [], []
            for r in range(args.repeats):
                order = ("here", "ref") if r % 2 == 0 else ("ref", "here")
                got = {who: int(ask(who, "time")) for who in order}
                mine_ns.append(got["here"] / len(snaps))
                ref_ns.append(got["ref"] / len(snaps))
                ratios.append(got["here"] / got["ref"])
        finally:
            for name, child in children.items():
                ask(name, "quit")
                child.wait(timeout=30)
    figures = {
        "ref": args.ref,
        "snapshots": len(snaps),
        "outcomes_equal": True,
        "this_ns_per_snapshot_median": statistics.median(mine_ns),
        "ref_ns_per_snapshot_median": statistics.median(ref_ns),
        "ratio_median": statistics.median(ratios),
        "ratio_of_minima": min(mine_ns) / min(ref_ns),
        "cost_nodes": rs.cost,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(
            f"default bundle, {len(snaps)} real snapshots, outcomes identical to {args.ref}\n"
            f"  compiled run: {figures['this_ns_per_snapshot_median']:.0f} ns/snapshot here, "
            f"{figures['ref_ns_per_snapshot_median']:.0f} ns/snapshot on {args.ref}; "
            f"ratio {figures['ratio_median']:.3f} (median of {args.repeats} interleaved repeats, "
            f"target <= {TARGET}); {figures['ratio_of_minima']:.3f} on minima"
        )
    return 1 if args.strict and figures["ratio_median"] > TARGET else 0


if __name__ == "__main__":
    sys.exit(main())
