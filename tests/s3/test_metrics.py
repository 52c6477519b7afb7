"""The engine's metrics: remembered label children count into the same series."""

from __future__ import annotations

from s3.metrics import Metrics


def test_a_remembered_child_is_the_series_itself() -> None:
    m = Metrics()
    a = m.child(m.decisions, "skip", "GATE")
    assert m.child(m.decisions, "skip", "GATE") is a
    assert m.child(m.decisions, "open", "OK") is not a
    a.inc()
    m.child(m.decisions, "skip", "GATE").inc()
    m.decisions.labels("skip", "GATE").inc()
    m.child(m.decide_latency_ms, "manual").observe(3.0)
    text = m.exposition().decode()
    assert 's3_decisions_total{decision="skip",reason="GATE"} 3.0' in text
    assert 's3_strategy_decide_latency_ms_bucket{le="5.0",trigger="manual"} 1.0' in text
    other = Metrics()  # each engine has its own registry and its own children
    assert other.child(other.decisions, "skip", "GATE") is not a
