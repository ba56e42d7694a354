"""Queue depths and purge on the embedded SQLite broker (the Redis side is in tests/api)."""

from __future__ import annotations

from pathlib import Path

import pytest
from celery import Celery

from modomo.celery_app import celery_config
from modomo.config import load_settings
from modomo.queues import UnknownQueue, purge_queue, queue_depths


@pytest.fixture
def sqlite_app(tmp_path: Path) -> Celery:
    settings = load_settings(
        data_dir=tmp_path,
        broker_url=f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}",
        result_backend=f"db+sqlite:///{tmp_path / 'results.sqlite'}",
    )
    app = Celery("queues-test", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


def test_depths_and_purge_on_the_embedded_broker(sqlite_app: Celery) -> None:
    for _ in range(3):
        sqlite_app.send_task("t.colour", args=["not-a-job"], queue="color_processing")
    sqlite_app.send_task("t.other", queue="maintenance")
    depths = queue_depths(sqlite_app)
    assert depths["color_processing"] == 3 and depths["maintenance"] == 1
    assert depths["celery"] == 0
    report = purge_queue(sqlite_app, "color_processing")
    assert (report.messages, report.tasks, report.jobs) == (3, {"t.colour": 3}, [])
    assert queue_depths(sqlite_app, ["color_processing", "maintenance"]) == {
        "color_processing": 0,
        "maintenance": 1,
    }
    with pytest.raises(UnknownQueue, match="no queue named 'colour'"):
        purge_queue(sqlite_app, "colour")
