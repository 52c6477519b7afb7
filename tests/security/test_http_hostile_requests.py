"""Hostile requests: bodies nested past the decoder's limit, features nested deep or holding
integers beyond a float answer 400 (not 500); a client that sends less than its Content-Length,
half a request or nothing cannot hold a connection (`s3 serve` as a real process on loopback)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from s3.adapters.redis_server import RedisServer
from s3.http.app import create_app
from s3.service import Service
from tests.security.robust_helpers import AUTH, EXAMPLE, Served, serving, settings


@pytest.fixture
def client(tmp_path: Path, redis_server: RedisServer) -> Iterator[TestClient[Any]]:
    svc = Service.from_settings(settings(tmp_path, redis_server.address))
    with TestClient(create_app(deps=svc)) as c:
        yield c
    svc.close()


def post_raw(c: TestClient[Any], body: str) -> httpx.Response:
    return c.post("/decide", content=body, headers={**AUTH, "content-type": "application/json"})


@pytest.mark.parametrize("depth", [1_000, 5_000, 100_000])
def test_http_a_body_nested_past_the_decoders_limit_is_400(
    client: TestClient[Any], depth: int
) -> None:
    body = '{"symbol":"BTCUSDT","features":{"x":' + "[" * depth + "]" * depth + "}}"
    r = post_raw(client, body)
    assert r.status_code == 400, r.text
    assert r.json() == {
        "error": "BAD_REQUEST",
        "detail": "the JSON body nests lists/objects too deeply to decode",
        "extra": {},
    }


@pytest.mark.parametrize("depth", [33, 200, 900])
def test_http_a_feature_nested_deep_is_400(client: TestClient[Any], depth: int) -> None:
    features = {**EXAMPLE, "levels": json.loads("[" * depth + "]" * depth)}
    r = client.post(
        "/decide", json={"symbol": "BTCUSDT", "dry_run": True, "features": features}, headers=AUTH
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "BAD_FEATURE" and r.json()["extra"] == {"feature": "levels"}


@pytest.mark.parametrize("name", ["mid", "funding_next", "depth_top1_usdt", "extra_feature"])
@pytest.mark.parametrize("value", ["1" + "0" * 309, "-" + "9" * 400, "7" * 5000])
def test_http_an_integer_feature_beyond_a_float_is_400(
    client: TestClient[Any], name: str, value: str
) -> None:
    features = json.dumps({k: v for k, v in EXAMPLE.items() if k != name})
    body = (
        '{"symbol":"BTCUSDT","sideHint":"BUY","features":'
        + features[:-1]
        + f',"{name}":{value}'
        + "}}"
    )
    r = post_raw(client, body)
    assert r.status_code == 400, r.text
    assert r.json()["error"] in ("BAD_FEATURE", "HTTP_ERROR"), r.text  # 5000 digits: the decoder


def test_http_the_limits_leave_ordinary_features_alone(client: TestClient[Any]) -> None:
    features = {**EXAMPLE, "levels": [[1.0, 2.0], [3.0, 4.0]], "big": 2**70, "tiny": 1e-300}
    r = client.post(
        "/decide", json={"symbol": "BTCUSDT", "dry_run": True, "features": features}, headers=AUTH
    )
    assert r.status_code == 200, r.text


# -- a real server: the request deadline ------------------------------------------------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("served")
    with (
        RedisServer() as redis_server,
        serving(
            tmp,
            S3_REDIS_ADDRESSES=redis_server.address,
            S3_HTTP_REQUEST_TIMEOUT_S="1",
            S3_HTTP_KEEPALIVE_S="2",
        ) as s,
    ):
        yield s


def exchange(
    port: int, parts: list[bytes], pause_s: float = 0.0, wait_s: float = 10.0
) -> tuple[float, bytes]:
    """Send ``parts`` (``pause_s`` apart), then read until the server closes; (seconds, bytes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as s:
        started = time.monotonic()
        for i, part in enumerate(parts):
            if i and pause_s:
                time.sleep(pause_s)
            s.sendall(part)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except TimeoutError:
            data += b"<still open>"
        return time.monotonic() - started, data


HEAD = (
    b"POST /decide HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    b"authorization: " + AUTH["Authorization"].encode() + b"\r\n"
)


def test_http_a_body_shorter_than_its_content_length_is_cut_off(served: Served) -> None:
    took, data = exchange(served.port, [HEAD + b"content-length: 1000\r\n\r\n" + b'{"symbol":'])
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert b"REQUEST_TIMEOUT" in data and not data.endswith(b"<still open>")
    assert 0.9 <= took < 5, took


def test_http_an_unauthorised_short_body_is_answered_then_cut_off(served: Served) -> None:
    head = b"POST /decide HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n{"
    took, data = exchange(served.port, [head])
    assert data.startswith(b"HTTP/1.1 401 "), data  # answered before the body: no 408 after it
    assert b"408" not in data and not data.endswith(b"<still open>")
    assert took < 5, took


@pytest.mark.parametrize(
    "parts",
    [[], [b"POST /dec"], [HEAD + b"content-length: 10\r\n"]],
    ids=["silent", "half-line", "half-headers"],
)
def test_http_a_silent_or_half_sent_request_is_cut_off(served: Served, parts: list[bytes]) -> None:
    took, data = exchange(served.port, parts)
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert 0.9 <= took < 5, took


def test_http_a_slow_but_complete_request_is_served_and_an_idle_connection_closed(
    served: Served,
) -> None:
    body = json.dumps({"symbol": "BTCUSDT", "dry_run": True, "features": EXAMPLE}).encode()
    head = HEAD + b"content-length: " + str(len(body)).encode() + b"\r\n\r\n"
    took, data = exchange(served.port, [head, body[:20], body[20:]], pause_s=0.3)
    assert data.startswith(b"HTTP/1.1 200 "), data
    assert b'"decision"' in data
    assert 2 <= took < 6, took  # then closed by the keep-alive timeout (2 s), not held
