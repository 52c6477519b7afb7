"""The decision pipeline (spec §2, §6): L0 gates → L1 rules → L2 model → health → entry slots →
sizing → execution hints → risk budget pre-check → intent. Pure: every input is a value, `now_ms` included.

The risk check here is a pre-check on the state values read with the decision; the atomic Redis
reservation (spec Part B5) is the authority and may still refuse.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import msgspec

from dsl import CompiledRuleset, Outcome
from s3.core import atr as atr_mod
from s3.core import execution, gates
from s3.core.model import Model, checked, map_p
from s3.core.params import EngineParams, SymbolSpec
from s3.core.sizing import Sized, SizingParams, SizingSkip, SymbolFilters, size_entry
from s3.core.sizing_inputs import once_per_object
from s3.core.types import (
    Decision,
    DecisionInput,
    GateVerdict,
    OcoLeg,
    OrderIntent,
    Reason,
    Reservation,
    Side,
)
from s3.errors import InputError

MULT_DECIMALS = 6
"""Decimal places of every multiplier a decision carries and sizing uses (size_mult, tp_mult,
sl_mult, size_mult_rules): the float product of the factors, rounded half-even (`round`), so the
value shown is the value used and no binary noise (0.37800000000000006) reaches a person."""

CORE_FEATURES = ("mid", "spread_bps", "depth_top1_usdt")
"""Features every decision needs before any rule runs (missing: HTTP 400, dead letter on a stream)."""


class BundleSnapshot(msgspec.Struct, frozen=True):
    """One bundle revision as the engine uses it: compiled rules plus engine parameters.

    Read once per decision (RCU): a decision never mixes two revisions.
    """

    bundle_id: str
    rev: int
    ruleset: CompiledRuleset
    params: EngineParams
    checksum: str = ""
    model_runtime: Any = None
    """The ONNX kind's model (`s3.adapters.onnx_model.OnnxModel`), built and verified once when
    the revision is loaded, so a reload swaps rules and model together; None for the built-in
    kinds."""


def intent_id(symbol: str, side: str, t0_ms: int, config_rev: int) -> str:
    """Deterministic from (symbol, side, t0, config_rev) (Part B6), and a legal Binance client
    order id (`^[.A-Z:/a-z0-9_-]{1,36}$`): ``s3-btc-1730000000000-1a2b3c4d``."""
    base = symbol.removesuffix("USDT").lower()[:6] or symbol.lower()[:6]
    digest = hashlib.sha256(f"{symbol}|{side}|{t0_ms}|{config_rev}".encode()).hexdigest()[:8]
    return f"s3-{base}-{t0_ms}-{digest}"


def _finite(v: float) -> bool:
    """False for inf/nan, and for an integer too large for a float (``math.isfinite`` raises)."""
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def _number(features: Mapping[str, Any], name: str) -> float:
    v = features.get(name)
    if type(v) is float and math.isfinite(v):
        return v
    if isinstance(v, bool) or not isinstance(v, int | float) or not _finite(v):
        raise InputError(
            "BAD_FEATURE", f"feature '{name}' must be a finite number, found {v!r}", feature=name
        )
    return float(v)


_SIDES: dict[str, Side] = {"BUY": "BUY", "SELL": "SELL"}


def _side(inp: DecisionInput) -> Side | None:
    raw = inp.side_hint if inp.side_hint is not None else inp.features.get("side_hint")
    if type(raw) is str and raw in _SIDES:  # spelled as the spec spells it
        return _SIDES[raw]
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or raw.upper() not in ("BUY", "SELL"):
        raise InputError("BAD_SIDE", f"side must be BUY or SELL, found {raw!r}")
    return _SIDES[raw.upper()]


_HALF_SPREAD_PER_BPS = Decimal(20_000)
_ZERO = Decimal(0)
TOUCH_TOLERANCE_TICKS = Decimal("0.01")
"""How far from the tick grid (in ticks) a touch rebuilt from mid and spread_bps may fall and
still be read as that grid price: far below a tick, far above the error of a producer that rounds
spread_bps to 5 decimals (<= 0.0003 tick on BTCUSDT, <= 0.003 tick on ETHUSDT at 2024 prices)."""


def entry_price(
    mid: float,
    spread_bps: float,
    side: str,
    filters: SymbolFilters,
    policy: str = "MakerThenTaker",
    bid: float | None = None,
    ask: float | None = None,
) -> Decimal:
    """The entry price: the touch the policy names (`entry_touch`)."""
    return entry_touch(mid, spread_bps, side, filters, policy, bid, ask)[0]


def entry_touch(
    mid: float,
    spread_bps: float,
    side: str,
    filters: SymbolFilters,
    policy: str,
    bid: float | None,
    ask: float | None,
) -> tuple[Decimal, str]:
    """The touch an entry is priced at, and a note that says where it came from.

    A Maker entry rests at the near touch (BUY at the bid, SELL at the ask); any other policy may
    take, so it is priced at the far touch (BUY at the ask, SELL at the bid). The touch is the
    `bid`/`ask` feature when the event carries it, exactly. Otherwise it is rebuilt from
    ``mid ± mid * spread_bps / 20000`` in Decimal and read as the NEAREST grid price when it lies
    within `TOUCH_TOLERANCE_TICKS` of it; farther off, it is passed on as it is and sizing snaps
    it to the grid on the cautious side (taking: away from the mid; Maker: passive)."""
    want_ask = (side == "BUY") != (policy == "Maker")
    name = "ask" if want_ask else "bid"
    given = ask if want_ask else bid
    if given is not None:
        px = Decimal(repr(given))
        return px, f"entry at the {name} {px} ({policy}; the touch in the features)"
    m = Decimal(repr(mid))
    half = m * Decimal(repr(spread_bps)) / _HALF_SPREAD_PER_BPS
    raw = m + half if want_ask else m - half
    anchor = filters.min_price if filters.anchored else _ZERO
    steps = (raw - anchor) / filters.tick_size
    n = steps.to_integral_value(rounding=ROUND_HALF_EVEN)
    rebuilt = f"rebuilt from mid {m} and spread_bps {Decimal(repr(spread_bps))} as {raw}"
    if abs(steps - n) <= TOUCH_TOLERANCE_TICKS:
        px = anchor + n * filters.tick_size
        return px, f"entry at the {name} {px} ({policy}; {rebuilt}, the nearest tick)"
    return raw, f"entry at the {name} ({policy}; {rebuilt}, not within 0.01 tick of the grid)"


def _touch_features(
    features: Mapping[str, Any], mid: float, filters: SymbolFilters
) -> tuple[float | None, float | None]:
    """The event's `bid` and `ask` (untrusted): each absent, or a finite number > 0; both
    present, bid below ask and their middle within half a tick of mid."""
    bid = None if features.get("bid") is None else _number(features, "bid")
    ask = None if features.get("ask") is None else _number(features, "ask")
    for name, v in (("bid", bid), ("ask", ask)):
        if v is not None and v <= 0:
            raise InputError("BAD_FEATURE", f"feature '{name}' must be > 0, found {v!r}")
    if bid is not None and ask is not None:
        if bid >= ask:
            raise InputError("BAD_FEATURE", f"bid {bid!r} must be below ask {ask!r}", feature="bid")
        middle = (Decimal(repr(bid)) + Decimal(repr(ask))) / 2
        if abs(middle - Decimal(repr(mid))) * 2 > filters.tick_size:
            raise InputError(
                "BAD_FEATURE",
                f"bid {bid!r} and ask {ask!r} do not match mid {mid!r}: (bid + ask) / 2 = "
                f"{middle} is more than half a tick ({filters.tick_size}) away",
                feature="mid",
            )
    return bid, ask


def _skip(base: dict[str, Any], reason: Reason, detail: str, sentence: str) -> Decision:
    return Decision(decision="skip", reason=reason, reason_detail=detail, sentence=sentence, **base)


def decide(inp: DecisionInput, snap: BundleSnapshot, model: Model) -> Decision:
    """Decide one entry.

    Args:
        inp: the features, side hint, clock reading and shared state.
        snap: the bundle revision in force, read once by the caller.
        model: the L2 model (wrapped in a deadline by the caller).

    Returns:
        The decision record; a skip is a normal result, never an exception.

    Raises:
        InputError: malformed input or missing required features (HTTP 400).
    """
    params = snap.params
    features = dict(inp.features)
    missing = [f for f in CORE_FEATURES if features.get(f) is None]
    funding = (
        inp.state.funding_next
        if inp.state.funding_next is not None
        else features.get("funding_next")
    )
    if funding is None:
        missing.append("funding_next")
    if missing:
        raise InputError(
            "MISSING_FEATURES", f"missing required features: {', '.join(missing)}", missing=missing
        )
    mid = _number(features, "mid")
    spread = _number(features, "spread_bps")
    depth = _number(features, "depth_top1_usdt")
    features["funding_next"] = funding
    funding_f = _number(features, "funding_next")
    if mid <= 0 or spread < 0 or depth < 0:
        raise InputError(
            "BAD_FEATURE",
            f"mid must be > 0 and spread/depth >= 0, found mid {mid:g}, "
            f"spread_bps {spread:g}, depth_top1_usdt {depth:g}",
        )
    side = _side(inp)
    spec: SymbolSpec | None = params.symbols.get(inp.symbol)
    ts = inp.features_ts_ms if inp.features_ts_ms is not None else features.get("ts")
    verdicts = gates.check(
        params=params,
        spec=spec,
        symbol=inp.symbol,
        side=side,
        state=inp.state,
        now_ms=inp.now_ms,
        features_ts_ms=ts
        if type(ts) is int
        else (int(ts) if isinstance(ts, int | float) and not isinstance(ts, bool) else None),
        spread_bps=spread,
        depth_top1_usdt=depth,
        funding_next=funding_f,
    )
    health, _ = gates.health_state(inp.state)
    response = params.health.responses[health]
    base: dict[str, Any] = {
        "symbol": inp.symbol,
        "side": side,
        "config_rev": snap.rev,
        "bundle_id": snap.bundle_id,
        "t0_ms": inp.t0_ms,
        "now_ms": inp.now_ms,
        "gates": verdicts,
        "health": health,
        "health_factor": response.size_mult,
        "dry_run": inp.dry_run,
    }
    ms = params.model
    if ms.model_id is not None:  # which model, how old, trained on what (every decision)
        base["model_id"] = ms.model_id
        if ms.trained_at_ms is not None:
            base["model_age_ms"] = inp.now_ms - ms.trained_at_ms
        base["model_trained_on"] = ms.trained_on
    failed = gates.first_failure(verdicts)
    if failed is not None:
        return _skip(base, "GATE", failed.detail, failed.sentence)
    assert side is not None and spec is not None

    # L1: the bundle's rules on the validated snapshot (side and symbol are features too).
    features["side"] = side
    features["symbol"] = inp.symbol
    if features.get("ts") is None and type(ts) is int:
        features["ts"] = ts  # the event's time (ms), for hour_utc(ts) and the other time functions
    snapshot, problems = snap.ruleset.schema.validate(features)
    if problems:
        raise InputError(
            "BAD_FEATURES",
            "; ".join(pr.message for pr in problems),
            problems=[
                {"feature": pr.feature, "code": pr.code, "message": pr.message} for pr in problems
            ],
        )
    outcome: Outcome = snap.ruleset.evaluate(snapshot)
    clamped = outcome.clamped
    base["rules_fired"] = outcome.fired
    base["rule_factors"] = outcome.factors
    if outcome.faults:
        base["rule_faults"] = tuple(f"{f.rule_id} {f.code} {f.message}" for f in outcome.faults)
    base["size_mult_rules"] = round(clamped["size_mult"], MULT_DECIMALS)
    base["tp_mult"] = tp_mult = round(clamped["tp_mult"], MULT_DECIMALS)
    base["sl_mult"] = sl_mult = round(clamped["sl_mult"], MULT_DECIMALS)
    if outcome.veto is not None:
        return _skip(
            base, "RULE", f"RULE.SKIP:{outcome.veto}", f"rule {outcome.veto} vetoed the entry"
        )
    faulted_vetoes = snap.ruleset.faulted_vetoes(outcome)
    if faulted_vetoes and params.veto_on_rule_fault:
        f = faulted_vetoes[0]
        return _skip(
            base,
            "RULE",
            f"RULE.FAULT:{f.rule_id}",
            f"veto rule {f.rule_id} could not be evaluated ({f.code} {f.message}): "
            "skipping rather than trading without it",
        )

    # L2: the model, degraded to x1.0 on timeout, error or an answer that is no probability.
    result = checked(model(snapshot))
    size_mult_ml = 1.0
    if result.p is not None:
        mapped = map_p(result.p, params.model.bands)
        base["model_p"] = result.p
        if mapped is None:
            lowest = min((b.above for b in params.model.bands), default=0.0)
            return _skip(
                base, "MODEL", "MODEL.LOW_P", f"model p {result.p:.4f} < {lowest:g}: no entry"
            )
        size_mult_ml = mapped
    elif result.degraded is not None:
        base["model_degraded"] = result.degraded
    clamp = snap.ruleset.clamp.size_mult
    combined = min(max(clamped["size_mult"] * size_mult_ml, clamp.min), clamp.max)
    # health scales after the clamp (Part B8); the product is rounded like every multiplier
    size_mult = round(combined * response.size_mult, MULT_DECIMALS)
    policy = response.exec_policy or params.execution.default_policy
    base["size_mult_ml"] = size_mult_ml
    base["size_mult"] = size_mult
    base["exec_policy"] = policy

    # Entry slots (spec §2.1 risk budget, the part that needs no amount): with none free, the
    # entry cannot happen whatever its size, so it is not sized.
    limit = params.risk.concurrent_entries_per_symbol
    if inp.state.concurrency >= limit:
        return _skip(
            base,
            "RISK_BUDGET",
            "RISK_BUDGET.CONCURRENCY",
            f"{inp.state.concurrency} concurrent entries on {inp.symbol} >= limit {limit}",
        )

    # ATR: the feature when present, else the engine's own ATR(EMA, n) state.
    atr_value = snapshot.get("atr")
    if (
        type(atr_value) is float
        or (isinstance(atr_value, int | float) and not isinstance(atr_value, bool))
    ) and atr_value > 0:
        atr, atr_source = float(atr_value), "feature"
    elif atr_mod.is_ready(inp.atr_state):
        assert inp.atr_state is not None and inp.atr_state.atr is not None
        atr, atr_source = inp.atr_state.atr, f"ema{inp.atr_state.period}"
    else:
        bars = inp.atr_state.bars if inp.atr_state else 0
        return _skip(
            base,
            "RISK_BUDGET",
            "SIZING.NO_ATR",
            f"no ATR: the feature is absent and the engine's ATR has {bars} of "
            f"{params.atr_period} bars",
        )
    base["atr"] = atr
    base["atr_source"] = atr_source

    sizing = params.sizing if spec.market == "FUT" else params.spot_sizing
    if spec.leverage is not None and spec.market == "FUT":
        sizing = _with_leverage(sizing, spec.leverage)
    bid, ask = _touch_features(features, mid, spec.filters)
    entry, entry_note = entry_touch(mid, spread, side, spec.filters, policy, bid, ask)
    sized = size_entry(
        side=side,
        entry_px=entry,
        atr=Decimal(repr(atr)),
        size_mult=size_mult,
        sl_mult=sl_mult,
        tp_mult=tp_mult,
        exec_policy=policy,
        filters=spec.filters,
        params=sizing,
    )
    if isinstance(sized, SizingSkip):
        return _skip(base, "RISK_BUDGET", sized.reason_detail, sized.sentence)
    assert isinstance(sized, Sized)
    base["sizing_notes"] = (entry_note, *sized.notes)

    hints = execution.hints(policy, float(sized.notional), depth, spread, params.execution)
    reservation = _reservation(spec, sized, params)
    risk = _risk_precheck(reservation, inp, params)
    if risk is not None:
        base["reservation"] = reservation
        return _skip(base, "RISK_BUDGET", risk.detail, risk.sentence)
    intent = OrderIntent(
        intent_id=intent_id(inp.symbol, side, inp.t0_ms, snap.rev),
        market=spec.market,
        symbol=inp.symbol,
        side=side,
        qty=sized.qty,
        exec_policy=hints.policy,
        tp_px=sized.tp_px,
        sl_px=sized.sl_px,
        entry_px=sized.entry_px,
        notional_usdt=sized.notional,
        margin_usdt=sized.margin,
        leverage=sized.leverage,
        maker_wait_ms=hints.maker_wait_ms,
        slices=hints.slices,
        slip_bps_est=hints.slip_bps_est,
        exit_qty=sized.exit_qty,
        oco=_oco_legs(sized),
        guardian_stop_px=sized.guardian_stop_px,
        liq_px=sized.liq_px,
    )
    base["exec_policy"] = hints.policy
    return Decision(
        decision="open",
        reason="OK",
        reason_detail="OK",
        sentence=f"open {side} {sized.qty} {inp.symbol} at {sized.entry_px}: SL {sized.sl_px}, "
        f"TP {sized.tp_px}, {hints.note}",
        intent=intent,
        reservation=reservation,
        **base,
    )


@once_per_object
def _with_leverage(sizing: SizingParams, leverage: int) -> SizingParams:
    """The bundle's sizing with a symbol's own leverage: one Struct per revision and symbol, so
    sizing's checks of it are done once."""
    return msgspec.structs.replace(sizing, leverage=leverage)


def _oco_legs(sized: Sized) -> tuple[OcoLeg, ...]:
    if sized.oco is None:
        return ()
    o = sized.oco
    return (
        OcoLeg(o.above_type, o.above_px, o.qty),
        OcoLeg(o.below_type, o.below_limit_px, o.qty, stop_price=o.below_stop_px),
    )


def _reservation(spec: SymbolSpec, sized: Sized, params: EngineParams) -> Reservation:
    fut = spec.market == "FUT"
    return Reservation(
        market=spec.market,
        symbol=spec.symbol,
        amount_usdt=float(sized.margin if fut else sized.notional),
        budget_max_usdt=params.risk.fut_margin_usdt_max if fut else params.risk.spot_quote_usdt_max,
        concurrency_limit=params.risk.concurrent_entries_per_symbol,
    )


def _risk_precheck(
    res: Reservation, inp: DecisionInput, params: EngineParams
) -> GateVerdict | None:
    inuse = (
        inp.state.fut_margin_inuse_usdt if res.market == "FUT" else inp.state.spot_quote_inuse_usdt
    )
    name = "FUT_MARGIN" if res.market == "FUT" else "SPOT_QUOTE"
    if inuse + res.amount_usdt > res.budget_max_usdt:
        return GateVerdict(
            "risk_budget",
            False,
            f"RISK_BUDGET.{name}",
            f"{name.lower()} in use {inuse:g} + {res.amount_usdt:g} USDT > max {res.budget_max_usdt:g}",
        )
    return None  # the entry slots were checked before sizing
