"""`s3 replay --snapshot F --check/--update` (a decision-level diff), `s3 bundle publish` that
runs the bundle's cases (refusing failures unless --force, recorded), `list`/`show` details, the
empty store, and every reload logged."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from s3.cli import main
from s3.service import publish

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "rulesets" / "default"
TAPE = str(ROOT / "data" / "tapes" / "real_window_a_40.jsonl")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out + out.err


def bumped(tmp_path: Path, name: str, rev: int = 2) -> Path:
    root = tmp_path / name
    shutil.copytree(DEFAULT, root)
    manifest = root / "bundle.toml"
    manifest.write_text(manifest.read_text().replace("rev = 1\n", f"rev = {rev}\n", 1))
    return root


def test_replay_snapshot_check_and_update(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snap = str(tmp_path / "snap.json")
    replay = ("replay", TAPE, "--quiet", "--snapshot", snap)
    code, out = run(capsys, *replay, "--bundle", str(DEFAULT), "--check")
    assert code == 2 and f"no snapshot at {snap}: create it with --update" in out
    code, out = run(capsys, *replay, "--bundle", str(DEFAULT), "--update")
    assert code == 0 and f"snapshot {snap}: written" in out
    code, out = run(capsys, *replay, "--bundle", str(DEFAULT), "--check")
    assert code == 0 and f"snapshot {snap}: no change" in out
    # a TP-only change: R-007's tp factor 1.1 -> 1.2
    tp = bumped(tmp_path, "tp")
    rule = tp / "market_quality.rule"
    rule.write_text(rule.read_text().replace("  then tp_mult *= 1.1\n", "  then tp_mult *= 1.2\n"))
    code, out = run(capsys, *replay, "--bundle", str(tp), "--check", "--max-list", "100")
    assert code == 1
    assert f"snapshot {snap}: 11 events changed, 0 added, 0 removed" in out, out
    assert "(config_rev and intent ids follow the new bundle rev: not listed per event)" in out
    assert (
        "000001 ETHUSDT 1723161317000 SELL:\n  rule_factors.R-007.tp_mult: 1.1 -> 1.2\n  tp_mult: 1.1 -> 1.2\n"
        in out
    )
    assert '  intent.tp_px: "2665.12" -> "2663.78"\n' in out  # SELL at the bid 2681.75
    assert "config_rev: 1 -> 2" not in out.split("snapshot ")[-1]
    diff_lines = [x for x in out.splitlines() if x.startswith("  ") and " -> " in x]
    assert len(diff_lines) < 60  # event, field, before -> after; not a raw JSON diff
    assert run(capsys, *replay, "--bundle", str(tp), "--update")[0] == 0
    assert run(capsys, *replay, "--bundle", str(tp), "--check")[0] == 0


def test_publish_runs_the_cases_and_records_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "s3.db"
    monkeypatch.setenv("S3_SQLITE_PATH", str(db))
    monkeypatch.delenv("S3_REDIS_ADDRESSES", raising=False)
    code, out = run(capsys, "bundle", "list")
    assert code == 0 and out.startswith(f"no bundles in the store (SQLite {db}); publish one with")
    code, out = run(capsys, "bundle", "show")
    assert code == 1 and "no active bundle: the store is empty" in out
    code, out = run(capsys, "bundle", "publish", str(DEFAULT), "--reason", "first")
    assert code == 0, out
    assert "published default rev 1" in out and "57 cases pass" in out
    assert "not announced (S3_REDIS_ADDRESSES unset" in out
    assert "running servers poll the store and pick it up within S3_CONFIG_POLL_SEC (5 s)" in out
    broken = bumped(tmp_path, "broken")
    rule = broken / "funding.rule"
    rule.write_text(
        rule.read_text().replace(
            "funding_next > funding_rich_long", "funding_next >= funding_rich_long"
        )
    )
    code, out = run(capsys, "bundle", "publish", str(broken))
    assert code == 1
    assert "FAIL " in out and "R-040 boundary" in out
    assert f"{broken}: not published: 1 of its cases fail or do not load" in out
    code, out = run(capsys, "bundle", "publish", str(broken), "--force", "--reason", "hotfix")
    assert code == 0 and "FORCED: 1 cases fail" in out
    code, out = run(capsys, "bundle", "list")
    lines = out.splitlines()
    assert lines[0].startswith("  default rev 1 ") and "reason: first" in lines[0]
    assert " by " in lines[0] and "published 20" in lines[0]
    assert lines[1].startswith("    Default L1 rule bundle for the USD-M perpetuals")  # in full
    assert lines[1].endswith("~0.03-0.04 bps on ETHUSDT.")
    assert (
        lines[2].startswith("* default rev 2 ")
        and "reason: hotfix (FORCED with 1 failing cases)" in lines[2]
    )
    code, out = run(capsys, "bundle", "show")
    assert '"forced": true' in out and '"reason": "hotfix (FORCED with 1 failing cases)"' in out
    assert '"ran": 57' in out and '"description": "Default L1 rule bundle' in out


def test_every_reload_is_logged(
    tmp_path: Path, redis_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.http.test_api import make_service

    svc = make_service(tmp_path, redis_server.address, None, "rl:")
    try:
        with caplog.at_level(logging.DEBUG, logger="s3.reload"):
            svc.reload("poll")
            publish(svc.store, None, None, bumped(tmp_path, "two"), reason="test")
            svc.reload("admin")
            bad = bumped(tmp_path, "bad", rev=3)
            (bad / "x.rule").write_text("rule Z-1 when nope > 1 then skip_entry\n")
            publish(svc.store, None, None, bad, reason="test")
            svc.reload("cfg:events")
        msgs = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "s3.reload"]
    finally:
        svc.close()
    assert msgs[0] == ("DEBUG", "reload unchanged: default rev 1 (trigger poll; reasons: -)")
    assert msgs[1][0] == "INFO" and msgs[1][1].startswith(
        "reload applied: default rev 2 (trigger admin"
    )
    assert msgs[2][0] == "WARNING" and msgs[2][1].startswith(
        "reload rejected: default rev 3 (trigger cfg:events; reasons: "
    )
    assert "nope" in msgs[2][1]
