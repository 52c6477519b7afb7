"""Redis connections (standalone or Cluster, from `S3_REDIS_ADDRESSES`) and the one read of the
state a decision needs: one round trip per node (a pipeline; a cluster pipeline groups by node)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio
from redis.backoff import ExponentialBackoff
from redis.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.retry import Retry

from s3.adapters.redis_keys import Keys
from s3.core.types import MarketState

Client = redis.Redis | RedisCluster
Pipeline = redis.client.Pipeline | ClusterPipeline


def parse_addresses(raw: str | Sequence[str]) -> list[tuple[str, int]]:
    """``host1:6379,host2:6379`` -> [(host, port), ...]; a clear error for anything else."""
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    out = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"S3_REDIS_ADDRESSES: '{item}' is not host:port")
        out.append((host, int(port)))
    if not out:
        raise ValueError("S3_REDIS_ADDRESSES: no address given")
    return out


def connect(addresses: str | Sequence[str], *, timeout_s: float = 2.0) -> tuple[Client, Keys]:
    """One address: a standalone client; several: a Redis Cluster client. Keys follow the mode."""
    nodes = parse_addresses(addresses)
    # Fail fast: one quick retry, then the caller answers 503 and its client retries.
    common: dict[str, Any] = dict(
        decode_responses=True,
        # Bytes that are not UTF-8 (a producer's bug, or worse) read as U+FFFD: the entry or
        # value is then refused with a reason where it is checked, instead of every read of it
        # raising UnicodeDecodeError (a stream entry would kill each worker that claims it).
        encoding_errors="replace",
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(ExponentialBackoff(cap=0.1, base=0.01), 1),
    )
    if len(nodes) == 1:
        host, port = nodes[0]
        return redis.Redis(host=host, port=port, health_check_interval=30, **common), Keys.for_mode(
            cluster=False
        )
    cluster = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes], **common)
    return cluster, Keys.for_mode(cluster=True)


def is_cluster(client: Client) -> bool:
    return isinstance(client, RedisCluster)


def _float(v: Any) -> float | None:
    try:
        return float(v) if v is not None else None
    except (TypeError, ValueError):
        return None


def queue_state(pipe: Any, keys: Keys, symbol: str) -> int:
    """Queue the reads of `read_state` on a pipeline; returns how many replies they add.

    A standalone server reads the six counters with one MGET; a cluster pipeline sends six GETs
    (the keys live in different slots, and MGET needs one)."""
    singles = (
        keys.kill_switch,
        keys.health,
        keys.funding_next(symbol),
        keys.budget_inuse("FUT"),
        keys.budget_inuse("SPOT"),
        keys.concurrency(symbol),
    )
    cluster = isinstance(pipe, ClusterPipeline)  # once: slow for redis-py's classes
    if cluster:
        for key in singles:
            pipe.get(key)
    else:
        pipe.mget(singles)
    pipe.hgetall(keys.feat_last(symbol))
    return len(singles) + 1 if cluster else 2


def parse_state(replies: Sequence[Any]) -> tuple[MarketState, dict[str, str]]:
    """The replies of `queue_state` (either shape) as the market state and `feat:last:{SYMBOL}`."""
    *singles, last = replies
    kill, health, funding, fut, spot, conc = singles[0] if len(singles) == 1 else singles
    state = MarketState(
        kill_switch=kill,
        health=health,
        funding_next=_float(funding),
        fut_margin_inuse_usdt=_float(fut) or 0.0,
        spot_quote_inuse_usdt=_float(spot) or 0.0,
        concurrency=int(_float(conc) or 0),
    )
    return state, dict(last or {})


def read_state(client: Client, keys: Keys, symbol: str) -> tuple[MarketState, dict[str, str]]:
    """Kill switch, health, funding, budgets, concurrency and `feat:last:{SYMBOL}` in one pipeline.

    A value that is not a number (someone wrote garbage) reads as missing: the gates then treat
    it as the spec says (kill switch OFF only when truly missing, health RED).
    """
    pipe = client.pipeline(transaction=False)
    queue_state(pipe, keys, symbol)
    return parse_state(pipe.execute())
