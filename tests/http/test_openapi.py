"""The served OpenAPI schema describes what the service actually answers.

Real answers of every route, at every status each can give (a real engine: real Redis, SQLite,
the S4 stand-in), are validated against the schema the same app serves at
`/schema/openapi.json`: the status must be documented, the media type too, and a JSON body must
match its schema (JSON Schema 2020-12, as OpenAPI 3.1 says). The documentation pages load
nothing from outside the service.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
from litestar.testing import TestClient

from s3.adapters.redis_server import RedisServer
from s3.http.app import create_app
from s3.s4_standin import S4Server
from s3.service import Service
from tests.http.test_api import AUTH, EXAMPLE, make_service, seed

Seen = list[tuple[str, str, httpx.Response]]


@pytest.fixture
def s4() -> Iterator[S4Server]:
    with S4Server() as server:
        yield server


@pytest.fixture
def service(tmp_path: Path, redis_server: RedisServer, s4: S4Server) -> Iterator[Service]:
    svc = make_service(tmp_path, redis_server.address, s4.url, "oas:")
    seed(svc)
    yield svc
    svc.close()


def _check(spec: dict[str, Any], method: str, path: str, r: httpx.Response) -> list[str]:
    """Every way ``r`` departs from what ``spec`` says ``method path`` answers."""
    op = spec["paths"][path][method]
    documented = op["responses"].get(str(r.status_code))
    if documented is None:
        return [f"{method.upper()} {path}: status {r.status_code} is not documented"]
    media = r.headers["content-type"].split(";")[0]
    content = documented.get("content", {})
    if media not in content:
        return [f"{method.upper()} {path} {r.status_code}: {media} not in {sorted(content)}"]
    if media != "application/json":
        return []
    schema = {**content[media]["schema"], "components": spec["components"]}
    validator = jsonschema_rs.Draft202012Validator(schema)
    return [
        f"{method.upper()} {path} {r.status_code}: {e.message} at {list(e.instance_path)}"
        for e in validator.iter_errors(r.json())
    ]


def test_every_route_answers_as_the_served_schema_says(
    service: Service, tmp_path: Path, s4: S4Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: Seen = []
    with TestClient(create_app(deps=service)) as c:
        spec = c.get("/schema/openapi.json").json()

        def call(method: str, path: str, **kw: Any) -> httpx.Response:
            r = c.request(method.upper(), path, **kw)
            seen.append((method, path, r))
            return r

        body = {"symbol": "BTCUSDT", "sideHint": "BUY"}
        fresh = {**EXAMPLE, "ts": service.engine.clock_ms()}
        opened = call("post", "/decide", json={**body, "context": {"t0": 1}}, headers=AUTH)
        assert opened.json()["intent"] is not None  # an open: prices and quantities typed
        call("post", "/decide", json={**body, "dry_run": True, "trace": True}, headers=AUTH)
        skipped = call(
            "post",
            "/decide",
            json={**body, "dry_run": True, "features": {**fresh, "funding_next": 0.01}},
            headers=AUTH,
        )
        assert skipped.json()["decision"] == "skip"
        call("post", "/decide", json={"sideHint": "BUY"}, headers=AUTH)  # 400 BAD_REQUEST
        call("post", "/decide", json={**body, "features": {"ts": 1}}, headers=AUTH)  # 400
        call("post", "/decide", json=body)  # 401
        call("post", "/decide", json={**body, "symbol": "DOGEUSDT"}, headers=AUTH)  # 422
        call("get", "/health")
        call("get", "/metrics")
        call("post", "/admin/reload", headers=AUTH)
        call("post", "/admin/reload")  # 401
        call("get", "/admin/bundle", headers=AUTH)
        call("get", "/admin/bundle")  # 401

        def broken(**_: Any) -> Any:
            raise RuntimeError("a bug")

        with monkeypatch.context() as m:
            m.setattr(service.engine, "decide_steps", broken)
            m.setattr(service.engine, "decide_until_submit", broken)
            call("post", "/decide", json=body, headers=AUTH)  # 500
        problems = [p for method, path, r in seen for p in _check(spec, method, path, r)]

    # 503s: Redis gone, on a service of its own
    server = RedisServer().start()
    svc = make_service(tmp_path / "down", server.address, s4.url, "oas-down:", redis_timeout_s=0.3)
    seed(svc)
    try:
        with TestClient(create_app(deps=svc)) as c:
            server.stop()
            down = [
                ("post", "/decide", c.post("/decide", json=body, headers=AUTH)),
                ("get", "/health", c.get("/health")),
            ]
    finally:
        svc.close()
        server.stop()
    problems += [p for method, path, r in down for p in _check(spec, method, path, r)]
    seen += down
    assert not problems, "\n".join(problems)
    # and the check itself can fail: a body off its schema, a status not documented
    wrong = httpx.Response(200, json={"bundle_id": "x", "rev": "1", "checksum": "c", "rules": []})
    assert _check(spec, "get", "/admin/bundle", wrong) == [
        'GET /admin/bundle 200: "1" is not of type "integer" at [\'rev\']'
    ]
    assert _check(spec, "get", "/admin/bundle", httpx.Response(404, json={})) == [
        "GET /admin/bundle: status 404 is not documented"
    ]

    statuses = {(m, p, r.status_code) for m, p, r in seen}
    assert {s for m, p, s in statuses if p == "/decide"} == {200, 400, 401, 422, 500, 503}
    assert ("get", "/health", 503) in statuses and ("get", "/health", 200) in statuses
    # every documented route and status was exercised
    documented = {
        (m, p, int(s))
        for p, ops in spec["paths"].items()
        for m, op in ops.items()
        for s in op["responses"]
    }
    # 500 on the admin routes needs a bug there; the schema says any route may answer it
    missing = {d for d in documented - statuses if d[2] != 500 or d[1] == "/decide"}
    assert not missing, missing


def test_schema_declares_bearer_auth_and_typed_bodies(client: TestClient[Any]) -> None:
    spec = client.get("/schema/openapi.json").json()
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "S3_API_TOKEN, as `Authorization: Bearer <token>`",
    }
    for path, method in (("/decide", "post"), ("/admin/reload", "post"), ("/admin/bundle", "get")):
        assert spec["paths"][path][method]["security"] == [{"bearer": []}], path
    assert "security" not in spec["paths"]["/health"]["get"]
    ok = spec["paths"]["/decide"]["post"]["responses"]["200"]["content"]["application/json"]
    assert ok["schema"] == {"$ref": "#/components/schemas/DecideResponse"}
    intent = spec["components"]["schemas"]["IntentOut"]["properties"]
    assert intent["qty"]["type"] == "number"  # served as a JSON number, not a string
    reload_ok = spec["paths"]["/admin/reload"]["post"]["responses"]
    assert "200" in reload_ok and "201" not in reload_ok
    error = spec["components"]["schemas"]["ErrorBody"]
    assert set(error["properties"]) == {"error", "detail", "extra"}


@pytest.fixture
def client(service: Service) -> Iterator[TestClient[Any]]:
    with TestClient(create_app(deps=service)) as c:
        yield c


@pytest.mark.parametrize("page", ["/schema", "/schema/swagger", "/schema/redoc", "/schema/rapidoc"])
def test_docs_pages_work_offline(client: TestClient[Any], page: str) -> None:
    r = client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text.split("spec:", 1)[0]  # Swagger inlines the schema after `spec:`
    refs = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    assert refs, html
    for ref in refs:
        assert ref.startswith("/schema/assets/"), f"{page} loads {ref} from outside the service"
        asset = client.get(ref)
        assert asset.status_code == 200 and len(asset.content) > 100, ref
    assert "https://" not in html and "http://" not in html, html
