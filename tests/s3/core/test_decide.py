"""The decision pipeline at the core level: spec §10 contract cases, every gate, the model, health,
determinism. Pure: no Redis, no clock; every input is a value."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from s3.adapters.model_runner import DeadlineModel, TimedModel
from s3.config.bundle import load_dir
from s3.core import execution, gates
from s3.core.decide import BundleSnapshot, decide, entry_price, intent_id
from s3.core.model import LogisticModel, build_model, map_p, no_model
from s3.core.params import ModelSpec
from s3.core.types import AtrState, DecisionInput, MarketState, ModelResult
from s3.errors import InputError

ROOT = Path(__file__).resolve().parents[3]
DEFAULT = ROOT / "rulesets" / "default"
BASE = json.loads((DEFAULT / "examples" / "btc_buy_real.json").read_text())
TS = BASE["ts"]
GREEN = MarketState(kill_switch="OFF", health="GREEN")


@pytest.fixture(scope="module")
def snap() -> BundleSnapshot:
    result = load_dir(DEFAULT)
    assert result.snapshot is not None, [d.render(result.texts) for d in result.diagnostics]
    return result.snapshot


def run(
    snap: BundleSnapshot,
    *,
    side: str | None = "BUY",
    state: MarketState = GREEN,
    model: Any = None,
    symbol: str = "BTCUSDT",
    now_ms: int = TS + 250,
    atr_state: AtrState | None = None,
    **changes: Any,
) -> Any:
    features = {**BASE, **changes}
    features = {k: v for k, v in features.items() if v is not None}
    inp = DecisionInput(
        symbol=symbol,
        side_hint=side,
        features=features,
        now_ms=now_ms,
        t0_ms=TS,
        state=state,
        atr_state=atr_state,
    )
    return decide(inp, snap, model or build_model(snap.params.model))


def test_happy_path_opens_with_a_legal_intent(snap: BundleSnapshot) -> None:
    d = run(snap)
    assert (d.decision, d.reason, d.reason_detail) == ("open", "OK", "OK")
    i = d.intent
    assert i is not None
    assert i.intent_id == intent_id("BTCUSDT", "BUY", TS, 1) == f"s3-btc-{TS}-4ecabfd3"
    assert (i.market, i.symbol, i.side, i.exec_policy) == (
        "FUT",
        "BTCUSDT",
        "BUY",
        "MakerThenTaker",
    )
    tick, step = Decimal("0.10"), Decimal("0.001")
    assert i.qty % step == 0 and i.qty >= Decimal("0.001")
    assert i.tp_px % tick == 0 and i.sl_px % tick == 0 and i.entry_px % tick == 0
    assert i.sl_px < i.entry_px < i.tp_px
    assert i.qty * i.entry_px >= 100  # min notional
    # The worked example of docs/pipeline.md: the loss cap binds the stop (not 1.5 ATR).
    # The ask of that moment was 61778.30 (bid 61778.20): a taker BUY pays the ask, exactly.
    assert (i.qty, i.entry_px, i.sl_px, i.tp_px) == (
        Decimal("0.004"),
        Decimal("61778.30"),
        Decimal("61540.00"),
        Decimal("62071.90"),
    )
    assert i.exit_qty == i.qty
    assert any(n.startswith("SL distance capped by max_loss_usdt 1.2") for n in d.sizing_notes)
    assert d.rules_fired == ("R-008", "R-026", "R-063")
    assert d.model_p is not None and d.size_mult_ml == 1.0 and d.model_degraded is None
    assert d.reservation is not None and d.reservation.amount_usdt == float(i.margin_usdt)
    assert [g.gate for g in d.gates] == list(gates.GATE_ORDER) and all(g.passed for g in d.gates)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"bid": 61778.3, "ask": 61778.2}, "bid 61778.3 must be below ask 61778.2"),
        ({"bid": -1.0}, "feature 'bid' must be > 0, found -1.0"),
        ({"ask": "x"}, "feature 'ask' must be a number, found 'x'"),
        (
            {"bid": 61779.2, "ask": 61779.3},
            "bid 61779.2 and ask 61779.3 do not match mid 61778.25: (bid + ask) / 2 = 61779.25 is "
            "more than half a tick (0.10) away",
        ),
    ],
)
def test_a_bad_touch_is_bad_input(
    snap: BundleSnapshot, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(InputError) as err:
        run(snap, **changes)
    assert err.value.code in ("BAD_FEATURE", "BAD_FEATURES")  # the schema reads types first
    assert err.value.detail == message


def test_the_touch_features_price_the_entry_exactly(snap: BundleSnapshot) -> None:
    buy = run(snap, bid=61778.2, ask=61778.3)
    sell = run(snap, side="SELL", imbalance_top1=0.5, bid=61778.2, ask=61778.3)
    assert buy.intent.entry_px == Decimal("61778.3") and sell.decision == "open"
    assert sell.intent.entry_px == Decimal("61778.2")
    assert (
        buy.sizing_notes[0]
        == "entry at the ask 61778.3 (MakerThenTaker; the touch in the features)"
    )


def test_tp_target_is_an_roe_on_the_margin_posted(snap: BundleSnapshot) -> None:
    """docs/sizing.md "Take profit": 10 % x tp_mult of q x E / leverage after rounding q down."""
    d = run(snap)
    i = d.intent
    assert (d.size_mult, d.tp_mult) == (0.756, 0.81)
    assert (i.notional_usdt, i.margin_usdt) == (Decimal("247.1132"), Decimal("12.35566"))
    assert "TP for net profit >= 1.00080846 USDT = 0.1 x margin 12.35566 x tp_mult 0.81" in (
        d.sizing_notes
    )
    net = i.qty * i.tp_px * Decimal("0.9998") - i.notional_usdt * Decimal("1.0005")
    assert net == Decimal("1.00118588") and net / i.margin_usdt >= Decimal("0.081")


def test_same_input_same_decision_bit_for_bit(snap: BundleSnapshot) -> None:
    a = msgspec.json.encode(run(snap))
    b = msgspec.json.encode(run(snap))
    assert a == b


def test_short_mirrors_the_long(snap: BundleSnapshot) -> None:
    d = run(snap, side="SELL", trade_flow_1m=0.0)
    assert d.decision == "open", d.sentence
    i = d.intent
    assert i.side == "SELL" and i.tp_px < i.entry_px < i.sl_px


@pytest.mark.parametrize(
    ("changes", "state", "detail", "sentence"),
    [
        (
            {},
            MarketState(kill_switch="ON", health="GREEN"),
            "GATE.KILL_SWITCH",
            "kill switch ON: no entries",
        ),
        (
            {},
            MarketState(kill_switch="maybe", health="GREEN"),
            "GATE.KILL_SWITCH",
            "kill switch value 'maybe' is neither ON nor OFF: treated as ON",
        ),
        ({"spread_bps": 3.5}, GREEN, "GATE.SPREAD", "spread 3.5 bps > limit 3 bps"),
        (
            {"depth_top1_usdt": 150.0},
            GREEN,
            "GATE.DEPTH",
            "top-1 depth 150 USDT < minimum 200 USDT",
        ),
        (
            {"funding_next": 0.0006},
            GREEN,
            "GATE.FUNDING",
            "|funding_next| 0.0006 per 8 h = 0.0006 per 8 h > max 0.0005",
        ),
        (
            {"funding_next": -0.00051},
            GREEN,
            "GATE.FUNDING",
            "|funding_next| 0.00051 per 8 h = 0.00051 per 8 h > max 0.0005",
        ),
        (
            {},
            MarketState(kill_switch="OFF", health="GREEN", funding_next=0.001),
            "GATE.FUNDING",
            "|funding_next| 0.001 per 8 h = 0.001 per 8 h > max 0.0005",
        ),
    ],
)
def test_gates_skip_with_the_values_compared(
    snap: BundleSnapshot, changes: dict[str, Any], state: MarketState, detail: str, sentence: str
) -> None:
    d = run(snap, state=state, **changes)
    assert (d.decision, d.reason, d.reason_detail, d.sentence) == ("skip", "GATE", detail, sentence)
    assert d.intent is None and d.reservation is None


def test_stale_and_future_features(snap: BundleSnapshot) -> None:
    d = run(snap, now_ms=TS + 6_000)
    assert (d.reason_detail, d.sentence) == (
        "GATE.STALE_FEATURES",
        "features are 6000 ms old > max_feature_age_ms 5000",
    )
    d = run(snap, now_ms=TS - 6_000)
    assert d.sentence == "features are stamped 6000 ms in the future (clock skew > 5000 ms)"
    d = run(snap, ts=None)
    assert d.sentence == "the features carry no timestamp: their age is unknown"


def test_no_side_and_unknown_symbol(snap: BundleSnapshot) -> None:
    d = run(snap, side=None)
    assert (d.reason, d.reason_detail) == ("GATE", "GATE.NO_SIDE")
    d = run(snap, symbol="SOLUSDT")
    assert (d.reason, d.reason_detail, d.sentence) == (
        "GATE",
        "GATE.SYMBOL_NOT_CONFIGURED",
        "SOLUSDT is not configured in the bundle",
    )


def test_side_hint_can_come_from_the_event(snap: BundleSnapshot) -> None:
    d = run(snap, side=None, side_hint="BUY")
    assert d.decision == "open" and d.side == "BUY"


def test_the_first_failing_gate_decides_but_all_are_recorded(snap: BundleSnapshot) -> None:
    d = run(snap, state=MarketState(kill_switch="ON", health="GREEN"), spread_bps=9.0)
    assert d.reason_detail == "GATE.KILL_SWITCH"
    failed = [g.detail for g in d.gates if not g.passed]
    assert failed == ["GATE.KILL_SWITCH", "GATE.SPREAD"]


def test_health_missing_is_red_and_halves_size_with_taker(snap: BundleSnapshot) -> None:
    green = run(snap)
    red = run(snap, state=MarketState(kill_switch=None, health=None))
    assert red.decision == "open" and red.health == "RED" and red.health_factor == 0.5
    assert red.size_mult == pytest.approx(green.size_mult * 0.5)
    assert red.exec_policy == "Taker" and red.intent.exec_policy == "Taker"
    assert [g.sentence for g in red.gates if g.gate in ("kill_switch", "health")] == [
        "kill switch missing: treated as OFF",
        "health state missing: treated as RED: size x0.5, policy Taker",
    ]
    odd = run(snap, state=MarketState(kill_switch="OFF", health="PURPLE"))
    assert odd.health == "RED"


def test_rule_veto(snap: BundleSnapshot) -> None:
    d = run(snap, funding_next=0.00035)
    assert (d.reason, d.reason_detail, d.sentence) == (
        "RULE",
        "RULE.SKIP:R-040",
        "rule R-040 vetoed the entry",
    )
    assert "R-040" in d.rules_fired


def test_a_veto_rule_that_faults_fails_closed(snap: BundleSnapshot) -> None:
    # R-002's let reads log(imbalance / (1 - imbalance)); imbalance 1.0 faults every rule using it.
    from s3.core.params import EngineParams

    d = run(snap, imbalance_top1=1.0)
    vetoes = {r.rule_id for r in snap.ruleset.rules if r.skip}
    faulted = [f.split()[0] for f in d.rule_faults]
    if set(faulted) & vetoes:
        assert d.reason_detail.startswith("RULE.FAULT:")
    relaxed = msgspec.structs.replace(
        snap, params=msgspec.structs.replace(snap.params, veto_on_rule_fault=False)
    )
    assert isinstance(relaxed.params, EngineParams)
    assert run(relaxed, imbalance_top1=1.0).reason_detail != d.reason_detail or not (
        set(faulted) & vetoes
    )


def test_model_low_p_skips_and_bands(snap: BundleSnapshot) -> None:
    d = run(snap, model=lambda f: ModelResult(p=0.39))
    assert (d.reason, d.reason_detail, d.sentence) == (
        "MODEL",
        "MODEL.LOW_P",
        "model p 0.3900 < 0.4: no entry",
    )
    high = run(snap, model=lambda f: ModelResult(p=0.9))
    mid = run(snap, model=lambda f: ModelResult(p=0.7))
    assert high.size_mult_ml == 1.2 and mid.size_mult_ml == 1.0
    assert high.size_mult == pytest.approx(min(mid.size_mult * 1.2, 2.0))
    bands = ModelSpec().bands
    assert [map_p(p, bands) for p in (0.86, 0.85, 0.6, 0.59, 0.4, 0.3999)] == [
        1.2,
        1.0,
        1.0,
        0.5,
        0.5,
        None,
    ]


def test_model_timeout_degrades_to_one(snap: BundleSnapshot) -> None:
    def slow(features: Mapping[str, Any]) -> ModelResult:
        time.sleep(0.5)
        return ModelResult(p=0.99)

    runner = DeadlineModel(slow, deadline_ms=20)
    try:
        d = run(snap, model=runner)
    finally:
        runner.close()
    assert d.decision == "open" and d.size_mult_ml == 1.0 and d.model_p is None
    assert d.model_degraded == "MODEL.TIMEOUT: no answer within 20 ms"


def test_a_late_inline_model_counts_as_a_timeout(snap: BundleSnapshot) -> None:
    """`TimedModel` (the built-in models: inline, no thread) drops an answer that came late."""
    now = [0.0]

    def clock() -> float:
        return now[0]

    def took(ms: float) -> Callable[[Mapping[str, Any]], ModelResult]:
        def model(features: Mapping[str, Any]) -> ModelResult:
            now[0] += ms / 1000
            return ModelResult(p=0.99)

        return model

    late = run(snap, model=TimedModel(took(21), deadline_ms=20, clock=clock))
    assert late.decision == "open" and late.size_mult_ml == 1.0 and late.model_p is None
    assert late.model_degraded == "MODEL.TIMEOUT: no answer within 20 ms"
    on_time = run(snap, model=TimedModel(took(19), deadline_ms=20, clock=clock))
    assert on_time.model_p == 0.99 and on_time.model_degraded is None


def test_model_error_degrades_to_one(snap: BundleSnapshot) -> None:
    def broken(features: Mapping[str, Any]) -> ModelResult:
        raise RuntimeError("weights file corrupt")

    runner = DeadlineModel(broken, deadline_ms=200)
    try:
        d = run(snap, model=runner)
    finally:
        runner.close()
    assert (
        d.model_degraded == "MODEL.ERROR: RuntimeError: weights file corrupt"
        and d.size_mult_ml == 1.0
    )
    inline = run(snap, model=TimedModel(broken, deadline_ms=200))
    assert inline.model_degraded == d.model_degraded and inline.size_mult_ml == 1.0
    lm = LogisticModel(ModelSpec(kind="logistic", weights={"nope": 1.0}))
    assert lm({"x": 1.0}).degraded == "MODEL.ERROR: feature 'nope' is missing"
    assert no_model({}) == ModelResult()


def test_missing_required_features_are_input_errors(snap: BundleSnapshot) -> None:
    with pytest.raises(InputError) as info:
        run(snap, mid=None, depth_top1_usdt=None)
    assert (info.value.code, info.value.detail) == (
        "MISSING_FEATURES",
        "missing required features: mid, depth_top1_usdt",
    )
    with pytest.raises(InputError) as info:
        run(snap, ret_1m=None)
    assert info.value.detail == "required feature 'ret_1m' is missing"
    with pytest.raises(InputError) as info:
        run(snap, side="LONG")
    assert info.value.code == "BAD_SIDE"
    with pytest.raises(InputError):
        run(snap, mid="60000")


def test_atr_from_the_engine_state_when_the_feature_is_absent(snap: BundleSnapshot) -> None:
    d = run(snap, atr=None)
    assert (d.reason_detail, d.sentence) == (
        "SIZING.NO_ATR",
        "no ATR: the feature is absent and the engine's ATR has 0 of 14 bars",
    )
    state = AtrState(period=14, atr=950.0, prev_close=61800.0, bars=20)
    d = run(snap, atr=None, atr_state=state)
    assert d.decision == "open" and d.atr == 950.0 and d.atr_source == "ema14"


def test_risk_precheck(snap: BundleSnapshot) -> None:
    full = MarketState(kill_switch="OFF", health="GREEN", fut_margin_inuse_usdt=195.0)
    d = run(snap, state=full)
    assert d.reason == "RISK_BUDGET" and d.reason_detail == "RISK_BUDGET.FUT_MARGIN"
    busy = MarketState(kill_switch="OFF", health="GREEN", concurrency=1)
    d = run(snap, state=busy)
    assert (d.reason_detail, d.sentence) == (
        "RISK_BUDGET.CONCURRENCY",
        "1 concurrent entries on BTCUSDT >= limit 1",
    )
    # no free slot: decided before sizing (rules and model on the record, no sizing, no amount),
    # so it wins over an exhausted budget, which needs the sized amount
    assert d.rules_fired == run(snap).rules_fired and d.size_mult == run(snap).size_mult
    assert d.sizing_notes == () and d.reservation is None and d.atr is None
    both = MarketState(
        kill_switch="OFF", health="GREEN", fut_margin_inuse_usdt=195.0, concurrency=1
    )
    assert run(snap, state=both).reason_detail == "RISK_BUDGET.CONCURRENCY"
    # a rule veto still comes first
    assert run(snap, state=busy, funding_next=0.00035).reason_detail == "RULE.SKIP:R-040"


def test_entry_price_off_the_grid_is_left_to_sizing_to_snap(snap: BundleSnapshot) -> None:
    """A rebuilt touch that is not within 0.01 tick of the grid is passed on as it is; sizing
    snaps it on the cautious side and says so."""
    f = snap.params.symbols["BTCUSDT"].filters
    assert entry_price(60000.0, 0.02, "BUY", f) == Decimal("60000.060")
    assert entry_price(60000.0, 0.02, "SELL", f) == Decimal("59999.940")
    d = run(snap, mid=60000.0, spread_bps=0.02)
    assert d.decision == "open" and d.intent.entry_px == Decimal("60000.10")
    assert "not within 0.01 tick of the grid" in d.sizing_notes[0]
    assert "entry 60000.06 snapped to tick 0.1: 60000.1 (adverse side" in " ".join(d.sizing_notes)


def test_intent_ids_are_deterministic_and_exchange_legal() -> None:
    import re

    a = intent_id("ETHUSDT", "SELL", 1730000000000, 129)
    assert a == intent_id("ETHUSDT", "SELL", 1730000000000, 129)
    assert a != intent_id("ETHUSDT", "SELL", 1730000000000, 130)
    assert re.fullmatch(r"[\.A-Z\:/a-z0-9_-]{1,36}", a) and a.startswith("s3-eth-1730000000000-")


def test_an_empty_book_is_never_traded(snap: BundleSnapshot) -> None:
    """A bundle may set depth_top1_usdt_min = 0; a top of book with no depth still skips (no
    slippage estimate, nothing to slice against), with a sentence that says so."""
    replace = msgspec.structs.replace
    no_min = replace(
        snap, params=replace(snap.params, gates=replace(snap.params.gates, depth_top1_usdt_min=0.0))
    )
    d = run(no_min, depth_top1_usdt=0.0)
    assert (d.decision, d.reason_detail, d.sentence) == (
        "skip",
        "GATE.DEPTH",
        "top-1 depth 0 USDT: nothing at the top of the book",
    )
    assert run(snap, depth_top1_usdt=0.0).sentence == "top-1 depth 0 USDT < minimum 200 USDT"
    d = run(no_min, depth_top1_usdt=150.0)  # any depth passes a 0 minimum
    assert [g.passed for g in d.gates if g.gate == "depth"] == [True], d.gates
    with pytest.raises(ValueError, match=r"^execution hints: top-1 depth must be > 0, found 0\.0$"):
        execution.hints("Taker", 100.0, 0.0, 1.0, snap.params.execution)
