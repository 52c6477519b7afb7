"""The scenarios: each a `ChaosConfig` and the faults injected while the feed runs. Every one
also reloads the bundle mid-run (rev 2, a broken rev 3, rev 4) and feeds malformed entries.

`scale` stretches the feed duration (the soak runs them at 10x or more).
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from tests.chaos.harness import SYMBOLS, ChaosConfig, ChaosEnv, Report, run_scenario
from tests.chaos.invariants import Check

Faults = Callable[[ChaosEnv, float], None]


def _at(env: ChaosEnv, started: float, fraction: float) -> bool:
    """Sleep until ``fraction`` of the feed's duration; False if the feed ended first."""
    wait = started + fraction * env.cfg.seconds - time.monotonic()
    return not env.stop_feed.wait(max(0.0, wait))


# -- kill -9 ----------------------------------------------------------------------------------------
def kill9_faults(env: ChaosEnv, started: float) -> None:
    """SIGKILL a random worker every 0.8-1.6 s (``cfg.kill_every``); the workers also kill
    themselves at crash points."""
    low, high = env.cfg.kill_every
    rng = env.rng("kill9")
    while not env.stop_feed.wait(rng.uniform(low, high)):
        env.kill_random_worker(rng)


KILL9 = ChaosConfig("kill -9 workers", seconds=9.0, workers=3, crash_p=0.004)


# -- Redis restarted ----------------------------------------------------------------------------------
def redis_restart_faults(env: ChaosEnv, started: float) -> None:
    """kill -9 Redis and start it again (append-only file) twice; a worker kill in between."""
    n = max(2, int(env.cfg.seconds / 5))
    rng = env.rng("redis_restart")
    for i in range(n):
        if not _at(env, started, (i + 0.5) / (n + 0.5)):
            return
        env.restart_redis(down_s=rng.uniform(0.3, 1.2))
        if env.stop_feed.wait(1.0):
            return
        env.kill_random_worker(rng)


REDIS_RESTART = ChaosConfig("Redis restarted mid-load", seconds=8.0, workers=2, aof=True)


# -- Redis jitter through the proxy -------------------------------------------------------------------
def jitter_faults(env: ChaosEnv, started: float) -> None:
    """Latency and jitter on every chunk, connections dropped at random (between and in the
    middle of commands), and every ~4 s either a stall longer than the client's timeout or a
    moment when Redis refuses new connections (all live ones dropped)."""
    proxy = env.proxy
    assert proxy is not None
    proxy.latency_ms, proxy.jitter_ms, proxy.drop_rate = 0.5, 6.0, 0.002
    env.faults["proxy latency+jitter (whole run)"] += 1
    next_big = time.monotonic() + 0.4 * min(env.cfg.seconds, 8.0)
    stall = True
    rng = env.rng("jitter")
    while not env.stop_feed.wait(rng.uniform(0.3, 0.7)):
        if proxy.drop_one():
            env.faults["proxy connection dropped"] += 1
        if time.monotonic() < next_big:
            continue
        if stall:
            proxy.stall(1.4)  # longer than S3_REDIS_TIMEOUT_S: commands time out mid-flight
            env.faults["proxy stall 1.4 s"] += 1
        else:
            proxy.refuse = True
            proxy.drop()
            env.faults["proxy drop all + refuse 0.6 s"] += 1
            time.sleep(0.6)
            proxy.refuse = False
        stall = not stall
        next_big = time.monotonic() + rng.uniform(1.6, 4.0)
    env.faults["proxy connection dropped mid-command"] += proxy.stats.chunk_drops


REDIS_JITTER = ChaosConfig("Redis jitter (proxy)", seconds=8.0, workers=2, via_proxy=True)


# -- the feed stops and resumes ---------------------------------------------------------------------
def feed_gap_faults(env: ChaosEnv, started: float) -> None:
    """The feed stops (the WS disconnect) and S2's `feat:last` stops moving; after the gap S2
    flushes what it buffered (old ts: stale) and fresh events follow. Once in a short run, every
    ~12 s in a long one."""
    if not _at(env, started, 0.4 if env.cfg.seconds < 20 else 0.1):
        return
    env.backlog = []  # type: ignore[attr-defined]
    rng = env.rng("gap")
    while True:
        gap(env)
        if env.stop_feed.wait(rng.uniform(10.0, 14.0)):
            return
        if time.monotonic() - started > env.cfg.seconds - 6:
            return


def gap(env: ChaosEnv) -> None:
    gap_s = env.cfg.stale_after_sec + 1.5
    env.feed_paused.set()
    paused_ms = int(time.time() * 1000)
    env.faults[f"feed stopped {gap_s:.1f} s"] += 1
    rng = env.rng("gap")
    for symbol in SYMBOLS:
        fields: dict[Any, Any] = env.event_fields(symbol, paused_ms, "BUY", rng)
        key = env.keys.feat_last(symbol)
        env.retry(functools.partial(env.client.hset, key, mapping=fields))
    time.sleep(gap_s)
    for i in range(6):  # what S2 buffered during the gap, now older than max_feature_age_ms
        symbol = SYMBOLS[i % 2]
        ts = env.next_ts(symbol, paused_ms + 10 * i)
        side = "BUY" if i % 3 else "SELL"
        env.push(symbol, env.event_fields(symbol, ts, side, rng), ts, side, "decide")
        env.backlog.append(env.pushed[-1])  # type: ignore[attr-defined]
    if getattr(env, "resumed_ms", None) is None:
        env.resumed_ms = int(time.time() * 1000)  # type: ignore[attr-defined]
    env.feed_paused.clear()


def feed_gap_checks(env: ChaosEnv) -> list[Check]:
    obs = env.observed  # type: ignore[attr-defined]
    c = Check("feed", "gap: heartbeat marks both symbols stale, backlog skipped, decisions resume")
    stale = [e for e in obs.events if e["kind"] == "STALE_SYMBOL"]
    for symbol in SYMBOLS:
        marks = [e for e in stale if e["symbol"] == symbol]
        c.checked += 1
        if not marks:
            c.fail(f"{symbol}: no STALE_SYMBOL event during the gap")
        elif not any(e["detail"].get("l0") == "GATE.STALE_FEATURES" for e in marks):
            c.fail(f"{symbol}: STALE_SYMBOL without the L0 verdict GATE.STALE_FEATURES: {marks}")
    for p in getattr(env, "backlog", []):
        c.checked += 1
        recs = obs.signals.get((p.symbol, p.ts, p.side), [])
        details = [r["record"].get("reason_detail") for r in recs]
        if details != ["GATE.STALE_FEATURES"]:
            c.fail(f"backlog {p.symbol} {p.entry_id}: decided {details}, not one stale skip")
    resumed = getattr(env, "resumed_ms", None)
    after = [
        r["record"]
        for (_, t0, _), recs in obs.signals.items()
        for r in recs
        if resumed is not None and t0 > resumed
    ]
    c.checked += len(after)
    if not any(r.get("reason_detail") != "GATE.STALE_FEATURES" for r in after):
        c.fail(f"no decision past the stale gate after the feed resumed ({len(after)} decided)")
    return [c]


FEED_GAP = ChaosConfig(
    "feed stops and resumes",
    seconds=8.0,
    workers=2,
    stale_after_sec=1.6,
    heartbeat_sec=0.25,
    max_feature_age_ms=1_500,
    crash_p=0.0,
)


# -- S4 faults ------------------------------------------------------------------------------------------
def s4_faults(env: ChaosEnv, started: float) -> None:
    """S4 answers 500, times out, accepts after the client gave up, rejects; a worker is killed
    now and then. Each window lasts ~1 s, with healthy gaps between."""
    s4 = env.s4
    assert s4 is not None
    modes = [
        ("fail", 0, "S4 500s"),
        ("accept_late", 600, "S4 accepts after the client gave up"),
        ("timeout", 400, "S4 times out"),
        ("reject", 0, "S4 rejects"),
        ("accept_late", 900, "S4 accepts after the client gave up"),
    ]
    i = 0
    rng = env.rng("s4")
    while not env.stop_feed.wait(rng.uniform(0.3, 0.6)):
        mode, delay, label = modes[i % len(modes)]
        i += 1
        s4.set_mode(mode, delay_ms=delay)
        env.faults[label + " (window)"] += 1
        if env.stop_feed.wait(rng.uniform(0.6, 1.2)):
            break
        s4.set_mode("ok")
        if i % 3 == 0:
            env.kill_random_worker(rng)
    s4.set_mode("ok")


def s4_checks(env: ChaosEnv) -> list[Check]:
    """The late accepts happened, and S4 got requests in every fault mode (else the scenario
    proved nothing)."""
    obs = env.observed  # type: ignore[attr-defined]
    c = Check("s4", "unknown outcomes kept their reservation until S4 was asked again")
    reconciled = [e for e in obs.events if e["kind"] == "ENTRY_RECONCILED"]
    unknown = [
        e
        for e in obs.events
        if e["kind"] == "ENTRY_REJECTED" and e["detail"].get("outcome") == "unknown"
    ]
    c.checked = len(unknown)
    if not unknown:
        c.fail("no S4 call ended unknown: the fault windows did not bite")
    for e in unknown:
        if e["detail"].get("reservation") != "pending":
            c.fail(f"{e['detail'].get('intent_id')}: unknown outcome, reservation not kept")
    env.notes.append(
        f"S4: {len(unknown)} unknown outcomes, {len(reconciled)} settled by reconcile "
        f"({sum(1 for e in reconciled if e['detail'].get('s4') == 'accepted')} late accepts "
        "found and committed)"
    )
    return [c]


S4_FAULTS = ChaosConfig("S4 500s, timeouts, late accepts", seconds=9.0, workers=2)


# -- everything at once (the soak's main course) ------------------------------------------------------
def everything_faults(env: ChaosEnv, started: float) -> None:
    import threading

    threads = [
        threading.Thread(target=f, args=(env, started), daemon=True)
        for f in (kill9_faults, jitter_faults, s4_faults)
    ]
    for t in threads:
        t.start()
    redis_restart_faults(env, started)
    for t in threads:
        t.join()


EVERYTHING = ChaosConfig(
    "everything at once",
    seconds=12.0,
    workers=3,
    crash_p=0.002,
    via_proxy=True,
    aof=True,
    kill_every=(2.0, 4.0),
    # as in production (30 s against a 14.3 s claim), a dead consumer's entries are taken over
    # only once its claims have lapsed; the short scenarios take them over sooner, a harder case
    min_idle_ms=4_000,
)


# -- the L2 model misbehaves ------------------------------------------------------------------------
MODEL_FAULTS_ENV = "raise_every=3,sleep_every=4,sleep_s=0.25"


def model_fault_checks(env: ChaosEnv) -> list[Check]:
    """The workers' model raised on every 3rd call and slept past its deadline on others:
    every such decision is degraded to x1.0 with its reason, and the others kept their p."""
    obs = env.observed  # type: ignore[attr-defined]
    c = Check("model", "a failing or late model degrades to size_mult_ml = 1.0 with its reason")
    reasons: Counter[str] = Counter()
    for recs in obs.signals.values():
        for r in recs:
            rec = r["record"]
            why = rec.get("model_degraded")
            if why is None and rec.get("model_p") is None:
                continue  # decided before L2 (a gate, a veto)
            c.checked += 1
            if why is None:
                p = rec["model_p"]
                reasons["p"] += 1
                band = 1.2 if p > 0.85 else 1.0 if p >= 0.6 else 0.5 if p >= 0.4 else None
                got = rec.get("size_mult_ml") if rec.get("reason") != "MODEL" else None
                if not 0.0 <= p <= 1.0 or got != band:
                    c.fail(f"{rec.get('symbol')} {rec.get('t0_ms')}: p {p} -> x{got}, not x{band}")
                continue
            reasons[why.split(":")[0]] += 1
            if rec.get("model_p") is not None or rec.get("size_mult_ml") != 1.0:
                c.fail(
                    f"{rec.get('symbol')} {rec.get('t0_ms')}: degraded ({why}) but p "
                    f"{rec.get('model_p')}, size_mult_ml {rec.get('size_mult_ml')}"
                )
            if why.startswith("MODEL.ERROR") and "chaos: model raises on call" not in why:
                c.fail(f"unexpected model error: {why}")
            if rec.get("decision") == "open":  # sized with x1.0: rules (clamped) x health
                want = min(max(rec["size_mult_rules"], 0.25), 2.0) * rec["health_factor"]
                if abs(rec["size_mult"] - want) > 1e-9:
                    c.fail(
                        f"{rec.get('symbol')} {rec.get('t0_ms')}: size_mult "
                        f"{rec['size_mult']} != rules x health {want}"
                    )
    for need in ("MODEL.ERROR", "MODEL.TIMEOUT", "p"):
        if reasons[need] == 0:
            c.fail(f"no decision with {need}: the faults did not bite")
    env.notes.append(
        "model: " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) + " decisions"
    )
    return [c]


def model_faults(env: ChaosEnv, started: float) -> None:
    """The faults are in the workers (CHAOS_MODEL_FAULTS): the model raises on every 3rd call
    and sleeps 0.25 s (five times its 50 ms deadline) on every 4th."""
    env.faults["model raises every 3rd call, sleeps 0.25 s every 4th (in each worker)"] += 1


MODEL_FAULTS = ChaosConfig(
    "model raises every 3rd call, sleeps past its deadline",
    seconds=12.0,  # the reloads come later: workers slow to start still see rev 3 rejected
    workers=2,
    # events decided late (a slow worker start on a loaded machine) still reach the model
    max_feature_age_ms=60_000,
    worker_env={"CHAOS_MODEL_FAULTS": MODEL_FAULTS_ENV},
)


SCENARIOS: dict[str, tuple[ChaosConfig, Faults, Callable[[ChaosEnv], list[Check]] | None]] = {
    "kill9": (KILL9, kill9_faults, None),
    "redis_restart": (REDIS_RESTART, redis_restart_faults, None),
    "redis_jitter": (REDIS_JITTER, jitter_faults, None),
    "feed_gap": (FEED_GAP, feed_gap_faults, feed_gap_checks),
    "s4_faults": (S4_FAULTS, s4_faults, s4_checks),
    "everything": (EVERYTHING, everything_faults, s4_checks),
    "model_faults": (MODEL_FAULTS, model_faults, model_fault_checks),
}


def run(name: str, *, scale: float = 1.0, seed: int | None = None) -> Report:
    cfg, faults, checks = SCENARIOS[name]
    cfg = replace(
        cfg,
        seconds=cfg.seconds * scale,
        drain_timeout_s=cfg.drain_timeout_s + 10 * scale,
        seed=cfg.seed if seed is None else seed,
    )
    return run_scenario(cfg, faults, checks, key=name)
