"""The engine sections of `bundle.toml` (gates, symbols, sizing, fees, model, health, execution,
risk, atr, engine), validated with pydantic into the frozen `EngineParams` the core reads.

Every problem becomes an E3xx diagnostic with the path of the bad field and its line in
`bundle.toml`, like the DSL's own manifest checks. `S3_*` settings supply the defaults.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dsl import Diagnostic
from dsl.bundle import Manifest, key_span
from s3.config.settings import Settings
from s3.core import params as p
from s3.core.model import default_model_id
from s3.core.sizing import Bracket, SizingParams, SymbolFilters

ENGINE_SECTIONS = (
    "gates",
    "symbols",
    "sizing",
    "spot",
    "fees",
    "model",
    "health",
    "execution",
    "risk",
    "atr",
    "engine",
    "exits",
)
"""Top-level tables of bundle.toml that belong to the engine (the DSL warns about any other)."""

DayName = Literal["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
_DAYS: tuple[DayName, ...] = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
PosDec = Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]
NonNegDec = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]
Rate = Annotated[Decimal, Field(ge=0, lt=Decimal("0.1"), allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WindowModel(_Strict):
    days: list[DayName] = Field(default_factory=lambda: list(_DAYS))
    start: str = "00:00"
    end: str = "24:00"

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        m = re.fullmatch(r"(\d{2}):(\d{2})", v)
        if not m or int(m.group(2)) > 59 or int(m.group(1)) * 60 + int(m.group(2)) > 24 * 60:
            raise ValueError(f"'{v}' is not a time of day HH:MM (00:00 to 24:00)")
        return v

    @model_validator(mode="after")
    def _ordered(self) -> WindowModel:
        if _minutes(self.start) >= _minutes(self.end):
            raise ValueError(f"window start {self.start} is not before its end {self.end}")
        return self


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


class GatesModel(_Strict):
    spread_bp_limit: Annotated[float, Field(gt=0)] | None = None
    depth_top1_usdt_min: Annotated[float, Field(ge=0)] | None = None
    max_funding_abs: Annotated[float, Field(ge=0)] | None = None
    max_feature_age_ms: Annotated[int, Field(gt=0)] = 5_000
    windows: list[WindowModel] = []


class BracketModel(_Strict):
    """One row of `GET /fapi/v1/leverageBracket` (exchange-rules §3.3)."""

    notional_floor: NonNegDec
    notional_cap: PosDec
    initial_leverage: Annotated[int, Field(ge=1, le=125)]
    maint_margin_ratio: Annotated[Decimal, Field(ge=0, lt=1, allow_inf_nan=False)]
    cum: NonNegDec = Decimal(0)


class SymbolModel(_Strict):
    market: Literal["FUT", "SPOT"] = "FUT"
    tick_size: PosDec
    step_size: PosDec
    min_qty: PosDec
    min_notional: NonNegDec
    min_price: NonNegDec = Decimal(0)
    max_price: PosDec | None = None
    percent_price_up: Annotated[Decimal, Field(ge=1, allow_inf_nan=False)] | None = None
    percent_price_down: Annotated[Decimal, Field(gt=0, le=1, allow_inf_nan=False)] | None = None
    brackets: list[BracketModel] = []
    max_qty: PosDec | None = None
    market_step_size: PosDec | None = None
    market_min_qty: PosDec | None = None
    market_max_qty: PosDec | None = None
    funding_interval_hours: Annotated[int, Field(gt=0, le=24)] = 8
    leverage: Annotated[int, Field(ge=1, le=125)] | None = None
    spread_bp_limit: Annotated[float, Field(gt=0)] | None = None
    depth_top1_usdt_min: Annotated[float, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _prices_and_brackets(self) -> SymbolModel:
        if self.max_price is not None and self.max_price <= self.min_price:
            raise ValueError(f"max_price {self.max_price} is not above min_price {self.min_price}")
        cap = Decimal(0)
        for n, b in enumerate(self.brackets, 1):
            if b.notional_floor != cap:
                raise ValueError(
                    f"brackets[{n}].notional_floor {b.notional_floor} is not "
                    f"{'0' if n == 1 else f'the cap of bracket {n - 1}, {cap}'}"
                )
            if b.notional_cap <= b.notional_floor:
                raise ValueError(
                    f"brackets[{n}].notional_cap {b.notional_cap} is not above its floor "
                    f"{b.notional_floor}"
                )
            cap = b.notional_cap
        return self


class SizingModel(_Strict):
    margin_base_usdt: PosDec | None = None
    leverage: Annotated[int, Field(ge=1, le=125)] | None = None
    max_loss_usdt: PosDec | None = None
    atr_mult: PosDec | None = None
    tp_min_net_roe: PosDec = Decimal("0.10")
    maintenance_margin_rate: Rate = Decimal("0.004")
    maintenance_amount: NonNegDec = Decimal(0)
    liquidation_buffer: Annotated[Decimal, Field(ge=0, lt=1)] = Decimal("0.05")


class SpotModel(_Strict):
    quote_budget_usdt: PosDec = Decimal(50)
    tp_min_net_roe: PosDec = Decimal("0.01")
    """Spot has no leverage: the futures default (10 % of the margin, a 0.5 % move at 20x) would
    put a spot TP 10 % away, so spot targets 1 % of the quote spent unless the bundle says so."""
    protection: Literal["oco", "guardian"] = "oco"
    stop_limit_offset: Annotated[Decimal, Field(ge=0, lt=Decimal("0.5"))] = Decimal("0.001")
    fee_maker: Rate = Decimal("0.001")
    fee_taker: Rate = Decimal("0.001")


class FeesModel(_Strict):
    maker: Rate = Decimal("0.0002")
    taker: Rate = Decimal("0.0005")


class BandModel(_Strict):
    above: Annotated[float, Field(ge=0, le=1)]
    size_mult: Annotated[float, Field(gt=0)]
    strict: bool = False


class ModelModel(_Strict):
    kind: Literal["none", "logistic", "onnx"] = "none"
    bias: float = 0.0
    weights: dict[str, float] = {}
    bands: list[BandModel] | None = None
    deadline_ms: Annotated[int, Field(gt=0, le=10_000)] = 50
    file: str | None = None
    """onnx: the model file inside the bundle (relative path, ``.onnx``)."""
    inputs: list[str] = []
    """onnx with one tensor input: the features in its column order."""
    id: (
        Annotated[
            str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:+-]*$")
        ]
        | None
    ) = None
    trained_at: datetime | str | None = None
    """When the model was trained: a TOML date-time with its offset (2025-06-03T00:00:00Z)."""
    trained_on: list[Annotated[str, Field(min_length=1, max_length=200)]] = []

    @field_validator("trained_at")
    @classmethod
    def _aware(cls, v: datetime | str | None) -> datetime | None:
        if isinstance(v, str):
            try:
                v = datetime.fromisoformat(v)
            except ValueError:
                raise ValueError(f"'{v}' is not an ISO-8601 date-time") from None
        if v is not None and v.utcoffset() is None:
            raise ValueError("give the time zone, e.g. 2025-06-03T00:00:00Z")
        return v

    @field_validator("file")
    @classmethod
    def _relative(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = v.split("/")
        if (
            not v.endswith(".onnx")
            or v.startswith("/")
            or "\\" in v
            or any(x in ("", ".", "..") for x in parts)
        ):
            raise ValueError(f"'{v}' is not a relative path to a .onnx file inside the bundle")
        return v

    @model_validator(mode="after")
    def _bands_descend(self) -> ModelModel:
        if self.bands is not None:
            aboves = [b.above for b in self.bands]
            if aboves != sorted(aboves, reverse=True) or len(set(aboves)) != len(aboves):
                raise ValueError(
                    "bands must be listed from the highest 'above' to the lowest, each once"
                )
        if self.kind == "logistic" and not self.weights:
            raise ValueError("a logistic model needs weights")
        if self.kind == "onnx" and self.file is None:
            raise ValueError("an onnx model needs 'file', the .onnx file inside the bundle")
        if self.kind == "onnx" and self.weights:
            raise ValueError("an onnx model takes its weights from its file: drop 'weights'")
        if self.kind != "onnx" and (self.file is not None or self.inputs):
            raise ValueError(f"'file' and 'inputs' are for kind = \"onnx\", not {self.kind!r}")
        return self


Policy = Literal["Maker", "MakerThenTaker", "Taker", "Limit", "Sliced"]


class HealthResponseModel(_Strict):
    size_mult: Annotated[float, Field(gt=0, le=1)]
    exec_policy: Policy | None = None


class HealthModel(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    YELLOW: HealthResponseModel = HealthResponseModel(size_mult=0.8)
    ORANGE: HealthResponseModel = HealthResponseModel(size_mult=0.65, exec_policy="MakerThenTaker")
    RED: HealthResponseModel = HealthResponseModel(size_mult=0.5, exec_policy="Taker")
    block: list[Literal["YELLOW", "ORANGE", "RED"]] = []


class ExecutionModel(_Strict):
    default_policy: Literal["Maker", "MakerThenTaker", "Taker"] = "MakerThenTaker"
    slip_bp_max: Annotated[float, Field(gt=0)] = 5.0
    max_slices: Annotated[int, Field(ge=1, le=100)] = 5
    maker_wait_a_ms: float = 500.0
    maker_wait_b_ms_bps: float = 50.0
    maker_wait_c_ms: float = 100.0
    maker_wait_max_ms: Annotated[int, Field(ge=0)] = 10_000


class RiskModel(_Strict):
    fut_margin_usdt_max: Annotated[float, Field(gt=0)] = 200.0
    spot_quote_usdt_max: Annotated[float, Field(gt=0)] = 500.0
    concurrent_entries_per_symbol: Annotated[int, Field(ge=0)] | None = None


class AtrModel(_Strict):
    period: Annotated[int, Field(ge=1, le=1000)] = 14


class EngineModel(_Strict):
    veto_on_rule_fault: bool = True
    """A `skip_entry` rule that faults vetoes anyway (fail closed): a veto we could not evaluate
    is not a permission to trade."""


class ExitsModel(_Strict):
    """`s3 replay`'s exit simulation (the live engine does not read it)."""

    time_stop_ms: Annotated[int, Field(gt=0)] = 300_000
    market_slip_bps: Annotated[float, Field(ge=0, le=1000)] = 0.5


class EngineSectionsModel(_Strict):
    gates: GatesModel = GatesModel()
    symbols: dict[str, SymbolModel] = {}
    sizing: SizingModel = SizingModel()
    spot: SpotModel = SpotModel()
    fees: FeesModel = FeesModel()
    model: ModelModel = ModelModel()
    health: HealthModel = HealthModel()
    execution: ExecutionModel = ExecutionModel()
    risk: RiskModel = RiskModel()
    atr: AtrModel = AtrModel()
    engine: EngineModel = EngineModel()
    exits: ExitsModel = ExitsModel()

    @field_validator("symbols")
    @classmethod
    def _symbol_names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            if not re.fullmatch(r"[A-Z0-9]{2,20}", name):
                raise ValueError(f"symbol '{name}' must be upper-case letters and digits")
        return v


def engine_params(
    manifest: Manifest, settings: Settings | None = None
) -> tuple[p.EngineParams | None, list[Diagnostic]]:
    """Validate the engine sections of a bundle; `S3_*` settings fill what the bundle leaves out."""
    settings = settings or Settings()
    raw = {k: v for k, v in manifest.raw.items() if k in ENGINE_SECTIONS}
    path, text = manifest.path, manifest.text
    try:
        m = EngineSectionsModel.model_validate(raw)
    except ValidationError as exc:
        errors = []
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            where = ".".join(str(x) for x in loc)
            msg = err["msg"][0].lower() + err["msg"][1:]
            msg = msg.removeprefix("value error, ")
            errors.append(Diagnostic("E303", f"{where}: {msg}", key_span(path, text, loc)))
        return None, errors
    diags: list[Diagnostic] = []
    features = manifest.schema.features
    for name in m.model.weights:
        spec = features.get(name)
        if spec is None or spec.type not in ("number", "int"):
            diags.append(
                Diagnostic(
                    "E308",
                    f"model.weights.{name}: the model reads '{name}', which is not a numeric feature",
                    key_span(path, text, ("model", "weights", name)),
                    "declare it in [features] as number or int",
                )
            )
    for i, column in enumerate(m.model.inputs):
        name, _, value = column.partition("=")
        spec = features.get(name)
        if "=" in column:  # an indicator column: 1.0 when the enum feature has this value
            if spec is None or spec.type != "enum" or value not in spec.values:
                diags.append(
                    Diagnostic(
                        "E308",
                        f"model.inputs[{i}]: '{column}' needs an enum feature '{name}' with the "
                        f"value '{value}'",
                        key_span(path, text, ("model", "inputs")),
                        "an indicator column is FEATURE=VALUE of an enum feature",
                    )
                )
        elif spec is None or spec.type not in ("number", "int"):
            diags.append(
                Diagnostic(
                    "E308",
                    f"model.inputs[{i}]: the model reads '{name}', which is not a numeric feature",
                    key_span(path, text, ("model", "inputs")),
                    "declare it in [features] as number or int, or use an indicator column "
                    "FEATURE=VALUE of an enum feature",
                )
            )
    if len(set(m.model.inputs)) != len(m.model.inputs):
        diags.append(
            Diagnostic(
                "E303",
                "model.inputs: a feature is listed twice",
                key_span(path, text, ("model", "inputs")),
            )
        )
    for sym, sm in m.symbols.items():
        if sm.market == "SPOT" and sm.leverage not in (None, 1):
            diags.append(
                Diagnostic(
                    "E303",
                    f"symbols.{sym}.leverage: a SPOT symbol cannot have leverage {sm.leverage}",
                    key_span(path, text, ("symbols", sym, "leverage")),
                )
            )
        lev = sm.leverage or m.sizing.leverage or settings.leverage_default
        if sm.market == "FUT" and sm.brackets:
            top = sm.brackets[0].initial_leverage
            if lev > top:
                diags.append(
                    Diagnostic(
                        "E303",
                        f"symbols.{sym}: leverage {lev} is above {top}, the most its first "
                        "leverage bracket allows",
                        key_span(path, text, ("symbols", sym, "brackets")),
                    )
                )
        if sm.max_qty is not None and sm.max_qty < sm.min_qty:
            diags.append(
                Diagnostic(
                    "E303",
                    f"symbols.{sym}.max_qty: {sm.max_qty} is below min_qty {sm.min_qty}",
                    key_span(path, text, ("symbols", sym, "max_qty")),
                )
            )
    if not m.symbols:
        diags.append(
            Diagnostic(
                "E309",
                "the bundle configures no symbol",
                key_span(path, text, ("symbols",)),
                "add [symbols.BTCUSDT] with tick_size, step_size, min_qty, min_notional",
            )
        )
    if diags:
        return None, diags
    return _to_params(m, settings), []


def _dec(x: float) -> Decimal:
    return Decimal(repr(x))


def _to_params(m: EngineSectionsModel, s: Settings) -> p.EngineParams:
    g = m.gates
    gates = p.GateParams(
        spread_bp_limit=g.spread_bp_limit
        if g.spread_bp_limit is not None
        else s.spread_bp_limit_default,
        depth_top1_usdt_min=(
            g.depth_top1_usdt_min
            if g.depth_top1_usdt_min is not None
            else s.depth_top1_usdt_min_default
        ),
        max_funding_abs=g.max_funding_abs if g.max_funding_abs is not None else s.max_funding_abs,
        max_feature_age_ms=g.max_feature_age_ms,
        windows=tuple(
            p.Window(tuple(_DAYS.index(d) for d in w.days), _minutes(w.start), _minutes(w.end))
            for w in g.windows
        ),
    )
    symbols = {
        name: p.SymbolSpec(
            symbol=name,
            market=sm.market,
            filters=SymbolFilters(
                tick_size=sm.tick_size,
                step_size=sm.step_size,
                min_qty=sm.min_qty,
                min_notional=sm.min_notional,
                min_price=sm.min_price,
                max_qty=sm.max_qty,
                market_step_size=sm.market_step_size,
                market_min_qty=sm.market_min_qty,
                market_max_qty=sm.market_max_qty,
                anchored=sm.market == "FUT",
                max_price=sm.max_price,
                percent_price_up=sm.percent_price_up,
                percent_price_down=sm.percent_price_down,
                brackets=tuple(
                    Bracket(
                        b.notional_floor,
                        b.notional_cap,
                        b.initial_leverage,
                        b.maint_margin_ratio,
                        b.cum,
                    )
                    for b in sm.brackets
                ),
            ),
            funding_interval_hours=sm.funding_interval_hours,
            leverage=sm.leverage,
            spread_bp_limit=sm.spread_bp_limit,
            depth_top1_usdt_min=sm.depth_top1_usdt_min,
        )
        for name, sm in m.symbols.items()
    }
    z = m.sizing
    common: dict[str, Any] = dict(
        max_loss_usdt=z.max_loss_usdt if z.max_loss_usdt is not None else _dec(s.max_loss_usdt),
        atr_mult=z.atr_mult if z.atr_mult is not None else _dec(s.atr_mult),
        tp_min_net_roe=z.tp_min_net_roe,
        margin_base_usdt=z.margin_base_usdt
        if z.margin_base_usdt is not None
        else _dec(s.margin_base_usdt),
        quote_budget_usdt=m.spot.quote_budget_usdt,
        maintenance_margin_rate=z.maintenance_margin_rate,
        maintenance_amount=z.maintenance_amount,
        liquidation_buffer=z.liquidation_buffer,
        spot_protection=m.spot.protection,
        stop_limit_offset=m.spot.stop_limit_offset,
    )
    sizing = SizingParams(
        market="FUT",
        leverage=z.leverage if z.leverage is not None else s.leverage_default,
        fee_maker=m.fees.maker,
        fee_taker=m.fees.taker,
        **common,
    )
    spot_sizing = SizingParams(
        market="SPOT",
        leverage=1,
        fee_maker=m.spot.fee_maker,
        fee_taker=m.spot.fee_taker,
        **{**common, "tp_min_net_roe": m.spot.tp_min_net_roe},
    )
    md = m.model
    model = p.ModelSpec(
        kind=md.kind,
        bias=md.bias,
        weights=dict(md.weights),
        bands=tuple(p.Band(b.above, b.size_mult, b.strict) for b in md.bands)
        if md.bands is not None
        else p.ModelSpec().bands,
        deadline_ms=md.deadline_ms,
        file=md.file,
        inputs=tuple(md.inputs),
        trained_at_ms=round(md.trained_at.timestamp() * 1000)
        if isinstance(md.trained_at, datetime)
        else None,
        trained_on=tuple(md.trained_on),
    )
    model = msgspec.structs.replace(
        model, model_id=md.id or (default_model_id(model) if md.kind != "onnx" else None)
    )
    h = m.health
    health = p.HealthParams(
        responses={
            "GREEN": p.HealthResponse(1.0, None),
            "YELLOW": p.HealthResponse(h.YELLOW.size_mult, h.YELLOW.exec_policy),
            "ORANGE": p.HealthResponse(h.ORANGE.size_mult, h.ORANGE.exec_policy),
            "RED": p.HealthResponse(h.RED.size_mult, h.RED.exec_policy),
        },
        block=tuple(h.block),
    )
    e = m.execution
    execution = p.ExecParams(
        e.default_policy,
        e.slip_bp_max,
        e.max_slices,
        e.maker_wait_a_ms,
        e.maker_wait_b_ms_bps,
        e.maker_wait_c_ms,
        e.maker_wait_max_ms,
    )
    risk = p.RiskLimits(
        m.risk.fut_margin_usdt_max,
        m.risk.spot_quote_usdt_max,
        m.risk.concurrent_entries_per_symbol
        if m.risk.concurrent_entries_per_symbol is not None
        else s.concurrent_entries_per_market,
    )
    return p.EngineParams(
        gates,
        symbols,
        sizing,
        spot_sizing,
        model,
        health,
        execution,
        risk,
        m.atr.period,
        m.engine.veto_on_rule_fault,
        m.fees.maker,
        m.fees.taker,
        p.ExitParams(m.exits.time_stop_ms, m.exits.market_slip_bps),
    )
