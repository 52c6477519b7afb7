"""Helpers of the robustness tests (poison events, hostile requests, startup edge cases): a
real engine on a real redis-server and SQLite, and `s3 serve` as a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from s3.adapters.redis_server import free_port
from s3.config.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "rulesets" / "default"
EXAMPLE: dict[str, Any] = json.loads((DEFAULT / "examples" / "btc_buy_real.json").read_text())
TOKEN = "robust-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
_n = iter(range(100_000))


def settings(tmp_path: Path, redis_address: str, **kw: Any) -> Settings:
    base: dict[str, Any] = dict(
        api_token=TOKEN,
        redis_addresses=redis_address,
        redis_prefix=f"rb{next(_n)}:",
        sqlite_path=str(tmp_path / "s3.db"),
        cache_dir=str(tmp_path / "cache"),
        bundle_dir=str(DEFAULT),
        s4_url=None,
        config_poll_sec=0.5,
    )
    base.update(kw)
    return Settings(**base)


def wait_for(cond: Any, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@dataclass
class Served:
    proc: subprocess.Popen[str]
    url: str
    port: int

    def output(self) -> str:
        """Everything the process printed (call once it has exited)."""
        return self.proc.stdout.read() if self.proc.stdout else ""


def serve_env(tmp: Path, **env: str) -> dict[str, str]:
    return {
        **os.environ,
        "S3_SQLITE_PATH": str(tmp / "s3.db"),
        "S3_CACHE_DIR": str(tmp / "cache"),
        "S3_BUNDLE_DIR": str(DEFAULT),
        "S3_API_TOKEN": TOKEN,
        "S3_SYMBOLS": "BTCUSDT,ETHUSDT",
        "PYTHONPATH": str(ROOT),  # the code of this tree, whatever the venv has installed
        **env,
    }


@contextmanager
def serving(tmp: Path, **env: str) -> Iterator[Served]:
    """`s3 serve` as a real process on loopback, up (its /health answered) when yielded."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "s3.cli", "serve", "--port", str(port)],
        env=serve_env(tmp, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url + "/health", timeout=2)
                break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read() if proc.stdout else ""
                raise RuntimeError(f"s3 serve did not come up: {out}")
            time.sleep(0.1)
        yield Served(proc, url, port)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
