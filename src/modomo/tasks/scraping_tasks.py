"""Scraping tasks (queue ``scraping``): the Houzz gallery crawler.

Thin: hold the job open, run :func:`modomo.sources.houzz.crawl_galleries` from the job's saved
cursor, release the job. A crawl longer than one task's time budget (most of
``MODOMO_TASK_SOFT_TIME_LIMIT``) saves its cursor and sends itself again to carry on, so no
run is cut off by the time limits; a redelivered or retried task resumes the same way.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from modomo.celery_app import app
from modomo.config import get_settings
from modomo.jobs import close_source, job_is_active, open_source
from modomo.sources.houzz import CrawlReport, check_room_types, crawl_galleries
from modomo.tasks.base import RETRY, SourceTask, same_priority, start_job

__all__ = ["run_scraping_job"]

log = logging.getLogger(__name__)

BUDGET_SHARE = 0.8
"""Share of the soft time limit one run may crawl before it hands over to the next."""


@app.task(bind=True, base=SourceTask, **RETRY)
def run_scraping_job(
    self: Task, job_id: str, limit: int = 100, room_types: list[str] | None = None
) -> dict[str, Any]:
    """Crawl up to ``limit`` photos from the Houzz galleries of ``room_types`` into the job.

    Args:
        job_id: a ``scrape`` job (uuid string).
        limit: photos the job takes in at most (stored or failed; already stored photos are
            skipped and do not count).
        room_types: API room types (``living-room``, ``bedroom``, ``kitchen``, ``bathroom``,
            ``dining-room``, ``home-office``, ``kids-room``, ``outdoor``); None: all.

    Returns:
        What this run did (:class:`~modomo.sources.houzz.CrawlReport`, e.g. ``stored``,
        ``failed``, ``skipped``, ``pages``), with ``continued`` when it handed over to a
        next run.

    Raises:
        ValueError: an unknown room type or a limit below 1 (the job is marked failed).
    """
    check_room_types(room_types)
    job_id, started = start_job(job_id, "scrape", {"limit": limit, "room_types": room_types})
    if started is not None:
        return started
    if not job_is_active(job_id):  # cancelled (or finished) while this waited in the queue
        close_source(job_id)  # drops the hold a killed earlier run may have left
        return {**CrawlReport(cancelled=True).as_dict(), "continued": False}
    open_source(job_id)
    settings = get_settings()
    deadline = time.monotonic() + BUDGET_SHARE * settings.task_soft_time_limit

    def progress(taken: int, of: int) -> None:
        if self.request.id:  # not when called directly (no task context to report to)
            self.update_state(
                state="PROGRESS",
                meta={
                    "current": taken,
                    "total": of,
                    "progress": round(100.0 * taken / of, 2),
                    "message": f"crawl: {taken}/{of} photos",
                },
            )

    try:
        report = crawl_galleries(
            job_id, limit, room_types, settings=settings, deadline=deadline, on_progress=progress
        )
    except SoftTimeLimitExceeded:  # one slow request ran past the budget: the cursor holds
        log.warning("crawl of job %s ran into the soft time limit; carrying on", job_id)
        report = CrawlReport()
    if not report.finished and not report.cancelled:
        run_scraping_job.apply_async(
            kwargs={"job_id": job_id, "limit": limit, "room_types": room_types},
            **same_priority(self),
        )
        return {**report.as_dict(), "continued": True}
    message = None
    if not report.cancelled and report.error is None:
        message = (
            f"crawl finished: {report.total_pages} gallery pages read, "
            f"{report.total_skipped} photos already stored skipped"
        )
    close_source(job_id, error=report.error, message=message)
    return {**report.as_dict(), "continued": False}
