"""The HTTP server around the app: uvicorn with a deadline on every request.

uvicorn closes a keep-alive connection idle between requests (``timeout_keep_alive``), but has no
limit on receiving a request: a connection that sends nothing, half a request line, or a body
shorter than its Content-Length holds a connection and a task forever. `TimedHttpProtocol`
gives each request ``request_timeout_s`` from its first byte (or from the connection's opening)
to the end of its body; past that the client gets a 408 and the connection is closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_BODY = b'{"error":"REQUEST_TIMEOUT","detail":"the request was not received in time","extra":{}}'
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: application/json\r\n"
    b"content-length: " + str(len(_BODY)).encode() + b"\r\n"
    b"connection: close\r\n\r\n" + _BODY
)


class TimedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a deadline for receiving each request."""

    request_timeout_s: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._request_deadline: asyncio.TimerHandle | None = None
        self._headers_done = False

    def _arm(self) -> None:
        if self._request_deadline is None:
            self._request_deadline = self.loop.call_later(self.request_timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._request_deadline is not None:
            self._request_deadline.cancel()
            self._request_deadline = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that never sends a byte is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._headers_done = False  # until then `cycle` is the previous request's, if any
        self._arm()

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._headers_done = True

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _expired(self) -> None:
        self._request_deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle if self._headers_done else None
        if cycle is None or not cycle.response_started:
            # Nothing of ours on the wire for this request: say why before closing. (An app may
            # answer before reading the body, e.g. a 401: then the connection is just closed.)
            self.transport.write(_TIMEOUT_RESPONSE)
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's next receive() says so; its send()s are dropped
            cycle.message_event.set()
        self.transport.close()


def server_config(
    app: Any,
    *,
    host: str,
    port: int,
    request_timeout_s: float = 10.0,
    keepalive_s: int = 5,
    **kwargs: Any,
) -> uvicorn.Config:
    """A uvicorn config for ``app`` whose connections cannot be held open by a slow or silent
    client: ``request_timeout_s`` to receive each request, ``keepalive_s`` idle between two."""
    protocol = type(
        "TimedHttpProtocol", (TimedHttpProtocol,), {"request_timeout_s": request_timeout_s}
    )
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol,
        timeout_keep_alive=keepalive_s,
        **kwargs,
    )
