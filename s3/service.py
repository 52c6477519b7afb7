"""Wiring: the running engine from `S3_*` settings — Redis (its own embedded server when
`S3_REDIS_ADDRESSES` is unset), the store (ArangoDB or the embedded SQLite file), the bundle
registry with hot reload, the S4 client, the stream worker and the scheduled jobs."""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import redis

from s3 import shadow
from s3.adapters import store_docs
from s3.adapters.redis_client import Client, connect
from s3.adapters.redis_keys import Keys
from s3.adapters.redis_producers import Emitter
from s3.adapters.redis_server import RedisServer
from s3.adapters.redis_streams import read_cfg_events
from s3.adapters.s4_client import S4Client
from s3.config.bundle import checksum_files, read_bundle_files
from s3.config.reload import (
    ActivePointer,
    BundleDoc,
    MalformedBundle,
    Reloader,
    ReloadResult,
    check_files,
)
from s3.config.settings import Settings
from s3.engine import Engine
from s3.health import HealthResponse
from s3.metrics import swallowed

log = logging.getLogger(__name__)

_THREAD_CHECKS = {"s3-stream": "streams", "s3-jobs": "jobs", "s3-reload": "reload"}
"""A dead background thread, by name, and the `/health` check it fails."""


class StoreSource:
    """Bundles from the store: `config_active` names the revision, `config_bundles` holds it."""

    def __init__(self, store: Any):
        self.store = store

    def active(self) -> ActivePointer | None:
        a = self.store.get_active()
        return None if a is None else ActivePointer(a.bundle_id, a.rev, a.checksum)

    def fetch(self, bundle_id: str, rev: int) -> BundleDoc | None:
        where = f"config_bundles {bundle_id} rev {rev}"
        try:
            b = self.store.get_bundle(bundle_id, rev)
        except msgspec.ValidationError as exc:
            # the store answered, with a document of the wrong shape: not a bundle
            raise MalformedBundle(f"{where}: {exc}") from None
        if b is None:
            return None
        return BundleDoc(b.bundle_id, b.rev, b.checksum, dict(check_files(b.files, where)))

    def revisions(self, bundle_id: str) -> list[int]:
        return [b.rev for b in self.store.list_bundles(bundle_id)]


def publish(
    store: Any,
    redis: Client | None,
    keys: Keys | None,
    root: str | Path,
    *,
    reason: str,
    by: str = "s3",
    now_ms: int | None = None,
) -> tuple[str, int, str]:
    """Write a bundle directory to the store, make it active and announce it on `cfg:events`.

    The caller validates first (`s3 bundle publish` does); a rev already stored with other content
    is refused by the store (a rev is immutable).
    """
    import tomllib

    files = read_bundle_files(root)
    if "bundle.toml" not in files:
        raise ValueError(f"{root}: no bundle.toml here (not a bundle directory; S3_BUNDLE_DIR?)")
    try:
        manifest = tomllib.loads(files.get("bundle.toml", ""))
        bundle_id, rev = str(manifest["bundle_id"]), int(manifest["rev"])
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(
            f"{root}: not a bundle (its bundle.toml names no bundle_id and rev: "
            f"{type(exc).__name__}: {exc})"
        ) from None
    checksum = checksum_files(files)
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    store.put_bundle(
        {
            "bundle_id": bundle_id,
            "rev": rev,
            "checksum": checksum,
            "files": files,
            "description": str(manifest.get("description", "")),
            "published_at": now,
            "published_by": by,
        }
    )
    store.set_active(bundle_id, rev, checksum, reason)
    if redis is not None and keys is not None:
        redis.xadd(
            keys.cfg_events,
            {
                "rev": str(rev),
                "bundle_id": bundle_id,
                "reason": reason,
                "published_at_ms": str(now),
            },
            maxlen=10_000,
            approximate=True,
        )
    return bundle_id, rev, checksum


def claim_ttl_ms(settings: Settings) -> int:
    """How long an in-progress idempotency claim lives: twice the longest S4 submission (every
    attempt timing out, with the client's backoff) plus 2 s for Redis and the store. A process
    killed mid-decision then blocks its intent for this long, not for the result's 24 h."""
    retries = settings.s4_retries
    s4_budget_s = settings.s4_timeout_s * (retries + 1) + 0.05 * retries * (retries + 1) / 2
    return int(2000 * s4_budget_s) + 2000


def open_store(settings: Settings) -> Any:
    if settings.db_arango_uri:
        from s3.adapters.arango_store import ArangoStore

        try:  # python-arango is imported when the store is opened
            return ArangoStore.from_settings(settings)
        except ModuleNotFoundError as exc:  # an optional extra: say how to get it
            if (exc.name or "").split(".")[0] != "arango":
                raise
            raise RuntimeError(
                "S3_DB_ARANGO_URI is set but the ArangoDB client is not installed: "
                "pip install 's3-strategy-engine[arango]' (or unset S3_DB_ARANGO_URI for SQLite)"
            ) from None
    from s3.adapters.sqlite_store import SqliteStore

    Path(settings.sqlite_path).parent.mkdir(parents=True, exist_ok=True)
    return SqliteStore(settings.sqlite_path)


_reload_log = logging.getLogger("s3.reload")


def log_reload(result: ReloadResult, trigger: str) -> None:
    """Every reload that did something is logged: applied or rejected (with why), or the source
    unavailable; an unchanged poll only at DEBUG."""
    why = "; ".join(result.reasons) or "-"
    level = {
        "applied": logging.INFO,
        "rejected": logging.WARNING,
        "unavailable": logging.WARNING,
    }.get(result.status, logging.DEBUG)
    _reload_log.log(
        level,
        "reload %s: %s rev %s (trigger %s; reasons: %s)",
        result.status,
        result.bundle_id or "?",
        result.rev if result.rev is not None else "?",
        trigger,
        why,
    )


@dataclass
class Service:
    settings: Settings
    engine: Engine
    reloader: Reloader
    store: Any
    redis_server: RedisServer | None = None
    api_token: str | None = None
    cfg_events_from: str = "$"
    """Where the reload watch starts reading `cfg:events`: the stream's last id before the startup
    read the active pointer, so a publish during startup is seen at once, not at the next poll."""
    _threads: list[threading.Thread] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    dead_threads: dict[str, str] = field(default_factory=dict)
    """Background threads that died, by name, with why; `/health` fails while any is listed."""
    on_fatal: list[Callable[[str], None]] = field(default_factory=list)
    """Called (from the dying thread) when a background thread dies: `s3 serve` stops and exits 1."""

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, *, s4_url: str | None = None
    ) -> Service:
        from s3.adapters.redis_idem import Idempotency
        from s3.adapters.redis_risk import RiskLedger

        settings = settings or Settings()
        if not settings.api_token and not settings.auth_disabled:
            raise ValueError(
                "S3_API_TOKEN is not set: set it, or set S3_AUTH_DISABLED=1 for local use"
            )
        server = None
        if settings.redis_addresses:
            addresses = settings.redis_addresses
        else:
            server = RedisServer().start()
            atexit.register(server.stop)  # a start that fails below must not leave it running
            addresses = server.address
        client, keys = connect(addresses, timeout_s=settings.redis_timeout_s)
        keys = Keys(prefix=settings.redis_prefix, risk_tag=keys.risk_tag)
        store = open_store(settings)
        if store.get_active() is None:  # an empty store: publish the embedded default bundle
            publish(
                store,
                client,
                keys,
                settings.bundle_dir,
                reason="bootstrap from " + settings.bundle_dir,
            )
        events: list[tuple[str, dict[str, Any]]] = []

        def on_event(kind: str, detail: dict[str, Any]) -> None:
            events.append((kind, detail))
            with swallowed(None, "config_event.store"):  # the store down must not stop a reload
                store.put_event(
                    {
                        "event_id": store_docs.event_id(
                            kind, detail.get("bundle_id"), detail.get("rev"), time.time_ns()
                        ),
                        "kind": kind,
                        "symbol": "",
                        "ts": int(time.time() * 1000),
                        "detail": detail,
                    }
                )

        build = None
        if settings.bundle_build == "process":
            from s3.config.offpath import build_off_path

            timeout_s = settings.bundle_build_timeout_s

            def build(doc: BundleDoc, s: Settings | None) -> tuple[Any, list[str]]:
                return build_off_path(doc, s, timeout_s=timeout_s, cold="in_process")

        cfg_events_from = "$"
        with contextlib.suppress(redis.RedisError):  # Redis down: from when the watch starts
            newest = client.xrevrange(keys.cfg_events, "+", "-", count=1)
            cfg_events_from = str(newest[0][0]) if newest else "0-0"
        reloader = Reloader(
            None,
            StoreSource(store),
            cache_dir=Path(settings.cache_dir),
            on_event=on_event,
            settings=settings,
            build=build,
        )
        registry = reloader.start_registry()
        client.set(keys.cfg_rcu_rev, str(registry.current.rev))
        url = s4_url if s4_url is not None else settings.s4_url
        s4 = (
            S4Client(url, timeout_s=settings.s4_timeout_s, retries=settings.s4_retries)
            if url
            else None
        )
        engine = Engine(
            registry=registry,
            redis=client,
            keys=keys,
            ledger=RiskLedger(client, keys),
            idem=Idempotency(client, keys),
            store=store,
            emitter=Emitter(client, keys, settings.stream_maxlen),
            s4=s4,
            dual_track=settings.dual_track,
            claim_ttl_ms=claim_ttl_ms(settings),
        )
        engine.metrics.config_rev.set(registry.current.rev)
        shadow.install_from_env(engine, store, settings)

        def applied(snap: Any) -> None:
            engine.metrics.config_rev.set(snap.rev)
            # Redis down at this moment must not undo the swap (already made) nor stop the
            # reload watch; the watch writes cfg:rcu:rev again at its next poll.
            with contextlib.suppress(redis.RedisError):
                client.set(keys.cfg_rcu_rev, str(snap.rev))

        reloader.on_applied = applied
        return cls(settings, engine, reloader, store, server, settings.api_token, cfg_events_from)

    # -- background threads ----------------------------------------------------------------------------
    def spawn(
        self, name: str, target: Callable[[], Any], stopping: threading.Event
    ) -> threading.Thread:
        """Run ``target`` on a daemon thread that never dies quietly: if it raises, or returns
        while ``stopping`` is not set, `thread_died` reports it."""

        def run() -> None:
            try:
                target()
            except BaseException as exc:
                log.critical("background thread %s died", name, exc_info=exc)
                self.thread_died(name, f"{type(exc).__name__}: {exc}"[:500])
                return
            if not stopping.is_set():
                self.thread_died(name, "returned without being asked to stop")

        t = threading.Thread(target=run, name=name, daemon=True)
        t.start()
        return t

    def thread_died(self, name: str, reason: str) -> None:
        """Record a dead background thread (`/health` fails from now on) and tell `on_fatal`."""
        self.dead_threads[name] = reason
        log.critical(
            "background thread %s is dead (%s); the process must be restarted", name, reason
        )
        for callback in list(self.on_fatal):
            with swallowed(self.engine.metrics, "on_fatal.callback"):
                callback(f"background thread {name} died: {reason}")

    # -- health and admin -----------------------------------------------------------------------------
    def health(self) -> HealthResponse:
        degraded = []
        streams = "ok"
        for name, reason in list(self.dead_threads.items()):
            check = _THREAD_CHECKS.get(name, name)
            degraded.append(check)
            if check == "streams":
                streams = f"dead: {reason}"
        try:
            self.engine.redis.ping()
            redis_state = "ok"
        except Exception as exc:
            redis_state = f"down: {type(exc).__name__}"
            degraded.append("redis")
        try:
            self.store.ping()
            store_state = "ok"
        except Exception as exc:
            store_state = f"down: {type(exc).__name__}"
            degraded.append("store")
        config = "ok"
        if self.reloader.fallback is not None:
            config = f"fallback: {self.reloader.fallback}"
            degraded.append("config")
        snap = self.engine.registry.current
        return HealthResponse(
            status="OK" if not degraded else "DEGRADED",
            redis=redis_state,
            arango=store_state if self.settings.db_arango_uri else "not used",
            store="arango" if self.settings.db_arango_uri else "sqlite",
            store_status=store_state,
            config_rev=snap.rev,
            rules_loaded=len(snap.ruleset.rules),
            bundle_id=snap.bundle_id,
            streams=streams,
            config=config,
            degraded=degraded,
        )

    def reload(self, reason: str) -> ReloadResult:
        result = self.reloader.check_once(reason)
        self.engine.metrics.config_reloads.labels(result.status).inc()
        log_reload(result, reason)
        return result

    def trace(
        self, symbol: str, side: str | None, features: dict[str, Any] | None
    ) -> list[dict[str, Any]]:
        snap = self.engine.registry.current
        from s3.engine import features_from_hash

        if features is None:
            raw = self.engine.redis.hgetall(self.engine.keys.feat_last(symbol)) or {}
            features = features_from_hash({str(k): str(v) for k, v in raw.items()})
        snapshot, problems = snap.ruleset.schema.validate(
            {**features, "symbol": symbol, "side": (side or "").upper()}
        )
        if problems:
            return []
        outcome = snap.ruleset.evaluate(snapshot, trace=True)
        return [msgspec.to_builtins(s) for s in outcome.trace or ()]

    # -- background: reload on cfg:events and by polling ------------------------------------------------
    def start_reload_watch(self) -> None:
        if self.settings.bundle_build == "process":
            from s3.config.offpath import warm_up

            warm_up()

        def watch() -> None:
            last_id = self.cfg_events_from
            next_poll = time.monotonic() + self.settings.config_poll_sec
            while not self._stop.is_set():
                try:
                    last_id, events = read_cfg_events(
                        self.engine.redis, self.engine.keys, last_id, block_ms=200
                    )
                except Exception:
                    events = []
                    self._stop.wait(0.5)
                if events:
                    published = max(
                        (int(e.fields.get("published_at_ms", "0") or 0) for e in events), default=0
                    )
                    try:
                        result = self.reload("cfg:events")
                    except Exception:  # the poll below tries again; the thread must live on
                        result = ReloadResult("unavailable")
                    if result.status == "applied" and published:
                        self.engine.metrics.config_reload_lag_s.set(
                            max(0.0, time.time() - published / 1000)
                        )
                if time.monotonic() >= next_poll:
                    with swallowed(self.engine.metrics, "reload.poll"):  # see `applied`
                        self.reload("poll")
                        self.engine.redis.set(
                            self.engine.keys.cfg_rcu_rev, str(self.engine.registry.current.rev)
                        )
                    next_poll = time.monotonic() + self.settings.config_poll_sec

        self._threads.append(self.spawn("s3-reload", watch, self._stop))

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        with swallowed(None, "close.redis"):
            self.engine.redis.close()
        with swallowed(None, "close.store"):
            self.store.close()
        if self.engine.s4 is not None:
            self.engine.s4.close()
        if self.redis_server is not None:
            self.redis_server.stop()
