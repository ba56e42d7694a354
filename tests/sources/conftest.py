"""Source tests start their own workers on ``scraping`` and ``import``: a message left in those
queues by an earlier test (the API tests enqueue crawls and imports) must not reach them."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="module", autouse=True)
def _empty_source_queues() -> None:
    if not os.environ.get("REDIS_URL"):
        return  # no Redis in this session: the service tests skip anyway
    from modomo.celery_app import app
    from modomo.queues import purge_queue

    for queue in ("scraping", "import"):
        purge_queue(app, queue)
