"""The embedded store (spec Part B10): `signals`, `strategy_events`, `config_bundles` and
`config_active` in one SQLite file, behind the same `Store` port as ArangoDB.

WAL mode with a busy timeout lets several processes share the file; one connection guarded by a
lock serves every thread of a process. Every write runs in a ``BEGIN IMMEDIATE`` transaction.
WAL checkpoints (the only fsyncs with ``synchronous=NORMAL``) run on a background thread with a
connection of their own, not in the commits of the writes.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from s3.adapters import store_docs as docs
from s3.errors import DependencyUnavailable
from s3.ports import ActiveDoc, BundleDoc, EventDoc, SignalDoc

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

# Scalars that are queried or unique are columns; nested objects are JSON text (checked with
# json_valid). The indexes are those of the ArangoDB collections (spec §5).
SCHEMA: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS signals (
        signal_id  TEXT PRIMARY KEY,
        t0         INTEGER NOT NULL,
        symbol     TEXT NOT NULL,
        features   TEXT NOT NULL CHECK (json_valid(features)),
        decision   TEXT NOT NULL CHECK (json_valid(decision)),
        config_rev INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS signals_t0_symbol ON signals (t0, symbol)",
    "CREATE INDEX IF NOT EXISTS signals_symbol_t0 ON signals (symbol, t0)",
    """CREATE TABLE IF NOT EXISTS strategy_events (
        event_id TEXT PRIMARY KEY,
        kind     TEXT NOT NULL,
        symbol   TEXT,
        detail   TEXT NOT NULL CHECK (json_valid(detail)),
        ts       INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS strategy_events_ts ON strategy_events (ts)",
    "CREATE INDEX IF NOT EXISTS strategy_events_kind_ts ON strategy_events (kind, ts)",
    """CREATE TABLE IF NOT EXISTS config_bundles (
        bundle_id    TEXT NOT NULL,
        rev          INTEGER NOT NULL,
        checksum     TEXT NOT NULL,
        files        TEXT NOT NULL CHECK (json_valid(files)),
        description  TEXT NOT NULL,
        published_at INTEGER NOT NULL,
        published_by TEXT,
        PRIMARY KEY (bundle_id, rev)
    )""",
    """CREATE TABLE IF NOT EXISTS config_active (
        id           INTEGER PRIMARY KEY CHECK (id = 1),
        bundle_id    TEXT NOT NULL,
        rev          INTEGER NOT NULL,
        checksum     TEXT NOT NULL,
        activated_at INTEGER NOT NULL,
        reason       TEXT NOT NULL,
        FOREIGN KEY (bundle_id, rev) REFERENCES config_bundles (bundle_id, rev)
    )""",
)

_SIGNAL_COLS = "signal_id, t0, symbol, features, decision, config_rev, created_at"
_EVENT_COLS = "event_id, kind, symbol, detail, ts"
_PUT_SIGNAL = (
    f"INSERT INTO signals ({_SIGNAL_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (signal_id) DO NOTHING"
)
_PUT_EVENT = (
    f"INSERT INTO strategy_events ({_EVENT_COLS}) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (event_id) DO NOTHING"
)


def _signal_row(s: SignalDoc) -> tuple[Any, ...]:
    return (
        s.signal_id,
        s.t0,
        s.symbol,
        docs.dumps(s.features),
        docs.dumps(s.decision),
        s.config_rev,
        s.created_at,
    )


def _event_row(e: EventDoc) -> tuple[Any, ...]:
    return (e.event_id, e.kind, e.symbol, docs.dumps(e.detail), e.ts)


_BUNDLE_COLS = "bundle_id, rev, checksum, files, description, published_at, published_by"
_ACTIVE_COLS = "bundle_id, rev, checksum, activated_at, reason"

# Primary result codes that mean "the database cannot be used right now" (503), as opposed to a
# bug in a statement: BUSY, LOCKED, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, PROTOCOL, NOTADB.
_UNAVAILABLE_CODES = frozenset({5, 6, 8, 10, 11, 13, 14, 15, 26})


def now_ms() -> int:
    return time.time_ns() // 1_000_000


CHECKPOINT_EVERY_S = 0.5
RESTART_WAL_PAGES = 4_096
"""Past this many WAL pages (16 MiB at 4 KiB) the checkpointer lets the WAL start over (below)."""
WRITER_CHECKPOINT_PAGES = 16_384
"""The writer checkpoints by itself only past this many WAL pages (64 MiB): a safety net should
the background checkpointer stop; SQLite's default is 1,000."""


class _Checkpointer:
    """Copies the WAL into the database file on its own thread and connection, so the fsync of a
    checkpoint never lands in a request's COMMIT (with ``synchronous=NORMAL`` a commit does not
    sync, a checkpoint does: up to ~35 ms per checkpoint on the development VM).

    PASSIVE checkpoints never wait for, nor block, readers and writers; but under steady writes
    frames keep arriving while one runs, so the WAL is never wholly copied when a write begins
    and never starts over. Once it passes ``RESTART_WAL_PAGES``, the checkpointer copies the few
    frames written since its last round while holding the store's lock (this process's writes
    wait for that short checkpoint), and the next write starts the WAL over.
    """

    def __init__(
        self, path: str, busy_timeout_s: float, every_s: float, writers: threading.Lock
    ) -> None:
        self.path, self.every_s, self.writers = path, every_s, writers
        self.conn = sqlite3.connect(
            path, timeout=busy_timeout_s, check_same_thread=False, isolation_level=None
        )
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(self.every_s):
            self.round()

    def round(self) -> tuple[int, int, int]:
        busy, frames, copied = self.checkpoint()
        if not busy and frames >= RESTART_WAL_PAGES:
            with self.writers:
                return self.checkpoint()
        return busy, frames, copied

    def checkpoint(self) -> tuple[int, int, int]:
        """One PASSIVE checkpoint: (busy, WAL frames, frames copied); a failure is logged and
        left to the next round."""
        try:
            row = self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            return int(row[0]), int(row[1]), int(row[2])
        except sqlite3.Error as exc:
            log.warning("sqlite %s: background checkpoint failed: %s", self.path, exc)
            return 1, -1, -1

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.conn.close()


class SqliteStore:
    """The `Store` port on one SQLite file (or ``:memory:``)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout_s: float = 10.0,
        checkpoint_every_s: float | None = CHECKPOINT_EVERY_S,
    ) -> None:
        """Open (creating if needed) the database file and its schema.

        Args:
            path: the database file; its parent directory is created. ``:memory:`` for a
                private in-memory store.
            busy_timeout_s: how long a write waits for another process's write lock.
            checkpoint_every_s: the period of the background WAL checkpoint; None leaves
                checkpoints to the writes, as SQLite does by default.

        Raises:
            DependencyUnavailable: the file cannot be opened or is not a database.
        """
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        self._checkpointer: _Checkpointer | None = None
        with _guard(self.path):
            if self.path != ":memory:" and not self.path.startswith("file:"):
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._conn: sqlite3.Connection | None = sqlite3.connect(
                self.path, timeout=busy_timeout_s, check_same_thread=False, isolation_level=None
            )
        try:
            self._create_schema()
            if checkpoint_every_s is not None and self.path != ":memory:":
                with self._lock, _guard(self.path):
                    self._live().execute(f"PRAGMA wal_autocheckpoint={WRITER_CHECKPOINT_PAGES}")
                    self._checkpointer = _Checkpointer(
                        self.path, busy_timeout_s, checkpoint_every_s, self._lock
                    )
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_url(cls, url: str, *, busy_timeout_s: float = 10.0) -> SqliteStore:
        """``sqlite:///relative/file.db``, ``sqlite:////absolute/file.db`` or ``sqlite:///:memory:``
        (the SQLAlchemy convention: what follows ``sqlite:///`` is the path)."""
        prefix = "sqlite:///"
        if not url.startswith(prefix) or len(url) == len(prefix):
            raise ValueError(f"store url: expected sqlite:///<path>, found {url!r}")
        return cls(url[len(prefix) :], busy_timeout_s=busy_timeout_s)

    def _create_schema(self) -> None:
        with self._lock, _guard(self.path):
            conn = self._live()
            # WAL is a property of the file: set once, it stays; readers never block the writer.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL
            conn.execute("PRAGMA foreign_keys=ON")
        with self._tx() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise DependencyUnavailable(
                    "STORE_SCHEMA",
                    f"sqlite {self.path}: schema version {version} is newer than this engine's "
                    f"{SCHEMA_VERSION}",
                )
            for statement in SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- plumbing ----------------------------------------------------------------------------------

    def _live(self) -> sqlite3.Connection:
        if self._conn is None:
            raise DependencyUnavailable("STORE_UNAVAILABLE", f"sqlite {self.path}: store is closed")
        return self._conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; the write lock is taken up front, so it waits (busy timeout)
        instead of failing when another process writes."""
        with self._lock, _guard(self.path):
            conn = self._live()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock, _guard(self.path):
            return self._live().execute(sql, params).fetchall()

    def _insert(self, sql: str, params: Sequence[Any]) -> bool:
        with self._tx() as conn:
            return conn.execute(sql, params).rowcount == 1

    def _range(
        self,
        table: str,
        cols: str,
        time_col: str,
        id_col: str,
        equal: Sequence[tuple[str, Any]],
        t_from: int | None,
        t_to: int | None,
        limit: int,
        newest_first: bool,
    ) -> list[tuple[Any, ...]]:
        where = [f"{col} = ?" for col, _ in equal]
        params: list[Any] = [value for _, value in equal]
        if t_from is not None:
            where.append(f"{time_col} >= ?")
            params.append(t_from)
        if t_to is not None:
            where.append(f"{time_col} < ?")
            params.append(t_to)
        order = "DESC" if newest_first else "ASC"
        sql = (
            f"SELECT {cols} FROM {table}"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + f" ORDER BY {time_col} {order}, {id_col} {order} LIMIT ?"
        )
        return self._rows(sql, [*params, limit])

    # -- signals -----------------------------------------------------------------------------------

    def put_signal(self, doc: SignalDoc | Mapping[str, Any]) -> bool:
        return self._insert(_PUT_SIGNAL, _signal_row(docs.signal_doc(doc)))

    def get_signal(self, signal_id: str) -> SignalDoc | None:
        docs.check_id(signal_id, "signals.signal_id")
        rows = self._rows(f"SELECT {_SIGNAL_COLS} FROM signals WHERE signal_id = ?", (signal_id,))
        return _signal(rows[0]) if rows else None

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
            "signals", _SIGNAL_COLS, "t0", "signal_id", [("symbol", symbol)],
            t_from, t_to, limit, newest_first,
        )  # fmt: skip
        return [_signal(r) for r in rows]

    def signals_between(
        self,
        t_from: int | None = None,
        t_to: int | None = None,
        *,
        limit: int = 100,
        newest_first: bool = False,
    ) -> list[SignalDoc]:
        docs.query_args(t_from, t_to, limit, "signals_between")
        rows = self._range(
            "signals", _SIGNAL_COLS, "t0", "signal_id", [], t_from, t_to, limit, newest_first
        )
        return [_signal(r) for r in rows]

    # -- strategy events ---------------------------------------------------------------------------

    def put_event(self, doc: EventDoc | Mapping[str, Any]) -> bool:
        return self._insert(_PUT_EVENT, _event_row(docs.event_doc(doc)))

    def put_decision(
        self, signal: SignalDoc | Mapping[str, Any], event: EventDoc | Mapping[str, Any]
    ) -> tuple[bool, bool]:
        rows = _signal_row(docs.signal_doc(signal)), _event_row(docs.event_doc(event))
        with self._tx() as conn:  # one transaction: both rows or neither
            return (
                conn.execute(_PUT_SIGNAL, rows[0]).rowcount == 1,
                conn.execute(_PUT_EVENT, rows[1]).rowcount == 1,
            )

    def get_event(self, event_id: str) -> EventDoc | None:
        docs.check_id(event_id, "strategy_events.event_id")
        rows = self._rows(
            f"SELECT {_EVENT_COLS} FROM strategy_events WHERE event_id = ?", (event_id,)
        )
        return _event(rows[0]) if rows else None

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
            "strategy_events", _EVENT_COLS, "ts", "event_id", [("kind", kind)],
            t_from, t_to, limit, newest_first,
        )  # fmt: skip
        return [_event(r) for r in rows]

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
        equal = [("symbol", symbol)] if symbol is not None else []
        rows = self._range(
            "strategy_events", _EVENT_COLS, "ts", "event_id", equal,
            t_from, t_to, limit, newest_first,
        )  # fmt: skip
        return [_event(r) for r in rows]

    # -- config bundles ----------------------------------------------------------------------------

    def put_bundle(self, doc: BundleDoc | Mapping[str, Any]) -> bool:
        b = docs.bundle_doc(doc)
        with self._tx() as conn:
            row = conn.execute(
                "SELECT checksum FROM config_bundles WHERE bundle_id = ? AND rev = ?",
                (b.bundle_id, b.rev),
            ).fetchone()
            if row is not None:
                docs.check_same_revision(b, row[0])
                return False
            conn.execute(
                f"INSERT INTO config_bundles ({_BUNDLE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    b.bundle_id,
                    b.rev,
                    b.checksum,
                    docs.dumps(b.files),
                    b.description,
                    b.published_at,
                    b.published_by,
                ),
            )
            return True

    def get_bundle(self, bundle_id: str, rev: int) -> BundleDoc | None:
        docs.check_revision(bundle_id, rev, "get_bundle")
        rows = self._rows(
            f"SELECT {_BUNDLE_COLS} FROM config_bundles WHERE bundle_id = ? AND rev = ?",
            (bundle_id, rev),
        )
        return _bundle(rows[0]) if rows else None

    def list_bundles(self, bundle_id: str | None = None) -> list[BundleDoc]:
        if bundle_id is None:
            rows = self._rows(f"SELECT {_BUNDLE_COLS} FROM config_bundles ORDER BY bundle_id, rev")
        else:
            docs.bundle_id(bundle_id)
            rows = self._rows(
                f"SELECT {_BUNDLE_COLS} FROM config_bundles WHERE bundle_id = ? ORDER BY rev",
                (bundle_id,),
            )
        return [_bundle(r) for r in rows]

    def set_active(
        self,
        bundle_id: str,
        rev: int,
        checksum: str,
        reason: str,
        *,
        activated_at: int | None = None,
    ) -> ActiveDoc:
        a = docs.active_doc(
            bundle_id, rev, checksum, reason, now_ms() if activated_at is None else activated_at
        )
        with self._tx() as conn:
            row = conn.execute(
                "SELECT checksum FROM config_bundles WHERE bundle_id = ? AND rev = ?",
                (a.bundle_id, a.rev),
            ).fetchone()
            docs.check_activation(a, None if row is None else row[0])
            conn.execute(
                f"INSERT OR REPLACE INTO config_active (id, {_ACTIVE_COLS}) "
                "VALUES (1, ?, ?, ?, ?, ?)",
                (a.bundle_id, a.rev, a.checksum, a.activated_at, a.reason),
            )
        return a

    def get_active(self) -> ActiveDoc | None:
        rows = self._rows(f"SELECT {_ACTIVE_COLS} FROM config_active WHERE id = 1")
        if not rows:
            return None
        bundle, rev, checksum, activated_at, reason = rows[0]
        return ActiveDoc(
            bundle_id=bundle, rev=rev, checksum=checksum, activated_at=activated_at, reason=reason
        )

    # -- lifecycle ---------------------------------------------------------------------------------

    def ping(self) -> None:
        self._rows("SELECT 1")

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def _guard(path: str) -> Iterator[None]:
    """A database that cannot be used (locked past the timeout, unreadable, full) is a
    DependencyUnavailable (503); anything else is a bug and propagates as is."""
    try:
        yield
    except sqlite3.Error as exc:
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in _UNAVAILABLE_CODES:
            raise DependencyUnavailable("STORE_UNAVAILABLE", f"sqlite {path}: {exc}") from exc
        raise


def _signal(r: tuple[Any, ...]) -> SignalDoc:
    return SignalDoc(
        signal_id=r[0],
        t0=r[1],
        symbol=r[2],
        features=docs.loads(r[3]),
        decision=docs.loads(r[4]),
        config_rev=r[5],
        created_at=r[6],
    )


def _event(r: tuple[Any, ...]) -> EventDoc:
    return EventDoc(event_id=r[0], kind=r[1], symbol=r[2], detail=docs.loads(r[3]), ts=r[4])


def _bundle(r: tuple[Any, ...]) -> BundleDoc:
    return BundleDoc(
        bundle_id=r[0],
        rev=r[1],
        checksum=r[2],
        files=docs.loads(r[3]),
        description=r[4],
        published_at=r[5],
        published_by=r[6],
    )
