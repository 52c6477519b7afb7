"""Startup and reload edge cases: a new instance started while the active revision is broken
(and no local last-good copy) serves the newest stored revision that verifies, says so in
`/health` and an event; a files document that is not an object is rejected like any bad bundle;
`s3 serve` with ArangoDB or Redis unreachable prints the reason, not a traceback."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from s3.adapters.redis_server import RedisServer, free_port
from s3.adapters.sqlite_store import SqliteStore
from s3.config.reload import Reloader
from s3.service import Service, StoreSource, publish
from tests.security.robust_helpers import DEFAULT, serve_env, settings


def bundle_dir(tmp_path: Path, rev: int, *, broken: bool = False) -> Path:
    root = tmp_path / f"rev{rev}"
    shutil.copytree(DEFAULT, root, ignore=shutil.ignore_patterns("cases", "examples"))
    manifest = root / "bundle.toml"
    manifest.write_text(manifest.read_text().replace("rev = 1\n", f"rev = {rev}\n", 1))
    if broken:
        (root / "zz_broken.rule").write_text("rule broken {\n  when mid > \n}\n")
    return root


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(str(tmp_path / "s3.db"))
    yield s
    s.close()


def events(store: SqliteStore, kind: str) -> list[dict[str, Any]]:
    return [e.detail for e in store.events_by_kind(kind, limit=50)]


def test_startup_with_a_broken_active_rev_serves_the_newest_that_verifies(
    tmp_path: Path, redis_server: RedisServer, store: SqliteStore
) -> None:
    for rev, broken in ((1, False), (2, False), (3, True), (4, True)):
        publish(store, None, None, bundle_dir(tmp_path, rev, broken=broken), reason=f"rev {rev}")
    assert store.get_active().rev == 4  # type: ignore[union-attr]
    cfg = settings(tmp_path, redis_server.address, cache_dir=str(tmp_path / "fresh-cache"))
    svc = Service.from_settings(cfg)  # used to exit: "no bundle to serve"
    try:
        assert svc.engine.registry.current.rev == 2  # 4 and 3 do not compile
        h = svc.health()
        assert h.status == "DEGRADED" and "config" in h.degraded and h.config_rev == 2
        assert h.config.startswith("fallback: serving default rev 2 "), h.config
        assert "active revision default rev 4 was rejected" in h.config
        [rejected] = [d for d in events(store, "CONFIG_REJECTED") if d["rev"] == 4]
        assert rejected["errors"] and rejected["reason"] == "startup"
        [applied] = [d for d in events(store, "CONFIG_APPLIED") if d.get("fallback_from_rev")]
        assert applied["rev"] == 2 and applied["fallback_from_rev"] == 4
        assert applied["reason"] == "newest revision in the store that verifies"
        assert applied["errors"] == rejected["errors"] and "rejected" in applied["why"]
        # Decisions flow on rev 2 meanwhile; a good publish ends the fallback.
        publish(store, None, None, bundle_dir(tmp_path, 5), reason="fixed")
        assert svc.reload("poll").status == "applied"
        h = svc.health()
        assert (h.status, h.config, h.config_rev) == ("OK", "ok", 5)
    finally:
        svc.close()


def test_startup_fallback_ends_when_the_served_rev_is_made_active(
    tmp_path: Path, store: SqliteStore
) -> None:
    publish(store, None, None, bundle_dir(tmp_path, 1), reason="good")
    publish(store, None, None, bundle_dir(tmp_path, 2, broken=True), reason="bad")
    reloader = Reloader(None, StoreSource(store), cache_dir=tmp_path / "cache")
    assert reloader.start_registry().current.rev == 1 and reloader.fallback
    active = store.get_bundle("default", 1)
    assert active is not None
    store.set_active("default", 1, active.checksum, "rollback")
    assert reloader.check_once("poll").status == "unchanged" and reloader.fallback is None


def test_startup_with_nothing_that_verifies_still_refuses_to_start(
    tmp_path: Path, store: SqliteStore
) -> None:
    publish(store, None, None, bundle_dir(tmp_path, 1, broken=True), reason="bad")
    reloader = Reloader(None, StoreSource(store), cache_dir=tmp_path / "cache")
    with pytest.raises(RuntimeError, match="no bundle to serve"):
        reloader.start_registry()


@pytest.mark.parametrize("files", ["[1, 2]", '"text"', "42", "null", '{"bundle.toml": 7}'])
def test_startup_a_files_document_that_is_not_an_object_is_rejected(
    tmp_path: Path, store: SqliteStore, files: str
) -> None:
    publish(store, None, None, bundle_dir(tmp_path, 1), reason="good")
    seen: list[tuple[str, dict[str, Any]]] = []
    reloader = Reloader(
        None,
        StoreSource(store),
        cache_dir=tmp_path / "cache",
        on_event=lambda k, d: seen.append((k, d)),
    )
    reloader.start_registry()
    publish(store, None, None, bundle_dir(tmp_path, 2), reason="next")
    with sqlite3.connect(tmp_path / "s3.db") as db:  # written behind the store's back
        db.execute("UPDATE config_bundles SET files = ? WHERE rev = 2", (files,))
    result = reloader.check_once("poll")
    assert result.status == "rejected", result
    assert "'files'" in result.reasons[0] and "config_bundles default rev 2" in result.reasons[0]
    kind, detail = seen[-1]
    assert kind == "CONFIG_REJECTED" and detail["rev"] == 2 and detail["serving_rev"] == 1
    assert reloader.registry is not None and reloader.registry.current.rev == 1
    # Rejected once: a poll does not fetch it again, nor write another event.
    assert reloader.check_once("poll").reasons == ["already rejected"] and len(seen) == 2


def run_serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "s3.cli", "serve", "--port", str(free_port())],
        env=serve_env(tmp_path, **env),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )


def test_startup_serve_with_arangodb_unreachable_says_so(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    done = run_serve(tmp_path, S3_DB_ARANGO_URI=f"http://127.0.0.1:{port}/s3")
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr + done.stdout
    # the last line (the driver may log its connection retries before it)
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("s3: error: cannot start: STORE_UNAVAILABLE: arangodb "), done
    assert f"127.0.0.1:{port}" in done.stderr


def test_startup_serve_with_redis_unreachable_says_so(tmp_path: Path) -> None:
    port = free_port()
    done = run_serve(tmp_path, S3_REDIS_ADDRESSES=f"127.0.0.1:{port}")
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr + done.stdout
    assert done.stderr.startswith("s3: error: cannot start: Redis is unavailable: "), done
