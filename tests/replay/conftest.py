"""Fixtures of the replay tests: the default bundle, its one-threshold variant, the shipped tapes."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension

from s3.adapters.redis_server import RedisServer
from s3.config.bundle import load_dir
from s3.config.settings import Settings
from s3.core.decide import BundleSnapshot
from s3.engine import DecideResult
from s3.replay.tape import Event, Tape, load
from s3.service import Service
from s3.worker import Runner

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "rulesets" / "default"
TAPES = ROOT / "data" / "tapes"
REAL = TAPES / "real_sample.jsonl.gz"
SMALL = TAPES / "real_window_a_40.jsonl"
DENSE = TAPES / "real_window_c_dense.jsonl.gz"


def make_bundle_b(root: Path) -> Path:
    """rulesets/default with one threshold changed: `flow_strong` 0.5 -> 0.4 (R-023 vetoes an entry
    when the taker flow against it is at least 0.4 instead of 0.5), as rev 2."""
    b = root / "bundle_b"
    shutil.copytree(DEFAULT, b)
    text = (b / "bundle.toml").read_text()
    assert "flow_strong = { value = 0.5," in text and "\nrev = 1\n" in text
    text = text.replace("\nrev = 1\n", "\nrev = 2\n", 1).replace(
        "flow_strong = { value = 0.5,", "flow_strong = { value = 0.4,", 1
    )
    (b / "bundle.toml").write_text(text)
    return b


def snapshot_of(path: Path) -> BundleSnapshot:
    result = load_dir(path)
    assert result.snapshot is not None, [d.render(result.texts) for d in result.diagnostics]
    return result.snapshot


@pytest.fixture(scope="session")
def default_snap() -> BundleSnapshot:
    return snapshot_of(DEFAULT)


@pytest.fixture(scope="session")
def bundle_b_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle_b(tmp_path_factory.mktemp("bundles"))


@pytest.fixture(scope="session")
def b_snap(bundle_b_dir: Path) -> BundleSnapshot:
    return snapshot_of(bundle_b_dir)


@pytest.fixture(scope="session")
def real_tape() -> Tape:
    return load(REAL)


@pytest.fixture(scope="session")
def dense_tape() -> Tape:
    """data/tapes/real_window_c_dense.jsonl.gz: 94,331 real quotes, loaded once per session."""
    return load(DENSE)


@pytest.fixture
def json_snapshot(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(JSONSnapshotExtension)


# -- a live service on the session's redis-server -----------------------------------------------
HOLD_EVENTS = 3
EVENTS = 48
START = 70  # window C of the sample: BTCUSDT and ETHUSDT interleaved
_n = iter(range(10_000))


@pytest.fixture
def service(tmp_path: Path, redis_server: RedisServer) -> Iterator[Service]:
    settings = Settings(
        auth_disabled=True,
        redis_addresses=redis_server.address,
        redis_prefix=f"replay{next(_n)}:",
        sqlite_path=str(tmp_path / "s3.db"),
        cache_dir=str(tmp_path / "cache"),
        bundle_dir=str(DEFAULT),
        s4_url=None,  # intents go to ord:cmd:{SYMBOL}; reservations stay pending until released
    )
    svc = Service.from_settings(settings)
    yield svc
    svc.close()


def wait_for(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def run_live(svc: Service, source: list[Event]) -> list[DecideResult]:
    """Push the events one at a time, closing positions HOLD_EVENTS events after they opened."""
    e = svc.engine
    r, k = e.redis, e.keys
    r.set(k.kill_switch, "OFF")
    r.set(k.health, "YELLOW")
    r.set(k.funding_next("ETHUSDT"), "0.00021")
    results: list[DecideResult] = []
    runner = Runner(svc, block_ms=20, jobs=False)
    runner.on_decision = results.append
    runner.start()
    opened: list[tuple[int, str]] = []
    last_ts: dict[str, int] = {}
    try:
        for n, ev in enumerate(source[:EVENTS]):
            for i, iid in list(opened):  # S6 closes the position: its quota comes back
                if n - i >= HOLD_EVENTS:
                    assert e.ledger.release(iid, "position closed (test)").freed
                    opened.remove((i, iid))
            fields = {k2: str(v) for k2, v in ev.fields.items()}
            ts = max(e.clock_ms(), last_ts.get(ev.symbol, 0) + 1)  # one intent per event
            last_ts[ev.symbol] = ts
            fields["ts"] = str(ts)
            if n == 20:
                fields["mid"] = "not a number"  # dead-lettered live, an error in the replay
            before = len(results)
            r.xadd(k.feat_events(ev.symbol), fields)  # type: ignore[arg-type]
            if n == 20:
                wait_for(lambda: r.exists(k.feat_dead_letter) and r.xlen(k.feat_dead_letter) == 1)
                continue
            wait_for(lambda before=before: len(results) > before)
            d = results[-1].decision
            if d.intent is not None and results[-1].reservation == "pending":
                opened.append((n, d.intent.intent_id))
    finally:
        runner.stop()
    return results
