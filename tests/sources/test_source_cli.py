"""The sources from the command line, as a user runs them with nothing configured (the
embedded default: SQLite and an in-process worker), against local data only."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sources.site import SiteServer, standard_site
from tests.support import REPO


@pytest.fixture(scope="module")
def server() -> Iterator[SiteServer]:
    with SiteServer() as running:
        yield running


def modomo(*args: str, data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modomo.cli", *args],
        cwd=REPO,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(data_dir),
            "MODOMO_DATA_DIR": str(data_dir),
            "COLUMNS": "200",
            "PYTHONUNBUFFERED": "1",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_scrape_houzz_from_the_cli(server: SiteServer, tmp_path: Path) -> None:
    site, photos = standard_site()
    server.use(site)
    env = {
        "MODOMO_HOUZZ_BASE_URL": server.base,
        "MODOMO_ALLOW_PRIVATE_URLS": "true",
        "MODOMO_CRAWL_RATE_PER_HOST": "50",
    }
    args = ("scrape", "houzz", "--room-type", "living-room", "--room-type", "bedroom")
    done = modomo(*args, "--limit", "50", data_dir=tmp_path, **env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "completed" in done.stdout
    assert "robots.txt disallows" in done.stdout  # B1's image: a failure with its reason
    with sqlite3.connect(tmp_path / "modomo.sqlite") as db:
        keys = {row[0] for row in db.execute("SELECT source_key FROM scenes")}
        rooms = {row[0] for row in db.execute("SELECT DISTINCT room_type FROM scenes")}
    wanted = {f"houzz:{photos[n].photo_id}" for n in ("L0", "L1", "L2", "L3", "L4", "B0", "B1")}
    assert keys == wanted
    assert rooms == {"living_room", "bedroom"}

    again = modomo(*args, "--limit", "50", data_dir=tmp_path, **env)
    assert again.returncode == 1  # the only photo left to take in (B1) fails again
    with sqlite3.connect(tmp_path / "modomo.sqlite") as db:
        assert db.execute("SELECT count(*) FROM scenes").fetchone()[0] == len(wanted)

    bad = modomo("scrape", "houzz", "--room-type", "attic", data_dir=tmp_path, **env)
    assert bad.returncode == 2 and "unknown room type" in bad.stdout


def test_import_hf_from_the_cli(tmp_path: Path) -> None:
    import datasets

    from tests.support import write_unique_images

    images = write_unique_images(tmp_path / "images", 5)
    table = datasets.Dataset.from_dict(
        {"image": [str(p) for p in images], "caption": [f"room {i}" for i in range(5)]}
    ).cast_column("image", datasets.Image())
    folder = tmp_path / "rooms"
    datasets.DatasetDict({"train": table}).save_to_disk(str(folder))

    data_dir = tmp_path / "data"
    args = ("import", "hf", str(folder), "--split", "train", "--offset", "1", "--limit", "3")
    # a local dataset is imported only from under MODOMO_IMPORT_ROOTS (none by default)
    refused = modomo(*args, data_dir=data_dir, HF_HUB_OFFLINE="1")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert (
        "no MODOMO_IMPORT_ROOTS" in refused.stdout and "set MODOMO_IMPORT_ROOTS" in refused.stdout
    )
    builder = modomo("import", "hf", "parquet", data_dir=data_dir)
    assert builder.returncode == 2 and "builder name" in builder.stdout, builder.stdout
    roots = {"MODOMO_IMPORT_ROOTS": str(tmp_path)}
    done = modomo(*args, data_dir=data_dir, HF_HUB_OFFLINE="1", **roots)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "completed" in done.stdout
    with sqlite3.connect(data_dir / "modomo.sqlite") as db:
        rows = db.execute("SELECT source_key, metadata FROM scenes ORDER BY source_key").fetchall()
    assert [key for key, _ in rows] == [f"hf:{folder.resolve()}:train:{i}" for i in (1, 2, 3)]
    assert all('"caption": "room ' in meta for _, meta in rows)

    again = modomo(*args, data_dir=data_dir, HF_HUB_OFFLINE="1", **roots)
    assert again.returncode == 0, again.stdout
    with sqlite3.connect(data_dir / "modomo.sqlite") as db:
        assert db.execute("SELECT count(*) FROM scenes").fetchone()[0] == 3  # nothing twice

    missing = modomo("import", "hf", str(tmp_path / "nowhere"), data_dir=data_dir, **roots)
    assert missing.returncode == 1 and "failed" in missing.stdout
