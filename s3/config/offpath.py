"""Build and verify a bundle off the serving path: in a child process, then hand the result over.

A reload used to build the new revision on a thread of the serving process: parse, check, lint
and compile are Python work (seconds for thousands of rules) holding the GIL against every
decision, and a bundle crafted to be slow froze `/decide` for as long. Here the whole build runs
in a child process (forked from a clean fork server, so it starts in milliseconds), under a wall
clock limit: a bundle that is slow or crashes the build costs the child, never the server. The
child sends back the snapshot it built: the evaluator as its code object (marshal: no compile in
the parent), the rest pickled rule by rule. The parent unpickles one rule at a time, yielding
the GIL between rules, and swaps the reference in (RCU, `s3.config.reload`).

The child runs the same build as `compile_doc` (the DSL's own checks of the generated code
included); the parent trusts its own child, whose only input is the bundle.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import marshal
import multiprocessing
import pickle
import threading
import time
import types
from multiprocessing.connection import Connection
from typing import Any

from s3.config.settings import Settings

log = logging.getLogger(__name__)

_SPECIAL = ("rules", "checked", "_fast")
_MP: Any = None


def _context() -> Any:
    """The fork-server context, its server preloaded with the build (started on first use)."""
    global _MP
    if _MP is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["s3.config._build_preload", "s3.config.offpath"])
        _MP = ctx
    return _MP


_READY = threading.Event()
"""Set once the fork server runs (`warm_up` or a first build that waited for it)."""


def _start_server() -> None:
    from multiprocessing import forkserver

    _context()
    forkserver.ensure_running()
    _READY.set()


def warm_up(delay_s: float = 10.0) -> None:
    """Start the fork server after ``delay_s`` (it imports the build and builds the DSL parser
    once, ~1 s of CPU), on a background thread, so that a later reload does not wait for it. The
    delay spares the cost to processes that live only seconds; a reload before it starts the
    server itself."""

    def start() -> None:
        try:
            _start_server()
        except Exception as exc:  # the first build will try again, and say why if it fails
            log.warning("bundle build fork server did not start: %s", exc)

    timer = threading.Timer(delay_s, start)
    timer.name, timer.daemon = "s3-build-warmup", True
    timer.start()


# -- the child ------------------------------------------------------------------------------------
class _Pickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO, unset: object):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._unset = unset

    def persistent_id(self, obj: Any) -> str | None:
        return "UNSET" if obj is self._unset else None


def _dumps(value: Any, unset: object) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, unset).dump(value)
    return buf.getvalue()


def pack(snap: Any) -> dict[str, Any]:
    """A `BundleSnapshot` as bytes the parent can load in small steps."""
    from dsl import compiler

    rs = snap.ruleset
    fn = rs._fast
    unset = compiler._UNSET
    fields = {f.name: getattr(rs, f.name) for f in dataclasses.fields(rs) if f.name not in _SPECIAL}
    checked = rs.checked
    shell = dataclasses.replace(checked, rules=())
    namespace = {k: v for k, v in fn.__globals__.items() if k != fn.__name__}
    return {
        "snapshot": _dumps(
            {
                "bundle_id": snap.bundle_id,
                "rev": snap.rev,
                "params": snap.params,
                "checksum": snap.checksum,
                "fields": fields,
                "checked": shell,
            },
            unset,
        ),
        "rules": [_dumps(r, unset) for r in rs.rules],
        "code": marshal.dumps(fn.__code__),
        "name": fn.__name__,
        "namespace": _dumps((namespace, fn.__defaults__), unset),
    }


def _child(conn: Connection, doc: Any, settings: Settings | None) -> None:
    import contextlib
    import os

    from s3.config.reload import compile_doc

    niceness = settings.bundle_build_nice if settings is not None else 0
    if niceness:
        with contextlib.suppress(OSError, AttributeError):  # best effort (not everywhere)
            os.nice(niceness)
    try:
        try:
            snap, reasons = compile_doc(doc, settings)
        except BaseException as exc:  # anything at all: the parent reports it, never runs it
            conn.send(("error", f"{type(exc).__name__}: {exc}"[:2000]))
            return
        if snap is None:
            conn.send(("rejected", reasons))
            return
        try:
            packed = pack(snap)
        except Exception as exc:  # our bug, not the bundle's: the parent builds it itself
            conn.send(("unpackable", f"{type(exc).__name__}: {exc}"[:2000]))
            return
        conn.send(("built", packed))
    finally:
        conn.close()


# -- the parent -----------------------------------------------------------------------------------
class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, unset: object):
        super().__init__(io.BytesIO(data))
        self._unset = unset

    def persistent_load(self, pid: Any) -> Any:
        if pid == "UNSET":
            return self._unset
        raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")


def unpack(packed: dict[str, Any]) -> Any:
    """The snapshot `pack` made, loaded rule by rule with the GIL offered between rules."""
    from dsl import compiler
    from s3.core.decide import BundleSnapshot

    unset = compiler._UNSET
    head = _Unpickler(packed["snapshot"], unset).load()
    rules = []
    for blob in packed["rules"]:
        rules.append(_Unpickler(blob, unset).load())
        time.sleep(0)  # let a waiting decision run: this thread never holds the GIL for long
    rules_t = tuple(rules)
    checked = dataclasses.replace(head["checked"], rules=rules_t)
    namespace, defaults = _Unpickler(packed["namespace"], unset).load()
    code = marshal.loads(packed["code"])
    fn = types.FunctionType(code, namespace, packed["name"], defaults)
    namespace[packed["name"]] = fn
    ruleset = compiler.CompiledRuleset(**head["fields"], rules=rules_t, checked=checked, _fast=fn)
    return BundleSnapshot(head["bundle_id"], head["rev"], ruleset, head["params"], head["checksum"])


def build_off_path(
    doc: Any, settings: Settings | None, *, timeout_s: float = 120.0, cold: str = "wait"
) -> tuple[Any | None, list[str]]:
    """`compile_doc` in a child process: the snapshot, or why there is none. A build that takes
    longer than ``timeout_s`` is killed and the bundle rejected.

    ``cold``: what to do while the fork server is not running yet: ``"wait"`` for it to start
    (~1 s of CPU), or ``"in_process"``: build here, as a reload did before, so that a reload
    right after a start is no slower than it was (the server warms up meanwhile)."""
    if not _READY.is_set():
        if cold == "in_process":
            from s3.config.reload import compile_doc

            log.info("bundle build fork server not ready yet: building in process")
            warm_up(0.0)
            return compile_doc(doc, settings)
        _start_server()
    ctx = _context()
    receiver, sender = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(sender, doc, settings), name="s3-bundle-build")
    child.daemon = True
    started = time.monotonic()
    child.start()
    sender.close()
    try:
        if not receiver.poll(timeout_s):
            child.kill()
            return None, [
                f"the build took longer than {timeout_s:g} s and was stopped (S3_BUNDLE_BUILD_TIMEOUT_S)"
            ]
        try:
            kind, value = receiver.recv()
        except EOFError:
            child.join(5)
            return None, [f"the build process died (exit code {child.exitcode})"]
    finally:
        receiver.close()
        child.join(5)
        if child.is_alive():
            child.kill()
    built = time.monotonic()
    if kind == "built":
        snap = unpack(value)
        log.info(
            "bundle %s rev %s built off path in %.2f s, loaded in %.3f s",
            doc.bundle_id,
            doc.rev,
            built - started,
            time.monotonic() - built,
        )
        return snap, []
    if kind == "rejected":
        return None, list(value)
    if kind == "unpackable":
        from s3.config.reload import compile_doc

        log.warning("the built bundle cannot be handed over (%s); building it in process", value)
        return compile_doc(doc, settings)
    return None, [f"the build failed: {value}"]
