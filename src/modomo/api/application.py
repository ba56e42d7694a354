"""The FastAPI application: routers, CORS, the event monitor's lifetime, error bodies.

``create_app()`` builds an app from the process settings; ``app`` is the one uvicorn serves
(``modomo.api:app``, ``main_refactored:app``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from modomo import __version__
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
            "MODOMO_AUTH_DISABLED is set: no credentials are asked and only loopback "
            "clients are served"
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
    )
    app.state.monitor = CeleryMonitor(celery_app)
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
    for module in (
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
    ):
        app.include_router(module.router)
    return app


app = create_app()
