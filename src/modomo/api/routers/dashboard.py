"""``GET /dashboard``: the live monitoring page (one static HTML file; its data comes from
``GET /jobs/celery/dashboard`` with the viewer's credential)."""

from __future__ import annotations

import functools
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["dashboard"])


@functools.cache
def _page() -> str:
    return files("modomo.api").joinpath("dashboard.html").read_text(encoding="utf-8")


@router.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
def dashboard_page() -> HTMLResponse:
    """The page itself holds no data, so it is served without credentials."""
    return HTMLResponse(_page(), headers={"Cache-Control": "no-cache"})
