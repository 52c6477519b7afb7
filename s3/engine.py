"""The engine at work: one decision with its side effects, around the pure core.

Order of a live decision (spec §2, §8, Part B5/B6): read the snapshot in force once (RCU) → read
the state and claim the idempotency key in one round trip (a retry replays the first result) →
decide (pure) → reserve the risk budget atomically → persist the signal and its DECIDE event →
emit `sig:events` → submit the intent to S4 (dual track: `ord:cmd:{SYMBOL}` when S4 fails) →
commit or release the reservation → store the result under the idempotency key. A skip's
`sig:events` entry and its result go in one round trip.

Nothing is left behind on failure: a reservation whose decision could not be persisted is
released, and an idempotency claim whose request failed is abandoned so a retry can proceed.
A claim lives `claim_ttl_ms` (not 24 h) until its result is stored, so a process killed in the
middle of a decision blocks that intent only briefly; the retry then resumes from the decision
the first attempt persisted, if it got that far, instead of deciding again (docs/reliability.md).

S4's outcome "unknown" (timeouts, 5xx, connection errors after the retries) keeps the
reservation pending: S4 may hold the order (it may accept after the client gave up) and the dual
track hands the command to the guarded router as well. `reconcile` (run by the self-heal job)
asks S4 again with the same idempotency key and commits or releases.
"""

from __future__ import annotations

import collections
import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from s3 import ports
from s3.adapters import store_docs
from s3.adapters.model_runner import DeadlineModel, TimedModel
from s3.adapters.redis_client import (
    Client,
    is_cluster,
    parse_state,
    queue_state,
    read_state,
)
from s3.adapters.redis_keys import Keys
from s3.adapters.s4_client import OrderCmdRequest, S4Client, SubmitResult
from s3.config.reload import Registry
from s3.core.decide import BundleSnapshot, decide, intent_id
from s3.core.model import Model, model_of
from s3.core.types import AtrState, Decision, DecisionInput, MarketState
from s3.errors import DependencyUnavailable, InputError, Rejected
from s3.metrics import Metrics, swallowed
from s3.shadow import Shadow
from s3.steps import Steps, run_steps

IDEM_TTL_MS = 24 * 3600 * 1000
CLAIM_TTL_MS = 30_000
"""Default life of an in-progress idempotency claim (the service derives it from the S4 budget)."""
NUMERIC_FIELDS_SKIP = ("symbol", "side", "side_hint", "regime")
# What an event or a request may carry besides the bundle's features: the engine reads these.
ENGINE_FIELDS = frozenset({"ts", "symbol", "side", "side_hint", "high", "low", "close", "payload"})


_KNOWN: dict[tuple[str, int], frozenset[str]] = {}


def known_keys(snap: BundleSnapshot) -> frozenset[str]:
    """The keys a decision on ``snap`` reads: its features and the engine's own fields."""
    key = (snap.bundle_id, snap.rev)  # a revision is immutable
    found = _KNOWN.get(key)
    if found is None:
        if len(_KNOWN) > 64:
            _KNOWN.clear()
        found = _KNOWN[key] = ENGINE_FIELDS | frozenset(snap.ruleset.schema.features)
    return found


def features_from_hash(raw: Mapping[str, str]) -> dict[str, Any]:
    """A Redis hash (all strings) as feature values: numbers become numbers, the rest stays text."""
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if k in NUMERIC_FIELDS_SKIP:
            out[k] = v
            continue
        try:
            out[k] = int(v) if v.lstrip("-").isdigit() else float(v)
        except ValueError:
            out[k] = {"true": True, "false": False}.get(v, v)
    return out


class DecideResult(msgspec.Struct, frozen=True):
    """What `/decide` answers and what a retry replays verbatim (spec §3 plus extensions)."""

    decision: Decision
    submitted: str | None = None
    """accepted | rejected | unknown | stream (dual track) | none (dry run or skip)."""
    reservation: str | None = None
    replayed: bool = False


@dataclass(frozen=True)
class Submission:
    """An open decided, reserved, persisted and on `sig:events`: what is left is S4 and the
    result under the idempotency key (`Engine.decide_until_submit`)."""

    engine: Engine
    decision: Decision
    iid: str | None
    token: str | None
    trigger: str
    started: float

    def submit(self) -> DecideResult:
        """Submit to S4 (dual track on failure), settle the reservation, store the result."""
        e, d = self.engine, self.decision
        try:
            submitted, reservation = e._submit(d)
        except BaseException:
            if self.iid and self.token is not None:
                e.idem.abandon(self.iid, token=self.token)
            raise
        result = DecideResult(d, submitted=submitted, reservation=reservation)
        return run_steps(
            e._finish(result, self.iid, self.token, self.trigger, self.started, emit=False)
        )


@dataclass
class Engine:
    registry: Registry
    redis: Client
    keys: Keys
    ledger: ports.RiskLedger
    idem: ports.Idempotency
    store: ports.Store
    emitter: ports.Emitter
    s4: S4Client | None = None
    dual_track: bool = True
    metrics: Metrics = field(default_factory=Metrics)
    clock_ms: Callable[[], int] = field(default=lambda: int(time.time() * 1000))
    model_factory: Callable[[BundleSnapshot], Model] | None = None
    claim_ttl_ms: int = CLAIM_TTL_MS
    """How long an in-progress claim holds an intent: longer than a live decision takes."""
    atr_states: dict[str, AtrState] = field(default_factory=dict)
    latencies_ms: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=100_000)
    )
    shadow: Shadow | None = None
    """A second bundle deciding beside this one, without side effects (`s3.shadow`)."""
    _models: dict[tuple[str, int], Model] = field(default_factory=dict)

    def model_for(self, snap: BundleSnapshot) -> Model:
        key = (snap.bundle_id, snap.rev)
        model = self._models.get(key)
        if model is None:
            if self.model_factory is not None:
                model = self.model_factory(snap)
            elif snap.params.model.kind == "none":
                model = model_of(snap)
            elif snap.params.model.kind == "onnx":  # built with the revision (RCU); each call on
                # a thread that can be abandoned at the deadline, its run cancelled (spec §10)
                model = DeadlineModel(model_of(snap), snap.params.model.deadline_ms)
            else:  # the built-in model under the bundle's deadline (spec §10: timeout -> x1.0);
                # bounded arithmetic, so it runs inline (no thread hop) and a late answer is dropped
                model = TimedModel(model_of(snap), snap.params.model.deadline_ms)
            for old in self._models.values():
                if isinstance(old, DeadlineModel):
                    old.close()
            self._models = {key: model}  # one revision at a time
        return model

    # -- one decision ----------------------------------------------------------------------------------
    def decide_steps(
        self,
        *,
        symbol: str,
        side_hint: str | None,
        t0_ms: int | None,
        trigger: str,
        dry_run: bool = False,
        features: Mapping[str, Any] | None = None,
        features_ts_ms: int | None = None,
    ) -> Steps[DecideResult | Submission]:
        """`decide` up to S4, its Redis pipelines yielded: the result, or for an open that goes
        to S4 the `Submission` that finishes it. Everything before S4 is bounded by the Redis and
        store timeouts; the submission waits on S4 (up to its budget), so the HTTP app runs it on
        a worker thread."""
        started = time.perf_counter()
        snap = self.registry.current  # read once: this decision runs on this revision only
        now_ms = self.clock_ms()
        if symbol not in snap.params.symbols:  # well formed but not decidable here (Part B2: 422)
            raise Rejected(
                "SYMBOL_NOT_CONFIGURED",
                f"{symbol} is not configured in bundle {snap.bundle_id} rev {snap.rev}",
                symbol=symbol,
            )
        t0 = t0_ms if t0_ms is not None else now_ms
        if not 0 <= t0 < store_docs.MAX_JSON_INT:  # the store's range: refuse before any effect
            raise InputError(
                "BAD_T0", f"t0 must be epoch milliseconds in 0..2**53-1, found {t0}", t0=t0
            )
        iid: str | None = None
        prior: Decision | None = None
        if side_hint and not dry_run:  # the intent is known before any read: claim it with them
            iid, prior = self._identify(symbol, side_hint, t0, snap.rev, trigger)
        state, last, claim = yield from self._read(symbol, iid)
        try:
            feats = dict(features) if features is not None else features_from_hash(last)
            unknown = feats.keys() - known_keys(snap)
            if unknown:  # accepted (producers send more), but counted by name
                self.metrics.count_unknown(trigger, sorted(unknown))
            if not feats:
                raise InputError(
                    "MISSING_FEATURES",
                    f"no features for {symbol}: feat:last:{symbol} is empty "
                    "and the request carries none",
                    missing=["mid", "spread_bps", "depth_top1_usdt"],
                )
            side = side_hint or feats.get("side_hint") or ""
            if iid is None and side and not dry_run:  # the side came with the features
                iid, prior = self._identify(symbol, side, t0, snap.rev, trigger)
                claim = self.idem.begin(iid, self.claim_ttl_ms)
        except BaseException:
            if iid and claim is not None and claim.status == "first":
                self.idem.abandon(iid, token=claim.token)
            raise
        if claim is not None and claim.status == "replay":
            assert claim.result is not None
            result = msgspec.json.decode(claim.result, type=DecideResult)
            return msgspec.structs.replace(result, replayed=True)
        if claim is not None and claim.status == "in_progress":
            raise Rejected(
                "IN_PROGRESS",
                f"a decision for {iid} is in progress; retry shortly",
                intent_id=iid,
                ttl_ms=claim.ttl_ms,
            )
        inp = DecisionInput(
            symbol=symbol,
            side_hint=side_hint,
            features=feats,
            now_ms=now_ms,
            t0_ms=t0,
            features_ts_ms=features_ts_ms,
            state=state,
            atr_state=self.atr_states.get(symbol),
            trigger=trigger,
            dry_run=dry_run,
        )
        token = claim.token if claim is not None else None
        try:
            if dry_run:
                d = decide(inp, snap, self.model_for(snap))
                return (
                    yield from self._finish(
                        DecideResult(d, submitted="none"), None, None, trigger, started, emit=False
                    )
                )
            live = self._decide_live(inp, snap, prior)
        except BaseException:
            if iid and token is not None:
                self.idem.abandon(iid, token=token)
            raise
        if isinstance(live, DecideResult):  # a skip (or an open that ends here): sig:events
            return (yield from self._finish(live, iid, token, trigger, started, emit=True))
        return Submission(self, live, iid, token, trigger, started)

    def decide_until_submit(
        self,
        *,
        symbol: str,
        side_hint: str | None,
        t0_ms: int | None,
        trigger: str,
        dry_run: bool = False,
        features: Mapping[str, Any] | None = None,
        features_ts_ms: int | None = None,
    ) -> DecideResult | Submission:
        """`decide_steps`, each pipeline run as it comes (blocking)."""
        return run_steps(
            self.decide_steps(
                symbol=symbol,
                side_hint=side_hint,
                t0_ms=t0_ms,
                trigger=trigger,
                dry_run=dry_run,
                features=features,
                features_ts_ms=features_ts_ms,
            )
        )

    def decide(
        self,
        *,
        symbol: str,
        side_hint: str | None,
        t0_ms: int | None,
        trigger: str,
        dry_run: bool = False,
        features: Mapping[str, Any] | None = None,
        features_ts_ms: int | None = None,
    ) -> DecideResult:
        """One decision with every side effect, S4 included (blocks up to S4's budget): claim and
        state, core decision, reserve, persist, emit (`decide_until_submit`), then submit.

        Round trips to Redis for a fresh skip (standalone): one for the state and the idempotency
        claim, one for `sig:events` and the result (a cluster: one more for each)."""
        step = self.decide_until_submit(
            symbol=symbol,
            side_hint=side_hint,
            t0_ms=t0_ms,
            trigger=trigger,
            dry_run=dry_run,
            features=features,
            features_ts_ms=features_ts_ms,
        )
        return step.submit() if isinstance(step, Submission) else step

    def _finish(
        self,
        result: DecideResult,
        iid: str | None,
        token: str | None,
        trigger: str,
        started: float,
        *,
        emit: bool,
    ) -> Steps[DecideResult]:
        """Emit `sig:events` (``emit``: not yet done) and store the result under the key."""
        d = result.decision
        if iid and token is not None:
            payload = msgspec.json.encode(result)
            try:
                if emit and self._pipelined:  # with the result, in one round trip
                    yield from self._emit_and_complete(d, iid, payload, token)
                else:
                    if emit:
                        self.emitter.emit_signal(d)
                    self.idem.complete(iid, payload, IDEM_TTL_MS, token=token)
            except BaseException:
                self.idem.abandon(iid, token=token)  # no-op once the result is stored
                raise
        elif emit:
            self.emitter.emit_signal(d)
        self._observe(d, trigger, (time.perf_counter() - started) * 1000)
        if d.reason_detail == "GATE.SYMBOL_NOT_CONFIGURED":
            raise Rejected("SYMBOL_NOT_CONFIGURED", d.sentence, symbol=d.symbol)
        return result

    @functools.cached_property
    def _pipelined(self) -> bool:
        """Scripts go in pipelines on a standalone server only (redis-py refuses EVALSHA in a
        cluster pipeline). Asked once: redis-py's classes make `isinstance` slow."""
        return not is_cluster(self.redis)

    def _read(self, symbol: str, iid: str | None) -> Steps[tuple[MarketState, dict[str, str], Any]]:
        """The state, `feat:last` and (with ``iid``) the idempotency claim, in one round trip."""
        claim = None
        try:
            pipe = self.redis.pipeline(transaction=False)
            n = queue_state(pipe, self.keys, symbol)
            token = (
                self.idem.queue_begin(pipe, iid, self.claim_ttl_ms)
                if iid is not None and self._pipelined
                else None
            )
            replies = yield pipe
            if iid is not None:
                claim = (
                    self.idem.begin_reply(iid, token, self.claim_ttl_ms, replies[-1])
                    if token is not None
                    else self.idem.begin(iid, self.claim_ttl_ms)
                )
            bad = next((r for r in replies[:n] if isinstance(r, Exception)), None)
            if bad is not None:
                raise bad
            state, last = parse_state(replies[:n])
        except Exception as exc:
            if iid is not None and claim is not None and claim.status == "first":
                with swallowed(self.metrics, "idem.abandon"):  # the read's error is the one raised
                    self.idem.abandon(iid, token=claim.token)
            raise DependencyUnavailable(
                "REDIS_DOWN", f"cannot read the state from Redis: {exc}"
            ) from exc
        return state, last, claim

    def _emit_and_complete(self, d: Decision, iid: str, payload: bytes, token: str) -> Steps[None]:
        pipe = self.redis.pipeline(transaction=False)
        self.emitter.emit_signal(d, pipe)
        self.idem.queue_complete(pipe, iid, payload, IDEM_TTL_MS, token=token)
        emitted, completed = yield pipe
        self.idem.complete_reply(iid, payload, IDEM_TTL_MS, token, completed)
        if isinstance(emitted, Exception):
            raise emitted

    def _identify(
        self, symbol: str, side: str, t0: int, rev: int, trigger: str
    ) -> tuple[str, Decision | None]:
        """The intent id of (symbol, side, t0) and the decision an earlier attempt persisted for
        it: a retry resumes from it. A stream event redelivered after a reload is the same
        event, under any revision."""
        side = str(side).upper()
        prior = self._prior(symbol, side, t0, rev, trigger == "stream")
        if prior is not None and prior.intent is not None:
            return prior.intent.intent_id, prior
        if prior is not None:
            return intent_id(symbol, side, t0, prior.config_rev), prior
        return intent_id(symbol, side, t0, rev), None

    def _prior(self, symbol: str, side: str, t0: int, rev: int, any_rev: bool) -> Decision | None:
        """The decision a previous attempt persisted for (symbol, side, t0), if any."""
        if side not in ("BUY", "SELL"):
            return None
        if any_rev:
            docs = self.store.signals_by_symbol(symbol, t0, t0 + 1, limit=50)
        else:
            doc = self.store.get_signal(store_docs.signal_id(symbol, side, t0, rev))
            docs = [doc] if doc is not None else []
        for doc in sorted(docs, key=lambda x: (x.created_at, x.signal_id)):
            record = doc.decision.get("record")
            if isinstance(record, dict) and record.get("side") == side:
                return msgspec.convert(record, Decision, strict=False)
        return None

    def _decide_live(
        self, inp: DecisionInput, snap: BundleSnapshot, prior: Decision | None
    ) -> DecideResult | Decision:
        """Decide, reserve, persist; an open is also emitted on `sig:events` and returned as its
        `Decision`, to be submitted (a skip's result is returned, its `sig:events` entry goes
        with the result, in `_finish`)."""
        d = prior if prior is not None else decide(inp, snap, self.model_for(snap))
        if prior is None and self.shadow is not None:  # a shadow bundle (S3_SHADOW_BUNDLE)
            self.shadow.observe(inp, d)  # decides the same input, without effects
        reservation_state = None
        if d.decision == "open" and d.reservation is not None and d.intent is not None:
            r = d.reservation
            res = self.ledger.reserve(
                d.intent.intent_id,
                r.market,
                r.symbol,
                r.amount_usdt,
                r.budget_max_usdt,
                r.concurrency_limit,
                inp.now_ms,
            )
            self.metrics.reservations.labels("ok" if res.ok else "refused").inc()
            if not res.ok and prior is not None and res.detail == "RESERVATION.RELEASED":
                # The earlier attempt ended already (S4 rejected it, or it never reached S4 and
                # self-heal released it): the decision stands, nothing is submitted again.
                self._persist(d, inp, emit=False)
                return DecideResult(d, submitted="none", reservation="released")
            if not res.ok:
                d = msgspec.structs.replace(
                    d,
                    decision="skip",
                    reason="RISK_BUDGET",
                    reason_detail=res.detail,
                    sentence=res.sentence,
                    intent=None,
                )
            else:
                reservation_state = "pending"
        opens = d.decision == "open" and d.intent is not None
        try:
            self._persist(d, inp, emit=opens)
        except BaseException as exc:
            if reservation_state == "pending" and d.intent is not None:
                self.ledger.release(d.intent.intent_id, "persist_failed")
            if isinstance(exc, ValueError):  # the store refused the features (its contract: bad
                # input, nothing written), e.g. an integer beyond 2**53: the request's fault
                raise InputError("UNSTORABLE_FEATURES", str(exc)) from exc
            raise
        if not opens:
            return DecideResult(d, submitted="none", reservation=reservation_state)
        return d

    def _persist(self, d: Decision, inp: DecisionInput, *, emit: bool) -> None:
        signal = store_docs.signal_from_decision(d, inp.features, created_at=inp.now_ms)
        signal_id = signal["signal_id"]
        self.store.put_decision(
            signal,
            {
                "event_id": store_docs.event_id("DECIDE", signal_id),
                "kind": "DECIDE",
                "symbol": inp.symbol,
                "ts": inp.now_ms,
                "detail": {
                    "intent_id": d.intent.intent_id if d.intent else None,
                    "decision": d.decision,
                    "reason": d.reason,
                    "reason_detail": d.reason_detail,
                    "rules": list(d.rules_fired),
                    "config_rev": d.config_rev,
                    "signal_id": signal_id,
                    "model_id": d.model_id,
                    "model_degraded": d.model_degraded,
                },
            },
        )
        if emit:
            self.emitter.emit_signal(d)

    def _submit(self, d: Decision) -> tuple[str, str | None]:
        assert d.intent is not None
        iid = d.intent.intent_id
        order = OrderCmdRequest.from_intent(d.intent)
        self._event(  # before S4 is called: `reconcile` re-sends exactly this command
            "ENTRY_SUBMITTED",
            d.symbol,
            {
                "intent_id": iid,
                "route": "s4" if self.s4 else "stream",
                "order": msgspec.to_builtins(order),
            },
        )
        if self.s4 is None:
            self.emitter.emit_order_cmd(order)
            self.metrics.intent_emit.labels("ok", "stream").inc()
            return "stream", "pending"
        result: SubmitResult = self.s4.submit(order)
        if result.outcome == "accepted":
            committed = self.ledger.commit(iid)
            self._event(
                "ENTRY_ACCEPTED",
                d.symbol,
                {"intent_id": iid, "attempts": result.attempts, "commit": committed.outcome},
            )
            self.metrics.intent_emit.labels("ok", "s4").inc()
            return "accepted", "committed" if committed.ok else "released"
        self.metrics.intent_emit.labels("fail", "s4").inc()
        self._event(
            "ENTRY_REJECTED",
            d.symbol,
            {
                "intent_id": iid,
                "outcome": result.outcome,
                "detail": result.detail,
                "attempts": result.attempts,
                "reservation": "released" if result.outcome == "rejected" else "pending",
            },
        )
        if result.outcome == "rejected":  # S4 said no: the quota goes back at once (spec §8)
            self.ledger.release(iid, "s4_rejected")
            return "rejected", "released"
        # Unknown: S4 may hold the order (or accept it after we gave up), and with the dual track
        # the guarded router gets the command too. The reservation stays pending: releasing it
        # now would let the budget be spent twice while the order lives. `reconcile` settles it.
        if self.dual_track:
            self.emitter.emit_order_cmd(order)
            self.metrics.intent_emit.labels("ok", "stream").inc()
            return "stream", "pending"
        return "unknown", "pending"

    def reconcile(self, now_ms: int, min_age_ms: int, *, limit: int = 500) -> list[dict[str, Any]]:
        """Settle pending reservations older than ``min_age_ms`` whose command went to S4.

        Each is sent again, exactly as first sent and with the same idempotency key, so S4
        answers for the order it holds (a late accept comes back as accepted) and creates none
        twice: accepted → commit; rejected → release; unknown → left pending for the next round.
        A pending reservation without ENTRY_SUBMITTED never reached S4; self-heal's stale
        release is right for it. Returns one record per reservation settled or tried.
        """
        if self.s4 is None:
            return []
        ids = self.redis.zrangebyscore(
            self.keys.ledger_pending, "-inf", now_ms - min_age_ms, start=0, num=limit
        )
        out: list[dict[str, Any]] = []
        for raw in ids:
            iid = raw.decode() if isinstance(raw, bytes) else str(raw)
            submitted = self.store.get_event(store_docs.event_id("ENTRY_SUBMITTED", iid))
            if submitted is None or not isinstance(submitted.detail.get("order"), dict):
                continue
            order = msgspec.convert(submitted.detail["order"], OrderCmdRequest)
            result = self.s4.submit(order)
            if result.outcome == "accepted":
                outcome = self.ledger.commit(iid).outcome
            elif result.outcome == "rejected":
                outcome = self.ledger.release(iid, "s4_rejected", symbol=order.symbol).outcome
            else:
                outcome = "still_unknown"
            record = {"intent_id": iid, "s4": result.outcome, "ledger": outcome}
            out.append(record)
            if outcome != "still_unknown":
                self._event("ENTRY_RECONCILED", order.symbol, {**record, "detail": result.detail})
        return out

    def _event(self, kind: str, symbol: str, detail: dict[str, Any]) -> None:
        key = detail.get("intent_id")  # stable: a retry writes the same event once
        self.store.put_event(
            {
                "event_id": store_docs.event_id(kind, key) if key else store_docs.event_id(kind),
                "kind": kind,
                "symbol": symbol,
                "ts": self.clock_ms(),
                "detail": detail,
            }
        )

    def _observe(self, d: Decision, trigger: str, took_ms: float) -> None:
        m = self.metrics
        m.child(m.decide_latency_ms, trigger).observe(took_ms)
        self.latencies_ms.append(took_ms)
        m.child(m.decisions, d.decision, d.reason).inc()
        if d.decision == "skip":
            m.child(m.gate_skips, d.reason_detail.split(":")[0]).inc()
        for rid in d.rules_fired:
            m.child(m.rules_fired, rid).inc()
        if d.model_degraded:
            m.child(m.model_degraded, d.model_degraded.split(":")[0]).inc()
        m.config_rev.set(d.config_rev)

    def market_state(self, symbol: str) -> MarketState:
        return read_state(self.redis, self.keys, symbol)[0]
