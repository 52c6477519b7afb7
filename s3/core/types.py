"""Values the decision core takes and returns: frozen msgspec Structs, no behaviour, no I/O.

Everything a decision depends on is in `DecisionInput` (and the bundle snapshot), so a logged
input replays to the same `Decision` bit for bit.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

import msgspec

Side = Literal["BUY", "SELL"]
Market = Literal["FUT", "SPOT"]
Health = Literal["GREEN", "YELLOW", "ORANGE", "RED"]
Reason = Literal["GATE", "RULE", "MODEL", "RISK_BUDGET", "OK"]

HEALTH_STATES: tuple[str, ...] = ("GREEN", "YELLOW", "ORANGE", "RED")


class MarketState(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The shared state a decision reads (Redis in production), as plain values.

    ``None`` means the key was missing: a missing kill switch counts as OFF, a missing or unknown
    health state as RED (spec Part B8).
    """

    kill_switch: str | None = None
    health: str | None = None
    funding_next: float | None = None
    fut_margin_inuse_usdt: float = 0.0
    spot_quote_inuse_usdt: float = 0.0
    concurrency: int = 0


class AtrState(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """ATR(EMA, n) state for one symbol, kept by the caller between bars (spec §6)."""

    period: int
    atr: float | None = None
    prev_close: float | None = None
    bars: int = 0


class ModelResult(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the L2 model said: a probability, or why there is none (deadline, error)."""

    p: float | None = None
    degraded: str | None = None


class DecisionInput(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One request to decide: the feature snapshot, the clock reading and the shared state."""

    symbol: str
    side_hint: str | None
    features: dict[str, Any]
    now_ms: int
    t0_ms: int
    features_ts_ms: int | None = None
    state: MarketState = MarketState()
    atr_state: AtrState | None = None
    trigger: str = "manual"
    dry_run: bool = False


class GateVerdict(msgspec.Struct, frozen=True):
    """One L0 gate: whether it passed, its reason_detail, and a sentence with the values compared."""

    gate: str
    passed: bool
    detail: str
    sentence: str


class OcoLeg(msgspec.Struct, frozen=True):
    kind: str
    price: Decimal
    qty: Decimal
    stop_price: Decimal | None = None


class OrderIntent(msgspec.Struct, frozen=True):
    """The order intent of spec §3, plus execution hints and protective legs."""

    intent_id: str
    market: Market
    symbol: str
    side: Side
    qty: Decimal
    exec_policy: str
    tp_px: Decimal
    sl_px: Decimal
    entry_px: Decimal
    notional_usdt: Decimal
    margin_usdt: Decimal
    leverage: int
    maker_wait_ms: int
    slices: int = 1
    slip_bps_est: float = 0.0
    exit_qty: Decimal | None = None
    """What the protective orders (TP, SL, OCO legs, guardian stop) close: the entry qty on
    futures, the base left after the fee on spot."""
    oco: tuple[OcoLeg, ...] = ()
    guardian_stop_px: Decimal | None = None
    liq_px: Decimal | None = None


class Reservation(msgspec.Struct, frozen=True):
    """What the risk budget must hold for this intent (reserved atomically in Redis, spec B5)."""

    market: Market
    symbol: str
    amount_usdt: float
    budget_max_usdt: float
    concurrency_limit: int


class Decision(msgspec.Struct, frozen=True):
    """The full decision record: what `signals.decision` stores and what `/decide` answers."""

    decision: Literal["open", "skip"]
    reason: Reason
    reason_detail: str
    sentence: str
    symbol: str
    side: str | None
    config_rev: int
    bundle_id: str
    t0_ms: int
    now_ms: int
    gates: tuple[GateVerdict, ...]
    rules_fired: tuple[str, ...] = ()
    rule_factors: dict[str, dict[str, float]] = {}
    rule_faults: tuple[str, ...] = ()
    size_mult_rules: float = 1.0
    tp_mult: float = 1.0
    sl_mult: float = 1.0
    model_p: float | None = None
    size_mult_ml: float = 1.0
    model_degraded: str | None = None
    """``MODEL.TIMEOUT|MODEL.ERROR|MODEL.BAD_OUTPUT: why``: the model gave no usable p (x1.0)."""
    model_id: str | None = None
    model_age_ms: int | None = None
    """now_ms minus the model's trained_at (None: the bundle does not say when it was trained)."""
    model_trained_on: tuple[str, ...] = ()
    health: str = "RED"
    health_factor: float = 1.0
    size_mult: float = 1.0
    exec_policy: str | None = None
    atr: float | None = None
    atr_source: str | None = None
    intent: OrderIntent | None = None
    reservation: Reservation | None = None
    sizing_notes: tuple[str, ...] = ()
    dry_run: bool = False
