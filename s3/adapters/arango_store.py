"""The production store (spec §5): the `Store` port on ArangoDB through python-arango.

Documents use `_key` = the encoded signal_id / event_id / bundle_id:rev, so a plain insert is
idempotent: a second insert of the same id fails with a unique-constraint violation (1210) and
writes nothing. Two writers of one key at the same moment may instead see a write-write conflict
(1200, also a lock-wait timeout): ArangoDB leaves the retry to the client, so the store retries
with jittered backoff, and answers 503 (`DependencyUnavailable`) when the conflict outlasts the
retries, as the SQLite twin does when its file stays locked (BUSY).

Setup lists the collections and indexes and creates only the missing ones, so an engine whose
schema exists needs no right to change it (docs/operations.md, "ArangoDB"). Range queries sort by
(time, id) on persistent indexes that cover exactly that order; AQL compares strings with ICU
collation, SQLite by bytes, so the order among equal times is settled here, by bytes, and both
adapters return the same pages.

python-arango is imported when a store is made, not with this module: the SQLite-only engine
runs without it.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import msgspec

from s3.adapters import store_docs as docs
from s3.config.settings import Settings
from s3.errors import DependencyUnavailable
from s3.ports import ActiveDoc, BundleDoc, EventDoc, SignalDoc

if TYPE_CHECKING:
    from arango.client import ArangoClient
    from arango.collection import StandardCollection
    from arango.database import StandardDatabase
    from arango.http import HTTPClient

log = logging.getLogger(__name__)

DEFAULT_DATABASE = "s3"
ACTIVE_KEY = "active"
COLLECTIONS: tuple[str, ...] = ("signals", "strategy_events", "config_bundles", "config_active")
INDEXES: tuple[tuple[str, str, tuple[str, ...], bool], ...] = (
    # (collection, index name, fields, unique). Persistent indexes: spec §5's hash and skiplist
    # are deprecated aliases of persistent since ArangoDB 3.7. Each range query is served in
    # its (time, id) order by one of them: FILTER on the leading fields, SORT on the rest.
    ("signals", "signals_signal_id", ("signal_id",), True),
    ("signals", "signals_symbol_t0_id", ("symbol", "t0", "signal_id"), False),
    ("signals", "signals_t0_id", ("t0", "signal_id"), False),
    ("strategy_events", "strategy_events_event_id", ("event_id",), True),
    ("strategy_events", "strategy_events_kind_ts_id", ("kind", "ts", "event_id"), False),
    ("strategy_events", "strategy_events_ts_id", ("ts", "event_id"), False),
    ("config_bundles", "config_bundles_bundle_id_rev", ("bundle_id", "rev"), True),
)
OBSOLETE_INDEXES: tuple[tuple[str, str], ...] = (
    ("signals", "signals_t0_symbol"),
    ("signals", "signals_symbol_t0"),
    ("strategy_events", "strategy_events_ts"),
    ("strategy_events", "strategy_events_kind_ts"),
)
"""Made by earlier versions; no query uses them now (the covering indexes above replace them).
Setup leaves them and logs their names: dropping an index is the operator's call."""

# ArangoDB error numbers (lib/Basics/voc-errors.h; arango.errno has the same values).
ERR_FORBIDDEN = 11
ERR_LOCK_TIMEOUT = 18
ERR_CONFLICT = 1200
ERR_DATA_SOURCE_NOT_FOUND = 1203
ERR_DUPLICATE_NAME = 1207
ERR_UNIQUE_CONSTRAINT_VIOLATED = 1210
ERR_DATABASE_NOT_FOUND = 1228
RETRYABLE_WRITE_ERRORS = frozenset({ERR_CONFLICT, ERR_LOCK_TIMEOUT})
"""A write-write conflict or a lock-wait timeout: another writer held the key; try again."""
UNAVAILABLE_HTTP = frozenset({401, 403, 503})
"""Bad credentials, missing rights (like SQLite's READONLY), the server shedding load: 503."""

MAX_TIES = 100_000
"""Most documents of one time a page may end among (see `ArangoStore._range`)."""

_STRIP = 'UNSET(d, "_key", "_id", "_rev")'


@dataclass(frozen=True)
class WriteRetry:
    """How often, and how patiently, a write that met a write-write conflict is tried again.

    Attempt n (from 0) sleeps a uniform random time in [0, min(cap_s, base_s * 2**n)] ("full
    jitter": racing writers spread out instead of colliding again in step). The defaults try
    8 times over at most ~0.4 s, then give up with a 503.
    """

    attempts: int = 8
    base_s: float = 0.002
    cap_s: float = 0.1

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_s < 0 or self.cap_s < 0:
            raise ValueError(f"WriteRetry: attempts >= 1 and delays >= 0, found {self}")

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0.0, min(self.cap_s, self.base_s * 2**attempt))


@dataclass(frozen=True)
class ArangoTarget:
    """Where the store lives, parsed from ``http[s]://user:pass@host:8529/dbname``."""

    hosts: str
    database: str
    username: str = "root"
    password: str = field(default="", repr=False)

    @classmethod
    def parse(
        cls, url: str, *, username: str | None = None, password: str | None = None
    ) -> ArangoTarget:
        """Credentials given as arguments win over those in the URL; the database defaults to
        ``s3``. Errors never echo the password."""
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
        shown = f"{parts.scheme}://{host}{parts.path}"
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"arango url: expected http[s]://host:port/db, found {shown!r}")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"arango url: bad port in {shown!r}") from None
        database = unquote(parts.path.strip("/")) or DEFAULT_DATABASE
        if "/" in database:
            raise ValueError(f"arango url: expected one database name in the path, {shown!r}")
        return cls(
            hosts=f"{parts.scheme}://{host}" + ("" if port else ":8529"),
            database=database,
            username=username or unquote(parts.username or "") or "root",
            password=password if password is not None else unquote(parts.password or ""),
        )


def store_http_client(timeout_s: float = 10.0) -> HTTPClient:
    """python-arango's HTTP client, tuned for the store.

    python-arango's defaults retry a refused connection for about 18 s (3 urllib3 retries with
    backoff, times 3 resolver tries); a decision path wants a quick 503 instead. They also never
    retry a POST whose connection was reset (a stale keep-alive connection closed by the server
    or a proxy), yet every request of the store is safe to send twice: inserts are idempotent by
    key (should the first copy have landed, the second finds 1210: the document is stored and
    `put_*` answers False, which no caller acts on), queries read, `set_active` replaces one
    document, and a cursor's batches are asked for by number (``allowRetry``). So: one retry, for every method, after a
    refused or reset connection; none after a read timeout (the server may still be at work and
    a second wait doubles the caller's) and none on an HTTP status (the store maps each answer).
    """
    from arango.http import DefaultHTTPAdapter, DefaultHTTPClient
    from requests import Session
    from urllib3.exceptions import ReadTimeoutError
    from urllib3.util.retry import Retry

    class ResetRetry(Retry):
        def increment(  # type: ignore[override]
            self,
            method: str | None = None,
            url: str | None = None,
            response: Any = None,
            error: Exception | None = None,
            _pool: Any = None,
            _stacktrace: TracebackType | None = None,
        ) -> Retry:
            me = self.new(read=False) if isinstance(error, ReadTimeoutError) else self
            return Retry.increment(me, method, url, response, error, _pool, _stacktrace)

    class StoreHTTPClient(DefaultHTTPClient):
        def create_session(self, host: str) -> Session:
            retry = ResetRetry(
                total=1,
                connect=1,
                read=1,
                status=0,
                other=0,
                allowed_methods=None,  # every method
                backoff_factor=0.05,
                raise_on_status=False,
            )
            adapter = DefaultHTTPAdapter(
                connection_timeout=self.request_timeout,
                pool_connections=1,
                pool_maxsize=32,
                max_retries=retry,
            )
            session = Session()
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            return session

    return StoreHTTPClient(request_timeout=timeout_s)


class ArangoStore:
    """The `Store` port on one ArangoDB database."""

    def __init__(
        self,
        db: StandardDatabase,
        *,
        client: ArangoClient | None = None,
        create_schema: bool = True,
        retry: WriteRetry | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Wrap a database handle.

        Args:
            db: a standard (synchronous) python-arango database.
            client: the client to close with the store, when the store owns it.
            create_schema: create missing collections and indexes now (see `ensure_schema`).
            retry: how writes meeting a write-write conflict are retried.
            rng, sleep: the jitter's randomness and the backoff's sleep (for tests).
        """
        from arango.database import StandardDatabase

        if not isinstance(db, StandardDatabase):
            raise TypeError("ArangoStore needs a StandardDatabase (not async, batch or a txn)")
        self._db = db
        self._client = client
        self._where = f"arangodb {db.name}"
        self._retry = retry or WriteRetry()
        self._rng = rng or random.Random()
        self._sleep = sleep
        self.conflicts_retried = 0
        """Writes tried again after a write-write conflict, since the store opened."""
        self._signals: StandardCollection = db.collection("signals")
        self._events: StandardCollection = db.collection("strategy_events")
        self._bundles: StandardCollection = db.collection("config_bundles")
        self._active: StandardCollection = db.collection("config_active")
        if create_schema:
            self.ensure_schema()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        create_database: bool = False,
        timeout_s: float = 10.0,
        http_client: HTTPClient | None = None,
        retry: WriteRetry | None = None,
    ) -> ArangoStore:
        """Connect to ``http[s]://user:pass@host:8529/dbname`` and check the connection.

        The database must exist: the engine's user should not hold the server-wide right to
        create one. ``create_database=True`` (tests, a development server) creates it through
        ``_system`` first, which needs that right.

        Args:
            http_client: python-arango's HTTP client; `store_http_client` by default.
            retry: how writes meeting a write-write conflict are retried.

        Raises:
            DependencyUnavailable: the server cannot be reached, refuses the credentials or
                the rights, or the database does not exist.
        """
        from arango.client import ArangoClient

        target = ArangoTarget.parse(url, username=username, password=password)
        http = http_client if http_client is not None else store_http_client(timeout_s)
        client = ArangoClient(hosts=target.hosts, http_client=http, resolver_max_tries=1)
        where = f"arangodb {target.hosts}/{target.database}"
        try:
            with _guard(where):
                if create_database:
                    _create_database(client, target)
                db = client.db(target.database, target.username, target.password, verify=False)
                db.properties()  # the check: credentials, rights, the database itself
            return cls(db, client=client, retry=retry)
        except BaseException:
            client.close()
            raise

    @classmethod
    def from_settings(cls, settings: Settings) -> ArangoStore:
        """From `Settings` (`S3_DB_ARANGO_URI`, `_USER`, `_PASS`); the user and password given
        explicitly win over credentials in the URI, the defaults do not."""
        if not settings.db_arango_uri:
            raise ValueError("S3_DB_ARANGO_URI is not set")
        given = settings.model_fields_set
        return cls.from_url(
            settings.db_arango_uri,
            username=settings.db_arango_user if "db_arango_user" in given else None,
            password=settings.db_arango_pass if "db_arango_pass" in given else None,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ArangoStore:
        """From `S3_DB_ARANGO_URI` (with the database in its path), `S3_DB_ARANGO_USER` and
        `S3_DB_ARANGO_PASS` (spec §11)."""
        env = os.environ if environ is None else environ
        uri = env.get("S3_DB_ARANGO_URI")
        if not uri:
            raise ValueError("S3_DB_ARANGO_URI is not set")
        return cls.from_url(
            uri, username=env.get("S3_DB_ARANGO_USER"), password=env.get("S3_DB_ARANGO_PASS")
        )

    @property
    def db(self) -> StandardDatabase:
        """The database handle (for operations and tests; the port is the way in)."""
        return self._db

    def ensure_schema(self) -> None:
        """Create the collections and indexes that are missing, and only those.

        Reads first (the collection list, each collection's indexes): when everything exists,
        nothing is written, so an engine with read-only rights on the database (and read-write
        on its collections) starts. Any number of processes may run it at once (a lost race to
        create is fine). Indexes are built in the background (writes go on meanwhile).

        Raises:
            DependencyUnavailable: STORE_SCHEMA when an index of ours exists with other fields
                (someone changed it by hand); STORE_UNAVAILABLE when something is missing and
                the user may not create it (403).
        """
        from arango.exceptions import CollectionCreateError, IndexCreateError

        with _guard(self._where):
            existing = {c["name"] for c in _done(self._db.collections())}
            for name in COLLECTIONS:
                if name in existing:
                    continue
                try:
                    self._db.create_collection(name)
                except CollectionCreateError as exc:
                    if exc.error_code != ERR_DUPLICATE_NAME:  # lost a race: fine
                        raise
            for coll in dict.fromkeys(c for c, *_ in INDEXES):
                have = {i.get("name"): i for i in _done(self._db.collection(coll).indexes())}
                for name in (n for c, n in OBSOLETE_INDEXES if c == coll and n in have):
                    log.info("%s: index %s.%s is no longer used", self._where, coll, name)
                for c, name, fields, unique in INDEXES:
                    if c != coll:
                        continue
                    found = have.get(name)
                    if found is not None:
                        self._check_index(coll, name, fields, unique, found)
                        continue
                    spec = {
                        "type": "persistent",
                        "name": name,
                        "fields": list(fields),
                        "unique": unique,
                        "inBackground": True,
                    }
                    try:
                        self._db.collection(coll).add_index(spec)
                    except IndexCreateError as exc:
                        if exc.error_code != ERR_DUPLICATE_NAME:
                            raise
                        # another process made it meanwhile: the same one, or say so
                        again = {
                            i.get("name"): i for i in _done(self._db.collection(coll).indexes())
                        }
                        self._check_index(coll, name, fields, unique, again.get(name, {}))

    def _check_index(
        self, coll: str, name: str, fields: tuple[str, ...], unique: bool, found: Mapping[str, Any]
    ) -> None:
        got = (found.get("type"), tuple(found.get("fields", ())), bool(found.get("unique")))
        if got != ("persistent", fields, unique):
            raise DependencyUnavailable(
                "STORE_SCHEMA",
                f"{self._where}: index {coll}.{name} is a {got[0]} index on {list(got[1])} "
                f"(unique={got[2]}), expected persistent on {list(fields)} (unique={unique}); "
                "drop it and restart to have it made again",
            )

    # -- plumbing ----------------------------------------------------------------------------------

    def _write(self, what: str, send: Callable[[], object]) -> bool:
        """Send one insert: True when it wrote, False when the key was stored already (1210).
        A write-write conflict or lock timeout is retried with jittered backoff, then 503."""
        from arango.exceptions import ArangoServerError

        retry = self._retry
        for attempt in range(retry.attempts):
            try:
                with _guard(self._where):
                    send()
                return True
            except ArangoServerError as exc:
                if exc.error_code == ERR_UNIQUE_CONSTRAINT_VIOLATED:
                    return False
                if exc.error_code not in RETRYABLE_WRITE_ERRORS:
                    raise
                last = exc
            if attempt + 1 < retry.attempts:
                self.conflicts_retried += 1
                self._sleep(retry.delay(attempt, self._rng))
        raise DependencyUnavailable(
            "STORE_UNAVAILABLE",
            f"{self._where}: {what}: still in conflict with another writer after "
            f"{retry.attempts} attempts ({last.error_code}: {last.error_message})",
        ) from last

    def _insert(self, coll: StandardCollection, key: str, doc: msgspec.Struct) -> bool:
        body = {"_key": key, **msgspec.to_builtins(doc)}
        return self._write(f"{coll.name}/{key}", lambda: coll.insert(body, silent=True))

    def _query(self, aql: str, bind: dict[str, Any], batch: int = docs.MAX_LIMIT) -> list[Any]:
        """Run one AQL query; ``batch`` at least the rows expected reads them in one round trip.
        Should a result need more batches, ``allowRetry`` (ArangoDB 3.11+) names each one, so a
        batch asked for twice (`store_http_client` retries a reset connection) is the same."""
        with _guard(self._where):
            cursor = _done(
                self._db.aql.execute(aql, bind_vars=bind, batch_size=batch, allow_retry=True)
            )
            return list(cursor)

    def _one(self, coll: str, equal: dict[str, Any]) -> dict[str, Any] | None:
        # By AQL with bind variables, not coll.get(key): python-arango puts the key into the URL
        # unescaped, and an encoded key may contain '%'.
        # Bind variables are named v0, v1, ...: a name like `_key` is not a legal one.
        filters = " AND ".join(f"d.{name} == @v{i}" for i, name in enumerate(equal))
        bind = {f"v{i}": value for i, value in enumerate(equal.values())}
        rows = self._query(f"FOR d IN {coll} FILTER {filters} LIMIT 1 RETURN {_STRIP}", bind, 1)
        return rows[0] if rows else None

    def _range(
        self,
        coll: str,
        time_field: str,
        id_field: str,
        equal: dict[str, Any],
        t_from: int | None,
        t_to: int | None,
        limit: int,
        newest_first: bool,
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` documents in (time, id) order, ids compared by bytes as SQLite does.

        AQL sorts by the covering index, so by (time, ICU collation of id): within one time the
        order may differ from bytes ("_" < "a" < "B" there; "B" < "_" < "a" in bytes). One row
        past the limit tells whether the page ends inside a run of equal times; only then is
        that run read whole (by the same index) so the page keeps its byte-order first ones.
        """
        filters = [f"d.{name} == @v{i}" for i, name in enumerate(equal)]
        bind: dict[str, Any] = {f"v{i}": value for i, value in enumerate(equal.values())}
        if t_from is not None:
            filters.append(f"d.{time_field} >= @t_from")
            bind["t_from"] = t_from
        if t_to is not None:
            filters.append(f"d.{time_field} < @t_to")
            bind["t_to"] = t_to
        order = "DESC" if newest_first else "ASC"
        where = f"FILTER {' AND '.join(filters)} " if filters else ""
        aql = (
            f"FOR d IN {coll} {where}SORT d.{time_field} {order}, d.{id_field} {order} "
            f"LIMIT @max_rows RETURN {_STRIP}"
        )
        rows: list[dict[str, Any]] = self._query(aql, {**bind, "max_rows": limit + 1}, limit + 1)
        if len(rows) > limit and rows[limit][time_field] == rows[limit - 1][time_field]:
            edge = rows[limit - 1][time_field]
            rows = [r for r in rows if r[time_field] != edge] + self._ties(
                coll, time_field, id_field, equal, edge
            )
        rows.sort(key=lambda r: (r[time_field], r[id_field]), reverse=newest_first)
        return rows[:limit]

    def _ties(
        self, coll: str, time_field: str, id_field: str, equal: dict[str, Any], at: int
    ) -> list[dict[str, Any]]:
        """Every document of time ``at`` (and the equality filters)."""
        filters = [f"d.{name} == @v{i}" for i, name in enumerate(equal)]
        bind: dict[str, Any] = {f"v{i}": value for i, value in enumerate(equal.values())}
        filters.append(f"d.{time_field} == @at")
        aql = (
            f"FOR d IN {coll} FILTER {' AND '.join(filters)} SORT d.{id_field} "
            f"LIMIT @max_rows RETURN {_STRIP}"
        )
        rows: list[dict[str, Any]] = self._query(
            aql, {**bind, "at": at, "max_rows": MAX_TIES + 1}, MAX_TIES + 1
        )
        if len(rows) > MAX_TIES:
            raise RuntimeError(
                f"{self._where}: more than {MAX_TIES} {coll} share {time_field} {at}: "
                "cannot page them in byte order",
            )
        return rows

    # -- signals -----------------------------------------------------------------------------------

    def put_signal(self, doc: SignalDoc | Mapping[str, Any]) -> bool:
        s = docs.signal_doc(doc)
        return self._insert(self._signals, docs.arango_key(s.signal_id), s)

    def get_signal(self, signal_id: str) -> SignalDoc | None:
        docs.check_id(signal_id, "signals.signal_id")
        row = self._one("signals", {"signal_id": signal_id})
        return None if row is None else docs.to_struct(row, SignalDoc)

    def signals_by_symbol(
        self,
        symbol: str,
        t_from: int | None = None,
        t_to: int | None = None,
        *,
        limit: int = 100,
        newest_first: bool = False,
    ) -> list[SignalDoc]:
        docs.check_symbol(symbol, "signals_by_symbol: symbol")
        docs.query_args(t_from, t_to, limit, "signals_by_symbol")
        rows = self._range(
            "signals", "t0", "signal_id", {"symbol": symbol}, t_from, t_to, limit, newest_first
        )
        return [docs.to_struct(r, SignalDoc) for r in rows]

    def signals_between(
        self,
        t_from: int | None = None,
        t_to: int | None = None,
        *,
        limit: int = 100,
        newest_first: bool = False,
    ) -> list[SignalDoc]:
        docs.query_args(t_from, t_to, limit, "signals_between")
        rows = self._range("signals", "t0", "signal_id", {}, t_from, t_to, limit, newest_first)
        return [docs.to_struct(r, SignalDoc) for r in rows]

    # -- strategy events ---------------------------------------------------------------------------

    def put_event(self, doc: EventDoc | Mapping[str, Any]) -> bool:
        e = docs.event_doc(doc)
        return self._insert(self._events, docs.arango_key(e.event_id), e)

    def put_decision(
        self, signal: SignalDoc | Mapping[str, Any], event: EventDoc | Mapping[str, Any]
    ) -> tuple[bool, bool]:
        # Two inserts, in order, both documents checked first: a signal without its event (the
        # second insert failed) is completed by the retry, which resumes from the signal.
        s, e = docs.signal_doc(signal), docs.event_doc(event)
        return (
            self._insert(self._signals, docs.arango_key(s.signal_id), s),
            self._insert(self._events, docs.arango_key(e.event_id), e),
        )

    def get_event(self, event_id: str) -> EventDoc | None:
        docs.check_id(event_id, "strategy_events.event_id")
        row = self._one("strategy_events", {"event_id": event_id})
        return None if row is None else docs.to_struct(row, EventDoc)

    def events_by_kind(
        self,
        kind: str,
        t_from: int | None = None,
        t_to: int | None = None,
        *,
        limit: int = 100,
        newest_first: bool = False,
    ) -> list[EventDoc]:
        docs.check_kind(kind, "events_by_kind: kind")
        docs.query_args(t_from, t_to, limit, "events_by_kind")
        rows = self._range(
            "strategy_events", "ts", "event_id", {"kind": kind}, t_from, t_to, limit, newest_first
        )
        return [docs.to_struct(r, EventDoc) for r in rows]

    def events_between(
        self,
        t_from: int | None = None,
        t_to: int | None = None,
        *,
        symbol: str | None = None,
        limit: int = 100,
        newest_first: bool = False,
    ) -> list[EventDoc]:
        if symbol is not None:
            docs.check_symbol(symbol, "events_between: symbol")
        docs.query_args(t_from, t_to, limit, "events_between")
        equal = {"symbol": symbol} if symbol is not None else {}
        rows = self._range(
            "strategy_events", "ts", "event_id", equal, t_from, t_to, limit, newest_first
        )
        return [docs.to_struct(r, EventDoc) for r in rows]

    # -- config bundles ----------------------------------------------------------------------------

    def put_bundle(self, doc: BundleDoc | Mapping[str, Any]) -> bool:
        b = docs.bundle_doc(doc)
        if self._insert(self._bundles, f"{docs.arango_key(b.bundle_id)}:{b.rev}", b):
            return True
        stored = self._one("config_bundles", {"bundle_id": b.bundle_id, "rev": b.rev})
        if stored is None:  # deleted in between by someone else: not ours to resurrect
            raise DependencyUnavailable(
                "STORE_UNAVAILABLE", f"{self._where}: {b.bundle_id} rev {b.rev} vanished"
            )
        docs.check_same_revision(b, stored["checksum"])
        return False

    def get_bundle(self, bundle_id: str, rev: int) -> BundleDoc | None:
        docs.check_revision(bundle_id, rev, "get_bundle")
        row = self._one("config_bundles", {"bundle_id": bundle_id, "rev": rev})
        return None if row is None else docs.to_struct(row, BundleDoc)

    def list_bundles(self, bundle_id: str | None = None) -> list[BundleDoc]:
        if bundle_id is None:
            aql = f"FOR d IN config_bundles SORT d.bundle_id, d.rev RETURN {_STRIP}"
            rows = self._query(aql, {})
        else:
            docs.bundle_id(bundle_id)
            aql = (
                "FOR d IN config_bundles FILTER d.bundle_id == @bundle_id "
                f"SORT d.rev RETURN {_STRIP}"
            )
            rows = self._query(aql, {"bundle_id": bundle_id})
        rows.sort(key=lambda r: (r["bundle_id"], r["rev"]))  # ids by bytes, as SQLite does
        return [docs.to_struct(r, BundleDoc) for r in rows]

    def set_active(
        self,
        bundle_id: str,
        rev: int,
        checksum: str,
        reason: str,
        *,
        activated_at: int | None = None,
    ) -> ActiveDoc:
        at = time.time_ns() // 1_000_000 if activated_at is None else activated_at
        a = docs.active_doc(bundle_id, rev, checksum, reason, at)
        stored = self._one("config_bundles", {"bundle_id": a.bundle_id, "rev": a.rev})
        # Revisions are immutable, so the check cannot go stale before the write below.
        docs.check_activation(a, None if stored is None else stored["checksum"])
        body = {"_key": ACTIVE_KEY, **msgspec.to_builtins(a)}
        self._write(
            f"config_active/{ACTIVE_KEY}",
            lambda: self._active.insert(body, overwrite_mode="replace", silent=True),
        )
        return a

    def get_active(self) -> ActiveDoc | None:
        row = self._one("config_active", {"_key": ACTIVE_KEY})
        return None if row is None else docs.to_struct(row, ActiveDoc)

    # -- lifecycle ---------------------------------------------------------------------------------

    def ping(self) -> None:
        with _guard(self._where):
            self._db.properties()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> ArangoStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _create_database(client: ArangoClient, target: ArangoTarget) -> None:
    from arango.exceptions import DatabaseCreateError

    sys_db = client.db("_system", target.username, target.password)
    if sys_db.has_database(target.database):
        return
    try:
        sys_db.create_database(target.database)
    except DatabaseCreateError as exc:
        if exc.error_code != ERR_DUPLICATE_NAME:  # created meanwhile by another process: fine
            raise


def _done(result: Any) -> Any:
    from arango.job import AsyncJob, BatchJob

    if result is None or isinstance(result, AsyncJob | BatchJob):
        raise TypeError("ArangoStore needs a synchronous database")
    return result


@contextmanager
def _guard(where: str) -> Iterator[None]:
    """What says "the store cannot be used now" is a DependencyUnavailable (503): no connection
    (refused, reset twice, timed out), bad credentials (401), missing rights (403, as SQLite's
    READONLY), the server shedding load (503), the database gone (1228). Any other server error
    (a missing collection, 1203, like SQLite's "no such table") is a bug or a broken deployment
    and propagates as is (500, logged with its traceback)."""
    from arango.exceptions import ArangoServerError

    try:
        yield
    except ArangoServerError as exc:  # ServerConnectionError is one too
        if exc.http_code in UNAVAILABLE_HTTP or exc.error_code == ERR_DATABASE_NOT_FOUND:
            raise DependencyUnavailable("STORE_UNAVAILABLE", f"{where}: {exc}") from exc
        raise
    except OSError as exc:  # requests' errors are OSErrors; so is ConnectionAbortedError
        raise DependencyUnavailable("STORE_UNAVAILABLE", f"{where}: {exc}") from exc
