"""Bad input over HTTP: schemathesis against the OpenAPI schema `s3 serve` publishes, with the
service running as a real process (real Redis, the embedded store, the S4 stand-in).

No answer may be a 5xx, except the documented 503 (`/health` when a dependency is down, any
route when Redis or the store is unreachable: `{"error": "REDIS_DOWN" | ..., "detail": ...}`).
Every 4xx must say why (`{"error", "detail"}`). A retried `/decide`, sequential or concurrent,
must answer the first result and reach S4 once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from s3.adapters.redis_server import RedisServer, free_port
from s3.s4_standin import S4Server
from tests.chaos.conftest import SOAK
from tests.chaos.harness import EXAMPLES, REPORTS, Report
from tests.chaos.invariants import Check

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "chaos-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PREFIX = "api:"
DOCUMENTED_503 = {"REDIS_DOWN", "STORE_UNAVAILABLE", "STORE_DOWN", "DEGRADED"}

FEATURES = {
    **{k: v for k, v in EXAMPLES["BTCUSDT"].items() if k not in ("symbol", "side")},
    "ts": "now",  # the time of sending
}
STATUSES: Counter[tuple[str, int]] = Counter()
NO_NEGATIVE: list[str] = []
SERVER_ERRORS = Check("bad input", "API fuzz: no 5xx but the documented 503")
UNCLEAR_4XX = Check("bad input", "API fuzz: every 4xx names its error and why")


class Served:
    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        url: str,
        r: redis.Redis,
        s4: S4Server,
        server: RedisServer,
    ):
        self.proc, self.url, self.r, self.s4, self.server = proc, url, r, s4, server


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("api")
    started = time.monotonic()
    with RedisServer() as server, S4Server() as s4:
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("S3_")},
            "S3_REDIS_ADDRESSES": server.address,
            "S3_REDIS_PREFIX": PREFIX,
            "S3_SQLITE_PATH": str(tmp / "s3.db"),
            "S3_CACHE_DIR": str(tmp / "cache"),
            "S3_BUNDLE_DIR": str(ROOT / "rulesets" / "default"),
            "S3_S4_URL": s4.url,
            "S3_S4_TIMEOUT_S": "0.3",
            "S3_S4_RETRIES": "0",
            "S3_API_TOKEN": TOKEN,
        }
        log = open(tmp / "serve.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "s3.cli", "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"s3 serve did not come up: {(tmp / 'serve.log').read_text()}")
            time.sleep(0.1)
        r = redis.Redis(host="127.0.0.1", port=server.port, decode_responses=True)
        r.set(f"{PREFIX}prod:kill_switch", "OFF")
        r.set(f"{PREFIX}prod:health:system:state", "GREEN")
        fields = {k: str(v) for k, v in EXAMPLES["BTCUSDT"].items() if k not in ("symbol", "side")}
        stop = threading.Event()

        def s2() -> None:  # S2 keeps feat:last fresh, so requests get past the stale gate
            while True:
                fields["ts"] = str(int(time.time() * 1000))
                r.hset(f"{PREFIX}feat:last:BTCUSDT", mapping=fields)
                if stop.wait(0.5):
                    return

        feeder = threading.Thread(target=s2, daemon=True)
        feeder.start()
        try:
            yield Served(proc, url, r, s4, server)
        finally:
            stop.set()
            feeder.join(timeout=5)
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait(timeout=5)
            log.close()
            r.close()
            total = sum(STATUSES.values())
            by_status = Counter[int]()
            for (_, status), n in STATUSES.items():
                by_status[status] += n
            report = Report(
                "API fuzz (schemathesis on s3 serve)",
                time.monotonic() - started,
                checks=[SERVER_ERRORS, UNCLEAR_4XX],
            )
            report.summary = (
                f"requests {total}; by status "
                + ", ".join(f"{s} {n}" for s, n in sorted(by_status.items()))
                + f"; s3 serve stopped with exit code {code}"
            )
            if NO_NEGATIVE:
                report.notes.append("no invalid input exists for: " + ", ".join(NO_NEGATIVE))
            REPORTS.append(report)


def test_retried_decide_returns_the_first_result(served: Served) -> None:
    """Eight copies of one request at once, then eight more one by one: one decision, every
    answer the first one, one order at S4."""
    body = {"symbol": "BTCUSDT", "sideHint": "BUY", "context": {"t0": int(time.time() * 1000)}}
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def post() -> None:
        r = httpx.post(served.url + "/decide", json=body, headers=AUTH, timeout=15)
        with lock:
            answers.append(r)

    threads = [threading.Thread(target=post) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for _ in range(8):
        post()
    c = Check("idempotency", "HTTP: a retried /decide returns the first result, one order")
    c.checked = len(answers)
    ok = [a.json() for a in answers if a.status_code == 200]
    busy = [a for a in answers if a.status_code == 422 and a.json().get("error") == "IN_PROGRESS"]
    other = [a for a in answers if a.status_code != 200 and a not in busy]
    if other:
        c.fail(f"unexpected answers: {[(a.status_code, a.text[:120]) for a in other]}")
    first = [a for a in ok if not a["replayed"]]
    if len(first) != 1:
        c.fail(f"{len(first)} answers were fresh decisions, expected exactly 1")
    keys = ("decision", "reason_detail", "intent", "submitted", "reservation", "config_rev")
    if any({k: a[k] for k in keys} != {k: ok[0][k] for k in keys} for a in ok):
        c.fail("the answers differ: " + str([{k: a[k] for k in keys} for a in ok][:3]))
    intent = (ok[0].get("intent") or {}).get("intent_id") if ok else None
    if ok and ok[0]["decision"] == "open":
        orders = [k for k in served.s4.orders if k == intent]
        if len(orders) != 1:
            c.fail(f"{len(orders)} orders at S4 for {intent}")
    r = Report("HTTP retries of one /decide", checks=[c])
    r.summary = (
        f"{len(answers)} requests: {len(ok)} answered (1 fresh, {len(ok) - len(first)} replayed), "
        f"{len(busy)} told IN_PROGRESS; decision {ok[0]['decision'] if ok else None}"
    )
    REPORTS.append(r)
    assert c.ok, c.problems


EXAMPLES_PER_OPERATION = 1_000 if SOAK else 60
JSON_FLOATS = st.floats(allow_nan=False, allow_infinity=False)  # what JSON can carry
BENT_FEATURES = st.fixed_dictionaries(
    {
        **{k: st.just(v) for k, v in FEATURES.items()},
        "mid": st.one_of(st.just(FEATURES["mid"]), JSON_FLOATS, st.integers(), st.text(max_size=5)),
        "spread_bps": st.one_of(st.just(FEATURES["spread_bps"]), JSON_FLOATS, st.integers(-5, 10)),
        "atr": st.one_of(st.just(FEATURES["atr"]), JSON_FLOATS, st.none()),
        "regime": st.one_of(st.just("range"), st.text(max_size=8), st.integers()),
    },
    optional={
        "extra": st.one_of(
            st.integers(),
            st.text(),
            st.lists(st.integers(), max_size=3),
            JSON_FLOATS,
            st.recursive(st.none(), lambda x: st.lists(x, max_size=1), max_leaves=80),
        ),
    },
)
T0 = st.one_of(
    st.integers(),
    st.integers(1_700_000_000_000, 1_800_000_000_000),
    st.sampled_from([0, -1, 2**53, 2**53 + 1, 2**63]),
)


@st.composite
def decide_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A real `/decide` request, then some of its parts bent."""
    body: dict[str, Any] = {
        "symbol": draw(st.sampled_from(["BTCUSDT", "ETHUSDT", "btcusdt"])),
        "sideHint": draw(st.sampled_from(["BUY", "SELL", "buy", None])),
    }
    if draw(st.booleans()):
        body["context"] = {"t0": draw(T0), "trigger": draw(st.sampled_from(["manual", "stream"]))}
    choice = draw(st.integers(0, 3))
    if choice == 1:
        body["features"] = FEATURES
    elif choice == 2:
        body["features"] = draw(BENT_FEATURES)
    elif choice == 3:
        body["features"] = draw(
            st.dictionaries(st.text(max_size=12), st.integers() | st.text(max_size=8))
        )
    for flag in ("dry_run", "trace"):
        if draw(st.integers(0, 3)) == 0:
            body[flag] = True
    return body


STEER = st.none() | decide_bodies()


def test_api_fuzz(served: Served) -> None:
    """Every operation of the served schema, with valid (positive) and invalid (negative) data.
    (schemathesis' pytest loader cannot take a fixture under pytest 9, so the strategies are
    driven by hypothesis here directly.)"""
    api = schemathesis.openapi.from_url(served.url + "/schema/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]  # type: ignore[union-attr]
    assert operations, "the served schema has no operations"
    modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    for operation in operations:
        for mode in modes:
            strategy = operation.as_strategy(generation_mode=mode)

            @given(case=strategy, steer=STEER)
            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def fuzz(case: Any, steer: dict[str, Any] | None) -> None:
                if steer is not None and case.operation.path == "/decide":
                    # Random symbols stop at 422 and random features at 400: half the bodies are
                    # a real request with one part or another bent, so the fuzz reaches the
                    # decision, the store and S4.
                    case.body = steer
                    features = steer.get("features")
                    if isinstance(features, dict) and features.get("ts") == "now":
                        steer["features"] = {**features, "ts": int(time.time() * 1000)}
                call(case, served)

            try:
                fuzz()
            except Unsatisfiable:  # nothing to make invalid (no parameters, no body)
                if mode is not GenerationMode.NEGATIVE:
                    raise
                NO_NEGATIVE.append(operation.label)


def call(case: Any, served: Served) -> None:
    headers = AUTH if case.operation.path != "/health" else {}
    response = case.call(base_url=served.url, headers=headers, timeout=15)
    status = response.status_code
    where = f"{case.operation.method.upper()} {case.operation.path}"
    STATUSES[(where, status)] += 1
    SERVER_ERRORS.checked += 1
    body: Any = None
    try:
        body = response.json()
    except ValueError:
        body = None
    if status >= 500:
        error = body.get("error") if isinstance(body, dict) else None
        status_word = body.get("status") if isinstance(body, dict) else None
        documented = status == 503 and (error in DOCUMENTED_503 or status_word == "DEGRADED")
        if not documented:
            sent = repr(case.body)[:300]
            SERVER_ERRORS.fail(f"{where} {sent} -> {status} {response.text[:200]}")
            raise AssertionError(f"{where} {sent} answered {status}: {response.text[:300]}")
    if 400 <= status < 500:
        UNCLEAR_4XX.checked += 1
        if not (isinstance(body, dict) and body.get("error") and body.get("detail")):
            UNCLEAR_4XX.fail(f"{where} -> {status} {response.text[:200]}")
            raise AssertionError(
                f"{where} answered {status} without a reason: {response.text[:300]}"
            )


def test_redis_down_is_the_documented_503(served: Served) -> None:
    """Redis gone: `/decide` answers 503 REDIS_DOWN and `/health` 503 DEGRADED, nothing else;
    Redis back: both recover without a restart of the service."""
    c = Check("bad input", "Redis down: only the documented 503, then recovery")
    body = {"symbol": "BTCUSDT", "sideHint": "SELL"}
    served.server.stop(kill=True)
    try:
        for _ in range(3):
            d = httpx.post(served.url + "/decide", json=body, headers=AUTH, timeout=15)
            h = httpx.get(served.url + "/health", timeout=15)
            c.checked += 2
            if d.status_code != 503 or d.json().get("error") not in DOCUMENTED_503:
                c.fail(f"/decide with Redis down: {d.status_code} {d.text[:200]}")
            if h.status_code != 503 or h.json().get("status") != "DEGRADED":
                c.fail(f"/health with Redis down: {h.status_code} {h.text[:200]}")
    finally:
        served.server.start()
    deadline = time.monotonic() + 10
    while httpx.get(served.url + "/health", timeout=15).status_code != 200:
        if time.monotonic() > deadline:
            c.fail("/health did not recover within 10 s of Redis coming back")
            break
        time.sleep(0.2)
    REPORTS.append(Report("Redis down under HTTP", checks=[c], summary=f"{c.checked} answers"))
    assert c.ok, c.problems
