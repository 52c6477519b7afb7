"""The pipeline batcher on real Redis: pipelines handed over together run as one round trip, each
request gets exactly its own replies (errors included), a failed call fails every request of the
batch, a cancelled request's pipeline never runs, and a cluster keeps one pipeline per call."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
import redis
import redis.asyncio

from s3.adapters.redis_batch import PipelineBatcher, run_steps_async
from s3.adapters.redis_client import _HiredisPacking, async_twin, connect
from s3.adapters.redis_server import LocalCluster, RedisServer, free_port
from s3.engine import run_steps

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


def test_the_twin_copies_the_settings(redis_server: RedisServer) -> None:
    client = _client(redis_server)
    twin = async_twin(client)
    assert twin is not None and twin.connection_pool.connection_class is _HiredisPacking
    kw = twin.connection_pool.connection_kwargs
    given = client.connection_pool.connection_kwargs
    for name in ("host", "port", "db", "socket_timeout", "decode_responses"):
        assert kw[name] == given[name], name
    assert async_twin(redis.Redis(unix_socket_path="/tmp/nothing.sock")) is None


@pytest.mark.parametrize(
    "args",
    [
        ("SET", "k", "v"),
        ("EVALSHA", "0" * 40, 1, "key", "Ptoken", 30000),
        ("XADD", "s", "MAXLEN", "~", 1000, "*", "f", "ü€"),
        ("SET", "k", b"\x00\xff"),
        ("SET", "k", 0.1),
        ("SET", "k", 1e-7),
        ("SET", "k", -3),
        ("CONFIG GET", "maxmemory"),
    ],
)
def test_the_twin_packs_what_redis_py_packs(args: tuple[Any, ...]) -> None:
    plain, fast = redis.asyncio.Connection(), _HiredisPacking()
    assert b"".join(fast.pack_command(*args)) == b"".join(plain.pack_command(*args))


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
def test_past_the_batch_limit_the_rest_follows(redis_server: RedisServer, n: int) -> None:
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
    assert sizes == ([1] if n == 1 else [64, 6])
