"""What a newcomer trips over (issue 22), run as the README writes the commands: a fresh data
directory, bad broker URLs, an empty export with a sheet, an AI worker without its weights.
Each ends with one line and the right exit status, never a traceback.
"""

from __future__ import annotations

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
