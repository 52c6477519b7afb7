"""Ports: the Protocols the service depends on, and the values that cross them.

Adapters in `s3.adapters` implement these; nothing here imports an adapter, a client library or
does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import msgspec

from s3.core.types import Decision

# -- store (spec §5, Part B7, B10) ----------------------------------------------------------------
# Documents keep the spec's field names; every time (`t0`, `ts`, `created_at`, `published_at`,
# `activated_at`) is epoch milliseconds. Time ranges are half-open: `t_from` <= t < `t_to`, either
# bound None for unbounded. Results are ordered by (time, id), oldest first unless newest_first;
# ids compare by bytes on every backend (ArangoDB's ICU order is not used for ties).

EVENT_KINDS: tuple[str, ...] = (
    "DECIDE",
    "ENTRY_SUBMITTED",
    "ENTRY_ACCEPTED",
    "ENTRY_REJECTED",
    "ENTRY_RECONCILED",
    "CONFIG_APPLIED",
    "CONFIG_REJECTED",
    "RESERVATION_HEALED",
    "STALE_SYMBOL",
    "SHADOW_DIFF",
    "BUNDLE_PUBLISHED",
)
"""The kinds the engine writes; the store accepts any kind matching ``^[A-Z][A-Z_]{1,40}$``."""

DECISION_KEYS: tuple[str, ...] = ("action", "size_mult", "tp_mult", "sl_mult", "reason", "model_p")
"""Keys every `signals.decision` sub-document has (spec §5); more are allowed."""


class SignalDoc(msgspec.Struct, frozen=True, kw_only=True):
    """One `signals` document: the features a decision saw and the decision it made."""

    signal_id: str
    """``SIG-<t0>-<BASE>[-<side>]-r<rev>`` (see `store_docs.signal_id`), or the caller's own id."""
    t0: int
    symbol: str
    features: dict[str, Any]
    decision: dict[str, Any]
    """``{action, size_mult, tp_mult, sl_mult, reason, model_p, ...}``."""
    config_rev: int
    created_at: int


class EventDoc(msgspec.Struct, frozen=True, kw_only=True):
    """One `strategy_events` document (DECIDE, ENTRY_*, CONFIG_*, ...)."""

    event_id: str
    kind: str
    symbol: str | None
    """None for events that concern no symbol (CONFIG_APPLIED, CONFIG_REJECTED); "" is stored
    as None."""
    detail: dict[str, Any]
    ts: int


class BundleDoc(msgspec.Struct, frozen=True, kw_only=True):
    """One immutable `config_bundles` revision: the bundle's files by relative path."""

    bundle_id: str
    rev: int
    checksum: str
    files: dict[str, str]
    description: str = ""
    published_at: int
    published_by: str | None = None


class ActiveDoc(msgspec.Struct, frozen=True, kw_only=True):
    """The single `config_active` document: which bundle revision is in force, and why."""

    bundle_id: str
    rev: int
    checksum: str
    activated_at: int
    reason: str


class BundleConflictError(ValueError):
    """A (bundle_id, rev) is already stored with another checksum: a revision is immutable."""


class Store(Protocol):
    """Signals, strategy events and config bundles (SQLite embedded, ArangoDB in production).

    Writes are idempotent by id and never overwrite: ``put_*`` returns True when it wrote and
    False when the id was already stored (the stored document is kept). Bad input raises
    ValueError naming the field, before anything is written. An unreachable backend raises
    `s3.errors.DependencyUnavailable`. Implementations are safe to share between threads.
    """

    def put_signal(self, doc: SignalDoc | Mapping[str, Any]) -> bool: ...

    def get_signal(self, signal_id: str) -> SignalDoc | None: ...

    def signals_by_symbol(
        self,
        symbol: str,
        t_from: int | None = None,
        t_to: int | None = None,
        *,
        limit: int = 100,
        newest_first: bool = False,
    ) -> list[SignalDoc]: ...

    def signals_between(
        self,
        t_from: int | None = None,
        t_to: int | None = None,
        *,
        limit: int = 100,
        newest_first: bool = False,
    ) -> list[SignalDoc]: ...

    def put_event(self, doc: EventDoc | Mapping[str, Any]) -> bool: ...

    def put_decision(
        self, signal: SignalDoc | Mapping[str, Any], event: EventDoc | Mapping[str, Any]
    ) -> tuple[bool, bool]:
        """A decision's signal and its DECIDE event: `put_signal` then `put_event`, both checked
        before either is written; one transaction where the backend has a cheap one (SQLite)."""
        ...

    def get_event(self, event_id: str) -> EventDoc | None: ...

    def events_by_kind(
        self,
        kind: str,
        t_from: int | None = None,
        t_to: int | None = None,
        *,
        limit: int = 100,
        newest_first: bool = False,
    ) -> list[EventDoc]: ...

    def events_between(
        self,
        t_from: int | None = None,
        t_to: int | None = None,
        *,
        symbol: str | None = None,
        limit: int = 100,
        newest_first: bool = False,
    ) -> list[EventDoc]: ...

    def put_bundle(self, doc: BundleDoc | Mapping[str, Any]) -> bool:
        """Store a revision; raises `BundleConflictError` if it exists with another checksum."""
        ...

    def get_bundle(self, bundle_id: str, rev: int) -> BundleDoc | None: ...

    def list_bundles(self, bundle_id: str | None = None) -> list[BundleDoc]:
        """All stored revisions (of one bundle, or of all), ordered by (bundle_id, rev)."""
        ...

    def set_active(
        self,
        bundle_id: str,
        rev: int,
        checksum: str,
        reason: str,
        *,
        activated_at: int | None = None,
    ) -> ActiveDoc:
        """Point `config_active` at a stored revision; ValueError if it is not stored as given."""
        ...

    def get_active(self) -> ActiveDoc | None: ...

    def ping(self) -> None:
        """Return if the backend answers; raise `DependencyUnavailable` otherwise (/health)."""
        ...

    def close(self) -> None: ...


# -- the engine's other collaborators (spec §8, Part B5/B6) ---------------------------------------
# Results whose types live with their adapter (`s3.adapters.redis_risk`, `s3.adapters.redis_idem`)
# are `Any` here: a port names the calls and their arguments; nothing here imports an adapter.


class RiskLedger(Protocol):
    """The atomic risk budget: reserve before persisting, commit or release after S4."""

    def reserve(
        self,
        intent_id: str,
        market: str,
        symbol: str,
        amount_usdt: Any,
        budget_max_usdt: Any,
        concurrency_limit: int,
        now_ms: int,
    ) -> Any: ...

    def commit(self, intent_id: str, *, now_ms: int | None = None) -> Any: ...

    def release(
        self,
        intent_id: str,
        reason: str,
        *,
        now_ms: int | None = None,
        symbol: str | None = None,
    ) -> Any: ...

    def self_heal(
        self,
        now_ms: int,
        pending_max_age_ms: int,
        *,
        released_retention_ms: int | None = ...,
        symbols: Any = (),
    ) -> list[Any]: ...

    def snapshot(self) -> Any: ...


class Idempotency(Protocol):
    """One result per intent id: claim, store the result, or abandon the claim after a failure."""

    def begin(self, intent_id: str, ttl_ms: int) -> Any: ...

    def queue_begin(self, pipe: Any, intent_id: str, ttl_ms: int) -> str: ...

    def begin_reply(self, intent_id: str, token: str, ttl_ms: int, reply: Any) -> Any: ...

    def complete(
        self, intent_id: str, result: bytes, ttl_ms: int, *, token: str | None = None
    ) -> str: ...

    def queue_complete(
        self, pipe: Any, intent_id: str, result: bytes, ttl_ms: int, *, token: str | None = None
    ) -> str: ...

    def complete_reply(
        self, intent_id: str, result: bytes, ttl_ms: int, token: str, reply: Any
    ) -> str: ...

    def abandon(self, intent_id: str, *, token: str | None = None) -> bool: ...


class Emitter(Protocol):
    """The stream producers: `sig:events` (queued on ``pipe`` when given) and `ord:cmd:{SYMBOL}`."""

    def emit_signal(self, d: Decision, pipe: Any = None) -> None: ...

    def emit_order_cmd(self, order: Any) -> None: ...
