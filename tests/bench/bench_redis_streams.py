"""Benchmark of the stream worker: entries handled per second by `StreamWorker` (no-op handler)
against a bare XREADGROUP + XACK loop over the same entries, in the same run, on a real server.

Run from the repository root:  python -m tests.bench.bench_redis_streams  [--json] [--strict]

1. A `redis-server` is started (the embedded binary, or `S3_REDIS_SERVER_BIN`) and one
   `feat:events:BTCUSDT` stream is filled with ``--entries`` realistic feature events.
2. Each round gives every variant a fresh consumer group at ``0`` over that stream, so all read
   the same entries; variants run in a rotated order each round.
   - ``bare``: XREADGROUP COUNT n (no block) then one XACK of the batch's ids, until empty. No
     parsing, no handler: the floor a consumer cannot beat.
   - ``worker``: `StreamWorker.run()` with its defaults (ack once per read batch), a handler that
     only counts (and stops the worker after the last entry). It parses and checks every entry.
   - ``worker-ack-each`` (information): the same with ``ack_batch=1``, one XACK per entry.
3. Figures are entries/s, median over rounds; the ratio is the median of per-round ratios.
   Target: ``worker`` at least 50 % of ``bare``.

Exit status is 0 unless --strict is given and the target is missed (then 1).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # also runnable as `python tests/bench/bench_redis_streams.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from s3.adapters.redis_client import Client, connect
from s3.adapters.redis_keys import Keys
from s3.adapters.redis_server import RedisServer, server_version
from s3.adapters.redis_streams import StreamWorker, WorkerConfig

TARGET = 0.5  # worker / bare, at least
SYMBOL = "BTCUSDT"


def fill(client: Client, key: str, n: int) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        fields = {
            "ts": str(1_730_000_000_000 + i),
            "mid": f"{60000 + i % 50}.5",
            "spread_bps": "1.2",
            "depth_top1_usdt": "8000",
            "atr": "90.5",
            "side_hint": "BUY" if i % 2 else "SELL",
        }
        pipe.xadd(key, fields)  # type: ignore[arg-type]
        if len(pipe) >= 1000:
            pipe.execute()
    pipe.execute()


def bare(client: Client, keys: Keys, group: str, n: int, count: int) -> int:
    key = keys.feat_events(SYMBOL)
    done = 0
    while True:
        reply: Any = client.xreadgroup(group, "c", {key: ">"}, count=count)
        if not reply:
            return done
        ids = [i for i, _ in reply[0][1]]
        client.xack(key, group, *ids)
        done += len(ids)


def worker(ack_batch: int) -> Callable[[Client, Keys, str, int, int], int]:
    def run(client: Client, keys: Keys, group: str, n: int, count: int) -> int:
        seen = 0

        def handler(symbol: str, entry_id: str, fields: dict[str, str]) -> None:
            nonlocal seen
            seen += 1
            if seen == n:
                w.stop()

        cfg = WorkerConfig(
            group=group,
            consumer="c",
            symbols=(SYMBOL,),
            count=count,
            start_id="0",
            ack_batch=ack_batch,
            min_idle_ms=600_000,
        )
        w = StreamWorker(client, keys, handler, cfg)
        stats = w.run()
        assert stats.acked == n and stats.dead_lettered == 0, stats
        return seen

    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--entries", type=int, default=30_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--count", type=int, default=100, help="entries per XREADGROUP")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--strict", action="store_true")
    args = ap.parse_args(argv)

    variants: dict[str, Callable[[Client, Keys, str, int, int], int]] = {
        "bare": bare,
        "worker": worker(0),
        "worker-ack-each": worker(1),
    }
    rates: dict[str, list[float]] = {v: [] for v in variants}
    with RedisServer() as server:
        client, keys = connect(server.address, timeout_s=10)
        key = keys.feat_events(SYMBOL)
        fill(client, key, args.entries)
        names = list(variants)
        for r in range(args.rounds):
            for v in names[r % len(names) :] + names[: r % len(names)]:
                group = f"{v}-{r}"
                client.xgroup_create(key, group, id="0")
                t0 = time.perf_counter()
                done = variants[v](client, keys, group, args.entries, args.count)
                elapsed = time.perf_counter() - t0
                assert done == args.entries, (v, done)
                assert client.xpending(key, group)["pending"] == 0
                client.xgroup_destroy(key, group)
                rates[v].append(done / elapsed)
        version = ".".join(map(str, server_version(server.binary)))
        client.close()

    def ratio_to_bare(variant: str) -> float:
        return statistics.median(w / b for w, b in zip(rates[variant], rates["bare"], strict=True))

    ratio = ratio_to_bare("worker")
    result = {
        "redis": version,
        "python": platform.python_version(),
        "entries": args.entries,
        "rounds": args.rounds,
        "count": args.count,
        "entries_per_s": {v: round(statistics.median(x)) for v, x in rates.items()},
        "ratio_worker_to_bare": round(ratio, 3),
        "ratio_ack_each_to_bare": round(ratio_to_bare("worker-ack-each"), 3),
        "target": TARGET,
        "met": ratio >= TARGET,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"redis {version}, python {result['python']}: {args.entries} entries, "
            f"{args.rounds} rounds, COUNT {args.count}"
        )
        for v, x in rates.items():
            print(f"  {v:<16} {statistics.median(x):>10,.0f} entries/s  (min {min(x):,.0f})")
        print(
            f"  worker / bare    {ratio:>10.2f}   target >= {TARGET}: "
            f"{'met' if result['met'] else 'MISSED'}"
        )
        print(f"  ack-each / bare  {result['ratio_ack_each_to_bare']:>10.2f}   (information)")
    return 1 if args.strict and not result["met"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
