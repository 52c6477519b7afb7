"""L0 hard gates (spec §2.1, Part B1/B2/B8), evaluated in a fixed order, every one recorded.

The first gate that fails decides the skip; the others are still evaluated so that a decision
record shows every verdict with the values compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from s3.core.params import EngineParams, GateParams, HealthResponse, SymbolSpec
from s3.core.sizing_inputs import once_per_object
from s3.core.types import HEALTH_STATES, GateVerdict, MarketState

GATE_ORDER = (
    "kill_switch",
    "window",
    "stale_features",
    "spread",
    "depth",
    "funding",
    "side",
    "symbol",
    "health",
)


_HEALTH_AS_SENT = {h: (h, f"health {h}") for h in HEALTH_STATES}


def health_state(state: MarketState) -> tuple[str, str]:
    """The health in force and why: missing or unknown counts as RED (Part B8)."""
    raw = state.health
    known = _HEALTH_AS_SENT.get(raw)  # type: ignore[arg-type]
    if known is not None:  # the usual case: a state spelled as the spec spells it
        return known
    if raw is None:
        return "RED", "health state missing: treated as RED"
    if raw.upper() not in HEALTH_STATES:
        return "RED", f"health state {raw!r} unknown: treated as RED"
    return raw.upper(), f"health {raw.upper()}"


# Verdicts whose sentence has no value in it: one instance each (frozen, so shared safely).
_KILL_OFF = GateVerdict("kill_switch", True, "GATE.KILL_SWITCH", "kill switch OFF")
_ALWAYS_OPEN = GateVerdict(
    "window", True, "GATE.WINDOW", "no trading windows configured: always open"
)
_SIDES = {
    side: GateVerdict("side", True, "GATE.NO_SIDE", f"side {side}") for side in ("BUY", "SELL")
}


def _kill(state: MarketState) -> GateVerdict:
    raw = state.kill_switch
    if raw == "OFF":
        return _KILL_OFF
    if raw is None:
        return GateVerdict(
            "kill_switch", True, "GATE.KILL_SWITCH", "kill switch missing: treated as OFF"
        )
    if raw.strip().upper() == "OFF":
        return GateVerdict("kill_switch", True, "GATE.KILL_SWITCH", "kill switch OFF")
    if raw.strip().upper() == "ON":
        return GateVerdict("kill_switch", False, "GATE.KILL_SWITCH", "kill switch ON: no entries")
    return GateVerdict(
        "kill_switch",
        False,
        "GATE.KILL_SWITCH",
        f"kill switch value {raw!r} is neither ON nor OFF: treated as ON",
    )


def _window(params: EngineParams, now_ms: int) -> GateVerdict:
    windows = params.gates.windows
    if not windows:
        return _ALWAYS_OPEN
    now = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    minute = now.hour * 60 + now.minute
    stamp = now.strftime("%a %H:%M UTC")
    for w in windows:
        if now.weekday() in w.days and w.start_min <= minute < w.end_min:
            return GateVerdict("window", True, "GATE.WINDOW", f"{stamp} is inside a trading window")
    return GateVerdict("window", False, "GATE.WINDOW", f"{stamp} is outside every trading window")


def _stale(params: EngineParams, now_ms: int, features_ts_ms: int | None) -> GateVerdict:
    bound = params.gates.max_feature_age_ms
    if features_ts_ms is None:
        return GateVerdict(
            "stale_features",
            False,
            "GATE.STALE_FEATURES",
            "the features carry no timestamp: their age is unknown",
        )
    age = now_ms - features_ts_ms
    if age > bound:
        return GateVerdict(
            "stale_features",
            False,
            "GATE.STALE_FEATURES",
            f"features are {age} ms old > max_feature_age_ms {bound}",
        )
    if age < -bound:
        return GateVerdict(
            "stale_features",
            False,
            "GATE.STALE_FEATURES",
            f"features are stamped {-age} ms in the future (clock skew > {bound} ms)",
        )
    return GateVerdict(
        "stale_features", True, "GATE.STALE_FEATURES", f"features are {age} ms old <= {bound}"
    )


@dataclass(frozen=True, slots=True)
class _Limits:
    """A symbol's thresholds (its override, else the bundle's), with their text for sentences."""

    spread_limit: float
    spread_text: str
    depth_min: float
    depth_text: str
    interval: int
    max_funding: float
    max_funding_text: str
    symbol: str | None
    configured: GateVerdict | None
    """The symbol verdict of ``spec.symbol``."""


@once_per_object
def _limits(g: GateParams, spec: SymbolSpec | None) -> _Limits:
    """Worked out once per revision and symbol: the same frozen Structs come back every time."""
    spread_limit = (
        spec.spread_bp_limit if spec and spec.spread_bp_limit is not None else g.spread_bp_limit
    )
    depth_min = (
        spec.depth_top1_usdt_min
        if spec and spec.depth_top1_usdt_min is not None
        else g.depth_top1_usdt_min
    )
    return _Limits(
        spread_limit,
        f"{spread_limit:g}",
        depth_min,
        f"{depth_min:g}",
        spec.funding_interval_hours if spec else 8,
        g.max_funding_abs,
        f"{g.max_funding_abs:g}",
        spec.symbol if spec is not None else None,
        GateVerdict(
            "symbol",
            True,
            "GATE.SYMBOL_NOT_CONFIGURED",
            f"{spec.symbol} is configured ({spec.market})",
        )
        if spec is not None
        else None,
    )


@once_per_object
def _health(why: str, response: HealthResponse, blocked: bool) -> GateVerdict:
    """The health verdict: one per revision and state (``why`` is one of `health_state`'s
    constants for a state spelled as the spec spells it)."""
    return GateVerdict(
        "health",
        not blocked,
        "GATE.HEALTH",
        f"{why}: size x{response.size_mult:g}"
        + (f", policy {response.exec_policy}" if response.exec_policy else "")
        + (" (entries blocked in this state)" if blocked else ""),
    )


def check(
    *,
    params: EngineParams,
    spec: SymbolSpec | None,
    symbol: str,
    side: str | None,
    state: MarketState,
    now_ms: int,
    features_ts_ms: int | None,
    spread_bps: float,
    depth_top1_usdt: float,
    funding_next: float,
) -> tuple[GateVerdict, ...]:
    """Every L0 verdict, in `GATE_ORDER`. Thresholds: the symbol's override, else the bundle's."""
    lim = _limits(params.gates, spec)
    spread_ok = spread_bps <= lim.spread_limit
    # a minimum of 0 still needs a book: with nothing at the top, no slippage or slices to work out
    empty = depth_top1_usdt == 0 and lim.depth_min <= 0
    depth_ok = depth_top1_usdt >= lim.depth_min and not empty
    interval = lim.interval
    funding_8h = abs(funding_next) * 8.0 / interval
    funding_ok = funding_8h <= lim.max_funding
    health, why = health_state(state)
    response = params.health.responses[health]
    return (
        _kill(state),
        _window(params, now_ms),
        _stale(params, now_ms, features_ts_ms),
        GateVerdict(
            "spread",
            spread_ok,
            "GATE.SPREAD",
            f"spread {spread_bps:g} bps {'<=' if spread_ok else '>'} limit {lim.spread_text} bps",
        ),
        GateVerdict(
            "depth",
            depth_ok,
            "GATE.DEPTH",
            "top-1 depth 0 USDT: nothing at the top of the book"
            if empty
            else f"top-1 depth {depth_top1_usdt:g} USDT {'>=' if depth_ok else '<'} "
            f"minimum {lim.depth_text} USDT",
        ),
        GateVerdict(
            "funding",
            funding_ok,
            "GATE.FUNDING",
            f"|funding_next| {abs(funding_next):g} per {interval} h = {funding_8h:g} per 8 h "
            f"{'<=' if funding_ok else '>'} max {lim.max_funding_text}",
        ),
        _SIDES.get(side)  # type: ignore[arg-type]
        or GateVerdict(
            "side",
            side is not None,
            "GATE.NO_SIDE",
            f"side {side}" if side else "no side: neither sideHint nor side_hint was given",
        ),
        lim.configured
        if lim.configured is not None and symbol == lim.symbol
        else GateVerdict(
            "symbol",
            spec is not None,
            "GATE.SYMBOL_NOT_CONFIGURED",
            f"{symbol} is configured ({spec.market})"
            if spec
            else f"{symbol} is not configured in the bundle",
        ),
        _health(why, response, health in params.health.block),
    )


def first_failure(verdicts: tuple[GateVerdict, ...]) -> GateVerdict | None:
    for v in verdicts:
        if not v.passed:
            return v
    return None
