"""The replay: byte-identical output, the full records as syrupy snapshots, and each rule of the
simulation (holding, budgets and concurrency as the Redis ledger, idempotency, state, errors)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Literal

import pytest
from syrupy.assertion import SnapshotAssertion

from s3.adapters.redis_client import connect, read_state
from s3.adapters.redis_keys import Keys
from s3.adapters.redis_risk import RiskLedger
from s3.adapters.redis_server import RedisServer
from s3.cli import main
from s3.core.decide import BundleSnapshot
from s3.core.types import AtrState, Reservation
from s3.replay import output
from s3.replay.replay import ReplayConfig, SimRisk, bar_update, replay
from s3.replay.tape import Event, Header, State, Tape, from_records, load, stream_fields
from s3.worker import bar_update as worker_bar_update
from tests.replay.conftest import DEFAULT, REAL, SMALL

EXAMPLE = json.loads((DEFAULT / "examples" / "btc_buy_real.json").read_text())
SNAPSHOTS = Path(__file__).parent / "__snapshots__" / "test_replay"
GREEN = State(ts=0, kill_switch="OFF", health="GREEN")


def event(ts: int, side: str | None = "BUY", symbol: str = "BTCUSDT", **changes: Any) -> Event:
    row = {k: v for k, v in {**EXAMPLE, **changes}.items() if k != "side" and v is not None}
    fields = stream_fields({**row, "ts": ts})
    if side:
        fields["side_hint"] = side
    return Event(symbol=symbol, id="", fields=fields)


def tape_of(*records: Any) -> Tape:
    return from_records(Header(source="test"), [GREEN, *records])


def verdicts(result: Any) -> list[str]:
    return [
        o.decision.reason_detail if o.decision is not None else (o.error or "").split(":")[0]
        for o in result.outcomes
    ]


# -- determinism and snapshots --------------------------------------------------------------------------
def _run_cli(
    out: Path, bundle_b: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[str, dict[str, bytes]]:
    out.mkdir()
    files = {n: out / n for n in ("ab.json", "ab.html", "a.snap.json", "b.snap.json")}
    code = main(
        [
            "replay",
            str(REAL),
            "--bundle",
            str(DEFAULT),
            "--against",
            str(bundle_b),
            "--quiet",
            "--json",
            str(files["ab.json"]),
            "--html",
            str(files["ab.html"]),
            "--snapshot",
            str(files["a.snap.json"]),
            "--snapshot-b",
            str(files["b.snap.json"]),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    text = "\n".join(line for line in text.splitlines() if not line.startswith("replayed "))
    return text.replace(str(out), "OUT"), {n: p.read_bytes() for n, p in files.items()}


def test_replay_is_deterministic_byte_for_byte(
    tmp_path: Path, bundle_b_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text1, files1 = _run_cli(tmp_path / "one", bundle_b_dir, capsys)
    text2, files2 = _run_cli(tmp_path / "two", bundle_b_dir, capsys)
    assert text1 == text2 and "A/B replay" in text1
    assert files1 == files2
    assert all(len(v) > 1000 for v in files1.values())


def test_full_decision_records_snapshot(
    default_snap: BundleSnapshot, json_snapshot: SnapshotAssertion
) -> None:
    result = replay(load(SMALL, limit=16), default_snap)
    assert output.snapshot_data(result) == json_snapshot


def test_cli_snapshot_file_is_the_syrupy_snapshot(tmp_path: Path) -> None:
    """`s3 replay TAPE --bundle A --snapshot OUT` writes the very bytes syrupy keeps."""
    out = tmp_path / "snap.json"
    code = main(
        [
            "replay",
            str(SMALL),
            "--bundle",
            str(DEFAULT),
            "--limit",
            "16",
            "--hold-ms",  # the library's default (the CLI's is the outcome simulation)
            "60000",
            "--quiet",
            "--snapshot",
            str(out),
        ]
    )
    assert code == 0
    stored = SNAPSHOTS / "test_full_decision_records_snapshot.json"
    assert out.read_bytes() == stored.read_bytes()


def test_real_sample_outcomes_snapshot(
    default_snap: BundleSnapshot, real_tape: Tape, json_snapshot: SnapshotAssertion
) -> None:
    """Every event of the real tape through the whole pipeline, one line each."""
    result = replay(real_tape, default_snap)
    assert output.compact(result) == json_snapshot
    free = replay(real_tape, default_snap, ReplayConfig(budgets=False))
    assert output.compact(free) == json_snapshot


# -- the simulation --------------------------------------------------------------------------------------
def test_holding_in_tape_time_and_in_events(default_snap: BundleSnapshot) -> None:
    t0 = EXAMPLE["ts"]
    tape = tape_of(*(event(t0 + 10_000 * i) for i in range(6)))
    conc = "RISK_BUDGET.CONCURRENCY"
    # concurrent_entries_per_symbol = 1: one open BTC position at a time
    got = replay(tape, default_snap, ReplayConfig(hold_ms=25_000))
    assert verdicts(got) == ["OK", conc, conc, "OK", conc, conc]
    assert (got.reserved, got.released, got.open_at_end) == (2, 1, 1)
    got = replay(tape, default_snap, ReplayConfig(hold_events=2))
    assert verdicts(got) == ["OK", conc, "OK", conc, "OK", conc]
    got = replay(tape, default_snap, ReplayConfig(hold_ms=None))
    assert verdicts(got) == ["OK", *[conc] * 5]
    assert verdicts(replay(tape, default_snap, ReplayConfig(budgets=False))) == ["OK"] * 6
    skip = got.outcomes[1].decision
    assert skip is not None and skip.intent is None
    assert skip.sentence == "1 concurrent entries on BTCUSDT >= limit 1"
    # no free slot: rules and model are on the record, the entry is not sized
    assert skip.rules_fired and skip.size_mult is not None
    assert skip.reservation is None and skip.sizing_notes == () and skip.atr is None


def test_idempotency_answers_a_repeated_intent(default_snap: BundleSnapshot) -> None:
    t0 = EXAMPLE["ts"]
    tape = tape_of(event(t0), event(t0), event(t0, side="SELL"))
    got = replay(tape, default_snap, ReplayConfig(hold_events=1))
    a, again, sell = got.outcomes
    assert again.replayed and again.decision == a.decision and not a.replayed
    assert a.decision is not None and a.decision.decision == "open"
    # the SELL is another intent; the BUY's position (held one event) was released before it
    assert sell.decision is not None and sell.decision.decision == "open" and got.reserved == 2


def test_state_records_and_what_ifs(default_snap: BundleSnapshot) -> None:
    t0 = EXAMPLE["ts"]
    tape = from_records(
        Header(),
        [
            State(ts=0, kill_switch="ON", health="GREEN"),
            event(t0),
            State(ts=0, kill_switch="OFF", health="ORANGE"),
            event(t0 + 1),
            State(ts=0, kill_switch="OFF", health="GREEN", funding={"BTCUSDT": 0.0009}),
            event(t0 + 2),
            State(ts=0, kill_switch="OFF", health="GREEN", funding={"ETHUSDT": 0.0009}),
            event(t0 + 3),
        ],
    )
    got = replay(tape, default_snap, ReplayConfig(budgets=False))
    assert verdicts(got) == ["GATE.KILL_SWITCH", "OK", "GATE.FUNDING", "OK"]
    orange = got.outcomes[1].decision
    assert orange is not None and (orange.health, orange.health_factor) == ("ORANGE", 0.65)
    forced = replay(
        tape, default_snap, ReplayConfig(budgets=False, kill_switch="OFF", health="RED")
    )
    assert verdicts(forced)[0] == "OK"
    red = forced.outcomes[0].decision
    assert red is not None and red.health == "RED" and red.exec_policy == "Taker"


def test_clock_latency_and_errors(default_snap: BundleSnapshot) -> None:
    t0 = EXAMPLE["ts"]
    tape = tape_of(
        event(t0),
        event(t0 + 1, symbol="SOLUSDT"),
        event(t0 + 2, funding_next=None),
        Event(symbol="BTCUSDT", id="", fields={"ts": str(t0 + 3), "mid": "x"}),
        event(t0 + 4, side=None),
    )
    got = replay(tape, default_snap, ReplayConfig(budgets=False))
    assert verdicts(got) == [
        "OK",
        "SYMBOL_NOT_CONFIGURED",
        "MISSING_FEATURES",
        "PARSE.MISSING_FIELD",
        "GATE.NO_SIDE",
    ]
    late = replay(tape, default_snap, ReplayConfig(budgets=False, latency_ms=6_000))
    assert verdicts(late)[0] == "GATE.STALE_FEATURES"
    d = late.outcomes[0].decision
    assert d is not None and d.now_ms == t0 + 6_000


def test_bar_update_is_the_workers() -> None:
    ours: dict[str, AtrState] = {}
    theirs: dict[str, AtrState] = {}
    rng = random.Random(3)
    for i in range(40):
        close = 100 + rng.uniform(-5, 5)
        bar = {"high": close + rng.uniform(0, 2), "low": close - rng.uniform(0, 2), "close": close}
        if i % 7 == 0:
            bar = {"high": 1.0, "low": 2.0, "close": 1.5}  # not a bar
        if i % 11 == 0:
            bar = {"high": "x"}  # type: ignore[dict-item]
        bar_update(ours, "BTCUSDT", bar, 5)
        worker_bar_update(theirs, "BTCUSDT", bar, 5)
        assert ours == theirs


def test_simulated_ledger_follows_the_redis_ledger(redis_server: RedisServer) -> None:
    """A seeded sequence of reservations and releases on the real Lua ledger and on SimRisk: the
    same verdicts, the same refusal sentences, the same counters as `read_state` parses them."""
    client, keys = connect(redis_server.address)
    keys = Keys(prefix="replay-ledger:", risk_tag=keys.risk_tag)
    ledger = RiskLedger(client, keys)
    sim = SimRisk()
    rng = random.Random(8)
    live: list[str] = []
    try:
        for i in range(150):
            symbol = rng.choice(("BTCUSDT", "ETHUSDT"))
            if live and rng.random() < 0.35:
                iid = live.pop(rng.randrange(len(live)))
                assert ledger.release(iid, "test", now_ms=i).freed
                assert sim.release(iid)
            else:
                market: Literal["FUT", "SPOT"] = rng.choice(("FUT", "FUT", "SPOT"))
                amount = rng.choice((12.5, 33.333333333, 0.1 + 0.2, 49.99999999, 60.0))
                r = Reservation(
                    market, symbol, amount, rng.choice((100.0, 150.5)), rng.choice((1, 2, 3))
                )
                iid = f"s3-t-{i}"
                want = ledger.reserve(
                    iid,
                    r.market,
                    r.symbol,
                    r.amount_usdt,
                    r.budget_max_usdt,
                    r.concurrency_limit,
                    i,
                )
                ok, detail, sentence = sim.reserve(iid, r, i, i)
                assert (ok, detail) == (want.ok, want.detail)
                if not ok:
                    assert sentence == want.sentence
                else:
                    live.append(iid)
            state, _ = read_state(client, keys, symbol)
            fut, spot, conc = sim.state(symbol)
            assert (fut, spot, conc) == (
                state.fut_margin_inuse_usdt,
                state.spot_quote_inuse_usdt,
                state.concurrency,
            )
    finally:
        client.close()
