"""De-duplication as a job through a real worker on the ``classification`` queue, Redis and
PostgreSQL: real photographs (the demo set shipped in scikit-image and scikit-learn) and
transformed copies of them end up in one group each, with the original as the canonical
scene; embeddings join semantic near-duplicates; the CLI lists the groups."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance
from sqlalchemy import select, update

from modomo.db.models import DuplicateGroup, Scene
from modomo.db.session import session_scope
from modomo.duplicates import canonical_only, list_groups
from modomo.jobs import create_job
from modomo.sources import expand_sources, ingest
from tests.support import REPO, celery_worker, wait_for_job, worker_env

pytestmark = pytest.mark.services

PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg")


@pytest.fixture(scope="module")
def worker() -> Iterator[str]:
    with celery_worker(queues="classification") as hostname:
        yield hostname


def _copies(original: Image.Image) -> dict[str, bytes]:
    """The transformed copies a crawler meets: resized, re-encoded, brightened."""
    width, height = original.size

    def jpeg(image: Image.Image, quality: int = 90) -> bytes:
        out = io.BytesIO()
        image.convert("RGB").save(out, "JPEG", quality=quality)
        return out.getvalue()

    return {
        "half.jpg": jpeg(original.resize((width // 2, height // 2), Image.Resampling.LANCZOS)),
        "q60.jpg": jpeg(original, quality=60),
        "bright.jpg": jpeg(ImageEnhance.Brightness(original.convert("RGB")).enhance(1.2)),
    }


@pytest.fixture(scope="module")
def photo_folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    import skimage.data

    originals = tmp_path_factory.mktemp("originals")
    copies = tmp_path_factory.mktemp("copies")
    for name in PHOTOS:
        source = Path(skimage.data.__file__).parent / name
        (originals / name).write_bytes(source.read_bytes())
        with Image.open(source) as image:
            for suffix, data in _copies(image).items():
                (copies / f"{Path(name).stem}-{suffix}").write_bytes(data)
    return originals, copies


def _scene_ids(folder: Path) -> dict[str, uuid.UUID]:
    with session_scope() as session:
        rows = session.execute(
            select(Scene.source_key, Scene.id).where(Scene.source_key.like(f"file:{folder}/%"))
        ).all()
    return {key.rsplit("/", 1)[-1]: sid for key, sid in rows}


def _groups_of(ids: dict[str, uuid.UUID]) -> dict[str, uuid.UUID | None]:
    with session_scope() as session:
        rows = {
            sid: group
            for sid, group in session.execute(
                select(Scene.id, Scene.duplicate_group_id).where(Scene.id.in_(ids.values()))
            )
        }
    return {name: rows[sid] for name, sid in ids.items()}


def test_copies_of_real_photos_are_grouped_under_their_original(
    worker: str, photo_folders: tuple[Path, Path]
) -> None:
    from modomo.tasks.classification_tasks import run_dedup_job

    originals, copies = photo_folders
    job_id = create_job("dedup", {})
    ingest(job_id, expand_sources([str(originals)]))  # first: the originals are the oldest
    ingest(job_id, expand_sources([str(copies)]))
    run_dedup_job.apply_async(kwargs={"job_id": str(job_id)})
    job = wait_for_job(job_id, timeout_s=120)
    assert job["status"] == "completed", job
    assert job["processed"] == len(PHOTOS) * 4 and job["failed"] == 0
    assert job["result"]["groups"] >= len(PHOTOS) and job["result"]["phash_pairs"] > 0

    original_ids, copy_ids = _scene_ids(originals), _scene_ids(copies)
    with session_scope() as session:  # every scene ingested got its pHash at ingest
        hashes = session.scalars(select(Scene.phash).where(Scene.id.in_(original_ids.values())))
        assert all(h and len(h) == 16 for h in hashes)
    groups = _groups_of({**original_ids, **copy_ids})
    seen = set()
    for name in PHOTOS:
        group = groups[name]
        assert group is not None, f"{name} has no duplicate group"
        stem = Path(name).stem
        assert all(groups[c] == group for c in copy_ids if c.startswith(stem + "-")), groups
        seen.add(group)
        with session_scope() as session:
            record = session.get(DuplicateGroup, group)
            assert record is not None
            assert record.canonical_scene_id == original_ids[name]  # the largest, the oldest
            assert record.size == 4 and record.method == "phash"
    assert len(seen) == len(PHOTOS)  # different photographs never share a group

    with session_scope() as session:  # what an export keeps: the originals, not the copies
        kept = set(
            session.scalars(
                select(Scene.id).where(Scene.id.in_(copy_ids.values()), canonical_only())
            )
        )
        assert not kept
        assert set(
            session.scalars(
                select(Scene.id).where(Scene.id.in_(original_ids.values()), canonical_only())
            )
        ) == set(original_ids.values())


def test_near_identical_embeddings_make_a_semantic_group(worker: str, tmp_path: Path) -> None:
    from modomo.tasks.classification_tasks import run_dedup_job
    from tests.support import write_unique_images

    paths = write_unique_images(tmp_path, 4, tag="semantic")
    ids = ingest(create_job("colors", {}), expand_sources([str(p) for p in paths])).scene_ids
    rng = np.random.default_rng(11)
    base = rng.normal(size=512)
    vectors = [base, base + rng.normal(scale=0.05, size=512), rng.normal(size=512)]
    with session_scope() as session:
        for sid, vector in zip(ids, vectors, strict=False):
            session.execute(
                update(Scene)
                .where(Scene.id == sid)
                .values(clip_embedding=(vector / np.linalg.norm(vector)).tolist())
            )
    job_id = create_job("dedup", {})
    run_dedup_job.apply_async(kwargs={"job_id": str(job_id)})
    assert wait_for_job(job_id)["status"] == "completed"
    groups = _groups_of(dict(zip("abcd", ids, strict=True)))
    assert groups["a"] is not None and groups["a"] == groups["b"]
    assert groups["c"] is None and groups["d"] is None
    found = next(g for g in list_groups(limit=200) if g["id"] == str(groups["a"]))
    assert found["method"] == "embedding" and found["min_similarity"] == pytest.approx(0.95)
    assert {s["id"] for s in found["scenes"]} == {str(ids[0]), str(ids[1])}


def test_cli_dedup_and_duplicates(worker: str, photo_folders: tuple[Path, Path]) -> None:
    env = worker_env(COLUMNS="200")
    run = subprocess.run(
        [sys.executable, "-m", "modomo.cli", "dedup"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "duplicate groups" in run.stdout and "completed" in run.stdout
    listed = subprocess.run(
        [sys.executable, "-m", "modomo.cli", "duplicates", "--json", "--limit", "200"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    groups = json.loads(listed.stdout)
    originals = _scene_ids(photo_folders[0])
    canonical = {g["canonical_scene_id"] for g in groups}
    assert {str(sid) for sid in originals.values()} <= canonical
    for group in groups:
        assert (
            group["scenes"][0]["canonical"]
            and group["scenes"][0]["id"] == group["canonical_scene_id"]
        )
        assert group["size"] == len(group["scenes"]) >= 2
