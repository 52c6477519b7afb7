"""Prometheus metrics for the spec §9 SLIs, on a registry of the engine's own (no globals, so
several engines in one test process do not collide)."""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        r = self.registry
        self.decide_latency_ms = Histogram(
            "s3_strategy_decide_latency_ms",
            "strategy.decide.latency_ms: one decision end to end, in ms",
            ["trigger"],
            buckets=LATENCY_BUCKETS_MS,
            registry=r,
        )
        self.decisions = Counter(
            "s3_decisions_total",
            "Decisions by outcome and reason",
            ["decision", "reason"],
            registry=r,
        )
        self.gate_skips = Counter(
            "s3_gate_skip_total",
            "gate.skip.count{reason}: skips by reason_detail",
            ["reason"],
            registry=r,
        )
        self.rules_fired = Counter(
            "s3_rules_fired_total", "rules.fired.count by rule id", ["rule_id"], registry=r
        )
        self.intent_emit = Counter(
            "s3_intent_emit_total",
            "intent.emit.ok/fail: intents handed to S4 or the stream",
            ["result", "route"],
            registry=r,
        )
        self.model_degraded = Counter(
            "s3_model_degraded_total", "L2 calls degraded to x1.0", ["why"], registry=r
        )
        self.config_rev = Gauge("s3_config_rev", "The bundle rev in force", registry=r)
        self.config_reload_lag_s = Gauge(
            "s3_config_reload_lag_seconds",
            "Seconds from a publish (cfg:events) to the swap of the last reload",
            registry=r,
        )
        self.config_reloads = Counter(
            "s3_config_reloads_total", "Reload attempts by result", ["result"], registry=r
        )
        self.stream_lag = Gauge(
            "s3_stream_lag_entries",
            "Entries of feat:events not yet acknowledged",
            ["symbol"],
            registry=r,
        )
        self.stream_age_ms = Gauge(
            "s3_stream_event_age_ms",
            "Age of the last feature event handled, in ms",
            ["symbol"],
            registry=r,
        )
        self.dead_letters = Counter(
            "s3_dead_letter_total",
            "Stream entries sent to the dead-letter stream",
            ["symbol"],
            registry=r,
        )
        self.reservations = Counter(
            "s3_reservations_total", "Risk reservations by result", ["result"], registry=r
        )
        self.redis_batch = Histogram(
            "s3_redis_batch_pipelines",
            "Pipelines of concurrent HTTP decisions run as one Redis round trip",
            buckets=(1, 2, 3, 4, 6, 8, 16, 32, 64),
            registry=r,
        )
        self.http_errors = Counter(
            "s3_http_errors_total",
            "HTTP requests answered with an error, by error code and status",
            ["code", "status"],
            registry=r,
        )
        self.unknown_feature_keys = Counter(
            "s3_unknown_feature_keys_total",
            "Feature keys a decision received that neither the bundle's [features] nor the "
            "engine reads (accepted and ignored: a typo in a producer shows here), by name",
            ["source", "key"],
            registry=r,
        )
        self._unknown_names: set[str] = set()
        self.same_ms_events = Counter(
            "s3_same_ms_events_total",
            "Stream events in the same millisecond as the previous event of their symbol; "
            "replayed=true: same side too, so the same intent id and the first decision again",
            ["symbol", "replayed"],
            registry=r,
        )
        self.shadow_diffs = Counter(
            "s3_shadow_diff_total",
            "Decisions where the shadow bundle differs",
            ["kind"],
            registry=r,
        )
        self.swallowed = Counter(
            "s3_swallowed_errors_total",
            "Errors a background job or a clean-up caught, logged and carried on after, by where",
            ["where"],
            registry=r,
        )

    def child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, remembered: prometheus_client checks the values and takes a
        lock on every call, and the decision path labels five series per decision."""
        key = (metric, values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    UNKNOWN_NAMES_MAX = 100
    UNKNOWN_NAME_CHARS = 64

    def count_unknown(self, source: str, names: Any) -> None:
        """Count unknown feature keys by name. Names are untrusted text: each is cut to 64
        characters, and past 100 distinct names the rest count as "(other)"."""
        for raw in names:
            name = str(raw)[: self.UNKNOWN_NAME_CHARS]
            if name not in self._unknown_names:
                if len(self._unknown_names) >= self.UNKNOWN_NAMES_MAX:
                    name = "(other)"
                else:
                    self._unknown_names.add(name)
            self.child(self.unknown_feature_keys, source, name).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def names(self) -> set[str]:
        """Every exported sample name (for the Grafana dashboard check)."""
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_sum", "_count"),
            "gauge": ("",),
        }
        out = set()
        for family in self.registry.collect():
            out |= {family.name + s for s in suffixes.get(family.type, ("",))}
            out |= {sample.name for sample in family.samples}
        return out


# -- errors a job survives --------------------------------------------------------------------------
_log = logging.getLogger("s3.swallowed")
SWALLOWED: collections.Counter[str] = collections.Counter()
"""Every error `swallowed` caught in this process, by ``where`` (also when no `Metrics` is at hand)."""
LOG_EVERY_S = 30.0
_last_logged: dict[str, float] = {}
_lock = threading.Lock()


@contextlib.contextmanager
def swallowed(metrics: Metrics | None, where: str) -> Iterator[None]:
    """Run the block; an `Exception` from it is counted (`SWALLOWED`, and
    ``s3_swallowed_errors_total{where}`` when ``metrics`` is given) and logged with its traceback
    (the first time, then at most once per `LOG_EVERY_S` per ``where``, so an outage retried
    every 0.2 s does not flood the log) instead of raised. For jobs that must go on and clean-ups
    that must not mask the error being handled; never for the decision itself."""
    try:
        yield
    except Exception:
        now = time.monotonic()
        with _lock:
            SWALLOWED[where] += 1
            count = SWALLOWED[where]
            due = now - _last_logged.get(where, -LOG_EVERY_S) >= LOG_EVERY_S
            if due:
                _last_logged[where] = now
        if metrics is not None:
            metrics.swallowed.labels(where).inc()
        if due:
            _log.warning(
                "%s failed (%d so far in this process); carrying on", where, count, exc_info=True
            )
