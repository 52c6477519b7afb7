"""The `store` fixture: the Store contract suite runs on SQLite (a temporary file) always, on
the ArangoDB adapter over `arango_fake.FakeArango` (python-arango and the adapter for real, the
server in memory) always, and on a real ArangoDB when `S3_TEST_ARANGO_URL` names a server
(http://user:pass@host:8529; `make test-arango` makes that half fail instead of skip when the
server is missing).

A real ArangoDB gets one fresh database per test session, dropped at the end; each test starts
from empty collections. The fake one is new for each test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from s3.adapters.arango_store import COLLECTIONS, ArangoStore, ArangoTarget
from s3.adapters.sqlite_store import SqliteStore
from s3.ports import Store
from tests.s3.adapters.arango_fake import FakeArango

ARANGO_ENV = "S3_TEST_ARANGO_URL"
ARANGO_SKIP = f"{ARANGO_ENV} is not set"
ARANGO_REQUIRED_ENV = "S3_TEST_ARANGO_REQUIRED"
FAKE_URL = "http://root:@arango.invalid:8529/s3"

StoreFactory = Callable[[], Store]
"""Opens one more store on the same backend and data (another connection or client)."""


@pytest.fixture(scope="session")
def arango_target() -> Iterator[ArangoTarget]:
    """A fresh database on the server of `S3_TEST_ARANGO_URL`, dropped after the session."""
    from arango.client import ArangoClient

    url = os.environ.get(ARANGO_ENV)
    if not url:
        if os.environ.get(ARANGO_REQUIRED_ENV):
            pytest.fail(f"{ARANGO_SKIP} (make test-arango needs a server)")
        pytest.skip(ARANGO_SKIP)
    server = ArangoTarget.parse(url)
    client = ArangoClient(hosts=server.hosts)
    sys_db = client.db("_system", server.username, server.password, verify=True)
    name = f"s3_test_{uuid.uuid4().hex[:12]}"
    sys_db.create_database(name)
    try:
        yield ArangoTarget(server.hosts, name, server.username, server.password)
    finally:
        sys_db.delete_database(name, ignore_missing=True)
        client.close()


def open_arango(target: ArangoTarget) -> ArangoStore:
    """As the engine opens it: `from_url`, with the store's own HTTP client."""
    return ArangoStore.from_url(
        f"{target.hosts}/{target.database}", username=target.username, password=target.password
    )


@pytest.fixture
def fake_arango() -> FakeArango:
    """An in-memory ArangoDB; inserts stay in flight 0.3 ms, so racing writers of one key meet
    write-write conflicts (1200) as on a real server."""
    return FakeArango(commit_delay_s=0.0003)


def open_fake(fake: FakeArango, **kwargs: Any) -> ArangoStore:
    return ArangoStore.from_url(FAKE_URL, http_client=fake.client(), **kwargs)


@pytest.fixture(params=["sqlite", "arango_fake", "arango"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    opened: list[Store] = []

    if request.param == "sqlite":
        path = tmp_path / "store.db"

        def make() -> Store:
            opened.append(SqliteStore(path))
            return opened[-1]

    elif request.param == "arango_fake":
        fake: FakeArango = request.getfixturevalue("fake_arango")

        def make() -> Store:
            opened.append(open_fake(fake))
            return opened[-1]

    else:
        target: ArangoTarget = request.getfixturevalue("arango_target")

        def make() -> Store:
            opened.append(open_arango(target))
            return opened[-1]

        first = open_arango(target)
        for name in COLLECTIONS:
            first.db.collection(name).truncate()
        first.close()

    try:
        yield make
    finally:
        for store in opened:
            store.close()


@pytest.fixture
def store(store_factory: StoreFactory) -> Store:
    return store_factory()
