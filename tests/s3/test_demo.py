"""`s3 demo` runs the whole engine on embedded defaults and leaves its store behind."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path


def _demo(cwd: Path) -> list[tuple[str, str, str]]:
    cwd.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "s3.cli", "demo", "--events", "40", "--quiet"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "events replayed" in out and "drift: none" in out and "where to look" in out
    db = cwd / "var" / "demo" / "s3.db"
    with sqlite3.connect(db) as conn:
        (decides,) = conn.execute(
            "select count(*) from strategy_events where kind = 'DECIDE'"
        ).fetchone()
        decisions = conn.execute(
            "select symbol, json_extract(decision, '$.action'),"
            " json_extract(decision, '$.reason_detail') from signals order by t0"
        ).fetchall()
    assert len(decisions) == 40 and decides == 40
    return decisions


def test_demo_replays_the_sample(tmp_path: Path) -> None:
    first = _demo(tmp_path / "a")
    assert {action for _, action, _ in first} == {"open", "skip"}
    # The same decisions every time: positions are closed between events, never while the
    # worker decides one (a race that made the opens vary from run to run).
    assert _demo(tmp_path / "b") == first
