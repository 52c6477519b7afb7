"""Benchmark of the outcome simulation and the per-rule attribution (issue 18).

Run from the repository root:  python -m tests.bench.bench_outcomes [--json] [--strict]
                                 [--repeats N] [--seeds N] [--skip-attribution]

1. Exit walk: `s3.replay.outcomes.first_exit` over a seeded random-walk quote series of 2,000,000
   quotes, 2,000 trades with their stops and take profits far enough that each walks tens of
   thousands of quotes (the total is printed): quotes walked per second on one core (median of ``--repeats``), against a plain Python
   loop doing the same comparisons on the same quotes, timed in the same run (the reference).
   Target: >= 500,000 quote events/s.
2. Attribution of `rulesets/default` (31 rules) over the real dense window C
   (`data/tapes/real_window_c_dense.jsonl.gz`, 94,331 events): wall time of `attribute` (base
   pass + 31 leave-one-out runs + bootstrap), against one plain `replay` with exits of the same
   tape in the same run (the reference). Target: <= 60 s.
3. The planted-edge check at full size: ``--seeds`` (default 1,000) seeded synthetic tapes
   (`s3.replay.planted`): how often the edge rule's sign is recovered and how often the 95 %
   intervals cover the planted values (the suite runs 200 seeds, tests/replay/test_planted.py).

Exit status 0 unless --strict is given and a target is missed (1).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np

from s3.config.bundle import load_dir
from s3.replay import planted
from s3.replay.attribution import attribute
from s3.replay.outcomes import Series, first_exit
from s3.replay.replay import ReplayConfig, replay
from s3.replay.tape import load

ROOT = Path(__file__).resolve().parents[2]
TAPE_C = ROOT / "data" / "tapes" / "real_window_c_dense.jsonl.gz"
EXIT_TARGET = 500_000.0
ATTRIBUTION_TARGET_S = 60.0


def quote_series(n: int, seed: int = 0) -> Series:
    rng = np.random.default_rng(seed)
    mid = 60_000.0 + np.cumsum(rng.normal(0, 2.0, size=n))
    bid = np.round(mid - 0.05, 1)
    ask = bid + 0.1
    ts = np.arange(n, dtype=np.int64) * 10
    z = np.zeros(n)
    return Series(
        "BTCUSDT", False, ts, np.arange(n), bid, bid, ask, ask, bid, ask, bid, ask, mid, z, z, {}
    )


def python_walk(s: Series, start: int, stop: int, sl: float, tp: float) -> int:
    bids = s.bid_lo[start : stop + 1].tolist()
    for k, b in enumerate(bids):
        if b <= sl or b > tp:
            return start + k
    return -1


def bench_exits(repeats: int) -> dict[str, Any]:
    s = quote_series(2_000_000)
    rng = np.random.default_rng(1)
    starts = rng.integers(0, 1_900_000, size=2_000)
    # stops and take profits 3.5 sigma of 5,000 steps away: trades walk tens of thousands
    width = 3.5 * 2.0 * np.sqrt(5_000)
    trades = [(int(a), float(s.bid_lo[a]) - width, float(s.bid_lo[a]) + width) for a in starts]
    fast, slow = [], []
    walked = 0
    for _ in range(repeats):
        t = time.perf_counter()
        walked = 0
        for a, sl, tp in trades:
            hit = first_exit(s, a + 1, min(a + 100_000, s.n - 1), True, sl, tp, 1e-7)
            walked += (hit[0] if hit else min(a + 100_000, s.n - 1)) - a
        fast.append(walked / (time.perf_counter() - t))
        t = time.perf_counter()
        ref_walked = 0
        for a, sl, tp in trades[:200]:  # a tenth: the loop is slow
            k = python_walk(s, a + 1, min(a + 100_000, s.n - 1), sl, tp)
            ref_walked += (k if k >= 0 else min(a + 100_000, s.n - 1)) - a
        slow.append(ref_walked / (time.perf_counter() - t))
    return {
        "quotes_walked": walked,
        "trades": len(trades),
        "quotes_per_s": round(statistics.median(fast)),
        "python_loop_quotes_per_s": round(statistics.median(slow)),
        "ratio_to_python_loop": round(statistics.median(fast) / statistics.median(slow), 1),
        "target": EXIT_TARGET,
        "ok": statistics.median(fast) >= EXIT_TARGET,
    }


def bench_attribution() -> dict[str, Any]:
    snap = load_dir(ROOT / "rulesets" / "default").snapshot
    assert snap is not None
    tape = load(TAPE_C)
    t = time.perf_counter()
    plain = replay(tape, snap, ReplayConfig(exits=True))
    replay_s = time.perf_counter() - t
    t = time.perf_counter()
    a = attribute(tape, snap)
    total = time.perf_counter() - t
    return {
        "events": len(tape.events),
        "rules": len(a.rows),
        "attribution_s": round(total, 2),
        "base_pass_s": round(a.base_s, 2),
        "decided_again": a.decides,
        "one_replay_s": round(replay_s, 2),
        "ratio_to_one_replay": round(total / replay_s, 2),
        "trades": len(plain.trades),
        "target_s": ATTRIBUTION_TARGET_S,
        "ok": total <= ATTRIBUTION_TARGET_S,
    }


def bench_planted(seeds: int) -> dict[str, Any]:
    root = planted.write_bundle(Path(tempfile.mkdtemp()) / "planted")
    snap = load_dir(root).snapshot
    assert snap is not None
    w, loss = planted.win_loss(snap)
    p0 = planted.p_zero(w, loss)
    design = planted.Design()
    truth = planted.planted_values(design, w, loss)
    sign = cover_edge = cover_noise = 0
    t = time.perf_counter()
    for seed in range(seeds):
        tape, _ = planted.tape(design, seed, p0)
        rows = {r.rule_id: r for r in attribute(tape, snap, blocks=100, seed=seed).rows}
        sign += rows["R-EDGE"].contribution > 0
        cover_edge += rows["R-EDGE"].ci[0] <= truth["R-EDGE"] <= rows["R-EDGE"].ci[1]
        cover_noise += rows["R-NOISE"].ci[0] <= 0.0 <= rows["R-NOISE"].ci[1]
    return {
        "seeds": seeds,
        "seconds": round(time.perf_counter() - t, 1),
        "planted": truth,
        "edge_sign_recovered": sign / seeds,
        "edge_ci_coverage": cover_edge / seeds,
        "noise_ci_coverage": cover_noise / seeds,
        "ok": sign / seeds >= 0.95
        and 0.93 <= cover_edge / seeds <= 0.97
        and 0.93 <= cover_noise / seeds <= 0.97,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--strict", action="store_true")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=1_000)
    ap.add_argument("--skip-attribution", action="store_true")
    args = ap.parse_args(argv)
    out: dict[str, Any] = {"exits": bench_exits(args.repeats)}
    if not args.skip_attribution:
        out["attribution"] = bench_attribution()
    if args.seeds:
        out["planted"] = bench_planted(args.seeds)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for name, fig in out.items():
            print(f"{name}:")
            for k, v in fig.items():
                print(f"  {k:<28} {v}")
    ok = all(f.get("ok", True) for f in out.values())
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
