"""Runs an L2 model under a deadline (spec §10: model timeout degrades to size_mult_ml = 1.0).

The core has no clock, so the deadline lives here, in one of two ways:

- `DeadlineModel`: the model runs on one of a few worker threads and the caller waits at most
  `deadline_ms`, then abandons the call (MODEL.TIMEOUT). For a model that may block or hang: the
  ONNX kind, a plug-in. A model that offers ``run_options()`` and ``run(features, options)`` (the
  ONNX kind: onnxruntime's `RunOptions`) has its late run cancelled too (``terminate = True``),
  so a slow run stops using the CPU. A call that hangs for good keeps its thread; when every
  thread is held by such calls, a new call is refused at once (MODEL.TIMEOUT, "busy") instead of
  queueing behind them: the deadline holds whatever the runtime does.
- `TimedModel`: the model runs in the caller's thread and its answer counts only if it came
  within `deadline_ms`; a late answer is dropped exactly as a timeout is. For the built-in
  logistic model, which is bounded arithmetic (microseconds) and cannot hang: no thread hop,
  and the decision is the same as under `DeadlineModel` whenever the model is on time.

A late or failing model yields a degraded `ModelResult` either way (``MODEL.TIMEOUT: ...`` or
``MODEL.ERROR: ...``; an answer that is no probability is caught by the core, MODEL.BAD_OUTPUT).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Mapping
from typing import Any

from s3.core.model import ERROR, TIMEOUT, Model, degraded
from s3.core.types import ModelResult

_Job = tuple[dict[str, Any], Any, list[ModelResult], threading.Lock]


class DeadlineModel:
    """Wraps a model so that every call returns within ``deadline_ms`` (plus scheduling noise)."""

    def __init__(self, inner: Model, deadline_ms: int, *, workers: int = 2):
        self.inner = inner
        self.deadline_s = deadline_ms / 1000.0
        self.deadline_ms = deadline_ms
        self.workers = workers
        run, options = getattr(inner, "run", None), getattr(inner, "run_options", None)
        self._cancellable = callable(run) and callable(options)
        self._free = threading.Semaphore(workers)
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        self.abandoned = 0
        """Calls given up at the deadline (their thread may still be running them)."""
        self._threads = [
            threading.Thread(target=self._loop, name=f"s3-model-{i}", daemon=True)
            for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    def __call__(self, features: Mapping[str, Any]) -> ModelResult:
        if self._closed:
            return degraded(ERROR, "the model of a replaced bundle revision was called")
        if not self._free.acquire(blocking=False):
            self.abandoned += 1
            return degraded(
                TIMEOUT,
                f"no answer within {self.deadline_ms} ms: all {self.workers} model threads are "
                "still running calls abandoned at their deadline",
            )
        done = threading.Lock()
        done.acquire()
        box: list[ModelResult] = []
        options = self.inner.run_options() if self._cancellable else None  # type: ignore[attr-defined]
        self._jobs.put((dict(features), options, box, done))
        if done.acquire(timeout=self.deadline_s) and box:
            return box[0]
        if options is not None:
            options.terminate = True  # onnxruntime stops the run at its next check
        self.abandoned += 1
        return degraded(TIMEOUT, f"no answer within {self.deadline_ms} ms")

    def _loop(self) -> None:
        inner = self.inner
        while True:
            job = self._jobs.get()
            if job is None:
                return
            features, options, box, done = job
            try:
                run = inner.run if options is not None else None  # type: ignore[attr-defined]
                result = run(features, options) if run is not None else inner(features)
                if not isinstance(result, ModelResult):
                    result = degraded(ERROR, f"the model answered {type(result).__name__}")
            except BaseException as exc:  # the model's own failure, recorded on the decision
                result = degraded(ERROR, f"{type(exc).__name__}: {exc}")
            box.append(result)
            self._free.release()
            done.release()

    def close(self) -> None:
        """Stop the threads once their current call ends (a hung one is a daemon thread)."""
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self._jobs.put(None)


class TimedModel:
    """Runs a bounded model inline; an answer later than ``deadline_ms`` counts as a timeout."""

    def __init__(self, inner: Model, deadline_ms: int, *, clock: Any = time.perf_counter):
        self.inner = inner
        self.deadline_s = deadline_ms / 1000.0
        self.deadline_ms = deadline_ms
        self._clock = clock

    def __call__(self, features: Mapping[str, Any]) -> ModelResult:
        started = self._clock()
        try:
            result = self.inner(features)
        except Exception as exc:  # the model's own failure, recorded on the decision
            return degraded(ERROR, f"{type(exc).__name__}: {exc}")
        if self._clock() - started > self.deadline_s:
            return degraded(TIMEOUT, f"no answer within {self.deadline_ms} ms")
        return result

    def close(self) -> None:
        pass
