"""The chaos suite's settings and its report.

Short by default (part of the normal test run). ``S3_CHAOS_SOAK=1`` selects the soak variant
(longer runs, the "everything at once" scenario, more fuzzing); ``S3_CHAOS_SCALE`` stretches the
scenarios' feeds (default 1, soak 10); ``S3_CHAOS_SEED`` varies them. `python -m tests.chaos`
sets these from its options. Each scenario's report is printed at the end of the session.
"""

from __future__ import annotations

import os

import pytest

from tests.chaos.harness import REPORTS

SOAK = os.environ.get("S3_CHAOS_SOAK", "") not in ("", "0")
SCALE = float(os.environ.get("S3_CHAOS_SCALE") or (10 if SOAK else 1))
SEED = int(os.environ["S3_CHAOS_SEED"]) if os.environ.get("S3_CHAOS_SEED") else None


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not REPORTS:
        return
    terminalreporter.section(
        f"chaos reports ({'soak' if SOAK else 'short'}, scale {SCALE:g}"
        f"{'' if SEED is None else f', seed {SEED}'})"
    )
    for report in REPORTS:
        terminalreporter.write_line(report.render())
