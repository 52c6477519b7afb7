"""`s3 record`, `s3 tape sample|synth|info` and `s3 replay` as commands: outputs, exit codes, the
HTML report's self-containment, and recording from a real Redis in both modes."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from s3.adapters.redis_client import connect
from s3.adapters.redis_keys import Keys
from s3.adapters.redis_server import RedisServer
from s3.cli import main
from s3.replay import record
from s3.replay.tape import Event, State, iter_records, load
from tests.replay.conftest import DEFAULT, REAL, SMALL

Capture = pytest.CaptureFixture[str]


def test_tape_commands(tmp_path: Path, capsys: Capture) -> None:
    a, b = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"
    assert main(["tape", "synth", str(a), "--events", "400", "--seed", "3", "--quiet"]) == 0
    assert main(["tape", "synth", str(b), "--events", "400", "--seed", "3", "--quiet"]) == 0
    assert a.read_bytes() == b.read_bytes()
    capsys.readouterr()
    assert main(["tape", "info", str(a)]) == 0
    info = capsys.readouterr().out
    assert "400 events (BTCUSDT 200, ETHUSDT 200)" in info and "seed 3" in info
    eth = tmp_path / "eth.jsonl"
    assert main(["tape", "sample", str(eth), "--symbol", "ETHUSDT", "--limit", "5"]) == 0
    tape = load(eth)
    assert [e.symbol for e in tape.events] == ["ETHUSDT"] * 5
    assert main(["tape", "sample", str(eth), "--ts-from", "9999999999999"]) == 2


def test_usage_errors_and_bundle_errors(tmp_path: Path, capsys: Capture) -> None:
    assert main(["replay", str(tmp_path / "none.jsonl"), "--bundle", str(DEFAULT)]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad_tape = tmp_path / "bad.jsonl"
    bad_tape.write_text("not json\n")
    assert main(["replay", str(bad_tape), "--bundle", str(DEFAULT)]) == 2
    assert "bad.jsonl:1" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bundle.toml").write_text('bundle_id = "x"\nrev = 1\n[features]\nmid = "number"\n')
    (broken / "r.rule").write_text("rule R-1 when mid > then skip_entry\n")
    assert main(["replay", str(SMALL), "--bundle", str(broken)]) == 1
    assert "nothing was replayed" in capsys.readouterr().err
    assert main(["replay", str(SMALL), "--bundle", str(DEFAULT), "--hold-events", "0"]) == 2
    # --check-live on a tape without live decisions: nothing to compare is a failure
    assert main(["replay", str(SMALL), "--bundle", str(DEFAULT), "--check-live", "--quiet"]) == 1
    assert "record with --decisions" in capsys.readouterr().out


def test_summary_json_and_html(tmp_path: Path, capsys: Capture) -> None:
    html, js = tmp_path / "r.html", tmp_path / "r.json"
    code = main(
        [
            "replay",
            str(REAL),
            "--bundle",
            str(DEFAULT),
            "--quiet",
            "--html",
            str(html),
            "--json",
            str(js),
            "--events",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "312 events: 312 decided" in text and "rule coverage:" in text
    assert re.search(
        r"replayed 312 events x 1 bundle\(s\) in [\d.]+ s \([\d,]+ decisions/s\)", text
    )
    doc = json.loads(js.read_text())
    assert doc["format"] == "s3-replay/1" and len(doc["events"]) == 312
    s = doc["summary"]
    assert s["decided"] == 312 and s["open"] + s["skip"] == 312
    assert [r["rule_id"] for r in s["rules"]][:3] == ["R-040", "R-041", "R-060"]
    page = html.read_text()
    assert page.count("<svg") >= 5  # two price panels, rules, sizes, legend icons
    assert "<script" not in page and "src=" not in page and "href=" not in page
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", page)  # no external resource
    # JSON to stdout instead of the summary
    assert main(["replay", str(SMALL), "--bundle", str(DEFAULT), "--quiet", "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["tape"]["events"] == 40


def _push(client: object, keys: Keys, symbol: str, ts: int, mid: float) -> None:
    fields = {
        "ts": str(ts),
        "mid": str(mid),
        "spread_bps": "0.02",
        "depth_top1_usdt": "5000",
        "side_hint": "BUY",
    }
    client.xadd(keys.feat_events(symbol), fields)  # type: ignore[attr-defined]


def test_record_backfill_command(
    redis_server: RedisServer, tmp_path: Path, capsys: Capture
) -> None:
    client, keys = connect(redis_server.address)
    keys = Keys(prefix="rec1:")
    try:
        client.set(keys.kill_switch, "OFF")
        client.set(keys.health, "ORANGE")
        client.set(keys.funding_next("BTCUSDT"), "0.0001")
        client.set(keys.funding_next("ETHUSDT"), "garbage")  # reads as missing, as the engine does
        for i in range(6):
            _push(client, keys, "BTCUSDT" if i % 2 else "ETHUSDT", 1000 + i, 100.0 + i)
    finally:
        client.close()
    out = tmp_path / "t.jsonl.gz"
    code = main(
        ["record", str(out), "--redis", redis_server.address, "--prefix", "rec1:", "--quiet"]
    )
    assert code == 0
    assert "recorded 6 events (BTCUSDT 3, ETHUSDT 3), 1 state records" in capsys.readouterr().out
    records = [r for _, r in iter_records(out)]
    state = records[1]
    assert isinstance(state, State)
    assert (state.kill_switch, state.health, state.funding) == (
        "OFF",
        "ORANGE",
        {"BTCUSDT": 0.0001},
    )
    events = [r for r in records if isinstance(r, Event)]
    assert [e.fields["ts"] for e in events] == [str(1000 + i) for i in range(6)]  # arrival order
    assert [e.symbol for e in events] == ["ETHUSDT", "BTCUSDT"] * 3
    assert (
        main(
            [
                "record",
                str(out),
                "--redis",
                redis_server.address,
                "--prefix",
                "rec1:",
                "--count",
                "2",
                "--quiet",
            ]
        )
        == 0
    )
    assert len(load(out).events) == 2


def test_record_follow_tracks_state_changes(redis_server: RedisServer, tmp_path: Path) -> None:
    client, keys = connect(redis_server.address)
    keys = Keys(prefix="rec2:")
    client.set(keys.kill_switch, "OFF")
    client.set(keys.health, "GREEN")
    out = tmp_path / "follow.jsonl"
    seen = [0]
    stop = threading.Event()

    def tick(done: int, total: int | None) -> None:
        seen[0] = done

    result: list[record.RecordStats] = []
    t = threading.Thread(
        target=lambda: result.append(
            record.follow(client, keys, ["BTCUSDT"], out, tick=tick, stop=stop.is_set, poll_ms=10)
        )
    )
    t.start()
    try:
        time.sleep(0.2)
        for i, health in enumerate(("GREEN", "GREEN", "RED", "RED", "YELLOW")):
            client.set(keys.health, health)
            _push(client, keys, "BTCUSDT", 2000 + i, 100.0)
            deadline = time.monotonic() + 5
            while seen[0] < i + 1:
                assert time.monotonic() < deadline, "the recorder did not see the entry"
                time.sleep(0.005)
    finally:
        stop.set()
        t.join(10)
        client.close()
    assert result and result[0].events == 5 and result[0].states == 3
    tape = load(out)
    assert [e.state.health for e in tape.events] == ["GREEN", "GREEN", "RED", "RED", "YELLOW"]


# -- `s3 rules test` with tapes ----------------------------------------------------------------------
def _live_tape(path: Path, tamper: bool) -> None:
    """SMALL with the live decisions a replay of it makes (as `s3 record --decisions` stores
    them); ``tamper`` changes one stored record, as a drifted engine would have decided."""
    from s3.config.bundle import load_dir
    from s3.replay.replay import replay
    from s3.replay.tape import Header, LiveDecision, write_tape

    snap = load_dir(DEFAULT).snapshot
    assert snap is not None
    records = [r for _, r in iter_records(SMALL)]
    result = replay(load(SMALL), snap)
    live = []
    for o in result.outcomes:
        if o.decision is None or o.replayed or o.ts is None:
            continue
        record = json.loads(msgspec.json.encode(o.decision))
        if tamper and not live:
            record["sentence"] = "something else"
        live.append(LiveDecision(o.symbol, o.ts, o.side, o.decision.now_ms, record))
    header = records[0]
    assert isinstance(header, Header)
    write_tape(path, header, [*records[1:], *live])


def test_rules_test_takes_tapes_and_writes_the_full_records(
    tmp_path: Path, capsys: Capture
) -> None:
    from s3.config.bundle import load_dir
    from s3.replay import output
    from s3.replay.replay import replay

    snap_file, again = tmp_path / "a.json", tmp_path / "b.json"
    argv = ["rules", "test", str(DEFAULT), "--cases", str(DEFAULT / "cases"), "--cases"]
    assert main([*argv, str(SMALL), "--snapshot", str(snap_file)]) == 0
    out = capsys.readouterr().out
    assert "ok   " in out and "real_window_a_40.jsonl: 40 events" in out
    assert "57 cases: 57 passed, 0 failed; 1 tapes: 1 passed" in out
    assert "rules fired by at least one case or tape event" in out
    assert main([*argv, str(SMALL), "--snapshot", str(again)]) == 0
    assert snap_file.read_bytes() == again.read_bytes()  # stable: byte for byte
    doc = json.loads(snap_file.read_text())
    snap = load_dir(DEFAULT).snapshot
    assert snap is not None
    # the tape's part is exactly what `s3 replay TAPE --snapshot` writes: every full record
    assert doc["tapes"]["real_window_a_40.jsonl"] == output.snapshot_data(replay(load(SMALL), snap))
    assert snap_file.read_text() == output.snapshot_text(doc)  # syrupy's JSON bytes
    assert len(doc["cases"]) == 57 and all(c["passed"] for c in doc["cases"].values())
    first = next(iter(doc["tapes"]["real_window_a_40.jsonl"]["decisions"].values()))
    assert {"gates", "rules_fired", "sentence", "reason_detail"} <= set(first)


def test_rules_test_compares_a_tapes_live_decisions(tmp_path: Path, capsys: Capture) -> None:
    good, bad = tmp_path / "good" / "live.jsonl", tmp_path / "bad.jsonl.gz"
    good.parent.mkdir()
    _live_tape(good, tamper=False)
    _live_tape(bad, tamper=True)
    # a directory brings its tapes (and its case files: none here)
    assert main(["rules", "test", str(DEFAULT), "--cases", str(good.parent)]) == 0
    out = capsys.readouterr().out
    assert "live.jsonl: 40 events" in out and "live decisions: 40 of 40 identical" in out
    assert main(["rules", "test", str(DEFAULT), "--cases", str(bad), "--format", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    (tape,) = doc["tapes"]
    assert not tape["passed"] and doc["tapes_failed"] == 1
    assert tape["live_compared"] == 40 and tape["live_identical"] == 39
    first = _first_decided(bad)
    assert tape["failures"] == [
        f"{first.key} sentence: live 'something else' != replay {first.decision.sentence!r}"
    ]
    unreadable = tmp_path / "junk.jsonl"
    unreadable.write_text("not json\n")
    assert main(["rules", "test", str(DEFAULT), "--cases", str(unreadable)]) == 2
    assert "junk.jsonl:1" in capsys.readouterr().err


def _first_decided(path: Path) -> Any:
    from s3.config.bundle import load_dir
    from s3.replay.replay import replay

    snap = load_dir(DEFAULT).snapshot
    assert snap is not None
    return next(o for o in replay(load(path), snap).outcomes if o.decision is not None)
