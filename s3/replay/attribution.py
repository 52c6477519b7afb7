"""What each rule earns: leave-one-out attribution with block-bootstrap confidence intervals.

For every rule r, the bundle without r is replayed on the same tape with the outcome simulation,
and its P&L, trades and drawdown are compared with the full bundle's. A rule's **contribution**
is ``full − without r``: a veto that kept the bundle out of losing trades contributes what it
saved (positive), a size rule what its scaling added.

**Cost.** The rule conditions are evaluated once per event (the base pass: every event decided
with free budgets, the compiled rules' raw result kept). The bundle without r differs only on the
events where r fired (or faulted): there the raw result is rebuilt without r (its factors taken
out of the products in evaluation order, so the products are bit for bit those of a bundle
compiled without r), and the rest of the pipeline (model, health, sizing, execution hints) runs
again, only when the rules' output (clamped multipliers, veto, a faulted veto) changed. The
budget and concurrency ledger then runs over the events that would open with free budgets, with
each reservation released at its trade's simulated exit; exits are simulated once per distinct
(event, order) and shared by every variant. ``tests/replay/test_attribution.py`` checks the result
against real replays of bundles compiled without each rule.

**Intervals.** The tape's time span is cut into ``blocks`` consecutive blocks of equal length
(default: one per two time stops, at least 10 and at most 100), each trade counted in the block
of its deciding event. Per block, the P&L difference (full − without r); ``resamples`` (2,000)
draws of as many blocks with replacement (numpy's PCG64 seeded with ``seed``, default 0; the same
draws for every rule) give the distribution of the summed difference, and its BCa percentiles
(bias-corrected and accelerated: plain 2.5/97.5 % percentiles under-cover a skewed difference,
as a veto's is) the 95 % interval. An interval that contains 0 is reported as "not distinguishable
from zero". Blocks keep the trades that interact through the ledger together; with few trades
the interval is wide, as it should be.
"""

from __future__ import annotations

import bisect
import copy
import heapq
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec
import numpy as np

from dsl.checker import constant_number
from dsl.runtime import Raw, build_outcome
from s3.core.decide import BundleSnapshot, decide
from s3.core.model import Model, build_model
from s3.core.types import AtrState, Decision, DecisionInput, MarketState
from s3.errors import InputError
from s3.replay.figures import drawdown, equity_curve, money
from s3.replay.outcomes import OutcomeSim, Trade
from s3.replay.replay import ReplayConfig, SimRisk, bar_update
from s3.replay.tape import Tape

RESAMPLES = 2_000
MIN_BLOCKS, MAX_BLOCKS = 10, 100


@dataclass
class Base:
    """The ledger-free pass: every event's input, raw rule result and decision with free budgets."""

    snap: BundleSnapshot
    inputs: dict[int, DecisionInput]
    """Each event's input with free budgets."""
    raws: dict[int, Raw]
    decisions: dict[int, Decision]
    """With the entry slots in use (cheap: no sizing); `Attributor.full` gives the real one."""
    first: set[int]
    """Events that are the first decided one of their intent (later ones replay it)."""
    opens: set[int]
    """The first events that reach sizing (potential opens: passed gates, rules and model)."""
    ts: dict[int, int]
    elapsed_s: float = 0.0


def _capturing(snap: BundleSnapshot, box: list[Any], inject: bool) -> BundleSnapshot:
    """The snapshot with its compiled evaluator wrapped: it records the raw result in ``box``
    (``inject=False``) or returns ``box[0]`` instead of evaluating (``inject=True``)."""
    rs = copy.copy(snap.ruleset)
    fast = snap.ruleset._fast

    if inject:

        def run(features: Any) -> Raw:
            raw: Raw = box[0]
            return raw
    else:

        def run(features: Any) -> Raw:
            raw = fast(features)
            box[0] = raw
            return raw

    object.__setattr__(rs, "_fast", run)
    return msgspec.structs.replace(snap, ruleset=rs)


def base_pass(
    tape: Tape, snap: BundleSnapshot, cfg: ReplayConfig, model: Model | None = None
) -> Base:
    """Decide every event as `replay` does, keeping what the variants need. Every decision is
    taken with the symbol's entry slots all in use: it then stops where the engine would size the
    entry (`RISK_BUDGET.CONCURRENCY`, an entry that passed the gates, the rules and the model: a
    potential open), which costs what a replay costs; the full decision with free budgets is
    taken later, only for the events the ledger reaches with a free slot."""
    started = time.perf_counter()
    model = model or build_model(snap.params.model)
    box: list[Any] = [None]
    cap = _capturing(snap, box, inject=False)
    params = snap.params
    atr_states: dict[str, AtrState] = {}
    seen: set[tuple[str, str, int]] = set()
    recorded = tape.decisions if cfg.clock == "recorded" else {}
    base = Base(snap, {}, {}, {}, set(), set(), {})
    full_slots = params.risk.concurrent_entries_per_symbol
    for ev in tape.events:
        f, ts, symbol = ev.features, ev.ts, ev.symbol
        if ev.error is not None or f is None or ts is None:
            continue
        if ev.bar:
            bar_update(atr_states, symbol, f, params.atr_period)
        if symbol not in params.symbols:
            continue
        side = ev.side
        key = (symbol, side.upper(), ts) if side else None
        if key is not None and key in seen:
            continue
        live = recorded.get((symbol, ts, side or "")) if recorded else None
        st = ev.state
        inp = DecisionInput(
            symbol=symbol,
            side_hint=side,
            features=f,
            now_ms=live.now_ms if live is not None else ts + cfg.latency_ms,
            t0_ms=ts,
            features_ts_ms=ts,
            state=MarketState(
                kill_switch=cfg.kill_switch if cfg.kill_switch is not None else st.kill_switch,
                health=cfg.health if cfg.health is not None else st.health,
                funding_next=st.funding.get(symbol),
                concurrency=full_slots,
            ),
            atr_state=atr_states.get(symbol),
            trigger="stream",
        )
        box[0] = None
        try:
            d = decide(inp, cap, model)
        except InputError:
            continue
        if key is not None:
            seen.add(key)
        i = ev.index
        base.first.add(i)
        base.inputs[i] = msgspec.structs.replace(
            inp, state=msgspec.structs.replace(inp.state, concurrency=0)
        )
        base.decisions[i] = d
        base.ts[i] = ts
        if d.reason_detail == "RISK_BUDGET.CONCURRENCY":
            base.opens.add(i)
        if box[0] is not None:
            base.raws[i] = box[0]
    base.elapsed_s = time.perf_counter() - started
    return base


def raw_without(raw: Raw, r: int, snap: BundleSnapshot) -> Raw | None:
    """The raw result of the bundle without rule index ``r``; None when r neither fired nor
    faulted (nothing changes). Products are rebuilt in evaluation order, factor by factor, as
    the compiled code multiplies them."""
    fired, faults, dyn, _, _, _ = raw
    if r not in fired and not any(i == r for i, _ in faults):
        return None
    fired2 = [i for i in fired if i != r]
    faults2 = [(i, e) for i, e in faults if i != r]
    dyn2 = [d for d in dyn if d[0] != r]
    by_rule: dict[int, list[float]] = {}
    for i, _, v in dyn2:
        by_rule.setdefault(i, []).append(v)
    acc = {"size_mult": 1.0, "tp_mult": 1.0, "sl_mult": 1.0}
    rules = snap.ruleset.rules
    for i in fired2:
        values = iter(by_rule.get(i, ()))
        for target, expr in rules[i].scales:
            c = constant_number(expr)
            acc[target] *= float(c) if c is not None else next(values)
    return fired2, faults2, dyn2, acc["size_mult"], acc["tp_mult"], acc["sl_mult"]


def _rules_output(raw: Raw, snap: BundleSnapshot) -> tuple[Any, ...]:
    """What of the rules' result a decision depends on: the clamped multipliers, whether a rule
    vetoed, whether a veto rule faulted."""
    rs = snap.ruleset
    out = build_outcome(raw, rs.infos, rs.clamp, rs.revision)
    vetoes = rs.veto_rule_ids
    return (
        out.clamped["size_mult"],
        out.clamped["tp_mult"],
        out.clamped["sl_mult"],
        out.veto is not None,
        any(f.rule_id in vetoes for f in out.faults),
    )


@dataclass
class Run:
    """One bundle (the full one, or without one rule) on the tape: its trades."""

    label: str
    trades: list[Trade]

    @property
    def filled(self) -> list[Trade]:
        return [t for t in self.trades if t.filled]

    @property
    def pnl(self) -> Decimal:
        return sum((t.pnl for t in self.trades), Decimal(0))


class Attributor:
    """The base pass once, then any number of leave-one-out runs sharing it and its exits."""

    def __init__(
        self,
        tape: Tape,
        snap: BundleSnapshot,
        config: ReplayConfig | None = None,
        *,
        model: Model | None = None,
    ):
        self.tape = tape
        self.snap = snap
        self.cfg = _exits(config)
        self.model = model or build_model(snap.params.model)
        self.base = base_pass(tape, snap, self.cfg, self.model)
        self.sim = OutcomeSim(tape, snap.params)
        self._trades: dict[tuple[Any, ...], Trade] = {}
        self._box: list[Any] = [None]
        self._inject = _capturing(snap, self._box, inject=True)
        self.decides = 0
        """Decisions re-run for the variants (the cost beyond the base pass)."""
        self._fired_at: dict[int, list[int]] | None = None
        self._full: dict[int, Decision] = {}
        self.full_decides = 0
        """Full decisions (free budgets) the ledger needed from the base pass's potential opens."""

    def _trade(self, i: int, d: Decision) -> Trade:
        it = d.intent
        assert it is not None
        key = (i, it.qty, it.tp_px, it.sl_px, it.exec_policy, it.maker_wait_ms, d.now_ms)
        t = self._trades.get(key)
        if t is None:
            t = self.sim.trade(self.tape.events[i], d)
            self._trades[key] = t
        elif t.intent_id != it.intent_id or t.size_mult != d.size_mult:
            t = _relabel(t, d)
        return t

    def _fired(self) -> dict[int, list[int]]:
        """Rule index -> the events (in tape order) where it fired or faulted."""
        if self._fired_at is None:
            at: dict[int, list[int]] = {}
            for i in sorted(self.base.raws):
                fired, faults = self.base.raws[i][0], self.base.raws[i][1]
                for r in {*fired, *(k for k, _ in faults)}:
                    at.setdefault(r, []).append(i)
            self._fired_at = at
        return self._fired_at

    def full(self, i: int) -> Decision:
        """Event i's decision by the whole bundle with free budgets (taken once, when needed)."""
        d = self._full.get(i)
        if d is None:
            d = self.base.decisions[i]
            if i in self.base.opens:
                self.full_decides += 1
                d = decide(self.base.inputs[i], self.snap, self.model)
            self._full[i] = d
        return d

    def _variant(self, i: int, r: int) -> Decision:
        """Event i's decision (free budgets) by the bundle without rule index r."""
        raw = self.base.raws[i]
        raw2 = raw_without(raw, r, self.snap)
        if raw2 is None or _rules_output(raw2, self.snap) == _rules_output(raw, self.snap):
            return self.full(i)
        self._box[0] = raw2
        self.decides += 1
        return decide(self.base.inputs[i], self._inject, self.model)

    def run(self, rule: int | None = None, label: str = "full") -> Run:
        """The ledger over the events that may open, in tape order. Without ``rule`` (an index),
        the events where it fired are decided again, lazily: only when the symbol has a free
        entry slot, since a refused entry is refused whatever it would have been.

        Each symbol's candidates are a sorted list; while a symbol's slots are all taken, its
        pointer jumps past the first release (a bisection), so a run costs about one step per
        trade, not one per candidate event."""
        b = self.base
        changed = set(self._fired().get(rule, ())) if rule is not None else set()
        per_symbol: dict[str, list[int]] = {}
        for i in sorted(b.opens | changed):
            per_symbol.setdefault(b.inputs[i].symbol, []).append(i)
        risk = SimRisk()
        trades: list[Trade] = []
        budgets = self.cfg.budgets
        limit = self.snap.params.risk.concurrent_entries_per_symbol
        heap = [(lst[0], sym, 0) for sym, lst in per_symbol.items()]
        heapq.heapify(heap)
        while heap:
            i, sym, k = heapq.heappop(heap)
            lst = per_symbol[sym]
            nxt = k + 1
            if budgets:
                risk.release_due(i, b.ts[i], self.cfg)
                if risk.concurrency.get(sym, 0) >= limit:
                    # refused whatever it is, and so is every candidate of this symbol until
                    # the first of its positions is released
                    free_after = min(
                        p.release_after if p.release_after is not None else i
                        for p in risk.positions
                        if p.symbol == sym
                    )
                    nxt = max(nxt, bisect.bisect_right(lst, free_after))
                    if nxt < len(lst):
                        heapq.heappush(heap, (lst[nxt], sym, nxt))
                    continue
            if nxt < len(lst):
                heapq.heappush(heap, (lst[nxt], sym, nxt))
            d = self._variant(i, rule) if rule is not None and i in changed else self.full(i)
            if d.decision != "open":
                continue
            assert d.intent is not None and d.reservation is not None
            if budgets:
                ok, _, _ = risk.reserve(d.intent.intent_id, d.reservation, i, b.ts[i])
                if not ok:
                    continue
            t = self._trade(i, d)
            trades.append(t)
            if budgets:
                risk.positions[-1].release_after = t.release_after
        return Run(label, trades)

    def without(self, rule_id: str) -> Run:
        """The bundle without ``rule_id`` (only the events where it fired or faulted differ)."""
        r = self.snap.ruleset.rule_ids.index(rule_id)
        return self.run(r, label=f"without {rule_id}")


def _exits(config: ReplayConfig | None) -> ReplayConfig:
    import dataclasses

    return dataclasses.replace(config or ReplayConfig(), exits=True)


def _relabel(t: Trade, d: Decision) -> Trade:
    import dataclasses

    assert d.intent is not None
    return dataclasses.replace(
        t, intent_id=d.intent.intent_id, size_mult=d.size_mult, rules_fired=d.rules_fired
    )


# -- the bootstrap -------------------------------------------------------------------------------------
def block_count(span_ms: int, time_stop_ms: int) -> int:
    return int(min(MAX_BLOCKS, max(MIN_BLOCKS, span_ms // max(1, 2 * time_stop_ms))))


def block_pnl(
    trades: Sequence[Trade], first_ts: int, span_ms: int, blocks: int
) -> np.ndarray[Any, Any]:
    out = np.zeros(blocks, dtype=np.float64)
    for t in trades:
        k = min(blocks - 1, max(0, (t.decision_ts - first_ts) * blocks // max(1, span_ms)))
        out[k] += float(t.pnl)
    return out


def bootstrap_ci(
    deltas: np.ndarray[Any, Any], draws: np.ndarray[Any, Any], level: float = 0.95
) -> tuple[float, float]:
    """The BCa (bias-corrected and accelerated, Efron 1987) 95 % interval of the sum of the
    block differences: the percentiles of the resampled sums, moved for the bias (the share of
    resampled sums below the observed one) and for the skewness (the acceleration, from the
    jackknife of the blocks). A P&L difference is skewed (a veto saves a few large losses), where
    plain percentiles cover less than they claim."""
    total = float(deltas.sum())
    if np.all(deltas == deltas[0]):
        return total, total
    sums = deltas[draws].sum(axis=1)
    nd = statistics.NormalDist()
    below = float(np.mean(sums < total)) + 0.5 * float(np.mean(sums == total))
    below = min(max(below, 1 / (2 * len(sums))), 1 - 1 / (2 * len(sums)))
    z0 = nd.inv_cdf(below)
    k = len(deltas)
    jack = (total - deltas) / (k - 1)  # the mean of the other blocks
    d = jack.mean() - jack
    den = float((d**2).sum()) ** 1.5
    a = float((d**3).sum()) / (6 * den) if den > 0 else 0.0
    qs = []
    for alpha in ((1 - level) / 2, (1 + level) / 2):
        z = nd.inv_cdf(alpha)
        qs.append(nd.cdf(z0 + (z0 + z) / (1 - a * (z0 + z))))
    lo, hi = np.percentile(sums, [100 * qs[0], 100 * qs[1]])
    return float(lo), float(hi)


@dataclass
class RuleRow:
    rule_id: str
    title: str
    contribution: Decimal
    """P&L of the full bundle minus the bundle without the rule."""
    ci: tuple[float, float]
    d_trades: int
    d_drawdown: Decimal
    """Max drawdown of the full bundle minus without the rule (negative: the rule reduces it)."""
    fired: int
    changed: int
    """Decisions run again without the rule (events where its output mattered and the symbol had
    a free entry slot)."""

    @property
    def distinguishable(self) -> bool:
        lo, hi = self.ci
        return lo > 0 or hi < 0

    def to_json(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "title": self.title,
            "contribution": money(self.contribution),
            "ci95": [round(self.ci[0], 8), round(self.ci[1], 8)],
            "distinguishable_from_zero": self.distinguishable,
            "d_trades": self.d_trades,
            "d_max_drawdown": money(self.d_drawdown),
            "fired": self.fired,
            "decided_again": self.changed,
        }


@dataclass
class Attribution:
    full: Run
    rows: list[RuleRow]
    blocks: int
    resamples: int
    seed: int
    elapsed_s: float
    base_s: float
    decides: int
    events: int
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "method": "leave-one-out; contribution = P&L(full) - P&L(without the rule); 95 % "
            "interval: block bootstrap over equal time blocks (BCa percentiles)",
            "blocks": self.blocks,
            "resamples": self.resamples,
            "seed": self.seed,
            "full_pnl": money(self.full.pnl),
            "full_trades": len(self.full.filled),
            "rules": [r.to_json() for r in self.rows],
        }


def attribute(
    tape: Tape,
    snap: BundleSnapshot,
    config: ReplayConfig | None = None,
    *,
    rules: Sequence[str] | None = None,
    blocks: int | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
    model: Model | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Attribution:
    """Leave-one-out attribution of every rule (or of ``rules``), sorted by |contribution|."""
    started = time.perf_counter()
    at = Attributor(tape, snap, config, model=model)
    full = at.run()
    stamps = [e.ts for e in tape.events if e.ts is not None]
    first_ts, last_ts = (min(stamps), max(stamps)) if stamps else (0, 0)
    span = max(1, last_ts - first_ts + 1)
    k = blocks or block_count(span, snap.params.exits.time_stop_ms)
    draws = np.random.default_rng(seed).integers(0, k, size=(resamples, k))
    base_blocks = block_pnl(full.trades, first_ts, span, k)
    capital = Decimal(repr(snap.params.risk.fut_margin_usdt_max))
    full_dd = Decimal(drawdown(equity_curve(full.trades, capital), capital)["max_drawdown"])
    ids = list(rules) if rules is not None else list(snap.ruleset.rule_ids)
    titles = {r.rule_id: r.rule.title or "" for r in snap.ruleset.rules}
    fired: dict[str, int] = dict.fromkeys(ids, 0)
    all_ids = snap.ruleset.rule_ids
    index = {rid: n for n, rid in enumerate(all_ids)}
    for raw in at.base.raws.values():
        for i in raw[0]:
            rid = all_ids[i]
            if rid in fired:
                fired[rid] += 1
    rows: list[RuleRow] = []
    for n, rid in enumerate(ids):
        if rid not in index:
            raise ValueError(f"rule {rid!r} is not in bundle {snap.bundle_id} rev {snap.rev}")
        before = at.decides
        run = at.without(rid)
        changed = at.decides - before
        deltas = base_blocks - block_pnl(run.trades, first_ts, span, k)
        dd = Decimal(drawdown(equity_curve(run.trades, capital), capital)["max_drawdown"])
        rows.append(
            RuleRow(
                rid,
                titles.get(rid, ""),
                full.pnl - run.pnl,
                bootstrap_ci(deltas, draws),
                len(full.filled) - len(run.filled),
                full_dd - dd,
                fired[rid],
                changed,
            )
        )
        if progress is not None:
            progress(n + 1, len(ids))
    rows.sort(key=lambda r: (-abs(r.contribution), r.rule_id))
    return Attribution(
        full,
        rows,
        k,
        resamples,
        seed,
        time.perf_counter() - started,
        at.base.elapsed_s,
        at.decides,
        len(tape.events),
    )
