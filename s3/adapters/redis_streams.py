"""Redis Streams for S3 (spec §1, §4, §8): a consumer-group worker over `feat:events:{SYMBOL}` that
acknowledges an entry only after its handler returned, reclaims a dead consumer's entries with
XAUTOCLAIM and dead-letters poison; the producers of `sig:events` and `ord:cmd:{SYMBOL}`; the
reader of `cfg:events`. Imports redis and `s3.adapters`, never `s3.core` logic.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import redis
from redis.crc import key_slot

from s3.adapters.feature_events import (
    ParsedEvent,
    ParseError,
    check_feature_entry,
    parse_feature_entry,
)
from s3.adapters.redis_client import Client, connect, is_cluster
from s3.adapters.redis_keys import Keys
from s3.adapters.redis_producers import (
    CfgEvent,
    _stream_batches,
    _text,
    emit_order_cmd,
    emit_signal,
    read_cfg_events,
)

log = logging.getLogger(__name__)

_MAX_REMEMBERED_ERRORS = 10_000
_MAX_ERROR_CHARS = 2_000
"""A dead letter's ``error`` is cut to this length (an exception may quote a huge input)."""

Handler = Callable[[str, str, dict[str, str]], None]
"""``handler(symbol, entry_id, fields)``; it returns once the signal is persisted, or raises."""


class EntryLost(Exception):
    """Raised by a handler when `StreamWorker.keep` says its entry was taken over by another
    consumer: the entry is theirs now, so this consumer neither acknowledges nor retries it."""


# Whether an entry is still pending on this consumer; if it is, its idle time starts again
# (XCLAIM to itself with JUSTID: the delivery count stays), so no other consumer's XAUTOCLAIM takes
# it for another min_idle_ms. One script: nothing can take the entry between the check and the claim.
_KEEP = """
local row = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)[1]
if row == nil or row[2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"""


# -- XAUTOCLAIM's two reply shapes ------------------------------------------------------------------
class AutoclaimReply(msgspec.Struct, frozen=True):
    """XAUTOCLAIM normalised. Redis 6.2 answers ``[next, entries]`` and shows an entry deleted from
    the stream as a nil in ``entries`` (the id is lost, the PEL keeps it); Redis 7 answers
    ``[next, entries, deleted_ids]`` and drops those from the PEL itself."""

    next_id: str
    entries: list[tuple[str, dict[str, str]]]
    deleted_ids: list[str]
    nil_entries: int


def _fields(raw: Any) -> dict[str, str]:
    if isinstance(raw, dict):
        return {_text(k): _text(v) for k, v in raw.items()}
    it = iter(raw)
    return {_text(k): _text(v) for k, v in zip(it, it, strict=True)}


def parse_autoclaim_reply(reply: Sequence[Any]) -> AutoclaimReply:
    """Accept the raw RESP reply of either version, or what redis-py's callback made of it (which
    turns each entry into ``(id, dict)`` and a 6.2 nil into ``(None, None)``)."""
    if len(reply) not in (2, 3):
        raise ValueError(f"XAUTOCLAIM reply has {len(reply)} elements, expected 2 (6.2) or 3 (7.x)")
    entries: list[tuple[str, dict[str, str]]] = []
    nils = 0
    for item in reply[1] or ():
        if item is None or item[0] is None or item[1] is None:
            nils += 1
            continue
        entries.append((_text(item[0]), _fields(item[1])))
    deleted = [_text(i) for i in reply[2] or ()] if len(reply) == 3 else []
    return AutoclaimReply(_text(reply[0]), entries, deleted, nils)


# -- the worker ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkerConfig:
    group: str
    consumer: str
    symbols: tuple[str, ...]
    count: int = 100
    """Entries per XREADGROUP and per XAUTOCLAIM page."""
    block_ms: int = 500
    """How long a read waits for new entries; keep it under the client's socket timeout."""
    min_idle_ms: int = 30_000
    """An entry pending this long is taken over (its consumer is presumed dead). Must exceed the
    slowest handler call, or a live consumer's entry is handled twice; a handler that waits longer
    keeps its entry with `StreamWorker.keep`. An entry that waited in a read batch for half of this
    is checked (and kept) before its handler runs."""
    claim_interval_ms: int | None = None
    """How often to run XAUTOCLAIM; default half of ``min_idle_ms`` (at least 50 ms)."""
    max_attempts: int = 5
    """Deliveries (XPENDING's count) after which a failing entry is dead-lettered."""
    ack_batch: int = 0
    """Acknowledge after this many handled entries; 0 = once per read batch (fewer round trips;
    a crash then re-delivers the batch's handled entries, so handlers must be idempotent)."""
    start_id: str = "$"
    """Where a newly created group starts: ``$`` (new entries only) or ``0`` (the whole stream)."""
    dlq_maxlen: int = 100_000

    def __post_init__(self) -> None:
        if not self.symbols:
            raise ValueError("WorkerConfig.symbols: give at least one symbol")
        if self.count < 1 or self.max_attempts < 1 or self.block_ms < 1 or self.min_idle_ms < 1:
            raise ValueError(
                "WorkerConfig: count, max_attempts, block_ms, min_idle_ms must be >= 1"
            )


@dataclass
class WorkerStats:
    handled: int = 0
    failed: int = 0
    dead_lettered: int = 0
    reclaimed: int = 0
    acked: int = 0
    lost: int = 0
    """Entries found taken over by another consumer before or while this one handled them."""


@dataclass(frozen=True)
class _SlotGroup:
    """Streams one XREADGROUP may read together: all of them standalone, one slot's under a cluster."""

    keys: tuple[str, ...]


class StreamWorker:
    """Consume `feat:events:{SYMBOL}` in a consumer group; see `WorkerConfig` for the knobs.

    Every entry ends handled and acknowledged, or in the dead-letter stream and acknowledged:
    an unparsable entry at once, a failing one after ``max_attempts`` deliveries. Under a cluster
    each stream is in its own slot, so one reader thread per slot does the blocking reads while
    the handler always runs on the thread that called `run`.

    Delivery is at least once: a handler may see an entry again after a crash (or, with
    ``ack_batch=0``, after a crash anywhere in the batch), so it must be idempotent (spec B6).
    A retried entry comes after later entries of its stream; feature events are snapshots and
    the staleness gate judges each on its own ``ts``.
    """

    def __init__(
        self,
        client: Client,
        keys: Keys,
        handler: Handler,
        config: WorkerConfig,
        *,
        validate: Callable[..., ParseError | None] = check_feature_entry,
        on_acked: Callable[[str, list[str]], None] | None = None,
        input_errors: tuple[type[Exception], ...] = (),
    ) -> None:
        kwargs = client.get_connection_kwargs()
        if not kwargs.get("decode_responses"):
            raise ValueError("StreamWorker needs a client made with decode_responses=True")
        timeout_s = kwargs.get("socket_timeout")
        if timeout_s is not None and config.block_ms / 1000 >= timeout_s:
            raise ValueError(
                f"WorkerConfig.block_ms ({config.block_ms}) must be shorter than the client's "
                f"socket timeout ({timeout_s} s), or every blocking read times out"
            )
        self.client, self.keys, self.handler, self.config = client, keys, handler, config
        self.validate, self.on_acked = validate, on_acked
        self.input_errors = input_errors
        """Handler exceptions that blame the entry: dead-lettered at once, never retried."""
        self.stats = WorkerStats()
        self._symbol_of = {keys.feat_events(s): s for s in config.symbols}
        self._groups = self._slot_groups(list(self._symbol_of))
        self._stop = threading.Event()
        self._acks: dict[str, list[str]] = {}
        self._unacked = 0
        self._errors: dict[tuple[str, str], str] = {}
        self._cursors = dict.fromkeys(self._symbol_of, "0-0")
        self._next_claim = 0.0
        self._groups_ready = False
        self._keep = client.register_script(_KEEP)

    @classmethod
    def from_addresses(
        cls, addresses: str | Sequence[str], handler: Handler, config: WorkerConfig
    ) -> StreamWorker:
        client, keys = connect(addresses)
        return cls(client, keys, handler, config)

    def _slot_groups(self, stream_keys: list[str]) -> list[_SlotGroup]:
        if not is_cluster(self.client):
            return [_SlotGroup(tuple(stream_keys))]
        by_slot: dict[int, list[str]] = {}
        for key in stream_keys:
            by_slot.setdefault(key_slot(key.encode()), []).append(key)
        return [_SlotGroup(tuple(v)) for v in by_slot.values()]

    # -- setup and stop --------------------------------------------------------------------------------
    def ensure_groups(self) -> None:
        """XGROUP CREATE ... MKSTREAM on every stream; an existing group (BUSYGROUP) is fine."""
        for key in self._symbol_of:
            try:
                self.client.xgroup_create(
                    key, self.config.group, id=self.config.start_id, mkstream=True
                )
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._groups_ready = True

    def stop(self) -> None:
        """Ask `run` to return after the entry in flight; safe from any thread or the handler."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def keep(self, symbol: str, entry_id: str) -> bool:
        """Whether ``entry_id`` of ``symbol``'s stream is still pending on this consumer; if so,
        its idle time starts again, so no other consumer takes it over for ``min_idle_ms``.

        A handler that waits (for another attempt's idempotency claim, say) calls this during the
        wait and before going on: False means another consumer took the entry over (this process
        stalled, or waited without keeping it) and handles it; the handler then raises
        `EntryLost` rather than decide the entry a second time."""
        key = self.keys.feat_events(symbol)
        cfg = self.config
        try:
            return bool(self._keep(keys=[key], args=[cfg.group, cfg.consumer, entry_id]))
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):  # the stream was deleted: its entries are nobody's
                return False
            raise

    @property
    def stream_groups(self) -> list[tuple[str, ...]]:
        """The streams each XREADGROUP reads together (one tuple per slot under a cluster)."""
        return [g.keys for g in self._groups]

    # -- the loop ----------------------------------------------------------------------------------------
    def run(self) -> WorkerStats:
        """Read, handle and acknowledge until `stop`. Entries delivered but not yet started when
        the stop came stay pending and are reclaimed after ``min_idle_ms`` (nothing is lost).
        A stopped worker stays stopped (a stop that comes before `run` is not lost)."""
        if not self._groups_ready:
            self.ensure_groups()
        if len(self._groups) == 1:
            self._run_inline(self._groups[0])
        else:
            self._run_threaded()
        return self.stats

    def poll(self, *, reclaim: bool = False) -> int:
        """One round without blocking: reclaim if due (or asked), read each slot group once,
        handle, acknowledge. Returns the number of entries processed."""
        if not self._groups_ready:
            self.ensure_groups()
        done = self._reclaim(force=reclaim)
        for group in self._groups:
            read_at = time.monotonic()
            done += self._process(self._read(group, block_ms=None), read_at)
        self._flush_acks()
        return done

    def _run_inline(self, group: _SlotGroup) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._reclaim()
                    if self._stop.is_set():
                        break
                    read_at = time.monotonic()
                    self._process(self._read(group, block_ms=self.config.block_ms), read_at)
                    self._flush_acks()
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    self._backoff(exc)
        finally:
            self._final_flush()

    def _run_threaded(self) -> None:
        inbox: queue.Queue[tuple[threading.Event, Any, float]] = queue.Queue()
        readers = []
        for group in self._groups:
            ready = threading.Event()
            ready.set()
            t = threading.Thread(
                target=self._reader,
                args=(group, ready, inbox),
                name=f"s3-stream-{group.keys[0]}",
                daemon=True,
            )
            t.start()
            readers.append(t)
        wait_s = min(self._claim_interval_s(), self.config.block_ms / 1000)
        try:
            while not self._stop.is_set():
                try:
                    self._reclaim()
                    try:
                        ready, reply, read_at = inbox.get(timeout=wait_s)
                    except queue.Empty:
                        self._flush_acks()
                        continue
                    try:
                        if isinstance(reply, Exception):
                            raise reply
                        self._process(reply, read_at)
                        self._flush_acks()
                    finally:
                        ready.set()
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    self._backoff(exc)
        finally:
            self._stop.set()
            for t in readers:
                t.join(timeout=self.config.block_ms / 1000 + 5)
            self._final_flush()

    def _reader(self, group: _SlotGroup, ready: threading.Event, inbox: queue.Queue[Any]) -> None:
        """At most one unhandled batch per slot group: read again only once the last is done.
        Errors go to the handling thread, which retries connection errors and raises the rest."""
        while not self._stop.is_set():
            if not ready.wait(timeout=0.05):
                continue
            read_at = time.monotonic()
            try:
                reply = self._read(group, block_ms=self.config.block_ms)
            except Exception as exc:
                reply = exc
            if reply:
                ready.clear()
                inbox.put((ready, reply, read_at))

    def _backoff(self, exc: Exception) -> None:
        log.warning("stream worker %s: redis unavailable (%s); retrying", self.config.consumer, exc)
        self._stop.wait(0.2)

    def _final_flush(self) -> None:
        try:
            self._flush_acks()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # The handled entries stay pending and will be handled again after min_idle_ms.
            log.error("stream worker %s: final XACK failed (%s)", self.config.consumer, exc)

    def _read(self, group: _SlotGroup, *, block_ms: int | None) -> Any:
        streams: dict[Any, Any] = dict.fromkeys(group.keys, ">")
        try:
            return self.client.xreadgroup(
                self.config.group,
                self.config.consumer,
                streams,
                count=self.config.count,
                block=block_ms,
            )
        except redis.ResponseError as exc:
            self._recreate_group(exc)
            return None

    def _recreate_group(self, exc: redis.ResponseError) -> None:
        """A stream deleted under us (NOGROUP) gets its group again; other errors propagate."""
        if "NOGROUP" not in str(exc):
            raise exc
        log.warning("stream worker %s: %s; creating the group again", self.config.consumer, exc)
        self.ensure_groups()

    # -- handling ----------------------------------------------------------------------------------------
    def _process(self, reply: Any, read_at: float) -> int:
        """Handle a read's entries; ``read_at`` is when the read was sent (no later than Redis
        delivered them)."""
        done = 0
        for key, entries in _stream_batches(reply):
            for entry_id, fields in entries:
                if self._stop.is_set():
                    return done
                self._handle(key, entry_id, fields, attempt=1, delivered_at=read_at)
                done += 1
        return done

    def _handle(
        self,
        key: str,
        entry_id: str,
        fields: dict[str, str],
        *,
        attempt: int,
        delivered_at: float,
    ) -> None:
        symbol = self._symbol_of[key]
        # Entries of a batch wait for those before them: one that waited long enough to be taken
        # over by another consumer is checked (and kept) first. Less than min_idle_ms after its
        # delivery (half, for margin) no XAUTOCLAIM can have taken it: no round trip then.
        waited_s = time.monotonic() - delivered_at
        if waited_s >= self.config.min_idle_ms / 2000 and not self.keep(symbol, entry_id):
            self._lost(key, entry_id, f"before handling, {waited_s:.1f} s after its delivery")
            return
        try:
            invalid = self.validate(fields, symbol=symbol)
        except Exception as exc:  # whatever an entry makes the check raise, it is the entry's fault
            invalid = ParseError("PARSE.ERROR", "", f"the entry cannot be read: {_described(exc)}")
        if invalid is not None:
            self._errors.pop((key, entry_id), None)
            self._dead_letter(key, entry_id, fields, invalid.code, invalid.message, attempt)
            return
        try:
            self.handler(symbol, entry_id, fields)
        except EntryLost as exc:
            self._lost(key, entry_id, f"while handling it ({exc})")
            return
        except self.input_errors as exc:  # the entry is at fault: another attempt fails the same
            self.stats.failed += 1
            self._errors.pop((key, entry_id), None)
            code = getattr(exc, "code", None)
            self._dead_letter(
                key,
                entry_id,
                fields,
                f"INPUT.{code}" if isinstance(code, str) else "INPUT",
                f"handler refused the entry: {_described(exc)}",
                attempt,
            )
            return
        except Exception as exc:
            self.stats.failed += 1
            error = f"handler raised {_described(exc)}"
            log.warning(
                "%s %s: %s (attempt %d of %d)",
                key,
                entry_id,
                error,
                attempt,
                self.config.max_attempts,
            )
            if attempt >= self.config.max_attempts:
                self._errors.pop((key, entry_id), None)
                self._dead_letter(key, entry_id, fields, "HANDLER", error, attempt)
            else:
                # Left pending: redelivered by XAUTOCLAIM once idle for min_idle_ms. The last error
                # is kept for the dead letter; bounded, as another consumer may take the entry over.
                if len(self._errors) >= _MAX_REMEMBERED_ERRORS:
                    del self._errors[next(iter(self._errors))]
                self._errors[(key, entry_id)] = error
            return
        if self._errors:
            self._errors.pop((key, entry_id), None)
        self.stats.handled += 1
        self._ack_later(key, entry_id)

    def _lost(self, key: str, entry_id: str, when: str) -> None:
        """The entry is another consumer's now: no acknowledgement, no failure, no retry here."""
        self._errors.pop((key, entry_id), None)
        self.stats.lost += 1
        log.warning(
            "stream worker %s: %s %s was taken over by another consumer %s; left to it",
            self.config.consumer,
            key,
            entry_id,
            when,
        )

    def _dead_letter(
        self,
        key: str,
        entry_id: str,
        fields: Mapping[str, str] | None,
        code: str,
        error: str,
        attempts: int,
    ) -> None:
        """XADD to the dead-letter stream first; only once that succeeded is the entry acknowledged."""
        record: dict[Any, Any] = {
            "stream": key,
            "symbol": self._symbol_of[key],
            "id": entry_id,
            "group": self.config.group,
            "consumer": self.config.consumer,
            "fields": msgspec.json.encode(fields).decode() if fields is not None else "",
            "error_code": code,
            "error": error[:_MAX_ERROR_CHARS],
            "attempts": str(attempts),
            "ts": str(int(time.time() * 1000)),
        }
        self.client.xadd(
            self.keys.feat_dead_letter, record, maxlen=self.config.dlq_maxlen, approximate=True
        )
        self.stats.dead_lettered += 1
        log.error("dead-lettered %s %s after %d attempt(s): %s", key, entry_id, attempts, error)
        if fields is not None:
            self._ack_later(key, entry_id)

    def _ack_later(self, key: str, entry_id: str) -> None:
        self._acks.setdefault(key, []).append(entry_id)
        self._unacked += 1
        if self.config.ack_batch and self._unacked >= self.config.ack_batch:
            self._flush_acks()

    def _flush_acks(self) -> None:
        while self._acks:
            key, ids = next(iter(self._acks.items()))
            self.client.xack(key, self.config.group, *ids)
            del self._acks[key]
            self._unacked -= len(ids)
            self.stats.acked += len(ids)
            if self.on_acked is not None:
                self.on_acked(self._symbol_of[key], ids)

    # -- reclaiming ----------------------------------------------------------------------------------------
    def _claim_interval_s(self) -> float:
        ms = self.config.claim_interval_ms
        return max(ms if ms is not None else self.config.min_idle_ms // 2, 50) / 1000

    def _reclaim(self, *, force: bool = False) -> int:
        now = time.monotonic()
        if not force and now < self._next_claim:
            return 0
        done, more = 0, False
        for key in self._symbol_of:
            n, page_full = self._reclaim_stream(key)
            done += n
            more = more or page_full
            if self._stop.is_set():
                break
        # A full page means more idle entries may follow: claim again next round, not after the interval.
        self._next_claim = now if more else now + self._claim_interval_s()
        self._flush_acks()
        return done

    def _reclaim_stream(self, key: str) -> tuple[int, bool]:
        cfg = self.config
        start = self._cursors[key]
        claimed_at = time.monotonic()
        try:
            reply = self.client.xautoclaim(
                key, cfg.group, cfg.consumer, cfg.min_idle_ms, start_id=start, count=cfg.count
            )
        except redis.ResponseError as exc:
            self._recreate_group(exc)
            self._cursors[key] = "0-0"
            return 0, False
        claim = parse_autoclaim_reply(reply)
        self._cursors[key] = claim.next_id
        for entry_id in claim.deleted_ids:  # Redis 7 removed these from the PEL already
            self._dead_letter(key, entry_id, None, "DELETED", _DELETED, attempts=0)
        if claim.nil_entries:
            self._settle_deleted_62(key, start, claim)
        if not claim.entries:
            return 0, claim.next_id != "0-0"
        self.stats.reclaimed += len(claim.entries)
        pipe = self.client.pipeline(transaction=False)
        for entry_id, _ in claim.entries:
            pipe.xpending_range(key, cfg.group, entry_id, entry_id, 1, consumername=cfg.consumer)
        counts = [rows[0]["times_delivered"] if rows else None for rows in pipe.execute()]
        done = 0
        for (entry_id, fields), delivered in zip(claim.entries, counts, strict=True):
            if self._stop.is_set():
                break
            if delivered is None:  # another consumer took it over in between: it is theirs now
                continue
            done += 1
            if delivered > cfg.max_attempts:
                last = self._errors.pop((key, entry_id), None) or _ABANDONED
                error = (
                    f"delivered {delivered} times without an acknowledgement "
                    f"(max_attempts {cfg.max_attempts}); last error: {last}"
                )
                self._dead_letter(key, entry_id, fields, "ATTEMPTS", error, delivered)
            else:
                self._handle(key, entry_id, fields, attempt=delivered, delivered_at=claimed_at)
        return done, claim.next_id != "0-0"

    def _settle_deleted_62(self, key: str, start: str, claim: AutoclaimReply) -> None:
        """Redis 6.2 claimed entries that were deleted from the stream but names them only as nils.
        Find them: our pending ids in the scanned range that no longer exist in the stream."""
        end = "+" if claim.next_id == "0-0" else "(" + claim.next_id
        rows = self.client.xpending_range(
            key, self.config.group, start, end, 10_000, consumername=self.config.consumer
        )
        seen = {i for i, _ in claim.entries}
        candidates = [str(r["message_id"]) for r in rows if r["message_id"] not in seen]
        pipe = self.client.pipeline(transaction=False)
        for entry_id in candidates:
            pipe.xrange(key, entry_id, entry_id, count=1)
        for entry_id, found in zip(candidates, pipe.execute() if candidates else [], strict=True):
            if not found:
                self._dead_letter(key, entry_id, None, "DELETED", _DELETED, attempts=0)
                self._ack_later(key, entry_id)


def _described(exc: BaseException) -> str:
    """``Type: message``, the message cut short (an error may quote megabytes of input)."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"


_ABANDONED = "unknown, its consumer stopped or crashed while handling it"
_DELETED = "the entry was deleted from the stream (trimmed by MAXLEN?) before it was handled"


__all__ = [
    "AutoclaimReply",
    "CfgEvent",
    "EntryLost",
    "Handler",
    "ParseError",
    "ParsedEvent",
    "StreamWorker",
    "WorkerConfig",
    "WorkerStats",
    "check_feature_entry",
    "emit_order_cmd",
    "emit_signal",
    "parse_autoclaim_reply",
    "parse_feature_entry",
    "read_cfg_events",
]
