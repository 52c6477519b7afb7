"""The ArangoDB adapter without a server: what it sends, and what it makes of each answer.

`arango_fake.FakeArango` stands behind python-arango's own HTTP client interface, so the adapter
and python-arango run for real and only the server is in memory (the contract suite in
test_store.py runs on it too). Here:

- golden files pin every request (method, path, query parameters, AQL text, bind variables)
  of setup and of each store operation (`pytest --snapshot-update` is deliberate);
- each kind of answer (success, 1210, 1200, lock timeout, 401, 403, 404/1203, 404/1228, 503,
  a timeout) is mapped as the SQLite twin maps the same situation;
- least privilege, covering indexes, number types, and the driver's retry on a reset
  connection (this one on a real loopback socket, through python-arango's real HTTP stack).
"""

from __future__ import annotations

import logging
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import requests
from syrupy.assertion import SnapshotAssertion

from s3.adapters import arango_store
from s3.adapters.arango_store import ArangoStore, WriteRetry, store_http_client
from s3.adapters.sqlite_store import SqliteStore
from s3.errors import DependencyUnavailable
from s3.ports import BundleConflictError
from s3.replay import record
from s3.replay.replay import _diff_paths, _plain
from tests.s3.adapters.arango_fake import (
    CONFLICT,
    FORBIDDEN,
    LOCK_TIMEOUT,
    NO_COLLECTION,
    NO_DATABASE,
    UNAUTHORIZED,
    UNAVAILABLE,
    Answer,
    FakeArango,
    User,
    error,
)
from tests.s3.adapters.conftest import FAKE_URL, open_fake
from tests.s3.adapters.test_store import T0, bundle, evt, sig

DOC = "/_api/document/signals"


@pytest.fixture
def fake() -> FakeArango:
    return FakeArango()


@pytest.fixture
def store(fake: FakeArango) -> Iterator[ArangoStore]:
    s = open_fake(fake, retry=WriteRetry(attempts=4, base_s=0.0005, cap_s=0.002))
    fake.reset_calls()
    yield s
    s.close()


# -- golden requests -------------------------------------------------------------------------------


def test_setup_on_an_empty_database(fake: FakeArango, snapshot: SnapshotAssertion) -> None:
    open_fake(fake).close()
    assert fake.shown() == snapshot
    assert {background for _, _, background in fake.indexes_built} == {True}


def test_setup_when_everything_exists_only_reads(
    fake: FakeArango, snapshot: SnapshotAssertion
) -> None:
    open_fake(fake).close()
    fake.reset_calls()
    open_fake(fake).close()
    assert fake.shown() == snapshot
    assert {c.method for c in fake.calls} == {"get"}


def test_the_requests_of_each_operation(
    store: ArangoStore, fake: FakeArango, snapshot: SnapshotAssertion
) -> None:
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("put_signal", lambda: store.put_signal(sig())),
        ("put_signal again", lambda: store.put_signal(sig())),
        ("get_signal", lambda: store.get_signal("SIG:1/x+y%z")),
        ("signals_by_symbol", lambda: store.signals_by_symbol("BTCUSDT", T0, T0 + 9, limit=5)),
        ("signals_between newest", lambda: store.signals_between(limit=2, newest_first=True)),
        ("put_decision", lambda: store.put_decision(sig(t0=T0 + 1), evt(ts=T0 + 1))),
        ("events_by_kind", lambda: store.events_by_kind("DECIDE", t_to=T0 + 5)),
        ("events_between symbol", lambda: store.events_between(symbol="BTCUSDT", limit=1)),
        ("put_bundle", lambda: store.put_bundle(bundle(rev=1))),
        ("put_bundle again", lambda: store.put_bundle(bundle(rev=1))),
        ("list_bundles", lambda: store.list_bundles()),
        ("list_bundles of one", lambda: store.list_bundles("core")),
        ("set_active", lambda: store.set_active("core", 1, bundle()["checksum"], "boot", activated_at=T0)),
        ("get_active", lambda: store.get_active()),
        ("ping", lambda: store.ping()),
    ]  # fmt: skip
    sent: dict[str, list[dict[str, Any]]] = {}
    for name, step in steps:
        fake.reset_calls()
        step()
        sent[name] = fake.shown()
    assert sent == snapshot


def test_a_page_ending_among_equal_times_reads_that_time_whole(
    store: ArangoStore, fake: FakeArango, snapshot: SnapshotAssertion
) -> None:
    for sid in ("SIG-a", "SIG-B", "SIG-_x"):
        store.put_signal(sig(signal_id=sid))
    fake.reset_calls()
    assert [s.signal_id for s in store.signals_between(limit=2)] == ["SIG-B", "SIG-_x"]
    assert fake.shown() == snapshot  # the page (limit + 1 rows), then the tie at T0
    fake.reset_calls()
    store.signals_between(limit=3)  # ends with the last row: no second query
    assert len(fake.calls) == 1


# -- each answer, mapped as the SQLite twin maps the same situation --------------------------------


def outcome(call: Callable[[], Any]) -> tuple[Any, ...]:
    """What the HTTP edge makes of a call: its value, a 503 with its code, or a 500."""
    try:
        return ("ok", call())
    except DependencyUnavailable as exc:
        return (503, exc.code)
    except (ValueError, BundleConflictError):  # pragma: no cover - not expected here
        raise
    except Exception:
        return (500, "unmapped")


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "twin.db", busy_timeout_s=0.1, checkpoint_every_s=None)
    yield s
    s.close()


def hold_write_lock(path: str, for_s: float) -> threading.Thread:
    """Another process's writer: holds SQLite's write lock ``for_s`` seconds."""
    taken = threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        taken.set()
        time.sleep(for_s)
        conn.execute("ROLLBACK")
        conn.close()

    t = threading.Thread(target=hold)
    t.start()
    taken.wait()
    return t


def sqlite_conn(s: SqliteStore) -> sqlite3.Connection:
    conn = s._conn
    assert conn is not None
    return conn


Twin = Callable[[SqliteStore], Callable[[], Any]]


def busy_for(seconds: float) -> Twin:
    def twin(s: SqliteStore) -> Callable[[], Any]:
        holder = hold_write_lock(s.path, seconds)

        def call() -> Any:
            try:
                return s.put_signal(sig())
            finally:
                holder.join()

        return call

    return twin


def duplicate(s: SqliteStore) -> Callable[[], Any]:
    s.put_signal(sig())
    return lambda: s.put_signal(sig())


def read_only(s: SqliteStore) -> Callable[[], Any]:
    sqlite_conn(s).execute("PRAGMA query_only = ON")
    return lambda: s.put_signal(sig())


def no_table(s: SqliteStore) -> Callable[[], Any]:
    sqlite_conn(s).execute("DROP TABLE signals")
    return lambda: s.put_signal(sig())


def plain(s: SqliteStore) -> Callable[[], Any]:
    return lambda: s.put_signal(sig())


ANSWERS: list[tuple[str, Answer | BaseException, int, Twin, tuple[Any, ...]]] = [
    # (situation, the server's answer to the insert, how many times, the SQLite twin, outcome)
    ("stored already (1210)", error(409, 1210, "unique constraint violated"), 1, duplicate, ("ok", False)),
    ("a conflict, then free (1200)", CONFLICT, 2, busy_for(0.02), ("ok", True)),
    ("a lock timeout, then free", LOCK_TIMEOUT, 3, busy_for(0.02), ("ok", True)),
    ("lock timeout, old code 18", error(500, 18, "lock timeout"), 1, busy_for(0.02), ("ok", True)),
    ("conflict that lasts", CONFLICT, 99, busy_for(0.4), (503, "STORE_UNAVAILABLE")),
    ("no rights (403)", FORBIDDEN, 1, read_only, (503, "STORE_UNAVAILABLE")),
    ("credentials refused (401)", UNAUTHORIZED, 1, busy_for(0.4), (503, "STORE_UNAVAILABLE")),
    ("shedding load (503)", UNAVAILABLE, 1, busy_for(0.4), (503, "STORE_UNAVAILABLE")),
    ("a read timeout", requests.exceptions.ReadTimeout("read timed out"), 1, busy_for(0.4), (503, "STORE_UNAVAILABLE")),
    ("connection refused", requests.exceptions.ConnectionError("refused"), 1, busy_for(0.4), (503, "STORE_UNAVAILABLE")),
    ("database dropped (404/1228)", NO_DATABASE, 1, busy_for(0.4), (503, "STORE_UNAVAILABLE")),
    ("collection dropped (404/1203)", NO_COLLECTION, 1, no_table, (500, "unmapped")),
    ("success", (202, {}), 1, plain, ("ok", True)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("answer", "times", "twin", "expected"),
    [a[1:] for a in ANSWERS],
    ids=[a[0] for a in ANSWERS],
)
def test_each_answer_is_mapped_as_sqlite_maps_its_twin(
    store: ArangoStore,
    fake: FakeArango,
    sqlite: SqliteStore,
    answer: Answer | BaseException,
    times: int,
    twin: Twin,
    expected: tuple[Any, ...],
) -> None:
    fake.fail("post", DOC, answer, times)
    got = outcome(lambda: store.put_signal(sig()))
    assert got == outcome(twin(sqlite)) == expected
    inserts = [c for c in fake.calls if c.path == DOC]
    if expected == ("ok", True) and isinstance(answer, tuple) and answer[0] == 409:
        assert len(inserts) == times + 1  # retried until the key was free
        assert store.conflicts_retried == times
    if expected[0] == 503 and answer in (CONFLICT,):
        assert len(inserts) == 4  # WriteRetry(attempts=4): then 503


def test_conflicts_on_set_active_are_retried(store: ArangoStore, fake: FakeArango) -> None:
    b = bundle()
    store.put_bundle(b)
    fake.fail("post", "/_api/document/config_active", CONFLICT, 2)
    a = store.set_active("core", 1, b["checksum"], "boot")
    assert store.get_active() == a
    assert store.conflicts_retried == 2
    fake.fail("post", "/_api/document/config_active", CONFLICT, 99)
    with pytest.raises(DependencyUnavailable) as err:
        store.set_active("core", 1, b["checksum"], "again")
    assert err.value.detail == (
        "arangodb s3: config_active/active: still in conflict with another writer after 4 "
        "attempts (1200: write-write conflict; conflicting key: k)"
    )


def test_the_backoff_is_jittered_and_capped() -> None:
    import random

    retry, rng = WriteRetry(attempts=8, base_s=0.002, cap_s=0.1), random.Random(7)
    delays = [[retry.delay(n, rng) for n in range(8)] for _ in range(200)]
    for n in range(8):
        column = [d[n] for d in delays]
        assert min(column) >= 0 and max(column) <= min(0.1, 0.002 * 2**n)
        assert len(set(column)) > 150  # spread, not in step
    assert max(sum(d) for d in delays) < 0.45


def test_racing_writers_meet_conflicts_and_none_surfaces(fake: FakeArango) -> None:
    fake.commit_delay_s = 0.0005
    stores = [open_fake(fake) for _ in range(6)]
    barrier, wrote, errors = threading.Barrier(6), [0] * 6, []

    def work(i: int) -> None:
        barrier.wait()
        try:
            for n in range(30):
                wrote[i] += stores[i].put_signal(sig(t0=T0 + n))
        except BaseException as exc:  # pragma: no cover - the failure shown below
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert errors == []
    assert sum(wrote) == 30  # each id written once; every other writer got False
    assert fake.conflicts > 0 and sum(s.conflicts_retried for s in stores) == fake.conflicts
    for s in stores:
        s.close()


def test_opening_maps_like_opening_sqlite(fake: FakeArango, tmp_path: Path) -> None:
    def arango(url: str) -> tuple[Any, ...]:
        return outcome(lambda: ArangoStore.from_url(url, http_client=fake.client()).close())

    def sqlite(path: Path) -> tuple[Any, ...]:
        return outcome(lambda: SqliteStore(path).close())

    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 100)
    unavailable = (503, "STORE_UNAVAILABLE")
    assert arango("http://root:wrong@arango.invalid:8529/s3") == sqlite(tmp_path) == unavailable
    assert arango("http://root:@arango.invalid:8529/nope") == sqlite(junk) == unavailable
    assert arango(FAKE_URL) == sqlite(tmp_path / "ok.db") == ("ok", None)
    fresh = FakeArango(databases=())
    made = ArangoStore.from_url(FAKE_URL, http_client=fresh.client(), create_database=True)
    made.close()
    assert "s3" in fresh.dbs and set(fresh.dbs["s3"]) == set(arango_store.COLLECTIONS)


# -- least privilege -------------------------------------------------------------------------------


def test_an_engine_without_schema_rights_runs_once_the_schema_exists() -> None:
    fake = FakeArango(
        users={"admin": User("a"), "engine": User("e", "collections"), "reader": User("r", "ro")}
    )

    def url(user: str, password: str) -> str:
        return f"http://{user}:{password}@arango.invalid:8529/s3"

    with pytest.raises(DependencyUnavailable) as err:  # nothing made yet: it may not make it
        ArangoStore.from_url(url("engine", "e"), http_client=fake.client())
    assert "403" in err.value.detail and "forbidden" in err.value.detail
    ArangoStore.from_url(url("admin", "a"), http_client=fake.client()).close()
    fake.reset_calls()
    engine = ArangoStore.from_url(url("engine", "e"), http_client=fake.client())
    assert engine.put_signal(sig()) is True
    assert engine.signals_between()[0].signal_id == sig()["signal_id"]
    assert [c.status for c in fake.calls if c.status >= 400] == []
    reader = ArangoStore.from_url(url("reader", "r"), http_client=fake.client())
    assert reader.get_signal(sig()["signal_id"]) is not None
    assert outcome(lambda: reader.put_signal(sig(t0=T0 + 1))) == (503, "STORE_UNAVAILABLE")


def test_an_index_changed_by_hand_is_named(fake: FakeArango) -> None:
    open_fake(fake).close()
    index = next(i for i in fake.dbs["s3"]["signals"].indexes if i["name"] == "signals_t0_id")
    index["fields"] = ["t0"]
    with pytest.raises(DependencyUnavailable) as err:
        open_fake(fake)
    assert (err.value.code, err.value.detail) == (
        "STORE_SCHEMA",
        "arangodb s3: index signals.signals_t0_id is a persistent index on ['t0'] "
        "(unique=False), expected persistent on ['t0', 'signal_id'] (unique=False); drop it "
        "and restart to have it made again",
    )


def test_indexes_of_earlier_versions_are_left_and_named(
    fake: FakeArango, caplog: pytest.LogCaptureFixture
) -> None:
    open_fake(fake).close()
    fake.dbs["s3"]["signals"].indexes.append(
        {"id": "signals/9", "type": "persistent", "name": "signals_t0_symbol",
         "fields": ["t0", "symbol"], "unique": False, "sparse": False}
    )  # fmt: skip
    with caplog.at_level(logging.INFO, "s3.adapters.arango_store"):
        open_fake(fake).close()
    assert "index signals.signals_t0_symbol is no longer used" in caplog.text
    assert any(i["name"] == "signals_t0_symbol" for i in fake.dbs["s3"]["signals"].indexes)


# -- covering indexes ------------------------------------------------------------------------------


def _every_range_query(store: ArangoStore) -> None:
    for n in range(5):
        store.put_decision(sig(t0=T0 + n), evt(ts=T0 + n))
    store.signals_by_symbol("BTCUSDT", T0, T0 + 3, limit=2)
    store.signals_between(T0, limit=2, newest_first=True)
    store.events_by_kind("DECIDE", t_to=T0 + 4, limit=2)
    store.events_between(T0 + 1, limit=2)
    store.events_between(symbol="BTCUSDT", limit=2)


def test_every_sorted_query_is_served_by_an_index(store: ArangoStore, fake: FakeArango) -> None:
    _every_range_query(store)
    assert len([p for p in fake.plans if p.sort]) >= 5
    assert fake.unserved() == []


def test_the_indexes_of_before_would_not_serve_them(
    fake: FakeArango, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = (
        ("signals", "signals_signal_id", ("signal_id",), True),
        ("signals", "signals_t0_symbol", ("t0", "symbol"), False),
        ("signals", "signals_symbol_t0", ("symbol", "t0"), False),
        ("strategy_events", "strategy_events_event_id", ("event_id",), True),
        ("strategy_events", "strategy_events_ts", ("ts",), False),
        ("strategy_events", "strategy_events_kind_ts", ("kind", "ts"), False),
        ("config_bundles", "config_bundles_bundle_id_rev", ("bundle_id", "rev"), True),
    )
    monkeypatch.setattr(arango_store, "INDEXES", old)
    store = open_fake(fake)
    _every_range_query(store)
    assert len(fake.unserved()) >= 5


# -- numbers ---------------------------------------------------------------------------------------


def test_whole_doubles_come_back_as_integers_and_the_live_check_compares_by_value(
    store: ArangoStore,
) -> None:
    rec = {"side": "BUY", "now_ms": T0 + 3, "size_mult": 1.0, "tp_mult": 2.0, "p": 0.5,
           "ok": True, "gates": [{"value": 3.0}]}  # fmt: skip
    doc = sig()
    doc["decision"] = doc["decision"] | {"tp_mult": 1.0, "record": rec}
    store.put_signal(doc)
    (live,) = record.live_decisions(store, ["BTCUSDT"], T0, T0 + 1)
    assert live.record["size_mult"] == 1 and type(live.record["size_mult"]) is int
    assert type(live.record["gates"][0]["value"]) is int
    diffs: list[tuple[str, Any, Any]] = []
    _diff_paths(_plain(live.record), _plain(rec), "", diffs)
    assert diffs == []
    # by value, not loosely: a changed number, a bool for a number, text for a number all differ
    for path, changed in (("size_mult", 1.5), ("ok", 1), ("tp_mult", "2")):
        diffs = []
        _diff_paths(_plain(live.record), _plain(rec | {path: changed}), "", diffs)
        assert [d[0] for d in diffs] == [path]


# -- the driver's retry on a reset connection: real sockets, python-arango's real HTTP stack -------


class OneShotServer:
    """A loopback HTTP server whose first connection is reset (RST) after the request is read,
    or left unanswered (``hang``); later ones are answered 202 {}."""

    def __init__(self, first: str) -> None:
        self.first = first
        self.requests: list[str] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)  # accept() wakes up to see `stop`
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def read_request(self, conn: socket.socket) -> str:
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n")
             if line.lower().startswith(b"content-length")), 0,
        )  # fmt: skip
        while len(body) < length:
            body += conn.recv(65536)
        return head.split(b"\r\n")[0].decode()

    def serve(self) -> None:
        n = 0
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            n += 1
            threading.Thread(target=self.answer, args=(conn, n), daemon=True).start()

    def answer(self, conn: socket.socket, n: int) -> None:
        """Each connection on its own thread: a retry is seen even while the first hangs."""
        with conn:
            self.requests.append(self.read_request(conn))
            if n == 1 and self.first == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            if n == 1 and self.first == "hang":
                self.stop.wait(5)
                return
            conn.sendall(
                b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n"
                b"Content-Length: 2\r\nConnection: close\r\n\r\n{}"
            )

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.sock.close()


def _store_on(port: int, http: Any) -> ArangoStore:
    from arango.client import ArangoClient

    client = ArangoClient(hosts=f"http://127.0.0.1:{port}", http_client=http, resolver_max_tries=1)
    return ArangoStore(client.db("s3", "root", ""), client=client, create_schema=False)


def test_a_reset_connection_is_retried_once_for_a_post() -> None:
    from arango.http import DefaultHTTPClient

    server = OneShotServer("reset")
    try:
        store = _store_on(server.port, store_http_client(timeout_s=5))
        assert store.put_signal(sig()) is True
        assert (
            server.requests
            == [
                "POST /_db/s3/_api/document/signals?returnNew=0&silent=1&overwrite=0&returnOld=0 HTTP/1.1"
            ]
            * 2
        )
        store.close()
    finally:
        server.close()
    # python-arango's own client does not retry a POST: the same reset is a 503
    server = OneShotServer("reset")
    try:
        store = _store_on(server.port, DefaultHTTPClient(retry_attempts=1, backoff_factor=0.01))
        assert outcome(lambda: store.put_signal(sig())) == (503, "STORE_UNAVAILABLE")
        assert len(server.requests) == 1
        store.close()
    finally:
        server.close()


def test_a_read_timeout_is_not_retried() -> None:
    server = OneShotServer("hang")
    try:
        store = _store_on(server.port, store_http_client(timeout_s=0.3))
        started = time.monotonic()
        assert outcome(lambda: store.put_signal(sig())) == (503, "STORE_UNAVAILABLE")
        assert time.monotonic() - started < 2.0
        assert len(server.requests) == 1
        store.close()
    finally:
        server.close()


def test_a_result_of_many_batches_asks_for_each_by_number(
    store: ArangoStore, fake: FakeArango
) -> None:
    for n in range(5):
        store.put_signal(sig(t0=T0 + n))
    fake.reset_calls()
    rows = store._query("FOR d IN signals SORT d.t0 ASC, d.signal_id ASC RETURN d", {}, batch=2)
    assert [r["t0"] - T0 for r in rows] == [0, 1, 2, 3, 4]
    paths = [c.path for c in fake.calls]
    assert paths[0] == "/_api/cursor" and fake.calls[0].body["options"]["allowRetry"] is True
    cid = paths[1].split("/")[3]
    assert paths[1:] == [f"/_api/cursor/{cid}/2", f"/_api/cursor/{cid}/3"]


# -- python-arango is optional ---------------------------------------------------------------------


def test_the_adapter_module_imports_without_python_arango() -> None:
    code = (
        "import sys; sys.modules['arango'] = None\n"
        "import s3.adapters.arango_store as a, s3.service\n"
        "print(a.ArangoTarget.parse('http://h/db').database)\n"
        "try:\n"
        "    a.ArangoStore.from_url('http://h:1/db')\n"
        "except ImportError as exc:\n"
        "    print('ImportError', exc.name)\n"
    )
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert (out.returncode, out.stdout, out.stderr) == (0, "db\nImportError arango.client\n", "")


def test_documents_read_back_as_written(store: ArangoStore) -> None:
    doc = sig()
    store.put_signal(doc)
    got = store.get_signal(doc["signal_id"])
    assert got is not None and msgspec.to_builtins(got) == doc
