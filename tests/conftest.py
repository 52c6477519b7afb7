"""Shared fixtures: write small bundles to temporary directories."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

BASE_FEATURES = """\
mid = "number"
spread_bps = "number"
depth_top1_usdt = "number"
funding_next = "number"
trades = "int"
atr = { type = "number", optional = true }
oi = { type = "number", optional = true }
side = { type = "enum", values = ["BUY", "SELL"] }
regime = { type = "enum", values = ["trend", "range"] }
symbol = "string"
halted = "bool"
"""

BundleFactory = Callable[..., Path]


@pytest.fixture
def make_bundle(tmp_path: Path) -> BundleFactory:
    """Write ``bundle.toml`` and rule files; returns the bundle directory."""
    counter = iter(range(1000))

    def make(
        rules: str | dict[str, str],
        *,
        features: str = BASE_FEATURES,
        params: str = "",
        clamp: str = "",
        head: str = 'bundle_id = "t"\nrev = 7\n',
    ) -> Path:
        root = tmp_path / f"b{next(counter)}"
        root.mkdir()
        manifest = head
        if clamp:
            manifest += f"[clamp]\n{clamp}\n"
        manifest += f"[features]\n{features}\n"
        if params:
            manifest += f"[params]\n{params}\n"
        (root / "bundle.toml").write_text(manifest)
        files = {"main.rule": rules} if isinstance(rules, str) else rules
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        return root

    return make


SNAPSHOT = {
    "mid": 60000.0,
    "spread_bps": 1.0,
    "depth_top1_usdt": 8000.0,
    "funding_next": 0.0001,
    "trades": 120,
    "atr": 90.0,
    "side": "BUY",
    "regime": "trend",
    "symbol": "BTCUSDT",
    "halted": False,
}


# -- real Redis ------------------------------------------------------------------------------------
# One standalone redis-server and one 3-master Redis Cluster per test session, both real
# processes started from the binary the project's install provides (stopped by PID at the end).
# Each test gets its own key prefix instead of a flush, so tests never see each other's keys.

import itertools  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402

from s3.adapters.redis_client import Client, connect  # noqa: E402
from s3.adapters.redis_keys import Keys  # noqa: E402
from s3.adapters.redis_server import LocalCluster, RedisServer  # noqa: E402

_prefixes = itertools.count()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    with LocalCluster(masters=3) as cluster:
        yield cluster


@dataclass
class RedisBackend:
    """A client on a real server (standalone or cluster), keys under a prefix of this test's own."""

    mode: str
    client: Client
    keys: Keys
    addresses: list[str]


@pytest.fixture(params=["standalone", "cluster"])
def redis_backend(request: pytest.FixtureRequest) -> Iterator[RedisBackend]:
    if request.param == "standalone":
        server: RedisServer = request.getfixturevalue("redis_server")
        addresses = [server.address]
    else:
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        addresses = cluster.addresses
    client, keys = connect(addresses)
    prefix = f"t{next(_prefixes)}:"
    keys = Keys(prefix=prefix, risk_tag=keys.risk_tag)
    try:
        yield RedisBackend(request.param, client, keys, addresses)
    finally:
        client.close()
