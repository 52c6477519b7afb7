"""Risk reservations on real Redis (standalone and a 3-master cluster): the contract of every
method, exact money, self-heal of hand-made drift and crashes, and races between threads and
between processes that must never take more than the budget allows."""

from __future__ import annotations

import json
import multiprocessing
import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest

from s3.adapters.redis_risk import (
    Correction,
    ReleaseResult,
    ReserveResult,
    RiskLedger,
    count_of,
    units_of,
)
from tests.conftest import RedisBackend

BTC, ETH = "BTCUSDT", "ETHUSDT"


@pytest.fixture
def ledger(redis_backend: RedisBackend) -> RiskLedger:
    return RiskLedger(redis_backend.client, redis_backend.keys)


def raw(backend: RedisBackend, key: str) -> Any:
    return backend.client.get(key)


def d(s: str) -> Decimal:
    return Decimal(s)


def snap_inuse(ledger: RiskLedger, market: str = "FUT") -> Decimal | None:
    return ledger.snapshot().inuse[market]


# -- reserve --------------------------------------------------------------------------------------
def test_reserve_takes_the_amount_and_a_slot(
    ledger: RiskLedger, redis_backend: RedisBackend
) -> None:
    k, c = redis_backend.keys, redis_backend.client
    res = ledger.reserve("i-1", "FUT", BTC, 20.0, 50.0, 2, now_ms=1_000)
    assert (res.ok, res.outcome, res.detail) == (True, "reserved", "OK")
    assert (
        res.sentence
        == "reserved 20 USDT of fut_margin (20 of 50 in use) and slot 1 of 2 on BTCUSDT"
    )
    assert (res.amount_usdt, res.inuse_usdt, res.budget_max_usdt) == (d("20"), d("20"), d("50"))
    assert (res.concurrency, res.concurrency_limit) == (1, 2)
    assert raw(redis_backend, k.budget_inuse("FUT")) == "20.00000000"
    assert raw(redis_backend, k.concurrency(BTC)) == "1"
    assert raw(redis_backend, k.budget_inuse("SPOT")) is None
    assert json.loads(str(c.hget(k.ledger, "i-1"))) == {
        "intent_id": "i-1",
        "market": "FUT",
        "symbol": BTC,
        "amount": "20.00000000",
        "state": "pending",
        "ts": 1000,
    }
    assert c.zrange(k.ledger_pending, 0, -1, withscores=True) == [("i-1", 1000.0)]
    assert c.smembers(k.risk_symbols) == {BTC}

    spot = ledger.reserve("i-2", "SPOT", ETH, "12.5", "100", 1, now_ms=1_001)
    assert spot.ok and raw(redis_backend, k.budget_inuse("SPOT")) == "12.50000000"
    assert raw(redis_backend, k.budget_inuse("FUT")) == "20.00000000"


def test_refusals_name_the_limit_and_the_values(
    ledger: RiskLedger, redis_backend: RedisBackend
) -> None:
    assert ledger.reserve("a", "FUT", BTC, 30, 50, 2, now_ms=1).ok
    before = ledger.snapshot()
    res = ledger.reserve("b", "FUT", BTC, 20.5, 50, 2, now_ms=2)
    assert (res.ok, res.outcome, res.detail) == (False, "refused", "RISK_BUDGET.FUT_MARGIN")
    assert res.sentence == "fut_margin in use 30 + 20.5 USDT > max 50"
    assert (res.inuse_usdt, res.amount_usdt, res.concurrency, res.entry) == (
        d("30"),
        d("20.5"),
        1,
        None,
    )
    assert ledger.snapshot() == before  # a refusal writes nothing

    assert ledger.reserve("c", "FUT", BTC, 20, 50, 2, now_ms=3).ok  # exactly at the max is allowed
    res = ledger.reserve("d", "FUT", BTC, 0.00000001, 50, 5, now_ms=4)
    assert res.sentence == "fut_margin in use 50 + 0.00000001 USDT > max 50"

    res = ledger.reserve("e", "FUT", BTC, 0.5, 1000, 2, now_ms=5)
    assert (res.ok, res.detail) == (False, "RISK_BUDGET.CONCURRENCY")
    assert res.sentence == "2 concurrent entries on BTCUSDT >= limit 2"

    assert ledger.reserve("f", "SPOT", ETH, 99, 100, 3, now_ms=6).ok
    res = ledger.reserve("g", "SPOT", ETH, 1.5, 100, 3, now_ms=7)
    assert (res.detail, res.sentence) == (
        "RISK_BUDGET.SPOT_QUOTE",
        "spot_quote in use 99 + 1.5 USDT > max 100",
    )
    assert ledger.reserve("h", "SPOT", ETH, 1, 100, 0, now_ms=8).detail == "RISK_BUDGET.CONCURRENCY"
    assert ledger.snapshot().drift() == []


def test_reserve_is_idempotent_per_intent(ledger: RiskLedger, redis_backend: RedisBackend) -> None:
    k = redis_backend.keys
    first = ledger.reserve("x", "FUT", BTC, 10, 50, 3, now_ms=1)
    again = ledger.reserve("x", "FUT", BTC, 15, 50, 3, now_ms=2)  # a retry, resized: first wins
    assert (again.ok, again.outcome, again.detail) == (True, "replay", "OK")
    assert again.sentence == "intent x already holds its reservation (pending)"
    assert again.entry == first.entry and again.amount_usdt == d("10")
    assert (raw(redis_backend, k.budget_inuse("FUT")), raw(redis_backend, k.concurrency(BTC))) == (
        "10.00000000",
        "1",
    )
    ledger.commit("x", now_ms=3)
    assert ledger.reserve("x", "FUT", BTC, 10, 50, 3, now_ms=4).entry.state == "committed"  # type: ignore[union-attr]

    conflict = ledger.reserve("x", "SPOT", ETH, 10, 50, 3, now_ms=5)
    assert (conflict.ok, conflict.outcome, conflict.detail) == (
        False,
        "replay",
        "RESERVATION.CONFLICT",
    )
    assert (
        conflict.sentence
        == "intent x is already reserved for FUT BTCUSDT, not SPOT ETHUSDT: nothing taken"
    )

    ledger.release("x", "closed", now_ms=6)
    gone = ledger.reserve("x", "FUT", BTC, 10, 50, 3, now_ms=7)
    assert (gone.ok, gone.outcome, gone.detail) == (False, "replay", "RESERVATION.RELEASED")
    assert gone.sentence == "intent x was reserved and released already: nothing taken"
    assert (raw(redis_backend, k.budget_inuse("FUT")), raw(redis_backend, k.concurrency(BTC))) == (
        "0.00000000",
        "0",
    )


def test_commit_and_release(ledger: RiskLedger, redis_backend: RedisBackend) -> None:
    k = redis_backend.keys
    ledger.reserve("p", "FUT", BTC, 7.25, 50, 5, now_ms=1)
    ledger.reserve("q", "FUT", BTC, 3, 50, 5, now_ms=2)

    done = ledger.commit("p", now_ms=10)
    assert (done.ok, done.outcome, done.entry.state, done.entry.committed_ts) == (  # type: ignore[union-attr]
        True,
        "committed",
        "committed",
        10,
    )
    assert redis_backend.client.zrange(k.ledger_pending, 0, -1) == ["q"]
    assert ledger.commit("p").outcome == "already_committed" and ledger.commit("p").ok

    freed = ledger.release("p", "position_closed", now_ms=20)  # a committed one frees too
    assert (freed.freed, freed.outcome, freed.released_from) == (True, "released", "committed")
    assert (freed.inuse_usdt, freed.concurrency) == (d("3"), 1)
    assert freed.entry is not None and (freed.entry.reason, freed.entry.released_ts) == (
        "position_closed",
        20,
    )
    twice = ledger.release("p", "position_closed", now_ms=21)
    assert twice == ReleaseResult(False, "already_released", "p", entry=freed.entry)
    assert raw(redis_backend, k.budget_inuse("FUT")) == "3.00000000"  # freed once

    refused = ledger.commit("p")
    assert (refused.ok, refused.outcome) == (False, "refused_released")

    # A wrong symbol hint still frees the right counter; unknown ids are answers, not errors.
    assert ledger.release("q", "s4_rejected", symbol=ETH).freed
    assert raw(redis_backend, k.concurrency(BTC)) == "0"
    assert raw(redis_backend, k.concurrency(ETH)) is None
    assert ledger.release("nope", "x") == ReleaseResult(False, "unknown", "nope")
    assert ledger.release("nope", "x", symbol=BTC).outcome == "unknown"
    assert ledger.commit("nope").outcome == "unknown"
    assert redis_backend.client.zrange(k.ledger_released, 0, -1) == ["p", "q"]
    assert ledger.snapshot().drift() == []


def test_money_stays_exact_over_many_cycles(
    ledger: RiskLedger, redis_backend: RedisBackend
) -> None:
    key = redis_backend.keys.budget_inuse("FUT")
    amounts = [0.1, 0.2, 0.3, 0.7, 1.1, 0.01, 0.07, 2.675, 0.30000000000000004]
    rng = random.Random(7)
    held: dict[str, Decimal] = {}
    for i in range(400):
        a = rng.choice(amounts)
        res = ledger.reserve(f"m{i}", "FUT", BTC, a, 1_000, 1_000, now_ms=i)
        assert res.ok
        held[f"m{i}"] = Decimal(repr(a)).quantize(Decimal("1e-8"))
        if len(held) > 5:
            victim = rng.choice(sorted(held))
            ledger.release(victim, "cycle", symbol=BTC)
            held.pop(victim)
        assert units_of(raw(redis_backend, key)) == sum(held.values()) * 10**8
    for victim in list(held):
        ledger.release(victim, "cycle")
    assert raw(redis_backend, key) == "0.00000000"
    assert ledger.snapshot().drift() == []


def test_amounts_are_quantized_once_and_validated(ledger: RiskLedger) -> None:
    res = ledger.reserve("r1", "FUT", BTC, "0.123456785", "10.000000009", 5, now_ms=1)
    assert (res.amount_usdt, res.budget_max_usdt) == (d("0.12345678"), d("10.00000000"))
    assert ledger.reserve("r2", "FUT", BTC, 0.1 + 0.2, 10, 5, now_ms=2).amount_usdt == d("0.3")
    with pytest.raises(ValueError) as info:
        ledger.reserve("r3", "OPT", BTC, 1, 10, 5, now_ms=3)
    assert str(info.value) == "market must be FUT or SPOT, got 'OPT'"
    with pytest.raises(ValueError) as info:
        ledger.reserve("r3", "FUT", BTC, 0.000000001, 10, 5, now_ms=3)
    assert str(info.value) == "amount_usdt must be positive, got 1e-09"
    with pytest.raises(ValueError) as info:
        ledger.reserve("r3", "FUT", BTC, -1, 10, 5, now_ms=3)
    assert str(info.value) == "amount_usdt must be a finite amount >= 0, got -1"
    with pytest.raises(ValueError) as info:
        ledger.reserve("r3", "FUT", BTC, 1, 1e8, 5, now_ms=3)
    assert str(info.value) == (
        "budget_max_usdt 100000000.0 exceeds the ledger's bound of 90071992.54740991 USDT"
    )
    with pytest.raises(ValueError) as info:
        ledger.reserve("r3", "FUT", BTC, "lots", 10, 5, now_ms=3)
    assert str(info.value) == "amount_usdt must be a finite amount >= 0, got 'lots'"
    with pytest.raises(ValueError) as info:
        ledger.reserve("", "FUT", BTC, 1, 10, 5, now_ms=3)
    assert str(info.value) == "intent_id and symbol must not be empty"


def test_an_unreadable_counter_fails_closed_until_self_heal(
    ledger: RiskLedger, redis_backend: RedisBackend
) -> None:
    k, c = redis_backend.keys, redis_backend.client
    assert ledger.reserve("ok", "FUT", BTC, 5, 100, 5, now_ms=1).ok
    c.set(k.budget_inuse("FUT"), "lots")
    res = ledger.reserve("u1", "FUT", BTC, 5, 100, 5, now_ms=2)
    assert (res.ok, res.detail, res.inuse_usdt) == (False, "RISK_BUDGET.FUT_MARGIN", None)
    assert res.sentence == "fut_margin in use is unreadable ('lots'): refused until self-heal"
    c.set(k.concurrency(BTC), "-1")
    c.set(k.budget_inuse("FUT"), "5.00000000")
    res = ledger.reserve("u2", "FUT", BTC, 5, 100, 5, now_ms=3)
    assert (res.detail, res.sentence) == (
        "RISK_BUDGET.CONCURRENCY",
        "concurrent entries on BTCUSDT unreadable ('-1'): refused until self-heal",
    )
    c.set(k.budget_inuse("FUT"), "1e3")
    assert ledger.self_heal(now_ms=10, pending_max_age_ms=60_000) == [
        Correction("COUNTER_FIXED", k.budget_inuse("FUT"), "1e3", "5.00000000"),
        Correction("COUNTER_FIXED", k.concurrency(BTC), "-1", "1"),
    ]
    assert ledger.reserve("u3", "FUT", BTC, 5, 100, 5, now_ms=11).ok


COUNTER_VALUES = ["0", "12.5", " 7 ", "+3", "5.", ".25", "007.10", "3.0000000000000004", "4"]
COUNTER_JUNK = ["", "1e3", "-1", "abc", "1.2.3", "123456789", "²", "inf", "nan"]


def test_python_reads_counters_as_lua_does(ledger: RiskLedger, redis_backend: RedisBackend) -> None:
    """The refusal sentences and snapshots parse counters in Python: same answers as the script."""
    key = redis_backend.keys.budget_inuse("FUT")
    for n, value in enumerate(COUNTER_VALUES + COUNTER_JUNK):
        redis_backend.client.set(key, value)
        res = ledger.reserve(f"v{n}", "FUT", BTC, "0.00000001", 1_000, 1_000, now_ms=n)
        parsed = units_of(value)
        assert res.ok is (parsed is not None), value
        if parsed is not None:
            assert res.inuse_usdt == (Decimal(parsed) + 1).scaleb(-8), value
        else:
            assert res.inuse_usdt is None and res.detail == "RISK_BUDGET.FUT_MARGIN", value
    assert [units_of(v) for v in COUNTER_VALUES] == [
        0, 1_250_000_000, 700_000_000, 300_000_000, 500_000_000, 25_000_000, 710_000_000,
        300_000_001, 400_000_000,
    ]  # fmt: skip
    assert [count_of(v) for v in ["0", " 7 ", "+3", "007", "", "-1", "3.0", "²", "9" * 16]] == [
        0, 7, 3, 7, None, None, None, None, None,
    ]  # fmt: skip


# -- self-heal ------------------------------------------------------------------------------------
def test_self_heal_releases_only_stale_pending(
    ledger: RiskLedger, redis_backend: RedisBackend
) -> None:
    k = redis_backend.keys
    ledger.reserve("old", "FUT", BTC, 4, 100, 9, now_ms=1_000)
    ledger.reserve("young", "FUT", BTC, 2, 100, 9, now_ms=9_000)
    ledger.reserve("held", "SPOT", ETH, 8, 100, 9, now_ms=0)
    ledger.commit("held", now_ms=1)  # committed: an open position, never stale
    ledger.reserve("edge", "FUT", ETH, 1, 100, 9, now_ms=5_000)  # exactly at the bound: kept

    assert ledger.self_heal(now_ms=10_000, pending_max_age_ms=5_000) == [
        Correction("RELEASED_STALE", k.ledger, "pending", "released", "old")
    ]
    snap = ledger.snapshot()
    assert {i: e.state for i, e in snap.entries.items()} == {
        "old": "released",
        "young": "pending",
        "held": "committed",
        "edge": "pending",
    }
    assert snap.entries["old"].reason == "SELF_HEAL.STALE_PENDING"
    assert snap.inuse == {"FUT": d("3"), "SPOT": d("8")}
    assert snap.concurrency == {BTC: 1, ETH: 2}
    assert snap.drift() == []
    assert ledger.self_heal(now_ms=10_000, pending_max_age_ms=5_000) == []


def test_self_heal_fixes_counters_set_by_hand(
    ledger: RiskLedger, redis_backend: RedisBackend
) -> None:
    k, c = redis_backend.keys, redis_backend.client
    ledger.reserve("a", "FUT", BTC, 10.5, 100, 9, now_ms=1)
    ledger.reserve("b", "FUT", ETH, 0.25, 100, 9, now_ms=1)
    ledger.reserve("s", "SPOT", ETH, 30, 100, 9, now_ms=1)
    c.set(k.budget_inuse("FUT"), "999")
    c.delete(k.budget_inuse("SPOT"))
    c.set(k.concurrency(BTC), "7")
    c.set(k.concurrency("SOLUSDT"), "3")  # a configured symbol with no reservation at all
    assert ledger.snapshot().drift() == [
        "FUT in use '999' != ledger 10.75000000",
        "SPOT in use None != ledger 30.00000000",
        "BTCUSDT concurrency '7' != ledger 1",
    ]
    got = ledger.self_heal(now_ms=2, pending_max_age_ms=60_000, symbols=["SOLUSDT"])
    assert got == [
        Correction("COUNTER_FIXED", k.budget_inuse("FUT"), "999", "10.75000000"),
        Correction("COUNTER_FIXED", k.budget_inuse("SPOT"), None, "30.00000000"),
        Correction("COUNTER_FIXED", k.concurrency(BTC), "7", "1"),
        Correction("COUNTER_FIXED", k.concurrency("SOLUSDT"), "3", "0"),
    ]
    assert ledger.snapshot().drift() == []
    assert ledger.self_heal(now_ms=3, pending_max_age_ms=60_000, symbols=["SOLUSDT"]) == []


def test_self_heal_repairs_a_crash_between_steps(
    ledger: RiskLedger, redis_backend: RedisBackend
) -> None:
    """Keys written directly, as a crash half way through a non-atomic writer would leave them."""
    k, c = redis_backend.keys, redis_backend.client
    ledger.reserve("a", "FUT", BTC, 1, 100, 9, now_ms=50_000)
    entry = {"intent_id": "z", "market": "FUT", "symbol": "XRPUSDT", "amount": "2.5"}
    c.hset(k.ledger, "z", json.dumps({**entry, "state": "pending", "ts": 1_000}))  # no counters
    c.hset(k.ledger, "w", json.dumps({**entry, "intent_id": "w", "state": "committed", "ts": 1}))
    c.zadd(k.ledger_pending, {"ghost": 5, "w": 1})  # index entries that should not be there
    c.incrbyfloat(k.budget_inuse("SPOT"), 4)  # a counter moved with no ledger entry
    c.incr(k.concurrency("ADAUSDT"))
    c.sadd(k.risk_symbols, "ADAUSDT")

    got = ledger.self_heal(now_ms=60_000, pending_max_age_ms=30_000)
    assert got == [
        Correction("INDEX_FIXED", k.ledger_pending, "1", None, "w"),
        Correction("INDEX_FIXED", k.ledger_pending, None, "1000", "z"),
        Correction("INDEX_FIXED", k.ledger_pending, "5", None, "ghost"),
        Correction("COUNTER_FIXED", k.budget_inuse("FUT"), "1.00000000", "6.00000000"),
        Correction("COUNTER_FIXED", k.budget_inuse("SPOT"), "4", "0.00000000"),
        Correction("COUNTER_FIXED", k.concurrency("ADAUSDT"), "1", "0"),
        Correction("COUNTER_FIXED", k.concurrency("XRPUSDT"), None, "2"),
        Correction("RELEASED_STALE", k.ledger, "pending", "released", "z"),
    ]
    assert snap_inuse(ledger) == d("3.5")
    snap = ledger.snapshot()
    assert snap.drift() == []
    assert snap.concurrency == {"ADAUSDT": 0, BTC: 1, "XRPUSDT": 1}
    assert snap.entries["z"].state == "released" and snap.entries["w"].state == "committed"
    assert c.zrange(k.ledger_pending, 0, -1) == ["a"]
    assert ledger.self_heal(now_ms=60_000, pending_max_age_ms=30_000) == []


def test_an_entry_of_no_known_market_frees_only_its_slot(
    ledger: RiskLedger, redis_backend: RedisBackend
) -> None:
    k, c = redis_backend.keys, redis_backend.client
    ledger.reserve("a", "FUT", BTC, 2, 100, 9, now_ms=0)
    bad = {"intent_id": "m", "market": "OPT", "symbol": BTC, "amount": "1", "ts": 0}
    c.hset(k.ledger, "m", json.dumps({**bad, "state": "pending"}))
    c.zadd(k.ledger_pending, {"m": 0})
    c.incr(k.concurrency(BTC))
    assert ledger.self_heal(now_ms=10, pending_max_age_ms=5) == [
        Correction("RELEASED_STALE", k.ledger, "pending", "released", "a"),
        Correction("RELEASED_STALE", k.ledger, "pending", "released", "m"),
    ]
    assert ledger.snapshot().inuse_raw["FUT"] == "0.00000000"
    assert ledger.snapshot().drift() == []


def test_self_heal_prunes_old_released_entries(
    ledger: RiskLedger, redis_backend: RedisBackend
) -> None:
    for i in range(5):
        ledger.reserve(f"r{i}", "FUT", BTC, 1, 100, 9, now_ms=0)
        ledger.release(f"r{i}", "done", now_ms=i * 1_000)
    ledger.reserve("kept", "FUT", BTC, 1, 100, 9, now_ms=0)
    ledger.commit("kept", now_ms=0)
    assert ledger.self_heal(now_ms=10_000, pending_max_age_ms=1, released_retention_ms=7_500) == []
    assert sorted(ledger.snapshot().entries) == ["kept", "r3", "r4"]
    assert redis_backend.client.zrange(redis_backend.keys.ledger_released, 0, -1) == ["r3", "r4"]
    assert ledger.prune_released(10_000, batch=1) == 2
    assert sorted(ledger.snapshot().entries) == ["kept"]


def test_snapshot(ledger: RiskLedger, redis_backend: RedisBackend) -> None:
    ledger.reserve("a", "FUT", BTC, 1.5, 100, 9, now_ms=1)
    ledger.reserve("b", "SPOT", ETH, 2, 100, 9, now_ms=2)
    ledger.release("b", "x", now_ms=3)
    redis_backend.client.sadd(redis_backend.keys.risk_symbols, "DOGEUSDT")  # no counter yet
    snap = ledger.snapshot()
    assert snap.inuse_raw == {"FUT": "1.50000000", "SPOT": "0.00000000"}
    assert snap.concurrency_raw == {BTC: "1", "DOGEUSDT": None, ETH: "0"}
    assert snap.concurrency == {BTC: 1, "DOGEUSDT": 0, ETH: 0}
    assert [e.intent_id for e in snap.live()] == ["a"]
    assert snap.entries["b"].released_from == "pending"


# -- races ----------------------------------------------------------------------------------------
def _check_invariants(ledger: RiskLedger) -> None:
    snap = ledger.snapshot()
    assert snap.drift() == []
    live = snap.live()
    for m in ("FUT", "SPOT"):
        assert snap.inuse[m] in (None, sum((e.amount for e in live if e.market == m), Decimal(0)))
    per_symbol = Counter(e.symbol for e in live)
    assert snap.concurrency == {s: per_symbol[s] for s in snap.concurrency}


def test_threads_race_to_reserve(ledger: RiskLedger) -> None:
    """16 threads x 50 attempts on 400 shared ids: FUT budget 10 / 0.1 USDT admits exactly 100,
    the SPOT ETH concurrency limit of 37 exactly 37; nobody reserves an intent twice."""

    def worker(t: int) -> list[ReserveResult]:
        rng = random.Random(t)
        out = []
        for _ in range(50):
            i = rng.randrange(400)
            if t % 2:
                out.append(ledger.reserve(f"f{i}", "FUT", BTC, 0.1, 10.0, 1_000, now_ms=i))
            else:
                out.append(ledger.reserve(f"s{i}", "SPOT", ETH, 1.0, 1e6, 37, now_ms=i))
        return out

    with ThreadPoolExecutor(16) as pool:
        results = [r for rs in pool.map(worker, range(16)) for r in rs]
    reserved = Counter(r.market for r in results if r.outcome == "reserved")
    assert reserved == {"FUT": 100, "SPOT": 37}
    assert len({r.intent_id for r in results if r.outcome == "reserved"}) == 137
    assert {r.detail for r in results if not r.ok} == {
        "RISK_BUDGET.FUT_MARGIN",
        "RISK_BUDGET.CONCURRENCY",
    }
    assert all(
        r.inuse_usdt is not None and r.inuse_usdt <= d("10") for r in results if r.market == "FUT"
    )
    snap = ledger.snapshot()
    assert snap.inuse_raw["FUT"] == "10.00000000" and snap.concurrency[ETH] == 37
    _check_invariants(ledger)


def test_threads_race_reserving_and_releasing(ledger: RiskLedger) -> None:
    """Reserves, releases of one's own and of others' intents, double releases, commits: the
    counters never pass a limit and end equal to the ledger, each intent freed at most once."""
    symbols = [BTC, ETH, "SOLUSDT"]
    amounts = [0.1, 0.25, 1.3, 2.05, 0.07]
    max_usdt, limit = Decimal("6"), 4
    freed: list[str] = []
    lock = threading.Lock()

    def worker(t: int) -> list[ReserveResult]:
        rng = random.Random(100 + t)
        out, held = [], []
        for n in range(50):
            iid = f"t{t}-{n}"
            r = ledger.reserve(
                iid, "FUT", rng.choice(symbols), rng.choice(amounts), 6, limit, now_ms=n
            )
            out.append(r)
            if r.ok:
                held.append(iid)
            roll = rng.random()
            if held and roll < 0.4:
                got = ledger.release(held.pop(rng.randrange(len(held))), "race")
            elif roll < 0.6:
                got = ledger.release(f"t{rng.randrange(16)}-{rng.randrange(50)}", "race")
            elif held and roll < 0.7:
                ledger.commit(rng.choice(held))
                continue
            else:
                continue
            if got.freed:
                with lock:
                    freed.append(got.intent_id)
        return out

    with ThreadPoolExecutor(16) as pool:
        results = [r for rs in pool.map(worker, range(16)) for r in rs]
    ok = [r for r in results if r.outcome == "reserved"]
    assert len(ok) > 50 and len(results) - len(ok) > 0  # both outcomes happened
    assert all(r.inuse_usdt is not None and r.inuse_usdt <= max_usdt for r in ok)
    assert all(r.concurrency is not None and r.concurrency <= limit for r in ok)
    assert len(freed) == len(set(freed))
    snap = ledger.snapshot()
    assert sorted(freed) == sorted(i for i, e in snap.entries.items() if e.state == "released")
    assert set(snap.entries) == {r.intent_id for r in ok}
    _check_invariants(ledger)


def _process_worker(addresses: list[str], prefix: str, seed: int, barrier: Any, queue: Any) -> None:
    ledger = RiskLedger.from_addresses(addresses, prefix=prefix)
    try:
        rng = random.Random(seed)
        reserved = []
        for _ in range(100):
            i = rng.randrange(300)
            r = ledger.reserve(f"p{i}", "FUT", BTC, 0.3, 15, 10_000, now_ms=i)
            if r.outcome == "reserved":
                reserved.append(r.intent_id)
        barrier.wait(timeout=60)
        ids = [f"p{i}" for i in range(0, 300, 2)]
        rng.shuffle(ids)  # every process releases the same ids, in its own order
        freed = [i for i in ids if ledger.release(i, "race", symbol=BTC).freed]
        queue.put((reserved, freed))
    finally:
        ledger.close()


def test_processes_race_to_reserve_and_release(redis_backend: RedisBackend) -> None:
    """4 spawned processes, each with its own client: 15 / 0.3 USDT admits exactly 50, then all
    of them release the same ids at once and each reservation is freed exactly once."""
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(4), ctx.Queue()
    procs = [
        ctx.Process(
            target=_process_worker,
            args=(redis_backend.addresses, redis_backend.keys.prefix, seed, barrier, queue),
        )
        for seed in range(4)
    ]
    for p in procs:
        p.start()
    outs = [queue.get(timeout=90) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    reserved = [i for r, _ in outs for i in r]
    freed = [i for _, f in outs for i in f]
    assert len(reserved) == len(set(reserved)) == 50
    assert sorted(freed) == sorted(i for i in reserved if int(i[1:]) % 2 == 0)
    ledger = RiskLedger(redis_backend.client, redis_backend.keys)
    live = [i for i in reserved if int(i[1:]) % 2]
    assert ledger.snapshot().inuse["FUT"] == Decimal("0.3") * len(live)
    _check_invariants(ledger)
