"""What `/health` reports: built by the service, encoded by the HTTP app.

It lives on the service side so that `s3.http.app` depends on `s3.service` and never the reverse
(tests/test_architecture.py).
"""

from __future__ import annotations

from typing import Literal

import msgspec


class HealthResponse(msgspec.Struct, frozen=True):
    status: Literal["OK", "DEGRADED"]
    redis: str
    arango: str
    config_rev: int
    rules_loaded: int
    bundle_id: str
    streams: str = "ok"
    config: str = "ok"
    """"ok", or "fallback: ..." when a start serves a revision other than the active one."""
    degraded: list[str] = []
