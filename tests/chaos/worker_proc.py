"""One S3 worker process for the chaos suite: what `s3 worker` runs (the service from `S3_*`
settings, the stream worker and the scheduled jobs, the reload watch), with the consumer's idle
bound and read block short enough for a bounded test, and optional crash points.

A crash point kills the process with SIGKILL (no cleanup, no flush: a `kill -9` at that exact
place in the loop) with probability ``--crash-p`` each time the worker passes it; the point's name
is appended to ``--crash-log`` first (line-buffered, so it survives). The points cover every step
of a live decision and the acknowledgement:

    handle      an entry was delivered, nothing done yet
    reserved    the reservation is taken, nothing persisted
    signal      the signal is stored, its DECIDE event not yet
    decided     signal and DECIDE stored, `sig:events` not yet written
    submit      ENTRY_SUBMITTED stored, S4 not yet called
    submitted   S4 answered, the reservation not yet committed or released
    committed   the reservation is committed, nothing after it done
    result      the idempotency result is about to be stored
    ack         the decision is complete, the XACK not yet sent

    python -m tests.chaos.worker_proc --min-idle-ms 800 --crash-p 0.01 --crash-log /tmp/crashes
"""

from __future__ import annotations

import argparse
import faulthandler
import functools
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

CRASH_POINTS = (
    "handle",
    "reserved",
    "signal",
    "decided",
    "submit",
    "submitted",
    "committed",
    "result",
    "ack",
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--consumer", default=None)
    ap.add_argument("--min-idle-ms", type=int, default=800)
    ap.add_argument("--block-ms", type=int, default=200)
    ap.add_argument("--crash-p", type=float, default=0.0)
    ap.add_argument("--crash-log", default=os.devnull)
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args(argv)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the harness asks when stuck

    from s3.config.settings import Settings
    from s3.service import Service
    from s3.worker import Runner

    service = Service.from_settings(Settings())
    runner = Runner(
        service, consumer=args.consumer, min_idle_ms=args.min_idle_ms, block_ms=args.block_ms
    )
    if args.crash_p > 0:
        _arm(service, runner, args.crash_p, args.crash_log, random.Random(args.seed))
    if os.environ.get("CHAOS_MODEL_FAULTS"):
        _faulty_model(service, os.environ["CHAOS_MODEL_FAULTS"])
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    runner.start()
    service.start_reload_watch()
    print(f"chaos worker {os.getpid()} up", flush=True)
    stop.wait()
    runner.stop()
    service.close()
    return 0


def _arm(service: Any, runner: Any, p: float, log_path: str, rng: random.Random) -> None:
    log = open(log_path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    lock = threading.Lock()

    def maybe_crash(point: str) -> None:
        with lock:
            hit = rng.random() < p
        if hit:
            log.write(f"{os.getpid()} {point}\n")
            os.kill(os.getpid(), signal.SIGKILL)

    def before(point: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapped(*a: Any, **kw: Any) -> Any:
            maybe_crash(point)
            return fn(*a, **kw)

        return wrapped

    def after(point: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapped(*a: Any, **kw: Any) -> Any:
            out = fn(*a, **kw)
            maybe_crash(point)
            return out

        return wrapped

    engine = service.engine
    engine.ledger.reserve = after("reserved", engine.ledger.reserve)
    engine.ledger.commit = after("committed", engine.ledger.commit)
    engine.emitter.emit_signal = before("decided", engine.emitter.emit_signal)
    engine.idem.complete = before("result", engine.idem.complete)
    if engine.s4 is not None:
        engine.s4.submit = after("submitted", before("submit", engine.s4.submit))
    store = engine.store
    store.put_decision = after("signal", store.put_decision)  # the signal and its DECIDE event
    worker = runner.worker
    worker.handler = before("handle", worker.handler)
    worker.client.xack = before("ack", worker.client.xack)


class FaultyModel:
    """The bundle's model, misbehaving: every ``raise_every``-th call raises, every
    ``sleep_every``-th call (of the others) sleeps ``sleep_s`` (past the deadline) first."""

    def __init__(self, inner: Any, raise_every: int, sleep_every: int, sleep_s: float):
        self.inner, self.raise_every, self.sleep_every, self.sleep_s = (
            inner,
            raise_every,
            sleep_every,
            sleep_s,
        )
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, features: Any) -> Any:
        with self._lock:
            self.calls += 1
            n = self.calls
        if self.raise_every and n % self.raise_every == 0:
            raise RuntimeError(f"chaos: model raises on call {n}")
        if self.sleep_every and n % self.sleep_every == 0:
            time.sleep(self.sleep_s)
        return self.inner(features)


def _faulty_model(service: Any, spec: str) -> None:
    """``CHAOS_MODEL_FAULTS="raise_every=3,sleep_every=4,sleep_s=0.3"``: every revision's model
    wrapped in `FaultyModel`, run by the production deadline runner."""
    from s3.adapters.model_runner import DeadlineModel
    from s3.core.model import model_of

    kv = dict(item.split("=", 1) for item in spec.split(",") if item)
    raise_every, sleep_every = int(kv.get("raise_every", 3)), int(kv.get("sleep_every", 4))
    sleep_s = float(kv.get("sleep_s", 0.3))

    def factory(snap: Any) -> Any:
        faulty = FaultyModel(model_of(snap), raise_every, sleep_every, sleep_s)
        return DeadlineModel(faulty, snap.params.model.deadline_ms)

    service.engine.model_factory = factory


if __name__ == "__main__":
    raise SystemExit(main())
