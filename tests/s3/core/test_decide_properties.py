"""Properties of whole decisions over generated inputs, and the SPOT path with OCO legs."""

from __future__ import annotations

import json
import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from s3.config.bundle import load_dir
from s3.core.decide import BundleSnapshot, decide
from s3.core.model import build_model
from s3.core.types import DecisionInput, MarketState, ModelResult
from s3.errors import InputError

ROOT = Path(__file__).resolve().parents[3]
DEFAULT = ROOT / "rulesets" / "default"
BASE = json.loads((DEFAULT / "examples" / "btc_buy_real.json").read_text())


@pytest.fixture(scope="module")
def snap() -> BundleSnapshot:
    result = load_dir(DEFAULT)
    assert result.snapshot is not None
    return result.snapshot


features_st = st.fixed_dictionaries(
    {
        "mid": st.floats(100.0, 150_000.0),
        "spread_bps": st.floats(0.001, 4.0),
        "depth_top1_usdt": st.floats(100.0, 2e6),
        "funding_next": st.floats(-0.0007, 0.0007),
        "ret_1m": st.floats(-0.003, 0.003),
        "vol_1m_bps": st.floats(0.0, 6.0),
        "imbalance_top1": st.floats(0.0, 1.0),
        "trade_flow_1m": st.floats(-1.0, 1.0),
        "atr": st.one_of(st.none(), st.floats(0.5, 5000.0)),
        "regime": st.one_of(st.none(), st.sampled_from(["trend", "range"])),
    }
)
# Inputs that pass the gates most of the time, so that sizing and intents are exercised.
benign_st = st.fixed_dictionaries(
    {
        "mid": st.floats(100.0, 150_000.0),
        "spread_bps": st.floats(0.001, 1.4),
        "depth_top1_usdt": st.floats(2_000.0, 2e6),
        "funding_next": st.floats(-0.0002, 0.0002),
        "ret_1m": st.floats(-0.001, 0.001),
        "vol_1m_bps": st.floats(0.0, 1.4),
        "imbalance_top1": st.floats(0.2, 0.8),
        "trade_flow_1m": st.floats(-0.4, 0.4),
        "atr": st.one_of(st.floats(0.5, 5000.0), st.floats(0.0001, 0.01)),
        "regime": st.sampled_from(["trend", "range"]),
    }
)
benign_state_st = st.builds(
    MarketState,
    kill_switch=st.sampled_from([None, "OFF"]),
    health=st.sampled_from([None, "GREEN", "YELLOW", "ORANGE", "RED"]),
    fut_margin_inuse_usdt=st.floats(0.0, 150.0),
    concurrency=st.just(0),
)
state_st = st.builds(
    MarketState,
    kill_switch=st.sampled_from([None, "OFF", "ON"]),
    health=st.sampled_from([None, "GREEN", "YELLOW", "ORANGE", "RED", "??"]),
    fut_margin_inuse_usdt=st.floats(0.0, 250.0),
    concurrency=st.integers(0, 2),
)


@settings(
    max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    f=st.one_of(features_st, benign_st, benign_st),
    state=st.one_of(state_st, benign_state_st, benign_state_st),
    side=st.sampled_from(["BUY", "SELL", "BUY", "SELL", None]),
    symbol=st.sampled_from(["BTCUSDT", "ETHUSDT"]),
    p=st.one_of(st.none(), st.floats(0.0, 1.0)),
)
def test_every_decision_is_legal_and_replays(
    snap: BundleSnapshot,
    f: dict[str, Any],
    state: MarketState,
    side: str | None,
    symbol: str,
    p: float | None,
) -> None:
    features = {k: v for k, v in f.items() if v is not None} | {"ts": 1_000}
    inp = DecisionInput(
        symbol=symbol, side_hint=side, features=features, now_ms=1_200, t0_ms=1_000, state=state
    )

    def model(_: Any) -> ModelResult:
        return ModelResult(p=p) if p is not None else ModelResult(degraded="MODEL.TIMEOUT: test")

    d = decide(inp, snap, model)
    assert msgspec.json.encode(d) == msgspec.json.encode(decide(inp, snap, model))  # replay
    clamp = snap.ruleset.clamp.size_mult
    assert clamp.min * d.health_factor - 1e-12 <= d.size_mult <= clamp.max + 1e-12
    event(d.reason_detail.split(":")[0])
    if d.decision == "skip":
        assert d.intent is None and d.reason != "OK" and d.reason_detail
        return
    i = d.intent
    assert i is not None and d.reason == "OK"
    spec = snap.params.symbols[symbol]
    f_ = spec.filters
    assert i.qty % f_.step_size == 0 and i.qty >= f_.min_qty
    assert (
        i.entry_px % f_.tick_size == 0
        and i.sl_px % f_.tick_size == 0
        and i.tp_px % f_.tick_size == 0
    )
    assert i.qty * i.entry_px >= f_.min_notional
    if i.side == "BUY":
        assert i.sl_px < i.entry_px < i.tp_px
        assert i.liq_px is None or i.sl_px > i.liq_px
    else:
        assert i.tp_px < i.entry_px < i.sl_px
        assert i.liq_px is None or i.sl_px < i.liq_px
    budget = (
        snap.params.sizing.margin_base_usdt
        * Decimal(repr(d.size_mult))
        * snap.params.sizing.leverage
    )
    assert i.notional_usdt <= budget
    fee_in = snap.params.fee_maker if i.exec_policy == "Maker" else snap.params.fee_taker
    loss = (
        abs(i.entry_px - i.sl_px) * i.qty
        + i.qty * i.entry_px * fee_in
        + i.qty * i.sl_px * snap.params.fee_taker
    )
    assert loss <= snap.params.sizing.max_loss_usdt


def test_garbage_features_are_input_errors_not_crashes(snap: BundleSnapshot) -> None:
    for bad in (
        {"mid": "x"},
        {"mid": float("nan")},
        {"spread_bps": None},
        {"mid": -1.0},
        {"vol_1m_bps": "high"},
    ):
        inp = DecisionInput(
            symbol="BTCUSDT",
            side_hint="BUY",
            features={**BASE, **bad},
            now_ms=BASE["ts"],
            t0_ms=BASE["ts"],
            state=MarketState(kill_switch="OFF", health="GREEN"),
        )
        with pytest.raises(InputError):
            decide(inp, snap, build_model(snap.params.model))


@pytest.fixture(scope="module")
def spot_snap(tmp_path_factory: pytest.TempPathFactory) -> BundleSnapshot:
    root = tmp_path_factory.mktemp("spot") / "bundle"
    shutil.copytree(DEFAULT, root)
    text = (root / "bundle.toml").read_text()
    fut = text[text.index("[symbols.BTCUSDT]") : text.index("[symbols.ETHUSDT]")]
    spot = (
        '[symbols.BTCUSDT]\nmarket = "SPOT"\ntick_size = "0.01"\nstep_size = "0.00001"\n'
        'min_qty = "0.00001"\nmin_notional = "5"\n\n'
    )
    (root / "bundle.toml").write_text(text.replace(fut, spot).replace("[spot]", "[spot]"))
    result = load_dir(root)
    assert result.snapshot is not None, [d.render(result.texts) for d in result.diagnostics]
    return result.snapshot


def test_spot_long_gets_oco_legs_and_spot_sell_is_skipped(spot_snap: BundleSnapshot) -> None:
    inp = DecisionInput(
        symbol="BTCUSDT",
        side_hint="BUY",
        features=BASE,
        now_ms=BASE["ts"] + 100,
        t0_ms=BASE["ts"],
        state=MarketState(kill_switch="OFF", health="GREEN"),
    )
    d = decide(inp, spot_snap, build_model(spot_snap.params.model))
    assert d.decision == "open", d.sentence
    i = d.intent
    assert i is not None and i.market == "SPOT" and i.leverage == 1 and i.liq_px is None
    above, below = i.oco
    assert above.kind == "LIMIT_MAKER" and above.price == i.tp_px > i.entry_px
    assert below.kind == "STOP_LOSS_LIMIT" and below.stop_price == i.sl_px and below.price < i.sl_px
    assert above.qty == below.qty == i.exit_qty < i.qty and above.qty % Decimal("0.00001") == 0
    # spot targets 1 % of the quote spent ([spot] tp_min_net_roe), not the futures 10 % of margin
    assert i.tp_px < i.entry_px * Decimal("1.02")
    assert d.reservation is not None and d.reservation.market == "SPOT"
    sell = msgspec.structs.replace(inp, side_hint="SELL")
    s = decide(sell, spot_snap, build_model(spot_snap.params.model))
    assert (s.decision, s.reason_detail) == ("skip", "SIZING.SPOT_SELL_NO_POSITION")
