"""Proof: replaying what the live engine decided reproduces its decisions, field by field.

A real `Service` (its own Redis from the session's redis-server, the SQLite store) and the stream
worker (`s3.worker.Runner`) decide real feature events pushed to `feat:events:{SYMBOL}`, under a
non-default state (health YELLOW, a `funding:next:ETHUSDT` key) with positions closed three
events after they open, as S6 would. `s3 record` captures the streams, the state and the stored
decisions; the replay, with the same holding rule, must give every decision back identically:
all fields of every record (gates and their sentences, rules, model, sizing, intent, reservation,
budget and concurrency skips).
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from s3.cli import main
from s3.core.decide import BundleSnapshot
from s3.replay import record
from s3.replay.replay import ReplayConfig, check_live, replay
from s3.replay.tape import Event, iter_records, load
from s3.service import Service
from tests.replay.conftest import DEFAULT, EVENTS, HOLD_EVENTS, REAL, START, run_live


def test_replay_reproduces_the_live_engine(
    service: Service, default_snap: BundleSnapshot, tmp_path: Path
) -> None:
    events = [r for _, r in iter_records(REAL) if isinstance(r, Event)][START:]
    live = run_live(service, events)
    assert len(live) == EVENTS - 1
    e = service.engine
    tape_path = tmp_path / "live.jsonl.gz"
    stats = record.backfill(e.redis, e.keys, ["BTCUSDT", "ETHUSDT"], tape_path, store=service.store)
    assert (stats.events, stats.decisions) == (EVENTS, EVENTS - 1)
    tape = load(tape_path)
    assert tape.events[0].state.health == "YELLOW"
    assert tape.events[0].state.funding == {"ETHUSDT": 0.00021}

    result = replay(tape, default_snap, ReplayConfig(hold_events=HOLD_EVENTS))
    check = check_live(tape, result)
    assert check.mismatches == []
    assert (check.compared, check.matched, check.live_not_replayed) == (EVENTS - 1, EVENTS - 1, [])
    # and against what the worker handed back, in order, every field
    decided = [o.decision for o in result.outcomes if o.decision is not None]
    assert [o.error.split(":")[0] for o in result.outcomes if o.error] == ["PARSE.BAD_TYPE"]
    assert [msgspec.to_builtins(d) for d in decided] == [
        msgspec.to_builtins(x.decision) for x in live
    ]
    # the run exercised what matters: opens, concurrency skips, the state
    details = {d.reason_detail for d in decided}
    assert {"OK", "RISK_BUDGET.CONCURRENCY", "RULE.SKIP:R-023"} <= details
    assert all(d.health == "YELLOW" and d.health_factor == 0.8 for d in decided)
    eth = next(d for d in decided if d.symbol == "ETHUSDT")
    assert "|funding_next| 0.00021" in eth.gates[5].sentence

    # the CLI says the same; with another holding rule the check finds the differences
    assert (
        main(
            [
                "replay",
                str(tape_path),
                "--bundle",
                str(DEFAULT),
                "--quiet",
                "--hold-events",
                str(HOLD_EVENTS),
                "--check-live",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "replay",
                str(tape_path),
                "--bundle",
                str(DEFAULT),
                "--quiet",
                "--hold-events",
                "1",
                "--check-live",
            ]
        )
        == 1
    )
