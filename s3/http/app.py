"""The Litestar app: `GET /health`, `POST /decide`, `GET /metrics`, admin routes.

Handlers decode, call the engine and encode; `exception_handlers` is the only place errors become
400/401/422/503. `create_app(deps=...)` takes a running `Service` (tests, `s3 serve`), so the
app itself owns no clients.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import sys
from collections.abc import Callable
from decimal import Decimal
from functools import partial
from typing import Any, Literal, TypeVar

import msgspec
import redis
from litestar import Litestar, MediaType, Request, Response, get, post
from litestar.concurrency import sync_to_thread
from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from s3 import __version__
from s3.adapters.feature_events import MAX_DEPTH, nesting_depth
from s3.adapters.redis_batch import PipelineBatcher, run_steps_async
from s3.core.types import Decision, OcoLeg
from s3.engine import Submission
from s3.errors import InputError, S3Error
from s3.health import HealthResponse
from s3.http import openapi

T = TypeVar("T")


class DecideContext(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    trigger: Literal["manual", "stream"] = "manual"
    t0: int | None = None


class DecideRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Spec §3 request; `features` (optional) replaces `feat:last:{SYMBOL}`, `trace` adds the L1 trace."""

    symbol: str
    sideHint: str | None = None
    dry_run: bool = False
    context: DecideContext = DecideContext()
    features: dict[str, Any] | None = None
    trace: bool = False


class IntentOut(msgspec.Struct, frozen=True):
    intent_id: str
    market: str
    symbol: str
    side: str
    qty: Decimal
    exec_policy: str
    tp_px: Decimal
    sl_px: Decimal
    entry_px: Decimal
    maker_wait_ms: int
    slices: int
    exit_qty: Decimal | None = None
    oco: tuple[OcoLeg, ...] = ()
    guardian_stop_px: Decimal | None = None
    liq_px: Decimal | None = None


class DecideResponse(msgspec.Struct, frozen=True):
    """Spec §3 response plus `reason_detail`, `sentence`, `model_degraded`, `model_id`,
    `model_age_ms`, `dry_run` and more."""

    decision: Literal["open", "skip"]
    reason: str
    reason_detail: str
    sentence: str
    config_rev: int
    rules_fired: list[str]
    model_p: float | None
    model_degraded: str | None
    intent: IntentOut | None
    dry_run: bool
    submitted: str | None = None
    reservation: str | None = None
    replayed: bool = False
    size_mult: float = 1.0
    trace: list[dict[str, Any]] | None = None
    model_id: str | None = None
    model_age_ms: int | None = None

    @classmethod
    def of(cls, d: Decision, **extra: Any) -> DecideResponse:
        i = d.intent
        intent = (
            None
            if i is None
            else IntentOut(
                i.intent_id,
                i.market,
                i.symbol,
                i.side,
                i.qty,
                i.exec_policy,
                i.tp_px,
                i.sl_px,
                i.entry_px,
                i.maker_wait_ms,
                i.slices,
                i.exit_qty,
                i.oco,
                i.guardian_stop_px,
                i.liq_px,
            )
        )
        return cls(
            d.decision,
            d.reason,
            d.reason_detail,
            d.sentence,
            d.config_rev,
            list(d.rules_fired),
            d.model_p,
            d.model_degraded,
            intent,
            d.dry_run,
            size_mult=d.size_mult,
            model_id=d.model_id,
            model_age_ms=d.model_age_ms,
            **extra,
        )


class ErrorBody(msgspec.Struct, frozen=True):
    error: str
    detail: str
    extra: dict[str, Any] = {}


_ENCODER = msgspec.json.Encoder(decimal_format="number")
_FLOAT_MAX = sys.float_info.max


class _Request(Request[Any, Any, Any]):
    async def json(self) -> Any:
        """A body nested deeper than the decoder's recursion limit is the request's fault."""
        try:
            return await super().json()
        except RecursionError:
            raise ValidationException(
                "the JSON body nests lists/objects too deeply to decode", extra={}
            ) from None


def check_features(features: dict[str, Any] | None) -> None:
    """Refuse, with the feature's name, what no feature can be and what later code would choke
    on: lists/objects nested deeper than `MAX_DEPTH`, integers beyond a float's range."""
    for name, value in (features or {}).items():
        if nesting_depth(value) > MAX_DEPTH:
            raise InputError(
                "BAD_FEATURE",
                f"feature '{name}' nests lists/objects deeper than {MAX_DEPTH}",
                feature=name,
            )
        if type(value) is int and not -_FLOAT_MAX <= value <= _FLOAT_MAX:
            raise InputError(
                "BAD_FEATURE",
                f"feature '{name}' is an integer of about {int(value.bit_length() * 0.30103) + 1} "
                "digits, beyond a float's range (1.8e308)",
                feature=name,
            )


log = logging.getLogger("s3.http")


def _json(body: Any, status: int = 200) -> Response[bytes]:
    return Response(_ENCODER.encode(body), status_code=status, media_type=MediaType.JSON)


def create_app(settings: Any = None, *, deps: Any = None) -> Litestar:
    """Build the app around a `Service` (its engine, health probe and token).

    Args:
        settings: unused here; the service carries the settings it was built with.
        deps: the running `s3.service.Service`.
    """
    if deps is None:
        # the app never builds its service (s3.service imports nothing of s3.http): the caller
        # starts a `Service` and closes it (`s3 serve` does both)
        raise TypeError("create_app needs deps=<a running s3.service.Service>")
    service = deps

    async def auth_guard(  # async: Litestar runs a sync guard on a worker thread
        connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
    ) -> None:
        token = service.api_token
        if (
            not token
        ):  # explicitly disabled for local use (S3_API_TOKEN unset and S3_AUTH_DISABLED=1)
            return
        header = connection.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else ""
        if not given or not hmac.compare_digest(given.encode(), token.encode()):
            raise NotAuthorizedException("a valid bearer token is required")

    @get(
        "/health",
        sync_to_thread=True,
        summary="Service health",
        responses={
            200: ResponseSpec(HealthResponse, description="OK", generate_examples=False),
            503: ResponseSpec(
                HealthResponse, description="DEGRADED: `degraded` names what is down"
            ),
        },
    )
    def health() -> Response[bytes]:
        h = service.health()
        return _json(h, HTTP_200_OK if h.status == "OK" else HTTP_503_SERVICE_UNAVAILABLE)

    on_loop = service.settings.decides_on_loop()
    batchers: dict[asyncio.AbstractEventLoop, PipelineBatcher] = {}

    def batcher() -> PipelineBatcher:
        """The running loop's: concurrent decisions share their Redis round trips."""
        loop = asyncio.get_running_loop()
        found = batchers.get(loop)
        if found is None:
            engine = service.engine
            found = batchers[loop] = PipelineBatcher(
                engine.redis, on_batch=engine.metrics.redis_batch.observe
            )
        return found

    async def bounded(fn: Callable[[], T]) -> T:
        """``fn`` (bounded by the Redis and store timeouts) on the loop or a thread (S3_DECIDE_ON_LOOP)."""
        return fn() if on_loop else await sync_to_thread(fn)

    @post(
        "/decide",
        guards=[auth_guard],
        summary="Decide one entry",
        status_code=HTTP_200_OK,
        security=openapi.SECURITY,
        responses=openapi.responses(DecideResponse, ErrorBody, 400, 401, 422, 503),
    )
    async def decide_route(data: JSONBody[DecideRequest]) -> Response[bytes]:
        check_features(data.features)
        symbol = data.symbol.upper()
        args: dict[str, Any] = {
            "symbol": symbol,
            "side_hint": data.sideHint,
            "t0_ms": data.context.t0,
            "trigger": data.context.trigger,
            "dry_run": data.dry_run,
            "features": data.features,
        }
        if on_loop:  # the loop serves other requests while this one waits on Redis
            step = await run_steps_async(service.engine.decide_steps(**args), batcher())
        else:
            step = await sync_to_thread(partial(service.engine.decide_until_submit, **args))
        # S4 may take up to its whole budget: never on the event loop
        result = await sync_to_thread(step.submit) if isinstance(step, Submission) else step
        trace = None
        if data.trace:
            trace = await bounded(partial(service.trace, symbol, data.sideHint, data.features))
        resp = DecideResponse.of(
            result.decision,
            submitted=result.submitted,
            reservation=result.reservation,
            replayed=result.replayed,
            trace=trace,
        )
        return _json(resp)

    @get(
        "/metrics",
        sync_to_thread=False,
        summary="Prometheus metrics",
        responses={
            200: ResponseSpec(
                str,
                description="Prometheus text exposition",
                media_type="text/plain",
                generate_examples=False,
            )
        },
    )
    def metrics() -> Response[bytes]:
        return Response(service.engine.metrics.exposition(), media_type="text/plain; version=0.0.4")

    @post(
        "/admin/reload",
        guards=[auth_guard],
        sync_to_thread=True,
        summary="Check the bundle source now",
        status_code=HTTP_200_OK,
        security=openapi.SECURITY,
        responses=openapi.responses(openapi.ReloadResponse, ErrorBody, 401),
    )
    def admin_reload() -> Response[bytes]:
        r = service.reload("admin")
        return _json(
            {"status": r.status, "rev": r.rev, "bundle_id": r.bundle_id, "reasons": r.reasons}
        )

    @get(
        "/admin/bundle",
        guards=[auth_guard],
        sync_to_thread=False,
        summary="The bundle in force",
        security=openapi.SECURITY,
        responses=openapi.responses(openapi.BundleResponse, ErrorBody, 401),
    )
    def admin_bundle() -> Response[bytes]:
        snap = service.engine.registry.current
        return _json(
            {
                "bundle_id": snap.bundle_id,
                "rev": snap.rev,
                "checksum": snap.checksum,
                "rules": list(snap.ruleset.rule_ids),
            }
        )

    def error(body: ErrorBody, status: int) -> Response[bytes]:
        """An error answer, counted by code and status (`s3_http_errors_total`)."""
        service.engine.metrics.child(
            service.engine.metrics.http_errors, body.error, str(status)
        ).inc()
        return _json(body, status)

    def on_s3_error(_: Request[Any, Any, Any], exc: S3Error) -> Response[bytes]:
        return error(ErrorBody(exc.code, exc.detail, dict(exc.extra)), exc.status)

    def on_redis(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
        # Redis lost in the middle of a request (after the state was read): the same 503 as a
        # Redis found down at the start. The claim lapses after its short life and a pending
        # reservation is settled by reconcile/self-heal (docs/reliability.md)
        return error(ErrorBody("REDIS_DOWN", f"Redis is unavailable: {exc}"), 503)

    def on_validation(_: Request[Any, Any, Any], exc: ValidationException) -> Response[bytes]:
        extra = exc.extra if isinstance(exc.extra, dict) else {"errors": exc.extra}
        return error(ErrorBody("BAD_REQUEST", str(exc.detail), extra or {}), 400)

    def on_http(_: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
        code = {401: "UNAUTHORIZED", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(
            exc.status_code, "HTTP_ERROR"
        )
        return error(ErrorBody(code, str(exc.detail)), exc.status_code)

    def on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
        # A bug, not the request's fault nor a dependency's: the traceback goes to the log, the
        # client gets a plain 500 that names no internals
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return error(ErrorBody("INTERNAL", "an unexpected error; see the service log"), 500)

    async def on_stop() -> None:
        loop = asyncio.get_running_loop()
        mine = batchers.pop(loop, None)
        if mine is not None:
            await mine.aclose()

    return Litestar(
        route_handlers=[
            health,
            decide_route,
            metrics,
            admin_reload,
            admin_bundle,
            openapi.assets_router(),
        ],
        exception_handlers={
            S3Error: on_s3_error,
            redis.ConnectionError: on_redis,
            redis.TimeoutError: on_redis,
            ValidationException: on_validation,
            HTTPException: on_http,
            Exception: on_unexpected,
        },
        openapi_config=openapi.config(__version__),
        plugins=[openapi.DecimalAsNumber()],
        logging_config=None,  # the process configures logging, not the app
        request_class=_Request,
        on_shutdown=[on_stop],
        debug=False,
    )


__all__ = ["DecideRequest", "DecideResponse", "HealthResponse", "InputError", "create_app"]
