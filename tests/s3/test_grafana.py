"""docs/grafana/s3.json queries only metrics the service exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from s3.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "s3.json"
PROMQL_WORDS = {
    "sum",
    "by",
    "rate",
    "histogram_quantile",
    "max",
    "topk",
    "clamp_min",
    "le",
    "without",
    "avg",
}


def test_every_query_names_an_exported_metric() -> None:
    exported = Metrics().names()
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    used = set()
    for expr in exprs:
        stripped = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
        stripped = re.sub(r"\[[^\]]*\]", "", stripped)  # ranges
        names = set(re.findall(r"[a-z_][a-z0-9_]*", stripped)) - PROMQL_WORDS
        names = {n for n in names if n.startswith("s3_")}
        assert names, expr
        missing = names - exported
        assert not missing, f"{expr}: {missing} not exported"
        used |= names
    # every SLI of spec §9 has a panel
    for needed in (
        "s3_strategy_decide_latency_ms_bucket",
        "s3_gate_skip_total",
        "s3_rules_fired_total",
        "s3_intent_emit_total",
        "s3_config_rev",
        "s3_config_reload_lag_seconds",
        "s3_stream_lag_entries",
    ):
        assert needed in used
