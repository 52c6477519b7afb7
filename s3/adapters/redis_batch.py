"""One round trip for the Redis pipelines of concurrent requests on an event loop.

A decision run on the loop as `Steps` (`s3.steps`) yields each pipeline it needs: the state
read with the idempotency claim, then `sig:events` with the result. The batcher gathers the
pipelines that requests hand it in one turn of the loop and writes them as one pipeline (their
commands in the order given) on a lean connection (`s3.adapters.redis_wire`); it does not wait
for an earlier batch's replies (Redis answers in order), and the loop serves other requests
while a batch is out. So requests made ready together share one round trip and its system calls,
and the loop never blocks on Redis for them. Every request gets exactly its own replies; a
connection that fails (lost, timed out, refused) fails every request in flight on it, each of
which handles it as its own failure (claims abandoned, 503).

A cluster, or a connection the lean one does not speak (Unix socket, TLS, a credential
provider), keeps the blocking client: each pipeline is then run as it comes, as
`s3.steps.run_steps` does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import redis

from s3.adapters.redis_client import Client
from s3.adapters.redis_wire import Command, Wire, wire_settings

if TYPE_CHECKING:
    from s3.steps import Steps

T = TypeVar("T")


class PipelineBatcher:
    """Runs the pipelines handed to it on one event loop, those that arrive together as one.

    Create it and use it on the loop's thread only (its queue is not locked)."""

    def __init__(self, client: Client, *, on_batch: Callable[[int], None] | None = None) -> None:
        self._client = client
        self._settings = wire_settings(client)
        self._wire: Wire | None = None
        self._queue: list[tuple[list[Command], asyncio.Future[list[Any]]]] = []
        self._on_batch = on_batch
        self._flush_soon: asyncio.Handle | None = None

    @property
    def batches(self) -> bool:
        """Whether pipelines are merged and awaited (False: each runs blocking, as it comes)."""
        return self._settings is not None

    def execute(self, pipe: Any) -> asyncio.Future[list[Any]]:
        """The replies of ``pipe`` (its commands queued, not run), once its batch has run."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[Any]] = loop.create_future()
        if self._settings is None:
            self._observe(1)
            _settle(fut, pipe.execute, raise_on_error=False)
            return fut
        if self._wire is None:
            assert isinstance(self._client, redis.Redis)  # wire settings are for these only
            self._wire = Wire(self._settings, self._client.response_callbacks, loop)
        self._queue.append((pipe.command_stack, fut))
        if self._flush_soon is None:
            # in the loop's next turn: requests made ready together join this batch
            self._flush_soon = loop.call_soon(self._flush)
        return fut

    async def aclose(self) -> None:
        if self._flush_soon is not None:
            self._flush_soon.cancel()
            self._flush()
        if self._wire is not None:
            await self._wire.aclose()

    def _observe(self, n: int) -> None:
        if self._on_batch is not None:
            self._on_batch(n)

    def _flush(self) -> None:
        self._flush_soon = None
        batch = [(cmds, fut) for cmds, fut in self._queue if not fut.done()]  # cancelled: not run
        self._queue = []
        if batch and self._wire is not None:
            self._observe(len(batch))
            self._wire.send(batch)


def _settle(fut: asyncio.Future[T], fn: Callable[..., T], *args: Any, **kwargs: Any) -> None:
    try:
        result = fn(*args, **kwargs)
    except Exception as exc:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


async def run_steps_async(steps: Steps[T], batcher: PipelineBatcher) -> T:
    """Drive `s3.steps.Steps` on the loop, each pipeline through ``batcher``: the loop serves
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
