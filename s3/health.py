"""What `/health` reports: built by the service, encoded by the HTTP app.

It lives on the service side so that `s3.http.app` depends on `s3.service` and never the reverse
(tests/test_architecture.py).
"""

from __future__ import annotations

from typing import Literal

import msgspec


class HealthResponse(msgspec.Struct, frozen=True):
    """`store` names the store in use and `store_status` its state; `arango` (the spec's field)
    is that state with ArangoDB and "not used" with SQLite."""

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
    store: Literal["sqlite", "arango"] = "sqlite"
    store_status: str = "ok"
