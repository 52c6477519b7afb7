"""Runs an L2 model under a deadline (spec §10: model timeout degrades to size_mult_ml = 1.0).

The core has no clock, so the deadline lives here, in one of two ways:

- `DeadlineModel`: the model runs on a worker thread and the caller waits at most
  `deadline_ms`. For a model that may block or hang (one that calls out, a plug-in).
- `TimedModel`: the model runs in the caller's thread and its answer counts only if it came
  within `deadline_ms`; a late answer is dropped exactly as a timeout is. For the built-in
  models, which are bounded arithmetic (microseconds) and cannot hang: no thread hop, and the
  decision is the same as under `DeadlineModel` whenever the model is on time.

A late or failing model yields a degraded `ModelResult` either way.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections.abc import Mapping
from typing import Any

from s3.core.model import Model
from s3.core.types import ModelResult


class DeadlineModel:
    """Wraps a model so that every call returns within ``deadline_ms`` (plus scheduling noise)."""

    def __init__(self, inner: Model, deadline_ms: int, *, workers: int = 4):
        self.inner = inner
        self.deadline_s = deadline_ms / 1000.0
        self.deadline_ms = deadline_ms
        self._pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="s3-model")

    def __call__(self, features: Mapping[str, Any]) -> ModelResult:
        future = self._pool.submit(self.inner, dict(features))
        try:
            return future.result(timeout=self.deadline_s)
        except cf.TimeoutError:
            future.cancel()
            return ModelResult(degraded=f"model_timeout: no answer within {self.deadline_ms} ms")
        except Exception as exc:  # the model's own failure, recorded on the decision
            return ModelResult(degraded=f"model_error: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


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
            return ModelResult(degraded=f"model_error: {type(exc).__name__}: {exc}")
        if self._clock() - started > self.deadline_s:
            return ModelResult(degraded=f"model_timeout: no answer within {self.deadline_ms} ms")
        return result

    def close(self) -> None:
        pass
