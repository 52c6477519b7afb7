"""The engine's parameters from a bundle, as frozen values the pure core reads.

Validation happens in `s3.config.engine` (pydantic); these Structs only carry the result.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from s3.core.sizing import SizingParams, SymbolFilters
from s3.core.types import Market


class Window(msgspec.Struct, frozen=True):
    """A UTC trading window: weekdays (0 = Monday) and minutes of the day, end exclusive."""

    days: tuple[int, ...]
    start_min: int
    end_min: int


class GateParams(msgspec.Struct, frozen=True):
    spread_bp_limit: float
    depth_top1_usdt_min: float
    max_funding_abs: float
    """Per 8 h; a symbol's funding_next is normalised to 8 h before the comparison."""
    max_feature_age_ms: int
    windows: tuple[Window, ...] = ()
    """Empty: always open."""


class SymbolSpec(msgspec.Struct, frozen=True):
    symbol: str
    market: Market
    filters: SymbolFilters
    funding_interval_hours: int = 8
    leverage: int | None = None
    spread_bp_limit: float | None = None
    depth_top1_usdt_min: float | None = None


class Band(msgspec.Struct, frozen=True):
    """p above ``above`` (strictly when ``strict``) maps to ``size_mult``."""

    above: float
    size_mult: float
    strict: bool = False


class ModelSpec(msgspec.Struct, frozen=True):
    kind: str = "none"
    """none | logistic (the built-in σ(bias + w·x)) | onnx (a file of the bundle, onnxruntime)."""
    bias: float = 0.0
    weights: dict[str, float] = {}
    bands: tuple[Band, ...] = (
        Band(0.85, 1.2, strict=True),
        Band(0.6, 1.0),
        Band(0.4, 0.5),
    )
    """Spec §6: p>0.85 → ×1.2; 0.6–0.85 → ×1.0; 0.4–0.6 → ×0.5; below every band → skip."""
    deadline_ms: int = 50
    file: str | None = None
    """onnx: the model file, relative to the bundle root (part of the bundle and its checksum)."""
    inputs: tuple[str, ...] = ()
    """onnx with one tensor input: the features in its column order."""
    model_id: str | None = None
    """What every decision records as ``model_id``: the bundle's ``[model] id``, else the kind and
    a digest of the weights or the file."""
    trained_at_ms: int | None = None
    """When the model was trained (epoch ms; ``[model] trained_at``); a decision records its age."""
    trained_on: tuple[str, ...] = ()
    """The data windows the model was trained on (``[model] trained_on``)."""


class HealthResponse(msgspec.Struct, frozen=True):
    size_mult: float
    exec_policy: str | None = None


class HealthParams(msgspec.Struct, frozen=True):
    responses: dict[str, HealthResponse]
    block: tuple[str, ...] = ()


class ExecParams(msgspec.Struct, frozen=True):
    default_policy: str = "MakerThenTaker"
    slip_bp_max: float = 5.0
    max_slices: int = 5
    maker_wait_a_ms: float = 500.0
    maker_wait_b_ms_bps: float = 50.0
    maker_wait_c_ms: float = 100.0
    maker_wait_max_ms: int = 10_000


class RiskLimits(msgspec.Struct, frozen=True):
    fut_margin_usdt_max: float
    spot_quote_usdt_max: float
    concurrent_entries_per_symbol: int


class ExitParams(msgspec.Struct, frozen=True):
    """How `s3 replay` follows an open position to its exit (docs/replay.md, fill model); the live
    engine does not read these."""

    time_stop_ms: int = 300_000
    """Close a position at market this long after its entry fill (tape time)."""
    market_slip_bps: float = 0.5
    """Every market fill (a stop, a time stop, a taker entry) is this much worse than the touch,
    plus half the spread for each top-of-book depth the order eats beyond the first."""


class EngineParams(msgspec.Struct, frozen=True):
    """Everything a decision needs from the bundle besides the compiled rules."""

    gates: GateParams
    symbols: dict[str, SymbolSpec]
    sizing: SizingParams
    spot_sizing: SizingParams
    model: ModelSpec
    health: HealthParams
    execution: ExecParams
    risk: RiskLimits
    atr_period: int = 14
    veto_on_rule_fault: bool = True
    fee_maker: Decimal = Decimal("0.0002")
    fee_taker: Decimal = Decimal("0.0005")
    exits: ExitParams = ExitParams()
