"""The HTTP API (spec §3, Part B2/B6/B11) on a real engine: real Redis, SQLite, the S4 stand-in.

`TestClient` covers the shapes and the status mappings; a real uvicorn server on loopback covers
concurrency (many clients at once, quota never exceeded, retries replayed).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from litestar.testing import TestClient

from s3.adapters.redis_server import RedisServer, free_port
from s3.adapters.store_docs import signal_id
from s3.config.settings import Settings
from s3.core.types import ModelResult
from s3.engine import Submission
from s3.http.app import create_app
from s3.s4_standin import S4Server
from s3.service import Service
from tests.chaos.proxy import JitterProxy

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = json.loads((ROOT / "rulesets" / "default" / "examples" / "btc_buy_real.json").read_text())
AUTH = {"Authorization": "Bearer s3cret"}


@pytest.fixture
def s4() -> Iterator[S4Server]:
    with S4Server() as server:
        yield server


def make_service(
    tmp_path: Path, redis_address: str, s4_url: str | None, prefix: str, **kw: Any
) -> Service:
    settings = Settings(
        api_token="s3cret",
        redis_addresses=redis_address,
        redis_prefix=prefix,
        sqlite_path=str(tmp_path / "s3.db"),
        cache_dir=str(tmp_path / "cache"),
        bundle_dir=str(ROOT / "rulesets" / "default"),
        s4_url=s4_url,
        s4_timeout_s=0.3,
        s4_retries=1,
        **kw,
    )
    return Service.from_settings(settings)


def seed(service: Service, symbol: str = "BTCUSDT", **changes: Any) -> None:
    e = service.engine
    features = {**EXAMPLE, "ts": e.clock_ms(), **changes}
    e.redis.delete(e.keys.feat_last(symbol))
    e.redis.hset(
        e.keys.feat_last(symbol), mapping={k: str(v) for k, v in features.items() if k != "symbol"}
    )
    e.redis.set(e.keys.kill_switch, "OFF")
    e.redis.set(e.keys.health, "GREEN")


_counter = iter(range(10_000))


@pytest.fixture
def service(tmp_path: Path, redis_server: RedisServer, s4: S4Server) -> Iterator[Service]:
    svc = make_service(tmp_path, redis_server.address, s4.url, f"h{next(_counter)}:")
    seed(svc)
    yield svc
    svc.close()


@pytest.fixture
def client(service: Service) -> Iterator[TestClient[Any]]:
    with TestClient(create_app(deps=service)) as c:
        yield c


def decide(c: TestClient[Any], **body: Any) -> httpx.Response:
    return c.post("/decide", json={"symbol": "BTCUSDT", "sideHint": "BUY", **body}, headers=AUTH)


def test_happy_path_opens_with_a_legal_intent(
    client: TestClient[Any], service: Service, s4: S4Server
) -> None:
    r = decide(client, context={"t0": 1730000000000, "trigger": "manual"})
    assert r.status_code == 200
    body = r.json()
    assert (body["decision"], body["reason"], body["config_rev"]) == ("open", "OK", 1)
    assert body["rules_fired"] == ["R-008", "R-026", "R-063"]
    i = body["intent"]
    assert set(i) >= {
        "intent_id",
        "market",
        "symbol",
        "side",
        "qty",
        "exec_policy",
        "tp_px",
        "sl_px",
    }
    assert (i["intent_id"], i["market"], i["side"], i["qty"], i["tp_px"], i["sl_px"]) == (
        "s3-btc-1730000000000-d087ab75",
        "FUT",
        "BUY",
        0.004,
        62071.9,
        61540.0,
    )
    assert isinstance(i["qty"], float)  # JSON numbers, as in spec §3
    assert (body["submitted"], body["reservation"], body["replayed"]) == (
        "accepted",
        "committed",
        False,
    )
    assert list(s4.orders) == ["s3-btc-1730000000000-d087ab75"]
    signals = service.store.signals_by_symbol("BTCUSDT", limit=10)
    assert [s.decision["action"] for s in signals] == ["open"]


def test_a_retry_replays_the_first_result_and_takes_no_quota(
    client: TestClient[Any], service: Service, s4: S4Server
) -> None:
    first = decide(client, context={"t0": 1730000000001})
    inuse = service.engine.ledger.snapshot().inuse["FUT"]
    seed(service, spread_bps=2.9)  # different features: the retry must still get the first answer
    again = decide(client, context={"t0": 1730000000001})
    a, b = first.json(), again.json()
    assert b.pop("replayed") is True and a.pop("replayed") is False
    assert a == b
    assert service.engine.ledger.snapshot().inuse["FUT"] == inuse
    assert len(s4.orders) == 1


@pytest.mark.parametrize(
    ("changes", "detail"),
    [({"funding_next": 0.0009}, "GATE.FUNDING"), ({"spread_bps": 3.5}, "GATE.SPREAD")],
)
def test_gates_skip_with_200(
    client: TestClient[Any], service: Service, changes: dict[str, Any], detail: str
) -> None:
    seed(service, **changes)
    r = decide(client)
    assert r.status_code == 200
    assert (r.json()["decision"], r.json()["reason"], r.json()["reason_detail"]) == (
        "skip",
        "GATE",
        detail,
    )
    assert r.json()["intent"] is None


def test_model_timeout_degrades(tmp_path: Path, redis_server: RedisServer, s4: S4Server) -> None:
    svc = make_service(tmp_path, redis_server.address, s4.url, f"m{next(_counter)}:")
    from s3.adapters.model_runner import DeadlineModel

    def slow(features: Any) -> ModelResult:
        time.sleep(0.3)
        return ModelResult(p=0.99)

    svc.engine.model_factory = lambda snap: DeadlineModel(slow, 20)
    seed(svc)
    try:
        with TestClient(create_app(deps=svc)) as c:
            body = decide(c).json()
    finally:
        svc.close()
    assert (
        body["decision"] == "open"
        and body["model_degraded"] == "MODEL.TIMEOUT: no answer within 20 ms"
    )
    assert body["model_p"] is None


def test_dry_run_decides_without_side_effects(
    client: TestClient[Any], service: Service, s4: S4Server
) -> None:
    body = decide(client, dry_run=True).json()
    assert body["decision"] == "open" and body["dry_run"] is True and body["submitted"] == "none"
    assert body["reservation"] is None
    assert service.engine.ledger.snapshot().inuse["FUT"] == 0
    assert s4.orders == {} and service.store.signals_by_symbol("BTCUSDT", limit=10) == []


def test_auth(client: TestClient[Any]) -> None:
    assert client.post("/decide", json={"symbol": "BTCUSDT"}).status_code == 401
    bad = client.post(
        "/decide", json={"symbol": "BTCUSDT"}, headers={"Authorization": "Bearer nope"}
    )
    assert (bad.status_code, bad.json()["error"]) == (401, "UNAUTHORIZED")
    assert client.post("/admin/reload").status_code == 401
    assert client.get("/health").status_code == 200 and client.get("/metrics").status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"sideHint": "BUY"}, 400, "BAD_REQUEST"),
        ({"symbol": "BTCUSDT", "sideHint": "BUY", "extra": 1}, 400, "BAD_REQUEST"),
        ({"symbol": "BTCUSDT", "sideHint": "LONG"}, 400, "BAD_SIDE"),
        (
            {"symbol": "BTCUSDT", "sideHint": "BUY", "features": {"mid": 1.0}},
            400,
            "MISSING_FEATURES",
        ),
        ({"symbol": "DOGEUSDT", "sideHint": "BUY"}, 422, "SYMBOL_NOT_CONFIGURED"),
    ],
)
def test_error_mapping(
    client: TestClient[Any], body: dict[str, Any], status: int, error: str
) -> None:
    r = client.post("/decide", json=body, headers=AUTH)
    assert (r.status_code, r.json()["error"]) == (status, error), r.text


def test_missing_rule_features_say_which(client: TestClient[Any], service: Service) -> None:
    features = {k: v for k, v in EXAMPLE.items() if k not in ("ret_1m", "vol_1m_bps")}
    features["ts"] = service.engine.clock_ms()
    r = decide(client, features=features)
    assert r.status_code == 400
    assert (
        r.json()["detail"]
        == "required feature 'ret_1m' is missing; required feature 'vol_1m_bps' is missing"
    )


def test_redis_down_is_503(tmp_path: Path, s4: S4Server) -> None:
    server = RedisServer().start()
    svc = make_service(tmp_path, server.address, s4.url, "d:", redis_timeout_s=0.3)
    seed(svc)
    try:
        with TestClient(create_app(deps=svc)) as c:
            server.stop()
            r = decide(c)
            assert (r.status_code, r.json()["error"]) == (503, "REDIS_DOWN")
            h = c.get("/health")
            assert (
                h.status_code == 503
                and h.json()["status"] == "DEGRADED"
                and h.json()["degraded"] == ["redis"]
            )
    finally:
        svc.close()
        server.stop()


def test_error_answers_are_counted_and_a_bug_is_a_plain_500(
    client: TestClient[Any],
    service: Service,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert client.post("/decide", json={"symbol": "BTCUSDT"}).status_code == 401
    assert client.post("/decide", json={"sideHint": "BUY"}, headers=AUTH).status_code == 400
    assert decide(client, symbol="DOGEUSDT").status_code == 422

    def broken(**_: Any) -> Any:
        raise RuntimeError("an internal detail")

    monkeypatch.setattr(service.engine, "decide_steps", broken)
    with caplog.at_level(logging.ERROR, logger="s3.http"):
        r = decide(client)
    assert (r.status_code, r.json()["error"]) == (500, "INTERNAL")
    assert "internal detail" not in r.text  # names no internals
    assert any("internal detail" in (rec.exc_text or "") for rec in caplog.records)
    text = client.get("/metrics").text
    for code, status in (("UNAUTHORIZED", 401), ("BAD_REQUEST", 400), ("INTERNAL", 500)):
        assert f's3_http_errors_total{{code="{code}",status="{status}"}} 1.0' in text, code
    assert 'status="422"' in text


def test_redis_lost_in_the_middle_of_a_decision_is_503(
    tmp_path: Path, s4: S4Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis goes away after the state was read (here: its connection to the server is cut by
    stopping the server just before the last round trip): 503 REDIS_DOWN, not a 500."""
    server = RedisServer().start()
    svc = make_service(tmp_path, server.address, s4.url, "m:", redis_timeout_s=0.3)
    seed(svc)
    persist = svc.engine._persist

    def then_redis_dies(*a: Any, **kw: Any) -> None:
        persist(*a, **kw)
        server.stop()

    monkeypatch.setattr(svc.engine, "_persist", then_redis_dies)
    try:
        with TestClient(create_app(deps=svc)) as c:
            r = decide(c)
            assert (r.status_code, r.json()["error"]) == (503, "REDIS_DOWN"), r.text
    finally:
        svc.close()
        server.stop()


def test_health_and_metrics_and_openapi(client: TestClient[Any]) -> None:
    h = client.get("/health").json()
    assert h == {
        "status": "OK",
        "redis": "ok",
        "arango": "not used",  # the store in use is SQLite
        "store": "sqlite",
        "store_status": "ok",
        "config": "ok",
        "config_rev": 1,
        "rules_loaded": 31,
        "bundle_id": "default",
        "streams": "ok",
        "degraded": [],
    }
    decide(client)
    text = client.get("/metrics").text
    for name in (
        "s3_strategy_decide_latency_ms_bucket",
        "s3_decisions_total",
        "s3_rules_fired_total",
        "s3_intent_emit_total",
        "s3_config_rev",
    ):
        assert name in text
    schema = client.get("/schema/openapi.json").json()
    assert {"/decide", "/health", "/metrics"} <= set(schema["paths"])
    props = schema["components"]["schemas"]
    assert any("sideHint" in json.dumps(v) for v in props.values())


def test_s4_reject_releases_at_once(
    client: TestClient[Any], service: Service, s4: S4Server
) -> None:
    s4.set_mode("reject", times=1)
    body = decide(client, context={"t0": 1730000000111}).json()
    assert (body["decision"], body["submitted"], body["reservation"]) == (
        "open",
        "rejected",
        "released",
    )
    snap = service.engine.ledger.snapshot()
    assert snap.inuse["FUT"] == 0 and snap.drift() == []
    kinds = [e.kind for e in service.store.events_by_kind("ENTRY_REJECTED", limit=10)]
    assert kinds == ["ENTRY_REJECTED"]


def test_s4_timeout_goes_dual_track(
    client: TestClient[Any], service: Service, s4: S4Server
) -> None:
    s4.set_mode("timeout", delay_ms=1000)
    body = decide(client, context={"t0": 1730000000222}).json()
    # S4 may hold the order (a late accept): the quota stays reserved until `reconcile` settles it
    assert (body["submitted"], body["reservation"]) == ("stream", "pending")
    e = service.engine
    entries = e.redis.xrange(e.keys.ord_cmd("BTCUSDT"))
    assert len(entries) == 1 and entries[0][1]["intent_id"] == body["intent"]["intent_id"]


# -- a real server on loopback --------------------------------------------------------------------------
@pytest.fixture
def live(service: Service) -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(
        create_app(deps=service), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_concurrent_requests_on_a_real_server(live: str, service: Service, s4: S4Server) -> None:
    # 40 requests, 8 distinct t0s (each retried 5 times), both symbols: every retry gets the first
    # answer, one order per intent, and the quota is exactly what the ledger holds. S4 answers
    # in 250 ms: retries of an open arrive while it is in S4 (IN_PROGRESS, then replayed).
    seed(service, "ETHUSDT", mid=2650.25, atr=40.0)
    s4.set_mode("delay", delay_ms=250)

    def call(i: int) -> dict[str, Any]:
        symbol = "BTCUSDT" if i % 2 else "ETHUSDT"
        body = {"symbol": symbol, "sideHint": "BUY", "context": {"t0": 1730000001000 + i % 8}}
        for _ in range(100):  # as a client must: IN_PROGRESS (the first attempt is still in
            # S4) means retry shortly
            r = httpx.post(f"{live}/decide", json=body, headers=AUTH, timeout=10)
            if r.status_code != 422 or r.json()["error"] != "IN_PROGRESS":
                break
            time.sleep(0.02)
        assert r.status_code == 200, r.text
        return r.json()

    with cf.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(40)))
    by_t0: dict[tuple[str, int], set[str]] = {}
    for i, body in enumerate(results):
        key = ("BTCUSDT" if i % 2 else "ETHUSDT", i % 8)
        by_t0.setdefault(key, set()).add(
            json.dumps({k: v for k, v in body.items() if k != "replayed"}, sort_keys=True)
        )
    assert all(len(v) == 1 for v in by_t0.values())
    opens = {b["intent"]["intent_id"] for b in results if b["decision"] == "open"}
    assert set(s4.orders) == opens
    snap = service.engine.ledger.snapshot()
    assert snap.drift() == []
    # one entry per symbol at a time (concurrency limit 1): at most one open per symbol
    assert (
        len([o for o in opens if o.startswith("s3-btc")]) <= 1
        and len([o for o in opens if o.startswith("s3-eth")]) <= 1
    )


def test_concurrent_fresh_decisions_share_redis_round_trips(live: str, service: Service) -> None:
    # 48 fresh decisions from 16 threads at once: their Redis pipelines run in batches (the
    # metric shows a batch of more than one), and each request still gets its own decision,
    # signal, DECIDE event, sig:events entry and stored result.
    service.engine.redis.set(service.engine.keys.concurrency("BTCUSDT"), 1)  # all skip: no S4
    start = threading.Barrier(16)

    def call(i: int) -> dict[str, Any]:
        if i < 16:
            start.wait()
        body = {"symbol": "BTCUSDT", "sideHint": "BUY", "context": {"t0": 1730000500000 + i}}
        r = httpx.post(f"{live}/decide", json=body, headers=AUTH, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    e = service.engine
    before = e.redis.xlen(e.keys.sig_events)
    with cf.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(call, range(48)))
    assert {b["reason_detail"] for b in results} == {"RISK_BUDGET.CONCURRENCY"}
    assert all(not b["replayed"] for b in results)
    for i in range(48):
        doc = e.store.get_signal(signal_id("BTCUSDT", "BUY", 1730000500000 + i, 1))
        assert doc is not None and doc.decision["reason_detail"] == "RISK_BUDGET.CONCURRENCY"
    decides = e.store.events_by_kind("DECIDE", limit=1000)
    assert {d.detail["signal_id"] for d in decides} >= {
        signal_id("BTCUSDT", "BUY", 1730000500000 + i, 1) for i in range(48)
    }
    assert e.redis.xlen(e.keys.sig_events) - before == 48
    again = httpx.post(
        f"{live}/decide",
        json={"symbol": "BTCUSDT", "sideHint": "BUY", "context": {"t0": 1730000500007}},
        headers=AUTH,
        timeout=10,
    ).json()
    assert again["replayed"] and again["sentence"] == results[7]["sentence"]
    text = httpx.get(f"{live}/metrics").text
    count = float(_sample(text, "s3_redis_batch_pipelines_count"))
    total = float(_sample(text, "s3_redis_batch_pipelines_sum"))
    assert total >= 2 * 48 and count < total, (count, total)  # two pipelines each, some shared


def test_a_redis_stall_holds_the_decisions_not_the_loop(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # Redis stalls (a proxy holds every byte for 3 s; the client's timeout is 0.5 s): the
    # decisions waiting on it answer the documented 503 once the client gives up, while the loop
    # goes on answering /metrics at once; after the stall, decisions succeed again.
    proxy = JitterProxy(upstream=("127.0.0.1", redis_server.port)).start()
    svc = make_service(tmp_path, proxy.address, None, f"h{next(_counter)}:", redis_timeout_s=0.5)
    seed(svc)
    svc.engine.redis.set(svc.engine.keys.concurrency("BTCUSDT"), 1)  # skips: nothing to submit
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(deps=svc), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)

        def call(t0: int) -> tuple[int, str, float]:
            body = {"symbol": "BTCUSDT", "sideHint": "BUY", "context": {"t0": t0}}
            s = time.perf_counter()
            r = httpx.post(f"{url}/decide", json=body, headers=AUTH, timeout=20)
            return r.status_code, r.json().get("error", ""), time.perf_counter() - s

        assert call(1730000900000)[0] == 200  # the loop's client is connected
        proxy.stall(3.0)
        with cf.ThreadPoolExecutor(8) as pool:
            stalled = [pool.submit(call, 1730000900001 + i) for i in range(8)]
            time.sleep(0.2)
            s = time.perf_counter()
            m = httpx.get(f"{url}/metrics", timeout=20)
            metrics_s = time.perf_counter() - s
            answers = [f.result() for f in stalled]
        # not behind the stall: a blocked loop would answer >= 2.8 s later (the stall's rest);
        # 1 s leaves room for a loaded 2-core machine (0.42 s seen at load average 13)
        assert m.status_code == 200 and metrics_s < 1.0, metrics_s
        assert {(code, error) for code, error, _ in answers} == {(503, "REDIS_DOWN")}, answers
        assert max(took for _, _, took in answers) < 2.9  # the client's timeout, not the stall
        proxy.calm()
        time.sleep(3.0)  # the held bytes drain
        assert [call(1730000901000 + i)[0] for i in range(3)] == [200, 200, 200]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        svc.close()
        proxy.stop()


def _sample(exposition: str, name: str) -> str:
    return next(line.split()[-1] for line in exposition.splitlines() if line.startswith(name + " "))


def _running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@pytest.mark.parametrize(
    ("mode", "arango", "on_loop"),
    [("auto", None, True), ("auto", "http://db:8529/s3", False), ("on", None, True),
     ("off", None, False)],
)  # fmt: skip
def test_where_a_decision_runs(mode: str, arango: str | None, on_loop: bool) -> None:
    s = Settings(decide_on_loop=mode, db_arango_uri=arango)  # type: ignore[arg-type]
    assert s.decides_on_loop() is on_loop


@pytest.mark.parametrize("mode", ["on", "off"])
def test_the_decision_runs_on_the_loop_or_a_thread_and_s4_never_on_the_loop(
    tmp_path: Path,
    redis_server: RedisServer,
    s4: S4Server,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    svc = make_service(
        tmp_path, redis_server.address, s4.url, f"h{next(_counter)}:", decide_on_loop=mode
    )
    seed(svc)
    seen: dict[str, bool] = {}
    engine_type = type(svc.engine)
    decide_live = engine_type._decide_live

    def spy_decide(self: Any, *a: Any, **kw: Any) -> Any:
        seen["decide"] = _running_loop()
        return decide_live(self, *a, **kw)

    submit = Submission.submit

    def spy_submit(self: Submission) -> Any:
        seen["s4"] = _running_loop()
        return submit(self)

    monkeypatch.setattr(engine_type, "_decide_live", spy_decide)
    monkeypatch.setattr(Submission, "submit", spy_submit)
    try:
        with TestClient(create_app(deps=svc)) as c:
            body = decide(c, context={"t0": 1730000000000}).json()
    finally:
        svc.close()
    assert (body["decision"], body["submitted"]) == ("open", "accepted"), body
    assert seen == {"decide": mode == "on", "s4": False}


def test_a_decision_on_the_loop_makes_no_thread_hand_off(
    client: TestClient[Any], service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default mode (SQLite): a skip is answered without leaving the event loop, the bearer
    check included (Litestar runs a sync guard on a worker thread)."""
    hops: list[str] = []
    run_in_executor = asyncio.BaseEventLoop.run_in_executor

    def counted(self: asyncio.BaseEventLoop, executor: Any, fn: Any, *args: Any) -> Any:
        hops.append(repr(fn))
        return run_in_executor(self, executor, fn, *args)

    monkeypatch.setattr(asyncio.BaseEventLoop, "run_in_executor", counted)
    seed(service, funding_next=0.0009)  # a gate skip
    r = decide(client, context={"t0": 1730000000000})
    assert r.status_code == 200 and r.json()["reason_detail"] == "GATE.FUNDING", r.text
    assert hops == []
