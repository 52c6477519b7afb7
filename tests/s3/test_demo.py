"""`s3 demo` runs the whole engine on embedded defaults and leaves its store behind."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path


def test_demo_replays_the_sample(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "s3.cli", "demo", "--events", "40", "--quiet"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "events replayed" in out and "drift: none" in out and "where to look" in out
    db = tmp_path / "var" / "demo" / "s3.db"
    with sqlite3.connect(db) as conn:
        (signals,) = conn.execute("select count(*) from signals").fetchone()
        (decides,) = conn.execute(
            "select count(*) from strategy_events where kind = 'DECIDE'"
        ).fetchone()
    assert signals == 40 and decides == 40
