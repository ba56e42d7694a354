"""What a newcomer trips over (issue 22), run as the README writes the commands: a fresh data
directory, bad broker URLs, an empty export with a sheet, an AI worker without its weights.
Each ends with one line and the right exit status, never a traceback.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO, run_cli, worker_env


def modomo(
    *args: str, data_dir: Path, timeout: int = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """``modomo ARGS`` on the embedded default in ``data_dir`` (no broker, no database URL)."""
    environment = {
        k: v
        for k, v in worker_env(COLUMNS="300", **env).items()
        if not k.startswith(("MODOMO_", "DATABASE_URL", "REDIS_URL", "CELERY_")) or k in env
    }
    environment["MODOMO_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "modomo.cli", *args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_read_commands_on_a_fresh_data_directory(tmp_path: Path) -> None:
    for args in (("jobs", "list"), ("duplicates",), ("schedules", "list")):
        done = modomo(*args, data_dir=tmp_path / "fresh")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Traceback" not in done.stderr and "no such table" not in done.stderr
    assert (tmp_path / "fresh" / "modomo.sqlite").is_file()


def test_a_bad_broker_url_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    for url, says in (
        ("nonsense://x", "unknown scheme 'nonsense'"),
        ("redis://127.0.0.1:notaport/0", "the port is not a number"),
    ):
        for args in (("process", str(tmp_path)), ("worker",)):
            done = modomo(*args, data_dir=tmp_path / "data", MODOMO_BROKER_URL=url)
            assert done.returncode == 2, done.stdout + done.stderr
            assert "MODOMO_BROKER_URL" in done.stderr and says in done.stderr
            assert "Traceback" not in done.stderr + done.stdout
    # nothing was started: no job waits for ever
    jobs = modomo("jobs", "list", data_dir=tmp_path / "data")
    assert jobs.returncode == 0 and "pending" not in jobs.stdout


def test_an_ai_worker_without_weights_refuses_to_start(tmp_path: Path) -> None:
    done = modomo("worker", "--ai", "--warmup", data_dir=tmp_path / "data", timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "not starting the AI worker: detector weights 'yolo11n.pt'" in done.stdout
    assert "modomo models pull detector" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_an_ai_worker_whose_models_cannot_load_stops(tmp_path: Path) -> None:
    """Weights that are there but do not load (a truncated download): the worker child's
    warm-up fails, and the worker shuts down rather than taking tasks it cannot run."""
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    resolvable = tmp_path / "hub-folder"  # passes the start-up check; never loaded
    resolvable.mkdir()
    (resolvable / "config.json").write_text("{}")
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "modomo.cli", "worker", "--ai", "--warmup"],
            cwd=REPO,
            env={
                **{k: v for k, v in worker_env().items() if not k.startswith("MODOMO_")},
                "MODOMO_DATA_DIR": str(tmp_path / "data"),
                "MODOMO_DETECTOR_WEIGHTS": str(broken),
                "MODOMO_SEGMENTER_WEIGHTS": str(resolvable),
                "MODOMO_DEPTH_WEIGHTS": str(resolvable),
                "MODOMO_DEPTH_FALLBACK_WEIGHTS": "",
            },
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            worker.wait(timeout=180)
        finally:
            if worker.poll() is None:
                worker.kill()
    text = log.read_text()
    assert worker.returncode is not None, text
    assert "the models cannot load" in text and "stopping this AI worker" in text
    assert "Traceback" not in text


@pytest.mark.services
def test_no_worker_listening_is_said_with_the_command_to_start_one() -> None:
    done = run_cli("scrape", "houzz", "--limit", "1", "--no-wait", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no worker is listening on the scraping queue" in done.stdout
    assert "modomo worker -Q scraping" in done.stdout
    job_id = re.search(r"job (\S+) \(scrape", done.stdout)
    assert job_id, done.stdout
    cancelled = run_cli("jobs", "cancel", job_id.group(1))  # nothing waits for a worker
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr


def test_the_original_guides_supabase_settings_are_not_silently_ignored(tmp_path: Path) -> None:
    done = modomo(
        "jobs",
        "list",
        data_dir=tmp_path / "data",
        SUPABASE_URL="https://project.supabase.co",
        SUPABASE_ANON_KEY="anon",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUPABASE_URL and SUPABASE_ANON_KEY are set, but job records go to the local" in (
        done.stderr
    )
    assert "set DATABASE_URL" in done.stderr


def test_models_list_names_the_command_that_fetches_each_weight(tmp_path: Path) -> None:
    done = modomo("models", "list", data_dir=tmp_path / "data")
    assert done.returncode == 0, done.stdout + done.stderr
    for role in ("detector", "segmenter", "depth", "clip"):
        assert f"missing: `modomo models pull {role}`" in done.stdout
    assert "MissingWeightsError" not in done.stdout


def test_a_missing_hub_weight_never_suggests_downloading_from_a_worker(tmp_path: Path) -> None:
    from modomo.models.weights import MissingWeightsError, resolve

    with pytest.raises(MissingWeightsError) as caught:
        resolve("clip", "openai/clip-vit-base-patch32", tmp_path)
    message = str(caught.value)
    assert "local_files_only" not in message
    assert "modomo models pull clip" in message and str(tmp_path / "huggingface") in message


def test_a_disabled_schedule_has_no_next_run(tmp_path: Path) -> None:
    data = tmp_path / "data"
    added = modomo(
        "schedules", "add", "nightly", "--cron", "0 3 * * *", "--job", "dedup", "--disabled",
        data_dir=data,
    )  # fmt: skip
    assert added.returncode == 0 and "next run - (disabled)" in added.stdout, added.stdout
    listed = modomo("schedules", "list", "--json", data_dir=data)
    [record] = json.loads(listed.stdout)
    assert record["enabled"] is False and record["next_run_at"] is None
    enabled = modomo("schedules", "enable", "nightly", data_dir=data)
    assert "enabled, next run 20" in enabled.stdout, enabled.stdout


def test_a_job_where_every_scene_failed_says_so_once_per_reason(tmp_path: Path) -> None:
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for index in range(3):
        pixels = bytes(range(index, index + 3)) * (64 * 80)
        Image.frombytes("RGB", (80, 64), pixels).save(photos / f"room{index}.png")
    done = modomo("process", str(photos), "--pipeline", "detect", data_dir=tmp_path / "data")
    assert done.returncode == 1, done.stdout + done.stderr  # the job failed
    assert "no scene was processed: every scene failed" in done.stdout
    assert "no objects detected" not in done.stdout
    # the missing weight is one row for the three scenes, not three copies of it
    assert done.stdout.count("weights 'yolo11n.pt' are not available") == 1
    assert "and 2 more" in done.stdout and "Traceback" not in done.stdout + done.stderr


def test_stage_counts_add_up_with_ingest_failures_as_the_readme_says(tmp_path: Path) -> None:
    import sqlite3
    from contextlib import closing

    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for index in range(3):
        Image.new("RGB", (40, 30), (40 * index, 90, 200)).save(photos / f"room{index}.png")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    done = modomo("process", str(photos), "--pipeline", "colors", data_dir=tmp_path / "data")
    assert "Traceback" not in done.stdout + done.stderr, done.stdout
    with closing(sqlite3.connect(tmp_path / "data" / "modomo.sqlite")) as db:
        total, processed, failed = db.execute(
            "SELECT total, processed, failed FROM jobs"
        ).fetchone()
        stages = {
            stage: (done_, failed_)
            for stage, done_, failed_ in db.execute(
                "SELECT stage, processed, failed FROM job_stages"
            )
        }
    assert (total, processed, failed) == (4, 3, 1)
    assert stages["ingest"] == (0, 1) and stages["colors"] == (3, 0)
    # the first pipeline stage's processed + failed, plus the ingest failures, is the total
    assert sum(stages["colors"]) + stages["ingest"][1] == total


def test_results_from_the_cli_without_the_api(tmp_path: Path) -> None:
    from PIL import Image

    data = tmp_path / "data"
    photos = tmp_path / "photos"
    photos.mkdir()
    for index, colour in enumerate([(200, 40, 40), (30, 60, 190)]):
        Image.new("RGB", (64, 48), colour).save(photos / f"room{index}.png")
    done = modomo("process", str(photos), "--pipeline", "colors", data_dir=data)
    assert done.returncode == 0, done.stdout + done.stderr

    [job] = json.loads(modomo("jobs", "list", "--json", data_dir=data).stdout)
    listed = modomo("jobs", "list", data_dir=data)
    assert job["id"] in listed.stdout  # the whole id, as the other commands take it
    shown = modomo("jobs", "show", job["id"][:8], "--json", data_dir=data)
    assert shown.returncode == 0 and json.loads(shown.stdout)["id"] == job["id"]
    unknown = modomo("jobs", "show", "ffffffff", data_dir=data)
    assert unknown.returncode == 1 and "no job id starts with 'ffffffff'" in unknown.stdout

    scenes = json.loads(modomo("scenes", "list", "--json", data_dir=data).stdout)
    assert scenes["total"] == 2
    assert {s["colors"]["palette"][0]["name"] for s in scenes["scenes"]} == {"red", "blue"}
    table = modomo("scenes", "list", "--job", job["id"][:8], data_dir=data)
    assert table.returncode == 0 and "2 of 2 scenes" in table.stdout
    first = scenes["scenes"][0]
    one = modomo("scenes", "show", first["id"][:10], data_dir=data)
    assert one.returncode == 0, one.stdout + one.stderr
    assert first["id"] in one.stdout and "0 objects" in one.stdout
    assert first["colors"]["palette"][0]["name"] in one.stdout
    record = json.loads(modomo("scenes", "show", first["id"], "--json", data_dir=data).stdout)
    assert record["colors"] == first["colors"] and record["detected_objects"] == []


def test_the_failure_table_shows_the_input_given_this_time(tmp_path: Path) -> None:
    from PIL import Image

    data = tmp_path / "data"
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    Image.new("RGB", (64, 48), (120, 80, 40)).save(first / "kitchen.png")
    (second / "kitchen-copy.png").write_bytes((first / "kitchen.png").read_bytes())
    assert modomo("process", str(first), "--pipeline", "colors", data_dir=data).returncode == 0
    # the same image given again under another name, to a job that fails it (no weights)
    done = modomo("process", str(second), "--pipeline", "detect", data_dir=data)
    assert done.returncode == 1, done.stdout + done.stderr
    table = done.stdout[done.stdout.index("failed scenes") :]
    assert "kitchen-copy.png" in table and "first/kitchen.png" not in table


@pytest.mark.services
def test_a_job_id_prefix_on_postgresql() -> None:
    from modomo.jobs import create_job

    job_id = str(create_job("colors", {"test": "prefix"}))
    shown = run_cli("jobs", "show", job_id[:13], "--json")  # with its dash, as printed
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert json.loads(shown.stdout)["id"] == job_id
    assert run_cli("jobs", "cancel", job_id.replace("-", "")[:12]).returncode == 0
