"""The fault scenarios (real processes on loopback, each bounded, each ending with the invariant
checker): kill -9 of workers, Redis restarted, Redis jitter, the feed stopping and resuming,
S4 failing, timing out and accepting late; a bundle reload in the middle of each."""

from __future__ import annotations

import pytest

from tests.chaos.conftest import SCALE, SEED, SOAK
from tests.chaos.scenarios import run

SHORT = ["kill9", "redis_restart", "redis_jitter", "feed_gap", "s4_faults"]


@pytest.mark.parametrize("name", SHORT)
def test_scenario(name: str) -> None:
    report = run(name, scale=SCALE, seed=SEED)
    assert report.ok, report.render()


@pytest.mark.skipif(not SOAK, reason="soak only: python -m tests.chaos --soak")
def test_everything_at_once() -> None:
    report = run("everything", scale=SCALE, seed=SEED)
    assert report.ok, report.render()
