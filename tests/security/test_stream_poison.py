"""Poison events on the real stream consumer (a real redis-server, the real `Runner` and engine):
whatever an entry carries, it ends in the dead-letter stream with its reason and the worker goes
on; an entry the engine refuses as input is dead-lettered at once, its bar counted once; a
stream thread that dies anyway fails `/health` and makes `s3 serve` exit 1."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from s3.adapters.redis_server import RedisServer
from s3.adapters.redis_streams import StreamWorker, WorkerConfig
from s3.service import Service
from s3.worker import Runner
from tests.security.robust_helpers import EXAMPLE, serving, settings, wait_for

BTC = "BTCUSDT"


@pytest.fixture
def service(tmp_path: Path, redis_server: RedisServer) -> Iterator[Service]:
    svc = Service.from_settings(settings(tmp_path, redis_server.address))
    svc.engine.redis.set(svc.engine.keys.kill_switch, "OFF")
    svc.engine.redis.set(svc.engine.keys.health, "GREEN")
    yield svc
    svc.close()


@pytest.fixture
def runner(service: Service) -> Iterator[Runner]:
    r = Runner(service, consumer="c1", min_idle_ms=200, block_ms=50, jobs=False)
    yield r
    r.stop()


def good(service: Service, **over: str) -> dict[str, str]:
    fields = {k: str(v) for k, v in EXAMPLE.items() if k not in ("symbol", "side")}
    fields.update(ts=str(service.engine.clock_ms()), side_hint="BUY")
    fields.update(over)
    return fields


def xadd(service: Service, fields: dict[str, str], symbol: str = BTC) -> str:
    e = service.engine
    return str(e.redis.xadd(e.keys.feat_events(symbol), fields))  # type: ignore[arg-type]


def dead_letters(service: Service) -> list[dict[str, str]]:
    e = service.engine
    return [f for _, f in e.redis.xrange(e.keys.feat_dead_letter)]


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_stream_poison_entries_are_dead_lettered_and_the_worker_lives_on(
    service: Service, runner: Runner
) -> None:
    big = "1" * 400
    poison: list[tuple[dict[str, str], str, str]] = [
        # (fields, error_code, words of the reason)
        (good(service, mid=big), "PARSE.BAD_VALUE", "field 'mid' must be finite"),
        (good(service, spread_bps="-" + big), "PARSE.BAD_VALUE", "'spread_bps' must be finite"),
        (good(service, depth_top1_usdt=big + ".5"), "PARSE.BAD_VALUE", "must be finite"),
        (good(service, ts=big), "PARSE.BAD_VALUE", "field 'ts'"),
        (good(service, ts=str(2**53)), "PARSE.BAD_VALUE", "at most 2**53-1"),
        (
            {"payload": '{"x":' + nested(5000) + "}", **good(service)},
            "PARSE.BAD_JSON",
            "nested too deeply",
        ),
        (
            {"payload": json.dumps({"x": json.loads(nested(100))}), **good(service)},
            "PARSE.BAD_VALUE",
            "deeper than 32",
        ),
    ]
    ids = [xadd(service, fields) for fields, _, _ in poison]
    last = xadd(service, good(service))
    runner.start()
    wait_for(lambda: runner.handled == 1, what="the good entry after the poison ones")
    dlq = dead_letters(service)
    assert [d["id"] for d in dlq] == ids
    for d, (fields, code, words) in zip(dlq, poison, strict=True):
        assert d["error_code"] == code, d
        assert words in d["error"], d
        assert len(d["error"]) < 300, "an error quotes a bounded part of the value"
        assert d["attempts"] == "1"
        assert json.loads(d["fields"]) == fields
    e = service.engine
    assert e.redis.xpending(e.keys.feat_events(BTC), service.settings.stream_group)["pending"] == 0
    assert runner.worker.stats.handled == 1 and runner.worker.stats.dead_lettered == len(ids)
    assert service.health().streams == "ok" and not service.dead_threads
    assert last not in {d["id"] for d in dlq}


def test_stream_bytes_that_are_not_utf8_are_dead_lettered(
    service: Service, runner: Runner, redis_server: RedisServer
) -> None:
    # A producer writes raw bytes: every read of the entry used to raise UnicodeDecodeError in
    # the client, killing each worker that read or claimed it.
    raw = redis_server.client()  # writes the bytes as they are
    key = service.engine.keys.feat_events(BTC)
    fields = {k.encode(): v.encode() for k, v in good(service).items()}
    bad = str(raw.xadd(key, {**fields, b"mid": b"\xff\xfe60000"}))
    raw.xadd(key, {**fields, b"\xc3(": b"1"})  # a field name that is not UTF-8 either
    xadd(service, good(service))
    runner.start()
    wait_for(lambda: runner.handled == 2, what="the entries after the raw bytes")
    [d] = dead_letters(service)
    assert (d["id"], d["error_code"]) == (bad, "PARSE.BAD_TYPE")
    assert "\ufffd" in d["error"] and "mid" in d["error"]
    assert service.health().streams == "ok"


def test_stream_a_check_that_raises_dead_letters_the_entry(
    service: Service, redis_server: RedisServer
) -> None:
    # Whatever the validation raises is the entry's fault: dead-lettered with the exception,
    # never out of the worker (here a validator of the caller's that trips on its input).
    def validate(fields: dict[str, str], *, symbol: str) -> None:
        if fields.get("boom"):
            raise RecursionError("maximum recursion depth exceeded")
        return None

    e = service.engine
    seen: list[str] = []
    worker = StreamWorker(
        e.redis,
        e.keys,
        lambda s, i, f: seen.append(i),
        WorkerConfig(group="gx", consumer="c", symbols=(BTC,), start_id="0", block_ms=50),
        validate=validate,
    )
    worker.ensure_groups()
    bad = xadd(service, {"boom": "1"})
    ok = xadd(service, {"fine": "1"})
    assert worker.poll() == 2
    assert seen == [ok]
    [d] = dead_letters(service)
    assert (d["id"], d["error_code"], d["attempts"]) == (bad, "PARSE.ERROR", "1")
    assert (
        d["error"] == "the entry cannot be read: RecursionError: maximum recursion depth exceeded"
    )


def test_stream_an_input_error_is_dead_lettered_at_once_and_its_bar_counted_once(
    service: Service, runner: Runner
) -> None:
    # A bar whose funding field is not a number: the engine refuses it (400 on /decide). Every
    # attempt would fail the same, so it goes to the dead-letter stream at the first; the bar
    # went into the ATR state once (a retry used to fold it in again: bars=5 for one bar).
    bar = good(service, high="61800", low="61700", close="61750", funding_next="soon")
    entry = xadd(service, bar)
    runner.start()
    wait_for(lambda: runner.worker.stats.dead_lettered == 1, what="the dead letter")
    # Long enough for several redeliveries (min idle 0.2 s) had the entry been left pending.
    threading.Event().wait(1.5)
    [d] = dead_letters(service)
    assert (d["id"], d["error_code"], d["attempts"]) == (entry, "INPUT.BAD_FEATURE", "1")
    assert "funding_next" in d["error"]
    assert runner.worker.stats.failed == 1
    assert service.engine.atr_states[BTC].bars == 1


def test_stream_a_retried_bar_is_counted_once(service: Service, runner: Runner) -> None:
    # A failure that is not the entry's fault (here the engine fails twice, then works) is
    # retried; the bar still counts once.
    engine = service.engine
    real = engine.decide
    calls: list[int] = []

    def flaky(**kw: Any) -> Any:
        calls.append(1)
        if len(calls) <= 2:
            raise RuntimeError("transient")
        return real(**kw)

    engine.decide = flaky  # type: ignore[method-assign]
    xadd(service, good(service, high="61800", low="61700", close="61750"))
    runner.start()
    wait_for(lambda: runner.handled == 1, what="the third attempt")
    assert len(calls) == 3 and dead_letters(service) == []
    assert engine.atr_states[BTC].bars == 1


def test_stream_a_dead_stream_thread_fails_health(service: Service, runner: Runner) -> None:
    fatal: list[str] = []
    service.on_fatal.append(fatal.append)
    runner.start()
    xadd(service, good(service))
    wait_for(lambda: runner.handled == 1, what="a first decision")
    assert service.health().status == "OK"
    # The stream key overwritten by something else: XREADGROUP answers WRONGTYPE, which no
    # retry cures. The thread dies, and says so.
    e = service.engine
    e.redis.delete(e.keys.feat_events(BTC))
    e.redis.set(e.keys.feat_events(BTC), "not a stream")
    wait_for(lambda: bool(service.dead_threads), what="the stream thread's death")
    h = service.health()
    assert h.status == "DEGRADED" and "streams" in h.degraded
    assert h.streams.startswith("dead: ResponseError: WRONGTYPE"), h.streams
    assert len(fatal) == 1 and "s3-stream" in fatal[0]


def test_stream_serve_exits_1_when_its_stream_thread_dies(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    prefix = "rbserve:"
    with serving(
        tmp_path, S3_REDIS_ADDRESSES=redis_server.address, S3_REDIS_PREFIX=prefix
    ) as served:
        assert httpx.get(served.url + "/health", timeout=5).json()["streams"] == "ok"
        r = redis_server.client()
        r.delete(f"{prefix}feat:events:{BTC}")
        r.set(f"{prefix}feat:events:{BTC}", "not a stream")
        try:
            code = served.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("s3 serve kept running with a dead stream thread")
        out = served.output()
    assert code == 1, out
    assert "background thread s3-stream died" in out and "WRONGTYPE" in out
