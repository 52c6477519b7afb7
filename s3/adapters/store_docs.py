"""Store documents shared by the SQLite and ArangoDB adapters: validation with errors that name
the field, deterministic ids, and the `signals` document of a `Decision`.

Validation runs before any write, so a bad document never leaves half a row behind. Imports
no backend client.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec

from s3.core.types import Decision
from s3.ports import (
    DECISION_KEYS,
    ActiveDoc,
    BundleConflictError,
    BundleDoc,
    EventDoc,
    SignalDoc,
)

KIND_RE = re.compile(r"^[A-Z][A-Z_]{1,40}$")
ID_RE = re.compile(r"^[\x21-\x7e]{1,80}$")
"""Printable ASCII without spaces, at most 80 characters (fits an ArangoDB `_key` encoded)."""
BUNDLE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SYMBOL_RE = re.compile(r"^[A-Z0-9][A-Z0-9_.]{0,39}$")
MAX_LIMIT = 10_000
MAX_JSON_INT = 2**53
"""Larger integers do not survive a JSON double (ArangoDB): refused on both backends alike."""
_MAX_DEPTH = 64
_TEXT_MAX = 10_000

D = TypeVar("D", SignalDoc, EventDoc, BundleDoc, ActiveDoc)


# -- ids -------------------------------------------------------------------------------------------


def signal_id(symbol: str, side: str | None, t0: int, config_rev: int) -> str:
    """``SIG-<t0>-<BASE>[-<side>]-r<rev>``: one id per (symbol, side, t0, config_rev).

    BASE is the symbol without its ``USDT`` quote (spec §5: ``SIG-1730000000000-BTC``); a symbol
    quoted in anything else keeps its full name after an underscore (``_BTCUSDC``), so no two
    symbols share a BASE.
    """
    _symbol(symbol, "signals.symbol")
    if side not in (None, "BUY", "SELL"):
        raise ValueError(f"signals.side: expected BUY, SELL or None, found {side!r}")
    _int(t0, "signals.t0")
    _int(config_rev, "signals.config_rev")
    base = symbol[:-4] if symbol.endswith("USDT") and len(symbol) > 4 else f"_{symbol}"
    return f"SIG-{t0}-{base}{'-' + side if side else ''}-r{config_rev}"


def event_id(kind: str, *key: object) -> str:
    """``EVT-<KIND>-<key parts joined by ->``: the one builder of every event id the engine,
    worker, service and shadow write. Pass a stable key (intent_id, signal_id, ...) so a retry
    writes the same id (the store keeps the first); no key gives a fresh random one."""
    _kind(kind, "strategy_events.kind")
    return f"EVT-{kind}-{'-'.join(str(k) for k in key) if key else uuid.uuid4().hex}"


def arango_key(text: str) -> str:
    """Encode text into ArangoDB's `_key` alphabet, one to one: ``[A-Za-z0-9_.@-]`` pass, any
    other byte becomes ``%XX`` (so ``:`` never appears and can join key parts)."""
    safe = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.@-"
    return "".join(chr(b) if b in safe else f"%{b:02X}" for b in text.encode("utf-8"))


# -- documents -------------------------------------------------------------------------------------


def decision_doc(decision: Decision) -> dict[str, Any]:
    """The `signals.decision` sub-document (spec §5 names: ``action``, ``size_mult``, ...) and
    under ``record`` the whole `Decision` (Decimals as strings, exact), which a retry and
    `s3 replay record` read back."""
    d = decision
    return {
        "action": d.decision,
        "size_mult": d.size_mult,
        "tp_mult": d.tp_mult,
        "sl_mult": d.sl_mult,
        "reason": d.reason,
        "reason_detail": d.reason_detail,
        "model_p": d.model_p,
        "record": msgspec.to_builtins(d),
    }


def signal_from_decision(
    decision: Decision, features: Mapping[str, Any], *, created_at: int
) -> dict[str, Any]:
    """The `signals` document for a decision, with the deterministic `signal_id` (the store
    validates it on write)."""
    d = decision
    return {
        "signal_id": signal_id(d.symbol, d.side, d.t0_ms, d.config_rev),
        "t0": d.t0_ms,
        "symbol": d.symbol,
        "features": features,
        "decision": decision_doc(d),
        "config_rev": d.config_rev,
        "created_at": created_at,
    }


def signal_doc(doc: SignalDoc | Mapping[str, Any]) -> SignalDoc:
    """Validate a `signals` document; ValueError names the first bad field."""
    c = "signals"
    raw = _fields(doc, SignalDoc, c)
    return SignalDoc(
        signal_id=_id(raw["signal_id"], f"{c}.signal_id"),
        t0=_int(raw["t0"], f"{c}.t0"),
        symbol=_symbol(raw["symbol"], f"{c}.symbol"),
        features=_object(raw["features"], f"{c}.features"),
        decision=_decision(raw["decision"], f"{c}.decision"),
        config_rev=_int(raw["config_rev"], f"{c}.config_rev"),
        created_at=_int(raw["created_at"], f"{c}.created_at"),
    )


def _decision(value: Any, where: str) -> dict[str, Any]:
    decision = _object(value, where)
    for key in DECISION_KEYS:
        if key not in decision:
            raise ValueError(f"{where}.{key}: missing")
    for key in ("action", "reason"):
        _text(decision[key], f"{where}.{key}")
    for key in ("size_mult", "tp_mult", "sl_mult"):
        _number(decision[key], f"{where}.{key}")
    if decision["model_p"] is not None:
        _number(decision["model_p"], f"{where}.model_p")
    return decision


def event_doc(doc: EventDoc | Mapping[str, Any]) -> EventDoc:
    """Validate a `strategy_events` document; ValueError names the first bad field."""
    c = "strategy_events"
    raw = _fields(doc, EventDoc, c, optional=("symbol",))
    symbol = raw.get("symbol")
    if symbol == "":  # "" and None both mean "no symbol"
        symbol = None
    return EventDoc(
        event_id=_id(raw["event_id"], f"{c}.event_id"),
        kind=_kind(raw["kind"], f"{c}.kind"),
        symbol=None if symbol is None else _symbol(symbol, f"{c}.symbol"),
        detail=_object(raw["detail"], f"{c}.detail"),
        ts=_int(raw["ts"], f"{c}.ts"),
    )


def bundle_doc(doc: BundleDoc | Mapping[str, Any]) -> BundleDoc:
    """Validate a `config_bundles` document; ValueError names the first bad field."""
    c = "config_bundles"
    raw = _fields(doc, BundleDoc, c, optional=("description", "published_by"))
    files = raw["files"]
    if not isinstance(files, Mapping) or not files:
        raise ValueError(f"{c}.files: expected a non-empty object of path -> text")
    for path, text in files.items():
        _path(path, f"{c}.files")
        if not isinstance(text, str):
            raise ValueError(f"{c}.files.{path}: expected text, found {type(text).__name__}")
    by = raw.get("published_by")
    return BundleDoc(
        bundle_id=bundle_id(raw["bundle_id"], f"{c}.bundle_id"),
        rev=_int(raw["rev"], f"{c}.rev"),
        checksum=_text(raw["checksum"], f"{c}.checksum", max_len=200),
        files=dict(files),
        description=_text(raw.get("description", ""), f"{c}.description", empty=True),
        published_at=_int(raw["published_at"], f"{c}.published_at"),
        published_by=None if by is None else _text(by, f"{c}.published_by", max_len=200),
    )


def active_doc(bundle: str, rev: int, checksum: str, reason: str, activated_at: int) -> ActiveDoc:
    """Validate the arguments of `set_active`."""
    c = "config_active"
    return ActiveDoc(
        bundle_id=bundle_id(bundle, f"{c}.bundle_id"),
        rev=_int(rev, f"{c}.rev"),
        checksum=_text(checksum, f"{c}.checksum", max_len=200),
        activated_at=_int(activated_at, f"{c}.activated_at"),
        reason=_text(reason, f"{c}.reason"),
    )


def bundle_id(value: Any, where: str = "bundle_id") -> str:
    _check(
        isinstance(value, str) and BUNDLE_ID_RE.match(value) is not None,
        where,
        f"expected 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit, "
        f"found {value!r}",
    )
    return str(value)


def check_revision(bundle: Any, rev: Any, where: str) -> None:
    bundle_id(bundle, f"{where}: bundle_id")
    _int(rev, f"{where}: rev")


def check_same_revision(new: BundleDoc, stored_checksum: str) -> None:
    """A stored (bundle_id, rev) may be written again only with the same checksum."""
    if stored_checksum != new.checksum:
        raise BundleConflictError(
            f"config_bundles.checksum: {new.bundle_id} rev {new.rev} is stored with checksum "
            f"{stored_checksum}, not {new.checksum}; a revision is immutable, publish a new rev"
        )


def check_activation(active: ActiveDoc, stored_checksum: str | None) -> None:
    """`config_active` may only point at a stored revision, with its stored checksum."""
    if stored_checksum is None:
        raise ValueError(
            f"config_active: {active.bundle_id} rev {active.rev} is not in config_bundles"
        )
    if stored_checksum != active.checksum:
        raise ValueError(
            f"config_active.checksum: {active.bundle_id} rev {active.rev} is stored with "
            f"checksum {stored_checksum}, not {active.checksum}"
        )


def query_args(t_from: int | None, t_to: int | None, limit: int, where: str) -> None:
    """Check the common arguments of the range queries."""
    if t_from is not None:
        _int(t_from, f"{where}: t_from")
    if t_to is not None:
        _int(t_to, f"{where}: t_to")
    if type(limit) is not int or not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"{where}: limit must be an integer in 1..{MAX_LIMIT}, found {limit!r}")


def check_id(value: Any, where: str) -> str:
    return _id(value, where)


def check_kind(value: Any, where: str) -> str:
    return _kind(value, where)


def check_symbol(value: Any, where: str) -> str:
    return _symbol(value, where)


def to_struct(raw: Mapping[str, Any], typ: type[D]) -> D:
    """A stored document (backend fields like ``_key`` dropped) as its Struct."""
    return msgspec.convert({k: v for k, v in raw.items() if not k.startswith("_")}, typ)


def dumps(value: Any) -> str:
    return msgspec.json.encode(value).decode("utf-8")


def loads(text: str | bytes) -> Any:
    return msgspec.json.decode(text)


# -- checks ----------------------------------------------------------------------------------------


def _fields(
    doc: Any, typ: type[msgspec.Struct], where: str, optional: tuple[str, ...] = ()
) -> dict[str, Any]:
    if isinstance(doc, typ):
        return msgspec.structs.asdict(doc)
    if not isinstance(doc, Mapping):
        raise ValueError(
            f"{where}: expected a mapping or {typ.__name__}, found {type(doc).__name__}"
        )
    known = typ.__struct_fields__
    for name in doc:
        if name not in known:
            raise ValueError(f"{where}.{name}: unknown field (known: {', '.join(known)})")
    for name in known:
        if name not in doc and name not in optional:
            raise ValueError(f"{where}.{name}: missing")
    return dict(doc)


def _check(ok: bool, where: str, problem: str) -> None:
    if not ok:
        raise ValueError(f"{where}: {problem}")


def _int(value: Any, where: str) -> int:
    _check(
        type(value) is int and 0 <= value <= MAX_JSON_INT,
        where,
        f"expected an integer in 0..2**53, found {value!r}",
    )
    return int(value)


def _number(value: Any, where: str) -> float:
    ok = type(value) in (int, float) and math.isfinite(value)
    _check(ok, where, f"expected a finite number, found {value!r}")
    return float(value)


def _text(value: Any, where: str, *, max_len: int = _TEXT_MAX, empty: bool = False) -> str:
    _check(isinstance(value, str), where, f"expected text, found {type(value).__name__}")
    _check(empty or bool(value), where, "expected text, found an empty string")
    _check(len(value) <= max_len, where, f"longer than {max_len} characters")
    return str(value)


def _id(value: Any, where: str) -> str:
    ok = isinstance(value, str) and ID_RE.match(value) is not None
    _check(ok, where, f"expected 1-80 printable ASCII characters without spaces, found {value!r}")
    return str(value)


def _kind(value: Any, where: str) -> str:
    ok = isinstance(value, str) and KIND_RE.match(value) is not None
    _check(
        ok,
        where,
        f"expected an upper-case kind like DECIDE (^[A-Z][A-Z_]{{1,40}}$), found {value!r}",
    )
    return str(value)


def _symbol(value: Any, where: str) -> str:
    ok = isinstance(value, str) and SYMBOL_RE.match(value) is not None
    _check(ok, where, f"expected an upper-case symbol like BTCUSDT, found {value!r}")
    return str(value)


def _path(value: Any, where: str) -> None:
    ok = (
        isinstance(value, str)
        and 0 < len(value) <= 200
        and not value.startswith("/")
        and "\\" not in value
        and "\0" not in value
        and all(part not in ("", ".", "..") for part in value.split("/"))
    )
    _check(ok, where, f"{value!r} is not a relative path inside the bundle")


def _object(value: Any, where: str) -> dict[str, Any]:
    _check(isinstance(value, Mapping), where, f"expected an object, found {type(value).__name__}")
    obj = dict(value)
    _json(obj, where, 0)
    return obj


_SCALARS = frozenset({str, bool, type(None)})


def _json_ok(value: Any, depth: int) -> bool:
    """The fast check behind `_json` (it runs on every write): one loop, no calls per value.
    False means "look closer": `_json` then walks again to name the first bad value."""
    stack: list[tuple[Any, int]] = [(value, depth)]
    scalars, isfinite, top = _SCALARS, math.isfinite, MAX_JSON_INT
    while stack:
        v, d = stack.pop()
        if d > _MAX_DEPTH:
            return False
        t = type(v)
        if (t is dict or t is list or t is tuple) and v and d >= _MAX_DEPTH:
            return False  # its items lie beyond the depth limit
        if t is dict:  # scalars checked in place: a flat dict of features pushes nothing
            for key, item in v.items():
                ti = type(item)
                if type(key) is not str:
                    return False
                if ti in scalars:
                    continue
                if ti is float:
                    if not isfinite(item):
                        return False
                elif ti is int:
                    if item > top or item < -top:
                        return False
                else:
                    stack.append((item, d + 1))
        elif t is list or t is tuple:
            for item in v:
                stack.append((item, d + 1))
        elif t in scalars:
            continue
        elif t is float:
            if not isfinite(v):
                return False
        elif t is int:
            if v > top or v < -top:
                return False
        else:  # a subclass or another type: the careful walk decides
            return False
    return True


def _json(value: Any, where: str, depth: int) -> None:
    """Only what JSON can hold, the same on both backends: no NaN/Infinity, no Decimal/datetime,
    string keys, integers a double holds exactly. The path of a bad value is only spelled out
    when there is one (this runs on every write)."""
    if not _json_ok(value, depth):
        _json_walk(value, where, depth)


def _json_walk(value: Any, where: str, depth: int) -> None:
    """The careful walk behind `_json`: raises ValueError naming the path of the first bad value."""
    path: list[str | int] = []

    def spelled() -> str:
        return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path)

    def fail(message: str) -> None:
        raise ValueError(f"{where}{spelled()}: {message}")

    def walk(v: Any, d: int) -> None:
        if d > _MAX_DEPTH:
            raise ValueError(f"{where}{spelled()}: nested deeper than {_MAX_DEPTH} levels")
        t = type(v)
        if v is None or t is bool or t is str:
            return
        if t is int:
            if abs(v) > MAX_JSON_INT:
                fail(f"integer {v} is beyond 2**53")
        elif t is float:
            if not math.isfinite(v):
                fail(f"{v!r} is not a JSON number")
        elif isinstance(v, dict):
            for key, item in v.items():
                if not isinstance(key, str):
                    fail(f"key {key!r} is not a string")
                path.append(key)
                walk(item, d + 1)
                path.pop()
        elif isinstance(v, list | tuple):
            for i, item in enumerate(v):
                path.append(i)
                walk(item, d + 1)
                path.pop()
        elif isinstance(v, bool | str):
            return
        elif isinstance(v, int) and not isinstance(v, bool):
            if abs(v) > MAX_JSON_INT:
                fail(f"integer {v} is beyond 2**53")
        elif isinstance(v, float):
            if not math.isfinite(v):
                fail(f"{v!r} is not a JSON number")
        else:
            fail(f"a {type(v).__name__} is not a JSON value")

    walk(value, depth)
