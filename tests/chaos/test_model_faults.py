"""The L2 model misbehaving in every worker (raises on every 3rd call, sleeps past its deadline
on every 4th) while the feed runs and the bundle reloads: every invariant of the chaos suite
holds, and every affected decision is degraded to x1.0 with its reason."""

from __future__ import annotations

from tests.chaos.conftest import SCALE, SEED
from tests.chaos.scenarios import run


def test_model_faults() -> None:
    report = run("model_faults", scale=SCALE, seed=SEED)
    assert report.ok, report.render()
