"""Scenes for API tests: real images ingested into the session's database."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np

from tests.support import encode, write_unique_images


def ingest_images(paths: list[Path]) -> list[uuid.UUID]:
    """Ingest image files as scenes (through an ``ingest`` job that is then completed)."""
    from modomo.db.session import session_scope
    from modomo.jobs import create_job
    from modomo.jobs.accounting import apply_outcomes
    from modomo.sources import ingest
    from modomo.sources.inputs import Input

    job = create_job("ingest", {"test": True})
    report = ingest(job, [Input("folder", str(p)) for p in paths])
    with session_scope() as session:
        apply_outcomes(session, job, done=report.scene_ids)
    return report.scene_ids


def make_scenes(folder: Path, count: int) -> list[uuid.UUID]:
    """``count`` new small scenes."""
    return ingest_images(write_unique_images(folder, count))


def make_large_scenes(folder: Path, count: int, size_hw: tuple[int, int]) -> list[uuid.UUID]:
    """``count`` new noise scenes of ``size_hw`` pixels (slow enough to cancel mid-job)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng()
    paths = []
    for index in range(count):
        path = folder / f"{uuid.uuid4().hex}-{index}.png"
        path.write_bytes(encode(rng.integers(0, 256, (*size_hw, 3), dtype=np.uint8)))
        paths.append(path)
    return ingest_images(paths)
