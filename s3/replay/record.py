"""`s3 record`: capture `feat:events:{SYMBOL}` and the state a decision reads into a tape.

Two modes:

- **backfill** (default): every entry the streams still hold (or those between ``--since`` and
  ``--until``), merged across symbols in stream-id order (the order they arrived in; entries of
  two streams in the same millisecond by their ``ts``). Redis keeps
  only the *current* kill switch, health and `funding:next:*`, so the tape carries that state
  once, at the start: a backfill assumes the state did not change while the entries were written.
- **follow** (``--follow``): new entries as they arrive, for ``--duration`` seconds or ``--count``
  entries. The state is read again with every entry and a state record is written whenever it
  changed, so the tape follows kill switch, health and funding changes as they happen.

With ``--decisions`` the live decisions the engine stored for those events (the `signals`
collection, full records) are added, so the replay can use the engine's clock readings and
`s3 replay --check-live` can compare field by field.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s3.adapters.redis_client import Client
from s3.adapters.redis_keys import Keys
from s3.replay.tape import Event, Header, LiveDecision, State, TapeWriter

MAX_STORE_PAGE = 10_000


@dataclass
class RecordStats:
    events: int = 0
    states: int = 0
    decisions: int = 0
    by_symbol: dict[str, int] = field(default_factory=dict)
    first_ts: int | None = None
    last_ts: int | None = None


def _float(v: Any) -> float | None:
    try:
        return float(v) if v is not None else None
    except (TypeError, ValueError):
        return None


def read_state(client: Client, keys: Keys, symbols: Sequence[str], ts: int) -> State:
    """Kill switch, health and every `funding:next:{SYMBOL}`, in one pipeline (as `read_state`
    of the engine parses them: a funding value that is not a number reads as missing)."""
    pipe = client.pipeline(transaction=False)
    pipe.get(keys.kill_switch)
    pipe.get(keys.health)
    for s in symbols:
        pipe.get(keys.funding_next(s))
    kill, health, *funding = pipe.execute()
    values = {
        s: f for s, raw in zip(symbols, funding, strict=True) if (f := _float(raw)) is not None
    }
    return State(ts=ts, kill_switch=kill, health=health, funding=dict(sorted(values.items())))


def _entries(reply: Any) -> list[tuple[Any, Any]]:
    """XREAD's entries of one stream, from a RESP2 list or a RESP3 dict (whose entry list is
    wrapped once more), as `redis_streams` reads them."""
    if not reply:
        return []
    pairs = [(k, v[0] if v else []) for k, v in reply.items()] if isinstance(reply, dict) else reply
    return [(i, f) for _, entries in pairs for i, f in entries if i is not None and f is not None]


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _ts_of(fields: dict[str, str]) -> int | None:
    try:
        return int(fields["ts"])
    except (KeyError, ValueError):
        return None


def _stream(
    client: Client, key: str, since: str, until: str, batch: int
) -> Iterator[tuple[str, dict[str, str]]]:
    start = since
    while True:
        page = client.xrange(key, min=start, max=until, count=batch)
        if not page:
            return
        for entry_id, fields in page:
            yield str(entry_id), {str(k): str(v) for k, v in (fields or {}).items()}
        if len(page) < batch:
            return
        start = "(" + str(page[-1][0])


def _keyed(
    client: Client, keys: Keys, symbol: str, since: str, until: str, batch: int
) -> Iterator[tuple[tuple[int, int, int], str, str, dict[str, str]]]:
    """A stream's entries with a merge key: (id ms, ts, id seq). Ids order entries within one
    stream; across streams two entries of the same millisecond both have sequence 0, so their
    `ts` decides (its running maximum, which keeps each stream's own order)."""
    top = 0
    for entry_id, fields in _stream(client, keys.feat_events(symbol), since, until, batch):
        ms, seq = _id_key(entry_id)
        top = max(top, _ts_of(fields) or 0)
        yield (ms, top, seq), symbol, entry_id, fields


def live_decisions(
    store: Any, symbols: Sequence[str], t_from: int, t_to: int
) -> list[LiveDecision]:
    """The engine's stored decisions with t0 in [t_from, t_to), as tape records."""
    out: dict[str, LiveDecision] = {}
    cursor = t_from
    wanted = set(symbols)
    while True:
        page = store.signals_between(cursor, t_to, limit=MAX_STORE_PAGE)
        for sig in page:
            record = sig.decision.get("record") if isinstance(sig.decision, dict) else None
            if sig.symbol not in wanted or not isinstance(record, dict):
                continue
            out[sig.signal_id] = LiveDecision(
                symbol=sig.symbol,
                t0_ms=sig.t0,
                side=record.get("side"),
                now_ms=int(record.get("now_ms", sig.created_at)),
                record=record,
            )
        if len(page) < MAX_STORE_PAGE:
            break
        if page[-1].t0 == cursor:  # a page of one t0: the store cannot page further by time
            break
        cursor = page[-1].t0
    return sorted(out.values(), key=lambda d: (d.t0_ms, d.symbol, d.side or ""))


Tick = Callable[[int, int | None], None]
"""Progress callback: (events written, total if known)."""


def backfill(
    client: Client,
    keys: Keys,
    symbols: Sequence[str],
    out: str | Path,
    *,
    since: str = "-",
    until: str = "+",
    count: int = 0,
    store: Any = None,
    source: str = "",
    batch: int = 1000,
    tick: Tick | None = None,
    now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
) -> RecordStats:
    stats = RecordStats(by_symbol={s: 0 for s in symbols})
    total = sum(
        int(client.xlen(keys.feat_events(s))) for s in symbols if client.exists(keys.feat_events(s))
    )
    if count:
        total = min(total, count)
    header = Header(
        source=source or "redis backfill",
        symbols=list(symbols),
        created_ms=now_ms(),
        note="backfill: state as read at recording time",
    )
    streams = [_keyed(client, keys, s, since, until, batch) for s in symbols]
    with TapeWriter(out, header) as w:
        w.write(read_state(client, keys, symbols, now_ms()))
        stats.states += 1
        for _, symbol, entry_id, fields in heapq.merge(*streams, key=lambda t: (t[0], t[1])):
            if count and stats.events >= count:
                break
            w.write(Event(symbol=symbol, id=entry_id, fields=fields))
            _count(stats, symbol, fields)
            if tick is not None and stats.events % 200 == 0:
                tick(stats.events, total)
        if tick is not None:
            tick(stats.events, total)
        _decisions(w, stats, store, symbols)
    return stats


def _count(stats: RecordStats, symbol: str, fields: dict[str, str]) -> None:
    stats.events += 1
    stats.by_symbol[symbol] = stats.by_symbol.get(symbol, 0) + 1
    ts = _ts_of(fields)
    if ts is not None:
        stats.first_ts = ts if stats.first_ts is None else min(stats.first_ts, ts)
        stats.last_ts = ts if stats.last_ts is None else max(stats.last_ts, ts)


def _decisions(w: TapeWriter, stats: RecordStats, store: Any, symbols: Sequence[str]) -> None:
    if store is None or stats.first_ts is None or stats.last_ts is None:
        return
    for d in live_decisions(store, symbols, stats.first_ts, stats.last_ts + 1):
        w.write(d)
        stats.decisions += 1


def follow(
    client: Client,
    keys: Keys,
    symbols: Sequence[str],
    out: str | Path,
    *,
    duration_s: float | None = None,
    count: int = 0,
    store: Any = None,
    source: str = "",
    poll_ms: int = 50,
    tick: Tick | None = None,
    stop: Callable[[], bool] = lambda: False,
    now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
) -> RecordStats:
    """Record entries that arrive from now on (one XREAD per stream, so it works on a cluster)."""
    stats = RecordStats(by_symbol={s: 0 for s in symbols})
    header = Header(
        source=source or "redis follow",
        symbols=list(symbols),
        created_ms=now_ms(),
        note="follow: state read with every entry",
    )
    last_ids: dict[str, str] = {}
    for s in symbols:  # start after the newest entry of each stream
        newest = client.xrevrange(keys.feat_events(s), count=1)
        last_ids[s] = str(newest[0][0]) if newest else "0-0"
    deadline = None if duration_s is None else time.monotonic() + duration_s
    with TapeWriter(out, header) as w:
        state = read_state(client, keys, symbols, now_ms())
        w.write(state)
        stats.states += 1
        while not stop():
            if deadline is not None and time.monotonic() >= deadline:
                break
            if count and stats.events >= count:
                break
            batch: list[tuple[tuple[int, int, int], str, str, dict[str, str]]] = []
            for s in symbols:
                reply = client.xread({keys.feat_events(s): last_ids[s]}, count=500)
                for entry_id, raw in _entries(reply):
                    eid = str(entry_id)
                    last_ids[s] = eid
                    fields = {str(k): str(v) for k, v in raw.items()}
                    ms, seq = _id_key(eid)
                    batch.append(((ms, _ts_of(fields) or 0, seq), s, eid, fields))
            if not batch:
                time.sleep(poll_ms / 1000)
                continue
            for _, symbol, entry_id, fields in sorted(batch, key=lambda t: (t[0], t[1])):
                if count and stats.events >= count:
                    break
                now = read_state(client, keys, symbols, _ts_of(fields) or now_ms())
                if (now.kill_switch, now.health, now.funding) != (
                    state.kill_switch,
                    state.health,
                    state.funding,
                ):
                    state = now
                    w.write(state)
                    stats.states += 1
                w.write(Event(symbol=symbol, id=entry_id, fields=fields))
                _count(stats, symbol, fields)
            if tick is not None:
                tick(stats.events, count or None)
        _decisions(w, stats, store, symbols)
    return stats
