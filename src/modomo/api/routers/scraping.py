"""``POST /scraper/start``: crawl Houzz room galleries into scenes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status

from modomo.api.enqueue import enqueue_job
from modomo.api.jobrequest import JobRequest
from modomo.api.keys import Principal
from modomo.api.ratelimit import enqueue_limit
from modomo.api.schemas import Accepted, ScraperRequest

router = APIRouter(tags=["scraping"])

SCRAPER = JobRequest(ScraperRequest)


@router.post(
    "/scraper/start",
    status_code=status.HTTP_202_ACCEPTED,
    openapi_extra=SCRAPER.openapi_extra(),
)
def scraper_start(
    principal: Annotated[Principal, Depends(enqueue_limit)],
    body: Annotated[ScraperRequest, Depends(SCRAPER.dependency)],
) -> Accepted:
    """Crawl up to ``limit`` photos from the Houzz galleries of ``room_types``."""
    return enqueue_job(
        principal,
        "scrape",
        "modomo.tasks.scraping_tasks.run_scraping_job",
        body.task_kwargs(),
        options=body,
        missing="the Houzz crawler is not available in this version: no task "
        "modomo.tasks.scraping_tasks.run_scraping_job is registered",
    )
