"""Load benchmark (one command: `python -m tests.bench.bench_http_load`).

`s3 serve` runs as its own process with real Redis, SQLite and the S4 stand-in; a Litestar
hello-world runs as another process, measured in the same run. Keep-alive clients in separate
processes find each server's max throughput, then offer half of it (Poisson arrivals, independent
per client) and record P50/P95/P99. Targets (issue 6): P99 <= 5 ms at half of max throughput; /decide throughput >= 40 % of
hello-world. Every /decide is a fresh decision (its own t0): idempotency claim, state read,
decision, persistence of the signal and its event, sig:events.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from s3.adapters.redis_server import RedisServer, free_port
from s3.s4_standin import S4Server

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = json.loads((ROOT / "rulesets" / "default" / "examples" / "btc_buy_real.json").read_text())
HELLO = """
import uvicorn
from litestar import Litestar, post
@post("/decide", status_code=200)
async def hello(data: dict) -> dict:
    return {"hello": "world"}
uvicorn.run(Litestar([hello], logging_config=None), host="127.0.0.1", port=%d, log_level="warning")
"""


def wait_up(url: str, proc: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.returncode}")
        try:
            httpx.get(url, timeout=0.5)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def _client(args: tuple[str, int, float, float, int]) -> tuple[int, list[float]]:
    """One keep-alive client: as fast as it can (``rate`` 0) or at ``rate`` requests/s on
    average, with exponential gaps (Poisson arrivals, seeded per client): independent clients,
    not clocks in step that would all send at the same instant every period."""
    url, worker, seconds, rate, base = args
    lat: list[float] = []
    n = 0
    gaps = random.Random(worker)
    with httpx.Client(headers={"Authorization": "Bearer load"}, timeout=10) as c:
        end = time.perf_counter() + seconds
        next_at = time.perf_counter() + (gaps.expovariate(rate) if rate > 0 else 0.0)
        while True:
            now = time.perf_counter()
            if now >= end:
                break
            if rate > 0 and now < next_at:
                time.sleep(next_at - now)
            t0 = base + worker * 10_000_000 + n
            body = {"symbol": "BTCUSDT", "sideHint": "BUY", "context": {"t0": t0}}
            s = time.perf_counter()
            r = c.post(url, json=body)
            lat.append((time.perf_counter() - s) * 1000)
            if r.status_code != 200:
                raise RuntimeError(f"{r.status_code}: {r.text[:200]}")
            n += 1
            if rate > 0:
                next_at += gaps.expovariate(rate)
    return n, lat


def load(
    url: str, clients: int, seconds: float, total_rate: float, base: int
) -> tuple[float, list[float]]:
    ctx = mp.get_context("spawn")
    with ctx.Pool(clients) as pool:
        per = total_rate / clients if total_rate else 0.0
        results = pool.map(_client, [(url, w, seconds, per, base) for w in range(clients)])
    count = sum(n for n, _ in results)
    lat = sorted(x for _, ls in results for x in ls)
    return count / seconds, lat


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(xs: list[float], p: float) -> float:
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="s3-load-"))
    out: dict[str, Any] = {}
    with RedisServer() as redis_server, S4Server() as s4:
        import redis

        r = redis.Redis(host="127.0.0.1", port=redis_server.port)
        r.set("prod:kill_switch", "OFF")
        r.set("prod:health:system:state", "GREEN")
        port, hello_port = free_port(), free_port()
        env = {
            **os.environ,
            "S3_REDIS_ADDRESSES": redis_server.address,
            "S3_SQLITE_PATH": str(tmp / "s3.db"),
            "S3_CACHE_DIR": str(tmp / "cache"),
            "S3_BUNDLE_DIR": str(ROOT / "rulesets" / "default"),
            "S3_S4_URL": s4.url,
            "S3_API_TOKEN": "load",
        }
        s3p = subprocess.Popen(
            [sys.executable, "-m", "s3.cli", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=tmp,
        )
        hello = subprocess.Popen(
            [sys.executable, "-c", HELLO % hello_port],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_up(f"http://127.0.0.1:{port}/health", s3p)
            wait_up(f"http://127.0.0.1:{hello_port}/", hello)

            def fresh() -> None:
                r.hset(
                    "feat:last:BTCUSDT",
                    mapping={
                        k: str(v) for k, v in {**EXAMPLE, "ts": int(time.time() * 1000)}.items()
                    },
                )

            for name, url, pid in (
                ("hello", f"http://127.0.0.1:{hello_port}/decide", hello.pid),
                ("decide", f"http://127.0.0.1:{port}/decide", s3p.pid),
            ):
                fresh()
                load(url, args.clients, 1.0, 0, 1_900_000_000_000)  # warm up
                fresh()
                cpu0, t0 = cpu_seconds(pid), time.perf_counter()
                tput, lat = load(url, args.clients, args.seconds, 0, 1_910_000_000_000)
                cpu1, took = cpu_seconds(pid), time.perf_counter() - t0
                busy = (cpu1 - cpu0) / took if cpu0 is not None and cpu1 is not None else None
                fresh()
                _, steady = load(url, args.clients, args.seconds, tput / 2, 1_920_000_000_000)
                out[name] = {
                    "max_rps": tput,
                    "cpu_busy": busy,  # the server's share of one core during the max phase
                    "cpu_ms_per_req": None if busy is None else 1000 * busy / tput,
                    "sat_p50": pct(lat, 0.5),
                    "sat_p99": pct(lat, 0.99),
                    "half_p50": pct(steady, 0.5),
                    "half_p95": pct(steady, 0.95),
                    "half_p99": pct(steady, 0.99),
                    "half_n": len(steady),
                }
        finally:
            for p in (s3p, hello):
                p.terminate()
                p.wait(timeout=20)
    d, h = out["decide"], out["hello"]
    ratio = d["max_rps"] / h["max_rps"]
    print(
        f"S3 load benchmark ({args.clients} keep-alive client processes, {args.seconds:g} s per phase, "
        f"{os.cpu_count()} cores shared by servers and clients)"
    )
    for name, v in (("hello-world", h), ("POST /decide", d)):
        print(
            f"  {name:13} max {v['max_rps']:7.0f} req/s (p50 {v['sat_p50']:.2f} ms, p99 {v['sat_p99']:.2f} ms "
            f"saturated);  at half: p50 {v['half_p50']:.2f} ms  p95 {v['half_p95']:.2f} ms  "
            f"p99 {v['half_p99']:.2f} ms  ({v['half_n']} requests)"
        )
    if d["cpu_busy"] is not None and h["cpu_busy"] is not None:
        print(
            f"  server CPU during the max phase: hello-world {h['cpu_busy']:.0%} of a core, "
            f"{h['cpu_ms_per_req']:.3f} ms/request; /decide {d['cpu_busy']:.0%} of a core, "
            f"{d['cpu_ms_per_req']:.3f} ms/request ({d['cpu_ms_per_req'] / h['cpu_ms_per_req']:.1f}x)"
        )
    print(
        f"  throughput /decide / hello-world = {ratio:.2f}   target >= 0.40   {'PASS' if ratio >= 0.4 else 'FAIL'}"
    )
    print(
        f"  /decide p99 at half of max = {d['half_p99']:.2f} ms   target <= 5 ms   "
        f"{'PASS' if d['half_p99'] <= 5 else 'FAIL'}"
    )
    print(f"  spec SLO p95 <= 500 ms: {'PASS' if d['half_p95'] <= 500 else 'FAIL'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
