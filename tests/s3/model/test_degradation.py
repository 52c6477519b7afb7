"""Every way the model can fail degrades to size_mult_ml = 1.0 with its reason in the decision,
the DECIDE event and the metric: MODEL.TIMEOUT (a run cancelled at the deadline, a runtime that
hangs for good), MODEL.ERROR (a missing feature, an exception), MODEL.BAD_OUTPUT (NaN, p > 1).

The ONNX models are real (onnxruntime runs them); the hanging one is a Python model, because
onnxruntime itself cannot be made to ignore its terminate flag."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from s3.adapters.model_runner import DeadlineModel
from s3.adapters.redis_server import RedisServer
from s3.adapters.store_docs import signal_id
from s3.config.bundle import load_dir
from s3.config.settings import Settings
from s3.core.decide import BundleSnapshot, decide
from s3.core.model import model_of
from s3.core.types import DecisionInput, MarketState, ModelResult
from s3.s4_standin import S4Server
from s3.service import Service
from tests.s3.model.onnx_models import (
    BY_INPUT_SECTION,
    ROOT,
    by_input_model,
    column_model,
    make_bundle,
    model_toml,
    real_rows,
    slow_model,
)

ROW = {k: v for k, v in real_rows()[0].items() if k not in ("symbol", "ts")}


def _snap(root: Path) -> BundleSnapshot:
    result = load_dir(root)
    assert result.snapshot is not None, [d.render() for d in result.diagnostics]
    return result.snapshot


def _decide(snap: BundleSnapshot, model: Any, **features: Any) -> Any:
    ts = 1723161317000
    inp = DecisionInput(
        symbol="BTCUSDT",
        side_hint="BUY",
        features={**ROW, "imbalance_top1": 0.6, **features},
        now_ms=ts + 5,
        t0_ms=ts,
        features_ts_ms=ts,
        state=MarketState(kill_switch="OFF", health="GREEN"),
    )
    return decide(inp, snap, model)


@pytest.fixture(scope="module")
def by_input(tmp_path_factory: pytest.TempPathFactory) -> BundleSnapshot:
    return _snap(
        make_bundle(tmp_path_factory.mktemp("b"), by_input_model(), section=BY_INPUT_SECTION)
    )


def test_each_reason_through_decide(by_input: BundleSnapshot) -> None:
    runner = DeadlineModel(model_of(by_input), 50)
    try:
        ok = _decide(by_input, runner, oi_change_1h=0.7)
        assert ok.model_p == pytest.approx(0.7, abs=1e-6) and ok.model_degraded is None
        cases = {
            "MODEL.ERROR: feature 'oi_change_1h' is missing": {},
            "MODEL.BAD_OUTPUT: p = 1.5 is not a probability in [0, 1]": {"oi_change_1h": 1.5},
            "MODEL.TIMEOUT: no answer within 50 ms": {"oi_change_1h": 1e9},
        }
        for want, feats in cases.items():
            started = time.perf_counter()
            d = _decide(by_input, runner, **feats)
            took = time.perf_counter() - started
            assert d.model_degraded == want, (feats, d.model_degraded)
            assert d.model_p is None and d.size_mult_ml == 1.0
            assert d.decision == ok.decision and d.size_mult == ok.size_mult / ok.size_mult_ml
            assert took < 1.0  # the 1e9-iteration run did not hold the decision
    finally:
        runner.close()


def test_nan_output_is_bad_output(tmp_path: Path) -> None:
    snap = _snap(
        make_bundle(
            tmp_path,
            column_model("Log", inputs=("ret_1m",)),
            section=model_toml(inputs=("ret_1m",)),
        )
    )
    d = _decide(snap, model_of(snap), ret_1m=-0.0004)  # log of a negative number
    assert d.model_degraded == "MODEL.BAD_OUTPUT: p = nan is not a probability in [0, 1]"
    assert d.size_mult_ml == 1.0 and d.model_p is None


def wait_free(runner: DeadlineModel) -> None:
    deadline = time.monotonic() + 5
    while not runner._free.acquire(blocking=False):
        assert time.monotonic() < deadline, "the run was not cancelled"
        time.sleep(0.01)
    runner._free.release()


def test_a_late_run_is_cancelled_and_frees_its_thread(by_input: BundleSnapshot) -> None:
    """RunOptions.terminate at the deadline: a run of 2e9 iterations (hours) stops at once, so
    the one model thread is free again for the next call (else that call would find it busy)."""
    runner = DeadlineModel(model_of(by_input), 40, workers=1)
    slow = {"oi_change_1h": 2e9}
    try:
        started = time.perf_counter()
        first = runner(slow)
        assert first.degraded == "MODEL.TIMEOUT: no answer within 40 ms"
        assert time.perf_counter() - started < 0.5
        wait_free(runner)  # the cancelled run returns its thread
        second = runner(slow)
        assert second.degraded == "MODEL.TIMEOUT: no answer within 40 ms"  # not "busy"
        wait_free(runner)
        assert runner({"oi_change_1h": 0.25}).p == pytest.approx(0.25)  # and on time again
    finally:
        runner.close()


def test_loading_a_model_that_hangs_is_bounded(tmp_path: Path) -> None:
    """The load's probe row is cancelled too: publishing a model that runs for hours on every
    row is a diagnostic after ~1 s, not a hung publish."""
    started = time.perf_counter()
    result = load_dir(make_bundle(tmp_path, slow_model()))
    assert result.snapshot is None and time.perf_counter() - started < 10
    assert any(
        "E314" in d.code and "gave no answer on a probe row of zeros within 1 s" in d.message
        for d in result.diagnostics
    ), [d.render() for d in result.diagnostics]


def test_a_runtime_that_hangs_for_good_cannot_hold_decisions() -> None:
    """A model that never returns (and cannot be cancelled): each call still answers by its
    deadline; once every thread is held, calls are refused at once instead of queueing."""
    release = threading.Event()

    def hang(features: Mapping[str, Any]) -> ModelResult:
        release.wait(30)
        return ModelResult(p=0.9)

    runner = DeadlineModel(hang, 30, workers=2)
    try:
        times, answers = [], []
        for _ in range(5):
            started = time.perf_counter()
            answers.append(runner({"x": 1.0}).degraded or "")
            times.append(time.perf_counter() - started)
        assert all(a.startswith("MODEL.TIMEOUT: no answer within 30 ms") for a in answers)
        assert "all 2 model threads are still running" in answers[2]
        assert max(times) < 0.5 and max(times[2:]) < 0.01, times
        release.set()
        deadline = time.monotonic() + 5
        while runner({"x": 1.0}).p != 0.9:  # the threads come back when the model does
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        release.set()
        runner.close()


def test_an_exception_is_model_error() -> None:
    def broken(features: Mapping[str, Any]) -> ModelResult:
        raise RuntimeError("weights file corrupt")

    runner = DeadlineModel(broken, 200)
    try:
        assert runner({}).degraded == "MODEL.ERROR: RuntimeError: weights file corrupt"
    finally:
        runner.close()


# -- the service: decision, DECIDE event and metric ----------------------------------------------
@pytest.fixture
def service(tmp_path: Path, redis_server: RedisServer) -> Iterator[Service]:
    bundle = make_bundle(tmp_path, by_input_model(), section=BY_INPUT_SECTION)
    with S4Server() as s4:
        svc = Service.from_settings(
            Settings(
                api_token="t",
                redis_addresses=redis_server.address,
                redis_prefix=f"deg{time.monotonic_ns()}:",
                sqlite_path=str(tmp_path / "s3.db"),
                cache_dir=str(tmp_path / "cache"),
                bundle_dir=str(bundle),
                s4_url=s4.url,
                s4_timeout_s=0.3,
                s4_retries=1,
            )
        )
        e = svc.engine
        e.redis.set(e.keys.kill_switch, "OFF")
        e.redis.set(e.keys.health, "GREEN")
        try:
            yield svc
        finally:
            svc.close()


def test_reason_in_decision_event_and_metric(service: Service) -> None:
    e = service.engine
    reasons = {
        "ok": {"oi_change_1h": 0.7},
        "MODEL.ERROR": {},
        "MODEL.BAD_OUTPUT": {"oi_change_1h": 1.5},
        "MODEL.TIMEOUT": {"oi_change_1h": 1e9},
    }
    for i, (why, extra) in enumerate(reasons.items()):
        t0 = e.clock_ms() + i
        features = {**ROW, "imbalance_top1": 0.6, "ts": t0, **extra}
        result = e.decide(
            symbol="BTCUSDT", side_hint="BUY", t0_ms=t0, trigger="manual", features=features
        )
        d = result.decision
        assert d.model_id is not None and d.model_id.startswith("onnx:")
        event = e.store.get_event(f"EVT-DECIDE-{signal_id('BTCUSDT', 'BUY', t0, d.config_rev)}")
        assert event is not None and event.detail["model_id"] == d.model_id
        if why == "ok":
            assert d.model_p == pytest.approx(0.7, abs=1e-6) and d.model_degraded is None
            assert event.detail["model_degraded"] is None
            continue
        assert d.model_degraded is not None and d.model_degraded.startswith(why + ": ")
        assert d.size_mult_ml == 1.0 and d.model_p is None
        assert event.detail["model_degraded"] == d.model_degraded
        count = e.metrics.registry.get_sample_value("s3_model_degraded_total", {"why": why})
        assert count == 1.0, (why, count)


def test_default_bundle_unchanged_by_the_extras() -> None:
    """The logistic kind never touches onnxruntime: the default bundle has no runtime object."""
    snap = _snap(ROOT / "rulesets" / "default")
    assert snap.model_runtime is None and snap.params.model.kind == "logistic"
