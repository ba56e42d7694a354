"""A full disk, for real: a tmpfs of a few hundred KiB mounted for the test (root only).

- The artifact store full: every image that cannot be stored fails its scene with the
  reason (no space left on device), the job ends failed with its counts, ``modomo process``
  prints one error line and exits 1, no traceback.
- The SQLite database itself full: one line naming the file, exit 2, no traceback, and no
  job left pending.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.servers import _SERVICE_VARIABLES
from tests.support import REPO, encode, noise_image

pytestmark = pytest.mark.faults


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs at ``tmp_path/disk``, unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path) -> None:
    with (disk / "filler").open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass


def _photos(folder: Path, count: int) -> Path:
    folder.mkdir()
    for index in range(count):
        (folder / f"photo{index}.png").write_bytes(encode(noise_image(index, (300, 400))))
    return folder


def _modomo(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``modomo ARGS`` with the embedded default (nothing but ``env`` configured)."""
    clean = {k: v for k, v in os.environ.items() if not _SERVICE_VARIABLES.match(k)}
    return subprocess.run(
        [sys.executable, "-m", "modomo.cli", *args],
        cwd=REPO,
        env={**clean, "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _jobs(database: Path) -> list[tuple[str, int, int, int]]:
    with sqlite3.connect(database) as db:
        return db.execute("SELECT status, total, processed, failed FROM jobs").fetchall()


def test_a_full_artifact_store_fails_each_scene_with_the_reason(
    tmp_path: Path, small_disk: Path
) -> None:
    photos = _photos(tmp_path / "photos", 4)
    _fill(small_disk)
    data = tmp_path / "data"
    done = _modomo(
        "process", str(photos), MODOMO_DATA_DIR=str(data), MODOMO_ARTIFACT_URL=str(small_disk)
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: 4 input(s) failed at ingest: cannot store the image: "
        "No space left on device (ENOSPC) (4x)"
    ], output
    assert _jobs(data / "modomo.sqlite") == [("failed", 4, 0, 4)]
    # nothing half-written is left behind: only the filler
    assert [p.name for p in small_disk.rglob("*") if p.is_file()] == ["filler"]


def test_a_full_database_is_one_line_and_no_pending_job(tmp_path: Path, small_disk: Path) -> None:
    photos = _photos(tmp_path / "photos", 2)
    data = small_disk / "data"
    first = _modomo("process", str(photos / "photo0.png"), MODOMO_DATA_DIR=str(data))
    assert first.returncode == 0, first.stdout + first.stderr
    _fill(small_disk)
    done = _modomo("process", str(photos), MODOMO_DATA_DIR=str(data))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"modomo: cannot use the database {data / 'modomo.sqlite'}: "
    ), done.stderr
    (small_disk / "filler").unlink()
    assert [job[0] for job in _jobs(data / "modomo.sqlite")] == ["completed"]
    # space freed: the same command works
    again = _modomo("process", str(photos), MODOMO_DATA_DIR=str(data))
    assert again.returncode == 0, again.stdout + again.stderr
