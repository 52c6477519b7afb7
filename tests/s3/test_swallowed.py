"""A background job that fails is logged and counted, and never silences the jobs beside it."""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace

import pytest

from s3 import metrics as metrics_mod
from s3.metrics import Metrics, swallowed
from s3.worker import Runner


def test_swallowed_counts_logs_once_per_window_and_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    m = Metrics()
    where = "test.swallowed.window"
    before = metrics_mod.SWALLOWED[where]
    with caplog.at_level(logging.WARNING, logger="s3.swallowed"):
        for _ in range(3):
            with swallowed(m, where):
                raise RuntimeError("boom")
    assert metrics_mod.SWALLOWED[where] == before + 3
    assert m.swallowed.labels(where)._value.get() == 3
    logged = [r for r in caplog.records if where in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None  # with its traceback, not 3 times
    with swallowed(None, where):  # nothing raised: nothing counted
        pass
    assert metrics_mod.SWALLOWED[where] == before + 3


def test_swallowed_lets_base_exceptions_through() -> None:
    with pytest.raises(KeyboardInterrupt), swallowed(None, "test.swallowed.base"):
        raise KeyboardInterrupt


def test_a_failing_stream_metrics_job_does_not_stop_heartbeat_or_self_heal() -> None:
    """Before the split, one `suppress(Exception)` held all three: the stream metrics raising
    on every tick meant the heartbeat and the self-heal never ran."""
    m = Metrics()
    stop = threading.Event()
    ran: list[str] = []

    def broken_metrics() -> None:
        raise RuntimeError("xinfo refused")

    def heartbeat() -> None:
        ran.append("heartbeat")

    def self_heal() -> None:
        ran.append("self_heal")
        if ran.count("self_heal") >= 2:
            stop.set()

    fake = SimpleNamespace(
        service=SimpleNamespace(
            settings=SimpleNamespace(heartbeat_sec=0.0, selfheal_sec=0.0),
            engine=SimpleNamespace(metrics=m),
        ),
        jobs=SimpleNamespace(heartbeat=heartbeat, self_heal=self_heal),
        update_stream_metrics=broken_metrics,
        _stop=stop,
    )
    t = threading.Thread(target=Runner._jobs_loop, args=(fake,), daemon=True)
    t.start()
    t.join(timeout=10)
    assert not t.is_alive()
    assert "heartbeat" in ran and ran.count("self_heal") >= 2
    assert m.swallowed.labels("jobs.stream_metrics")._value.get() >= 2
