"""The production store (spec §5): the `Store` port on ArangoDB through python-arango.

Collections and persistent indexes are created idempotently on start. Documents use
`_key` = the encoded signal_id / event_id / bundle_id:rev, so a plain insert is idempotent: a
second insert of the same id fails with a unique-constraint violation and writes nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import msgspec
from arango.client import ArangoClient
from arango.collection import StandardCollection
from arango.database import StandardDatabase
from arango.errno import DUPLICATE_NAME, UNIQUE_CONSTRAINT_VIOLATED
from arango.exceptions import (
    ArangoClientError,
    ArangoServerError,
    CollectionCreateError,
    DatabaseCreateError,
    DocumentInsertError,
    ServerConnectionError,
)
from arango.http import DefaultHTTPClient
from arango.job import AsyncJob, BatchJob

from s3.adapters import store_docs as docs
from s3.config.settings import Settings
from s3.errors import DependencyUnavailable
from s3.ports import ActiveDoc, BundleDoc, EventDoc, SignalDoc

T = TypeVar("T")

DEFAULT_DATABASE = "s3"
ACTIVE_KEY = "active"
COLLECTIONS: tuple[str, ...] = ("signals", "strategy_events", "config_bundles", "config_active")
INDEXES: tuple[tuple[str, str, tuple[str, ...], bool], ...] = (
    # (collection, index name, fields, unique). Persistent indexes: spec §5's hash and skiplist
    # are deprecated aliases of persistent since ArangoDB 3.7.
    ("signals", "signals_signal_id", ("signal_id",), True),
    ("signals", "signals_t0_symbol", ("t0", "symbol"), False),
    ("signals", "signals_symbol_t0", ("symbol", "t0"), False),
    ("strategy_events", "strategy_events_event_id", ("event_id",), True),
    ("strategy_events", "strategy_events_ts", ("ts",), False),
    ("strategy_events", "strategy_events_kind_ts", ("kind", "ts"), False),
    ("config_bundles", "config_bundles_bundle_id_rev", ("bundle_id", "rev"), True),
)
_STRIP = 'UNSET(d, "_key", "_id", "_rev")'


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


class ArangoStore:
    """The `Store` port on one ArangoDB database."""

    def __init__(
        self,
        db: StandardDatabase,
        *,
        client: ArangoClient | None = None,
        create_schema: bool = True,
    ) -> None:
        """Wrap a database handle.

        Args:
            db: a standard (synchronous) python-arango database.
            client: the client to close with the store, when the store owns it.
            create_schema: create missing collections and indexes now (idempotent).
        """
        if not isinstance(db, StandardDatabase):
            raise TypeError("ArangoStore needs a StandardDatabase (not async, batch or a txn)")
        self._db = db
        self._client = client
        self._where = f"arangodb {db.name}"
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
    ) -> ArangoStore:
        """Connect to ``http[s]://user:pass@host:8529/dbname`` and check the connection.

        Raises:
            DependencyUnavailable: the server cannot be reached, refuses the credentials, or
                the database does not exist (and ``create_database`` is False).
        """
        target = ArangoTarget.parse(url, username=username, password=password)
        # python-arango's defaults retry a refused connection for about 18 s (3 urllib3 retries
        # with backoff, times 3 resolver tries); a decision path wants a quick 503 instead.
        http = DefaultHTTPClient(
            request_timeout=timeout_s, retry_attempts=1, backoff_factor=0.1, pool_maxsize=32
        )
        client = ArangoClient(hosts=target.hosts, http_client=http, resolver_max_tries=1)
        where = f"arangodb {target.hosts}/{target.database}"
        try:
            with _guard(where):
                if create_database:
                    _create_database(client, target)
                try:
                    db = client.db(target.database, target.username, target.password, verify=True)
                except ArangoClientError as exc:  # verify wraps a refused connection this way
                    raise DependencyUnavailable("STORE_UNAVAILABLE", f"{where}: {exc}") from exc
            return cls(db, client=client)
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
        """Create the collections and persistent indexes that are missing; run it any number of
        times, from any number of processes (an identical index is returned, not duplicated)."""
        with _guard(self._where):
            for name in COLLECTIONS:
                if not self._db.has_collection(name):
                    try:
                        self._db.create_collection(name)
                    except CollectionCreateError as exc:
                        if exc.error_code != DUPLICATE_NAME:  # lost a race: fine
                            raise
            for coll, name, fields, unique in INDEXES:
                self._db.collection(coll).add_index(
                    {"type": "persistent", "name": name, "fields": list(fields), "unique": unique}
                )

    # -- plumbing ----------------------------------------------------------------------------------

    def _insert(self, coll: StandardCollection, key: str, doc: msgspec.Struct) -> bool:
        body = {"_key": key, **msgspec.to_builtins(doc)}
        with _guard(self._where):
            try:
                coll.insert(body, silent=True)
            except DocumentInsertError as exc:
                if exc.error_code == UNIQUE_CONSTRAINT_VIOLATED:
                    return False
                raise
        return True

    def _query(self, aql: str, bind: dict[str, Any]) -> list[dict[str, Any]]:
        with _guard(self._where):
            cursor = _done(self._db.aql.execute(aql, bind_vars=bind, batch_size=1000))
            return list(cursor)

    def _one(self, coll: str, equal: dict[str, Any]) -> dict[str, Any] | None:
        # By AQL with bind variables, not coll.get(key): python-arango puts the key into the URL
        # unescaped, and an encoded key may contain '%'.
        # Bind variables are named v0, v1, ...: a name like `_key` is not a legal one.
        filters = " AND ".join(f"d.{name} == @v{i}" for i, name in enumerate(equal))
        bind = {f"v{i}": value for i, value in enumerate(equal.values())}
        rows = self._query(f"FOR d IN {coll} FILTER {filters} LIMIT 1 RETURN {_STRIP}", bind)
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
        filters = [f"d.{name} == @v{i}" for i, name in enumerate(equal)]
        bind: dict[str, Any] = {f"v{i}": value for i, value in enumerate(equal.values())}
        bind["max_rows"] = limit
        if t_from is not None:
            filters.append(f"d.{time_field} >= @t_from")
            bind["t_from"] = t_from
        if t_to is not None:
            filters.append(f"d.{time_field} < @t_to")
            bind["t_to"] = t_to
        order = "DESC" if newest_first else "ASC"
        aql = (
            f"FOR d IN {coll} "
            + (f"FILTER {' AND '.join(filters)} " if filters else "")
            + f"SORT d.{time_field} {order}, d.{id_field} {order} LIMIT @max_rows RETURN {_STRIP}"
        )
        return self._query(aql, bind)

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
        with _guard(self._where):
            self._active.insert(
                {"_key": ACTIVE_KEY, **msgspec.to_builtins(a)},
                overwrite_mode="replace",
                silent=True,
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
    sys_db = client.db("_system", target.username, target.password, verify=True)
    if sys_db.has_database(target.database):
        return
    try:
        sys_db.create_database(target.database)
    except DatabaseCreateError as exc:
        if exc.error_code != DUPLICATE_NAME:  # created meanwhile by another process: fine
            raise


def _done(result: T | AsyncJob[T] | BatchJob[T] | None) -> T:
    if result is None or isinstance(result, AsyncJob | BatchJob):
        raise TypeError("ArangoStore needs a synchronous database")
    return result


@contextmanager
def _guard(where: str) -> Iterator[None]:
    """An unreachable server (connection refused, timeout, bad credentials, 503) is a
    DependencyUnavailable (503); any other server error propagates as is."""
    try:
        yield
    except ServerConnectionError as exc:
        raise DependencyUnavailable("STORE_UNAVAILABLE", f"{where}: {exc}") from exc
    except ArangoServerError as exc:
        if exc.http_code in (401, 503):
            raise DependencyUnavailable("STORE_UNAVAILABLE", f"{where}: {exc}") from exc
        raise
    except OSError as exc:  # requests' errors are OSErrors; so is ConnectionAbortedError
        raise DependencyUnavailable("STORE_UNAVAILABLE", f"{where}: {exc}") from exc
