"""Service benchmarks (one command: `python -m tests.bench.bench_service`):

1. Hot-reload lag (issue 5): from `publish` (store + cfg:events) to the first decision on the new
   rev, while decisions run continuously. Target <= 1 s (the spec's SLO is 5 s).
2. `POST /decide` latency on a real uvicorn server on loopback (spec SLO: p95 <= 500 ms), against
   the pure core `decide()` measured in the same run.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from s3.adapters.redis_server import RedisServer, free_port
from s3.config.settings import Settings
from s3.core.decide import decide
from s3.core.model import build_model
from s3.core.types import DecisionInput, MarketState
from s3.http.app import create_app
from s3.s4_standin import S4Server
from s3.service import Service, publish

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "rulesets" / "default"
EXAMPLE = json.loads((DEFAULT / "examples" / "btc_buy_real.json").read_text())


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def bench_reload(svc: Service, tmp: Path, rounds: int) -> list[float]:
    e = svc.engine
    svc.start_reload_watch()
    lags = []
    for k in range(rounds):
        rev = e.registry.current.rev + 1
        d = tmp / f"rev{rev}"
        shutil.copytree(DEFAULT, d)
        text = (d / "bundle.toml").read_text()
        (d / "bundle.toml").write_text(text.replace("rev = 1\n", f"rev = {rev}\n", 1))
        t0 = time.perf_counter()
        publish(svc.store, e.redis, e.keys, d, reason=f"bench {k}")
        while True:  # decisions flow; stop at the first one on the new rev
            r = e.decide(
                symbol="BTCUSDT",
                side_hint="BUY",
                t0_ms=None,
                trigger="bench",
                dry_run=True,
                features={**EXAMPLE, "ts": e.clock_ms()},
            )
            if r.decision.config_rev == rev:
                break
        lags.append(time.perf_counter() - t0)
    return lags


def bench_http(svc: Service, n: int, workers: int) -> dict[str, float]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(deps=svc), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    url = f"http://127.0.0.1:{port}/decide"
    auth = {"Authorization": "Bearer bench"}
    base = 1_800_000_000_000

    def one(client: httpx.Client, i: int) -> float:
        t = time.perf_counter()
        r = client.post(
            url,
            json={"symbol": "BTCUSDT", "sideHint": "BUY", "context": {"t0": base + i}},
            headers=auth,
        )
        assert r.status_code == 200, r.text
        return (time.perf_counter() - t) * 1000

    with httpx.Client() as c:
        for i in range(20):
            one(c, -1 - i)  # warm up
        seq = [one(c, i) for i in range(n)]
    clients = [httpx.Client() for _ in range(workers)]
    with cf.ThreadPoolExecutor(workers) as pool:
        conc = list(pool.map(lambda i: one(clients[i % workers], n + i), range(n)))
    for c in clients:
        c.close()
    server.should_exit = True
    thread.join(timeout=10)
    snap = svc.engine.registry.current
    inp = DecisionInput(
        symbol="BTCUSDT",
        side_hint="BUY",
        features={**EXAMPLE, "ts": 1},
        now_ms=2,
        t0_ms=1,
        state=MarketState(kill_switch="OFF", health="GREEN"),
    )
    model = build_model(snap.params.model)
    core = []
    for _ in range(n):
        t = time.perf_counter()
        decide(inp, snap, model)
        core.append((time.perf_counter() - t) * 1000)
    return {
        "seq_p50": pct(seq, 0.5),
        "seq_p95": pct(seq, 0.95),
        "seq_p99": pct(seq, 0.99),
        "conc_p50": pct(conc, 0.5),
        "conc_p95": pct(conc, 0.95),
        "conc_p99": pct(conc, 0.99),
        "core_p50": pct(core, 0.5),
        "core_p95": pct(core, 0.95),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--workers", type=int, default=8)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="s3-bench-"))
    with RedisServer() as redis, S4Server() as s4:
        settings = Settings(
            api_token="bench",
            redis_addresses=redis.address,
            sqlite_path=str(tmp / "s3.db"),
            cache_dir=str(tmp / "cache"),
            bundle_dir=str(DEFAULT),
            s4_url=s4.url,
            config_poll_sec=5.0,
        )
        svc = Service.from_settings(settings)
        e = svc.engine
        e.redis.set(e.keys.kill_switch, "OFF")
        e.redis.set(e.keys.health, "GREEN")
        e.redis.hset(e.keys.feat_last("BTCUSDT"), mapping={k: str(v) for k, v in EXAMPLE.items()})
        try:
            lags = bench_reload(svc, tmp, args.rounds)
            # keep features fresh for the HTTP run: refresh ts in a background thread
            stop = threading.Event()

            def refresh() -> None:
                while not stop.wait(0.5):
                    e.redis.hset(e.keys.feat_last("BTCUSDT"), "ts", str(e.clock_ms()))

            threading.Thread(target=refresh, daemon=True).start()
            e.redis.hset(e.keys.feat_last("BTCUSDT"), "ts", str(e.clock_ms()))
            e.ledger.snapshot()
            http = bench_http(svc, args.requests, args.workers)
            stop.set()
        finally:
            svc.close()
            shutil.rmtree(tmp, ignore_errors=True)
    print("S3 service benchmark")
    print(f"hot reload, publish -> first decision on the new rev ({len(lags)} rounds):")
    print(
        f"  median {statistics.median(lags) * 1000:.0f} ms, max {max(lags) * 1000:.0f} ms   "
        f"target <= 1000 ms   {'PASS' if max(lags) <= 1.0 else 'FAIL'}"
    )
    print(
        f"POST /decide on a real server ({args.requests} sequential, then {args.requests} over {args.workers} clients):"
    )
    print(
        f"  sequential  p50 {http['seq_p50']:.2f} ms  p95 {http['seq_p95']:.2f} ms  p99 {http['seq_p99']:.2f} ms"
    )
    print(
        f"  concurrent  p50 {http['conc_p50']:.2f} ms  p95 {http['conc_p95']:.2f} ms  p99 {http['conc_p99']:.2f} ms"
    )
    print(f"  pure core decide()  p50 {http['core_p50']:.3f} ms  p95 {http['core_p95']:.3f} ms")
    print(
        f"  SLO p95 <= 500 ms: {'PASS' if max(http['seq_p95'], http['conc_p95']) <= 500 else 'FAIL'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
