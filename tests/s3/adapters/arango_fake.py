"""ArangoDB without a server: an HTTP client for python-arango that records every request the
store sends and answers it like ArangoDB's HTTP API would.

python-arango takes any `arango.http.HTTPClient` (``ArangoClient(http_client=...)``): two
methods, ``create_session(host)`` and ``send_request(session, method, url, headers, params,
data, auth)`` returning an `arango.response.Response`. `RecordingHTTPClient` is one: it keeps
each request (method, path, query parameters, JSON body; for AQL the query text and bind
variables) and hands it to `FakeArango`, a small in-memory server that knows the requests the
store makes:

- databases (``/_api/database``), collections (list, create, truncate), indexes (list,
  create: an identical index is returned, a name taken by another definition is 1207),
  documents (insert with ``overwriteMode``; 1210 on a taken `_key` or unique field), AQL
  cursors (``/_api/cursor``, batches, continuation, delete);
- AQL: exactly the shapes the store sends, ``FOR d IN c [FILTER d.f OP @v AND ...]
  [SORT d.f [ASC|DESC], ...] [LIMIT @n|n] RETURN UNSET(d, "_key", "_id", "_rev")|d``, with
  AQL's comparison (null < bool < number < string) and an approximation of ICU collation for
  strings (punctuation < digits < letters, letters case-blind first, lower case first on a
  tie), not byte order: so a test sees the order problems a real server would give;
- whole-number doubles come back as integers (ArangoDB prints 1.0 as 1);
- users and rights: a wrong password is 401; a user with ``"collections"`` rights may read
  and write documents but not create collections or indexes, ``"ro"`` may only read: 403
  (errorNum 11), as ArangoDB answers;
- two writers of one `_key` at once: an insert is held "in flight" for ``commit_delay_s``,
  and a second insert of that key meanwhile gets 409 / 1200 (write-write conflict), as
  RocksDB gives the second of two concurrent writers;
- `fail`: the next request(s) matching a rule get a canned answer (any status and error
  body, or an exception such as a read timeout) instead.

What this does NOT prove: that a real ArangoDB answers exactly so (the shapes follow the
HTTP API documentation; `make test-arango` runs the same contract suite against a server),
nor anything about a cluster, query plans (index use is checked statically, see
`FakeArango.unserved`), or real collation tables.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from arango.http import HTTPClient
from arango.response import Response
from requests import Session

# -- requests and answers --------------------------------------------------------------------------


@dataclass
class Call:
    """One request as the server saw it."""

    method: str
    database: str
    path: str
    """After ``/_db/<database>``, with the collection or key still percent-encoded."""
    params: dict[str, str]
    body: Any
    user: str | None
    status: int = 0
    """The status it was answered with (0: an exception instead)."""

    def shown(self) -> dict[str, Any]:
        """The request for a golden file: AQL text and bind variables kept apart."""
        out: dict[str, Any] = {"request": f"{self.method.upper()} /_db/{self.database}{self.path}"}
        if self.params:
            out["params"] = dict(sorted(self.params.items()))
        if isinstance(self.body, dict) and "query" in self.body:
            out["aql"] = self.body["query"]
            out["bind"] = self.body.get("bindVars", {})
            rest = {k: v for k, v in self.body.items() if k not in ("query", "bindVars")}
            if rest:
                out["options"] = rest
        elif self.body is not None:
            out["body"] = self.body
        out["status"] = self.status
        return out


Answer = tuple[int, Any]
"""(HTTP status, JSON body)."""


def error(status: int, num: int, message: str) -> Answer:
    """An error answer in the shape of ArangoDB's HTTP API."""
    return status, {"error": True, "errorNum": num, "errorMessage": message, "code": status}


CONFLICT = error(409, 1200, "write-write conflict; conflicting key: k")
LOCK_TIMEOUT = error(
    409,
    1200,
    "Timeout waiting to lock key - in index primary of type primary over '_key'; "
    "conflicting key: k",
)
UNAUTHORIZED = error(401, 401, "not authorized to execute this request")
FORBIDDEN = error(403, 11, "forbidden")
UNAVAILABLE = error(503, 503, "service unavailable")
NO_COLLECTION = error(404, 1203, "collection or view not found: signals")
NO_DATABASE = error(404, 1228, "database not found")


@dataclass
class Fault:
    match: Callable[[Call], bool]
    answer: Answer | BaseException
    times: int


class RecordingHTTPClient(HTTPClient):
    """python-arango's HTTP client interface over `FakeArango`: nothing leaves the process."""

    def __init__(self, server: FakeArango) -> None:
        self.server = server

    def create_session(self, host: str) -> Session:
        return Session()  # never used to send

    def send_request(
        self,
        session: Session,
        method: str,
        url: str,
        headers: MutableMapping[str, str] | None = None,
        params: MutableMapping[str, str] | None = None,
        data: Any = None,
        auth: tuple[str, str] | None = None,
    ) -> Response:
        status, body = self.server.handle(method, url, dict(params or {}), data, auth)
        return Response(
            method=method,
            url=url,
            headers={"content-type": "application/json"},
            status_code=status,
            status_text="",
            raw_body=json.dumps(_as_arango_prints(body)),
        )


def _as_arango_prints(value: Any) -> Any:
    """ArangoDB prints a double with no fraction as an integer: 1.0 is sent back as 1."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _as_arango_prints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_arango_prints(v) for v in value]
    return value


# -- AQL: the store's few query shapes -------------------------------------------------------------

_QUERY = re.compile(
    r"^FOR d IN (?P<coll>\w+)"
    r"(?: FILTER (?P<filter>.+?))?"
    r"(?: SORT (?P<sort>.+?))?"
    r"(?: LIMIT (?P<limit>@\w+|\d+))?"
    r" RETURN (?P<ret>UNSET\(d, \"_key\", \"_id\", \"_rev\"\)|d)$"
)
_COND = re.compile(r"^d\.(\w+) (==|>=|<=|<|>) @(\w+)$")
_SORT = re.compile(r"^d\.(\w+)(?: (ASC|DESC))?$")


def _icu_key(text: str) -> tuple[Any, ...]:
    """An approximation of ICU root collation: punctuation and symbols < digits < letters;
    letters compared case-blind, then lower case before upper case."""

    def cls(ch: str) -> int:
        return 2 if ch.isalpha() else 1 if ch.isdigit() else 0

    primary = tuple((cls(c), c.lower() if c.isalpha() else c) for c in text)
    return primary, tuple(c.isupper() for c in text)


def aql_key(value: Any) -> tuple[Any, ...]:
    """AQL's order of values: null < bool < number < string < array < object."""
    if value is None:
        return (0,)
    if isinstance(value, bool):
        return (1, value)
    if isinstance(value, int | float):
        return (2, value)
    if isinstance(value, str):
        return (3, _icu_key(value))
    if isinstance(value, list):
        return (4, tuple(aql_key(v) for v in value))
    return (5, tuple(sorted((k, aql_key(v)) for k, v in value.items())))


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: a == b,
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
}


@dataclass
class Plan:
    """A parsed query: what it filters and sorts on, for `FakeArango.unserved`."""

    database: str
    coll: str
    equal: list[str]
    ranged: list[str]
    sort: list[str]


def run_aql(
    docs: list[dict[str, Any]], query: str, bind: dict[str, Any], database: str = "s3"
) -> tuple[list[dict[str, Any]], Plan]:
    m = _QUERY.match(query)
    if m is None:
        raise ValueError(f"fake arango: a query shape the store does not send: {query!r}")
    conds = []
    plan = Plan(database, m["coll"], [], [], [])
    for part in (m["filter"] or "").split(" AND ") if m["filter"] else []:
        c = _COND.match(part)
        if c is None:
            raise ValueError(f"fake arango: unsupported condition {part!r}")
        name, op, var = c.groups()
        if var not in bind:
            raise KeyError(var)
        conds.append((name, _OPS[op], aql_key(bind[var])))
        (plan.equal if op == "==" else plan.ranged).append(name)
    rows = [d for d in docs if all(op(aql_key(d.get(n)), v) for n, op, v in conds)]
    for part in reversed((m["sort"] or "").split(", ") if m["sort"] else []):
        s = _SORT.match(part)
        if s is None:
            raise ValueError(f"fake arango: unsupported sort {part!r}")
        plan.sort.insert(0, s[1])
        by: str = s[1]
        rows.sort(key=lambda d: aql_key(d.get(by)), reverse=s[2] == "DESC")
    if m["limit"]:
        n = bind[m["limit"][1:]] if m["limit"].startswith("@") else int(m["limit"])
        rows = rows[:n]
    if m["ret"] != "d":
        rows = [{k: v for k, v in d.items() if k not in ("_key", "_id", "_rev")} for d in rows]
    return rows, plan


# -- the server ------------------------------------------------------------------------------------


@dataclass
class User:
    password: str
    rights: str = "rw"
    """"rw": everything; "collections": documents read-write, no schema changes; "ro": reads."""


@dataclass
class Collection:
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)
    indexes: list[dict[str, Any]] = field(default_factory=list)
    in_flight: set[str] = field(default_factory=set)


class FakeArango:
    """An in-memory ArangoDB that answers python-arango's requests (see the module doc)."""

    def __init__(
        self,
        databases: tuple[str, ...] = ("s3",),
        users: dict[str, User] | None = None,
        *,
        commit_delay_s: float = 0.0,
    ) -> None:
        self.dbs: dict[str, dict[str, Collection]] = {d: {} for d in ("_system", *databases)}
        self.users = users if users is not None else {"root": User("")}
        self.commit_delay_s = commit_delay_s
        self.calls: list[Call] = []
        self.faults: list[Fault] = []
        self.plans: list[Plan] = []
        self.conflicts = 0
        """Inserts answered 1200 because another insert of the key was in flight."""
        self.indexes_built: list[tuple[str, str, bool]] = []
        """(collection, index, built in the background) for each index created."""
        self._cursors: dict[str, _Cursor] = {}
        self._ids = itertools.count(1000)
        self._lock = threading.RLock()

    def client(self) -> RecordingHTTPClient:
        return RecordingHTTPClient(self)

    def fail(self, method: str, path: str, answer: Answer | BaseException, times: int = 1) -> None:
        """The next ``times`` requests whose method is ``method`` and whose path contains
        ``path`` get ``answer`` (a status and body, or an exception to raise)."""

        def match(c: Call) -> bool:
            return c.method == method and path in c.path

        with self._lock:
            self.faults.append(Fault(match, answer, times))

    def shown(self) -> list[dict[str, Any]]:
        with self._lock:
            return [c.shown() for c in self.calls]

    def reset_calls(self) -> None:
        with self._lock:
            self.calls.clear()
            self.plans.clear()

    def unserved(self) -> list[str]:
        """Sorted queries no persistent index serves in order: the index must start with the
        equality fields (any order), then the SORT fields in order; or, when no index does,
        start with the SORT fields (the filter then drops rows read in order). Returned as
        ``coll: sort (filters)`` for each query that neither serves."""
        out = []
        with self._lock:
            plans = list(self.plans)
        for p in plans:
            if not p.sort:
                continue
            coll = self.dbs.get(p.database, {}).get(p.coll, Collection())
            fields = [tuple(i["fields"]) for i in coll.indexes if i["type"] == "persistent"]
            eq, sort = set(p.equal), tuple(p.sort)
            exact = any(
                set(f[: len(eq)]) == eq and f[len(eq) : len(eq) + len(sort)] == sort for f in fields
            )
            ordered = any(f[: len(sort)] == sort for f in fields)
            if not (exact or ordered):
                out.append(f"{p.coll}: SORT {', '.join(sort)} (== {sorted(eq)}, {p.ranged})")
        return out

    # -- dispatch ----------------------------------------------------------------------------------

    def handle(
        self,
        method: str,
        url: str,
        params: dict[str, str],
        data: Any,
        auth: tuple[str, str] | None,
    ) -> Answer:
        parts = urlsplit(url)
        m = re.match(r"^/_db/([^/]+)(/.*)$", parts.path)
        database, path = (unquote(m[1]), m[2]) if m else ("_system", parts.path)
        body = json.loads(data) if isinstance(data, str | bytes) and data else None
        call = Call(method.lower(), database, path, params, body, auth[0] if auth else None)
        with self._lock:
            self.calls.append(call)
            for f in self.faults:
                if f.times > 0 and f.match(call):
                    f.times -= 1
                    if isinstance(f.answer, BaseException):
                        raise f.answer
                    call.status = f.answer[0]
                    return f.answer
        answer = self._answer(call, auth)
        call.status = answer[0]
        return answer

    def _answer(self, c: Call, auth: tuple[str, str] | None) -> Answer:
        user = self.users.get(auth[0]) if auth else None
        if user is None or auth is None or user.password != auth[1]:
            return UNAUTHORIZED
        with self._lock:
            db = self.dbs.get(c.database)
        if db is None:
            return NO_DATABASE
        write = c.method in ("post", "put", "patch", "delete") and not c.path.startswith(
            "/_api/cursor"
        )
        schema = write and not c.path.startswith("/_api/document/") and "/truncate" not in c.path
        if (schema and user.rights != "rw") or (write and user.rights == "ro"):
            return FORBIDDEN
        try:
            return self._route(c, db)
        except (KeyError, ValueError) as exc:
            return error(400, 1501, f"fake arango: {exc}")

    def _route(self, c: Call, db: dict[str, Collection]) -> Answer:
        p = c.path.split("/")[1:]  # ["_api", "document", "signals"]
        method = c.method
        if p[:2] == ["_api", "database"]:
            return self._database(c, p)
        if p == ["_api", "collection"] and method == "get":
            with self._lock:
                names = sorted(db)
            result = [
                {"id": str(i), "name": n, "isSystem": False, "status": 3, "type": 2}
                for i, n in enumerate(names, 1)
            ]
            return 200, {"error": False, "code": 200, "result": result}
        if p == ["_api", "collection"] and method == "post":
            name = c.body["name"]
            with self._lock:
                if name in db:
                    return error(409, 1207, f"duplicate name: {name}")
                db[name] = Collection(
                    indexes=[
                        {
                            "id": f"{name}/0",
                            "type": "primary",
                            "name": "primary",
                            "fields": ["_key"],
                            "unique": True,
                            "sparse": False,
                        }
                    ]
                )
            return 200, {"error": False, "code": 200, "name": name, "type": 2, "status": 3}
        if p[:2] == ["_api", "collection"] and p[-1] == "truncate" and method == "put":
            coll = self._coll(db, unquote(p[2]))
            if coll is None:
                return NO_COLLECTION
            with self._lock:
                coll.docs.clear()
            return 200, {"error": False, "code": 200, "name": unquote(p[2])}
        if p[:2] == ["_api", "index"]:
            return self._index(c, db)
        if p[:2] == ["_api", "document"] and method == "post":
            return self._insert(c, db, unquote(p[2]))
        if p[:2] == ["_api", "cursor"]:
            return self._cursor(c, db, p)
        if p == ["_api", "database", "current"]:
            return self._database(c, p)
        return error(404, 404, f"fake arango: no route {method.upper()} {c.path}")

    def _coll(self, db: dict[str, Collection], name: str) -> Collection | None:
        with self._lock:
            return db.get(name)

    def _database(self, c: Call, p: list[str]) -> Answer:
        if p[2:] == ["current"]:
            return 200, {
                "error": False,
                "code": 200,
                "result": {"name": c.database, "id": "1", "path": "", "isSystem": False},
            }
        if c.database != "_system":
            return error(403, 1230, "use of database _system required")
        with self._lock:
            if c.method == "get" and len(p) == 2:
                return 200, {"error": False, "code": 200, "result": sorted(self.dbs)}
            if c.method == "post" and len(p) == 2:
                name = c.body["name"]
                if name in self.dbs:
                    return error(409, 1207, "duplicate database name")
                self.dbs[name] = {}
                return 201, {"error": False, "code": 201, "result": True}
            if c.method == "delete" and len(p) == 3:
                if self.dbs.pop(unquote(p[2]), None) is None:
                    return NO_DATABASE
                return 200, {"error": False, "code": 200, "result": True}
        return error(404, 404, "fake arango: no such database route")

    def _index(self, c: Call, db: dict[str, Collection]) -> Answer:
        name = c.params.get("collection", "")
        coll = self._coll(db, name)
        if coll is None:
            return error(404, 1203, f"collection or view not found: {name}")
        with self._lock:
            if c.method == "get":
                return 200, {"error": False, "code": 200, "indexes": list(coll.indexes)}
            spec = dict(c.body)
            background = spec.pop("inBackground", False)
            for i in coll.indexes:
                same = (i["type"], i["fields"], i["unique"]) == (
                    spec["type"],
                    spec["fields"],
                    spec.get("unique", False),
                )
                if same and i["name"] == spec.get("name", i["name"]):
                    return 200, {"error": False, "code": 200, **i, "isNewlyCreated": False}
                if i["name"] == spec.get("name"):
                    return error(409, 1207, f"duplicate value: index name {i['name']}")
            index = {
                "id": f"{name}/{next(self._ids)}",
                "type": spec["type"],
                "name": spec.get("name") or f"idx_{len(coll.indexes)}",
                "fields": list(spec["fields"]),
                "unique": bool(spec.get("unique", False)),
                "sparse": bool(spec.get("sparse", False)),
            }
            coll.indexes.append(index)
            self.indexes_built.append((name, index["name"], bool(background)))
            return 201, {"error": False, "code": 201, **index, "isNewlyCreated": True}

    def _insert(self, c: Call, db: dict[str, Collection], name: str) -> Answer:
        coll = self._coll(db, name)
        if coll is None:
            return error(404, 1203, f"collection or view not found: {name}")
        doc = dict(c.body)
        key = doc["_key"]
        replace = c.params.get("overwriteMode") == "replace"
        with self._lock:
            if key in coll.in_flight:
                self.conflicts += 1
                return error(409, 1200, f"write-write conflict; conflicting key: {key}")
            clash = self._clash(coll, doc)
            if clash is not None and not (replace and clash == "primary"):
                return error(
                    409,
                    1210,
                    f"unique constraint violated - in index {clash}; conflicting key: {key}",
                )
            coll.in_flight.add(key)
        try:
            if self.commit_delay_s:
                time.sleep(self.commit_delay_s)
            with self._lock:
                doc["_id"], doc["_rev"] = f"{name}/{key}", f"_r{next(self._ids)}"
                coll.docs[key] = doc
        finally:
            with self._lock:
                coll.in_flight.discard(key)
        if c.params.get("silent") == "1":
            return 202, {}
        return 202, {"_key": key, "_id": doc["_id"], "_rev": doc["_rev"]}

    def _clash(self, coll: Collection, doc: dict[str, Any]) -> str | None:
        if doc["_key"] in coll.docs:
            return "primary"
        for i in coll.indexes:
            if i["unique"] and i["type"] == "persistent":
                value = [doc.get(f) for f in i["fields"]]
                if any(value == [d.get(f) for f in i["fields"]] for d in coll.docs.values()):
                    return str(i["name"])
        return None

    def _cursor(self, c: Call, db: dict[str, Collection], p: list[str]) -> Answer:
        """A cursor keeps all its rows; batch n (from 1) is always the same rows, so a batch
        asked for again by number (``/_api/cursor/<id>/<n>``, allowRetry) is answered again.
        Without a number, the next batch is the one after the last sent."""
        if len(p) == 2 and c.method == "post":
            q = c.body
            named = _QUERY_COLL.match(q["query"])
            coll = self._coll(db, named[1]) if named else None
            if coll is None:
                return error(404, 1203, "collection or view not found")
            with self._lock:
                docs = [dict(d) for d in coll.docs.values()]
            rows, plan = run_aql(docs, q["query"], q.get("bindVars", {}), c.database)
            with self._lock:
                self.plans.append(plan)
                cid = str(next(self._ids))
                self._cursors[cid] = _Cursor(rows, int(q.get("batchSize", 1000)))
            return self._batch(cid, 1, 201)
        if len(p) in (3, 4) and c.method == "post":
            with self._lock:
                cursor = self._cursors.get(p[2])
            if cursor is None:
                return error(404, 1600, "cursor not found")
            return self._batch(p[2], int(p[3]) if len(p) == 4 else cursor.sent + 1, 200)
        if len(p) == 3 and c.method == "delete":
            with self._lock:
                self._cursors.pop(p[2], None)
            return 202, {"error": False, "code": 202, "id": p[2]}
        return error(404, 404, "fake arango: no such cursor route")

    def _batch(self, cid: str, n: int, status: int) -> Answer:
        with self._lock:
            cursor = self._cursors[cid]
            cursor.sent = n
            rows = cursor.rows[(n - 1) * cursor.size : n * cursor.size]
            more = n * cursor.size < len(cursor.rows)
            if not more:
                del self._cursors[cid]
        body: dict[str, Any] = {
            "result": rows,
            "hasMore": more,
            "cached": False,
            "extra": {"warnings": [], "stats": {"writesExecuted": 0}},
            "error": False,
            "code": status,
        }
        if more:
            body["id"], body["nextBatchId"] = cid, str(n + 1)
        return status, body


@dataclass
class _Cursor:
    rows: list[dict[str, Any]]
    size: int
    sent: int = 0


_QUERY_COLL = re.compile(r"^FOR d IN (\w+)")
