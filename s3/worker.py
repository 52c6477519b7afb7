"""The engine's background work: the `feat:events:*` consumer and the scheduled jobs (spec §7).

Jobs run one at a time across instances: each takes a Redis lease (SET NX PX, renewed by its
owner) before running, so two instances never heal quotas or mark symbols stale together.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis

from s3.adapters import store_docs
from s3.adapters.redis_streams import (
    EntryLost,
    ParseError,
    StreamWorker,
    WorkerConfig,
    parse_feature_entry,
)
from s3.core import atr as atr_mod
from s3.core.types import AtrState
from s3.errors import InputError, Rejected
from s3.metrics import swallowed
from s3.service import Service

_RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_RENEW_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class Lease:
    """A Redis lease for one job: only its holder runs the job; it lapses if the holder dies."""

    def __init__(self, service: Service, job: str, ttl_ms: int):
        self.redis = service.engine.redis
        self.key = service.engine.keys.lease(job)
        self.ttl_ms = ttl_ms
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._release = self.redis.register_script(_RELEASE_LEASE)
        self._renew = self.redis.register_script(_RENEW_LEASE)

    def acquire(self) -> bool:
        if self.redis.set(self.key, self.owner, nx=True, px=self.ttl_ms):
            return True
        return bool(self._renew(keys=[self.key], args=[self.owner, self.ttl_ms]))

    def release(self) -> None:
        with contextlib.suppress(redis.RedisError):  # Redis gone at shutdown: the lease lapses
            self._release(keys=[self.key], args=[self.owner])


class Jobs:
    """The 10 s decision heartbeat and the 1 min quota self-heal (spec §7)."""

    def __init__(self, service: Service, symbols: tuple[str, ...], last_event_ms: dict[str, int]):
        self.service = service
        self.symbols = symbols
        self.last_event_ms = last_event_ms
        s = service.settings
        self.heartbeat_lease = Lease(service, "heartbeat", int(s.heartbeat_sec * 3000))
        self.selfheal_lease = Lease(service, "selfheal", int(s.selfheal_sec * 3000))
        self.stale_symbols: set[str] = set()

    def heartbeat(self, now_ms: int | None = None) -> list[str]:
        """Symbols whose stream went quiet: run the L0 checks on `feat:last` and record it."""
        if not self.heartbeat_lease.acquire():
            return []
        engine = self.service.engine
        now = now_ms if now_ms is not None else engine.clock_ms()
        stale_ms = int(self.service.settings.stale_after_sec * 1000)
        marked = []
        for symbol in self.symbols:
            # The feed is alive when something was appended to its stream lately, whichever
            # instance handles it: this instance's own last event says nothing when several
            # share the group, nor when it is working through a backlog. An empty stream or
            # Redis unreachable: fall back to what this instance handled.
            appended = self._last_appended_ms(symbol)
            last = appended or self.last_event_ms.get(symbol, 0)
            if now - last <= stale_ms:
                self.stale_symbols.discard(symbol)
                continue
            verdict = "unknown"
            try:
                result = engine.decide(
                    symbol=symbol, side_hint="BUY", t0_ms=now, trigger="heartbeat", dry_run=True
                )
                verdict = result.decision.reason_detail
            except (InputError, Rejected) as exc:
                verdict = f"{exc.code}: {exc.detail}"
            if symbol not in self.stale_symbols:
                engine.store.put_event(
                    {
                        "event_id": store_docs.event_id("STALE_SYMBOL", symbol, now),
                        "kind": "STALE_SYMBOL",
                        "symbol": symbol,
                        "ts": now,
                        "detail": {"last_event_ms": last, "quiet_ms": now - last, "l0": verdict},
                    }
                )
            self.stale_symbols.add(symbol)
            marked.append(symbol)
        return marked

    def _last_appended_ms(self, symbol: str) -> int | None:
        """When the last entry was appended to `feat:events:{symbol}` (its id's milliseconds;
        0 for an empty stream), or None when Redis cannot say."""
        engine = self.service.engine
        try:
            newest = engine.redis.xrevrange(engine.keys.feat_events(symbol), "+", "-", count=1)
        except Exception:
            return None
        return int(str(newest[0][0]).split("-")[0]) if newest else 0

    def self_heal(self, now_ms: int | None = None) -> list[Any]:
        """Reconcile reservations whose S4 outcome is unknown (S4 asked again, same idempotency
        key), then release the pending ones still stale and repair the counters."""
        if not self.selfheal_lease.acquire():
            return []
        engine = self.service.engine
        now = now_ms if now_ms is not None else engine.clock_ms()
        with swallowed(engine.metrics, "self_heal.reconcile"):  # S4 or the store down: self-heal
            engine.reconcile(now, engine.claim_ttl_ms)  # still runs
        corrections = engine.ledger.self_heal(now, self.service.settings.pending_max_age_ms)
        for i, c in enumerate(corrections):
            engine.store.put_event(
                {
                    "event_id": store_docs.event_id("RESERVATION_HEALED", now, i),
                    "kind": "RESERVATION_HEALED",
                    "symbol": "",
                    "ts": now,
                    "detail": {
                        k: (str(v) if v is not None else None)
                        for k, v in __import__("msgspec").to_builtins(c).items()
                    },
                }
            )
        return list(corrections)


def bar_update(
    states: dict[str, AtrState], symbol: str, fields: dict[str, Any], period: int
) -> None:
    """Fold a bar into the symbol's ATR state when the event carries high/low/close (spec §6)."""
    try:
        high, low, close = float(fields["high"]), float(fields["low"]), float(fields["close"])
    except (KeyError, TypeError, ValueError):
        return
    state = states.get(symbol) or atr_mod.new_state(period)
    with contextlib.suppress(ValueError):  # not a bar: leave the state as it was
        states[symbol] = atr_mod.update(state, high=high, low=low, close=close)


def _entry_position(entry_id: str) -> tuple[int, int] | None:
    """A stream entry id ``ms-seq`` as a tuple that sorts as Redis does (None if not an id)."""
    ms, _, seq = entry_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return None


class Runner:
    """Stream worker + jobs in background threads; `stop()` finishes in-flight work and acks it."""

    def __init__(
        self,
        service: Service,
        *,
        consumer: str | None = None,
        min_idle_ms: int = 30_000,
        block_ms: int = 500,
        jobs: bool = True,
        start_id: str = "0",
    ):
        self.service = service
        s = service.settings
        self.symbols = s.symbol_list()
        self.last_event_ms: dict[str, int] = {}
        self.last_ts_ms: dict[str, int] = {}
        """The `ts` of the last event handled per symbol: a feed that emits every book update
        puts several events in one millisecond (counted in s3_same_ms_events_total)."""
        self.jobs = Jobs(service, self.symbols, self.last_event_ms) if jobs else None
        engine = service.engine
        self.handled = 0
        self.on_decision: Callable[[Any], None] | None = None
        self._folded: dict[str, tuple[int, int]] = {}
        """Per symbol, the id of the last entry whose bar went into the ATR state."""
        self.worker = StreamWorker(
            engine.redis,
            engine.keys,
            self._handle,
            WorkerConfig(
                group=s.stream_group,
                consumer=consumer or f"{socket.gethostname()}-{os.getpid()}",
                symbols=self.symbols,
                block_ms=block_ms,
                min_idle_ms=min_idle_ms,
                start_id=start_id,
                # Acknowledge each entry once decided: with the batch default, a crash re-delivers
                # every decided entry of the batch, and a few crashes in a row push them past
                # max_attempts into the dead-letter stream although they were decided.
                ack_batch=1,
                # Entries delivered to a consumer that dies wait min_idle_ms to be taken over (and
                # a feature event that waits goes stale); read few at a time so few wait.
                count=10,
            ),
            # An entry the engine refuses as input (a bad feature, a bad side...) fails the same
            # way on every attempt: dead-letter it at once.
            input_errors=(InputError,),
        )
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._dead_seen = 0

    def _handle(self, symbol: str, entry_id: str, fields: dict[str, str]) -> None:
        engine = self.service.engine
        parsed = parse_feature_entry(fields, symbol=symbol)
        if isinstance(parsed, ParseError):  # the worker dead-letters these before calling us
            raise InputError(parsed.code, parsed.message)
        self.last_event_ms[symbol] = engine.clock_ms()
        features = {
            **parsed.features,
            "mid": parsed.mid,
            "spread_bps": parsed.spread_bps,
            "depth_top1_usdt": parsed.depth_top1_usdt,
        }
        # A bar counts once: an entry handled again (a failed attempt, a crash before its ack)
        # or one retried after later entries of its stream leaves the ATR state alone.
        position = _entry_position(entry_id)
        if position is None or position > self._folded.get(symbol, (-1, -1)):
            bar_update(
                engine.atr_states, symbol, features, engine.registry.current.params.atr_period
            )
            if position is not None:
                self._folded[symbol] = position
        side = features.pop("side_hint", None)

        def decide() -> Any:
            return engine.decide(
                symbol=symbol,
                side_hint=str(side) if side else None,
                t0_ms=parsed.ts_ms,
                trigger="stream",
                features=features,
                features_ts_ms=parsed.ts_ms,
            )

        for tries_left in range(2, -1, -1):
            try:
                result = decide()
                break
            except Rejected as exc:
                if exc.code != "IN_PROGRESS" or not tries_left:
                    raise
                # Another attempt holds the intent's claim: a live one finishes within the
                # claim's life, a killed one's claim lapses. Wait for that (a few times, in case
                # another taker dies holding it too) rather than failing the entry: every failed
                # delivery counts towards max_attempts and the dead-letter stream.
                left_ms = exc.extra.get("ttl_ms")
                wait_ms = (
                    left_ms if isinstance(left_ms, int) and left_ms > 0 else engine.claim_ttl_ms
                )
                self._wait_keeping(
                    symbol, entry_id, min(wait_ms, engine.claim_ttl_ms) / 1000 + 0.05
                )
        if self.last_ts_ms.get(symbol) == parsed.ts_ms:
            replayed = "true" if result.replayed else "false"
            engine.metrics.child(engine.metrics.same_ms_events, symbol, replayed).inc()
        self.last_ts_ms[symbol] = parsed.ts_ms
        if self.on_decision is not None:  # before the count: a watcher of `handled` then
            self.on_decision(result)  # finds this decision among those handed over
        self.handled += 1

    def _wait_keeping(self, symbol: str, entry_id: str, seconds: float) -> None:
        """Wait ``seconds`` keeping the entry: its idle time starts again every third of
        ``min_idle_ms``, so no other consumer takes it over meanwhile. A wait may outlast
        ``min_idle_ms`` (a 3.1 s claim against 1.5 s in the chaos suite); unkept, the entry would be
        taken over and decided by another consumer, perhaps under a newer revision, hence under
        another intent id, while this one goes on to decide it too: two orders for one event.
        If it was taken over all the same (this process stalled), raise `EntryLost`: it is the
        other consumer's now."""
        step_s = self.worker.config.min_idle_ms / 3000
        deadline = time.monotonic() + seconds
        while True:
            time.sleep(max(0.0, min(step_s, deadline - time.monotonic())))
            if not self.worker.keep(symbol, entry_id):
                raise EntryLost(f"during a wait for the claim of another attempt on {entry_id}")
            if time.monotonic() >= deadline:
                return

    def start(self) -> None:
        self.worker.ensure_groups()
        # Never a quiet death: an exception, or a return nobody asked for, fails `/health` and
        # makes `s3 serve` / `s3 worker` exit non-zero (Service.spawn).
        self._threads.append(self.service.spawn("s3-stream", self.worker.run, self._stop))
        if self.jobs is not None:
            self._threads.append(self.service.spawn("s3-jobs", self._jobs_loop, self._stop))

    def update_stream_metrics(self) -> None:
        """Stream lag per symbol (entries delivered and not acknowledged, plus, on Redis 7, entries
        not yet delivered to the group) and dead letters since the last call."""
        engine = self.service.engine
        group = self.service.settings.stream_group
        for symbol in self.symbols:
            key = engine.keys.feat_events(symbol)
            lag = 0
            with contextlib.suppress(redis.RedisError):  # no stream or group yet: no lag
                lag = int(engine.redis.xpending(key, group)["pending"])
                for g in engine.redis.xinfo_groups(key):
                    if g.get("name") == group and isinstance(g.get("lag"), int):
                        lag += int(g["lag"])
            engine.metrics.stream_lag.labels(symbol).set(lag)
        dead = self.worker.stats.dead_lettered
        if dead > self._dead_seen:
            engine.metrics.dead_letters.labels("all").inc(dead - self._dead_seen)
            self._dead_seen = dead

    def _jobs_loop(self) -> None:
        s = self.service.settings
        assert self.jobs is not None
        next_hb = time.monotonic() + s.heartbeat_sec
        next_heal = time.monotonic() + s.selfheal_sec
        while not self._stop.wait(0.2):
            now = time.monotonic()
            metrics = self.service.engine.metrics  # one job failing never silences another
            with swallowed(metrics, "jobs.stream_metrics"):
                self.update_stream_metrics()
            if now >= next_hb:
                with swallowed(metrics, "jobs.heartbeat"):
                    self.jobs.heartbeat()
                    next_hb = now + s.heartbeat_sec  # on failure: tried again at the next tick
            if now >= next_heal:
                with swallowed(metrics, "jobs.self_heal"):
                    self.jobs.self_heal()
                    next_heal = now + s.selfheal_sec

    def stop(self) -> None:
        self._stop.set()
        self.worker.stop()
        for t in self._threads:
            t.join(timeout=10)
        if self.jobs is not None:
            self.jobs.heartbeat_lease.release()
            self.jobs.selfheal_lease.release()
