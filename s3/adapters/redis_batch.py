"""One round trip for the Redis pipelines of concurrent requests on an event loop.

A decision run on the loop as `Steps` (`s3.engine`) yields each pipeline it needs: the state
read with the idempotency claim, then `sig:events` with the result. The batcher queues the
pipelines that concurrent requests hand it and runs them as one pipeline (their commands in the
order given) on an asyncio twin of the engine's client, one batch in flight at a time: while a
batch waits for Redis, the loop serves other requests and their pipelines form the next batch.
So N requests wait on one round trip and pay redis-py's per-call work once, and the loop never
blocks on Redis for them. Every request gets exactly its own replies; a call that fails
(connection lost, timeout) fails for every request of that batch, each of which handles it as
its own failure (claims abandoned, 503).

A cluster, or a connection the twin cannot copy (Unix socket, TLS), keeps the blocking client:
each pipeline is then run as it comes, as `s3.engine.run_steps` does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from s3.adapters.redis_client import Client, async_twin

if TYPE_CHECKING:
    from s3.engine import Steps

T = TypeVar("T")

MAX_BATCH = 64
"""Pipelines run together at most; more wait for the next batch."""


class PipelineBatcher:
    """Runs the pipelines handed to it on one event loop, those that arrive together as one.

    Create it and use it on the loop's thread only (its queue is not locked)."""

    def __init__(self, client: Client, *, on_batch: Callable[[int], None] | None = None) -> None:
        self._client = client
        self._twin = async_twin(client)
        self._queue: list[tuple[Any, asyncio.Future[list[Any]]]] = []
        self._on_batch = on_batch
        self._task: asyncio.Task[None] | None = None

    @property
    def batches(self) -> bool:
        """Whether pipelines are merged and awaited (False: each runs blocking, as it comes)."""
        return self._twin is not None

    def execute(self, pipe: Any) -> asyncio.Future[list[Any]]:
        """The replies of ``pipe`` (its commands queued, not run), once its batch has run."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[Any]] = loop.create_future()
        if self._twin is None:
            self._observe(1)
            _settle(fut, pipe.execute, raise_on_error=False)
            return fut
        self._queue.append((pipe, fut))
        if self._task is None:
            # started in the loop's next turn: requests made ready together join this batch
            self._task = loop.create_task(self._drain())
        return fut

    async def aclose(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self._twin is not None:
            await self._twin.aclose()

    def _observe(self, n: int) -> None:
        if self._on_batch is not None:
            self._on_batch(n)

    async def _drain(self) -> None:
        assert self._twin is not None
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                batch = [(pipe, fut) for pipe, fut in batch if not fut.done()]  # cancelled: not run
                if batch:
                    await self._run(self._twin, batch)
        finally:
            self._task = None

    async def _run(self, twin: Any, batch: list[tuple[Any, asyncio.Future[list[Any]]]]) -> None:
        self._observe(len(batch))
        merged = twin.pipeline(transaction=False)
        for pipe, _ in batch:
            merged.command_stack.extend(pipe.command_stack)
        try:
            replies = await merged.execute(raise_on_error=False)
        except Exception as exc:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        except BaseException:  # the loop is going away: so are the requests waiting here
            for _, fut in batch:
                fut.cancel()
            raise
        start = 0
        for pipe, fut in batch:
            end = start + len(pipe.command_stack)
            if not fut.done():  # cancelled meanwhile: its request is gone
                fut.set_result(replies[start:end])
            start = end


def _settle(fut: asyncio.Future[T], fn: Callable[..., T], *args: Any, **kwargs: Any) -> None:
    try:
        result = fn(*args, **kwargs)
    except Exception as exc:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


async def run_steps_async(steps: Steps[T], batcher: PipelineBatcher) -> T:
    """Drive `s3.engine.Steps` on the loop, each pipeline through ``batcher``: the loop serves
    other requests while this one waits for its batch. Cancelled while waiting, the steps are
    closed (their clean-up runs) and a pipeline not yet run is dropped; a claim that a batch
    took just before lapses after its short life, as for a process killed mid-decision."""
    try:
        pipe = next(steps)
        while True:
            try:
                replies = await batcher.execute(pipe)
            except asyncio.CancelledError:
                steps.close()
                raise
            except Exception as exc:  # into the step that asked, at its `yield`
                pipe = steps.throw(exc)
            else:
                pipe = steps.send(replies)
    except StopIteration as done:
        return done.value
