"""The one invariant checker every chaos scenario ends with (issue 7).

It reads the system's own records only: the Redis ledger and counters (one atomic snapshot), the
feature streams' consumer group, the dead-letter stream, `ord:cmd:{SYMBOL}`, the idempotency
keys, the store's `signals` and `strategy_events`, and what the S4 stand-in received. It compares
them with what the scenario appended (`Pushed`) and answers one `Check` per invariant:

quota
    ``counters == ledger``   every counter equals the sum of the unreleased ledger entries, at
                             the end and at every sample the monitor took during the run;
    ``within max``           no budget above its max, no symbol above its concurrency limit;
    ``no pending``           no reservation is `pending` after self-heal (and reconcile) ran;
    ``orders hold quota``    every order S4 holds has a committed reservation (or one released
                             by the position's close); a late accept shows up here;
    ``quota has an order``   every committed reservation is an order S4 holds.
idempotency
    ``one command per id``   an intent id reaches S4 and `ord:cmd` as one command, however often;
    ``one intent per event`` an event leads to at most one intent id, one reservation, one order;
    ``retry = first``        the stored result of every intent is the decision first persisted.
no loss
    ``decided once``         every well-formed event has exactly one signal and one DECIDE event,
                             and is not dead-lettered;
    ``dead letter + reason`` every malformed event is in the dead-letter stream with its code
                             and a reason, and has no signal;
    ``drained``              nothing pending or undelivered in the consumer group.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from s3.adapters.redis_client import Client
from s3.adapters.redis_keys import Keys
from s3.adapters.redis_risk import RiskLedger, RiskSnapshot

CLOSED = "position_closed"
"""The release reason the scenarios' position closer uses (a position that ended)."""
ORDER_FIELDS = ("market", "side", "qty", "px", "sl_px", "tp_px", "policy")


@dataclass(frozen=True)
class Pushed:
    """One entry a scenario appended to `feat:events:{symbol}`."""

    symbol: str
    entry_id: str
    ts: int
    side: str | None
    expect: str
    """``decide`` (well formed), or the dead-letter ``error_code`` it must get (``HANDLER``,
    ``PARSE.MISSING_FIELD``, ...)."""
    fields: dict[str, str] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class Check:
    group: str
    name: str
    ok: bool = True
    checked: int = 0
    problems: list[str] = field(default_factory=list)

    def fail(self, problem: str) -> None:
        self.ok = False
        if len(self.problems) < 200:
            self.problems.append(problem)


@dataclass
class Limits:
    budget_max: Mapping[str, Decimal]
    """Largest max of each market over the bundle revisions in force during the run."""
    concurrency: int
    """Largest per-symbol concurrency limit over those revisions."""


@dataclass
class Monitor:
    """What the sampler saw during the run (`sample` is called every ~150 ms)."""

    samples: int = 0
    drift: list[str] = field(default_factory=list)
    over_max: list[str] = field(default_factory=list)

    def sample(self, ledger: RiskLedger, limits: Limits) -> None:
        snap = ledger.snapshot()
        self.samples += 1
        for d in snap.drift():
            if len(self.drift) < 50:
                self.drift.append(f"sample {self.samples}: {d}")
        for problem in over_limits(snap, limits):
            if len(self.over_max) < 50:
                self.over_max.append(f"sample {self.samples}: {problem}")


def over_limits(snap: RiskSnapshot, limits: Limits) -> list[str]:
    out = []
    for market, value in snap.inuse.items():
        cap = limits.budget_max.get(market)
        if value is not None and cap is not None and value > cap:
            out.append(f"{market} in use {value} > max {cap}")
    for symbol, n in snap.concurrency.items():
        if n is not None and n > limits.concurrency:
            out.append(f"{symbol} concurrency {n} > limit {limits.concurrency}")
    return out


@dataclass
class Observed:
    """Everything the checker reads, gathered once after recovery."""

    snapshot: RiskSnapshot
    signals: dict[tuple[str, int, str | None], list[dict[str, Any]]]
    decide_events: set[str]
    dead_letters: dict[tuple[str, str], dict[str, str]]
    ord_cmds: dict[str, list[dict[str, str]]]
    idem: dict[str, bytes | None]
    pending: dict[str, int]
    undelivered: dict[str, int]
    events: list[dict[str, Any]]


def observe(
    client: Client,
    keys: Keys,
    db_path: str,
    symbols: Iterable[str],
    group: str,
    raw_client: Client | None = None,
) -> Observed:
    symbols = list(symbols)
    ledger = RiskLedger(client, keys)
    snapshot = ledger.snapshot()
    signals: dict[tuple[str, int, str | None], list[dict[str, Any]]] = defaultdict(list)
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        for signal_id, t0, symbol, rev, decision in con.execute(
            "SELECT signal_id, t0, symbol, config_rev, decision FROM signals"
        ):
            record = json.loads(decision).get("record") or {}
            signals[(symbol, int(t0), record.get("side"))].append(
                {"signal_id": signal_id, "rev": int(rev), "record": record}
            )
        decide_events = {
            r[0] for r in con.execute("SELECT event_id FROM strategy_events WHERE kind = 'DECIDE'")
        }
        events = [
            {"kind": k, "symbol": s, "ts": int(t), "detail": json.loads(d), "event_id": i}
            for i, k, s, t, d in con.execute(
                "SELECT event_id, kind, symbol, ts, detail FROM strategy_events "
                "WHERE kind != 'DECIDE' ORDER BY ts"
            )
        ]
    finally:
        con.close()
    dead: dict[tuple[str, str], dict[str, str]] = {}
    for f in _entries(client, keys.feat_dead_letter):
        dead.setdefault((f.get("stream", ""), f.get("id", "")), f)
    ord_cmds: dict[str, list[dict[str, str]]] = defaultdict(list)
    for symbol in symbols:
        for f in _entries(client, keys.ord_cmd(symbol)):
            ord_cmds[f.get("intent_id", "")].append(f)
    intents = {
        rec["record"]["intent"]["intent_id"]
        for recs in signals.values()
        for rec in recs
        if (rec["record"].get("intent") or {}).get("intent_id")
    }
    raw = raw_client or client
    idem: dict[str, bytes | None] = {}
    pipe = raw.pipeline(transaction=False)
    ordered = sorted(intents)
    for iid in ordered:
        pipe.get(keys.idem(iid))
    for iid, value in zip(ordered, pipe.execute() if ordered else [], strict=True):
        idem[iid] = value if value is None or isinstance(value, bytes) else str(value).encode()
    pending: dict[str, int] = {}
    undelivered: dict[str, int] = {}
    for symbol in symbols:
        key = keys.feat_events(symbol)
        if not client.exists(key):
            continue
        pending[symbol] = int(client.xpending(key, group)["pending"])
        last = client.xinfo_stream(key)["last-generated-id"]
        for g in client.xinfo_groups(key):
            if g["name"] == group:
                undelivered[symbol] = 0 if _id_le(last, g["last-delivered-id"]) else 1
    return Observed(
        snapshot,
        dict(signals),
        decide_events,
        dead,
        dict(ord_cmds),
        idem,
        pending,
        undelivered,
        events,
    )


def _entries(client: Client, key: str) -> list[dict[str, str]]:
    """A stream's entries' fields, as text."""
    out = []
    for _, fields in client.xrange(key) or []:
        out.append({_str(k): _str(v) for k, v in (fields or {}).items()})
    return out


def _str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _id_le(a: str, b: str) -> bool:
    ams, _, aseq = a.partition("-")
    bms, _, bseq = b.partition("-")
    return (int(ams), int(aseq or 0)) <= (int(bms), int(bseq or 0))


def check_all(
    obs: Observed,
    pushed: list[Pushed],
    s4_bodies: Mapping[str, list[bytes]],
    limits: Limits,
    monitor: Monitor | None = None,
    *,
    prefix: str = "",
) -> list[Check]:
    """Every invariant on what `observe` gathered. Pure: no I/O."""
    checks: list[Check] = []
    snap = obs.snapshot
    entries = snap.entries

    # -- quota ---------------------------------------------------------------------------------
    c = Check("quota", "counters == unreleased ledger (end and every sample)")
    c.checked = 1 + (monitor.samples if monitor else 0)
    for d in snap.drift():
        c.fail(f"end: {d}")
    for d in monitor.drift if monitor else []:
        c.fail(d)
    checks.append(c)

    c = Check("quota", "no budget above its max (end and every sample)")
    c.checked = 1 + (monitor.samples if monitor else 0)
    for problem in over_limits(snap, limits):
        c.fail(f"end: {problem}")
    for problem in monitor.over_max if monitor else []:
        c.fail(problem)
    checks.append(c)

    c = Check("quota", "no reservation pending after self-heal")
    c.checked = len(entries)
    for e in entries.values():
        if e.state == "pending":
            c.fail(f"{e.intent_id} still pending (reserved at {e.ts})")
    checks.append(c)

    c = Check("quota", "every order S4 holds keeps its reservation")
    c.checked = len(s4_bodies)
    for iid in sorted(s4_bodies):
        held = entries.get(iid)
        if held is None:
            c.fail(f"{iid}: S4 holds the order, the ledger has no reservation")
        elif held.state == "pending":
            c.fail(f"{iid}: S4 holds the order, the reservation is still pending")
        elif held.state == "released" and held.reason != CLOSED:
            c.fail(
                f"{iid}: S4 holds the order, the reservation was released "
                f"({held.reason}, from {held.released_from})"
            )
    checks.append(c)

    c = Check("quota", "every committed reservation is an order at S4")
    committed = [
        e for e in entries.values() if e.state == "committed" or e.released_from == "committed"
    ]
    c.checked = len(committed)
    for e in committed:
        if e.intent_id not in s4_bodies:
            c.fail(f"{e.intent_id}: committed, S4 has no such order")
    checks.append(c)

    # -- idempotency ---------------------------------------------------------------------------
    c = Check("idempotency", "an intent id reaches S4 and ord:cmd as one command")
    c.checked = len(set(s4_bodies) | set(obs.ord_cmds))
    for iid, bodies in sorted(s4_bodies.items()):
        distinct = {_canonical(json.loads(b)) for b in bodies}
        if len(distinct) > 1:
            c.fail(f"{iid}: S4 received {len(distinct)} different commands")
    for iid, cmds in sorted(obs.ord_cmds.items()):
        distinct = {_canonical(f) for f in cmds}
        if len(distinct) > 1:
            c.fail(f"{iid}: ord:cmd holds {len(distinct)} different commands")
        if iid in s4_bodies:
            at_s4 = json.loads(s4_bodies[iid][0])
            for name in ORDER_FIELDS:
                a, b = at_s4.get(name), cmds[0].get(name)
                if a is not None and b is not None and str(a) != str(b):
                    c.fail(f"{iid}: {name} is {a!r} at S4 and {b!r} on ord:cmd")
    checks.append(c)

    by_event: dict[tuple[str, int, str | None], set[str]] = defaultdict(set)
    for key, recs in obs.signals.items():
        for rec in recs:
            intent_of = (rec["record"].get("intent") or {}).get("intent_id")
            if intent_of:
                by_event[key].add(str(intent_of))
    c = Check("idempotency", "one intent id, reservation and order per event")
    c.checked = len(by_event)
    for key, iids in sorted(by_event.items(), key=lambda kv: str(kv[0])):
        if len(iids) > 1:
            at_s4 = sorted(i for i in iids if i in s4_bodies)
            reserved = sorted(i for i in iids if i in entries)
            c.fail(f"{key}: {len(iids)} intent ids; reserved {reserved}; orders at S4 {at_s4}")
    known = {i for ids in by_event.values() for i in ids}
    for iid in sorted(set(s4_bodies) - known):
        c.fail(f"{iid}: an order at S4 that no signal explains")
    checks.append(c)

    c = Check("idempotency", "the stored result of an intent is the decision first persisted")
    for key, recs in obs.signals.items():
        for rec in recs:
            r = rec["record"]
            stored_iid = (r.get("intent") or {}).get("intent_id")
            if not stored_iid:
                continue
            iid = str(stored_iid)
            value = obs.idem.get(iid)
            if value is None:
                continue
            c.checked += 1
            if value[:1] != b"R":
                c.fail(f"{iid}: idempotency key still in progress ({value[:1]!r}) after recovery")
                continue
            stored = json.loads(value[33:])["decision"]
            for name in ("decision", "reason_detail", "config_rev"):
                if stored.get(name) != r.get(name):
                    c.fail(
                        f"{iid} {key}: stored result {name}={stored.get(name)!r}, "
                        f"first persisted {r.get(name)!r}"
                    )
    checks.append(c)

    # -- no loss -------------------------------------------------------------------------------
    # A malformation only the decision finds (``HANDLER``) is retried like any failure; by the
    # time of a later delivery the stale-features gate may skip the event before the schema
    # check: decided once (a skip) or dead-lettered are then both right.
    well = [p for p in pushed if p.expect in ("decide", "HANDLER")]
    bad = [p for p in pushed if p.expect not in ("decide", "HANDLER")]
    c = Check("no loss", "every event decided once (one signal, one DECIDE) or dead-lettered")
    c.checked = len(well)
    for p in well:
        stream = f"{prefix}feat:events:{p.symbol}"
        recs = obs.signals.get((p.symbol, p.ts, p.side), [])
        dl = obs.dead_letters.get((stream, p.entry_id))
        if not recs and dl is None:
            c.fail(f"{p.symbol} {p.entry_id}: no signal and not dead-lettered (lost)")
        elif not recs and dl is not None and not (dl.get("error_code") and dl.get("error")):
            c.fail(f"{p.symbol} {p.entry_id}: dead-lettered without a reason: {dl}")
        elif len(recs) > 1:
            revs = sorted(r["rev"] for r in recs)
            c.fail(f"{p.symbol} {p.entry_id}: decided {len(recs)} times (revs {revs})")
        elif recs and dl is not None:
            c.fail(
                f"{p.symbol} {p.entry_id}: decided and also dead-lettered "
                f"({dl.get('error_code')}: {dl.get('error', '')[:120]})"
            )
        elif recs and f"EVT-DECIDE-{recs[0]['signal_id']}" not in obs.decide_events:
            c.fail(f"{p.symbol} {p.entry_id}: signal {recs[0]['signal_id']} has no DECIDE event")
        elif recs and p.expect == "HANDLER" and recs[0]["record"].get("decision") != "skip":
            c.fail(f"{p.symbol} {p.entry_id}: malformed, yet decided {recs[0]['record']}")
        elif (
            dl is not None
            and p.expect == "HANDLER"
            and dl.get("error_code")
            not in (
                "HANDLER",
                "ATTEMPTS",  # its consumers died before it failed max_attempts times: still a reason
            )
            # the engine refused it as input (INPUT.BAD_SIDE, ...): dead-lettered at once
            and not str(dl.get("error_code")).startswith("INPUT.")
        ):
            c.fail(f"{p.symbol} {p.entry_id}: dead-lettered as {dl.get('error_code')}, not HANDLER")
    checks.append(c)

    c = Check("no loss", "every malformed event dead-lettered with its reason, never decided")
    c.checked = len(bad)
    for p in bad:
        stream = f"{prefix}feat:events:{p.symbol}"
        dl = obs.dead_letters.get((stream, p.entry_id))
        if dl is None:
            c.fail(f"{p.symbol} {p.entry_id}: expected {p.expect}, not dead-lettered")
            continue
        if dl.get("error_code") != p.expect or not dl.get("error"):
            c.fail(
                f"{p.symbol} {p.entry_id}: dead-lettered as {dl.get('error_code')!r} "
                f"({dl.get('error', '')[:100]}), expected {p.expect}"
            )
        if obs.signals.get((p.symbol, p.ts, p.side)):
            c.fail(f"{p.symbol} {p.entry_id}: malformed, yet a signal was stored")
    checks.append(c)

    c = Check("no loss", "the consumer group is drained (nothing pending or undelivered)")
    c.checked = len(obs.pending)
    for symbol, n in sorted(obs.pending.items()):
        if n:
            c.fail(f"{symbol}: {n} entries pending")
    for symbol, n in sorted(obs.undelivered.items()):
        if n:
            c.fail(f"{symbol}: entries never delivered to the group")
    checks.append(c)
    return checks


def _canonical(fields: Mapping[str, Any]) -> str:
    return json.dumps(
        {k: str(fields.get(k)) for k in ORDER_FIELDS if fields.get(k) is not None},
        sort_keys=True,
    )
