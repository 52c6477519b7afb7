"""Which modules of `s3/` and `dsl/` one `POST /decide` runs code in, and how many lines they hold.

    .venv/bin/python tools/decide_path.py

Starts an embedded redis-server, the S4 stand-in and the service on the default ruleset, makes one
warm-up decision (a dry run), then profiles a real one (an open: reserved, stored, sent to S4) (every thread) and prints each module entered, in
the order first entered, with its size. Imports and module bodies are not counted (only calls).
"""

from __future__ import annotations

import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    sys.path.insert(0, str(ROOT))
    import json

    from litestar.testing import TestClient

    from s3.adapters.redis_server import RedisServer
    from s3.config.settings import Settings
    from s3.http.app import create_app
    from s3.s4_standin import S4Server
    from s3.service import Service

    example = json.loads(
        (ROOT / "rulesets" / "default" / "examples" / "btc_buy_real.json").read_text()
    )
    auth = {"Authorization": "Bearer s3cret"}
    with RedisServer() as rs, S4Server() as s4, tempfile.TemporaryDirectory() as tmp:
        svc = Service.from_settings(
            Settings(
                api_token="s3cret",
                redis_addresses=rs.address,
                sqlite_path=f"{tmp}/s3.db",
                cache_dir=f"{tmp}/cache",
                bundle_dir=str(ROOT / "rulesets" / "default"),
                s4_url=s4.url,
            )
        )
        e = svc.engine
        e.redis.set(e.keys.kill_switch, "OFF")
        e.redis.set(e.keys.health, "GREEN")
        seen: dict[str, None] = {}
        roots = (str(ROOT / "s3"), str(ROOT / "dsl"))

        active = threading.Event()

        def prof(frame: Any, event: str, arg: Any) -> None:
            if event == "call" and active.is_set():
                f = frame.f_code.co_filename
                if f.startswith(roots) and frame.f_code.co_name != "<module>":
                    seen.setdefault(f, None)

        threading.setprofile(prof)  # before the client starts its threads
        sys.setprofile(prof)
        try:
            with TestClient(create_app(deps=svc)) as c:
                for i, trace in enumerate((False, True)):
                    features = {**example, "ts": e.clock_ms()}
                    e.redis.hset(
                        e.keys.feat_last("BTCUSDT"),
                        mapping={k: str(v) for k, v in features.items() if k != "symbol"},
                    )
                    if trace:
                        active.set()
                    r = c.post(
                        "/decide",
                        json={
                            "symbol": "BTCUSDT",
                            "sideHint": "BUY",
                            "context": {"t0": 1 + i},
                            "dry_run": not trace,  # the warm-up reserves nothing
                        },
                        headers=auth,
                    )
                    active.clear()
                    assert r.status_code == 200, r.text
            body = r.json()
            print(
                f"decision: {body.get('decision')} {body.get('reason_detail') or body.get('reason')}"
            )
        finally:
            sys.setprofile(None)
            threading.setprofile(None)  # type: ignore[arg-type]
            svc.close()
    total = 0
    for f in seen:
        n = len(Path(f).read_text(encoding="utf-8").splitlines())
        total += n
        print(f"{n:6d}  {Path(f).relative_to(ROOT)}")
    print(f"{len(seen)} modules, {total} lines")


if __name__ == "__main__":
    main()
