"""The pipeline batcher and its lean connection on real Redis: replies exactly as redis-py gives
them, the client's settings (user, password, database, name), pipelines handed over together run
as one round trip, each request gets exactly its own replies (errors included), a failed
connection fails every request on it and the next one reconnects, a cancelled request's pipeline
never runs, and a cluster keeps one pipeline per call."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
import redis
from redis.exceptions import NoScriptError

from s3.adapters.redis_batch import PipelineBatcher, run_steps_async
from s3.adapters.redis_client import connect
from s3.adapters.redis_server import LocalCluster, RedisServer, free_port
from s3.adapters.redis_wire import Wire, wire_settings
from s3.steps import run_steps
from tests.chaos.proxy import JitterProxy

_ids = itertools.count()


def _client(server: RedisServer) -> Any:
    client, _ = connect(server.address)
    return client


def hand_over(client: Any, pipes: list[Any], sizes: list[int] | None = None) -> list[Any]:
    """Hand ``pipes`` to a fresh batcher in one turn of a loop; their replies (or errors)."""

    async def main() -> list[Any]:
        batcher = PipelineBatcher(client, on_batch=None if sizes is None else sizes.append)
        try:
            futures = [batcher.execute(p) for p in pipes]
            return list(await asyncio.gather(*futures, return_exceptions=True))
        finally:
            await batcher.aclose()

    return asyncio.run(main())


def hand_over_then(client: Any, first: list[Any], then: Any) -> tuple[list[Any], Any]:
    """``first`` handed to a fresh batcher in one turn (their replies or errors, waited for at
    most 5 s), then ``then`` on the same batcher: how its connection is after them."""

    async def main() -> tuple[list[Any], Any]:
        batcher = PipelineBatcher(client)
        try:
            both = asyncio.gather(*(batcher.execute(p) for p in first), return_exceptions=True)
            got = await asyncio.wait_for(both, 5)  # never left waiting forever
            return list(got), await batcher.execute(then)
        finally:
            await batcher.aclose()

    return asyncio.run(main())


def _same_state(client: Any, k: str) -> None:
    client.set(k + "s", "v")
    client.set(k + "n", "41")
    client.set(k + "raw", b"\x00\xff")
    client.hset(k + "h", mapping={"a": "1", "b": "2"})
    client.zadd(k + "z", {"x": 1.5, "y": 2})
    client.delete(k + "x")


def _all_shapes(client: Any, k: str, sha: str) -> Any:
    """A pipeline over the reply shapes the engine meets, and some it may."""
    p = client.pipeline(transaction=False)
    p.mget([k + "s", k + "missing", k + "n"])
    p.hgetall(k + "h")
    p.hgetall(k + "missing")
    p.hgetall(k + "s")  # WRONGTYPE: an error reply in place
    p.incr(k + "n")
    p.set(k + "t", "ü€", px=60_000)
    p.get(k + "t")
    if not client.get_encoder().decode_responses:
        p.get(k + "raw")
    p.zrange(k + "z", 0, -1, withscores=True)
    p.xadd(k + "x", {"f": "v", "g": 1.25}, id="1-1", maxlen=100)
    p.xrange(k + "x")
    p.evalsha(sha, 1, k + "h")
    p.evalsha("0" * 40, 0)  # NOSCRIPT
    p.exists(k + "s", k + "missing")
    p.ttl(k + "missing")
    return p


def _shape(reply: Any) -> Any:
    return (type(reply).__name__, str(reply)) if isinstance(reply, Exception) else reply


@pytest.mark.parametrize("decode", [True, False])
def test_the_wire_answers_what_redis_py_answers(redis_server: RedisServer, decode: bool) -> None:
    client = redis.Redis(port=redis_server.port, decode_responses=decode, socket_timeout=2)
    sha = client.script_load("return {KEYS[1], redis.call('HGET', KEYS[1], 'a'), 7}")
    k = f"w{next(_ids)}:"
    _same_state(client, k)
    expected = _all_shapes(client, k, sha).execute(raise_on_error=False)
    _same_state(client, k)
    (got,) = hand_over(client, [_all_shapes(client, k, sha)])
    assert [_shape(r) for r in got] == [_shape(r) for r in expected]
    assert isinstance(got[3], redis.ResponseError) and isinstance(got[-3], NoScriptError)
    if decode:  # bytes that are not UTF-8 fail the request, as in redis-py; the next one works
        p = client.pipeline(transaction=False)
        p.get(k + "raw")
        with pytest.raises(UnicodeDecodeError):
            p.execute()
        p = client.pipeline(transaction=False)
        p.get(k + "raw")
        q = client.pipeline(transaction=False)
        q.get(k + "s")
        (bad,), good = hand_over_then(client, [p], q)
        assert isinstance(bad, UnicodeDecodeError) and good == ["v"]


@pytest.mark.parametrize(
    "args",
    [
        ("SET", "k", "v"),
        ("EVALSHA", "0" * 40, 1, "key", "Ptoken", 30000),
        ("XADD", "s", b"MAXLEN", b"~", "1000", "*", "f", "ü€"),
        ("SET", "k", b"\x00\xff"),
        ("SET", "k", bytearray(b"ab")),
        ("SET", "k", memoryview(b"ab")),
        ("SET", "k", 0.1),
        ("SET", "k", 1e-7),
        ("SET", "k", -3),
        ("CONFIG GET", "maxmemory"),
        (b"GET", "k"),
        ("SET", "k", True),  # refused by both
    ],
)
def test_the_wire_packs_what_redis_py_packs(args: tuple[Any, ...]) -> None:
    settings = wire_settings(redis.Redis())
    assert settings is not None
    loop = asyncio.new_event_loop()
    try:
        pack = Wire(settings, {}, loop)._pack
        encoder = redis.connection.Encoder("utf-8", "strict", False)
        plain = redis.connection.PythonRespSerializer(6000, encoder.encode)
        try:
            expected = b"".join(plain.pack(*args))
        except redis.DataError:
            with pytest.raises(redis.DataError):
                pack(args)
            return
        assert pack(args) == expected
    finally:
        loop.close()


def test_the_wire_takes_the_clients_settings(redis_server: RedisServer) -> None:
    admin = _client(redis_server)
    user = f"wire{next(_ids)}"
    admin.acl_setuser(user, enabled=True, passwords=["+s3cret"], keys=["*"], commands=["+@all"])
    client = redis.Redis(
        port=redis_server.port,
        db=3,
        username=user,
        password="s3cret",
        client_name="s3-wire-test",
        decode_responses=True,
    )
    assert wire_settings(client) is not None
    p = client.pipeline(transaction=False)
    p.set("wire:db", "three")
    p.client_getname()
    assert hand_over(client, [p]) == [[True, "s3-wire-test"]]
    assert redis.Redis(port=redis_server.port, db=3).get("wire:db") == b"three"
    assert admin.get("wire:db") is None  # db 0 untouched
    refused = redis.Redis(port=redis_server.port, username=user, password="wrong")
    p = refused.pipeline(transaction=False)
    p.get("x")
    (err,) = hand_over(refused, [p])
    assert isinstance(err, redis.AuthenticationError), err
    assert wire_settings(redis.Redis(unix_socket_path="/tmp/nothing.sock")) is None
    assert wire_settings(redis.Redis(ssl=True)) is None


def test_a_reply_its_callback_refuses_fails_that_request_only(redis_server: RedisServer) -> None:
    client = redis.Redis(port=redis_server.port, decode_responses=True)
    k = f"w{next(_ids)}:"
    client.set(k + "a", "1")

    def refuse(reply: Any, **_: Any) -> Any:
        raise ValueError(f"cannot shape {reply!r}")

    client.response_callbacks["STRLEN"] = refuse
    bad = client.pipeline(transaction=False)
    bad.strlen(k + "a")
    good = client.pipeline(transaction=False)
    good.get(k + "a")
    again = client.pipeline(transaction=False)
    again.get(k + "a")

    (refused, fine), later = hand_over_then(client, [bad, good], again)
    assert isinstance(refused, ValueError) and fine == ["1"] and later == ["1"]


def test_a_stalled_or_lost_connection_fails_its_requests_then_reconnects(
    redis_server: RedisServer,
) -> None:
    proxy = JitterProxy(upstream=("127.0.0.1", redis_server.port)).start()
    client = redis.Redis(port=proxy.port, socket_timeout=0.3, decode_responses=True)
    k = f"w{next(_ids)}:"

    def pipe(n: int) -> Any:
        p = client.pipeline(transaction=False)
        p.incr(k + "n", n)
        return p

    async def main() -> list[Any]:
        batcher = PipelineBatcher(client)
        loop = asyncio.get_running_loop()
        try:
            out = [await batcher.execute(pipe(1))]
            proxy.stall(1.0)
            started = loop.time()
            stalled = await asyncio.gather(batcher.execute(pipe(10)), return_exceptions=True)
            out += [stalled, loop.time() - started]
            proxy.calm()
            out.append(await batcher.execute(pipe(100)))  # a fresh connection
            slow = batcher.execute(pipe(1000))
            await asyncio.sleep(0)  # written
            proxy.stall(1.0)
            await asyncio.sleep(0.05)
            proxy.drop()
            out.append((await asyncio.gather(slow, return_exceptions=True))[0])
            proxy.calm()
            out.append(await batcher.execute(pipe(0)))
            return out
        finally:
            await batcher.aclose()

    try:
        first, (timed_out,), waited, after, lost, last = asyncio.run(main())
        stored = int(client.get(k + "n") or 0)
    finally:
        proxy.stop()
    assert first == [1]
    assert isinstance(timed_out, redis.TimeoutError) and 0.25 < waited < 0.9, (timed_out, waited)
    assert isinstance(lost, redis.ConnectionError) and not isinstance(lost, redis.TimeoutError)
    # sent before the stall and the drop, those commands may have run (nothing is sent twice)
    assert after[0] - 101 in (0, 10) and last[0] == stored
    assert stored - after[0] in (0, 10, 1000, 1010)


def test_concurrent_pipelines_share_one_round_trip_and_keep_their_replies(
    redis_server: RedisServer,
) -> None:
    client = _client(redis_server)
    k = f"b{next(_ids)}:"
    client.set(k + "text", "not a hash")
    sizes: list[int] = []
    assert PipelineBatcher(client).batches
    pipes = []
    for i in range(5):
        p = client.pipeline(transaction=False)
        p.set(f"{k}{i}", str(i))
        p.incr(k + "count")
        if i == 2:
            p.hgetall(k + "text")  # WRONGTYPE: an error reply, for this request only
        p.get(f"{k}{i}")
        pipes.append(p)
    replies = hand_over(client, pipes, sizes)
    assert sizes == [5]  # handed over in one turn of the loop: one batch
    for i, r in enumerate(replies):
        if i == 2:
            assert r[:2] == [True, 3] and isinstance(r[2], redis.ResponseError) and r[3] == "2"
        else:
            assert r[0] is True and r[-1] == str(i) and r[1] == i + 1  # in the order handed over


def test_a_failed_call_fails_every_request_of_the_batch() -> None:
    client = redis.Redis(port=free_port(), socket_connect_timeout=0.2, socket_timeout=0.2)
    pipes = [client.pipeline(transaction=False) for _ in range(3)]
    for p in pipes:
        p.get("x")
    out = hand_over(client, pipes)
    assert len(out) == 3 and all(isinstance(x, redis.ConnectionError) for x in out), out


def test_a_cancelled_request_runs_nothing(redis_server: RedisServer) -> None:
    client = _client(redis_server)
    k = f"b{next(_ids)}:gone"

    async def main() -> None:
        batcher = PipelineBatcher(client)
        p = client.pipeline(transaction=False)
        p.set(k, "1")
        fut = batcher.execute(p)
        fut.cancel()  # before the loop's next turn, where the batch starts
        await asyncio.sleep(0.05)
        await batcher.aclose()

    asyncio.run(main())
    assert client.get(k) is None


def test_steps_are_driven_alike_by_both_drivers(redis_server: RedisServer) -> None:
    client = _client(redis_server)
    k = f"b{next(_ids)}:"

    def steps(n: int) -> Any:
        total = 0
        for i in range(n):
            p = client.pipeline(transaction=False)
            p.incrby(k + "sum", i)
            p.get(k + "missing")
            (_total, missing) = yield p
            assert missing is None
            total += i
        try:
            p = client.pipeline(transaction=False)
            p.hgetall(k + "sum")  # WRONGTYPE, returned in the replies, raised here
            (bad,) = yield p
            raise bad
        except redis.ResponseError:
            return total, int(client.get(k + "sum") or 0)

    assert run_steps(steps(4)) == (6, 6)

    async def main() -> Any:
        batcher = PipelineBatcher(client)
        try:
            return await run_steps_async(steps(4), batcher)
        finally:
            await batcher.aclose()

    assert asyncio.run(main()) == (6, 12)


def test_a_cluster_runs_each_pipeline_as_it_comes(redis_cluster: LocalCluster) -> None:
    client, _ = connect(redis_cluster.addresses)
    k = f"{{b{next(_ids)}}}:"
    sizes: list[int] = []
    assert not PipelineBatcher(client).batches
    pipes = []
    for i in range(3):
        p = client.pipeline(transaction=False)
        p.set(f"{k}{i}", str(i))
        p.get(f"{k}{i}")
        pipes.append(p)
    assert hand_over(client, pipes, sizes) == [[True, "0"], [True, "1"], [True, "2"]]
    assert sizes == [1, 1, 1]
    client.close()


@pytest.mark.parametrize("n", [1, 70])
def test_every_pipeline_of_a_turn_goes_in_one_batch(redis_server: RedisServer, n: int) -> None:
    client = _client(redis_server)
    k = f"b{next(_ids)}:"
    sizes: list[int] = []
    pipes = []
    for _ in range(n):
        p = client.pipeline(transaction=False)
        p.incr(k + "n")
        pipes.append(p)
    replies = hand_over(client, pipes, sizes)
    assert [r[0] for r in replies] == list(range(1, n + 1))
    assert sizes == [n]
