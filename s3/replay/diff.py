"""Summaries of a replay and the A/B diff of two replays of the same tape.

Everything here is a pure function of `ReplayResult`s, and every collection is ordered (by rule
evaluation order, by tape index, or by name), so the JSON, HTML and snapshot built from it are
byte-for-byte reproducible.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from s3.core.types import Decision
from s3.replay.replay import Outcome, ReplayResult

BUDGET_DETAILS = ("RISK_BUDGET.CONCURRENCY", "RISK_BUDGET.FUT_MARGIN", "RISK_BUDGET.SPOT_QUOTE")
MATERIAL = frozenset({"open_to_skip", "skip_to_open", "size", "tp_sl", "error"})
"""Change kinds the changed-events tables list (the rest are summarised in one line)."""
SIZE_BINS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5)
"""Edges of the size multiplier histogram (the last bin is open: >= 2.5)."""


def _r(x: float | None, nd: int = 12) -> float | None:
    return None if x is None else round(x, nd)


@dataclass
class Summary:
    label: str
    bundle_id: str
    rev: int
    events: int = 0
    decided: int = 0
    replayed: int = 0
    """Events answered by idempotency with an earlier decision (same symbol, side, t0 ms)."""
    same_ms: int = 0
    """Events in the same millisecond as an earlier event of their symbol (a feed that emits every
    book update puts several in one ms; with the same side they share an intent id)."""
    opens: int = 0
    skips: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    by_reason: dict[str, int] = field(default_factory=dict)
    """reason_detail -> count, for every decided event (OK for opens)."""
    opens_by_symbol: dict[str, int] = field(default_factory=dict)
    evaluated: int = 0
    """Decisions that reached L1 (past the gates): the denominator of a rule's hit rate."""
    rule_ids: tuple[str, ...] = ()
    rule_titles: dict[str, str] = field(default_factory=dict)
    rule_hits: dict[str, int] = field(default_factory=dict)
    vetoes: dict[str, int] = field(default_factory=dict)
    """rule -> decisions it vetoed (the veto that decided the skip)."""
    size_hist: list[int] = field(default_factory=list)
    """Opens per `SIZE_BINS` bin of the final size multiplier."""
    size_mults: list[float] = field(default_factory=list)
    notional_usdt: str = "0"
    reserved: int = 0
    released: int = 0
    open_at_end: int = 0

    @property
    def never_fired(self) -> list[str]:
        return [r for r in self.rule_ids if not self.rule_hits.get(r)]

    @property
    def coverage(self) -> float:
        if not self.rule_ids:
            return 1.0
        return (len(self.rule_ids) - len(self.never_fired)) / len(self.rule_ids)

    def hit_rate(self, rule_id: str) -> float:
        return self.rule_hits.get(rule_id, 0) / self.evaluated if self.evaluated else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "bundle": {"bundle_id": self.bundle_id, "rev": self.rev},
            "events": self.events,
            "decided": self.decided,
            "idempotent_replays": self.replayed,
            "same_ms_events": self.same_ms,
            "open": self.opens,
            "skip": self.skips,
            "errors": self.errors,
            "by_reason": self.by_reason,
            "opens_by_symbol": self.opens_by_symbol,
            "evaluated_by_rules": self.evaluated,
            "rules": [
                {
                    "rule_id": r,
                    "title": self.rule_titles.get(r, ""),
                    "hits": self.rule_hits.get(r, 0),
                    "hit_rate": _r(self.hit_rate(r), 6),
                    "vetoes": self.vetoes.get(r, 0),
                }
                for r in self.rule_ids
            ],
            "coverage": _r(self.coverage, 6),
            "never_fired": self.never_fired,
            "size_mult_histogram": {
                "edges": list(SIZE_BINS),
                "counts": self.size_hist,
            },
            "notional_usdt": self.notional_usdt,
            "risk": {
                "reserved": self.reserved,
                "released": self.released,
                "open_at_end": self.open_at_end,
            },
        }


def _bin(x: float) -> int:
    for i in range(len(SIZE_BINS) - 1, -1, -1):
        if x >= SIZE_BINS[i]:
            return i
    return 0


def summarize(result: ReplayResult) -> Summary:
    s = Summary(result.label, result.bundle_id, result.rev)
    s.rule_ids = result.rule_ids
    s.rule_titles = result.rule_titles
    errors: collections.Counter[str] = collections.Counter()
    reasons: collections.Counter[str] = collections.Counter()
    by_symbol: collections.Counter[str] = collections.Counter()
    hits: collections.Counter[str] = collections.Counter()
    vetoes: collections.Counter[str] = collections.Counter()
    hist = [0] * len(SIZE_BINS)
    notional = Decimal(0)
    seen_ms: set[tuple[str, int]] = set()
    for o in result.outcomes:
        s.events += 1
        if o.ts is not None:
            key = (o.symbol, o.ts)
            if key in seen_ms:
                s.same_ms += 1
            else:
                seen_ms.add(key)
        if o.decision is None:
            errors[(o.error or "ERROR").split(":")[0]] += 1
            continue
        if o.replayed:
            s.replayed += 1
            continue
        d = o.decision
        s.decided += 1
        reasons[d.reason_detail] += 1
        if d.reason != "GATE":
            s.evaluated += 1
            hits.update(d.rules_fired)
        if d.reason_detail.startswith("RULE.SKIP:"):
            vetoes[d.reason_detail.removeprefix("RULE.SKIP:")] += 1
        if d.decision == "open":
            s.opens += 1
            by_symbol[d.symbol] += 1
            hist[_bin(d.size_mult)] += 1
            s.size_mults.append(d.size_mult)
            if d.intent is not None:
                notional += d.intent.notional_usdt
        else:
            s.skips += 1
    s.errors = dict(sorted(errors.items()))
    s.by_reason = dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
    s.opens_by_symbol = dict(sorted(by_symbol.items()))
    s.rule_hits = {r: hits[r] for r in result.rule_ids if hits[r]}
    s.vetoes = {r: vetoes[r] for r in result.rule_ids if vetoes[r]}
    s.size_hist = hist
    s.notional_usdt = format(notional.normalize(), "f") if notional else "0"
    s.reserved, s.released, s.open_at_end = result.reserved, result.released, result.open_at_end
    return s


# -- A/B ----------------------------------------------------------------------------------------------
def brief(o: Outcome) -> dict[str, Any]:
    """What a change shows of one side: the verdict, the reason and the numbers that matter."""
    d = o.decision
    if d is None:
        return {"decision": "error", "error": o.error}
    out: dict[str, Any] = {
        "decision": d.decision,
        "reason_detail": d.reason_detail,
        "rules_fired": list(d.rules_fired),
        "size_mult": _r(d.size_mult),
        "tp_mult": _r(d.tp_mult),
        "sl_mult": _r(d.sl_mult),
    }
    if d.intent is not None:
        out |= {
            "qty": str(d.intent.qty),
            "entry_px": str(d.intent.entry_px),
            "tp_px": str(d.intent.tp_px),
            "sl_px": str(d.intent.sl_px),
        }
    if d.decision == "skip":
        out["sentence"] = d.sentence
    return out


@dataclass
class Change:
    index: int
    symbol: str
    ts: int | None
    side: str | None
    kinds: list[str]
    """open_to_skip | skip_to_open | error | reason | size | tp_sl | rules"""
    cause: str
    """rules (the L1 outcome differs), budget (same L1 outcome; only the simulated budget or
    concurrency differs, a knock-on of an earlier change), or engine (parameters: same L1,
    different sizing, model or gates)."""
    a: dict[str, Any]
    b: dict[str, Any]
    gained: list[str] = field(default_factory=list)
    """Rules fired under B and not under A."""
    lost: list[str] = field(default_factory=list)

    @property
    def material(self) -> bool:
        """The decision, its size, SL or TP changed (not only the reason or the rules fired)."""
        return bool(MATERIAL & set(self.kinds))

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "symbol": self.symbol,
            "ts": self.ts,
            "side": self.side,
            "kinds": self.kinds,
            "cause": self.cause,
            "rules_gained": self.gained,
            "rules_lost": self.lost,
            "a": self.a,
            "b": self.b,
        }


def _l1(d: Decision) -> tuple[Any, ...]:
    return (d.rules_fired, d.size_mult_rules, d.tp_mult, d.sl_mult, d.rule_faults)


def _changes(oa: Outcome, ob: Outcome) -> Change | None:
    if oa.replayed and ob.replayed:
        # Idempotency answered an earlier decision again under both bundles: that decision's own
        # event carries any change; counting it again here would count one change many times.
        return None
    da, db = oa.decision, ob.decision
    if da is None or db is None:
        if (da is None) != (db is None) or oa.error != ob.error:
            return Change(
                oa.index, oa.symbol, oa.ts, oa.side, ["error"], "engine", brief(oa), brief(ob)
            )
        return None
    kinds: list[str] = []
    if da.decision != db.decision:
        kinds.append("open_to_skip" if da.decision == "open" else "skip_to_open")
    elif da.reason_detail != db.reason_detail:
        kinds.append("reason")
    if da.decision == db.decision == "open":
        ia, ib = da.intent, db.intent
        assert ia is not None and ib is not None
        if ia.qty != ib.qty or da.size_mult != db.size_mult:
            kinds.append("size")
        if (ia.tp_px, ia.sl_px, da.tp_mult, da.sl_mult) != (
            ib.tp_px,
            ib.sl_px,
            db.tp_mult,
            db.sl_mult,
        ):
            kinds.append("tp_sl")
    gained = [r for r in db.rules_fired if r not in da.rules_fired]
    lost = [r for r in da.rules_fired if r not in db.rules_fired]
    if gained or lost:
        kinds.append("rules")
    if not kinds:
        return None
    if _l1(da) != _l1(db):
        cause = "rules"
    elif da.reason_detail in BUDGET_DETAILS or db.reason_detail in BUDGET_DETAILS:
        cause = "budget"
    else:
        cause = "engine"
    return Change(
        oa.index, oa.symbol, oa.ts, oa.side, kinds, cause, brief(oa), brief(ob), gained, lost
    )


@dataclass
class Diff:
    a: Summary
    b: Summary
    changes: list[Change]

    def count(self, kind: str) -> int:
        return sum(kind in c.kinds for c in self.changes)

    def material(self) -> list[Change]:
        return [c for c in self.changes if c.material]

    def flips(self, kind: str) -> list[Change]:
        return [c for c in self.changes if kind in c.kinds]

    def reason_flows(self) -> dict[str, int]:
        """'A reason -> B reason' for every event whose verdict or reason changed."""
        flows: collections.Counter[str] = collections.Counter()
        for c in self.changes:
            if {"open_to_skip", "skip_to_open", "reason", "error"} & set(c.kinds):
                a = c.a.get("reason_detail") or c.a.get("error", "error")
                b = c.b.get("reason_detail") or c.b.get("error", "error")
                flows[f"{a} -> {b}"] += 1
        return dict(sorted(flows.items(), key=lambda kv: (-kv[1], kv[0])))

    def rule_deltas(self) -> list[dict[str, Any]]:
        """Hits per rule under A and B, for every rule of either bundle."""
        ids = list(self.a.rule_ids) + [r for r in self.b.rule_ids if r not in self.a.rule_ids]
        out = []
        for r in ids:
            ha, hb = self.a.rule_hits.get(r, 0), self.b.rule_hits.get(r, 0)
            out.append(
                {
                    "rule_id": r,
                    "a": ha if r in self.a.rule_ids else None,
                    "b": hb if r in self.b.rule_ids else None,
                    "delta": hb - ha,
                }
            )
        return out

    def to_json(self) -> dict[str, Any]:
        kinds = ("open_to_skip", "skip_to_open", "reason", "size", "tp_sl", "rules", "error")
        return {
            "a": self.a.to_json(),
            "b": self.b.to_json(),
            "changed_events": len(self.changes),
            "material_changes": len(self.material()),
            "counts": {k: self.count(k) for k in kinds},
            "by_cause": dict(sorted(collections.Counter(c.cause for c in self.changes).items())),
            "reason_flows": self.reason_flows(),
            "rules": self.rule_deltas(),
            "never_fired": {"a": self.a.never_fired, "b": self.b.never_fired},
            "changes": [c.to_json() for c in self.changes],
        }


def diff(a: ReplayResult, b: ReplayResult) -> Diff:
    """Event by event; both results must come from the same tape."""
    if len(a.outcomes) != len(b.outcomes):
        raise ValueError(
            f"the replays cover {len(a.outcomes)} and {len(b.outcomes)} events: not the same tape"
        )
    changes = [c for oa, ob in zip(a.outcomes, b.outcomes, strict=True) if (c := _changes(oa, ob))]
    return Diff(summarize(a), summarize(b), changes)
