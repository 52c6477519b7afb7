"""Replay a tape through the pure decision pipeline, with simulated budgets and concurrency.

For every event of the tape, in order, the replay does what the live worker and engine do
(`Runner._handle` → `Engine.decide` → `Engine._decide_live`), minus the I/O:

1. positions due to close are closed first (see *holding* below);
2. the entry is parsed by the worker's parser (a malformed one is an error outcome, as it is
   dead-lettered live); a bar (high/low/close) is folded into the replay's own ATR state;
3. a symbol the bundle does not configure is an error outcome (`SYMBOL_NOT_CONFIGURED`, HTTP 422);
4. an intent id already decided (same symbol, side, t0 and rev) answers the first decision
   again (idempotency, `replayed`);
5. `MarketState` is built from the tape's state record (kill switch, health, funding) and the
   simulated risk counters, and `s3.core.decide.decide` runs (an `InputError` is an error outcome);
6. an `open` reserves its margin (FUT) or quote (SPOT) and one of the symbol's slots with the
   rules of the Redis ledger (`s3/adapters/redis_risk.py`): amounts exact in 1e-8 USDT (half-even,
   maxima floored), refused when ``inuse + amount > max`` or ``concurrency >= limit``; a refusal
   turns the decision into the same `RISK_BUDGET` skip, with the ledger's sentence.

**Holding.** Live, a reservation is given back when S6 reports the position closed; a tape does
not know when that would be. The replay closes each position after a holding period measured in
tape time (``hold_ms``: released before the first event whose ``ts`` is at least ``hold_ms``
after the opening event's) or in events (``hold_events``: released before the event ``N``
places after the opening one, counting every event of the tape). S4 is assumed to accept every
intent (a reservation is never released early).

**Outcomes** (``exits=True``, what `s3 replay` does by default): instead of a fixed holding,
every open is followed along the tape's later prices to its exit (`s3.replay.outcomes`: fill
model, fees, funding, P&L) and its reservation is released before the first event after the
exit's quote; the result carries the trades.

**Clock.** ``now_ms`` of a decision is the recorded live clock reading when the tape holds that
decision (``clock="recorded"``), else the event's ``ts`` plus ``latency_ms``.

**Model.** The bundle's model (built-in or ONNX), called directly: a live model timeout is not
reproduced.

Deterministic: the same tape, bundle and configuration give the same outcomes, bit for bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import msgspec

from s3.adapters.redis_risk import to_units
from s3.core import atr as atr_mod
from s3.core.decide import BundleSnapshot, decide
from s3.core.model import Model, model_of
from s3.core.types import AtrState, Decision, DecisionInput, MarketState, Reservation
from s3.errors import InputError
from s3.replay.outcomes import OutcomeSim, Trade, tape_kind
from s3.replay.tape import Tape, TapeEvent

Clock = Literal["recorded", "tape"]


@dataclass(frozen=True)
class ReplayConfig:
    hold_ms: int | None = 60_000
    """Close a position this long (tape time) after it opened; ignored when hold_events is set."""
    hold_events: int | None = None
    """Close a position this many events after it opened (every event of the tape counts)."""
    latency_ms: int = 0
    """now_ms = ts + latency_ms for events without a recorded live decision."""
    clock: Clock = "recorded"
    budgets: bool = True
    """False: no budget or concurrency limit (every decision sees empty counters)."""
    health: str | None = None
    """Force this health state for every event (what-if); None: the tape's."""
    kill_switch: str | None = None
    """Force this kill switch value for every event; None: the tape's."""
    exits: bool = False
    """Follow every open to its simulated exit (P&L); positions are released at their exit and
    hold_ms/hold_events are ignored."""

    def describe(self) -> dict[str, Any]:
        return {
            "hold": "until the simulated exit"
            if self.exits
            else f"{self.hold_events} events"
            if self.hold_events is not None
            else (f"{self.hold_ms} ms of tape time" if self.hold_ms is not None else "never"),
            "latency_ms": self.latency_ms,
            "clock": self.clock,
            "budgets": "simulated" if self.budgets else "unlimited",
            "health": self.health or "from the tape",
            "kill_switch": self.kill_switch or "from the tape",
        }


class Outcome(msgspec.Struct, frozen=True):
    """What happened to one event of the tape."""

    index: int
    symbol: str
    ts: int | None
    side: str | None
    mid: float | None
    decision: Decision | None = None
    error: str | None = None
    """``CODE: message`` when no decision was made (parse error, input error, unknown symbol)."""
    replayed: bool = False
    """An intent already decided: idempotency answered the first decision again."""

    @property
    def key(self) -> str:
        return f"{self.index:06d} {self.symbol} {self.ts} {self.side or '-'}"


@dataclass
class _Position:
    intent_id: str
    market: str
    symbol: str
    units: int
    index: int
    ts: int
    release_after: int | None = None
    """With exits: released before the first event whose index is above this."""


class SimRisk:
    """The Redis ledger's reservation rules on in-memory counters (no pending/commit split: S4
    accepts, so a reservation holds its budget until the position closes)."""

    def __init__(self) -> None:
        self.inuse: dict[str, int] = {"FUT": 0, "SPOT": 0}
        self.concurrency: dict[str, int] = {}
        self.positions: list[_Position] = []
        self.released = 0
        self.reserved = 0

    def state(self, symbol: str) -> tuple[float, float, int]:
        """The counters as `read_state` parses them from Redis (8-decimal strings to float)."""
        return (
            self.inuse["FUT"] / 100_000_000,
            self.inuse["SPOT"] / 100_000_000,
            self.concurrency.get(symbol, 0),
        )

    def reserve(
        self, iid: str, r: Reservation, index: int, ts: int
    ) -> tuple[bool, str, str]:  # ok, detail, sentence
        amount = to_units(r.amount_usdt, floor=False, what="amount_usdt")
        max_units = to_units(r.budget_max_usdt, floor=True, what="budget_max_usdt")
        inuse = self.inuse[r.market]
        conc = self.concurrency.get(r.symbol, 0)
        name = "FUT_MARGIN" if r.market == "FUT" else "SPOT_QUOTE"
        if inuse + amount > max_units:
            return (
                False,
                f"RISK_BUDGET.{name}",
                f"{name.lower()} in use {_show(inuse)} + {_show(amount)} USDT > max "
                f"{_show(max_units)}",
            )
        if conc >= r.concurrency_limit:
            return (
                False,
                "RISK_BUDGET.CONCURRENCY",
                f"{conc} concurrent entries on {r.symbol} >= limit {r.concurrency_limit}",
            )
        self.inuse[r.market] = inuse + amount
        self.concurrency[r.symbol] = conc + 1
        self.positions.append(_Position(iid, r.market, r.symbol, amount, index, ts))
        self.reserved += 1
        return True, "OK", ""

    def release_due(self, index: int, ts: int | None, cfg: ReplayConfig) -> None:
        if not self.positions:
            return
        if cfg.exits:
            due = [
                p for p in self.positions if p.release_after is not None and p.release_after < index
            ]
        elif cfg.hold_events is not None:
            due = [p for p in self.positions if index - p.index >= cfg.hold_events]
        elif cfg.hold_ms is not None and ts is not None:
            due = [p for p in self.positions if ts - p.ts >= cfg.hold_ms]
        else:
            return
        for p in due:
            self.release(p.intent_id)

    def release(self, iid: str) -> bool:
        """Give a position's amount and slot back (never below zero, as the Lua script does)."""
        for p in self.positions:
            if p.intent_id == iid:
                self.positions.remove(p)
                self.inuse[p.market] = max(0, self.inuse[p.market] - p.units)
                self.concurrency[p.symbol] = max(0, self.concurrency.get(p.symbol, 0) - 1)
                self.released += 1
                return True
        return False


def _show(units: int) -> str:
    return format(Decimal(units).scaleb(-8).normalize(), "f")


def bar_update(
    states: dict[str, AtrState], symbol: str, fields: dict[str, Any], period: int
) -> None:
    """`s3.worker.bar_update`, the same step (kept here so the replay does not import the service
    wiring; tests/replay checks that both agree)."""
    try:
        high, low, close = float(fields["high"]), float(fields["low"]), float(fields["close"])
    except (KeyError, TypeError, ValueError):
        return
    state = states.get(symbol) or atr_mod.new_state(period)
    with contextlib.suppress(ValueError):
        states[symbol] = atr_mod.update(state, high=high, low=low, close=close)


@dataclass
class ReplayResult:
    bundle_id: str
    rev: int
    checksum: str
    rule_ids: tuple[str, ...]
    rule_titles: dict[str, str]
    config: ReplayConfig
    outcomes: list[Outcome]
    tape_source: str
    tape_path: str
    reserved: int = 0
    released: int = 0
    open_at_end: int = 0
    elapsed_s: float = field(default=0.0, compare=False)
    """Wall time of the loop (not part of any deterministic output)."""
    trades: list[Trade] = field(default_factory=list)
    """With exits: every open followed to its outcome, in the order they opened."""
    exits: bool = False
    tape_kind: str = "quotes"
    first_ts: int | None = None
    last_ts: int | None = None
    params: Any = field(default=None, compare=False, repr=False)
    """The bundle's `EngineParams` (exit parameters, fees) for the reports."""

    @property
    def label(self) -> str:
        return f"{self.bundle_id} rev {self.rev}"


Progress = Callable[[int], None]


def replay(
    tape: Tape,
    snap: BundleSnapshot,
    config: ReplayConfig | None = None,
    *,
    model: Model | None = None,
    progress: Progress | None = None,
    progress_every: int = 10_000,
) -> ReplayResult:
    """Decide every event of ``tape`` with ``snap``; see the module docstring for the rules."""
    cfg = config or ReplayConfig()
    model = model or model_of(snap)
    params = snap.params
    configured = params.symbols
    period = params.atr_period
    rev = snap.rev
    risk = SimRisk()
    atr_states: dict[str, AtrState] = {}
    seen: dict[tuple[str, str, int], Outcome] = {}
    recorded = tape.decisions if cfg.clock == "recorded" else {}
    force_health, force_kill = cfg.health, cfg.kill_switch
    budgets = cfg.budgets
    sim = OutcomeSim(tape, params) if cfg.exits else None
    trades: list[Trade] = []
    outcomes: list[Outcome] = []
    append = outcomes.append
    started = time.perf_counter()
    ev: TapeEvent
    for ev in tape.events:
        index, symbol, ts = ev.index, ev.symbol, ev.ts
        if progress is not None and index % progress_every == 0:
            progress(index)
        if budgets:
            risk.release_due(index, ts, cfg)
        features = ev.features
        if ev.error is not None or features is None or ts is None:
            err = ev.error
            append(
                Outcome(
                    index,
                    symbol,
                    ts,
                    None,
                    None,
                    error=f"{err.code}: {err.message}" if err else "PARSE: unreadable",
                )
            )
            continue
        mid = features["mid"]
        if ev.bar:
            bar_update(atr_states, symbol, features, period)
        side = ev.side
        if symbol not in configured:
            append(
                Outcome(
                    index,
                    symbol,
                    ts,
                    side,
                    mid,
                    error=f"SYMBOL_NOT_CONFIGURED: {symbol} is not configured in bundle "
                    f"{snap.bundle_id} rev {rev}",
                )
            )
            continue
        # the idempotency key is intent_id(symbol, side, t0, rev): within one replay the rev is
        # fixed, so (symbol, side, t0) names the same intent without hashing
        iid = (symbol, side.upper(), ts) if side else None
        if iid is not None:
            first = seen.get(iid)
            if first is not None:
                append(Outcome(index, symbol, ts, side, mid, first.decision, first.error, True))
                continue
        live = recorded.get((symbol, ts, side or "")) if recorded else None
        now_ms = live.now_ms if live is not None else ts + cfg.latency_ms
        st = ev.state
        fut, spot, conc = risk.state(symbol) if budgets else (0.0, 0.0, 0)
        inp = DecisionInput(
            symbol=symbol,
            side_hint=side,
            features=features,
            now_ms=now_ms,
            t0_ms=ts,
            features_ts_ms=ts,
            state=MarketState(
                kill_switch=force_kill if force_kill is not None else st.kill_switch,
                health=force_health if force_health is not None else st.health,
                funding_next=st.funding.get(symbol),
                fut_margin_inuse_usdt=fut,
                spot_quote_inuse_usdt=spot,
                concurrency=conc,
            ),
            atr_state=atr_states.get(symbol),
            trigger="stream",
        )
        try:
            d = decide(inp, snap, model)
        except InputError as exc:
            append(Outcome(index, symbol, ts, side, mid, error=f"{exc.code}: {exc.detail}"))
            continue
        if d.decision == "open" and budgets:
            assert d.reservation is not None and d.intent is not None
            ok, detail, sentence = risk.reserve(d.intent.intent_id, d.reservation, index, ts)
            if not ok:
                d = msgspec.structs.replace(
                    d,
                    decision="skip",
                    reason="RISK_BUDGET",
                    reason_detail=detail,
                    sentence=sentence,
                    intent=None,
                )
            elif sim is not None:
                trade = sim.trade(ev, d)
                trades.append(trade)
                risk.positions[-1].release_after = trade.release_after
        elif d.decision == "open" and sim is not None:
            trades.append(sim.trade(ev, d))
        out = Outcome(index, symbol, ts, side, mid, d)
        if iid is not None:
            seen[iid] = out
        append(out)
    elapsed = time.perf_counter() - started
    rs = snap.ruleset
    stamps = [e.ts for e in tape.events if e.ts is not None]
    return ReplayResult(
        bundle_id=snap.bundle_id,
        rev=rev,
        checksum=snap.checksum,
        rule_ids=tuple(rs.rule_ids),
        rule_titles={r.rule_id: r.rule.title or "" for r in rs.rules},
        config=cfg,
        outcomes=outcomes,
        tape_source=tape.header.source,
        tape_path=tape.path,
        reserved=risk.reserved,
        released=risk.released,
        open_at_end=len(risk.positions),
        elapsed_s=elapsed,
        trades=trades,
        exits=cfg.exits,
        tape_kind=tape_kind(tape) if cfg.exits else "quotes",
        first_ts=min(stamps) if stamps else None,
        last_ts=max(stamps) if stamps else None,
        params=params,
    )


# -- comparing with what the live engine decided ----------------------------------------------------
class Mismatch(msgspec.Struct, frozen=True):
    key: str
    path: str
    live: Any
    replay: Any


@dataclass
class LiveCheck:
    compared: int = 0
    matched: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    no_live_record: int = 0
    """Decided by the replay, with no live decision on the tape (not an error)."""
    live_not_replayed: list[str] = field(default_factory=list)
    """Live decisions for which the replay made no decision (an error)."""

    @property
    def ok(self) -> bool:
        return not self.mismatches and not self.live_not_replayed


def _plain(value: Any) -> Any:
    """A JSON round trip: tuples become lists, Decimals strings, as the store keeps them."""
    return msgspec.json.decode(msgspec.json.encode(value))


def _diff_paths(a: Any, b: Any, path: str, out: list[tuple[str, Any, Any]]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            _diff_paths(a.get(k), b.get(k), f"{path}.{k}" if path else k, out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _diff_paths(x, y, f"{path}[{i}]", out)
    elif not _same_value(a, b):
        out.append((path, a, b))


def _is_number(v: Any) -> bool:
    return type(v) is int or type(v) is float


def _same_value(a: Any, b: Any) -> bool:
    """Numbers by value (ArangoDB hands a whole double back as an integer: a stored 1.0 reads
    back 1), everything else by value and type (True is not 1, "1" is not 1)."""
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    return bool(a == b) and type(a) is type(b)


def check_live(tape: Tape, result: ReplayResult) -> LiveCheck:
    """Compare every replayed decision with the live decision recorded for the same (symbol, t0,
    side), field by field over the whole record."""
    check = LiveCheck()
    used: set[tuple[str, int, str]] = set()
    for o in result.outcomes:
        if o.decision is None or o.replayed or o.ts is None:
            continue
        k = (o.symbol, o.ts, o.side or "")
        live = tape.decisions.get(k)
        if live is None:
            check.no_live_record += 1
            continue
        used.add(k)
        check.compared += 1
        diffs: list[tuple[str, Any, Any]] = []
        _diff_paths(_plain(live.record), _plain(o.decision), "", diffs)
        if diffs:
            check.mismatches += [Mismatch(o.key, p, a, b) for p, a, b in diffs]
        else:
            check.matched += 1
    check.live_not_replayed = [
        f"{s} {t} {side or '-'}" for (s, t, side) in sorted(set(tape.decisions) - used)
    ]
    return check


def simulate_outcomes(
    tape: Tape,
    snap: BundleSnapshot,
    config: ReplayConfig | None = None,
    *,
    model: Model | None = None,
) -> list[Trade]:
    """Every trade ``snap`` would have made on ``tape``, followed to its exit.

    Budgets and concurrency are the engine's (the simulated ledger of `replay`), each
    reservation released when its simulated position closes, so the trade set is the one
    production would have had. Each `Trade` carries the deciding event's ``features``, its
    ``exit_reason`` (``tp``, ``sl``, ``time``, ``end``, ``unfilled``) and `Trade.reached_tp`.
    Raises `OutcomeError` when a position crosses a funding time the tape has no rate for.
    """
    cfg = dataclasses.replace(config or ReplayConfig(), exits=True)
    return replay(tape, snap, cfg, model=model).trades
