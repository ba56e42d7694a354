"""The CLI on the embedded default: `modomo process` with nothing configured (SQLite broker,
SQLite job database, in-process worker), as a user runs it."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.support import REPO, write_unique_images


def modomo(*args: str, data_dir: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(data_dir),
        "MODOMO_DATA_DIR": str(data_dir),
        "COLUMNS": "200",
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "modomo.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def demo_sources() -> list[str]:
    done = subprocess.run(
        [sys.executable, "scripts/demo_sources.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.split()


def test_process_on_the_embedded_default(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    photos = tmp_path / "photos"
    write_unique_images(photos, 55)
    (photos / "broken.jpg").write_bytes(b"GIF89a not really")
    done = modomo("process", str(photos), *demo_sources(), data_dir=data_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "palettes" in done.stdout and "completed" in done.stdout
    assert "broken.jpg" in done.stdout  # the failure is listed with its reason

    with sqlite3.connect(data_dir / "modomo.sqlite") as db:
        status, total, processed, failed = db.execute(
            "SELECT status, total, processed, failed FROM jobs"
        ).fetchone()
        with_colours = db.execute(
            "SELECT count(*) FROM scenes WHERE colors IS NOT NULL"
        ).fetchone()[0]
    assert status == "completed"
    # broken.jpg, and scikit-image's multipage_rgb.tif, a TIFF that Pillow cannot decode
    assert 1 <= failed <= 2 and processed + failed == total and processed >= 55 + 20
    assert with_colours == processed

    shown = modomo("jobs", "list", data_dir=data_dir)
    assert shown.returncode == 0 and "completed" in shown.stdout
    job_id = db_job_id(data_dir)
    record = json.loads(modomo("jobs", "show", job_id, "--json", data_dir=data_dir).stdout)
    reasons = {f["source_key"].rsplit("/", 1)[-1]: f for f in record["failures"]}
    assert reasons["broken.jpg"]["stage"] == "ingest"
    assert (
        "not an image" in reasons["broken.jpg"]["error"]
        or "corrupt" in reasons["broken.jpg"]["error"]
    )


def db_job_id(data_dir: Path) -> str:
    with sqlite3.connect(data_dir / "modomo.sqlite") as db:
        (job_id,) = db.execute("SELECT id FROM jobs").fetchone()
    # SQLAlchemy's Uuid type stores 32 hex digits on SQLite
    return job_id


def test_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    done = modomo("process", str(tmp_path / "nowhere"), data_dir=tmp_path)
    assert done.returncode == 2
    assert "no such file or folder" in done.stdout + done.stderr


def test_pipeline_auto_skips_stages_without_weights(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    photos = tmp_path / "photos"
    write_unique_images(photos, 3)
    done = modomo("process", "--pipeline", "auto", str(photos), data_dir=data_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    for stage, role in (
        ("detect", "detector"),
        ("segment", "segmenter"),
        ("depth", "depth"),
        ("classify", "clip"),
    ):
        assert f"skipping the {stage} stage" in done.stdout
        assert f"modomo models pull {role}" in done.stdout
    assert "3 total, 3 processed, 0 failed" in done.stdout
    # de-duplication needs no weights: it runs after the palettes, over the whole catalogue
    assert "(dedup) over the whole catalogue" in done.stdout
    assert "no near-duplicate scenes" in done.stdout


def test_models_list_and_a_bad_pipeline(tmp_path: Path) -> None:
    listed = modomo("models", "list", data_dir=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "yolo11n.pt" in listed.stdout and "missing" in listed.stdout
    bad = modomo("process", "--pipeline", "segment", str(tmp_path), data_dir=tmp_path)
    assert bad.returncode == 2
    assert "needs detect" in bad.stdout
    bad_role = modomo("models", "pull", "colourer", data_dir=tmp_path)
    assert bad_role.returncode == 2 and "unknown model role" in bad_role.stdout
