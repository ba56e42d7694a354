"""The original Modomo scraper's guide, as its users type it: the top-level ``tasks`` and
``models`` imports from the repository root, and start tasks called directly with a job id of
the caller's own choosing, through a real worker, Redis and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from modomo.jobs import EXTERNAL_IDS, create_job, describe_job
from modomo.sources import expand_sources, ingest
from tests.support import REPO, celery_worker, wait_for_job, worker_env, write_unique_images


def test_the_guide_imports_work_from_the_repository_root() -> None:
    script = """
from tasks.color_tasks import run_color_processing_job
from tasks.detection_tasks import run_detection_pipeline
from tasks.classification_tasks import run_scene_reclassification_job, run_dedup_job
from tasks.scraping_tasks import run_scraping_job
from models.registry import ModelRegistry
from models import MissingWeightsError
import modomo.tasks.color_tasks, modomo.models.registry, tasks.color_tasks
assert tasks.color_tasks is modomo.tasks.color_tasks  # the same module, the same tasks
assert ModelRegistry is modomo.models.registry.ModelRegistry
print(run_color_processing_job.name, run_detection_pipeline.name, run_scraping_job.name)
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "modomo.tasks.color_tasks.run_color_processing_job",
        "modomo.tasks.detection_tasks.run_detection_pipeline",
        "modomo.tasks.scraping_tasks.run_scraping_job",
    ]


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> str:
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    with celery_worker("celery,color_processing", log_path=log) as hostname:
        yield hostname


@pytest.mark.services
def test_a_task_called_with_its_own_job_id_creates_the_job_once(
    worker: str, tmp_path: Path
) -> None:
    from modomo.tasks.color_tasks import run_color_processing_job

    write_unique_images(tmp_path / "photos", 3)
    ingest(create_job("import", {}), expand_sources([str(tmp_path / "photos")]))
    chosen = f"color_{uuid.uuid4().hex[:8]}"

    # as the guide writes it
    result = run_color_processing_job.delay(job_id=chosen, limit=2).get(timeout=60)
    job_id = uuid.uuid5(EXTERNAL_IDS, chosen)
    assert result["id"] == str(job_id)
    assert result["params"] == {"limit": 2, "external_id": chosen}
    assert (result["type"], result["scenes"], result["batches"]) == ("colors", 2, 1)
    job = wait_for_job(job_id)
    assert (job["status"], job["total"], job["processed"], job["failed"]) == (
        "completed",
        2,
        2,
        0,
    )
    # the caller's id names the job everywhere a job id is taken
    assert describe_job(chosen)["id"] == str(job_id)

    # the same call again: the job's summary, no second run of its work
    again = run_color_processing_job.delay(job_id=chosen, limit=2).get(timeout=60)
    assert again["id"] == str(job_id) and "not done twice" in again["skipped"]
    assert (again["status"], again["total"], again["processed"]) == ("completed", 2, 2)
    assert describe_job(job_id)["processed"] == 2
