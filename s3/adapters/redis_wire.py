"""A lean asyncio connection to a standalone Redis for the decision's hot path.

redis-py's asyncio pipeline costs ~160 µs of CPU per call on the VMs we measure on (a coroutine,
a timeout scope and a callback lookup for every reply); a decision makes two, which was a fifth
of the service's CPU per request. This connection keeps redis-py's meaning and drops the rest:
commands are packed by hiredis (redis-py's own packer), replies read by hiredis's parser with
redis-py's error classes, and each reply goes through the redis-py client's own response callback,
so a pipeline answers here exactly what `Pipeline.execute(raise_on_error=False)` answers there
(tested side by side). Pipelines are written as they come, several may be in flight (Redis
answers in order), and one timer watches the oldest.

Handshake as redis-py does it for the same settings: ``HELLO <protocol>`` (RESP3 unless the
client asked for 2) with ``AUTH`` and ``SETNAME``, then ``SELECT`` a database other than 0.
Failures: a connection that cannot be made (after one quick retry) fails the requests waiting for
it with `redis.ConnectionError`; a reply later than the socket timeout fails every request in
flight with `redis.TimeoutError` and drops the connection (what follows on it is unknown), as does
a lost connection (`redis.ConnectionError`). Nothing already sent is sent again: a command may
have run. The next pipeline connects afresh.
"""

from __future__ import annotations

import asyncio
import collections
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import hiredis
import redis
from redis._parsers.base import BaseParser
from redis.client import EMPTY_RESPONSE, NEVER_DECODE
from redis.connection import HiredisRespSerializer
from redis.exceptions import InvalidResponse, ResponseError

Command = tuple[tuple[Any, ...], Mapping[str, Any]]
"""One queued command as redis-py keeps it on a pipeline: its arguments and its options."""

_NOT_FOR_CALLBACKS = frozenset({NEVER_DECODE, EMPTY_RESPONSE, "keys"})
_RETRY_AFTER_S = 0.01
_CLOSE_WAIT_S = 5.0
"""How long `Wire.aclose` waits for the requests in flight when the client has no socket timeout."""


@dataclass(frozen=True)
class WireSettings:
    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    client_name: str | None
    protocol: int
    socket_timeout: float | None
    connect_timeout: float | None
    keepalive: bool
    encoding: str | None
    """None: replies stay bytes (the client does not decode)."""
    encoding_errors: str


def wire_settings(client: Any) -> WireSettings | None:
    """The settings of a standalone redis-py client over plain TCP, for `Wire`; None for what
    this connection does not speak (a cluster, a Unix socket, TLS, a credential provider)."""
    if not isinstance(client, redis.Redis):
        return None
    pool = client.connection_pool
    if pool.connection_class is not redis.connection.Connection:
        return None
    kw = pool.connection_kwargs
    if kw.get("credential_provider") is not None:
        return None
    protocol = kw.get("protocol")
    timeout = kw.get("socket_timeout")
    return WireSettings(
        host=str(kw.get("host", "localhost")),
        port=int(kw.get("port", 6379)),
        db=int(kw.get("db") or 0),
        username=kw.get("username"),
        password=kw.get("password"),
        client_name=kw.get("client_name"),
        protocol=2 if protocol in (2, "2") else 3,
        socket_timeout=timeout,
        connect_timeout=kw.get("socket_connect_timeout") or timeout,
        keepalive=bool(kw.get("socket_keepalive")),
        encoding=kw.get("encoding", "utf-8") if kw.get("decode_responses") else None,
        encoding_errors=kw.get("encoding_errors", "strict"),
    )


class _Request:
    """One pipeline in flight: its commands, the replies read so far, and who waits for them."""

    __slots__ = ("commands", "deadline", "future", "replies")

    def __init__(
        self, commands: Sequence[Command], future: asyncio.Future[list[Any]], deadline: float
    ) -> None:
        self.commands = commands
        self.replies: list[Any] = []
        self.future = future
        self.deadline = deadline


def _fail(requests: Iterable[_Request], exc: Exception) -> None:
    """``exc`` for every request still waiting (a cancelled one's caller is gone)."""
    for request in requests:
        if not request.future.done():
            request.future.set_exception(exc)


class _Connection(asyncio.Protocol):
    """One TCP connection: the requests written on it, answered in order."""

    def __init__(self, wire: Wire) -> None:
        self._wire = wire
        s = wire.settings
        self._reader = hiredis.Reader(
            protocolError=InvalidResponse,
            replyError=BaseParser.parse_error,
            **({"encoding": s.encoding, "errors": s.encoding_errors} if s.encoding else {}),
        )
        self.transport: asyncio.Transport | None = None
        self.waiting: collections.deque[_Request] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        if self._wire.settings.keepalive:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def write(self, data: bytes, requests: list[_Request]) -> None:
        assert self.transport is not None
        self.waiting.extend(requests)
        self.transport.write(data)
        if self._wire.settings.socket_timeout is None:
            return
        first = requests[0].deadline
        if self._timer is None or self._timer.when() > first:  # the handshake's is longer
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._wire.loop.call_at(first, self._check_deadline)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiting, finish = self.waiting, self._wire.finish
        try:
            while waiting:
                head = waiting[0]
                commands, replies = head.commands, head.replies
                while len(replies) < len(commands):
                    reply = reader.gets(NEVER_DECODE not in commands[len(replies)][1])
                    if reply is False:
                        return
                    replies.append(reply)
                waiting.popleft()
                finish(head)
            if reader.has_data():
                raise InvalidResponse("Redis sent a reply nobody asked for")
        except InvalidResponse as exc:
            self.fail(redis.ConnectionError(f"{self._wire.where}: {exc}"))
        except Exception as exc:  # e.g. a reply that is not text for a decoding client
            self.fail(exc)  # the reader's place in the stream is unsure: drop the connection

    def connection_lost(self, exc: Exception | None) -> None:
        why = f": {exc}" if exc else " by the server"
        self.fail(redis.ConnectionError(f"{self._wire.where}: connection closed{why}"))

    def fail(self, exc: Exception) -> None:
        """Fail every request in flight and drop the connection."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            self.transport.abort()
        waiting, self.waiting = self.waiting, collections.deque()
        _fail(waiting, exc)

    def _check_deadline(self) -> None:
        self._timer = None
        if not self.waiting:
            return
        head = self.waiting[0]
        if head.deadline <= self._wire.loop.time():
            self.fail(redis.TimeoutError(f"{self._wire.where}: timeout reading from Redis"))
        else:
            self._timer = self._wire.loop.call_at(head.deadline, self._check_deadline)


class Wire:
    """Pipelines to one standalone Redis on one event loop (use it on the loop's thread only)."""

    def __init__(
        self,
        settings: WireSettings,
        callbacks: Mapping[str, Callable[..., Any]],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.settings = settings
        self.loop = loop
        self.where = f"Redis {settings.host}:{settings.port}"
        self._callbacks = {k.upper(): v for k, v in callbacks.items()}
        self._packer = HiredisRespSerializer()
        self._conn: _Connection | None = None
        self._unsent: list[_Request] = []
        self._connecting: asyncio.Task[None] | None = None
        self._closed = False

    def send(
        self, pipelines: Sequence[tuple[Sequence[Command], asyncio.Future[list[Any]]]]
    ) -> None:
        """Write the pipelines (in one write); each future gets its pipeline's replies (errors
        in place, as ``raise_on_error=False`` gives them) or the error of the connection."""
        timeout = self.settings.socket_timeout
        deadline = self.loop.time() + (timeout if timeout is not None else 0.0)
        requests = [_Request(commands, fut, deadline) for commands, fut in pipelines]
        if self._closed:
            _fail(requests, redis.ConnectionError(f"{self.where}: the connection is closed"))
            return
        if self._conn is not None and self._conn.open:
            self._write(self._conn, requests)
            return
        self._unsent.extend(requests)
        if self._connecting is None:
            self._connecting = self.loop.create_task(self._connect())

    def finish(self, request: _Request) -> None:
        """Settle ``request`` with its replies, each as redis-py's client would give it."""
        if request.future.done():  # its caller is gone
            return
        try:
            out = self._shaped(request)
        except Exception as exc:  # a reply its callback cannot shape: this request's error only
            request.future.set_exception(exc)
        else:
            request.future.set_result(out)

    def _shaped(self, request: _Request) -> list[Any]:
        out = []
        callbacks = self._callbacks
        for (args, options), reply in zip(request.commands, request.replies, strict=True):
            if isinstance(reply, Exception):  # an error reply stays with its command
                empty = isinstance(reply, ResponseError) and EMPTY_RESPONSE in options
                out.append(options[EMPTY_RESPONSE] if empty else reply)
                continue
            name = args[0]
            callback = callbacks.get(name.upper() if isinstance(name, str) else name)
            if callback is None:
                out.append(reply)
            elif options:
                out.append(
                    callback(
                        reply, **{k: v for k, v in options.items() if k not in _NOT_FOR_CALLBACKS}
                    )
                )
            else:
                out.append(callback(reply))
        return out

    async def aclose(self) -> None:
        """Let the requests in flight finish (up to the socket timeout), then close: requests
        not yet written, and those still in flight then, fail with `redis.ConnectionError`."""
        self._closed = True
        if self._conn is not None and self._conn.waiting:
            flying = [r.future for r in self._conn.waiting]
            await asyncio.wait(flying, timeout=self.settings.socket_timeout or _CLOSE_WAIT_S)
        if self._connecting is not None:
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
        closed = redis.ConnectionError(f"{self.where}: the connection is closed")
        unsent, self._unsent = self._unsent, []
        _fail(unsent, closed)
        if self._conn is not None:
            self._conn.fail(closed)
            self._conn = None

    def _write(self, conn: _Connection, requests: list[_Request]) -> None:
        live = [r for r in requests if not r.future.done()]  # cancelled before sent: not run
        if live:
            pack = self._pack
            conn.write(b"".join([pack(args) for r in live for args, _ in r.commands]), live)

    def _pack(self, args: tuple[Any, ...]) -> bytes:
        """``args`` in RESP, as redis-py's hiredis packer writes them: hiredis at once for the
        common case (a one-word command of text, numbers and bytes), redis-py's packer for the
        rest (a two-word command name, a bytearray, a type it refuses with DataError)."""
        name = args[0]
        if type(name) is str and " " not in name:
            try:
                return hiredis.pack_command(args)
            except TypeError:
                pass
        return b"".join(self._packer.pack(*args))

    async def _connect(self) -> None:
        try:
            conn = await self._open()
        except Exception as exc:
            unsent, self._unsent = self._unsent, []
            _fail(unsent, exc)
            return
        finally:
            self._connecting = None
        self._conn = conn
        unsent, self._unsent = self._unsent, []
        self._write(conn, unsent)

    async def _open(self) -> _Connection:
        """A connection past its handshake; one quick retry, as the blocking client has."""
        try:
            return await self._open_once()
        except (OSError, redis.ConnectionError, redis.TimeoutError):
            await asyncio.sleep(_RETRY_AFTER_S)
            return await self._open_once()

    async def _open_once(self) -> _Connection:
        s = self.settings
        try:
            async with asyncio.timeout(s.connect_timeout):
                _, conn = await self.loop.create_connection(
                    lambda: _Connection(self), s.host, s.port
                )
        except TimeoutError as exc:
            raise redis.TimeoutError(f"{self.where}: timeout connecting") from exc
        except OSError as exc:
            raise redis.ConnectionError(f"Error connecting to {self.where}: {exc}") from exc
        handshake: list[Command] = []
        if s.protocol == 3:
            hello: list[Any] = ["HELLO", 3]
            if s.password is not None:
                hello += ["AUTH", s.username or "default", s.password]
            if s.client_name:
                hello += ["SETNAME", s.client_name]
            handshake.append((tuple(hello), {}))
        else:
            if s.password is not None:
                auth = (s.username, s.password) if s.username else (s.password,)
                handshake.append((("AUTH", *auth), {}))
            if s.client_name:
                handshake.append((("CLIENT SETNAME", s.client_name), {}))
        if s.db:
            handshake.append((("SELECT", s.db), {}))
        if handshake:
            fut: asyncio.Future[list[Any]] = self.loop.create_future()
            conn.write(
                b"".join(self._pack(args) for args, _ in handshake),
                [_Request(handshake, fut, self.loop.time() + (s.connect_timeout or 0.0))],
            )
            try:
                replies = await fut
            finally:
                conn.waiting.clear()
            bad = next((r for r in replies if isinstance(r, Exception)), None)
            if bad is not None:
                conn.fail(redis.ConnectionError(f"{self.where}: handshake refused"))
                raise bad
        return conn
