"""The Store contract (spec §5, Part B7, B10): one suite, run on every reachable backend by the
`store` fixture (SQLite always; ArangoDB when S3_TEST_ARANGO_URL is set).

Time ranges are half-open: t_from is inclusive, t_to exclusive; results are ordered by
(time, id).
"""

from __future__ import annotations

import itertools
import math
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import closing
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3.adapters import store_docs
from s3.adapters.arango_store import INDEXES, ArangoStore, ArangoTarget
from s3.adapters.sqlite_store import SqliteStore
from s3.adapters.store_docs import event_id, signal_from_decision, signal_id
from s3.config.bundle import checksum_files
from s3.core.types import Decision, OrderIntent
from s3.errors import DependencyUnavailable
from s3.ports import EVENT_KINDS, ActiveDoc, BundleConflictError, EventDoc, SignalDoc, Store
from tests.s3.adapters.conftest import StoreFactory

T0 = 1_730_000_000_000


def sig(
    symbol: str = "BTCUSDT", t0: int = T0, side: str | None = "BUY", rev: int = 7, **over: Any
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "signal_id": signal_id(symbol, side, t0, rev),
        "t0": t0,
        "symbol": symbol,
        "features": {"spread_bps": 1.25, "mid": 60000.1, "levels": [1, 2.5, None], "ok": True},
        "decision": {
            "action": "open",
            "size_mult": 1.2,
            "tp_mult": 1.0,
            "sl_mult": 0.9,
            "reason": "OK",
            "model_p": 0.91,
            "rules_fired": ["R-001"],
        },
        "config_rev": rev,
        "created_at": t0 + 5,
    }
    return doc | over


def evt(
    kind: str = "DECIDE", ts: int = T0, symbol: str | None = "BTCUSDT", **over: Any
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_id": event_id(kind, f"{symbol}-{ts}"),
        "kind": kind,
        "symbol": symbol,
        "detail": {"intent_id": "s3-btc-1", "rules": ["R-001"]},
        "ts": ts,
    }
    return doc | over


def bundle(
    bundle_id: str = "core", rev: int = 1, text: str = "rule", **over: Any
) -> dict[str, Any]:
    files = {"bundle.toml": f'bundle_id = "{bundle_id}"\nrev = {rev}\n', "rules/entry.rule": text}
    doc: dict[str, Any] = {
        "bundle_id": bundle_id,
        "rev": rev,
        "checksum": checksum_files(files),
        "files": files,
        "description": "test bundle",
        "published_at": T0,
        "published_by": "ops",
    }
    return doc | over


def ids(docs: list[SignalDoc] | list[EventDoc]) -> list[str]:
    return [d.signal_id if isinstance(d, SignalDoc) else d.event_id for d in docs]


# -- signals ---------------------------------------------------------------------------------------


def test_a_signal_round_trips(store: Store) -> None:
    doc = sig()
    assert store.put_signal(doc) is True
    got = store.get_signal(doc["signal_id"])
    assert got == SignalDoc(**doc)
    assert got.signal_id == "SIG-1730000000000-BTC-BUY-r7"
    assert store.get_signal("SIG-0-NOPE") is None


def test_put_signal_is_idempotent_and_keeps_the_first(store: Store) -> None:
    first = sig()
    assert store.put_signal(first) is True
    assert store.put_signal(sig(features={"spread_bps": 9.0}, created_at=1)) is False
    assert store.put_signal(SignalDoc(**first)) is False
    assert store.get_signal(first["signal_id"]) == SignalDoc(**first)
    assert len(store.signals_by_symbol("BTCUSDT")) == 1


def test_ids_outside_the_key_alphabet_round_trip(store: Store) -> None:
    # ArangoDB keys allow a small alphabet; the adapter encodes ids one to one.
    for i, odd in enumerate(["SIG:1/x+y%z", "SIG:1/x+y%25z", "a'b\"c(d)~{}"]):
        assert store.put_signal(sig(signal_id=odd, t0=T0 + i)) is True
        assert store.put_signal(sig(signal_id=odd, t0=T0 + i)) is False
    assert ids(store.signals_between()) == ["SIG:1/x+y%z", "SIG:1/x+y%25z", "a'b\"c(d)~{}"]
    assert store.get_signal("SIG:1/x+y%25z").t0 == T0 + 1  # type: ignore[union-attr]


def test_signals_by_symbol_range_is_half_open_ordered_and_limited(store: Store) -> None:
    for t in (T0 + 30, T0 + 10, T0, T0 + 20, T0 + 40):  # written out of order
        store.put_signal(sig(t0=t))
    store.put_signal(sig(t0=T0 + 20, side="SELL"))  # same t0: ordered by signal_id
    store.put_signal(sig(symbol="ETHUSDT", t0=T0 + 20))

    def t0s(docs: list[SignalDoc]) -> list[int]:
        return [d.t0 - T0 for d in docs]

    assert t0s(store.signals_by_symbol("BTCUSDT")) == [0, 10, 20, 20, 30, 40]
    assert t0s(store.signals_by_symbol("BTCUSDT", T0 + 10, T0 + 30)) == [10, 20, 20]
    assert t0s(store.signals_by_symbol("BTCUSDT", T0 + 11)) == [20, 20, 30, 40]
    assert t0s(store.signals_by_symbol("BTCUSDT", t_to=T0 + 10)) == [0]
    assert t0s(store.signals_by_symbol("BTCUSDT", limit=2)) == [0, 10]
    assert t0s(store.signals_by_symbol("BTCUSDT", limit=3, newest_first=True)) == [40, 30, 20]
    assert [d.signal_id for d in store.signals_by_symbol("BTCUSDT", T0 + 20, T0 + 21)] == [
        "SIG-1730000000020-BTC-BUY-r7",
        "SIG-1730000000020-BTC-SELL-r7",
    ]
    assert t0s(store.signals_by_symbol("ETHUSDT")) == [20]
    assert store.signals_by_symbol("SOLUSDT") == []
    assert store.signals_by_symbol("BTCUSDT", T0 + 30, T0 + 30) == []


def test_signals_between_spans_symbols(store: Store) -> None:
    store.put_signal(sig(symbol="ETHUSDT", t0=T0 + 2))
    store.put_signal(sig(symbol="BTCUSDT", t0=T0 + 1))
    store.put_signal(sig(symbol="SOLUSDT", t0=T0 + 3))
    assert [d.symbol for d in store.signals_between(T0, T0 + 3)] == ["BTCUSDT", "ETHUSDT"]
    assert [d.symbol for d in store.signals_between(newest_first=True, limit=1)] == ["SOLUSDT"]


def test_ties_in_time_are_ordered_by_bytes_and_page_alike(store: Store) -> None:
    # ICU collation (AQL) would give _x, 1, a, B; SQLite and the port say bytes: 1, B, _x, a
    odd = ["SIG-a", "SIG-_x", "SIG-B", "SIG-1"]
    for i, sid in enumerate(odd):
        store.put_signal(sig(signal_id=sid, t0=T0 + 1))
        store.put_event(evt(event_id=f"EVT-{odd[i][4:]}", ts=T0 + 1))
    store.put_signal(sig(signal_id="SIG-0-first", t0=T0))
    store.put_signal(sig(signal_id="SIG-9-last", t0=T0 + 2))
    in_bytes = ["SIG-1", "SIG-B", "SIG-_x", "SIG-a"]
    assert ids(store.signals_between(T0 + 1, T0 + 2)) == in_bytes
    assert ids(store.signals_between(limit=3)) == ["SIG-0-first", "SIG-1", "SIG-B"]
    assert ids(store.signals_between(limit=3, newest_first=True)) == [
        "SIG-9-last",
        "SIG-a",
        "SIG-_x",
    ]
    assert ids(store.signals_by_symbol("BTCUSDT", T0 + 1, limit=2)) == ["SIG-1", "SIG-B"]
    assert ids(store.events_by_kind("DECIDE", limit=3)) == ["EVT-1", "EVT-B", "EVT-_x"]
    assert ids(store.events_between(newest_first=True, limit=1)) == ["EVT-a"]
    for b in ("beta", "Alpha", "9z", "z_1", "z1"):
        store.put_bundle(bundle(b))
    assert [b.bundle_id for b in store.list_bundles()] == ["9z", "Alpha", "beta", "z1", "z_1"]


def test_signal_ids_are_one_per_symbol_side_t0_and_rev() -> None:
    assert signal_id("BTCUSDT", "BUY", T0, 7) == "SIG-1730000000000-BTC-BUY-r7"
    assert signal_id("BTCUSDT", None, T0, 7) == "SIG-1730000000000-BTC-r7"
    assert signal_id("BTCUSDC", "SELL", T0, 0) == "SIG-1730000000000-_BTCUSDC-SELL-r0"
    variants = {
        signal_id(s, side, t, r)
        for s in ("BTCUSDT", "BTC", "ETHUSDT")
        for side in ("BUY", "SELL", None)
        for t in (T0, T0 + 1)
        for r in (1, 2)
    }
    assert len(variants) == 3 * 3 * 2 * 2


def test_a_decision_becomes_a_signal(store: Store) -> None:
    intent = OrderIntent(
        intent_id="s3-btc-1",
        market="FUT",
        symbol="BTCUSDT",
        side="BUY",
        qty=Decimal("0.007"),
        exec_policy="Maker",
        tp_px=Decimal("60600.0"),
        sl_px=Decimal("59800.0"),
        entry_px=Decimal("60000.0"),
        notional_usdt=Decimal("420.0"),
        margin_usdt=Decimal("21.0"),
        leverage=20,
        maker_wait_ms=800,
    )
    decision = Decision(
        decision="open",
        reason="OK",
        reason_detail="OK",
        sentence="all gates passed",
        symbol="BTCUSDT",
        side="BUY",
        config_rev=7,
        bundle_id="core",
        t0_ms=T0,
        now_ms=T0 + 3,
        gates=(),
        model_p=0.9,
        size_mult=1.05,
        intent=intent,
    )
    doc = signal_from_decision(decision, {"spread_bps": 1.0}, created_at=T0 + 4)
    assert store.put_signal(doc) is True
    got = store.get_signal("SIG-1730000000000-BTC-BUY-r7")
    assert got is not None
    assert (got.decision["action"], got.decision["reason"], got.decision["size_mult"]) == (
        "open",
        "OK",
        1.05,
    )
    assert got.decision["record"]["intent"]["qty"] == "0.007"  # exact, as text
    assert (
        got.decision["record"]["decision"] == "open"
    )  # the whole Decision, as the engine stores it
    assert got.config_rev == 7


# -- strategy events -------------------------------------------------------------------------------


def test_events_round_trip_idempotently(store: Store) -> None:
    doc = evt()
    assert store.put_event(doc) is True
    assert store.put_event(evt(detail={"other": 1})) is False
    assert store.get_event(doc["event_id"]) == EventDoc(**doc)
    assert store.put_event(evt("CONFIG_APPLIED", symbol=None, detail={"rev": 2})) is True
    assert store.put_event(evt("CONFIG_REJECTED", ts=T0 + 1, symbol="")) is True
    assert [(e.kind, e.symbol) for e in store.events_between(T0, T0 + 2)] == [
        ("CONFIG_APPLIED", None),  # same ts as DECIDE: ordered by event_id
        ("DECIDE", "BTCUSDT"),
        ("CONFIG_REJECTED", None),
    ]
    assert store.get_event("EVT-0-NOPE") is None


def test_events_by_kind_and_time(store: Store) -> None:
    for t in (T0 + 20, T0, T0 + 10):
        store.put_event(evt("DECIDE", ts=t))
        store.put_event(evt("ENTRY_SUBMITTED", ts=t + 1))
    store.put_event(evt("DECIDE", ts=T0 + 10, symbol="ETHUSDT"))

    def ts(docs: list[EventDoc]) -> list[int]:
        return [d.ts - T0 for d in docs]

    assert ts(store.events_by_kind("DECIDE")) == [0, 10, 10, 20]
    assert ts(store.events_by_kind("DECIDE", T0 + 10, T0 + 20)) == [10, 10]
    assert ts(store.events_by_kind("DECIDE", limit=1, newest_first=True)) == [20]
    assert ts(store.events_by_kind("ENTRY_SUBMITTED", t_to=T0 + 11)) == [1]
    assert store.events_by_kind("ENTRY_REJECTED") == []
    assert ts(store.events_between(T0 + 10, T0 + 12)) == [10, 10, 11]
    assert ts(store.events_between(T0 + 10, T0 + 12, symbol="ETHUSDT")) == [10]


def test_every_engine_kind_is_accepted_and_others_are_refused(store: Store) -> None:
    for i, kind in enumerate(EVENT_KINDS):
        assert store.put_event(evt(kind, ts=T0 + i)) is True
    assert store.put_event(evt("OPS_NOTE", ts=T0)) is True  # any upper-case kind
    for bad in ("decide", "D", "DECIDE-1", "DECIDE 2", "1DECIDE", "A" * 42):
        with pytest.raises(ValueError) as err:
            store.put_event(evt(bad))
        assert str(err.value) == (
            "strategy_events.kind: expected an upper-case kind like DECIDE "
            f"(^[A-Z][A-Z_]{{1,40}}$), found {bad!r}"
        )
    assert len(store.events_between(limit=100)) == len(EVENT_KINDS) + 1


# -- config bundles and the active pointer ---------------------------------------------------------


def test_bundles_put_get_list(store: Store) -> None:
    b1, b2, other = bundle(rev=1), bundle(rev=2, text="rule v2"), bundle("alt", rev=5)
    for b in (b2, other, b1):
        assert store.put_bundle(b) is True
    assert store.put_bundle(b1) is False
    got = store.get_bundle("core", 1)
    assert got is not None
    assert (got.checksum, got.files, got.published_by) == (b1["checksum"], b1["files"], "ops")
    assert store.get_bundle("core", 3) is None
    assert [(b.bundle_id, b.rev) for b in store.list_bundles()] == [
        ("alt", 5),
        ("core", 1),
        ("core", 2),
    ]
    assert [b.rev for b in store.list_bundles("core")] == [1, 2]
    assert store.list_bundles("none") == []


def test_a_revision_is_immutable(store: Store) -> None:
    b = bundle(rev=3)
    store.put_bundle(b)
    changed = bundle(rev=3, text="rule changed")
    with pytest.raises(BundleConflictError) as err:
        store.put_bundle(changed)
    assert str(err.value) == (
        f"config_bundles.checksum: core rev 3 is stored with checksum {b['checksum']}, "
        f"not {changed['checksum']}; a revision is immutable, publish a new rev"
    )
    assert store.get_bundle("core", 3).files == b["files"]  # type: ignore[union-attr]


def test_the_active_pointer(store: Store) -> None:
    assert store.get_active() is None
    b1, b2 = bundle(rev=1), bundle(rev=2, text="v2")
    store.put_bundle(b1)
    store.put_bundle(b2)
    with pytest.raises(ValueError) as err:
        store.set_active("core", 9, b1["checksum"], "typo")
    assert str(err.value) == "config_active: core rev 9 is not in config_bundles"
    with pytest.raises(ValueError) as err:
        store.set_active("core", 2, b1["checksum"], "wrong checksum")
    assert str(err.value) == (
        f"config_active.checksum: core rev 2 is stored with checksum {b2['checksum']}, "
        f"not {b1['checksum']}"
    )
    assert store.get_active() is None  # refusals write nothing

    before = time.time_ns() // 1_000_000
    a1 = store.set_active("core", 1, b1["checksum"], "bootstrap")
    assert before <= a1.activated_at <= time.time_ns() // 1_000_000
    assert store.get_active() == a1
    a2 = store.set_active("core", 2, b2["checksum"], "hot reload", activated_at=T0)
    assert (
        store.get_active()
        == a2
        == ActiveDoc(
            bundle_id="core", rev=2, checksum=b2["checksum"], activated_at=T0, reason="hot reload"
        )
    )


# -- bad input: a clear ValueError naming the field, nothing written -------------------------------

BAD_SIGNALS: list[tuple[Callable[[dict[str, Any]], Any], str]] = [
    (lambda d: d.pop("signal_id"), "signals.signal_id: missing"),
    (
        lambda d: d["features"].update(spread_bps=math.nan),
        "signals.features.spread_bps: nan is not a JSON number",
    ),
    (
        lambda d: d["features"].update(levels=[1, {"x": math.inf}]),
        "signals.features.levels[1].x: inf is not a JSON number",
    ),
    (
        lambda d: d["decision"].update(qty=Decimal("0.1")),
        "signals.decision.qty: a Decimal is not a JSON value",
    ),
    (lambda d: d["features"].update({1: 2}), "signals.features: key 1 is not a string"),
    (
        lambda d: d.update(t0="1730000000000"),
        "signals.t0: expected an integer in 0..2**53, found '1730000000000'",
    ),
    (lambda d: d["decision"].pop("action"), "signals.decision.action: missing"),
    (
        lambda d: d["decision"].update(size_mult="1.2"),
        "signals.decision.size_mult: expected a finite number, found '1.2'",
    ),
    (
        lambda d: d.update(note="x"),
        "signals.note: unknown field (known: signal_id, t0, symbol, features, decision, "
        "config_rev, created_at)",
    ),
    (
        lambda d: d.update(signal_id="SIG 1"),
        "signals.signal_id: expected 1-80 printable ASCII characters without spaces, found 'SIG 1'",
    ),
]


@pytest.mark.parametrize(("spoil", "message"), BAD_SIGNALS, ids=[m for _, m in BAD_SIGNALS])
def test_a_bad_signal_is_refused_naming_the_field(
    store: Store, spoil: Callable[[dict[str, Any]], Any], message: str
) -> None:
    doc = sig()
    spoil(doc)
    with pytest.raises(ValueError) as err:
        store.put_signal(doc)
    assert str(err.value) == message
    assert store.signals_between() == []


def test_bad_events_bundles_and_queries_are_refused(store: Store) -> None:
    cases: list[tuple[Callable[[], Any], str]] = [
        (
            lambda: store.put_event(evt(ts=-1)),
            "strategy_events.ts: expected an integer in 0..2**53, found -1",
        ),
        (
            lambda: store.put_event(evt(detail=[1])),
            "strategy_events.detail: expected an object, found list",
        ),
        (
            lambda: store.put_bundle(bundle(files={"../escape.rule": "x"})),
            "config_bundles.files: '../escape.rule' is not a relative path inside the bundle",
        ),
        (
            lambda: store.put_bundle(bundle(files={})),
            "config_bundles.files: expected a non-empty object of path -> text",
        ),
        (
            lambda: store.put_bundle(bundle(checksum="")),
            "config_bundles.checksum: expected text, found an empty string",
        ),
        (
            lambda: store.signals_by_symbol("BTCUSDT", limit=0),
            "signals_by_symbol: limit must be an integer in 1..10000, found 0",
        ),
        (
            lambda: store.events_by_kind("DECIDE", t_from=-5),
            "events_by_kind: t_from: expected an integer in 0..2**53, found -5",
        ),
    ]
    for call, message in cases:
        with pytest.raises(ValueError) as err:
            call()
        assert str(err.value) == message
    assert store.events_between() == []
    assert store.list_bundles() == []


# -- concurrency -----------------------------------------------------------------------------------


def test_concurrent_writers_leave_no_duplicates(store: Store, store_factory: StoreFactory) -> None:
    # Half the threads share one store, half open their own (another connection / client).
    threads, shared, own = 8, 40, 20
    wrote = [0] * threads
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)
    stores = [store if i % 2 == 0 else store_factory() for i in range(threads)]

    def work(i: int) -> None:
        try:
            barrier.wait()
            for n in range(shared):
                wrote[i] += stores[i].put_signal(sig(t0=T0 + n))
                wrote[i] += stores[i].put_event(evt(ts=T0 + n))
            for n in range(own):
                wrote[i] += stores[i].put_signal(sig(symbol="ETHUSDT", t0=T0 + 1000 * i + n))
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert errors == []
    assert sum(wrote) == 2 * shared + threads * own
    assert len(store.signals_by_symbol("BTCUSDT", limit=1000)) == shared
    assert len(store.signals_by_symbol("ETHUSDT", limit=1000)) == threads * own
    assert len(store.events_by_kind("DECIDE", limit=1000)) == shared


def test_racing_publishers_of_one_revision(store: Store, store_factory: StoreFactory) -> None:
    same, other = bundle(rev=4), bundle(rev=4, text="someone else's rule")
    outcomes: list[object] = []
    barrier = threading.Barrier(6)

    def publish(i: int) -> None:
        s = store if i < 3 else store_factory()
        barrier.wait()
        try:
            outcomes.append(s.put_bundle(same if i % 2 == 0 else other))
        except BundleConflictError:
            outcomes.append("conflict")

    pool = [threading.Thread(target=publish, args=(i,)) for i in range(6)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert outcomes.count(True) == 1
    assert outcomes.count(False) == 2 and outcomes.count("conflict") == 3
    assert len(store.list_bundles()) == 1


_PROCESS_SCRIPT = """
import sys, time
from pathlib import Path
from s3.adapters.sqlite_store import SqliteStore

path, me, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
store = SqliteStore(path)
while not go.exists():
    time.sleep(0.005)
wrote = 0
for i in range(n):
    for sid, t0 in ((f"SIG-SHARED-{i}", i), (f"SIG-{me}-{i}", 10_000 + i)):
        wrote += store.put_signal({
            "signal_id": sid, "t0": t0, "symbol": "BTCUSDT", "features": {"p": me},
            "decision": {"action": "skip", "size_mult": 1.0, "tp_mult": 1.0, "sl_mult": 1.0,
                         "reason": "GATE", "model_p": None},
            "config_rev": 1, "created_at": t0,
        })
store.close()
print(wrote)
"""


def test_sqlite_two_processes_share_one_file(tmp_path: Path) -> None:
    path, go, n = tmp_path / "shared.db", tmp_path / "go", 150
    SqliteStore(path).close()
    root = Path(__file__).resolve().parents[3]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PROCESS_SCRIPT, str(path), me, str(n), str(go)],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for me in ("A", "B")
    ]
    go.touch()
    results = [p.communicate(timeout=60) for p in procs]
    assert [(p.returncode, err) for p, (_, err) in zip(procs, results, strict=True)] == [
        (0, ""),
        (0, ""),
    ]
    assert sum(int(out) for out, _ in results) == 3 * n
    with SqliteStore(path) as store:
        rows = store.signals_by_symbol("BTCUSDT", limit=10_000)
        assert len(rows) == len({r.signal_id for r in rows}) == 3 * n
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def _big_signals(store: SqliteStore, n: int, start: int = 0) -> None:
    blob = {"text": "x" * 3000}  # about one 4 KiB page per signal
    for i in range(start, start + n):
        assert store.put_signal(sig(t0=T0 + i, features=blob))


def test_sqlite_commits_leave_checkpoints_to_the_background(tmp_path: Path) -> None:
    # 1,100 pages: past SQLite's default autocheckpoint (1,000), which would have checkpointed
    # in some commit and let the WAL start over
    with SqliteStore(tmp_path / "c.db", checkpoint_every_s=3600) as store:
        _big_signals(store, 1_100)
        ckpt = store._checkpointer
        assert ckpt is not None
        busy, frames, copied = ckpt.round()
        assert busy == 0 and frames == copied >= 1_100  # every frame still in the WAL till now


def test_the_background_checkpointer_keeps_up_and_stops_with_the_store(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "c.db", checkpoint_every_s=0.02)
    ckpt = store._checkpointer
    assert ckpt is not None and ckpt.thread.is_alive()
    _big_signals(store, 50)
    with closing(sqlite3.connect(tmp_path / "c.db")) as probe:
        deadline = time.monotonic() + 10
        while True:  # another connection's PASSIVE checkpoint finds nothing left to copy
            _, frames, copied = probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if frames >= 50 and frames == copied:
                break
            assert time.monotonic() < deadline, (frames, copied)
            time.sleep(0.02)
    store.close()
    assert not ckpt.thread.is_alive()


def test_a_long_wal_starts_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("s3.adapters.sqlite_store.RESTART_WAL_PAGES", 40)
    with SqliteStore(tmp_path / "c.db", checkpoint_every_s=3600) as store:
        ckpt = store._checkpointer
        assert ckpt is not None
        _big_signals(store, 60)
        before = ckpt.round()[1]
        assert before >= 60
        _big_signals(store, 3, start=60)  # the first write after a whole checkpoint restarts
        assert 0 < ckpt.round()[1] < min(before, 40)  # the WAL holds the new frames only
        assert len(store.signals_by_symbol("BTCUSDT", limit=100)) == 63


# -- schema, connections, health -------------------------------------------------------------------


def test_the_schema_is_created_idempotently(store: Store, store_factory: StoreFactory) -> None:
    store.put_signal(sig())
    again = store_factory()  # opening again re-runs the schema step
    if isinstance(again, ArangoStore):
        again.ensure_schema()
        expected = {(c, n, fields, u) for c, n, fields, u in INDEXES}
        found = {
            (c, i["name"], tuple(i["fields"]), i["unique"])
            for c in ("signals", "strategy_events", "config_bundles")
            for i in cast(list[dict[str, Any]], again.db.collection(c).indexes())
            if i["type"] == "persistent"
        }
        assert found == expected
    else:
        assert isinstance(again, SqliteStore)
        with closing(sqlite3.connect(again.path)) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()
        names = {name for (name,) in rows}
        assert {
            "signals_t0_symbol",
            "signals_symbol_t0",
            "strategy_events_ts",
            "strategy_events_kind_ts",
        } <= names
    assert again.get_signal(sig()["signal_id"]) is not None
    again.ping()


def test_ping_and_close(store: Store) -> None:
    store.ping()
    store.close()
    if isinstance(store, SqliteStore):
        with pytest.raises(DependencyUnavailable) as err:
            store.ping()
        assert err.value.detail == f"sqlite {store.path}: store is closed"


def test_sqlite_urls_and_unusable_files(tmp_path: Path) -> None:
    with SqliteStore.from_url(f"sqlite:///{tmp_path}/sub/dir/s3.db") as s:
        assert s.path == f"{tmp_path}/sub/dir/s3.db"
        s.ping()
    with SqliteStore.from_url("sqlite:///:memory:") as s:
        assert s.put_signal(sig()) is True
    for bad in ("sqlite:///", "postgres://x/y", "sqlite://relative.db"):
        with pytest.raises(ValueError) as err:
            SqliteStore.from_url(bad)
        assert str(err.value) == f"store url: expected sqlite:///<path>, found {bad!r}"
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(DependencyUnavailable) as unavailable:
        SqliteStore(junk)
    assert unavailable.value.code == "STORE_UNAVAILABLE"


def test_arango_urls_and_an_unreachable_server() -> None:
    t = ArangoTarget.parse("https://ops:p%40ss@db.example:8530/s3prod")
    assert (t.hosts, t.database, t.username, t.password) == (
        "https://db.example:8530",
        "s3prod",
        "ops",
        "p@ss",
    )
    assert "p@ss" not in repr(t)
    t = ArangoTarget.parse("http://db.example", username="u", password="")
    assert (t.hosts, t.database, t.username, t.password) == (
        "http://db.example:8529",
        "s3",
        "u",
        "",
    )
    with pytest.raises(ValueError) as err:
        ArangoTarget.parse("tcp://root:secret@db.example:8529/s3")
    assert str(err.value) == (
        "arango url: expected http[s]://host:port/db, found 'tcp://db.example:8529/s3'"
    )
    with pytest.raises(ValueError) as err:
        ArangoStore.from_env({})
    assert str(err.value) == "S3_DB_ARANGO_URI is not set"
    with pytest.raises(DependencyUnavailable) as down:
        ArangoStore.from_url("http://root:secret@127.0.0.1:1/s3", timeout_s=1)
    assert down.value.code == "STORE_UNAVAILABLE"
    assert "secret" not in str(down.value)


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.text(max_size=5)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(min_value=-(2**54), max_value=2**54)
    | st.decimals(allow_nan=False, places=2, max_value=10, min_value=-10),
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=3) | st.integers(0, 3), children, max_size=4)
    ),
    max_leaves=20,
)


def _walk_accepts(value: Any) -> bool:
    """What the careful walk alone (not `_json`, which asks the fast check first) says."""
    try:
        store_docs._json_walk(value, "x", 0)
    except ValueError:
        return False
    return True


def _nested(depth: int, leaf: Any) -> Any:
    v = leaf
    for k in range(depth):
        v = {"k": v} if k % 2 else [v]
    return v


@settings(max_examples=400, deadline=None)
@given(value=_json_values)
def test_the_fast_json_check_agrees_with_the_careful_walk(value: Any) -> None:
    """`_json_ok` (every write) only says yes where the walk that names a bad value agrees."""
    careful = _walk_accepts(value)
    # exact types only in these values: the fast check never has to defer, so they agree
    assert store_docs._json_ok(value, 0) == careful


@pytest.mark.parametrize(
    "value",
    [
        {"x": math.nan}, {"x": math.inf}, [math.nan], -math.inf, {"x": [1.5, -math.inf]},
        {"x": 2**53 + 1}, {"x": -(2**53) - 1}, [2**54], {"x": {"y": 2**60}}, 2**53 + 1,
        {1: "a"}, {"x": Decimal("1.5")}, [Decimal(1)], {"x": (1, {"y": math.nan})},
        {"x": 2**53, "y": -(2**53), "z": [1.0, None, True, "s"]},
    ],
)  # fmt: skip
def test_the_fast_json_check_on_each_kind_of_bad_value(value: Any) -> None:
    """Each bad value in place (a dict's item, a list's item, the top) and the limits exactly."""
    assert store_docs._json_ok(value, 0) == _walk_accepts(value)


@pytest.mark.parametrize("depth", [63, 64, 65, 66])
@pytest.mark.parametrize("leaf", [1, {}, [], "s", 2**60])
def test_the_depth_limit_is_the_same_either_way(depth: int, leaf: Any) -> None:
    value = _nested(depth, leaf)
    careful = _walk_accepts(value)
    assert store_docs._json_ok(value, 0) == careful


def test_a_decision_is_its_signal_and_its_event(store: Store) -> None:
    s, e = sig(), evt()
    assert store.put_decision(s, e) == (True, True)
    assert store.get_signal(s["signal_id"]) == SignalDoc(**s)
    assert store.get_event(e["event_id"]) == EventDoc(**e)
    assert store.put_decision(s, e) == (False, False)  # idempotent, the first kept
    later = evt(ts=T0 + 5)
    assert store.put_decision(s, later) == (False, True)  # a retry completes a lone signal


def test_a_bad_event_writes_no_signal(store: Store) -> None:
    s = sig(t0=T0 + 9)
    with pytest.raises(ValueError, match=r"strategy_events\.kind"):
        store.put_decision(s, evt(kind="decide"))
    assert store.get_signal(s["signal_id"]) is None
    with pytest.raises(ValueError, match=r"signals\.t0"):
        store.put_decision(sig(t0=-1), evt(ts=T0 + 9))
    assert store.get_event(event_id("DECIDE", s["signal_id"])) is None


def test_under_steady_writes_a_long_wal_is_wholly_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Frames keep arriving during a PASSIVE checkpoint; past the limit the checkpointer copies
    the rest while this process's writers wait, so the next write starts the WAL over."""
    monkeypatch.setattr("s3.adapters.sqlite_store.RESTART_WAL_PAGES", 20)
    with SqliteStore(tmp_path / "c.db", checkpoint_every_s=3600) as store:
        ckpt = store._checkpointer
        assert ckpt is not None
        stop = threading.Event()

        def write() -> None:
            i = 0
            while not stop.is_set():
                _big_signals(store, 1, start=i)
                i += 1

        writer = threading.Thread(target=write)
        writer.start()
        try:
            frames = []
            while len(frames) < 8:
                time.sleep(0.01)
                frames.append(ckpt.round()[1])
        finally:
            stop.set()
            writer.join()
    # the WAL started over: its frame count, which only grows until then, fell
    assert any(b < a for a, b in itertools.pairwise(frames)), frames
