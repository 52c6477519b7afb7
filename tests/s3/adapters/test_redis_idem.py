"""Idempotency markers on real Redis (standalone and a 3-master cluster): first caller, replay of
the stored result verbatim, in-progress, abandon, TTL expiry, and owners that cannot be overwritten
by a slow predecessor."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from s3.adapters.redis_idem import TOKEN_LEN, Begin, Idempotency
from s3.adapters.redis_server import RedisServer
from tests.conftest import RedisBackend

TTL_MS = 60_000


@pytest.fixture
def idem(redis_backend: RedisBackend) -> Idempotency:
    return Idempotency(redis_backend.client, redis_backend.keys)


@pytest.fixture
def other(redis_backend: RedisBackend) -> Iterator[Idempotency]:
    """A second service instance with its own (bytes) client, as another worker would be."""
    store = Idempotency.from_addresses(redis_backend.addresses, prefix=redis_backend.keys.prefix)
    yield store
    store.close()


def test_first_in_progress_then_replay_verbatim(
    idem: Idempotency, other: Idempotency, redis_backend: RedisBackend
) -> None:
    first = idem.begin("s3-btc-1-x", TTL_MS)
    assert (first.status, first.intent_id, first.result, first.ttl_ms) == (
        "first",
        "s3-btc-1-x",
        None,
        TTL_MS,
    )
    assert first.token is not None and len(first.token) == TOKEN_LEN
    key = redis_backend.keys.idem("s3-btc-1-x")
    assert redis_backend.client.get(key) == "P" + first.token
    assert 0 < redis_backend.client.pttl(key) <= TTL_MS

    busy = other.begin("s3-btc-1-x", TTL_MS)
    assert (busy.status, busy.token, busy.result) == ("in_progress", None, None)
    assert busy.ttl_ms is not None and 0 < busy.ttl_ms <= TTL_MS

    result = '{"decision":"open","intent":{"qty":"0.005","note":"ünïcode"}}'.encode()
    assert idem.complete("s3-btc-1-x", result, TTL_MS) == "stored"
    for store in (idem, other):
        replay = store.begin("s3-btc-1-x", TTL_MS)
        assert (replay.status, replay.result, replay.token) == ("replay", result, None)
    assert idem.complete("s3-btc-1-x", b"a second result", TTL_MS, token=first.token) == (
        "already_stored"
    )
    assert other.begin("s3-btc-1-x", TTL_MS).result == result


def test_abandon_lets_a_retry_decide_afresh(idem: Idempotency, other: Idempotency) -> None:
    first = idem.begin("i-1", TTL_MS)
    assert other.abandon("i-1") is False  # not its marker: nothing to delete
    assert other.abandon("i-1", token="0" * TOKEN_LEN) is False
    assert other.begin("i-1", TTL_MS).status == "in_progress"
    assert idem.abandon("i-1") is True
    retry = other.begin("i-1", TTL_MS)
    assert retry.status == "first" and retry.token != first.token
    assert idem.abandon("i-1", token=first.token) is False  # the old token no longer owns it
    assert other.complete("i-1", b"{}", TTL_MS) == "stored"
    assert other.abandon("i-1", token=retry.token) is False  # a stored result is never abandoned
    assert idem.begin("i-1", TTL_MS).result == b"{}"


def test_a_slow_first_caller_cannot_touch_a_later_owner(
    idem: Idempotency, other: Idempotency
) -> None:
    slow = idem.begin("i-2", 200)
    time.sleep(0.3)  # the slow caller's marker expires
    later = other.begin("i-2", TTL_MS)
    assert later.status == "first"
    assert idem.complete("i-2", b"slow result", TTL_MS, token=slow.token) == "not_owner"
    assert idem.abandon("i-2", token=slow.token) is False
    assert idem.begin("i-2", TTL_MS).status == "in_progress"  # the later owner's marker stands
    assert other.complete("i-2", b"later result", TTL_MS) == "stored"
    assert idem.begin("i-2", TTL_MS).result == b"later result"


def test_results_expire_with_their_ttl(idem: Idempotency, other: Idempotency) -> None:
    idem.begin("i-3", TTL_MS)
    assert idem.complete("i-3", b"r", 200) == "stored"
    assert other.begin("i-3", TTL_MS).status == "replay"
    time.sleep(0.3)
    assert other.begin("i-3", TTL_MS).status == "first"


def test_one_owner_among_racing_callers(redis_backend: RedisBackend) -> None:
    stores = [Idempotency(redis_backend.client, redis_backend.keys) for _ in range(16)]
    gate = threading.Barrier(16)

    def attempt(store: Idempotency) -> Begin:
        gate.wait()
        return store.begin("i-race", TTL_MS)

    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(attempt, stores))
    assert sorted(b.status for b in got) == ["first"] + ["in_progress"] * 15


def test_binary_results_need_a_bytes_client(idem: Idempotency, other: Idempotency) -> None:
    blob = bytes(range(256))
    other.begin("i-4", TTL_MS)
    assert other.complete("i-4", blob, TTL_MS) == "stored"
    assert other.begin("i-4", TTL_MS).result == blob

    idem.begin("i-5", TTL_MS)
    with pytest.raises(ValueError) as info:
        idem.complete("i-5", blob, TTL_MS)
    assert str(info.value) == (
        "this client decodes responses, so results must be UTF-8 to come back verbatim; "
        "use Idempotency.from_addresses for a bytes client"
    )


def test_a_foreign_value_reads_as_held(idem: Idempotency, redis_backend: RedisBackend) -> None:
    redis_backend.client.set(redis_backend.keys.idem("i-6"), "1", px=TTL_MS)
    assert idem.begin("i-6", TTL_MS).status == "in_progress"


def test_bad_arguments(idem: Idempotency) -> None:
    with pytest.raises(ValueError) as info:
        idem.begin("", TTL_MS)
    assert str(info.value) == "intent_id must not be empty"
    with pytest.raises(ValueError) as info:
        idem.begin("i-7", 0)
    assert str(info.value) == "ttl_ms must be positive, got 0"
    with pytest.raises(ValueError) as info:
        idem.complete("never-begun", b"x", TTL_MS)
    assert str(info.value) == "complete('never-begun'): this store did not begin that intent"


def test_a_claim_sent_again_after_its_answer_was_lost_is_still_ours(
    idem: Idempotency, other: Idempotency, redis_backend: RedisBackend
) -> None:
    """redis-py retries a command once when the connection drops: the claim may have been taken
    by the first send, and the second must not read our own marker as someone else's."""
    token = "a" * TOKEN_LEN
    key = redis_backend.keys.idem("s3-btc-lost-x")
    redis_backend.client.set(key, "P" + token, px=TTL_MS)  # the first send, whose answer was lost
    reply = idem._begin(keys=[key], args=["P" + token, TTL_MS])  # the retry, same token
    claim = idem.begin_reply("s3-btc-lost-x", token, TTL_MS, reply)
    assert (claim.status, claim.token) == ("first", token)
    assert idem.complete("s3-btc-lost-x", b"{}", TTL_MS) == "stored"
    assert other.begin("s3-btc-lost-x", TTL_MS).result == b"{}"
    assert other.begin("s3-btc-held-x", TTL_MS).status == "first"
    assert idem.begin("s3-btc-held-x", TTL_MS).status == "in_progress"  # another token: not ours


def test_pipelined_claim_and_result(redis_server: RedisServer) -> None:
    """`queue_begin`/`queue_complete` ride on the caller's pipeline; a server without the
    scripts (restarted) is served by the direct calls, which load them."""
    idem = Idempotency.from_addresses(redis_server.address, prefix="pipelined:")
    client = redis.Redis(host="127.0.0.1", port=redis_server.port)
    for flush in (False, True):
        iid = f"s3-btc-pipe-{flush}"
        if flush:
            client.script_flush()
        pipe = client.pipeline(transaction=False)
        pipe.get("unrelated")
        token = idem.queue_begin(pipe, iid, TTL_MS)
        _, reply = pipe.execute(raise_on_error=False)
        claim = idem.begin_reply(iid, token, TTL_MS, reply)
        assert claim.status == "first" and claim.token is not None
        if flush:
            client.script_flush()
        pipe = client.pipeline(transaction=False)
        token = idem.queue_complete(pipe, iid, b'{"x":1}', TTL_MS, token=claim.token)
        (reply,) = pipe.execute(raise_on_error=False)
        assert idem.complete_reply(iid, b'{"x":1}', TTL_MS, token, reply) == "stored"
        assert idem.begin(iid, TTL_MS).result == b'{"x":1}'
    idem.close()
    client.close()
