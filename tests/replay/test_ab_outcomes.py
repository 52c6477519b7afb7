"""`s3 replay` with outcomes: A/B Δ P&L with its interval, attribution, walk-forward, the HTML
and JSON reports, and the changed-events table that lists only material changes."""

from __future__ import annotations

import gzip
import json
from decimal import Decimal
from pathlib import Path

import pytest

from s3.cli import main
from s3.core.decide import BundleSnapshot
from s3.replay.compare import ab_outcomes, split, walk_forward
from s3.replay.diff import diff
from s3.replay.replay import ReplayConfig, replay
from s3.replay.tape import load
from tests.replay.conftest import DEFAULT, TAPES

BARS = TAPES / "real_bars_1m.jsonl.gz"
EXITS = ReplayConfig(exits=True)


@pytest.fixture(scope="module")
def bars() -> object:
    return load(BARS, limit=3_000)


def test_ab_outcomes_on_real_bars(
    bars: object, default_snap: BundleSnapshot, b_snap: BundleSnapshot
) -> None:
    a = replay(bars, default_snap, EXITS)  # type: ignore[arg-type]
    b = replay(bars, b_snap, EXITS)  # type: ignore[arg-type]
    doc = ab_outcomes(a, b, seed=1)
    pa = sum((t.pnl for t in a.trades), Decimal(0))
    pb = sum((t.pnl for t in b.trades), Decimal(0))
    assert Decimal(doc["d_pnl"]) == pb - pa
    lo, hi = doc["d_pnl_ci95"]
    assert lo <= hi
    assert doc["distinguishable_from_zero"] == (lo > 0 or hi < 0)
    assert len(doc["equity"]["a"]) == sum(t.filled for t in a.trades)
    assert Decimal(doc["equity"]["b"][-1][1]) == Decimal(200) + pb
    # per rule: the P&L of the trades it fired in, under A and under B
    for r in doc["rules"]:
        mine = [t for t in a.trades if t.filled and r["rule_id"] in t.rules_fired]
        assert r["a_trades"] == len(mine)
        assert Decimal(r["a_pnl"]) == sum((t.pnl for t in mine), Decimal(0))
    # the same bundle against itself: nothing changes, exactly
    same = ab_outcomes(a, replay(bars, default_snap, EXITS), seed=1)  # type: ignore[arg-type]
    assert same["d_pnl"] == "0" and same["d_pnl_ci95"] == [0.0, 0.0]


def test_changed_events_lists_only_material_changes(
    default_snap: BundleSnapshot, b_snap: BundleSnapshot, real_tape: object
) -> None:
    d = diff(replay(real_tape, default_snap), replay(real_tape, b_snap))  # type: ignore[arg-type]
    material = d.material()
    assert material and all(
        {"open_to_skip", "skip_to_open", "size", "tp_sl", "error"} & set(c.kinds) for c in material
    )
    from s3.replay import output

    text = output.diff_text(replay(real_tape, default_snap), replay(real_tape, b_snap), d)  # type: ignore[arg-type]
    minor = len(d.changes) - len(material)
    if minor:
        assert f"{minor} events changed only their skip reason or the rules fired" in text
    assert "other reason changes" not in text


def test_walk_forward_windows(bars: object, default_snap: BundleSnapshot) -> None:
    parts = split(bars, 3)  # type: ignore[arg-type]
    assert [len(p.events) for p in parts] == [1000, 1000, 1000]
    assert parts[1].events[0].index == 0 and parts[1].funding == bars.funding  # type: ignore[attr-defined]
    rows = walk_forward(bars, [default_snap], EXITS, 3)  # type: ignore[arg-type]
    assert [r["window"] for r in rows] == [1, 2, 3]
    assert rows[0]["last_ts"] < rows[1]["first_ts"]
    for r, p in zip(rows, parts, strict=True):
        alone = replay(p, default_snap, EXITS)
        assert Decimal(r["bundles"][0]["pnl"]) == sum((t.pnl for t in alone.trades), Decimal(0))


def test_cli_ab_attribution_walk_forward_html_json(
    tmp_path: Path, bundle_b_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    html, js = tmp_path / "r.html", tmp_path / "r.json"
    code = main(
        [
            "replay",
            str(BARS),
            "--bundle",
            str(DEFAULT),
            "--against",
            str(bundle_b_dir),
            "--limit",
            "600",
            "--attribution",
            "--walk-forward",
            "2",
            "--quiet",
            "--html",
            str(html),
            "--json",
            str(js),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "Δ P&L (B - A)" in out and "95 % interval" in out
    assert "what each rule earns under default rev 1" in out
    assert "what each rule earns under default rev 2" in out
    assert "walk-forward (each window replayed on its own):" in out and "  #2 " in out
    doc = json.loads(js.read_text())
    assert {"diff", "outcomes_ab", "outcomes", "attribution", "walk_forward"} <= set(doc)
    assert len(doc["attribution"]["default rev 1"]["rules"]) == 31
    assert doc["outcomes"]["a"]["trades"] and doc["outcomes"]["b"]["equity"]
    page = html.read_text()
    for title in (
        "Outcomes A vs B",
        "Equity and drawdown",
        "Trades of default rev 1 on the price series",
        "What each rule earns (default rev 1): leave-one-out",
        "Walk-forward windows",
    ):
        assert title in page
    assert "<script" not in page and "https://" not in page and "<polyline" in page
    # --hold-ms: no outcomes, so no attribution either
    assert (
        main(["replay", str(BARS), "--bundle", str(DEFAULT), "--hold-ms", "60000", "--attribution"])
        == 2
    )
    assert "need the outcome simulation" in capsys.readouterr().err
    assert main(["replay", str(BARS), "--bundle", str(DEFAULT), "--walk-forward", "1"]) == 2


def test_a_missing_funding_history_fails_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = gzip.decompress((TAPES / "real_sample.jsonl.gz").read_bytes()).decode().splitlines()
    stripped = tmp_path / "nofunding.jsonl"
    stripped.write_text("\n".join(x for x in lines if '"kind":"funding"' not in x) + "\n")
    # window B opens at 23:59:21 and its first position is open across the 00:00 settlement
    assert main(["replay", str(stripped), "--bundle", str(DEFAULT), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "open across the funding time 1680652800000 (2023-04-05 00:00:00 UTC)" in err
    assert "no funding rate" in err
    # with its funding history the same tape replays
    assert (
        main(["replay", str(TAPES / "real_sample.jsonl.gz"), "--bundle", str(DEFAULT), "--quiet"])
        == 0
    )
