"""`s3 model train` on a shipped real tape (the first 3,000 events of the 1-minute bar tape):
a bundle that lints, tests and replays, the same bytes from the same tapes, an honest report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from s3.cli import main
from s3.config.bundle import load_dir, read_bundle_files
from s3.core.model import model_of
from s3.replay.replay import replay
from s3.replay.tape import load

ROOT = Path(__file__).resolve().parents[3]
BARS = ROOT / "data" / "tapes" / "real_bars_1m.jsonl.gz"
SAMPLE = ROOT / "data" / "tapes" / "real_sample.jsonl.gz"
ARGS = ["--tape", str(BARS), "--limit", "3000", "--folds", "2", "--quiet", "--json"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object], Path]:
    base = tmp_path_factory.mktemp("train")
    a, b = base / "a", base / "b"
    assert main(["model", "train", *ARGS, "--out", str(a)]) == 0
    assert main(["model", "train", *ARGS, "--out", str(b)]) == 0
    report = json.loads((a / "report" / "training.json").read_text())
    return a, report, b


def test_same_tapes_same_bytes(trained: tuple[Path, dict[str, object], Path]) -> None:
    a, _, b = trained
    files_a, files_b = read_bundle_files(a), read_bundle_files(b)
    assert files_a == files_b and {"model/logistic.onnx", "model/gbt.onnx"} <= set(files_a)
    for name in ("training.json", "training.md", "reliability.svg"):
        assert (a / "report" / name).read_bytes() == (b / "report" / name).read_bytes()


def test_the_bundle_lints_tests_and_replays(
    trained: tuple[Path, dict[str, object], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out, report, _ = trained
    assert main(["rules", "lint", str(out)]) == 0
    assert main(["rules", "test", str(out)]) == 0
    snap = load_dir(out).snapshot
    assert snap is not None and snap.params.model.kind == "onnx"
    assert snap.params.model.model_id == report["model_id"]
    assert (
        snap.params.model.trained_on and "real_bars_1m.jsonl.gz" in snap.params.model.trained_on[0]
    )
    assert snap.rev == 2  # the base rev + 1: ready to publish
    result = replay(load(SAMPLE), snap, model=model_of(snap))
    consulted = [o.decision for o in result.outcomes if o.decision and o.decision.model_id]
    assert consulted and all(d.model_id == report["model_id"] for d in consulted)
    assert any(d.model_p is not None for d in consulted)
    assert all(d.model_age_ms is not None and d.model_age_ms < 0 for d in consulted)  # the
    # sample's windows (2023-2024) lie before the bars the model was trained on (2025)


def test_the_report_is_honest(trained: tuple[Path, dict[str, object], Path]) -> None:
    out, report, _ = trained
    scores = report["scores"]
    assert isinstance(scores, dict) and {"logistic", "gbt", "none", "handset"} <= set(scores)
    for name in ("logistic", "gbt", "none"):
        for metric in ("auc", "brier", "ece"):
            d = scores[name][metric]
            lo, hi = d["ci95"]
            assert lo <= d["value"] <= hi or name == "none", (name, metric, d)
    pnl = report["pnl"]
    assert isinstance(pnl, dict) and {"logistic", "gbt", "handset", "none"} <= set(pnl)
    assert "vs_none_ci95" in pnl["logistic"]
    verdict = str(report["verdict"])
    assert ("beat 'no model'" in verdict) != (
        "did NOT beat" in verdict
    ) or "no replay trades" in verdict
    assert report["gap_ms"] > report["label_horizon_ms"]  # type: ignore[operator]
    folds = [f for f in report["folds"] if "train" in f]  # type: ignore[union-attr]
    assert folds and all(f["test_from_ms"] > 0 for f in folds)
    svg = (out / "report" / "reliability.svg").read_text()
    assert svg.startswith("<svg") and "polyline" in svg
    assert "Verdict" in (out / "report" / "training.md").read_text()


def test_too_few_labels_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["model", "train", "--tape", str(SAMPLE), "--out", str(tmp_path / "x"), "--quiet"])
    assert code == 1
    assert "too few to train and judge a model" in capsys.readouterr().err
