"""A small real HTTP server standing in for S4 (the order service) in the demo and the tests.

`POST /orders` records an `OrderCmdRequest` (deduplicated by its `Idempotency-Key`, as a real
order service would) and answers 200 `{"status": "accepted"}`. Faults on command through
`POST /_control`: `{"mode": "ok" | "reject" | "fail" | "delay" | "timeout" | "accept_late",
"delay_ms": N, "times": N}` — reject is 422, fail is 500, delay answers after delay_ms,
timeout never answers in time, accept_late records the order and then answers too late.
`GET /orders` lists what was recorded.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.orders: dict[str, dict[str, Any]] = {}
        self.requests = 0
        self.mode = "ok"
        self.delay_ms = 0
        self.times: int | None = None  # how many requests the mode applies to (None = all)

    def take_mode(self) -> tuple[str, int]:
        with self.lock:
            self.requests += 1
            mode = self.mode
            if self.times is not None:
                self.times -= 1
                if self.times <= 0:
                    self.mode, self.times = "ok", None
            return mode, self.delay_ms


class _Handler(BaseHTTPRequestHandler):
    server: S4Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def _send(self, status: int, body: dict[str, Any] | list[Any]) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting
            pass

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def do_GET(self) -> None:
        if self.path == "/orders":
            with self.server.state.lock:
                self._send(200, list(self.server.state.orders.values()))
        elif self.path == "/health":
            self._send(200, {"status": "OK"})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        st = self.server.state
        if self.path == "/_control":
            body = self._body()
            with st.lock:
                st.mode = body.get("mode", "ok")
                st.delay_ms = int(body.get("delay_ms", 0))
                st.times = body.get("times")
            self._send(200, {"mode": st.mode})
            return
        if self.path != "/orders":
            self._send(404, {"error": "not found"})
            return
        try:
            order = self._body()
        except json.JSONDecodeError:
            self._send(400, {"error": "bad json"})
            return
        key = self.headers.get("Idempotency-Key") or order.get("intent_id")
        if not key:
            self._send(400, {"error": "missing Idempotency-Key"})
            return
        mode, delay_ms = st.take_mode()
        if mode == "fail":
            self._send(500, {"error": "injected failure"})
            return
        if mode == "reject":
            self._send(422, {"status": "rejected", "reason": "injected rejection"})
            return
        if mode == "timeout":
            time.sleep(max(delay_ms, 5_000) / 1000)
            self._send(504, {"error": "too late"})
            return
        if mode in ("delay", "accept_late"):
            if mode == "accept_late":
                self._record(st, key, order)
            time.sleep(delay_ms / 1000)
        first = self._record(st, key, order)
        self._send(200, {"status": "accepted", "intent_id": key, "duplicate": not first})

    @staticmethod
    def _record(st: _State, key: str, order: dict[str, Any]) -> bool:
        with st.lock:
            if key in st.orders:
                return False
            st.orders[key] = {**order, "_received_at_ms": int(time.time() * 1000)}
            return True


class S4Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        super().__init__((host, port), _Handler)
        self.state = _State()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> S4Server:
        self._thread = threading.Thread(target=self.serve_forever, name="s4-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def set_mode(self, mode: str, *, delay_ms: int = 0, times: int | None = None) -> None:
        with self.state.lock:
            self.state.mode, self.state.delay_ms, self.state.times = mode, delay_ms, times

    @property
    def orders(self) -> dict[str, dict[str, Any]]:
        with self.state.lock:
            return dict(self.state.orders)

    def __enter__(self) -> S4Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:  # pragma: no cover - `python -m s3.s4_standin PORT`
    import sys

    server = S4Server(port=int(sys.argv[1]) if len(sys.argv) > 1 else 8090)
    print(f"S4 stand-in on {server.url}", flush=True)
    server.serve_forever()


if __name__ == "__main__":  # pragma: no cover
    main()
