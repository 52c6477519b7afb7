"""`[model] kind = "onnx"`: a model file inside the bundle, verified at load against the feature
schema, covered by the checksum, built once per revision, and the same p as scikit-learn."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto

from s3.adapters.model_runner import DeadlineModel
from s3.adapters.onnx_model import OnnxModel
from s3.adapters.sqlite_store import SqliteStore
from s3.config.bundle import checksum_dir, load_dir, read_bundle_files
from s3.config.reload import Reloader
from s3.core.decide import BundleSnapshot, decide
from s3.core.model import model_of
from s3.core.types import DecisionInput, MarketState
from s3.replay.replay import replay
from s3.replay.tape import load
from s3.service import StoreSource, publish
from tests.s3.model.onnx_models import (
    INPUTS,
    ROOT,
    column_model,
    make_bundle,
    model_toml,
    per_feature_model,
    real_rows,
    sklearn_onnx,
)

REAL_TAPE = ROOT / "data" / "tapes" / "real_sample.jsonl.gz"


def _errors(root: Path) -> list[str]:
    result = load_dir(root)
    assert result.snapshot is None
    return [
        f"{d.code} {d.message}" + (f" [{d.hint}]" if d.hint else "")
        for d in result.diagnostics
        if d.is_error
    ]


def _snap(root: Path) -> BundleSnapshot:
    result = load_dir(root)
    assert result.snapshot is not None, [d.render() for d in result.diagnostics]
    return result.snapshot


def _input(row: dict[str, Any], side: str = "BUY") -> DecisionInput:
    ts = int(row["ts"])
    return DecisionInput(
        symbol=row["symbol"],
        side_hint=side,
        features={k: v for k, v in row.items() if k not in ("symbol", "ts")},
        now_ms=ts + 5,
        t0_ms=ts,
        features_ts_ms=ts,
        state=MarketState(kill_switch="OFF", health="GREEN"),
    )


@pytest.mark.parametrize("kind", ["logistic", "gbt"])
def test_golden_same_p_through_s3_as_sklearn(tmp_path: Path, kind: str) -> None:
    """A model fitted on fixed real data and exported by skl2onnx gives, through `s3` (the bundle
    loaded, `decide`, the deadline runner), the p of scikit-learn on every real row."""
    est, data = sklearn_onnx(kind)
    snap = _snap(make_bundle(tmp_path, data))
    assert isinstance(snap.model_runtime, OnnxModel) and snap.params.model.kind == "onnx"
    rows = real_rows()
    x = np.array([[r[n] for n in INPUTS] for r in rows])
    want = est.predict_proba(x.astype(np.float32))[:, 1]  # the model's input is float32
    runner = DeadlineModel(model_of(snap), 1_000)
    decided = 0
    try:
        for row, p in zip(rows, want, strict=True):
            through_model = runner({k: v for k, v in row.items() if k != "ts"})
            assert through_model.p is not None and abs(through_model.p - p) <= 1e-5
            d = decide(_input(row, "BUY" if row["imbalance_top1"] >= 0.5 else "SELL"), snap, runner)
            if d.model_p is not None or d.model_degraded is not None:
                assert d.model_degraded is None and d.model_p is not None
                assert abs(d.model_p - p) <= 1e-5, (row, d.model_p, p)
                decided += 1
    finally:
        runner.close()
    assert decided >= 100  # most real rows pass the gates and the vetoes and reach L2
    assert len({round(float(p), 4) for p in want}) > 20  # not a constant model


@pytest.mark.parametrize("kind", ["logistic", "gbt"])
def test_replayed_real_tape_agrees_with_sklearn(tmp_path: Path, kind: str) -> None:
    """Every decision of the replayed real tape that consulted the model: |p_onnx − p_sklearn| ≤
    1e-5 (scikit-learn on the same event's features)."""
    est, data = sklearn_onnx(kind)
    snap = _snap(make_bundle(tmp_path, data))
    tape = load(REAL_TAPE)
    result = replay(tape, snap)
    by_index = {ev.index: ev for ev in tape.events}
    worst, n = 0.0, 0
    for o in result.outcomes:
        if o.decision is None or o.decision.model_p is None or o.replayed:
            continue
        feats = by_index[o.index].features
        assert feats is not None
        row = np.array([[float(feats[f]) for f in INPUTS]], dtype=np.float32)
        p = float(est.predict_proba(row)[0, 1])
        worst = max(worst, abs(o.decision.model_p - p))
        n += 1
    assert n >= 150 and worst <= 1e-5, (n, worst)


def test_model_id_and_age_in_every_decision(tmp_path: Path) -> None:
    _, data = sklearn_onnx("logistic")
    section = model_toml(
        id="gbt-2025-06-03",
        trained_at="2025-06-03T00:00:00Z",
        trained_on=["bars BTCUSDT 2025-05-04..2025-05-24", "ticks A 2024-08-08"],
    )
    snap = _snap(make_bundle(tmp_path, data, section=section))
    row = real_rows()[0]
    d = decide(_input(row), snap, model_of(snap))
    trained = 1748908800000  # 2025-06-03T00:00:00Z
    assert d.model_id == "gbt-2025-06-03"
    assert d.model_age_ms == int(row["ts"]) + 5 - trained
    assert d.model_trained_on == ("bars BTCUSDT 2025-05-04..2025-05-24", "ticks A 2024-08-08")
    # without an id, the file's digest names the model
    snap2 = _snap(make_bundle(tmp_path, data, name="b2"))
    assert snap2.params.model.model_id == f"onnx:{snap2.model_runtime.sha256[:12]}"
    gated = decide(_input({**row, "spread_bps": 50.0}), snap, model_of(snap))
    assert gated.reason == "GATE" and gated.model_id == "gbt-2025-06-03"  # every decision


def test_the_default_logistic_bundle_records_its_id(tmp_path: Path) -> None:
    snap = _snap(ROOT / "rulesets" / "default")
    d = decide(_input(real_rows()[0]), snap, model_of(snap))
    assert d.model_id is not None and d.model_id.startswith("logistic:")
    assert d.model_age_ms is None  # hand-set: the bundle does not say when it was trained


def test_per_feature_inputs(tmp_path: Path) -> None:
    names = ("imbalance_top1", "trade_flow_1m")
    snap = _snap(make_bundle(tmp_path, per_feature_model(names), section=model_toml(inputs=None)))
    assert snap.model_runtime.named == (("imbalance_top1", "float32"), ("trade_flow_1m", "float32"))
    r = model_of(snap)({"imbalance_top1": 0.25, "trade_flow_1m": 0.5})
    assert r.p == pytest.approx(1 / (1 + np.exp(-0.75)), abs=1e-6)


def test_mismatches_are_diagnostics_naming_both_sides(tmp_path: Path) -> None:
    _, data = sklearn_onnx("logistic")
    # fewer columns listed than the tensor has
    errs = _errors(make_bundle(tmp_path, data, section=model_toml(inputs=INPUTS[:5])))
    assert any(
        "model.inputs lists 5 features" in e and "'features' has shape [N, 6]" in e for e in errs
    ), errs
    # the same columns in another order than trained on (the file's metadata says which)
    swapped = (INPUTS[1], INPUTS[0], *INPUTS[2:])
    errs = _errors(make_bundle(tmp_path, data, section=model_toml(inputs=swapped)))
    assert any(
        "trained on the columns [spread_bps,depth_top1_usdt," in e
        and "model.inputs lists [depth_top1_usdt,spread_bps," in e
        for e in errs
    ), errs
    # a listed input that is not a numeric feature of the schema
    errs = _errors(make_bundle(tmp_path, data, section=model_toml(inputs=(*INPUTS[:5], "regime"))))
    assert any("E308" in e and "'regime', which is not a numeric feature" in e for e in errs), errs
    # a one-tensor model without model.inputs
    errs = _errors(make_bundle(tmp_path, data, section=model_toml(inputs=None)))
    assert any("input 'features' tensor(float) [N, 6] that is not a feature" in e for e in errs)
    # per-feature inputs: one unknown, one of the wrong type
    bad = per_feature_model(("imbalance_top1", "bogus"))
    errs = _errors(make_bundle(tmp_path, bad, section=model_toml(inputs=None)))
    assert any("input 'bogus' (tensor(float)) is not a feature of [features]" in e for e in errs)
    ints = per_feature_model(
        ("imbalance_top1", "trade_flow_1m"), (TensorProto.FLOAT, TensorProto.INT32)
    )
    errs = _errors(make_bundle(tmp_path, ints, section=model_toml(inputs=None)))
    assert any(
        "input 'trade_flow_1m' is tensor(int32), the feature 'trade_flow_1m' is a number" in e
        for e in errs
    ), errs
    text = per_feature_model(("imbalance_top1", "regime"), (TensorProto.FLOAT, TensorProto.STRING))
    errs = _errors(make_bundle(tmp_path, text, section=model_toml(inputs=None)))
    assert any(
        "input 'regime' is tensor(string), the feature 'regime' is enum: S3 feeds a model "
        "numeric features only" in e
        for e in errs
    ), errs


def test_output_must_be_one_probability(tmp_path: Path) -> None:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    est, _ = sklearn_onnx("logistic")
    zipmap = convert_sklearn(
        est, initial_types=[("x", FloatTensorType([None, 6]))]
    ).SerializeToString()
    errs = _errors(make_bundle(tmp_path, zipmap))
    assert any(
        "outputs 'output_label' tensor(int64) [N], 'output_probability'" in e
        and "zipmap=False" in e
        for e in errs
    ), errs


def test_unloadable_or_missing_file(tmp_path: Path) -> None:
    errs = _errors(make_bundle(tmp_path, b"not a model at all"))
    assert any(
        "E314 model.file: 'model/p.onnx' is not a model onnxruntime can load" in e for e in errs
    )
    errs = _errors(make_bundle(tmp_path, None))
    assert any("'model/p.onnx' is not in the bundle" in e for e in errs), errs
    errs = _errors(make_bundle(tmp_path, column_model(), section=model_toml("../p.onnx")))
    assert any("not a relative path to a .onnx file inside the bundle" in e for e in errs), errs


def test_without_onnxruntime_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, data = sklearn_onnx("logistic")
    root = make_bundle(tmp_path, data)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises ImportError
    errs = _errors(root)
    assert any(
        "E314 model.kind: the ONNX model kind needs onnxruntime and numpy" in e
        and "pip install -e '.[model]'" in e
        for e in errs
    ), errs
    assert load_dir(ROOT / "rulesets" / "default").snapshot is not None  # the logistic kind runs


def test_checksum_covers_the_model_file(tmp_path: Path) -> None:
    _, data = sklearn_onnx("logistic")
    root = make_bundle(tmp_path, data)
    files = read_bundle_files(root)
    assert base64.b64decode(files["model/p.onnx"]) == data
    before = checksum_dir(root)
    (root / "model" / "p.onnx").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert checksum_dir(root) != before


def test_publish_and_reload_build_the_session_once_per_rev(tmp_path: Path) -> None:
    """Through the store: the model file travels with the bundle, the reloader verifies it off
    to the side and swaps it in with the rules; a rev whose file was altered after publishing
    is rejected; a rev whose file does not fit the schema is rejected, the old one serves on."""
    store = SqliteStore(str(tmp_path / "s3.db"))
    try:
        _, data = sklearn_onnx("logistic")
        publish(store, None, None, make_bundle(tmp_path, data, rev=1), reason="t")
        events: list[tuple[str, dict[str, Any]]] = []
        reloader = Reloader(None, StoreSource(store), on_event=lambda k, d: events.append((k, d)))
        registry = reloader.start_registry()
        first = registry.current
        assert first.rev == 1 and isinstance(first.model_runtime, OnnxModel)
        assert reloader.check_once().status == "unchanged"
        assert registry.current.model_runtime is first.model_runtime  # built once for rev 1
        _, gbt = sklearn_onnx("gbt")
        publish(store, None, None, make_bundle(tmp_path, gbt, rev=2), reason="t")
        assert reloader.check_once("cfg:events").status == "applied"
        second = registry.current
        assert second.rev == 2 and second.model_runtime.sha256 != first.model_runtime.sha256
        # a rev with a model that does not fit its bundle: rejected, rev 2 serves on
        bad = make_bundle(tmp_path, data, rev=3, section=model_toml(inputs=INPUTS[:5]))
        publish(store, None, None, bad, reason="t")
        result = reloader.check_once("cfg:events")
        assert result.status == "rejected" and registry.current.rev == 2
        assert any("model.inputs lists 5 features" in r for r in result.reasons), result.reasons
        assert events[-1][0] == "CONFIG_REJECTED"
    finally:
        store.close()


def test_tampered_model_file_in_the_store_is_rejected(tmp_path: Path) -> None:
    from s3.config.bundle import checksum_files
    from s3.config.reload import BundleDoc, compile_doc

    _, data = sklearn_onnx("logistic")
    files = read_bundle_files(make_bundle(tmp_path, data))
    doc = BundleDoc("default", 1, checksum_files(files), files)
    snap, reasons = compile_doc(doc)
    assert snap is not None and snap.model_runtime is not None and reasons == []
    tampered = dict(files)
    tampered["model/p.onnx"] = base64.b64encode(data.replace(b"features", b"featureZ")).decode()
    snap, reasons = compile_doc(BundleDoc("default", 1, doc.checksum, tampered))
    assert snap is None and "checksum mismatch" in reasons[0]


def test_rules_lint_reports_model_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from s3.cli import main

    _, data = sklearn_onnx("logistic")
    good = make_bundle(tmp_path, data, name="good")
    assert main(["rules", "lint", str(good)]) == 0
    bad = make_bundle(tmp_path, data, name="bad", section=model_toml(inputs=INPUTS[:5]))
    capsys.readouterr()
    assert main(["rules", "lint", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "E314" in out and "model.inputs lists 5 features" in out and "bundle.toml" in out


def test_load_result_is_json_safe_without_the_runtime(tmp_path: Path) -> None:
    """The decision record stays plain data: the runtime object is on the snapshot only."""
    _, data = sklearn_onnx("logistic")
    snap = _snap(make_bundle(tmp_path, data))
    d = decide(_input(real_rows()[0]), snap, model_of(snap))
    import msgspec

    doc = json.loads(msgspec.json.encode(d))
    assert doc["model_id"].startswith("onnx:") and doc["model_degraded"] is None
