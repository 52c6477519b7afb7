"""A decision's Redis work as a generator of pipelines, and the plain driver of one.

Neutral ground between the kernel (`s3.engine`, which writes its steps this way) and the adapter
that batches them on the event loop (`s3.adapters.redis_batch`): neither imports the other.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, TypeVar

T = TypeVar("T")

Steps = Generator[Any, list[Any], T]
"""A decision's work as a generator: it yields each Redis pipeline it needs run (queued, not
executed) and is sent the pipeline's replies (``execute(raise_on_error=False)``), or thrown the
error that executing it raised. `run_steps` runs each pipeline at once; the HTTP app's
`s3.adapters.redis_batch.PipelineBatcher` runs those of concurrent requests as one."""


def run_steps(steps: Steps[T]) -> T:
    """Drive ``steps`` here and now: each pipeline it yields is executed as it comes."""
    try:
        pipe = next(steps)
        while True:
            try:
                replies = pipe.execute(raise_on_error=False)
            except BaseException as exc:  # into the step that asked, at its `yield`
                pipe = steps.throw(exc)
            else:
                pipe = steps.send(replies)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


__all__ = ["Steps", "run_steps"]
