"""Queue depths and purge on the embedded SQLite broker (the Redis side is in tests/api), and
``modomo queues``: each queue's Redis priority sub-lists, counted on the real Redis."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from celery import Celery

from modomo.celery_app import QUEUES, celery_config
from modomo.config import load_settings
from modomo.queues import UnknownQueue, purge_queue, queue_depths, shell_word
from tests.support import REPO, worker_env


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


def modomo_queues(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modomo.cli", "queues", *args],
        cwd=REPO,
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.services
def test_modomo_queues_counts_each_priority_list_on_redis() -> None:
    """Jobs submitted at three priorities, on a queue no worker reads: ``modomo queues`` shows
    each priority's list by the name Redis has for it, with the right counts and total."""
    import redis

    from modomo.celery_app import app
    from modomo.db.models import Priority
    from modomo.jobs.scheduling import JOB_TASKS, Timing, submit_job

    queue = "import"  # where the import job's start task is routed; no worker here reads it
    client = redis.Redis.from_url(app.conf.broker_url)
    purge_queue(app, queue)
    sent = {Priority.URGENT: 2, Priority.HIGH: 0, Priority.NORMAL: 1, Priority.LOW: 3}
    try:
        for level, count in sent.items():
            for n in range(count):
                submit_job(
                    "import",
                    JOB_TASKS["import"],
                    {"dataset": f"probe/{level}-{n}"},
                    timing=Timing(priority=level),
                )
        done = modomo_queues("--json", env=worker_env())
        assert done.returncode == 0, done.stdout + done.stderr
        report = json.loads(done.stdout)
        assert (
            report["redis"] is True
            and report["db"] == client.connection_pool.connection_kwargs["db"]
        )
        assert [q["queue"] for q in report["queues"]] == list(QUEUES)
        (imports,) = [q for q in report["queues"] if q["queue"] == queue]
        assert imports["total"] == 6
        assert [
            (item["level"], item["priority"], item["key"], item["redis_cli"], item["waiting"])
            for item in imports["lists"]
        ] == [
            ("urgent", 0, "import", "import", 2),
            ("high", 3, "import\x06\x163", r"$'import\x06\x163'", 0),
            ("normal", 6, "import\x06\x166", r"$'import\x06\x166'", 1),
            ("low", 9, "import\x06\x169", r"$'import\x06\x169'", 3),
        ]
        # the names are Redis's own keys, and typed as shown they reach the same lists
        assert {key.decode() for key in client.scan_iter(f"{queue}*")} == {
            "import",
            "import\x06\x166",
            "import\x06\x169",
        }
        for item in imports["lists"]:
            assert client.llen(item["key"]) == item["waiting"]
            typed = subprocess.run(
                ["bash", "-c", f"printf %s {item['redis_cli']}"], capture_output=True, check=True
            )
            assert typed.stdout == item["key"].encode()

        table = modomo_queues(queue, "detection", env=worker_env())
        assert table.returncode == 0, table.stdout + table.stderr
        assert "redis-cli -n" in table.stdout
        rows = [
            [cell.strip() for cell in line.split("│")[1:-1]]
            for line in table.stdout.splitlines()
            if line.startswith("│")
        ]
        assert ["import", "9 low", r"$'import\x06\x169'", "3"] in rows
        assert ["import", "total", "", "6"] in rows
        assert ["detection", "6 normal", r"$'detection\x06\x166'", "0"] in rows
        assert {row[0] for row in rows} == {"import", "detection"}

        unknown = modomo_queues("imports", env=worker_env())
        assert unknown.returncode == 2 and "no queue named 'imports'" in unknown.stdout
    finally:
        report_of_purge = purge_queue(app, queue)
    assert report_of_purge.messages == 6 and len(report_of_purge.jobs) == 6
    assert not list(client.scan_iter(f"{queue}*"))
    client.close()


def test_modomo_queues_does_not_apply_to_the_embedded_broker(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MODOMO_DATA_DIR": str(tmp_path)}
    done = modomo_queues(env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and "does not apply" in lines[0] and "not Redis" in lines[0]
    as_json = modomo_queues("--json", env=env)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == {"redis": False, "message": lines[0]}


def test_shell_words_as_bash_reads_them() -> None:
    words = ["celery", "ai_processing\x06\x166", "it's a \\ queue", "é\tx"]
    for text in words:
        typed = subprocess.run(
            ["bash", "-c", f"printf %s {shell_word(text)}"], capture_output=True, check=True
        )
        assert typed.stdout == text.encode()
    assert shell_word("ai_processing\x06\x166") == r"$'ai_processing\x06\x166'"
