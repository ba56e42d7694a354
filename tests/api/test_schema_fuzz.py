"""Schemathesis against the real server's OpenAPI schema: generated requests (valid and
invalid) on the job, scene and object endpoints never get a 5xx (501 from an endpoint whose
task has not landed yet is its documented answer, and is told apart by its message)."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.api.conftest import Keys

pytestmark = pytest.mark.services

FUZZED = r"^/(jobs|scenes|objects|detect|process|scraper|import|classify|dedup|duplicates|exports)"


def test_no_server_errors(api: str, keys: Keys) -> None:
    schema = schemathesis.openapi.from_url(f"{api}/openapi.json").include(path_regex=FUZZED)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    seen: dict[str, set[int]] = {}
    for operation in operations:
        fuzz(operation, api, keys.user, seen)
    # the crawls and imports it started (random but valid) must not run later in the session
    from modomo.celery_app import app
    from modomo.queues import purge_queue

    queues = ("scraping", "import", "detection", "color_processing", "classification", "celery")
    for queue in queues:
        purge_queue(app, queue)
    assert len(seen) == len(operations)
    assert any(codes & {200, 202} for codes in seen.values())
    assert any(422 in codes for codes in seen.values())


def fuzz(operation: schemathesis.APIOperation, api: str, key: str, seen: dict) -> None:
    """Call one operation with generated cases; any 5xx fails with the curl command."""
    label = f"{operation.method.upper()} {operation.path}"

    @given(case=operation.as_strategy())
    @settings(
        max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def call(case: schemathesis.Case) -> None:
        response = case.call(base_url=api, headers={"X-API-Key": key})
        seen.setdefault(label, set()).add(response.status_code)
        # 501 is the documented answer of an endpoint whose task is not in this version yet
        planned = response.status_code == 501 and "not available in this version" in response.text
        assert response.status_code < 500 or planned, (
            label,
            case.as_curl_command(),
            response.text,
        )

    call()


def test_schema_lists_every_documented_endpoint(api: str) -> None:
    paths = httpx.get(f"{api}/openapi.json").json()["paths"]
    for path in (
        "/detect/process",
        "/scraper/start",
        "/import/huggingface-dataset",
        "/process/colors",
        "/classify/reclassify",
        "/jobs",
        "/jobs/{job_id}",
        "/jobs/{job_id}/celery-status",
        "/jobs/{job_id}/cancel",
        "/jobs/{job_id}/retry",
        "/scenes",
        "/scenes/{scene_id}",
        "/objects",
        "/jobs/celery/active-tasks",
        "/jobs/celery/workers",
        "/jobs/celery/queues",
        "/jobs/celery/dashboard",
        "/jobs/celery/purge-queue/{queue_name}",
        "/health",
        "/ready",
    ):
        assert path in paths, path
    assert httpx.get(f"{api}/docs").status_code == 200
