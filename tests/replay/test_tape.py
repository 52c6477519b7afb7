"""The tape format: round trips, deterministic gzip, the worker's parser on every entry, errors."""

from __future__ import annotations

import gzip
from decimal import Decimal
from pathlib import Path

import pytest

from s3.replay import synth
from s3.replay.tape import (
    Event,
    Header,
    LiveDecision,
    Record,
    State,
    Tape,
    TapeError,
    iter_records,
    load,
    stream_fields,
    write_tape,
)
from tests.replay.conftest import REAL, SMALL

RECORDS: list[Record] = [
    State(ts=1, kill_switch="OFF", health="GREEN", funding={"ETHUSDT": 0.0002}),
    Event(
        symbol="BTCUSDT",
        id="1-0",
        fields={
            "ts": "1000",
            "mid": "60000.5",
            "spread_bps": "0.02",
            "depth_top1_usdt": "9000",
            "side_hint": "BUY",
            "regime": "range",
        },
    ),
    Event(
        symbol="BTCUSDT",
        id="2-0",
        fields={"ts": "1001", "mid": "abc", "spread_bps": "0.02", "depth_top1_usdt": "9000"},
    ),
    State(ts=2, kill_switch="ON", health=None),
    Event(
        symbol="ETHUSDT",
        id="3-0",
        fields={"ts": 1002, "mid": 3000.0, "spread_bps": 0.03, "depth_top1_usdt": 5000},
    ),
    LiveDecision(
        symbol="BTCUSDT", t0_ms=1000, side="BUY", now_ms=1004, record={"decision": "skip"}
    ),
]


@pytest.mark.parametrize("name", ["t.jsonl", "t.jsonl.gz"])
def test_round_trip_and_parsing(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    assert write_tape(path, Header(source="test"), RECORDS) == 1 + len(RECORDS)
    if name.endswith(".gz"):
        assert path.read_bytes()[:2] == b"\x1f\x8b"
    records = [r for _, r in iter_records(path)]
    assert records == [Header(source="test"), *RECORDS]
    tape = load(path)
    assert [e.index for e in tape.events] == [0, 1, 2]
    ok, bad, eth = tape.events
    # as Runner._handle hands them to the engine: numbers typed, side taken out
    assert ok.ts == 1000 and ok.side == "BUY" and ok.error is None
    assert ok.features == {
        "mid": 60000.5,
        "spread_bps": 0.02,
        "depth_top1_usdt": 9000.0,
        "regime": "range",
    }
    assert ok.state.funding == {"ETHUSDT": 0.0002}
    assert bad.error is not None and bad.error.code == "PARSE.BAD_TYPE" and bad.features is None
    assert eth.state.kill_switch == "ON" and eth.state.health is None and eth.side is None
    assert tape.decisions[("BTCUSDT", 1000, "BUY")].now_ms == 1004


def test_gzip_output_is_byte_identical(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"
    for p in (a, b):
        write_tape(p, synth.synth_header(300, 7), synth.synth_records(300, seed=7))
    assert a.read_bytes() == b.read_bytes()
    lines = gzip.decompress(a.read_bytes()).decode().splitlines()
    assert len(lines) == 1 + len(list(synth.synth_records(300, seed=7)))
    assert sum('"kind":"event"' in line for line in lines) == 300


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"kind":"event","symbol":"X","id":"","fields":{}}\n', "starts with a header"),
        ('{"kind":"header","format":"s3-tape","version":9}\n', "version 9"),
        ('{"kind":"header"}\n{"kind":"nope"}\n', ":2: not a tape record"),
        ('{"kind":"header"}\n{"kind":"header"}\n', "second header"),
        ("", "empty file"),
    ],
)
def test_unreadable_tapes_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(TapeError, match=message):
        load(path)


def test_stream_fields_are_what_a_producer_writes() -> None:
    row = {"symbol": "BTCUSDT", "ts": 5, "mid": 1.5, "ok": True, "x": None, "regime": "trend"}
    assert stream_fields(row) == {"ts": "5", "mid": "1.5", "ok": "true", "regime": "trend"}


def test_shipped_tapes_match_their_sources() -> None:
    """data/tapes is derived from data/samples by `s3 tape sample` (see data/tapes/README.md)."""
    rows = synth.sample_rows()
    real = load(REAL)
    assert len(real.events) == len(rows) == 312
    assert [(e.symbol, e.ts) for e in real.events] == [(r["symbol"], r["ts"]) for r in rows]
    for e, r in zip(real.events, rows, strict=True):
        assert e.features is not None
        assert e.features["mid"] == r["mid"] and e.side == synth.book_side(r)
    small = load(SMALL)
    assert len(small.events) == 40 and small.events[0].ts == 1723161317000
    assert {e.symbol for e in small.events} == {"BTCUSDT", "ETHUSDT"}


def test_shipped_tapes_carry_the_touch() -> None:
    """Every real event carries the exchange's bid and ask; mid and spread are derived from them."""
    for path in (REAL, SMALL):
        for e in load(path).events:
            f = e.features
            assert f is not None and f["bid"] < f["ask"]
            assert f["mid"] == round((f["bid"] + f["ask"]) / 2, 4)


def test_dense_tape_is_one_event_per_quote(dense_tape: Tape) -> None:
    """data/tapes/real_window_c_dense.jsonl.gz: every bookTicker row of window C after the warm-up."""
    tape = dense_tape
    assert len(tape.events) == 94_331
    assert [tape.events[0].ts, tape.events[-1].ts] == [1721347083025, 1721347502291]
    per_symbol = {s: sum(e.symbol == s for e in tape.events) for s in ("BTCUSDT", "ETHUSDT")}
    assert per_symbol == {"BTCUSDT": 49_965, "ETHUSDT": 44_366}
    tick = {"BTCUSDT": Decimal("0.1"), "ETHUSDT": Decimal("0.01")}
    last = 0
    for e in tape.events:
        f = e.features
        assert f is not None and e.error is None and e.ts is not None and e.ts >= last
        last = e.ts
        bid, ask = f["bid"], f["ask"]
        assert bid < ask and f["mid"] == round((bid + ask) / 2, 4)
        assert Decimal(repr(bid)) % tick[e.symbol] == 0 == Decimal(repr(ask)) % tick[e.symbol]
