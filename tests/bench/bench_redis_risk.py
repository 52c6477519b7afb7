"""Benchmark of the risk reservations: reserve+release pairs per second on a real redis-server,
against a bare `INCRBYFLOAT` round trip measured in the same run.

Run from the repository root:  python -m tests.bench.bench_redis_risk  [--pairs N] [--threads N]
[--repeats N] [--cluster] [--json]

It starts its own redis-server (and, with --cluster, a local 3-master cluster) and stops it at the
end. Each repeat (15 by default, of 1,000 pairs) uses fresh keys and times every variant in turn,
so that load on the machine hits them alike; figures are medians over the repeats, and ratios are
medians of the per-repeat ratios:
- `INCRBYFLOAT`: one round trip of the command the spec's Float counter would naively use;
- `EVALSHA return 1`: one round trip of an empty Lua script (the floor for any script);
- reserve and release: µs per call, single client, and the ratio of reserve to `INCRBYFLOAT`
  (standalone also shows the server's own time per reserve script, from INFO commandstats);
- pairs/s: reserve+release pairs per second with one client, and with N threads sharing it.
After every repeat the ledger must equal the counters exactly (else exit status 2).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

if __package__ in (None, ""):  # also runnable as `python tests/bench/bench_redis_risk.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from s3.adapters.redis_client import Client, connect
from s3.adapters.redis_keys import Keys
from s3.adapters.redis_risk import RiskLedger
from s3.adapters.redis_server import LocalCluster, RedisServer, server_version

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")


def _timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _script_us(client: Client) -> float:
    """Server-side time per EVALSHA since the last CONFIG RESETSTAT (standalone only)."""
    stats = client.info("commandstats").get("cmdstat_evalsha", {})
    return float(stats.get("usec_per_call", float("nan")))


def run_once(client: Client, keys: Keys, pairs: int, threads: int) -> dict[str, float]:
    ledger = RiskLedger(client, keys)
    counter = keys.prefix + "bench:incrbyfloat"
    noop = client.register_script("return 1")
    noop(keys=[counter])  # load it once

    def incr() -> None:
        for _ in range(pairs):
            client.incrbyfloat(counter, 0.1)

    def evalsha() -> None:
        for _ in range(pairs):
            noop(keys=[counter])

    def reserves(tag: str, n: int, offset: int = 0) -> Callable[[], None]:
        def go() -> None:
            for i in range(offset, offset + n):
                s = SYMBOLS[i % len(SYMBOLS)]
                r = ledger.reserve(f"{tag}{i}", "FUT", s, 0.1, 10_000_000, 10**9, now_ms=i)
                if not r.ok:
                    raise RuntimeError(f"bench reservation refused: {r.sentence}")

        return go

    def releases(tag: str, n: int, offset: int = 0) -> Callable[[], None]:
        def go() -> None:
            for i in range(offset, offset + n):
                ledger.release(f"{tag}{i}", "bench", now_ms=i, symbol=SYMBOLS[i % len(SYMBOLS)])

        return go

    def pair_loop(tag: str, n: int, offset: int = 0) -> Callable[[], None]:
        def go() -> None:
            for i in range(offset, offset + n):
                s = SYMBOLS[i % len(SYMBOLS)]
                ledger.reserve(f"{tag}{i}", "FUT", s, 0.1, 10_000_000, 10**9, now_ms=i)
                ledger.release(f"{tag}{i}", "bench", now_ms=i, symbol=s)

        return go

    standalone = isinstance(client, redis.Redis)
    t_incr = _timed(incr)
    t_eval = _timed(evalsha)
    if standalone:
        client.config_resetstat()
    t_res = _timed(reserves("a", pairs))
    lua_reserve = _script_us(client) if standalone else float("nan")
    t_rel = _timed(releases("a", pairs))
    t_pairs = _timed(pair_loop("b", pairs))

    per = pairs // threads
    workers = [threading.Thread(target=pair_loop("c", per, offset=t * per)) for t in range(threads)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    t_threads = time.perf_counter() - t0

    snap = ledger.snapshot()
    if snap.drift() or snap.inuse_raw["FUT"] != "0.00000000":
        print(f"verification failed: {snap.drift()} {snap.inuse_raw}", file=sys.stderr)
        raise SystemExit(2)
    return {
        "lua_reserve_us": lua_reserve,
        "incrbyfloat_us": t_incr / pairs * 1e6,
        "evalsha_noop_us": t_eval / pairs * 1e6,
        "reserve_us": t_res / pairs * 1e6,
        "release_us": t_rel / pairs * 1e6,
        "pairs_per_s_1": pairs / t_pairs,
        "pairs_per_s_threads": per * threads / t_threads,
    }


def bench(client: Client, risk_tag: str, args: argparse.Namespace) -> dict[str, float]:
    runs = [
        run_once(client, Keys(prefix=f"bench{r}:", risk_tag=risk_tag), args.pairs, args.threads)
        for r in range(args.repeats)
    ]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    med["reserve_over_incrbyfloat"] = statistics.median(
        r["reserve_us"] / r["incrbyfloat_us"] for r in runs
    )
    med["pair_over_incrbyfloat"] = statistics.median(
        (r["reserve_us"] + r["release_us"]) / r["incrbyfloat_us"] for r in runs
    )
    return med


def render(mode: str, m: dict[str, float], threads: int) -> str:
    return "\n".join(
        [
            f"{mode}",
            f"  INCRBYFLOAT round trip        {m['incrbyfloat_us']:8.1f} µs",
            f"  EVALSHA 'return 1'            {m['evalsha_noop_us']:8.1f} µs",
            f"  reserve                       {m['reserve_us']:8.1f} µs"
            f"   ({m['reserve_over_incrbyfloat']:.2f}x INCRBYFLOAT)",
            *(
                [f"    of which Lua on the server  {m['lua_reserve_us']:8.1f} µs"]
                if not math.isnan(m["lua_reserve_us"])
                else []
            ),
            f"  release                       {m['release_us']:8.1f} µs"
            f"   (pair {m['pair_over_incrbyfloat']:.2f}x INCRBYFLOAT)",
            f"  reserve+release pairs/s, 1 client       {m['pairs_per_s_1']:8.0f}",
            f"  reserve+release pairs/s, {threads:2d} threads     {m['pairs_per_s_threads']:8.0f}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=1000, help="pairs per repeat")
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--cluster", action="store_true", help="also on a local 3-master cluster")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    results: dict[str, Any] = {
        "redis_server": ".".join(map(str, server_version())),
        "python": platform.python_version(),
        "pairs": args.pairs,
        "threads": args.threads,
        "repeats": args.repeats,
    }
    with RedisServer() as server:
        client, keys = connect(server.address)
        try:
            results["standalone"] = bench(client, keys.risk_tag, args)
        finally:
            client.close()
    if args.cluster:
        with LocalCluster(masters=3) as cluster:
            client, keys = connect(cluster.addresses)
            try:
                results["cluster"] = bench(client, keys.risk_tag, args)
            finally:
                client.close()
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(
        f"redis-server {results['redis_server']}, Python {results['python']}, "
        f"{args.pairs} pairs x {args.repeats} repeats (medians), {args.threads} threads"
    )
    for mode in ("standalone", "cluster"):
        if mode in results:
            print(render(mode, results[mode], args.threads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
