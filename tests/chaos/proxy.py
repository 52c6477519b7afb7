"""A small TCP proxy on loopback that makes Redis slow and flaky on command ("Redis jitter").

Every client connection gets its own upstream connection; bytes are forwarded in both directions
by two threads. Faults, settable at any time from another thread:

- ``latency_ms`` (+ up to ``jitter_ms`` more, uniformly): added before each forwarded chunk;
- ``drop()``: close every live connection now (both sides), as a reset would;
- ``drop_rate``: the chance, per forwarded chunk, of closing that connection at once, after or
  before the chunk reached the other side (a reply lost after the command ran, or a command lost);
- ``stall(seconds)``: hold every chunk for that long (longer than the client's socket timeout:
  the client gives up while Redis may still run the command);
- ``refuse``: accept and close at once (Redis "down" for new connections).

Counters (``stats``) say what was injected. The proxy owns only its sockets and threads; `stop()`
closes them all.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
from dataclasses import dataclass, field


@dataclass
class ProxyStats:
    connections: int = 0
    chunks: int = 0
    delayed_ms: float = 0.0
    dropped: int = 0
    """Connections closed by `drop` / `drop_one`."""
    chunk_drops: int = 0
    """Connections closed mid-stream by ``drop_rate``."""
    stalled: int = 0
    refused: int = 0


@dataclass
class JitterProxy:
    upstream: tuple[str, int]
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    drop_rate: float = 0.0
    refuse: bool = False
    seed: int | None = None
    stats: ProxyStats = field(default_factory=ProxyStats)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._stall_until = 0.0
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> JitterProxy:
        self._thread = threading.Thread(target=self._accept_loop, name="jitter-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self.drop(count=False)
        with contextlib.suppress(OSError):
            self._listener.close()

    # -- faults ------------------------------------------------------------------------------------
    def calm(self) -> None:
        """No faults from now on (connections stay as they are)."""
        with self._lock:
            self.latency_ms = self.jitter_ms = self.drop_rate = 0.0
            self.refuse = False
            self._stall_until = 0.0

    def stall(self, seconds: float) -> None:
        with self._lock:
            self._stall_until = time.monotonic() + seconds
            self.stats.stalled += 1

    def drop(self, *, count: bool = True) -> int:
        """Close every live connection (both sides); returns how many."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
            if count:
                self.stats.dropped += len(pairs)
        for a, b in pairs:
            _close(a)
            _close(b)
        return len(pairs)

    def drop_one(self) -> bool:
        with self._lock:
            if not self._pairs:
                return False
            pair = self._pairs.pop(self._rng.randrange(len(self._pairs)))
            self.stats.dropped += 1
        _close(pair[0])
        _close(pair[1])
        return True

    # -- forwarding --------------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.refuse:
                self.stats.refused += 1
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=2)
            except OSError:
                _close(client)
                continue
            for s in (client, upstream):
                s.settimeout(None)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._pairs.append((client, upstream))
                self.stats.connections += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pump, args=(src, dst, client, upstream), daemon=True
                ).start()

    def _pump(
        self, src: socket.socket, dst: socket.socket, a: socket.socket, b: socket.socket
    ) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self._lock:
                    self.stats.chunks += 1
                    delay = self.latency_ms + self._rng.random() * self.jitter_ms
                    stall = max(0.0, self._stall_until - time.monotonic())
                    drop = self.drop_rate > 0 and self._rng.random() < self.drop_rate
                    drop_before = self._rng.random() < 0.5
                if stall > 0:
                    time.sleep(stall)
                if delay > 0:
                    self.stats.delayed_ms += delay
                    time.sleep(delay / 1000)
                if drop and drop_before:
                    self._forget(a, b, count=True)
                    break
                dst.sendall(data)
                if drop:
                    self._forget(a, b, count=True)
                    break
        except OSError:
            pass
        finally:
            self._forget(a, b, count=False)

    def _forget(self, a: socket.socket, b: socket.socket, *, count: bool) -> None:
        with self._lock:
            if (a, b) in self._pairs:
                self._pairs.remove((a, b))
                if count:
                    self.stats.chunk_drops += 1
        _close(a)
        _close(b)


def _close(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        s.close()
