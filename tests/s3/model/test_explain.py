"""`s3 model explain BUNDLE --features F`: the model's p and each feature's contribution."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from s3.cli import main
from tests.s3.model.onnx_models import INPUTS, ROOT, make_bundle, model_toml, sklearn_onnx

EXAMPLE = ROOT / "rulesets" / "default" / "examples" / "btc_buy_real.json"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    capsys.readouterr()
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def test_logistic_contributions_add_up(capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads(
        _run(
            capsys,
            "model",
            "explain",
            "rulesets/default",
            "--features",
            str(EXAMPLE),
            "--format",
            "json",
        )
    )
    feats = json.loads(EXAMPLE.read_text())
    assert doc["kind"] == "logistic" and doc["model_id"].startswith("logistic:")
    parts = {c["feature"]: c["contribution"] for c in doc["contributions"]}
    assert parts == {
        "spread_bps": pytest.approx(-2.0 * feats["spread_bps"]),
        "vol_1m_bps": pytest.approx(-0.5 * feats["vol_1m_bps"]),
    }
    z = 1.2 + sum(parts.values())
    assert doc["logit"] == pytest.approx(z) and doc["p"] == pytest.approx(1 / (1 + math.exp(-z)))
    assert doc["size_mult_ml"] == 1.0  # 0.6 <= p <= 0.85
    human = _run(capsys, "model", "explain", "rulesets/default", "--features", str(EXAMPLE))
    assert "vol_1m_bps" in human and f"p = {doc['p']:.6f} -> size_mult_ml x1" in human


def test_onnx_model_p_and_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    est, data = sklearn_onnx("gbt")
    section = model_toml(id="gbt-test", trained_at="2025-06-03T00:00:00Z", trained_on=["ticks A"])
    root = make_bundle(tmp_path, data, section=section)
    doc = json.loads(
        _run(capsys, "model", "explain", str(root), "--features", str(EXAMPLE), "--format", "json")
    )
    feats = json.loads(EXAMPLE.read_text())
    want = est.predict_proba(np.array([[feats[n] for n in INPUTS]], dtype=np.float32))[0, 1]
    assert doc["p"] == pytest.approx(float(want), abs=1e-5)
    assert [i["feature"] for i in doc["inputs"]] == list(INPUTS)
    assert doc["model_id"] == "gbt-test" and doc["trained_on"] == ["ticks A"]
    human = _run(capsys, "model", "explain", str(root), "--features", str(EXAMPLE))
    assert "trained at 2025-06-03T00:00:00Z" in human and "permutation importance" in human


def test_bad_features_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "explain", "rulesets/default", "--features", '{"mid": "x"}']) == 2
    assert "features:" in capsys.readouterr().err
