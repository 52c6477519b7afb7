"""Streams on real servers: the consumer-group worker (ack after the handler, reclaim, dead letters,
graceful stop, kill -9), the XAUTOCLAIM reply of Redis 6.2 and 7, the producers and cfg:events."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast
from unittest.mock import patch

import pytest
import redis
from redis.crc import key_slot

from s3.adapters.redis_client import Client
from s3.adapters.redis_keys import Keys
from s3.adapters.redis_server import RedisServer, server_version
from s3.adapters.redis_streams import (
    AutoclaimReply,
    EntryLost,
    ParsedEvent,
    ParseError,
    StreamWorker,
    WorkerConfig,
    WorkerStats,
    emit_order_cmd,
    emit_signal,
    parse_autoclaim_reply,
    parse_feature_entry,
    read_cfg_events,
)
from tests.conftest import RedisBackend

BTC, ETH, SOL = "BTCUSDT", "ETHUSDT", "SOLUSDT"
NO_REDIS7 = "no Redis 7 binary on this machine (set S3_TEST_REDIS7_BIN)"
_prefixes = itertools.count()


def feat(i: int, **over: str) -> dict[str, str]:
    fields = {
        "ts": str(1_730_000_000_000 + i),
        "mid": "60000.5",
        "spread_bps": "1.2",
        "depth_top1_usdt": "8000",
        "side_hint": "BUY",
        "seq": str(i),
    }
    fields.update(over)
    return fields


def produce(client: Client, keys: Keys, symbol: str, n: int, start: int = 0) -> list[str]:
    return [str(client.xadd(keys.feat_events(symbol), feat(start + i))) for i in range(n)]  # type: ignore[arg-type]


def pending_ids(client: Any, key: str, group: str = "g", consumer: str | None = None) -> list[str]:
    rows = client.xpending_range(key, group, "-", "+", 1000, consumername=consumer)
    return [r["message_id"] for r in rows]


def dead_letters(client: Any, keys: Keys) -> list[dict[str, str]]:
    return [f for _, f in client.xrange(keys.feat_dead_letter)]


def run_until(
    worker: StreamWorker, done: Callable[[], bool], timeout_s: float = 10.0
) -> WorkerStats:
    """`worker.run()` on a thread until ``done()``; then stop and join."""
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["stats"] = worker.run()
        except BaseException as exc:  # re-raised below, on the test's thread
            out["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.005)
    worker.stop()
    thread.join(timeout=10)
    assert not thread.is_alive(), "run() did not return after stop()"
    if "error" in out:
        raise out["error"]
    assert done(), "condition not reached in time"
    return out["stats"]  # type: ignore[no-any-return]


def config(**kw: Any) -> WorkerConfig:
    base: dict[str, Any] = dict(
        group="g", consumer="c1", symbols=(BTC,), start_id="0", block_ms=100, min_idle_ms=100
    )
    base.update(kw)
    return WorkerConfig(**base)


# -- parse_feature_entry ----------------------------------------------------------------------------
def test_a_flat_entry_parses_with_typed_features() -> None:
    parsed = parse_feature_entry(feat(1, atr="90.5", trades="120"), symbol=BTC)
    assert parsed == ParsedEvent(
        ts_ms=1_730_000_000_001,
        mid=60000.5,
        spread_bps=1.2,
        depth_top1_usdt=8000.0,
        features={
            "mid": 60000.5,
            "spread_bps": 1.2,
            "depth_top1_usdt": 8000,
            "side_hint": "BUY",
            "seq": 1,
            "atr": 90.5,
            "trades": 120,
        },
    )


def test_a_payload_entry_parses_and_keeps_flat_fields_beside_it() -> None:
    payload = {"ts": 1730000000000, "mid": 3000, "spread_bps": 0.5, "depth_top1_usdt": 1e4}
    parsed = parse_feature_entry({"payload": json.dumps(payload), "symbol": ETH}, symbol=ETH)
    assert isinstance(parsed, ParsedEvent)
    assert (parsed.ts_ms, parsed.mid, parsed.depth_top1_usdt) == (1730000000000, 3000.0, 10000.0)
    assert parsed.features["symbol"] == ETH


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"payload": "{not json"},
            ParseError(
                "PARSE.BAD_JSON",
                "payload",
                "field 'payload' is not valid JSON: JSON is malformed: object keys must be strings"
                " (byte 1)",
            ),
        ),
        (
            {"payload": "[1, 2]"},
            ParseError(
                "PARSE.BAD_JSON", "payload", "field 'payload' must be a JSON object, found list"
            ),
        ),
        ({}, ParseError("PARSE.MISSING_FIELD", "ts", "missing required field 'ts'")),
        (
            {k: v for k, v in feat(0).items() if k != "depth_top1_usdt"},
            ParseError(
                "PARSE.MISSING_FIELD", "depth_top1_usdt", "missing required field 'depth_top1_usdt'"
            ),
        ),
        (
            feat(0, mid="abc"),
            ParseError("PARSE.BAD_TYPE", "mid", "field 'mid' must be a number, found 'abc'"),
        ),
        (
            feat(0, ts="17.5"),
            ParseError(
                "PARSE.BAD_TYPE", "ts", "field 'ts' must be integer milliseconds, found '17.5'"
            ),
        ),
        (
            {"payload": json.dumps({**feat(0), "ts": True})},
            ParseError("PARSE.BAD_TYPE", "ts", "field 'ts' must be a number, found True"),
        ),
        (
            feat(0, spread_bps="nan"),
            ParseError(
                "PARSE.BAD_TYPE", "spread_bps", "field 'spread_bps' must be a number, found 'nan'"
            ),
        ),
        (
            feat(0, depth_top1_usdt="1e999"),
            ParseError(
                "PARSE.BAD_VALUE",
                "depth_top1_usdt",
                "field 'depth_top1_usdt' must be finite, found '1e999'",
            ),
        ),
        (
            feat(0, mid="-1"),
            ParseError("PARSE.BAD_VALUE", "mid", "field 'mid' must be > 0, found '-1'"),
        ),
        (
            feat(0, depth_top1_usdt="-5.0"),
            ParseError(
                "PARSE.BAD_VALUE",
                "depth_top1_usdt",
                "field 'depth_top1_usdt' must be >= 0, found '-5.0'",
            ),
        ),
        (feat(0, ts="0"), ParseError("PARSE.BAD_VALUE", "ts", "field 'ts' must be > 0, found '0'")),
        (
            feat(0, symbol=ETH),
            ParseError(
                "PARSE.BAD_VALUE",
                "symbol",
                "field 'symbol' is 'ETHUSDT' but the stream is for 'BTCUSDT'",
            ),
        ),
        (
            {**feat(0), "payload": json.dumps({"mid": 1})},
            ParseError("PARSE.BAD_VALUE", "mid", "field 'mid' is given both flat and in 'payload'"),
        ),
    ],
    ids=[
        "bad-json",
        "payload-not-object",
        "empty",
        "missing-depth",
        "mid-not-number",
        "ts-fraction",
        "ts-bool",
        "spread-nan",
        "depth-infinite",
        "mid-negative",
        "depth-negative",
        "ts-zero",
        "symbol-mismatch",
        "flat-and-payload",
    ],
)
def test_a_poison_entry_parses_to_a_precise_error(
    fields: dict[str, str], expected: ParseError
) -> None:
    assert parse_feature_entry(fields, symbol=BTC) == expected


# -- XAUTOCLAIM replies ------------------------------------------------------------------------------
def test_autoclaim_parser_on_the_raw_redis_62_shape() -> None:
    raw = [b"0-0", [[b"1-0", [b"mid", b"1"]], None, [b"3-0", [b"mid", b"3"]]]]
    assert parse_autoclaim_reply(raw) == AutoclaimReply(
        next_id="0-0",
        entries=[("1-0", {"mid": "1"}), ("3-0", {"mid": "3"})],
        deleted_ids=[],
        nil_entries=1,
    )


def test_autoclaim_parser_on_the_raw_redis_7_shape() -> None:
    raw = ["5-0", [["1-0", ["mid", "1"]], ["3-0", ["mid", "3"]]], ["2-0"]]
    assert parse_autoclaim_reply(raw) == AutoclaimReply(
        next_id="5-0",
        entries=[("1-0", {"mid": "1"}), ("3-0", {"mid": "3"})],
        deleted_ids=["2-0"],
        nil_entries=0,
    )


def test_autoclaim_parser_on_what_redis_py_makes_of_both() -> None:
    py62 = ["0-0", [("1-0", {"mid": "1"}), (None, None)]]
    py7 = ["0-0", [("1-0", {"mid": "1"})], ["2-0"]]
    assert parse_autoclaim_reply(py62) == AutoclaimReply("0-0", [("1-0", {"mid": "1"})], [], 1)
    assert parse_autoclaim_reply(py7) == AutoclaimReply("0-0", [("1-0", {"mid": "1"})], ["2-0"], 0)
    with pytest.raises(
        ValueError, match=r"^XAUTOCLAIM reply has 4 elements, expected 2 \(6\.2\) or 3 \(7\.x\)$"
    ):
        parse_autoclaim_reply(["0-0", [], [], []])


def _redis7_binary() -> str | None:
    explicit = os.environ.get("S3_TEST_REDIS7_BIN")
    if explicit:
        return explicit
    system = Path("/usr/bin/redis-server")
    if system.is_file() and server_version(str(system))[0] >= 7:
        return str(system)
    return None


@pytest.fixture(scope="module", params=["embedded", "redis7"])
def any_server(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """The embedded server (6.2) and, when one is found, a Redis 7 server."""
    if request.param == "embedded":
        yield request.getfixturevalue("redis_server")
        return
    binary = _redis7_binary()
    if binary is None:
        pytest.skip(NO_REDIS7)
    if server_version(binary)[0] < 7:
        pytest.fail(
            f"S3_TEST_REDIS7_BIN={binary} is Redis {server_version(binary)}, not 7 or later"
        )
    with RedisServer(binary=binary) as server:
        yield server


@pytest.fixture
def on_any(any_server: RedisServer) -> Iterator[tuple[Client, Keys, int]]:
    client = any_server.client()
    major = int(str(client.info("server")["redis_version"]).split(".")[0])
    try:
        yield client, Keys(prefix=f"v{next(_prefixes)}:"), major
    finally:
        client.close()


def test_redis_py_hands_over_each_versions_xautoclaim_reply(
    on_any: tuple[Client, Keys, int],
) -> None:
    client, keys, major = on_any
    key = keys.feat_events(BTC)
    client.xgroup_create(key, "g", id="0", mkstream=True)
    ids = produce(client, keys, BTC, 3)
    client.xreadgroup("g", "dead", {key: ">"}, count=10)
    client.xdel(key, ids[1])
    reply = client.xautoclaim(key, "g", "c2", 0, "0-0", count=10)
    parsed = parse_autoclaim_reply(reply)
    assert [i for i, _ in parsed.entries] == [ids[0], ids[2]]
    if major >= 7:
        assert len(reply) == 3
        assert (parsed.deleted_ids, parsed.nil_entries) == ([ids[1]], 0)
        assert pending_ids(client, key) == [ids[0], ids[2]]  # Redis 7 dropped it from the PEL
    else:
        assert len(reply) == 2
        assert reply[1][1] == (None, None)
        assert (parsed.deleted_ids, parsed.nil_entries) == ([], 1)
        assert pending_ids(client, key) == ids  # Redis 6.2 keeps it, and names it nowhere


def test_a_dead_consumers_entries_are_reclaimed_and_deleted_ones_dead_lettered(
    on_any: tuple[Client, Keys, int],
) -> None:
    client, keys, _ = on_any
    key = keys.feat_events(BTC)
    client.xgroup_create(key, "g", id="0", mkstream=True)
    ids = produce(client, keys, BTC, 5)
    client.xreadgroup("g", "dead", {key: ">"}, count=10)
    client.xdel(key, ids[2])
    seen: list[str] = []
    worker = StreamWorker(
        client, keys, lambda s, i, f: seen.append(i), config(min_idle_ms=200, count=2)
    )
    assert worker.poll(reclaim=True) == 0  # not idle long enough yet
    time.sleep(0.25)
    while worker.poll(reclaim=True):
        pass
    assert seen == [ids[0], ids[1], ids[3], ids[4]]
    assert pending_ids(client, key) == []
    [dlq] = dead_letters(client, keys)
    assert {k: dlq[k] for k in ("stream", "id", "error_code", "error", "attempts", "fields")} == {
        "stream": key,
        "id": ids[2],
        "error_code": "DELETED",
        "error": "the entry was deleted from the stream (trimmed by MAXLEN?) before it was handled",
        "attempts": "0",
        "fields": "",
    }
    assert worker.stats.reclaimed == 4


def test_an_entry_abandoned_too_often_is_dead_lettered_unhandled(
    on_any: tuple[Client, Keys, int],
) -> None:
    client, keys, _ = on_any
    key = keys.feat_events(BTC)
    client.xgroup_create(key, "g", id="0", mkstream=True)
    [entry_id] = produce(client, keys, BTC, 1)
    client.xreadgroup("g", "dead0", {key: ">"})
    for n in (1, 2):  # two more consumers take it over and die too: 3 deliveries
        client.xautoclaim(key, "g", f"dead{n}", 0, "0-0")
    seen: list[str] = []
    worker = StreamWorker(
        client, keys, lambda s, i, f: seen.append(i), config(max_attempts=3, min_idle_ms=1)
    )
    time.sleep(0.01)
    assert worker.poll(reclaim=True) == 1
    assert seen == []
    [dlq] = dead_letters(client, keys)
    assert (dlq["error_code"], dlq["attempts"], dlq["id"]) == ("ATTEMPTS", "4", entry_id)
    assert dlq["error"] == (
        "delivered 4 times without an acknowledgement (max_attempts 3); last error: unknown, its "
        "consumer stopped or crashed while handling it"
    )
    assert json.loads(dlq["fields"]) == feat(0)
    assert pending_ids(client, key) == []


def _check_a_failing_handler_is_retried_then_dead_lettered(client: Client, keys: Keys) -> None:
    key = keys.feat_events(BTC)
    ids = []
    calls: list[str] = []

    def handler(symbol: str, entry_id: str, fields: dict[str, str]) -> None:
        calls.append(entry_id)
        if fields["seq"] == "1":
            raise ValueError("boom")
        if fields["seq"] == "2" and calls.count(entry_id) == 1:
            raise RuntimeError("flaky")

    worker = StreamWorker(client, keys, handler, config(max_attempts=3, min_idle_ms=150))
    worker.ensure_groups()
    ids = produce(client, keys, BTC, 3)
    assert worker.poll() == 3
    assert pending_ids(client, key) == [ids[1], ids[2]]  # failed: left pending, not acked
    assert worker.poll(reclaim=True) == 0  # not idle yet
    time.sleep(0.2)
    assert worker.poll(reclaim=True) == 2  # delivery 2: "flaky" succeeds, "boom" fails again
    assert pending_ids(client, key) == [ids[1]]
    assert dead_letters(client, keys) == []
    time.sleep(0.2)
    assert worker.poll(reclaim=True) == 1  # delivery 3 = max_attempts: dead-lettered, acked
    assert calls == [ids[0], ids[1], ids[2], ids[1], ids[2], ids[1]]
    assert pending_ids(client, key) == []
    [dlq] = dead_letters(client, keys)
    assert {k: v for k, v in dlq.items() if k != "ts"} == {
        "stream": key,
        "symbol": BTC,
        "id": ids[1],
        "group": "g",
        "consumer": "c1",
        "fields": json.dumps(feat(1), separators=(",", ":")),
        "error_code": "HANDLER",
        "error": "handler raised ValueError: boom",
        "attempts": "3",
    }
    assert (worker.stats.handled, worker.stats.failed, worker.stats.dead_lettered) == (2, 4, 1)


def test_a_failing_handler_is_retried_then_dead_lettered(redis_backend: RedisBackend) -> None:
    _check_a_failing_handler_is_retried_then_dead_lettered(redis_backend.client, redis_backend.keys)


def test_a_failing_handler_is_retried_then_dead_lettered_on_each_version(
    on_any: tuple[Client, Keys, int],
) -> None:
    _check_a_failing_handler_is_retried_then_dead_lettered(on_any[0], on_any[1])


# -- the worker, standalone and cluster --------------------------------------------------------------
def test_the_handler_sees_every_entry_of_every_symbol_in_order(redis_backend: RedisBackend) -> None:
    client, keys = redis_backend.client, redis_backend.keys
    seen: dict[str, list[tuple[str, dict[str, str]]]] = {BTC: [], ETH: [], SOL: []}
    worker = StreamWorker(
        client,
        keys,
        lambda s, i, f: seen[s].append((i, f)),
        config(symbols=(BTC, ETH, SOL), count=7),
    )
    if redis_backend.mode == "cluster":  # one reader per slot
        slots = {key_slot(keys.feat_events(s).encode()) for s in (BTC, ETH, SOL)}
        assert len(worker.stream_groups) == len(slots) > 1
    else:
        assert worker.stream_groups == [tuple(keys.feat_events(s) for s in (BTC, ETH, SOL))]
    produced = {
        s: produce(client, keys, s, 20, start=100 * n) for n, s in enumerate((BTC, ETH, SOL))
    }
    stats = run_until(worker, lambda: sum(map(len, seen.values())) == 60)
    for n, s in enumerate((BTC, ETH, SOL)):
        assert seen[s] == [(i, feat(100 * n + k)) for k, i in enumerate(produced[s])]
        assert pending_ids(client, keys.feat_events(s)) == []
    assert (stats.handled, stats.acked, stats.dead_lettered) == (60, 60, 0)


def test_an_entry_is_acknowledged_only_after_its_handler_returned(
    redis_backend: RedisBackend,
) -> None:
    client, keys = redis_backend.client, redis_backend.keys
    key = keys.feat_events(BTC)
    pending_while_handled: list[bool] = []

    def handler(symbol: str, entry_id: str, fields: dict[str, str]) -> None:
        pending_while_handled.append(entry_id in pending_ids(client, key, consumer="c1"))

    worker = StreamWorker(client, keys, handler, config(count=3, ack_batch=1))
    worker.ensure_groups()
    produce(client, keys, BTC, 5)
    run_until(worker, lambda: len(pending_while_handled) == 5)
    assert pending_while_handled == [True] * 5
    assert pending_ids(client, key) == []


def test_poison_entries_go_to_the_dead_letter_stream_with_the_reason(
    redis_backend: RedisBackend,
) -> None:
    client, keys = redis_backend.client, redis_backend.keys
    key = keys.feat_events(ETH)
    seen: list[str] = []
    worker = StreamWorker(
        client, keys, lambda s, i, f: seen.append(f["seq"]), config(symbols=(ETH,))
    )
    worker.ensure_groups()
    poison = [
        {"payload": "{not json", "seq": "p1"},
        {k: v for k, v in feat(2).items() if k != "mid"},
        feat(3, spread_bps="wide"),
    ]
    ids = [client.xadd(key, f) for f in [feat(0), *poison, feat(4)]]  # type: ignore[arg-type]
    assert worker.poll() == 5
    assert seen == ["0", "4"]
    assert pending_ids(client, key) == []
    dlq = dead_letters(client, keys)
    assert [(d["id"], d["error_code"], d["error"], d["attempts"]) for d in dlq] == [
        (
            ids[1],
            "PARSE.BAD_JSON",
            "field 'payload' is not valid JSON: JSON is malformed: object keys must be strings (byte 1)",
            "1",
        ),
        (ids[2], "PARSE.MISSING_FIELD", "missing required field 'mid'", "1"),
        (ids[3], "PARSE.BAD_TYPE", "field 'spread_bps' must be a number, found 'wide'", "1"),
    ]
    assert [json.loads(d["fields"]) for d in dlq] == poison
    assert {d["stream"] for d in dlq} == {key}


def test_stop_finishes_the_entry_in_flight_and_leaves_the_rest_for_a_live_consumer(
    redis_backend: RedisBackend,
) -> None:
    client, keys = redis_backend.client, redis_backend.keys
    key = keys.feat_events(BTC)
    in_flight, release = threading.Event(), threading.Event()
    seen: list[str] = []

    def handler(symbol: str, entry_id: str, fields: dict[str, str]) -> None:
        if fields["seq"] == "2":
            in_flight.set()
            assert release.wait(5)
        seen.append(entry_id)

    # Two symbols: under a cluster they are in two slots, so this also stops the reader threads.
    worker = StreamWorker(client, keys, handler, config(symbols=(BTC, ETH), count=10))
    worker.ensure_groups()
    ids = produce(client, keys, BTC, 5)
    out: dict[str, WorkerStats] = {}
    thread = threading.Thread(target=lambda: out.setdefault("stats", worker.run()))
    thread.start()
    assert in_flight.wait(5)
    worker.stop()
    release.set()
    thread.join(5)
    assert not thread.is_alive()
    assert seen == ids[:3]
    assert out["stats"].acked == 3
    assert pending_ids(client, key, consumer="c1") == ids[3:]  # delivered, never started
    later: list[str] = []
    other = StreamWorker(
        client, keys, lambda s, i, f: later.append(i), config(consumer="c2", min_idle_ms=30)
    )
    time.sleep(0.05)
    other.poll(reclaim=True)
    assert later == ids[3:]
    assert pending_ids(client, key) == []


def _owner_and_idle(client: Any, key: str, entry_id: str) -> tuple[str, int, int] | None:
    rows = client.xpending_range(key, "g", entry_id, entry_id, 1)
    if not rows:
        return None
    r = rows[0]
    return str(r["consumer"]), int(r["time_since_delivered"]), int(r["times_delivered"])


def test_keep_holds_an_entry_of_this_consumer_and_refuses_one_taken_over(
    redis_backend: RedisBackend,
) -> None:
    client, keys = redis_backend.client, redis_backend.keys
    key = keys.feat_events(BTC)
    worker = StreamWorker(client, keys, lambda s, i, f: None, config(min_idle_ms=1000))
    worker.ensure_groups()
    [entry] = produce(client, keys, BTC, 1)
    client.xreadgroup("g", "c1", {key: ">"}, count=1)
    client.xclaim(key, "g", "c1", 0, [entry], idle=60_000, justid=True)  # as if long idle
    other = StreamWorker(client, keys, lambda s, i, f: None, config(consumer="c2"))
    assert worker.keep(BTC, entry) is True
    owner, idle_ms, delivered = _owner_and_idle(client, key, entry) or ("", -1, -1)
    # kept: idle again from now, so no XAUTOCLAIM (min idle 1 s here) takes it; not a delivery
    assert (owner, delivered) == ("c1", 1) and idle_ms < 1000
    client.xautoclaim(key, "g", "c2", 1000, "0-0", count=10)
    assert _owner_and_idle(client, key, entry)[:1] == ("c1",)  # type: ignore[index]
    client.xclaim(key, "g", "c2", 0, [entry], justid=True)  # taken over (this one stalled)
    assert worker.keep(BTC, entry) is False
    assert _owner_and_idle(client, key, entry)[:1] == ("c2",)  # type: ignore[index]
    assert other.keep(BTC, entry) is True
    client.xack(key, "g", entry)
    assert other.keep(BTC, entry) is False  # acknowledged: nobody's any more
    assert _owner_and_idle(client, key, entry) is None
    client.delete(key)
    assert worker.keep(BTC, entry) is False  # the stream (and its group) deleted


def test_an_entry_taken_over_while_it_waited_in_the_batch_is_left_to_its_new_consumer(
    redis_backend: RedisBackend,
) -> None:
    """Entries of a read batch wait for those before them; one that another consumer took over
    meanwhile is theirs: its handler does not run here, and this consumer does not ack it."""
    client, keys = redis_backend.client, redis_backend.keys
    key = keys.feat_events(BTC)
    seen: list[str] = []
    ids: list[str] = []

    def handler(symbol: str, entry_id: str, fields: dict[str, str]) -> None:
        seen.append(entry_id)
        if entry_id == ids[0]:  # a slow first entry: the second is taken over meanwhile
            time.sleep(0.01)
            assert client.xclaim(key, "g", "c2", 1, [ids[1]], justid=True) == [ids[1]]

    # min idle 1 ms: an entry that waited 0.5 ms is checked before its handler runs
    worker = StreamWorker(client, keys, handler, config(min_idle_ms=1, count=10))
    worker.ensure_groups()
    ids.extend(produce(client, keys, BTC, 3))
    assert worker.poll() == 3
    assert seen == [ids[0], ids[2]]
    assert worker.stats.lost == 1 and worker.stats.acked == 2 and worker.stats.failed == 0
    assert pending_ids(client, key) == [ids[1]]
    assert pending_ids(client, key, consumer="c2") == [ids[1]]
    assert dead_letters(client, keys) == []


def test_a_handler_that_finds_its_entry_taken_over_leaves_it_unacknowledged(
    redis_backend: RedisBackend,
) -> None:
    client, keys = redis_backend.client, redis_backend.keys
    key = keys.feat_events(BTC)
    worker: StreamWorker

    def handler(symbol: str, entry_id: str, fields: dict[str, str]) -> None:
        client.xclaim(key, "g", "c2", 0, [entry_id], justid=True)
        if not worker.keep(symbol, entry_id):
            raise EntryLost("taken over while waiting")

    worker = StreamWorker(client, keys, handler, config(max_attempts=1))
    worker.ensure_groups()
    [entry] = produce(client, keys, BTC, 1)
    assert worker.poll() == 1
    assert (worker.stats.lost, worker.stats.failed, worker.stats.acked) == (1, 0, 0)
    assert pending_ids(client, key, consumer="c2") == [entry]
    assert dead_letters(client, keys) == []  # not a failure: max_attempts=1 dead-letters none


def test_groups_are_created_once_and_recreated_if_the_stream_vanishes(
    redis_backend: RedisBackend,
) -> None:
    client, keys = redis_backend.client, redis_backend.keys
    key = keys.feat_events(BTC)
    worker = StreamWorker(client, keys, lambda s, i, f: None, config())
    worker.ensure_groups()
    worker.ensure_groups()  # BUSYGROUP is fine
    assert [g["name"] for g in client.xinfo_groups(key)] == ["g"]
    client.delete(key)
    assert worker.poll() == 0  # NOGROUP: the group (and stream) are made again
    assert [g["name"] for g in client.xinfo_groups(key)] == ["g"]


def test_the_worker_needs_decoded_responses_and_a_sane_config(redis_server: RedisServer) -> None:
    raw = redis.Redis(port=redis_server.port)
    with pytest.raises(
        ValueError, match=r"^StreamWorker needs a client made with decode_responses=True$"
    ):
        StreamWorker(raw, Keys(), lambda s, i, f: None, config())
    raw.close()
    with pytest.raises(ValueError, match=r"^WorkerConfig.symbols: give at least one symbol$"):
        config(symbols=())
    with pytest.raises(ValueError, match=r"must be >= 1$"):
        config(max_attempts=0)
    slow = redis_server.client(socket_timeout=0.5)
    with pytest.raises(ValueError) as info:
        StreamWorker(slow, Keys(), lambda s, i, f: None, config(block_ms=500))
    assert str(info.value) == (
        "WorkerConfig.block_ms (500) must be shorter than the client's socket timeout (0.5 s), "
        "or every blocking read times out"
    )
    slow.close()


# -- kill -9 -----------------------------------------------------------------------------------------
PROC = Path(__file__).with_name("stream_worker_proc.py")


def _records(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"H": [], "A": [], "S": []}
    for line in path.read_text().splitlines():
        kind, entry_id = line.split()
        out[kind].append(entry_id)
    return out


@pytest.mark.parametrize("ack_batch", [0, 1], ids=["ack-per-batch", "ack-per-entry"])
def test_kill_9_mid_batch_then_a_live_consumer_takes_over(
    redis_server: RedisServer, tmp_path: Path, ack_batch: int
) -> None:
    client = redis_server.client()
    keys = Keys(prefix=f"k{next(_prefixes)}:")
    key = keys.feat_events(BTC)
    client.xgroup_create(key, "g", id="0", mkstream=True)
    ids = produce(client, keys, BTC, 30)
    rec = tmp_path / "c1.rec"
    # c1 reads batches of 10 and sleeps in the handler of the 15th entry: the second batch is
    # delivered, entries 11-14 handled, 15 in flight, 16-20 not started.
    args = ["--address", redis_server.address, "--prefix", keys.prefix, "--group", "g"]
    args += ["--consumer", "c1", "--symbol", BTC, "--record", str(rec), "--count", "10"]
    args += ["--sleep-at", "15", "--ack-batch", str(ack_batch)]
    proc = subprocess.Popen([sys.executable, str(PROC), *args])
    try:
        deadline = time.monotonic() + 20
        while not (rec.exists() and _records(rec)["S"]):
            assert proc.poll() is None, "the worker process exited"
            assert time.monotonic() < deadline, "the worker process never reached the 15th entry"
            time.sleep(0.02)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
    killed = _records(rec)
    handled1, acked1 = killed["H"], killed["A"]
    assert killed["S"] == [ids[14]]
    pending1 = pending_ids(client, key, consumer="c1")
    assert Counter(acked1 + pending1) == Counter(ids[:20])  # delivered: acked xor pending
    assert acked1 == (ids[:14] if ack_batch == 1 else ids[:10])
    assert handled1 == ids[:14]

    handled2: list[str] = []
    acked2: list[str] = []
    worker = StreamWorker(
        client,
        keys,
        lambda s, i, f: handled2.append(i),
        config(consumer="c2", count=10, min_idle_ms=150, claim_interval_ms=50),
        on_acked=lambda s, batch: acked2.extend(batch),
    )
    stats = run_until(worker, lambda: len(acked2) == 30 - len(acked1))
    # Every entry is handled-and-acked exactly once across both consumers ...
    assert Counter(acked1 + acked2) == Counter(ids)
    assert Counter(handled2) == Counter(acked2) == Counter(set(ids) - set(acked1))
    # ... the killed one acked none of those taken over from it ...
    assert not set(acked1) & set(pending1)
    assert stats.reclaimed == len(pending1)
    # ... and what it handled but had not yet acked (ack per batch) was handled again.
    assert set(handled1) & set(handled2) == set(handled1) - set(acked1)
    assert pending_ids(client, key) == []
    client.close()


# -- producers and cfg:events ------------------------------------------------------------------------
def test_emit_signal_writes_the_spec_fields(redis_backend: RedisBackend) -> None:
    client, keys = redis_backend.client, redis_backend.keys
    entry_id = emit_signal(
        client,
        keys,
        {
            "ts": 1730000000000,
            "symbol": BTC,
            "decision": "open",
            "rules_fired": ["R-023", "R-045"],
            "model_p": 0.67,
            "config_rev": 129,
            "reason": "OK",
        },
    )
    emit_signal(
        client,
        keys,
        dict(ts=1, symbol=ETH, decision="skip", rules_fired=(), model_p=None, config_rev=129),
    )
    rows: Any = client.xrange(keys.sig_events)
    assert rows[0] == (
        entry_id,
        {
            "ts": "1730000000000",
            "symbol": BTC,
            "decision": "open",
            "rules_fired": '["R-023","R-045"]',
            "model_p": "0.67",
            "config_rev": "129",
            "reason": "OK",
        },
    )
    assert (rows[1][1]["rules_fired"], rows[1][1]["model_p"]) == ("[]", "")
    with pytest.raises(ValueError, match=r"^sig:events: missing field\(s\) model_p, config_rev$"):
        emit_signal(client, keys, dict(ts=1, symbol=BTC, decision="skip", rules_fired=[]))
    with pytest.raises(ValueError, match=r"^sig:events: rules_fired must be a list of rule ids$"):
        emit_signal(client, keys, dict(ts=1, symbol=BTC, decision="skip", rules_fired="R-1"))


def test_emit_signal_queued_on_a_pipeline(redis_backend: RedisBackend) -> None:
    """On a pipeline the XADD is queued (no id yet) and the pipeline is not spelled out: str() of
    a redis-py pipeline renders its whole connection pool, ~35 us per decision."""
    client, keys = redis_backend.client, redis_backend.keys
    pipe = client.pipeline(transaction=False)
    fields = dict(ts=2, symbol=BTC, decision="skip", rules_fired=[], model_p=None, config_rev=1)
    with patch.object(type(pipe), "__repr__", side_effect=AssertionError("repr of the pipeline")):
        assert emit_signal(pipe, keys, fields) is None
    (entry_id,) = pipe.execute()
    rows: Any = client.xrange(keys.sig_events)
    assert [r[0] for r in rows] == [entry_id] and rows[0][1]["ts"] == "2"


def test_emit_order_cmd_writes_the_spec_fields_exactly(redis_backend: RedisBackend) -> None:
    from decimal import Decimal

    client, keys = redis_backend.client, redis_backend.keys
    fields = {
        "intent_id": "s3-btc-1730000000000-x",
        "market": "FUT",
        "side": "BUY",
        "qty": Decimal("0.005"),
        "px": None,
        "sl_px": Decimal("59800.0"),
        "tp_px": Decimal("63100.5"),
        "policy": "MakerThenTaker",
    }
    emit_order_cmd(client, keys, BTC, fields)
    [(_, written)] = cast(Any, client.xrange(keys.ord_cmd(BTC)))
    assert written == {
        "intent_id": "s3-btc-1730000000000-x",
        "market": "FUT",
        "side": "BUY",
        "qty": "0.005",
        "sl_px": "59800.0",
        "tp_px": "63100.5",
        "policy": "MakerThenTaker",
    }
    for bad, message in [
        ({"side": "LONG"}, "ord:cmd:BTCUSDT: side must be BUY or SELL, found 'LONG'"),
        ({"market": "MARGIN"}, "ord:cmd:BTCUSDT: market must be FUT or SPOT, found 'MARGIN'"),
        ({"qty": "0"}, "ord:cmd:BTCUSDT: qty must be a number > 0, found '0'"),
        ({"qty": "lots"}, "ord:cmd:BTCUSDT: qty must be a number > 0, found 'lots'"),
    ]:
        with pytest.raises(ValueError) as info:
            emit_order_cmd(client, keys, BTC, {**fields, **bad})
        assert str(info.value) == message
    with pytest.raises(ValueError, match=r"^ord:cmd:BTCUSDT: missing field\(s\) policy$"):
        emit_order_cmd(client, keys, BTC, {k: v for k, v in fields.items() if k != "policy"})


def test_producers_bound_their_streams_with_maxlen(redis_backend: RedisBackend) -> None:
    client, keys = redis_backend.client, redis_backend.keys
    sig = dict(ts=1, symbol=BTC, decision="skip", rules_fired=[], model_p=None, config_rev=1)
    cmd = dict(intent_id="i", market="SPOT", side="SELL", qty="1", policy="Taker")
    for _ in range(600):
        emit_signal(client, keys, sig, maxlen=50)
        emit_order_cmd(client, keys, ETH, cmd, maxlen=50)
    # MAXLEN ~ trims whole radix-tree nodes (100 entries by default), never below the bound.
    for key in (keys.sig_events, keys.ord_cmd(ETH)):
        assert 50 <= client.xlen(key) < 50 + 100


def test_read_cfg_events_misses_nothing_between_calls(redis_backend: RedisBackend) -> None:
    client, keys = redis_backend.client, redis_backend.keys
    client.xadd(keys.cfg_events, {"rev": "1", "bundle_id": "old", "reason": "boot"})
    last, events = read_cfg_events(client, keys)  # "$": from now on
    assert events == []
    assert last != "$"
    client.xadd(keys.cfg_events, {"rev": "130", "bundle_id": "core", "reason": "publish"})
    client.xadd(keys.cfg_events, {"rev": "x", "bundle_id": "core", "reason": "typo"})
    last, events = read_cfg_events(client, keys, last)
    assert [(e.rev, e.bundle_id, e.reason) for e in events] == [
        (130, "core", "publish"),
        (None, "core", "typo"),
    ]
    assert last == events[-1].entry_id
    t0 = time.monotonic()
    assert read_cfg_events(client, keys, last, block_ms=50) == (last, [])
    assert time.monotonic() - t0 >= 0.04
