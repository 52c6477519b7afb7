"""The embedded server, the cluster, key names and the one-round-trip state read (real Redis)."""

from __future__ import annotations

import pytest

from s3.adapters.redis_client import connect, parse_addresses, read_state
from s3.adapters.redis_keys import Keys
from s3.adapters.redis_server import RedisServer, server_version
from tests.conftest import RedisBackend


def test_the_install_provides_a_redis_server() -> None:
    major, minor, _ = server_version()
    assert (major, minor) >= (6, 2)


def test_server_stops_by_pid() -> None:
    server = RedisServer().start()
    pid = server.pid
    assert server.client().ping()
    server.stop()
    import os

    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_spec_key_names_standalone_and_tagged_under_a_cluster() -> None:
    k = Keys.for_mode(cluster=False)
    assert [
        k.kill_switch,
        k.health,
        k.budget_inuse("FUT"),
        k.budget_inuse("SPOT"),
        k.concurrency("BTCUSDT"),
        k.feat_last("BTCUSDT"),
        k.funding_next("BTCUSDT"),
        k.cfg_rcu_rev,
        k.idem("s3-btc-1-x"),
        k.feat_events("BTCUSDT"),
        k.sig_events,
        k.ord_cmd("BTCUSDT"),
        k.cfg_events,
    ] == [
        "prod:kill_switch",
        "prod:health:system:state",
        "risk:budget:fut_margin:inuse",
        "risk:budget:spot_quote:inuse",
        "risk:concurrency:BTCUSDT",
        "feat:last:BTCUSDT",
        "funding:next:BTCUSDT",
        "cfg:rcu:rev",
        "idem:order:s3-btc-1-x",
        "feat:events:BTCUSDT",
        "sig:events",
        "ord:cmd:BTCUSDT",
        "cfg:events",
    ]
    c = Keys.for_mode(cluster=True, prefix="s3:")
    assert c.budget_inuse("FUT") == "s3:{risk}risk:budget:fut_margin:inuse"
    assert c.concurrency("ETHUSDT") == "s3:{risk}risk:concurrency:ETHUSDT"
    assert c.kill_switch == "s3:prod:kill_switch"


def test_every_risk_key_is_in_one_slot_under_a_cluster(redis_cluster: object) -> None:
    from redis.crc import key_slot

    k = Keys.for_mode(cluster=True, prefix="x:")
    slots = {
        key_slot(key.encode())
        for key in (
            k.budget_inuse("FUT"),
            k.budget_inuse("SPOT"),
            k.concurrency("BTCUSDT"),
            k.concurrency("ETHUSDT"),
            k.ledger,
            k.ledger_pending,
        )
    }
    assert len(slots) == 1


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ("", "S3_REDIS_ADDRESSES: no address given"),
        ("localhost", "S3_REDIS_ADDRESSES: 'localhost' is not host:port"),
        ("a:1,b:notaport", "S3_REDIS_ADDRESSES: 'b:notaport' is not host:port"),
        ("h:70000", "S3_REDIS_ADDRESSES: 'h:70000' is not host:port"),
    ],
)
def test_bad_addresses(raw: str, error: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_addresses(raw)
    assert str(info.value) == error


def test_one_address_is_standalone_several_a_cluster(
    redis_server: RedisServer, redis_cluster: object
) -> None:
    from redis.cluster import RedisCluster

    client, keys = connect(redis_server.address)
    assert not isinstance(client, RedisCluster) and keys.risk_tag == ""
    client.close()
    client, keys = connect(redis_cluster.addresses)  # type: ignore[attr-defined]
    assert isinstance(client, RedisCluster) and keys.risk_tag == "{risk}"
    client.close()


def test_read_state(redis_backend: RedisBackend) -> None:
    c, k = redis_backend.client, redis_backend.keys
    state, last = read_state(c, k, "BTCUSDT")
    assert (state.kill_switch, state.health, state.funding_next, state.concurrency, last) == (
        None,
        None,
        None,
        0,
        {},
    )
    c.set(k.kill_switch, "ON")
    c.set(k.health, "YELLOW")
    c.set(k.funding_next("BTCUSDT"), "0.00012")
    c.set(k.budget_inuse("FUT"), "40.5")
    c.set(k.concurrency("BTCUSDT"), "1")
    c.hset(k.feat_last("BTCUSDT"), mapping={"mid": "60000", "ts": "1"})
    state, last = read_state(c, k, "BTCUSDT")
    assert (
        state.kill_switch,
        state.health,
        state.funding_next,
        state.fut_margin_inuse_usdt,
        state.concurrency,
    ) == ("ON", "YELLOW", 0.00012, 40.5, 1)
    assert last == {"mid": "60000", "ts": "1"}
    c.set(k.funding_next("BTCUSDT"), "garbage")
    assert read_state(c, k, "BTCUSDT")[0].funding_next is None
