"""``/docs`` (Swagger UI) and ``/redoc`` served with their assets from this server, and the
credentials as OpenAPI security schemes.

FastAPI's own doc pages load Swagger UI and ReDoc from a CDN (and ReDoc's fonts from Google),
so they are blank on a machine without internet, such as an offline GPU cluster. The pages
here load the same assets from the ``fastapi-offline`` package (Swagger UI's bundle and CSS,
ReDoc's standalone bundle, a favicon), mounted at :data:`ASSETS_URL`: nothing leaves the
server.

The OpenAPI document declares the two ways to send a credential, ``X-API-Key: <key>`` and
``Authorization: Bearer <key or JWT>``, and every operation that needs one says so (either
scheme will do), so Swagger UI's "Authorize" sends it and clients generated from the document
know where it goes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.routing import BaseRoute

__all__ = ["ASSETS_URL", "SECURITY_SCHEMES", "install_docs", "install_security"]

ASSETS_URL = "/docs-assets"
"""Where the doc pages' scripts, styles and favicon are served."""

_ASSETS = Path(fastapi_offline.__file__).parent / "static"

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "APIKeyHeader": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "An API key (`mdm_...`, from `modomo keys create` or `POST /keys`).",
    },
    "BearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "API key or JWT",
        "description": "`Authorization: Bearer <API key or Supabase-issued JWT>`.",
    },
}
_REQUIREMENT: list[dict[str, list[str]]] = [{name: []} for name in SECURITY_SCHEMES]  # either


def install_docs(app: FastAPI) -> None:
    """Serve ``/docs``, its OAuth2 redirect page and ``/redoc`` from local assets (the app
    must be created with ``docs_url=None, redoc_url=None``)."""
    app.mount(ASSETS_URL, StaticFiles(directory=_ASSETS), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    redirect_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{redirect_url}",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    @app.get(redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )


def install_security(
    app: FastAPI, routes: Iterable[BaseRoute], needs_credentials: Callable[[APIRoute], bool]
) -> None:
    """Declare :data:`SECURITY_SCHEMES` in ``app``'s OpenAPI document, and require them on the
    operations of ``routes`` for which ``needs_credentials`` holds."""
    secured = {
        (route.path_format, method.lower())
        for route in routes
        if isinstance(route, APIRoute) and needs_credentials(route)
        for method in route.methods or ()
    }
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()  # FastAPI's, cached by FastAPI; the additions are idempotent
        schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                if (path, method) in secured:
                    operation["security"] = _REQUIREMENT
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
