"""The OpenAPI description the app serves: typed bodies for every status a route answers, the
bearer scheme, and documentation pages that work offline.

The handlers return pre-encoded bytes (`Response[bytes]`), so Litestar cannot see their bodies:
each route declares them here (`responses(...)`). The pages (`/schema/swagger`, `/schema/redoc`,
`/schema/rapidoc`; `/schema` is Swagger UI) load their scripts and styles from
`/schema/assets/`, files shipped by the `openapi-ui-bundles` package, never from a CDN.
tests/http/test_openapi.py validates real answers of every route against the served schema.
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import (
    OpenAPIRenderPlugin,
    RapidocRenderPlugin,
    RedocRenderPlugin,
    SwaggerRenderPlugin,
)
from litestar.openapi.spec import Components, OpenAPIType, Schema, SecurityScheme
from litestar.plugins import OpenAPISchemaPlugin
from litestar.router import Router
from litestar.static_files import create_static_files_router

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.typing import FieldDefinition

ASSETS = "/schema/assets"
SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]

ERROR_WHEN = {
    400: "Malformed request, or features the bundle refuses (`error` says which: BAD_REQUEST, "
    "MISSING_FEATURES, BAD_FEATURE, BAD_FEATURES, BAD_SIDE, BAD_T0, UNSTORABLE_FEATURES)",
    401: "No or a wrong bearer token (UNAUTHORIZED)",
    422: "Well formed but not decidable here (SYMBOL_NOT_CONFIGURED, IN_PROGRESS)",
    500: "A bug (INTERNAL); the traceback is in the service log",
    503: "Redis or the store is unavailable (REDIS_DOWN, STORE_UNAVAILABLE, STORE_SCHEMA)",
}


class ReloadResponse(msgspec.Struct, frozen=True):
    """`POST /admin/reload`: what checking the bundle source did."""

    status: Literal["applied", "unchanged", "rejected", "unavailable"]
    rev: int | None
    bundle_id: str | None
    reasons: list[str]


class BundleResponse(msgspec.Struct, frozen=True):
    """`GET /admin/bundle`: the bundle revision in force."""

    bundle_id: str
    rev: int
    checksum: str
    rules: list[str]


class DecimalAsNumber(OpenAPISchemaPlugin):
    """Exact decimals (prices, quantities) are encoded as JSON numbers (`decimal_format=
    "number"`), so the schema says number, not Litestar's default string."""

    @staticmethod
    def is_plugin_supported_type(value: Any) -> bool:
        return value is Decimal

    def to_openapi_schema(
        self, field_definition: FieldDefinition, schema_creator: SchemaCreator
    ) -> Schema:
        return Schema(type=OpenAPIType.NUMBER, description="an exact decimal, as a JSON number")


def responses(
    ok: Any, error_body: type, *errors: int, ok_status: int = 200, ok_description: str = "OK"
) -> dict[int, ResponseSpec]:
    """Response specs: ``ok`` (a type) at ``ok_status``, and ``error_body`` at each of ``errors``
    (and 500, which any route can answer)."""
    specs = {
        ok_status: ResponseSpec(ok, description=ok_description, generate_examples=False),
    }
    for status in (*errors, 500):
        specs[status] = ResponseSpec(
            error_body, description=ERROR_WHEN[status], generate_examples=False
        )
    return specs


def _asset_dirs() -> list[str | Path | os.PathLike[Any]]:
    from openapi_ui_bundles import rapidoc, redoc, swagger_ui

    return [Path(swagger_ui.static_path), Path(redoc.static_path), Path(rapidoc.static_path)]


def assets_router() -> Router:
    """`/schema/assets/<file>`: the pages' scripts and styles, from the installed package."""
    return create_static_files_router(
        path=ASSETS, directories=_asset_dirs(), include_in_schema=False, name="schema-assets"
    )


def _plugins() -> list[OpenAPIRenderPlugin]:
    favicon = f"<link rel='icon' type='image/png' href='{ASSETS}/favicon-32x32.png'>"
    return [
        SwaggerRenderPlugin(
            path=["/", "/swagger"],
            js_url=f"{ASSETS}/swagger-ui-bundle.js",
            css_url=f"{ASSETS}/swagger-ui.css",
            standalone_preset_js_url=f"{ASSETS}/swagger-ui-standalone-preset.js",
            favicon=favicon,
        ),
        RedocRenderPlugin(
            path="/redoc",
            js_url=f"{ASSETS}/redoc.standalone.js",
            google_fonts=False,
            favicon=favicon,
        ),
        RapidocRenderPlugin(path="/rapidoc", js_url=f"{ASSETS}/rapidoc-min.js", favicon=favicon),
    ]


def config(version: str) -> OpenAPIConfig:
    return OpenAPIConfig(
        title="S3 strategy engine",
        version=version,
        description="Decides whether to open a position. Bodies and errors: docs/api.md.",
        components=Components(
            security_schemes={
                "bearer": SecurityScheme(
                    type="http",
                    scheme="bearer",
                    description="S3_API_TOKEN, as `Authorization: Bearer <token>`",
                )
            }
        ),
        render_plugins=_plugins(),
    )


__all__ = [
    "SECURITY",
    "BundleResponse",
    "DecimalAsNumber",
    "ReloadResponse",
    "assets_router",
    "config",
    "responses",
]
