"""`s3 serve`, `s3 worker`, `s3 demo` and `s3 bundle publish|show|list|rollback`."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from s3.config.settings import Settings, SettingsError, load


class UsageError(Exception):
    pass


class Unavailable(Exception):
    """A dependency (Redis, the store) cannot be reached at start: exit 1 with its reason."""


def _settings() -> Settings:
    try:
        return load()
    except SettingsError as exc:  # names each variable, its value and the problem
        raise UsageError(f"invalid S3_* settings:\n{exc}") from None


def _uvicorn_server_class() -> type:
    import contextlib

    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn re-raises SIGTERM after its own shutdown, which would kill the process before
        the worker drains; S3 handles the signals itself instead."""

        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            yield

    return Server


def _service() -> Any:
    from s3.service import Service

    with _dependencies():
        try:
            return Service.from_settings(_settings())
        except (ValueError, RuntimeError) as exc:  # a clear reason, not a traceback
            raise UsageError(str(exc)) from None


def _dependencies() -> Any:
    """Turn Redis or the store found unreachable at start into `Unavailable` (its reason, no
    traceback)."""
    import contextlib

    import redis

    from s3.errors import S3Error

    @contextlib.contextmanager
    def guard() -> Any:
        try:
            yield
        except S3Error as exc:  # the store adapters' DependencyUnavailable
            raise Unavailable(f"cannot start: {exc}") from None
        except redis.RedisError as exc:
            raise Unavailable(f"cannot start: Redis is unavailable: {exc}") from None

    return guard()


def _fatal_exit(service: Any, stop: Any) -> None:
    """When a background thread dies, ``stop()`` and (after the caller's shutdown) exit 1."""

    def on_fatal(reason: str) -> None:
        print(
            f"s3: error: {reason}; stopping (exit 1) so that a supervisor restarts it",
            file=sys.stderr,
            flush=True,
        )
        stop()

    service.on_fatal.append(on_fatal)


def _listen(host: str, port: int) -> Any:
    """The listening socket, bound before anything starts: a port in use is a clear error, not
    a "serving on" line followed by a failure."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def _logging() -> None:
    """The process's logs on stderr: `s3.*` at INFO (reloads applied or rejected, errors)."""
    import logging

    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    logging.getLogger("s3").setLevel(logging.INFO)


def serve(args: argparse.Namespace) -> int:
    from s3.http.app import create_app
    from s3.http.server import server_config
    from s3.worker import Runner

    settings = _settings()  # bad settings first: they name the variable
    _logging()
    if not settings.api_token and not settings.auth_disabled:
        raise UsageError("S3_API_TOKEN is not set: set it, or set S3_AUTH_DISABLED=1 for local use")
    sock = _listen(args.host, args.port)
    try:
        service = _service()
    except BaseException:
        sock.close()
        raise
    runner = Runner(service)
    with _dependencies():
        runner.start()
    service.start_reload_watch()
    app = create_app(deps=service)
    _Server = _uvicorn_server_class()
    print(
        f"s3: serving on http://{args.host}:{args.port} (bundle {service.engine.registry.current.bundle_id} "
        f"rev {service.engine.registry.current.rev}; redis {'embedded' if service.redis_server else 'external'})",
        flush=True,
    )
    settings = service.settings
    server = _Server(
        server_config(
            app,
            host=args.host,
            port=args.port,
            request_timeout_s=settings.http_request_timeout_s,
            keepalive_s=settings.http_keepalive_s,
            log_level="warning",
        )
    )

    def on_signal(*_: object) -> None:
        server.should_exit = True  # stop taking requests; in-flight ones finish

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    _fatal_exit(service, lambda: setattr(server, "should_exit", True))
    try:
        server.run(sockets=[sock])
    finally:  # then the stream worker finishes its in-flight entry and acks what it handled
        runner.stop()
        service.close()
    if service.dead_threads:
        return 1
    print("s3: stopped", flush=True)
    return 0


def worker(args: argparse.Namespace) -> int:
    from s3.worker import Runner

    _logging()
    service = _service()
    runner = Runner(service)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    _fatal_exit(service, stop.set)
    with _dependencies():
        runner.start()
    service.start_reload_watch()
    print(f"s3: worker consuming feat:events:{{{','.join(runner.symbols)}}}", flush=True)
    stop.wait()
    runner.stop()
    service.close()
    return 1 if service.dead_threads else 0


def demo(args: argparse.Namespace) -> int:
    from s3.demo import run_demo

    return run_demo(events=args.events, quiet=args.quiet)


# -- bundles in the store ------------------------------------------------------------------------------
def _store_and_redis() -> tuple[Any, Any, Any]:
    from s3.adapters.redis_client import connect
    from s3.service import open_store

    s = _settings()
    try:
        store = open_store(s)
    except RuntimeError as exc:  # e.g. the ArangoDB extra missing
        raise UsageError(str(exc)) from None
    client = keys = None
    if s.redis_addresses:
        client, keys = connect(s.redis_addresses)
    return store, client, keys


def bundle_publish(args: argparse.Namespace) -> int:
    from s3 import bundle_cli
    from s3.config.bundle import load_dir
    from s3.service import publish

    settings = _settings()
    result = load_dir(args.dir, settings)
    for d in result.diagnostics:
        print(d.render(result.texts))
    if result.snapshot is None:
        print(f"{args.dir}: not published (errors above)")
        return 1
    ran, failing = bundle_cli.run_cases(result.snapshot, args.dir)
    for line in failing:
        print(line)
    if failing and not args.force:
        print(
            f"{args.dir}: not published: {len(failing)} of its cases fail or do not load "
            "(above; `s3 rules test` shows more). Fix them, or publish anyway with --force "
            "(recorded as forced)"
        )
        return 1
    reason = args.reason or "publish"
    if failing:
        reason += f" (FORCED with {len(failing)} failing cases)"
    store, client, keys = _store_and_redis()
    by = bundle_cli.who()
    try:
        bundle_id, rev, checksum = publish(store, client, keys, args.dir, reason=reason, by=by)
    except ValueError as exc:
        print(f"{args.dir}: not published: {exc}")
        return 1
    bundle_cli.record(
        store,
        bundle_id,
        rev,
        {
            "reason": reason,
            "by": by,
            "forced": bool(failing),
            "forced_failures": f"{len(failing)} failing cases" if failing else "",
            "cases": {"ran": ran, "failing": failing[:50]},
        },
    )
    announced = (
        "announced on cfg:events"
        if client is not None
        else "not announced (S3_REDIS_ADDRESSES unset: this command reaches no Redis); "
        f"running servers poll the store and pick it up within S3_CONFIG_POLL_SEC "
        f"({settings.config_poll_sec:g} s)"
    )
    cases = f"{ran} cases pass" if not failing else f"FORCED: {len(failing)} cases fail"
    print(f"published {bundle_id} rev {rev} ({checksum[:12]}), now active; {cases}; {announced}")
    return 0


def bundle_list(args: argparse.Namespace) -> int:
    from s3 import bundle_cli

    store, _, _ = _store_and_redis()
    s = _settings()
    where = f"ArangoDB {s.db_arango_uri}" if s.db_arango_uri else f"SQLite {s.sqlite_path}"
    for line in bundle_cli.list_lines(store, args.bundle_id, where):
        print(line)
    return 0


def bundle_show(args: argparse.Namespace) -> int:
    store, _, _ = _store_and_redis()
    active = store.get_active()
    if args.rev is None:
        if active is None:
            print("no active bundle: the store is empty; publish one with: s3 bundle publish DIR")
            return 1
        bundle_id, rev = active.bundle_id, active.rev
    else:
        bundle_id = args.bundle_id or (active.bundle_id if active else "default")
        rev = args.rev
    b = store.get_bundle(bundle_id, rev)
    if b is None:
        print(f"no bundle {bundle_id} rev {rev}")
        return 1
    from s3 import bundle_cli

    print(bundle_cli.show_doc(store, b))
    return 0


def bundle_rollback(args: argparse.Namespace) -> int:
    import time

    store, client, keys = _store_and_redis()
    active = store.get_active()
    bundle_id = args.bundle_id or (active.bundle_id if active else None)
    if bundle_id is None:
        print("no active bundle and no --bundle-id")
        return 1
    b = store.get_bundle(bundle_id, args.rev)
    if b is None:
        print(f"no bundle {bundle_id} rev {args.rev} to roll back to")
        return 1
    store.set_active(bundle_id, args.rev, b.checksum, f"rollback to rev {args.rev}")
    if client is not None:
        client.xadd(
            keys.cfg_events,
            {
                "rev": str(args.rev),
                "bundle_id": bundle_id,
                "reason": "rollback",
                "published_at_ms": str(int(time.time() * 1000)),
            },
        )
    print(f"{bundle_id} rev {args.rev} is active again")
    return 0


def add_commands(sub: Any, parser_class: Any) -> None:
    s = sub.add_parser("serve", help="HTTP API + stream worker + scheduled jobs")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.set_defaults(func=serve)
    w = sub.add_parser("worker", help="the stream worker and the jobs, without HTTP")
    w.set_defaults(func=worker)
    d = sub.add_parser("demo", help="replay a sample feature stream through the whole engine")
    d.add_argument(
        "--events", type=int, default=0, help="events to replay (default: the whole sample)"
    )
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=demo)
    b = sub.add_parser("bundle", help="publish, list, show and roll back bundles in the store")
    bsub = b.add_subparsers(dest="bundle_command", required=True, parser_class=parser_class)
    p = bsub.add_parser("publish", help="validate, compile, store, activate and announce a bundle")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--reason", default="", help="why (shown by list and show)")
    p.add_argument(
        "--force",
        action="store_true",
        help="publish even when the bundle's cases fail (recorded as forced)",
    )
    p.set_defaults(func=bundle_publish)
    ls = bsub.add_parser("list", help="the stored revisions (* = active)")
    ls.add_argument("--bundle-id", default=None)
    ls.set_defaults(func=bundle_list)
    sh = bsub.add_parser("show", help="one revision (default: the active one)")
    sh.add_argument("rev", type=int, nargs="?", default=None)
    sh.add_argument("--bundle-id", default=None)
    sh.set_defaults(func=bundle_show)
    rb = bsub.add_parser("rollback", help="make a stored revision active again")
    rb.add_argument("rev", type=int)
    rb.add_argument("--bundle-id", default=None)
    rb.set_defaults(func=bundle_rollback)


def main_guard(func: Any, args: argparse.Namespace) -> int:
    try:
        code: int = func(args)
        return code
    except UsageError as exc:
        print(f"s3: error: {exc}", file=sys.stderr)
        return 2
