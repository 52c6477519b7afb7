"""The chaos harness: a real Redis (optionally behind the jitter proxy), the S4 stand-in, the
embedded store, several `tests.chaos.worker_proc` processes sharing one consumer group, a feature
feed, a position closer and a quota monitor; then recovery, the final self-heal and the checks.

A scenario is a `ChaosConfig` plus a fault function run in its own thread while the feed runs.
`run_scenario` is bounded in time at every step and stops by itself; it returns a `Report`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis

from s3.adapters.redis_client import connect
from s3.adapters.redis_keys import Keys
from s3.adapters.redis_risk import RiskLedger
from s3.adapters.redis_server import RedisServer
from s3.adapters.sqlite_store import SqliteStore
from s3.s4_standin import S4Server, _Handler
from s3.service import publish
from tests.chaos.invariants import CLOSED, Check, Limits, Monitor, Pushed, check_all, observe
from tests.chaos.proxy import JitterProxy

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BUNDLE = ROOT / "rulesets" / "default"
EXAMPLES = {
    "BTCUSDT": json.loads((DEFAULT_BUNDLE / "examples" / "btc_buy_real.json").read_text()),
    "ETHUSDT": {
        **json.loads((DEFAULT_BUNDLE / "examples" / "btc_buy_real.json").read_text()),
        "mid": 2650.25,
        "atr": 40.0,
        "depth_top1_usdt": 1800.0,
    },
}
SYMBOLS = ("BTCUSDT", "ETHUSDT")
PREFIX = "chaos:"
GROUP = "s3"
FUT_MAX = Decimal(120)
CONCURRENCY = 3


# -- the S4 stand-in, recording every command it receives -----------------------------------------
class _RecordingHandler(_Handler):
    def do_POST(self) -> None:
        if self.path == "/orders":
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            key = self.headers.get("Idempotency-Key") or ""
            server: RecordingS4 = self.server  # type: ignore[assignment]
            st = server.state
            with st.lock:
                server.bodies[key].append(body)
                known = key in st.orders and st.mode == "reject"
            if known:
                # S4's idempotency contract: a key it holds answers its stored outcome. The
                # stand-in's injected rejection would refuse an order it has; no real S4 does.
                st.take_mode()
                self._send(200, {"status": "accepted", "intent_id": key, "duplicate": True})
                return
            self.rfile = io.BytesIO(body)
        super().do_POST()


class RecordingS4(S4Server):
    """`s3.s4_standin.S4Server` that also keeps every command body by idempotency key."""

    def __init__(self) -> None:
        super().__init__()
        self.RequestHandlerClass = _RecordingHandler
        self.bodies: dict[str, list[bytes]] = defaultdict(list)

    def accepted_bodies(self) -> dict[str, list[bytes]]:
        """The bodies of the intents S4 holds as orders."""
        orders = self.orders
        with self.state.lock:
            return {k: list(v) for k, v in self.bodies.items() if k in orders}


# -- bundles --------------------------------------------------------------------------------------
def write_bundle(
    root: Path, rev: int, *, broken: str | None = None, max_feature_age_ms: int = 5_000
) -> Path:
    """The default bundle as rev ``rev``, with room for a few concurrent entries per symbol and a
    budget that a handful of them fill (so refusals happen); ``broken`` adds a malformed rule."""
    target = root / f"rev{rev}"
    shutil.copytree(DEFAULT_BUNDLE, target, ignore=shutil.ignore_patterns("cases", "examples"))
    manifest = (target / "bundle.toml").read_text()
    manifest = re.sub(r"(?m)^rev = \d+", f"rev = {rev}", manifest)
    manifest = re.sub(
        r"(?m)^fut_margin_usdt_max = .*$", f"fut_margin_usdt_max = {FUT_MAX}", manifest
    )
    manifest = re.sub(
        r"(?m)^concurrent_entries_per_symbol = .*$",
        f"concurrent_entries_per_symbol = {CONCURRENCY}",
        manifest,
    )
    manifest = re.sub(
        r"(?m)^max_feature_age_ms = .*$", f"max_feature_age_ms = {max_feature_age_ms}", manifest
    )
    if rev % 2 == 0:  # a visible change: another default execution policy
        manifest = manifest.replace('default_policy = "MakerThenTaker"', 'default_policy = "Taker"')
    (target / "bundle.toml").write_text(manifest)
    if broken:
        (target / "broken.rule").write_text(broken)
    return target


# -- configuration and report ---------------------------------------------------------------------
@dataclass
class ChaosConfig:
    name: str
    seconds: float = 6.0
    """How long the feed runs (faults run during it)."""
    rate: float = 40.0
    """Feature events per second, over both symbols."""
    workers: int = 2
    via_proxy: bool = False
    aof: bool = False
    crash_p: float = 0.0
    """Chance of a SIGKILL at each crash point a worker passes (see worker_proc)."""
    kill_every: tuple[float, float] = (0.8, 1.6)
    """Seconds between two external SIGKILLs of a random worker (scenarios that kill)."""
    malformed: float = 0.04
    """Share of malformed entries in the feed."""
    slow_malformed: bool = True
    """Include malformations only the decision finds (dead-lettered after max_attempts)."""
    reloads: bool = True
    """Publish rev 2 at 35 %, a broken rev 3 at 55 % and rev 4 at 70 % of the run; rev 4 only
    once an instance has rejected rev 3 (as an operator fixes a bad publish once told)."""
    rejection_wait_s: float = 60.0
    """How long the broken rev 3 may stay in force with no instance rejecting it (a failure).
    Seen: up to 21.7 s under kill -9 at load average 18 on 2 cores (workers 9 s to start)."""
    after_last_reload_s: float = 1.5
    """The feed runs at least this long after rev 4 was published (decisions under rev 4)."""
    ready_timeout_s: float = 90.0
    """How long the first workers may take to start (seconds each on a loaded 2-core box)."""
    min_idle_ms: int = 1500
    max_feature_age_ms: int = 5_000
    stale_after_sec: float = 30.0
    heartbeat_sec: float = 0.5
    selfheal_sec: float = 1.0
    pending_max_age_ms: int = 12_000
    s4_timeout_s: float = 0.25
    s4_retries: int = 1
    redis_timeout_s: float = 1.0
    drain_timeout_s: float = 40.0
    seed: int = 7
    worker_env: dict[str, str] = field(default_factory=dict)
    """Extra environment of the worker processes (e.g. CHAOS_MODEL_FAULTS, see worker_proc)."""


@dataclass
class Report:
    name: str
    seconds: float = 0.0
    seed: int | None = None
    """The scenario's seed (None for the reports that are not scenarios)."""
    key: str = ""
    """The scenario's name in `SCENARIOS` (``-k`` of ``python -m tests.chaos``)."""
    pushed: int = 0
    malformed: int = 0
    decided: int = 0
    opened: int = 0
    orders: int = 0
    dead_lettered: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    summary: str | None = None
    """Replaces the events line for the reports that are not scenarios (fuzzing, bad input)."""

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def render(self) -> str:
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())) or "none"
        seed = "" if self.seed is None else f" (seed {self.seed})"
        lines = [f"== {self.name}: {'PASS' if self.ok else 'FAIL'} in {self.seconds:.1f} s{seed}"]
        if not self.ok and self.seed is not None:
            lines.append(
                f"   again with the same random choices: python -m tests.chaos -k {self.key or '...'}"
                f" --seed {self.seed} --keep"
            )
        if self.summary is not None:
            lines.append(f"   {self.summary}")
        else:
            lines += [
                f"   events pushed {self.pushed} (malformed {self.malformed}), decided "
                f"{self.decided}, opened {self.opened}, orders at S4 {self.orders}, "
                f"dead-lettered {self.dead_lettered}",
                f"   faults injected: {faults}",
            ]
        for c in self.checks:
            mark = "ok  " if c.ok else "FAIL"
            lines.append(f"   [{mark}] {c.group}: {c.name} ({c.checked} checked)")
            lines.extend(f"          - {p}" for p in c.problems[:8])
            if len(c.problems) > 8:
                lines.append(f"          - ... {len(c.problems) - 8} more")
        lines.extend(f"   note: {n}" for n in self.notes)
        return "\n".join(lines)


REPORTS: list[Report] = []
"""Every report of this process, printed at the end of the pytest session and by the runner."""


# -- the environment ------------------------------------------------------------------------------
class ChaosEnv:
    def __init__(self, cfg: ChaosConfig, tmp: Path):
        self.cfg = cfg
        self.tmp = tmp
        self._rngs: dict[str, random.Random] = {}
        self._spawns: Counter[int] = Counter()
        self.faults: Counter[str] = Counter()
        self.notes: list[str] = []
        self.pushed: list[Pushed] = []
        self.monitor = Monitor()
        self.limits = Limits({"FUT": FUT_MAX, "SPOT": Decimal(500)}, CONCURRENCY)
        self.stop_feed = threading.Event()
        self.stop_all = threading.Event()
        self.feed_paused = threading.Event()
        self.reloads_done = threading.Event()
        self.last_publish = 0.0
        """When rev 4 was published (monotonic)."""
        self.feed_quiet: list[tuple[int, int]] = []
        """(from_ms, to_ms) windows in which the feed appended nothing."""
        self._last_ts: dict[str, int] = {}
        self._malformed: list[tuple[str, str]] = []
        self._seq = 0
        self.procs: list[subprocess.Popen[bytes]] = []
        self._killed_by_us: set[int] = set()
        self._logs: dict[int, Path] = {}
        self.exits: Counter[str] = Counter()
        """Workers that exited by themselves, by their last words (e.g. Redis down at start)."""
        self._procs_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.crash_log = tmp / "crashes.log"
        self.redis: RedisServer | None = None
        self.proxy: JitterProxy | None = None
        self.s4: RecordingS4 | None = None

    def rng(self, name: str) -> random.Random:
        """The generator of one thread (``feed``, ``faults``, ``kill9``, ``gap``, ``probe``...),
        seeded from the scenario's seed and its name: each thread draws the same sequence in
        every run of that seed, whatever the others do and whenever they do it."""
        gen = self._rngs.get(name)
        if gen is None:
            gen = self._rngs[name] = random.Random(f"{self.cfg.seed}:{name}")
        return gen

    # -- start and stop ---------------------------------------------------------------------------
    def start(self) -> ChaosEnv:
        extra: tuple[str, ...] = ()
        if self.cfg.aof:
            extra = ("--appendonly", "yes", "--appendfsync", "always")
        self.redis = RedisServer(dir=self.tmp / "redis", extra=extra)
        (self.tmp / "redis").mkdir()
        self.redis.start()
        if self.cfg.via_proxy:
            self.proxy = JitterProxy(("127.0.0.1", self.redis.port), seed=self.cfg.seed).start()
        self.s4 = RecordingS4()
        self.s4.start()
        self.client, keys = connect(self.redis.address, timeout_s=5.0)
        self.keys = Keys(prefix=PREFIX, risk_tag=keys.risk_tag)
        self.ledger = RiskLedger(self.client, self.keys)
        self.db_path = str(self.tmp / "s3.db")
        self.store = SqliteStore(self.db_path)
        self.bundles = self.tmp / "bundles"
        self.bundles.mkdir()
        publish(self.store, self.client, self.keys, self.bundle(1), reason="chaos rev 1")
        self.client.set(self.keys.kill_switch, "OFF")
        self.client.set(self.keys.health, "GREEN")
        for symbol in SYMBOLS:  # the groups exist before the first event: nothing is skipped
            with contextlib.suppress(redis.ResponseError):
                self.client.xgroup_create(
                    self.keys.feat_events(symbol), GROUP, id="0", mkstream=True
                )
        for i in range(self.cfg.workers):
            self.spawn(i)
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        """Until every first worker says it is up (serving, its reload watch running): on a loaded
        2-core machine a start takes seconds, and a scenario whose feed and reloads began before
        any worker was up would test little but the backlog."""
        begun = time.monotonic()
        deadline = begun + self.cfg.ready_timeout_s
        waiting = list(self.procs)
        while waiting:
            for p in list(waiting):
                log = self._logs.get(p.pid)
                text = log.read_text(errors="replace") if log and log.exists() else ""
                if f"chaos worker {p.pid} up" in text or p.poll() is not None:
                    waiting.remove(p)  # up, or died starting (the supervisor replaces it)
            if waiting and time.monotonic() > deadline:
                self.notes.append(
                    f"{len(waiting)} worker(s) not up after {self.cfg.ready_timeout_s} s"
                )
                return
            time.sleep(0.05)
        self.notes.append(f"workers up {time.monotonic() - begun:.1f} s after their start")

    def bundle(self, rev: int, broken: str | None = None) -> Path:
        return write_bundle(
            self.bundles, rev, broken=broken, max_feature_age_ms=self.cfg.max_feature_age_ms
        )

    def settings_env(self, cache: str) -> dict[str, str]:
        assert self.s4 is not None and self.redis is not None
        address = self.proxy.address if self.proxy else self.redis.address
        c = self.cfg
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("S3_")},
            "S3_REDIS_ADDRESSES": address,
            "S3_REDIS_PREFIX": PREFIX,
            "S3_REDIS_TIMEOUT_S": str(c.redis_timeout_s),
            "S3_SQLITE_PATH": self.db_path,
            "S3_CACHE_DIR": str(self.tmp / cache),
            "S3_BUNDLE_DIR": str(self.bundles / "rev1"),
            "S3_S4_URL": self.s4.url,
            "S3_S4_TIMEOUT_S": str(c.s4_timeout_s),
            "S3_S4_RETRIES": str(c.s4_retries),
            "S3_AUTH_DISABLED": "1",
            "S3_SYMBOLS": ",".join(SYMBOLS),
            "S3_STREAM_GROUP": GROUP,
            "S3_HEARTBEAT_SEC": str(c.heartbeat_sec),
            "S3_STALE_AFTER_SEC": str(c.stale_after_sec),
            "S3_SELFHEAL_SEC": str(c.selfheal_sec),
            "S3_PENDING_MAX_AGE_MS": str(c.pending_max_age_ms),
            "S3_CONFIG_POLL_SEC": "1.0",
            "PYTHONUNBUFFERED": "1",
            **c.worker_env,
        }

    def spawn(self, slot: int) -> subprocess.Popen[bytes]:
        self._seq += 1
        self._spawns[slot] += 1
        # the crash points' generator: from the seed, the slot and its restarts, not from the
        # moment the supervisor spawned it
        crash_seed = random.Random(f"{self.cfg.seed}:worker:{slot}:{self._spawns[slot]}")
        args = [
            sys.executable,
            "-m",
            "tests.chaos.worker_proc",
            "--min-idle-ms",
            str(self.cfg.min_idle_ms),
            "--consumer",
            f"w{slot}-{self._seq}",
            "--seed",
            str(crash_seed.randrange(1 << 30)),
        ]
        if self.cfg.crash_p > 0:
            args += ["--crash-p", str(self.cfg.crash_p), "--crash-log", str(self.crash_log)]
        log_path = self.tmp / f"worker-{slot}-{self._seq}.log"
        log = open(log_path, "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            args,
            env=self.settings_env(f"cache-{slot}"),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self._logs[proc.pid] = log_path
        with self._procs_lock:
            if slot < len(self.procs):
                self.procs[slot] = proc
            else:
                self.procs.append(proc)
        return proc

    def kill_random_worker(self, rng: random.Random) -> None:
        """SIGKILL the worker of a slot drawn from ``rng`` (the calling thread's), or, if that
        one is being restarted, of the next live slot."""
        with self._procs_lock:
            n = len(self.procs)
            first = rng.randrange(n)
            alive = [p for p in (self.procs[(first + i) % n] for i in range(n)) if p.poll() is None]
            if not alive:
                return
            victim = alive[0]
            self._killed_by_us.add(victim.pid)
        victim.send_signal(signal.SIGKILL)
        self.faults["worker kill -9 (external)"] += 1

    def supervise(self) -> None:
        """Keep `cfg.workers` processes running: a dead one is replaced by a new process (a new
        consumer name, as a restarted pod), and its death is counted."""
        while not self.stop_all.wait(0.1):
            for slot in range(len(self.procs)):
                p = self.procs[slot]
                code = p.poll()
                if code is None:
                    continue
                if p.pid not in self._killed_by_us:
                    if code == -9:
                        self.faults["worker kill -9 (crash point)"] += 1
                    else:
                        log = self._logs.get(p.pid)
                        tail = (
                            log.read_text(errors="replace").strip().splitlines()[-1:] if log else []
                        )
                        self.exits[f"exited {code}: {' '.join(tail)[:160]}"] += 1
                self.spawn(slot)

    def stop_workers(self) -> None:
        with self._procs_lock:
            procs = list(self.procs)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            if p.poll() is None:
                p.kill()
                p.wait(timeout=5)

    def close(self) -> None:
        self.stop_all.set()
        self.stop_feed.set()
        for t in self._threads:
            t.join(timeout=10)
        self.stop_workers()
        with contextlib.suppress(Exception):
            self.client.close()
        with contextlib.suppress(Exception):
            self.store.close()
        if self.proxy is not None:
            self.proxy.stop()
        if self.s4 is not None:
            self.s4.stop()
        if self.redis is not None:
            self.redis.stop(kill=True)

    def thread(self, target: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def restart_redis(self, down_s: float) -> None:
        """kill -9 the server, leave it down ``down_s``, start it again on the same port and
        directory (the append-only file brings the data back)."""
        assert self.redis is not None
        self.redis.stop(kill=True)
        self.faults["redis kill -9 + restart"] += 1
        time.sleep(down_s)
        self.redis.start()

    # -- Redis from the harness (direct, retried across restarts) --------------------------------
    def retry(self, fn: Callable[[], Any], *, seconds: float = 20.0) -> Any:
        deadline = time.monotonic() + seconds
        while True:
            try:
                return fn()
            except (redis.ConnectionError, redis.TimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    # -- the feed ---------------------------------------------------------------------------------
    def next_ts(self, symbol: str, now_ms: int | None = None) -> int:
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        ts = max(now, self._last_ts.get(symbol, 0) + 1)
        self._last_ts[symbol] = ts
        return ts

    def event_fields(
        self, symbol: str, ts: int, side: str, rng: random.Random | None = None
    ) -> dict[str, str]:
        """One well-formed event; ``rng``: the calling thread's generator (default the feed's)."""
        rng = rng or self.rng("feed")
        base = {k: v for k, v in EXAMPLES[symbol].items() if k not in ("symbol", "side", "ts")}
        r = rng.random()
        base["mid"] = float(base["mid"]) * (1 + rng.uniform(-0.002, 0.002))
        base["spread_bps"] = round(rng.uniform(0.005, 0.4), 5)
        if r < 0.08:
            base["funding_next"] = 0.0009  # the funding gate skips it
        elif r < 0.12:
            base["spread_bps"] = 3.5  # the spread gate skips it
        fields = {k: str(v) for k, v in base.items()}
        fields.update(ts=str(ts), side_hint=side)
        return fields

    MALFORMED: tuple[tuple[str, str], ...] = (
        ("PARSE.MISSING_FIELD", "missing mid"),
        ("PARSE.BAD_TYPE", "mid not a number"),
        ("PARSE.BAD_VALUE", "negative spread"),
        ("PARSE.BAD_VALUE", "infinite depth"),
        ("PARSE.BAD_TYPE", "fractional ts"),
        ("PARSE.BAD_JSON", "payload not JSON"),
        ("PARSE.BAD_JSON", "payload not an object"),
        ("PARSE.BAD_VALUE", "symbol of another stream"),
        ("PARSE.BAD_VALUE", "field both flat and in payload"),
        ("HANDLER", "side neither BUY nor SELL"),
        ("HANDLER", "funding_next not a number"),
        ("HANDLER", "a required rule feature missing"),
    )

    def malformed_fields(
        self, symbol: str, ts: int, *, slow: bool
    ) -> tuple[dict[str, str], str, str | None]:
        """The next malformation, every kind in turn (shuffled), so each run has them all.
        ``slow``: include those only the decision finds (dead-lettered as INPUT.* at once)."""
        rng = self.rng("feed")
        if not self._malformed:
            self._malformed = list(self.MALFORMED)
            rng.shuffle(self._malformed)
        pick = next((m for m in self._malformed if slow or m[0] != "HANDLER"), None)
        if pick is None:
            pick = rng.choice([m for m in self.MALFORMED if m[0] != "HANDLER"])
        else:
            self._malformed.remove(pick)
        code, what = pick
        f = self.event_fields(symbol, ts, "BUY")
        side: str | None = "BUY"
        match what:
            case "missing mid":
                del f["mid"]
            case "mid not a number":
                f["mid"] = "sixty thousand"
            case "negative spread":
                f["spread_bps"] = "-1"
            case "infinite depth":
                f["depth_top1_usdt"] = "1e999"
            case "fractional ts":
                f["ts"] = f"{ts}.5"
            case "payload not JSON":
                f["payload"] = "{not json"
            case "payload not an object":
                f["payload"] = "[1, 2]"
            case "symbol of another stream":
                f["symbol"] = "XRPUSDT"
            case "field both flat and in payload":
                f["payload"] = json.dumps({"mid": 1.0})
            case "side neither BUY nor SELL":
                f["side_hint"] = "SIDEWAYS"
                side = None
            case "funding_next not a number":
                f["funding_next"] = "nan"
            case "a required rule feature missing":
                del f["ret_1m"]
        return f, code, side

    def push(
        self, symbol: str, fields: dict[str, str], ts: int, side: str | None, expect: str
    ) -> None:
        """XADD with an explicit id (``ts-0``): a retry after a lost reply cannot append twice."""
        key = self.keys.feat_events(symbol)
        entry_id = f"{ts}-0"

        def add() -> None:
            try:
                self.client.xadd(key, fields, id=entry_id)  # type: ignore[arg-type]
            except redis.ResponseError as exc:
                if "equal or smaller" not in str(exc):
                    raise

        self.retry(add)
        self.pushed.append(Pushed(symbol, entry_id, ts, side, expect, fields))

    def feed(self) -> None:
        period = 1.0 / self.cfg.rate
        rng = self.rng("feed")
        started = next_at = time.monotonic()
        quiet_from: int | None = None
        while not self.stop_feed.is_set():
            if self.feed_paused.is_set():
                if quiet_from is None:
                    quiet_from = int(time.time() * 1000)
                time.sleep(0.02)
                next_at = time.monotonic()
                continue
            if quiet_from is not None:
                self.feed_quiet.append((quiet_from, int(time.time() * 1000)))
                quiet_from = None
            next_at += period
            time.sleep(max(0.0, next_at - time.monotonic()))
            symbol = rng.choice(SYMBOLS)
            ts = self.next_ts(symbol)
            if rng.random() < self.cfg.malformed:
                # Those retried to max_attempts only early on: the run then ends without waiting
                # for their last delivery.
                slow = self.cfg.slow_malformed and time.monotonic() - started < self.cfg.seconds / 2
                fields, code, side = self.malformed_fields(symbol, ts, slow=slow)
                self.push(symbol, fields, ts, side, code)
            else:
                side = rng.choice(("BUY", "SELL"))
                self.push(symbol, self.event_fields(symbol, ts, side), ts, side, "decide")

    # -- the rest of the world --------------------------------------------------------------------
    def closer(self) -> None:
        """Positions close: committed reservations older than 300 ms are released (as S4/S5 do
        when a position ends), so the budget keeps cycling."""
        while not self.stop_all.wait(0.2):
            try:
                now = int(time.time() * 1000)
                for e in self.ledger.snapshot().entries.values():
                    if e.state == "committed" and (e.committed_ts or now) < now - 300:
                        self.ledger.release(e.intent_id, CLOSED, symbol=e.symbol)
            except (redis.ConnectionError, redis.TimeoutError):
                continue

    def monitor_loop(self) -> None:
        while not self.stop_all.wait(0.15):
            with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                self.monitor.sample(self.ledger, self.limits)

    def reloads(self, started: float) -> None:
        """Publish rev 2, the broken rev 3 and rev 4 on schedule; rev 4 only once an instance
        rejected rev 3 (bounded by ``rejection_wait_s``). The feed runs until this is done.

        Why wait: an instance can only reject a revision it read. Rev 3 in force for 1.3 s (its
        slot in an 8 s feed) while no instance is up to read it (every one killed, or restarting,
        a start taking seconds under load), or while instances are slow to poll, then superseded
        by rev 4, was rejected by nobody: the check failed about one run in four, on no fault of
        the engine. The publisher (`s3 bundle publish`) refuses a bundle that does not build, so
        a broken rev in the store comes from elsewhere and stays in force until someone replaces
        it; each instance that reads it rejects it (at startup too) and records why."""
        plan = [
            (0.35, 2, None),
            (0.55, 3, 'rule R-BROKEN "unterminated" priority 1\n  when mid >\n  then skip_entry\n'),
            (0.70, 4, None),
        ]
        try:
            for at, rev, broken in plan:
                wait = started + at * self.cfg.seconds - time.monotonic()
                if self.stop_all.wait(max(0.0, wait)):
                    return
                root = self.bundle(rev, broken)
                self.retry(
                    lambda r=root, rv=rev: publish(  # type: ignore[misc]
                        self.store, self.client, self.keys, r, reason=f"chaos rev {rv}"
                    )
                )
                self.last_publish = time.monotonic()
                self.faults["bundle reload" if broken is None else "broken bundle published"] += 1
                if broken is not None:
                    self.await_rejection(rev)
        finally:
            self.reloads_done.set()

    def await_rejection(self, rev: int) -> None:
        """Until a CONFIG_REJECTED event for ``rev`` is in the store (bounded); the delay is
        noted, a timeout too (the reload check then fails)."""
        published = time.monotonic()
        deadline = published + self.cfg.rejection_wait_s
        while not self.stop_all.is_set():
            if any(
                e.detail.get("rev") == rev
                for e in self.store.events_by_kind("CONFIG_REJECTED", limit=50)
            ):
                self.notes.append(
                    f"broken rev {rev} rejected {time.monotonic() - published:.1f} s after its publish"
                )
                return
            if time.monotonic() > deadline:
                self.notes.append(
                    f"broken rev {rev} in force {self.cfg.rejection_wait_s:.0f} s, rejected by no instance"
                )
                return
            time.sleep(0.1)

    # -- recovery ---------------------------------------------------------------------------------
    def drain(self) -> bool:
        """Wait until every appended entry is delivered and acknowledged (bounded)."""
        deadline = time.monotonic() + self.cfg.drain_timeout_s
        while time.monotonic() < deadline:
            try:
                done = True
                for symbol in SYMBOLS:
                    key = self.keys.feat_events(symbol)
                    if int(self.client.xpending(key, GROUP)["pending"]):
                        done = False
                        break
                    last = self.client.xinfo_stream(key)["last-generated-id"]
                    group = next(g for g in self.client.xinfo_groups(key) if g["name"] == GROUP)
                    if group["last-delivered-id"] != last:
                        done = False
                        break
                if done:
                    return True
            except (redis.ConnectionError, redis.TimeoutError):
                pass
            time.sleep(0.2)
        return False

    def stuck_report(self) -> None:
        """Not drained: what is pending where, and every live worker's thread stacks (in its
        log, via faulthandler on SIGUSR1)."""
        for symbol in SYMBOLS:
            with contextlib.suppress(Exception):
                rows = self.client.xpending_range(
                    self.keys.feat_events(symbol), GROUP, "-", "+", 20
                )
                self.notes.append(f"{symbol} pending: {rows}")
        with self._procs_lock:
            for p in self.procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGUSR1)
        time.sleep(0.5)

    def final_service(self) -> Any:
        """An instance of the service built like the workers', straight to Redis (no proxy)."""
        from s3.config.settings import Settings
        from s3.service import Service

        env = self.settings_env("cache-final")
        names = {k[3:].lower(): v for k, v in env.items() if k.startswith("S3_")}
        names["redis_addresses"] = self.redis.address if self.redis else ""
        return Service.from_settings(Settings(**names))  # type: ignore[arg-type]

    def final_self_heal(self, service: Any) -> None:
        """The self-heal job once more after the workers stopped: reconcile with S4, release
        what is still pending (nothing is in flight any more)."""
        from s3.worker import Jobs

        jobs = Jobs(service, SYMBOLS, {})
        deadline = time.monotonic() + 3 * self.cfg.selfheal_sec + 5
        while not jobs.selfheal_lease.acquire():
            if time.monotonic() > deadline:
                self.notes.append("final self-heal: the lease stayed taken")
                break
            time.sleep(0.2)
        jobs.selfheal_lease.release()
        now = int(time.time() * 1000) + self.cfg.pending_max_age_ms + 1
        self.notes.append(f"final self-heal corrections: {len(jobs.self_heal(now_ms=now))}")

    def replay_probe(self, service: Any, sample: int = 40) -> Check:
        """Decide again, as a redelivery would, events that were decided: the answer must be the
        stored first result (replayed), not a new decision."""
        from s3.adapters.redis_streams import parse_feature_entry

        c = Check("idempotency", "a retried decision returns the first result (probe)")
        candidates = [p for p in self.pushed if p.expect == "decide"]
        for p in self.rng("probe").sample(candidates, min(sample, len(candidates))):
            parsed = parse_feature_entry(p.fields, symbol=p.symbol)
            features = dict(parsed.features)  # type: ignore[union-attr]
            side = features.pop("side_hint", None)
            try:
                r = service.engine.decide(
                    symbol=p.symbol,
                    side_hint=side,
                    t0_ms=p.ts,
                    trigger="stream",
                    features=features,
                    features_ts_ms=p.ts,
                )
            except Exception as exc:
                c.fail(f"{p.symbol} {p.entry_id}: retry raised {exc!r}")
                continue
            c.checked += 1
            if not r.replayed:
                c.fail(
                    f"{p.symbol} {p.entry_id}: decided afresh ({r.decision.decision} "
                    f"{r.decision.reason_detail}) instead of replaying the first result"
                )
        return c


def run_scenario(
    cfg: ChaosConfig,
    faults: Callable[[ChaosEnv, float], None] | None = None,
    extra_checks: Callable[[ChaosEnv], list[Check]] | None = None,
    *,
    key: str = "",
) -> Report:
    """Start everything, feed for ``cfg.seconds`` while ``faults(env, started)`` runs, recover,
    self-heal, check every invariant; always tears down; the report goes to `REPORTS`."""
    tmp = Path(tempfile.mkdtemp(prefix=f"s3-chaos-{cfg.name}-"))
    report = Report(cfg.name, seed=cfg.seed, key=key)
    t0 = time.monotonic()
    env = ChaosEnv(cfg, tmp)
    try:
        env.start()
        # Before the feed's first append the streams are empty: a heartbeat that marks them
        # stale then is right (nothing was ever appended), as if quiet since forever.
        env.feed_quiet.append((0, int(time.time() * 1000)))
        started = time.monotonic()
        feed = threading.Thread(target=env.feed, name="feed", daemon=True)
        feed.start()
        env.thread(env.supervise, "supervise")
        env.thread(env.closer, "closer")
        env.thread(env.monitor_loop, "monitor")
        if cfg.reloads:
            env.thread(lambda: env.reloads(started), "reloads")
        fault_thread = None
        if faults is not None:
            fault_thread = threading.Thread(
                target=faults, args=(env, started), name="faults", daemon=True
            )
            fault_thread.start()
        env.stop_feed.wait(cfg.seconds)
        if cfg.reloads:  # the feed goes on until rev 4 is out, and a little after
            env.reloads_done.wait(cfg.rejection_wait_s + 30)
            env.stop_feed.wait(env.last_publish + cfg.after_last_reload_s - time.monotonic())
        env.stop_feed.set()
        feed.join(timeout=30)  # its last append lands before the drain starts
        env.feed_quiet.append((int(time.time() * 1000), 1 << 62))  # the feed has ended
        if fault_thread is not None:
            fault_thread.join(timeout=30)
        calm(env)
        if not env.drain():
            env.notes.append(f"not drained within {cfg.drain_timeout_s} s")
            env.stuck_report()
        env.rev_in_force = env.retry(  # type: ignore[attr-defined]
            lambda: env.client.get(env.keys.cfg_rcu_rev)
        )
        env.stop_all.set()
        env.stop_workers()
        service = env.final_service()
        try:
            env.final_self_heal(service)
            report.checks = finish_checks(env)
            # last: a probe that finds a bug decides afresh, which the checks must not see
            report.checks.insert(-3, env.replay_probe(service))
        finally:
            service.close()
        report.checks.extend(common_checks(env))
        if extra_checks is not None:
            report.checks.extend(extra_checks(env))
        if not report.ok:
            dump(env)
        fill_counts(env, report)
    except Exception as exc:
        report.checks.append(Check("harness", "scenario ran", ok=False, problems=[repr(exc)]))
        raise
    finally:
        env.close()
        report.seconds = time.monotonic() - t0
        report.faults.update(env.faults)
        report.notes.extend(env.notes)
        report.notes.extend(f"{n} worker(s) {why}" for why, n in env.exits.items())
        lost = sum(
            path.read_text(errors="replace").count("was taken over by another consumer")
            for path in tmp.glob("worker-*.log")
        )
        if lost:
            report.notes.append(f"{lost} entries found taken over by another consumer, left to it")
        if env.crash_log.exists():
            points = Counter(
                line.split()[1] for line in env.crash_log.read_text().splitlines() if line
            )
            report.notes.append(
                "crash points hit: " + ", ".join(f"{k} {v}" for k, v in sorted(points.items()))
            )
        REPORTS.append(report)
        if report.ok and not os.environ.get("S3_CHAOS_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            report.notes.append(f"files kept in {tmp}")
    return report


def calm(env: ChaosEnv) -> None:
    """Every fault off: S4 healthy, the proxy passes through, Redis up."""
    if env.s4 is not None:
        env.s4.set_mode("ok")
    if env.proxy is not None:
        env.proxy.calm()


def finish_checks(env: ChaosEnv) -> list[Check]:
    assert env.s4 is not None
    obs = env.retry(lambda: observe(env.client, env.keys, env.db_path, SYMBOLS, GROUP))
    env.observed = obs  # type: ignore[attr-defined]
    checks = check_all(
        obs, env.pushed, env.s4.accepted_bodies(), env.limits, env.monitor, prefix=PREFIX
    )
    return checks


def common_checks(env: ChaosEnv) -> list[Check]:
    """The reload and the feed, as every scenario has them."""
    obs = env.observed  # type: ignore[attr-defined]
    out = []
    if env.cfg.reloads:
        c = Check("reload", "bundle reloads: rev 4 in force, broken rev 3 rejected, never used")
        c.checked = sum(len(v) for v in obs.signals.values())
        rev = getattr(env, "rev_in_force", None)  # as the workers left it, before recovery
        if rev != "4":
            c.fail(f"cfg:rcu:rev is {rev!r} after the run, expected '4'")
        rejected = [e for e in obs.events if e["kind"] == "CONFIG_REJECTED"]
        if not any(e["detail"].get("rev") == 3 and e["detail"].get("errors") for e in rejected):
            c.fail("no CONFIG_REJECTED event with its errors for the broken rev 3")
        revs = Counter(r["rev"] for v in obs.signals.values() for r in v)
        if revs.get(3):
            c.fail(f"{revs[3]} decisions under the broken rev 3")
        if not revs.get(4):
            c.fail(f"no decision under rev 4 (decisions by rev: {dict(revs)})")
        out.append(c)
    c = Check("process", "no thread of a worker died (no traceback in any worker's log)")
    for path in sorted(env.tmp.glob("worker-*.log")):
        c.checked += 1
        text = path.read_text(errors="replace")
        # A worker that cannot start (Redis down at that moment) exits and is started again,
        # as a supervisor would; a thread dying in a running worker is a bug.
        if "Exception in thread" in text:
            at = text.find("Exception in thread")
            c.fail(f"{path.name}: {text[at : at + 1500]}")
    out.append(c)
    c = Check("feed", "no symbol marked stale while its feed was live")
    stale = [e for e in obs.events if e["kind"] == "STALE_SYMBOL"]
    c.checked = len(stale)
    slack = int(env.cfg.stale_after_sec * 1000)
    for e in stale:
        quiet_ms = e["detail"].get("quiet_ms", 0)
        live = not any(a + slack - 500 <= e["ts"] <= b + 1000 for a, b in env.feed_quiet)
        if live:
            c.fail(
                f"{e['symbol']} marked stale at {e['ts']} (quiet {quiet_ms} ms by that "
                f"instance) while the feed was appending"
            )
    out.append(c)
    return out


def dump(env: ChaosEnv) -> None:
    """What an investigation needs, next to the workers' logs: streams, dead letters, ledger."""
    c, k = env.client, env.keys
    out: dict[str, Any] = {
        "dead_letters": c.xrange(k.feat_dead_letter),
        "ledger": c.hgetall(k.ledger),
        "pushed": [p.__dict__ for p in env.pushed],
    }
    for symbol in SYMBOLS:
        key = k.feat_events(symbol)
        out[key] = c.xrange(key)
        out[key + " consumers"] = c.xinfo_consumers(key, GROUP)
        out[key + " ord:cmd"] = c.xrange(k.ord_cmd(symbol))
    out["sig:events"] = c.xrange(k.sig_events)
    (env.tmp / "dump.json").write_text(json.dumps(out, indent=1, default=str))


def fill_counts(env: ChaosEnv, report: Report) -> None:
    obs = env.observed  # type: ignore[attr-defined]
    report.pushed = len(env.pushed)
    report.malformed = sum(1 for p in env.pushed if p.expect != "decide")
    report.decided = sum(len(v) for v in obs.signals.values())
    report.opened = sum(
        1 for v in obs.signals.values() for r in v if r["record"].get("decision") == "open"
    )
    report.orders = len(env.s4.orders) if env.s4 else 0
    report.dead_lettered = len(obs.dead_letters)
