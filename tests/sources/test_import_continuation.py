"""A long import hands the rest of its slice to a new task before its soft time limit.

In a module of its own: its worker must be the only one on ``import`` (the other import
tests' module-scoped worker would take the task with the default limits)."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import datasets
import pytest
from pytest_httpserver import HTTPServer

from modomo.jobs import create_job
from tests.sources.test_import_task import image_bytes, image_table, run_import, scenes_under
from tests.support import celery_worker, wait_for_job

pytestmark = pytest.mark.services


def test_a_long_import_goes_on_in_a_new_task_before_the_time_limit(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    """With a 2 s soft time limit, a task hands the rest of the slice on after 1.5 s; the job
    still completes once, with every row counted once."""
    from werkzeug import Request, Response

    from modomo.tasks.import_tasks import import_huggingface_dataset

    one_at_a_time = threading.Lock()  # whether or not the server is threaded: 20 rows/s

    def slow(request: Request) -> Response:
        with one_at_a_time:
            time.sleep(0.05)
        index = int(request.path.rsplit("/", 1)[1].split(".")[0])
        return Response(image_bytes("slow", index), content_type="image/png")

    rows = 48
    httpserver.expect_request(re.compile(r"/slow/\d+\.png")).respond_with_handler(slow)
    path = tmp_path / "slow"
    datasets.Dataset.from_dict(
        {"image_url": [httpserver.url_for(f"/slow/{i}.png") for i in range(rows)]}
    ).save_to_disk(str(path))
    warm = tmp_path / "warm"
    image_table("warm", 2).save_to_disk(str(warm))
    with celery_worker(
        queues="import",
        log_path=tmp_path / "worker.log",
        MODOMO_IMPORT_ROOTS=str(tmp_path),
        HF_HUB_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf-home"),
        MODOMO_ALLOW_PRIVATE_URLS="1",
        MODOMO_CRAWL_CHUNK_SIZE="4",
        MODOMO_TASK_SOFT_TIME_LIMIT="2",
        MODOMO_TASK_TIME_LIMIT="60",
        MODOMO_CRAWL_RATE_PER_HOST="1000",  # the shared per-host limit must not be the bottleneck
    ):
        run_import(warm)  # the child imported datasets at start; this warms the rest
        job_id = str(create_job("import", {"dataset": str(path), "limit": rows}))
        first = import_huggingface_dataset.apply_async(
            kwargs={"job_id": job_id, "dataset": str(path), "limit": rows}
        )
        job = wait_for_job(job_id, timeout_s=60)
    outcome = first.get(timeout=5)
    assert outcome.get("continued") is True, outcome
    assert (job["status"], job["total"], job["processed"], job["failed"]) == (
        "completed",
        rows,
        rows,
        0,
    )
    assert job["params"]["next_index"] == rows
    assert len(scenes_under(path)) == rows
