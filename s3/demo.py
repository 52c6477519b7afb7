"""`s3 demo`: the whole engine on embedded defaults, replaying a real feature sample.

Its own redis-server (the binary the install provides), a SQLite file in a temporary directory,
`rulesets/default`, and a real HTTP S4 stand-in. The sample (data/samples/features_real.jsonl,
derived from Binance USD-M data; see data/samples/README.md) is replayed into
`feat:events:BTCUSDT` and `feat:events:ETHUSDT`, re-stamped at the current clock so the staleness
gate sees live data. The stream worker decides every event; S4 accepts, and once fails and once
times out (dual track). Positions are closed after a while (as S6 would) so quota comes back.
"""

from __future__ import annotations

import collections
import json
import shutil
import time
from pathlib import Path
from typing import Any

from s3.config.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "samples" / "features_real.jsonl"
EXAMPLE = ROOT / "rulesets" / "default" / "examples" / "btc_buy_real.json"
CLOSE_AFTER_EVENTS = 4


def _rows(limit: int) -> list[dict[str, Any]]:
    """The sample with BTCUSDT and ETHUSDT events interleaved, as two live feeds would arrive."""
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines() if line.strip()]
    by_symbol: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_symbol.setdefault(row["symbol"], []).append(row)
    mixed = []
    for i in range(max(len(v) for v in by_symbol.values())):
        mixed += [v[i] for v in by_symbol.values() if i < len(v)]
    return mixed[:limit] if limit else mixed


def run_demo(*, events: int = 0, quiet: bool = False) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from s3.s4_standin import S4Server
    from s3.service import Service
    from s3.worker import Runner

    console = Console(width=max(Console().width, 110))
    rows = _rows(events)
    workdir = Path("var/demo")
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    tmp = str(workdir)
    with S4Server() as s4:
        settings = Settings(
            auth_disabled=True,
            redis_addresses=None,
            sqlite_path=str(Path(tmp) / "s3.db"),
            cache_dir=str(Path(tmp) / "cache"),
            bundle_dir=str(ROOT / "rulesets" / "default"),
            s4_url=s4.url,
            s4_timeout_s=0.5,
            s4_retries=1,
            heartbeat_sec=2.0,
            selfheal_sec=5.0,
        )
        console.print(
            f"[bold]S3 demo[/]: embedded redis-server, SQLite in {tmp}, S4 stand-in at {s4.url}"
        )
        service = Service.from_settings(settings)
        engine = service.engine
        redis, keys = engine.redis, engine.keys
        redis.set(keys.kill_switch, "OFF")
        redis.set(keys.health, "GREEN")
        decisions: list[Any] = []
        runner = Runner(service, min_idle_ms=5_000, block_ms=100)
        runner.on_decision = decisions.append
        runner.start()
        opened: collections.deque[tuple[int, str]] = collections.deque()
        started = time.perf_counter()
        try:
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                disable=quiet,
            ) as progress:
                task = progress.add_task("replaying feat:events", total=len(rows))
                for n, row in enumerate(rows):
                    if n == len(rows) // 3:
                        s4.set_mode(
                            "fail", times=2
                        )  # S4 answers 500 twice: one intent goes dual track
                    if n == 2 * len(rows) // 3:
                        s4.set_mode("reject", times=1)
                    now_ms = int(time.time() * 1000)
                    fields = {k: str(v) for k, v in row.items() if k not in ("ts", "symbol")}
                    fields["ts"] = str(now_ms)
                    fields["side_hint"] = (
                        "BUY" if float(row.get("trade_flow_1m", 0.0)) >= 0 else "SELL"
                    )
                    symbol = row["symbol"]
                    # positions close after a while (S6's job): give their quota back, before
                    # the next event goes out (not while the worker decides it: a race)
                    while opened and n - opened[0][0] >= CLOSE_AFTER_EVENTS:
                        engine.ledger.release(opened.popleft()[1], "position closed (demo)")
                    redis.hset(keys.feat_last(symbol), mapping=dict(fields))  # type: ignore[arg-type]
                    redis.xadd(keys.feat_events(symbol), dict(fields))  # type: ignore[arg-type]
                    deadline = time.monotonic() + 5
                    while runner.handled <= n and time.monotonic() < deadline:
                        time.sleep(0.002)
                    for d in decisions[-1:]:
                        if d.decision.intent is not None and d.reservation in (
                            "committed",
                            "pending",
                        ):
                            opened.append((n, d.decision.intent.intent_id))
                    progress.advance(task)
        finally:
            runner.stop()
        took = time.perf_counter() - started
        _summary(console, Table, decisions, rows, s4, service, took)
        service.close()
    return 0


def _summary(
    console: Any,
    table_cls: Any,
    decisions: list[Any],
    rows: list[dict[str, Any]],
    s4: Any,
    service: Any,
    took: float,
) -> None:
    engine = service.engine
    by_reason = collections.Counter(
        d.decision.reason_detail.split(":")[0] for d in decisions if d.decision.decision == "skip"
    )
    opens = [d for d in decisions if d.decision.decision == "open"]
    submitted = collections.Counter(d.submitted for d in opens)
    t = table_cls(title=f"S3 demo: {len(rows)} events in {took:.1f} s")
    t.add_column("what")
    t.add_column("count", justify="right")
    t.add_row("events replayed", str(len(rows)))
    t.add_row("decisions", str(len(decisions)))
    t.add_row("open", str(len(opens)))
    for outcome, n in sorted(submitted.items()):
        t.add_row(f"  submitted: {outcome}", str(n))
    for reason, n in by_reason.most_common():
        t.add_row(f"skip {reason}", str(n))
    fired = collections.Counter(r for d in decisions for r in d.decision.rules_fired)
    top = ", ".join(f"{rid} {n}" for rid, n in fired.most_common(6))
    t.add_row("rules fired (top)", top or "-")
    t.add_row("orders S4 recorded", str(len(s4.orders)))
    t.add_row(
        "ord:cmd entries (dual track)",
        str(sum(engine.redis.xlen(engine.keys.ord_cmd(s)) for s in ("BTCUSDT", "ETHUSDT"))),
    )
    t.add_row("sig:events entries", str(engine.redis.xlen(engine.keys.sig_events)))
    t.add_row(
        "dead letters",
        str(
            engine.redis.xlen(engine.keys.feat_dead_letter)
            if engine.redis.exists(engine.keys.feat_dead_letter)
            else 0
        ),
    )
    console.print(t)
    lat = sorted(engine.latencies_ms)
    if lat:
        p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(0.99 * len(lat)))]
        console.print(
            f"decide latency (stream, end to end in the engine): p50 {p50:.2f} ms, p99 {p99:.2f} ms"
        )
    snap = engine.ledger.snapshot()
    inuse = {m: f"{v:.2f}" if v is not None else "?" for m, v in snap.inuse.items()}
    console.print(
        f"risk: in use {inuse} USDT, open positions {len(snap.live())}, "
        f"ledger drift: {snap.drift() or 'none'}"
    )
    decides = service.store.events_by_kind("DECIDE", limit=10_000)
    console.print(f"store: {len(decides)} DECIDE events in {service.settings.sqlite_path}")
    console.print("where to look (each command works as printed, from this directory):")
    for line in next_commands(service.settings.sqlite_path):
        console.print("  " + line, markup=False, highlight=False, soft_wrap=True)


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is inside it, else absolute."""
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path.absolute())


def s3_command() -> str:
    """How to run this `s3` again: `s3` when that is what PATH finds, else the path it was run
    by (`.venv/bin/s3`), or the one next to this Python (`python -m s3.cli`)."""
    import os
    import sys

    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    mine = argv0 if argv0 is not None and argv0.name == "s3" else Path(sys.executable).parent / "s3"
    if not mine.exists():
        return "s3"
    found = shutil.which("s3")
    if found and os.path.samefile(found, mine):
        return "s3"
    return _shown(mine)


def decide_curl(port: int = 8080) -> str:
    """A `/decide` that a fresh `s3 serve` answers: the features of examples/btc_buy_real.json
    in the request (a fresh server has no `feat:last:BTCUSDT`), stamped now by the shell."""
    example = json.loads(EXAMPLE.read_text())
    feats = {k: v for k, v in example.items() if k not in ("symbol", "side", "ts")}
    body = json.dumps(
        {"symbol": "BTCUSDT", "sideHint": "BUY", "dry_run": True, "features": feats},
        separators=(",", ":"),
    )
    # the features' ts must be fresh (the staleness gate): POSIX shell arithmetic, any OS
    body = body[:-2] + ',"ts":\'"$(($(date +%s)*1000))"\'}}'
    return (
        f"curl -s -X POST localhost:{port}/decide -H 'content-type: application/json' -d '{body}'"
    )


def next_commands(sqlite_path: str, port: int = 8080) -> list[str]:
    """The commands `s3 demo` prints at the end (tests/test_first_minutes.py runs them)."""
    s3 = s3_command()
    query = (
        "select signal_id, json_extract(decision, '$.action'), "
        "json_extract(decision, '$.reason_detail') from signals limit 5"
    )
    db = _shown(Path(sqlite_path))
    look = (
        f'sqlite3 {db} "{query}"'
        if shutil.which("sqlite3")
        else f"python3 -c \"import sqlite3; [print(*r) for r in sqlite3.connect('{db}')"
        f'.execute(\\"{query}\\")]"'
    )
    bundle = _shown(ROOT / "rulesets" / "default")
    return [
        look,
        "# the service on embedded defaults; leave it running and, in another terminal:",
        f"S3_AUTH_DISABLED=1 {s3} serve --port {port}",
        f"curl -s localhost:{port}/health",
        decide_curl(port),
        f"curl -s localhost:{port}/metrics | grep '^s3_decisions_total'",
        f"{s3} rules explain {bundle} --features {_shown(EXAMPLE)}",
    ]


__all__ = ["run_demo"]
