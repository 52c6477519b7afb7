"""The engine's round trips to Redis, on a real standalone server and a real 3-master cluster.

A fresh skip costs two round trips on a standalone server (the state with the idempotency claim;
`sig:events` with the result) and the same effects on a cluster, where redis-py refuses scripts in
pipelines and each goes on its own. A server that lost its scripts (a restart) changes nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import ClusterPipeline, RedisCluster

from s3.core.decide import intent_id
from s3.service import Service
from tests.conftest import RedisBackend
from tests.http.test_api import make_service, seed

_prefixes = itertools.count()


@pytest.fixture
def service(tmp_path: Path, redis_backend: RedisBackend) -> Iterator[Service]:
    svc = make_service(tmp_path, ",".join(redis_backend.addresses), None, f"rt{next(_prefixes)}:")
    seed(svc)
    svc.engine.redis.set(svc.engine.keys.concurrency("BTCUSDT"), "99")  # every BUY: a skip
    yield svc
    svc.close()


class RoundTrips:
    """Counts what reaches the network: one command, or one pipeline."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        for cls in (redis.Redis, RedisCluster):
            self._wrap(monkeypatch, cls, "execute_command")
        for cls in (redis.client.Pipeline, ClusterPipeline):
            self._wrap(monkeypatch, cls, "execute")

    def _wrap(self, monkeypatch: pytest.MonkeyPatch, cls: type, name: str) -> None:
        original = getattr(cls, name)

        def counted(obj: Any, *a: Any, **kw: Any) -> Any:
            if name == "execute_command" and isinstance(
                obj, redis.client.Pipeline | ClusterPipeline
            ):
                return original(obj, *a, **kw)  # queued, not sent
            self.count += 1
            return original(obj, *a, **kw)

        monkeypatch.setattr(cls, name, counted)


def decide(svc: Service, t0: int) -> Any:
    return svc.engine.decide(symbol="BTCUSDT", side_hint="BUY", t0_ms=t0, trigger="manual")


def test_a_fresh_skip_then_its_retry(
    service: Service, redis_backend: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    e = service.engine
    decide(service, 1_799_000_000_000)  # the server learns the scripts (first use: NOSCRIPT)
    e.redis.delete(e.keys.sig_events)
    trips = RoundTrips(monkeypatch)
    first = decide(service, 1_800_000_000_000)
    assert (first.decision.decision, first.decision.reason_detail) == (
        "skip",
        "RISK_BUDGET.CONCURRENCY",
    )
    assert trips.count == (2 if redis_backend.mode == "standalone" else 4)
    entries = e.redis.xrange(e.keys.sig_events)
    assert len(entries) == 1
    assert entries[0][1]["decision"] == "skip" and entries[0][1]["side"] == "BUY"
    iid = intent_id("BTCUSDT", "BUY", 1_800_000_000_000, e.registry.current.rev)
    assert str(e.redis.get(e.keys.idem(iid))).startswith("R")  # the result, stored
    again = decide(service, 1_800_000_000_000)
    assert again.replayed and again.decision == first.decision
    assert len(e.redis.xrange(e.keys.sig_events)) == 1  # a replay emits nothing
    assert (
        len(service.store.signals_by_symbol("BTCUSDT", 1_800_000_000_000, 1_800_000_000_001)) == 1
    )


def test_scripts_lost_by_the_server_are_loaded_again(
    service: Service, redis_backend: RedisBackend
) -> None:
    e = service.engine
    decide(service, 1_800_000_000_001)
    if isinstance(e.redis, RedisCluster):
        for node in e.redis.get_primaries():
            e.redis.get_redis_connection(node).script_flush()
    else:
        e.redis.script_flush()
    d = decide(service, 1_800_000_000_002)
    assert not d.replayed and d.decision.decision == "skip"
    assert decide(service, 1_800_000_000_002).replayed  # the result was stored after all
    assert len(e.redis.xrange(e.keys.sig_events)) == 2
