"""Typos never pass silently: unknown feature keys warn (error under --strict) or are counted;
did-you-mean for enum values and keywords; E204 says how to fix a number compared with a string."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from dsl import build_bundle
from dsl.suggest import did_you_mean
from s3.cli import main
from s3.http.app import create_app
from s3.metrics import Metrics
from s3.service import Service
from tests.conftest import BundleFactory
from tests.http.test_api import AUTH, EXAMPLE

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "rulesets" / "default"
FEATURES = {k: v for k, v in EXAMPLE.items() if k != "ts"}


def test_did_you_mean_for_enum_values_and_keywords() -> None:
    assert did_you_mean("trending", ["trend", "range"]) == "did you mean 'trend'?"
    assert did_you_mean("SEL", ["BUY", "SELL"]) == "did you mean 'SELL'?"
    assert did_you_mean("tr", ["trend", "range"]) is None  # too short to guess
    assert did_you_mean("xyz", ["trend", "range"]) is None


def _diags(make_bundle: BundleFactory, rules: str) -> list[tuple[str, str, str | None]]:
    return [(d.code, d.message, d.hint) for d in build_bundle(make_bundle(rules)).diagnostics]


def test_lint_hints(make_bundle: BundleFactory) -> None:
    found = _diags(
        make_bundle,
        "rule R-1 wen mid > 1 then skip_entry\n"
        'rule R-2 when side == "BUYING" then skip_entry\n'
        'rule R-3 when mid > "1.5" then skip_entry\n'
        'rule R-4 when mid == "high" then skip_entry\n',
    )
    hints = {code_msg[1].split(" in rule ")[-1]: code_msg[2] for code_msg in found}
    assert hints == {
        "R-1": "did you mean 'when'?",
        "R-2": "did you mean 'BUY'?",
        "R-3": "write the number without quotes: 1.5",
        "R-4": "mid is a number: compare it with a number, not a string",
    }, found
    assert [c for c, _, _ in found] == ["E101", "E206", "E204", "E204"]


def test_explain_warns_about_unknown_features_and_strict_refuses(
    capsys: pytest.CaptureFixture[str],
) -> None:
    feats = json.dumps({**FEATURES, "regmie": "trend"})
    assert main(["rules", "explain", str(DEFAULT), "--features", feats]) == 0
    err = capsys.readouterr().err
    assert (
        "features: warning: unknown feature 'regmie' (not in the bundle's [features]; ignored); "
        "did you mean 'regime'?"
    ) in err
    assert main(["rules", "explain", str(DEFAULT), "--features", feats, "--strict"]) == 1
    assert "features: error: unknown feature 'regmie'" in capsys.readouterr().err
    # an enum value typo is an E411 with the value meant
    bad = json.dumps({**FEATURES, "regime": "trending"})
    assert main(["rules", "explain", str(DEFAULT), "--features", bad]) == 1
    assert (
        "features: E411 feature 'regime' must be one of trend, range, found 'trending'; "
        "did you mean 'trend'?"
    ) in capsys.readouterr().out


def test_replay_warns_about_unknown_features(capsys: pytest.CaptureFixture[str]) -> None:
    from s3.replay.tape import load
    from s3.unknown_keys import warnings_for

    tape = load(ROOT / "data" / "tapes" / "real_window_a_40.jsonl")
    schema = build_bundle(DEFAULT).ruleset
    assert schema is not None
    known = schema.schema.features
    assert warnings_for((e.features for e in tape.events if e.features), known) == []
    typo = [{**(e.features or {}), "fundng_next": 0.0} for e in tape.events]
    assert warnings_for(typo, known) == [
        "unknown feature 'fundng_next' in 40 of 40 events (not in the bundle's [features]; "
        "ignored); did you mean 'funding_next'?"
    ]


def test_decide_and_stream_count_unknown_keys(service: Service) -> None:
    with TestClient(create_app(deps=service)) as c:
        now = service.engine.clock_ms()
        body = {
            "symbol": "BTCUSDT",
            "sideHint": "BUY",
            "dry_run": True,
            "features": {**FEATURES, "ts": now, "regmie": "trend", "venue_id": 7},
        }
        for _ in range(2):
            r = c.post("/decide", json=body, headers=AUTH)
            assert r.status_code == 200, r.text  # accepted: producers send more
        # the stream worker's call (trigger "stream")
        service.engine.decide(
            symbol="BTCUSDT",
            side_hint="BUY",
            t0_ms=None,
            trigger="stream",
            dry_run=True,
            features={**FEATURES, "ts": now, "regmie": "trend"},
        )
        text = c.get("/metrics").text
    assert 's3_unknown_feature_keys_total{key="regmie",source="manual"} 2.0' in text
    assert 's3_unknown_feature_keys_total{key="venue_id",source="manual"} 2.0' in text
    assert 's3_unknown_feature_keys_total{key="regmie",source="stream"} 1.0' in text
    assert 'key="ts"' not in text and 'key="side"' not in text  # the engine's own fields


def test_unknown_key_names_are_bounded() -> None:
    m = Metrics()
    m.count_unknown("stream", [f"k{i}" for i in range(150)] + ["x" * 500])
    series = {
        s.labels["key"]
        for fam in m.registry.collect()
        if fam.name == "s3_unknown_feature_keys"
        for s in fam.samples
        if s.name.endswith("_total")
    }
    assert len(series) == 101 and "(other)" in series


@pytest.fixture
def service(tmp_path: Path, redis_server: Any) -> Any:
    from tests.http.test_api import make_service, seed

    svc = make_service(tmp_path, redis_server.address, None, "typo:")
    seed(svc)
    yield svc
    svc.close()
