"""Shadow bundles (s3/shadow.py): the comparison, the registry the engine hook uses, and a real
service with the hook in place deciding stream events beside a shadow bundle."""

from __future__ import annotations

import gc
import json
import weakref
from pathlib import Path
from typing import Any

import pytest

from s3 import shadow
from s3.adapters.sqlite_store import SqliteStore
from s3.core.decide import BundleSnapshot, decide
from s3.core.model import build_model
from s3.core.types import DecisionInput, MarketState
from s3.metrics import Metrics
from s3.replay.tape import Event, iter_records
from s3.service import Service
from tests.replay.conftest import DEFAULT, REAL, START, run_live

EXAMPLE = json.loads((DEFAULT / "examples" / "btc_buy_real.json").read_text())


def inp(**changes: Any) -> DecisionInput:
    features = {k: v for k, v in {**EXAMPLE, **changes}.items() if k != "side"}
    return DecisionInput(
        symbol="BTCUSDT",
        side_hint="BUY",
        features=features,
        now_ms=EXAMPLE["ts"] + 100,
        t0_ms=EXAMPLE["ts"],
        features_ts_ms=EXAMPLE["ts"],
        state=MarketState(kill_switch="OFF", health="GREEN"),
    )


def shadow_diff_count(m: Metrics, kind: str) -> float:
    v = m.registry.get_sample_value("s3_shadow_diff_total", {"kind": kind})
    return v or 0.0


def test_observe_records_a_difference(
    tmp_path: Path, default_snap: BundleSnapshot, b_snap: BundleSnapshot
) -> None:
    metrics = Metrics()
    store = SqliteStore(tmp_path / "s.db")
    sh = shadow.Shadow(b_snap, metrics=metrics, store=store)
    model = build_model(default_snap.params.model)
    same = inp()
    assert sh.observe(same, decide(same, default_snap, model)) is None
    against = inp(trade_flow_1m=-0.45)  # in B's new R-023 band, not in A's
    live = decide(against, default_snap, model)
    assert live.decision == "open"
    diff = sh.observe(against, live)
    assert (
        diff is not None and diff.kind == "open_to_skip" and diff.kinds == ("open_to_skip", "rules")
    )
    assert diff.shadow["reason_detail"] == "RULE.SKIP:R-023"
    assert shadow_diff_count(metrics, "open_to_skip") == 1
    (event,) = store.events_by_kind("SHADOW_DIFF", limit=10)
    assert event.symbol == "BTCUSDT" and event.ts == against.now_ms
    assert event.detail["kind"] == "open_to_skip"
    assert event.detail["live"]["config_rev"] == 1 and event.detail["shadow"]["config_rev"] == 2
    assert (sh.decided, sh.differed, sh.errors) == (2, 1, 0)
    store.close()


def test_a_failing_shadow_never_reaches_the_live_path(
    default_snap: BundleSnapshot, b_snap: BundleSnapshot
) -> None:
    class Broken:
        def put_event(self, doc: Any) -> None:
            raise RuntimeError("store down")

    metrics = Metrics()
    sh = shadow.Shadow(b_snap, metrics=metrics, store=Broken())
    against = inp(trade_flow_1m=-0.45)
    live = decide(against, default_snap, build_model(default_snap.params.model))
    assert sh.observe(against, live) is None
    assert sh.observe(inp(mid="garbage"), live) is None  # the shadow's decide raises InputError
    assert sh.errors == 2 and shadow_diff_count(metrics, "error") == 2


def test_registry_is_per_engine_and_a_no_op_without_a_shadow(b_snap: BundleSnapshot) -> None:
    class FakeEngine:
        pass

    seen: list[Any] = []

    class Recorder(shadow.Shadow):
        def observe(self, inp: DecisionInput, live: Any) -> None:
            seen.append((inp, live))

    a, b = FakeEngine(), FakeEngine()
    shadow.observe(a, inp(), None)  # type: ignore[arg-type]
    rec = shadow.install(a, Recorder(b_snap, metrics=Metrics(), store=None))
    assert shadow.current(a) is rec and shadow.current(b) is None
    shadow.observe(a, inp(), None)  # type: ignore[arg-type]
    shadow.observe(b, inp(), None)  # type: ignore[arg-type]
    assert len(seen) == 1
    assert shadow.uninstall(a) is rec and shadow.current(a) is None
    shadow.install(b, rec)
    assert shadow.current(b) is rec and b.shadow is rec  # a field of the engine, no registry
    held = weakref.ref(rec)
    del b, rec
    gc.collect()
    assert held() is None  # dropped with its engine


def test_install_from_env(
    monkeypatch: pytest.MonkeyPatch, bundle_b_dir: Path, tmp_path: Path
) -> None:
    class FakeEngine:
        metrics = Metrics()

    engine = FakeEngine()
    monkeypatch.delenv(shadow.SHADOW_ENV, raising=False)
    assert shadow.install_from_env(engine, store=None) is None
    monkeypatch.setenv(shadow.SHADOW_ENV, str(bundle_b_dir))
    sh = shadow.install_from_env(engine, store=None)
    assert sh is not None and sh.snap.rev == 2 and shadow.current(engine) is sh
    monkeypatch.setenv(shadow.SHADOW_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="not a bundle directory"):
        shadow.install_from_env(engine, store=None)
    monkeypatch.setenv(shadow.SHADOW_ENV, "store:default:9")
    with pytest.raises(ValueError, match="no bundle default:9"):
        shadow.install_from_env(engine, store=SqliteStore(tmp_path / "x.db"))
    shadow.uninstall(engine)


def test_live_service_with_the_hook_and_a_shadow_bundle(
    service: Service, monkeypatch: pytest.MonkeyPatch, bundle_b_dir: Path
) -> None:
    """The hook in Engine._decide_live (`shadow.observe(self, inp, d)` right after the decision);
    the shadow comes from S3_SHADOW_BUNDLE as `install_from_env` (the hook in
    Service.from_settings) reads it."""
    engine = service.engine
    monkeypatch.setenv(shadow.SHADOW_ENV, str(bundle_b_dir))
    sh = shadow.install_from_env(engine, service.store)
    assert sh is not None
    events = [r for _, r in iter_records(REAL) if isinstance(r, Event)][START:]
    live = run_live(service, events)
    try:
        diffs = service.store.events_by_kind("SHADOW_DIFF", limit=100)
        # the events of window C inside B's new R-023 band (tests/replay/test_ab.py): #76, #78, #100
        by_t0 = {x.decision.t0_ms: i + START for i, x in enumerate(live) if i < 20}
        by_t0 |= {x.decision.t0_ms: i + START + 1 for i, x in enumerate(live) if i >= 20}
        assert sorted(by_t0[d.detail["t0"]] for d in diffs) == [76, 78, 100]
        assert all(d.detail["shadow"]["reason_detail"] == "RULE.SKIP:R-023" for d in diffs)
        kinds = {d.detail["kind"] for d in diffs}
        assert kinds <= {"open_to_skip", "reason"}
        total = sum(shadow_diff_count(engine.metrics, k) for k in shadow.KINDS)
        assert total == len(diffs) == sh.differed and sh.decided == len(live) and sh.errors == 0
        # without side effects: one signal per live decision, all of the live bundle's rev
        r, k = engine.redis, engine.keys
        sigs = [f for _, f in r.xrange(k.sig_events) or [] if f]
        assert len(sigs) == len(live) and {f["config_rev"] for f in sigs} == {"1"}
        assert len(service.store.events_by_kind("DECIDE", limit=500)) == len(live)
    finally:
        shadow.uninstall(engine)
