"""The FastAPI application: routers, CORS, the event monitor's lifetime, error bodies.

``create_app()`` builds an app from the process settings; ``app`` is the one uvicorn serves
(``modomo.api:app``, ``main_refactored:app``). The app carries its own protections, so they
hold however it is served: :class:`modomo.api.guard.RequestGuard` (loopback clients only while
auth is disabled, header and body size limits, credentials before the body), validation
errors that always serialise (:mod:`modomo.api.errors`), and doc pages that need no internet
(:mod:`modomo.api.docs`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware

from modomo import __version__
from modomo.api.auth import authenticate
from modomo.api.docs import install_docs, install_security
from modomo.api.errors import validation_error_handler
from modomo.api.guard import RequestGuard, authenticate_once, needs_credentials
from modomo.api.monitor import CeleryMonitor
from modomo.api.routers import (
    classification,
    colors,
    dashboard,
    detection,
    exports,
    health,
    imports,
    jobs,
    keys,
    monitoring,
    objects,
    scenes,
    schedules,
    scraping,
)
from modomo.celery_app import app as celery_app
from modomo.config import get_settings

__all__ = ["app", "create_app"]

log = logging.getLogger("modomo.api")


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    if settings.auth_disabled:
        log.warning(
            "MODOMO_AUTH_DISABLED is set: no credentials are asked, so only loopback "
            "clients are served (any other client, or a request through a proxy, gets 403)"
        )
    monitor: CeleryMonitor = app.state.monitor
    monitor.start()
    try:
        yield
    finally:
        monitor.stop()


def create_app() -> FastAPI:
    """Build the API app: every router, CORS from ``MODOMO_CORS_ORIGINS``, the monitor."""
    settings = get_settings()
    # Register every task module, so an endpoint can tell a missing task (501) from a bug.
    celery_app.loader.import_default_modules()
    app = FastAPI(
        title="Modomo",
        version=__version__,
        summary="Interior photographs to ML training datasets: jobs, scenes, objects.",
        lifespan=_lifespan,
        docs_url=None,  # served by modomo.api.docs, from local assets
        redoc_url=None,
    )
    app.state.monitor = CeleryMonitor(celery_app)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    # the guard's check before a body is read and the routes' dependencies share a lookup
    app.dependency_overrides[authenticate] = authenticate_once
    app.add_middleware(
        RequestGuard,
        max_body_bytes=settings.api_max_body_bytes,
        max_header_bytes=settings.api_max_header_bytes,
        loopback_only=settings.auth_disabled,
    )
    origins = settings.cors_origins
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            # a wildcard origin never gets credentials (browsers refuse it, and rightly)
            allow_credentials="*" not in origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
        )
    modules = (
        health,
        monitoring,  # before jobs: /jobs/celery/... are not job ids
        jobs,
        detection,
        scraping,
        imports,
        colors,
        classification,
        exports,
        scenes,
        objects,
        keys,
        schedules,
        dashboard,
    )
    for module in modules:
        app.include_router(module.router)
    install_docs(app)
    install_security(app, (route for m in modules for route in m.router.routes), needs_credentials)
    return app


app = create_app()
