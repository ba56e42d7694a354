"""Scene classification through a real worker on the ``classification`` queue, Redis and
PostgreSQL, with a random-weight CLIP built from its config (the labels are meaningless; the
plumbing, storage and job accounting are what is tested here; the zero-shot logic is tested
in tests/analysis/test_classify.py)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from modomo.config import DEFAULT_ROOM_TYPES, DEFAULT_STYLES
from modomo.db.models import DetectedObject, JobScene, Scene
from modomo.db.session import session_scope
from modomo.jobs import create_job
from modomo.sources import ingest
from modomo.sources.inputs import Input
from tests.support import (
    celery_worker,
    run_cli,
    wait_for_job,
    write_unique_images,
)

pytestmark = pytest.mark.services

LABELS = {
    "room_type": set(DEFAULT_ROOM_TYPES),
    "style": set(DEFAULT_STYLES),
    "scene_type": {"scene", "object", "hybrid"},
}


@pytest.fixture(scope="module")
def clip_env(tiny_models: dict[str, Path]) -> dict[str, str]:
    return {"MODOMO_DEVICE": "cpu", "MODOMO_CLIP_WEIGHTS": str(tiny_models["clip"])}


@pytest.fixture(scope="module")
def worker(clip_env: dict[str, str]) -> Iterator[str]:
    with celery_worker(queues="color_processing,classification", **clip_env) as hostname:
        yield hostname


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> list[uuid.UUID]:
    """Five scenes: the first stated as a kitchen by its source, the second with two objects
    (one too small to embed)."""
    paths = write_unique_images(tmp_path_factory.mktemp("classify"), 5, tag="classify")
    inputs = [Input("folder", str(paths[0]), room_type="kitchen")]
    inputs += [Input("folder", str(p)) for p in paths[1:]]
    ids = ingest(create_job("ingest", {}), inputs).scene_ids
    with session_scope() as session:
        for bbox in ([4, 4, 30, 30], [0, 0, 3, 3]):
            session.add(
                DetectedObject(
                    scene_id=ids[1],
                    bbox=bbox,
                    category="chair",
                    taxonomy_group="seating",
                    confidence=0.9,
                )
            )
    return ids


def _start(**kwargs: object) -> dict:
    from modomo.tasks.classification_tasks import run_scene_reclassification_job

    job_id = create_job("classify", dict(kwargs))
    run_scene_reclassification_job.apply_async(kwargs={"job_id": str(job_id), **kwargs})
    return wait_for_job(job_id, timeout_s=300)


def test_reclassification_job_labels_and_embeds_every_unclassified_scene(
    worker: str, scenes: list[uuid.UUID]
) -> None:
    job = _start(limit=None, force_reclassify=False)
    assert job["status"] == "completed", job
    assert job["processed"] >= len(scenes)
    with session_scope() as session:
        rows = {s.id: s for s in session.scalars(select(Scene).where(Scene.id.in_(scenes)))}
        for sid in scenes:
            scene = rows[sid]
            assert scene.classification is not None, sid
            for attribute, labels in LABELS.items():
                prediction = scene.classification[attribute]
                top = prediction["top_k"]
                assert len(top) == min(3, len(labels))
                assert all(t["label"] in labels for t in top)
                probabilities = [t["probability"] for t in top]
                assert probabilities == sorted(probabilities, reverse=True)
                assert prediction["label"] in labels | {"unknown"}
                if prediction["label"] != "unknown":
                    assert prediction["label"] == top[0]["label"]
                    assert prediction["probability"] >= 0.4
            assert scene.scene_type == scene.classification["scene_type"]["label"]
            vector = np.asarray(scene.clip_embedding)
            assert vector.shape == (512,) and abs(np.linalg.norm(vector) - 1) < 1e-4
            assert scene.embedding_model and scene.embedding_model.endswith("@local")
        # the source said kitchen: kept as the label, CLIP's guess recorded beside it
        kitchen = rows[scenes[0]]
        assert kitchen.room_type == "kitchen"
        assert kitchen.classification["stated"]["room_type"] == "kitchen"
        assert rows[scenes[2]].room_type == rows[scenes[2]].classification["room_type"]["label"]
        objects = {
            tuple(o.bbox): o.embedding
            for o in session.scalars(
                select(DetectedObject).where(DetectedObject.scene_id == scenes[1])
            )
        }
    assert len(objects[(4, 4, 30, 30)] or []) == 512
    assert objects[(0, 0, 3, 3)] is None  # a 3-pixel crop has nothing to embed

    again = _start(limit=None, force_reclassify=False)
    assert again["status"] == "completed"
    with session_scope() as session:
        taken = set(
            session.scalars(
                select(JobScene.scene_id).where(JobScene.job_id == uuid.UUID(again["id"]))
            )
        )
    assert not taken & set(scenes)  # classified scenes are not redone without force

    forced = _start(limit=2, force_reclassify=True)
    assert (forced["status"], forced["total"], forced["processed"]) == ("completed", 2, 2)


def test_classify_single_scene_returns_and_stores_the_labels(
    worker: str, scenes: list[uuid.UUID]
) -> None:
    from modomo.tasks.classification_tasks import classify_single_scene

    result = classify_single_scene.delay(str(scenes[3])).get(timeout=120)
    assert set(result) >= {"room_type", "style", "scene_type", "model"}
    with session_scope() as session:
        scene = session.get(Scene, scenes[3])
        assert scene is not None and scene.classification == result


def test_cli_similar(worker: str, scenes: list[uuid.UUID]) -> None:
    done = run_cli("similar", str(scenes[2]), "-k", "3", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    found = json.loads(done.stdout)
    assert len(found) == 3 and str(scenes[2]) not in {f["scene_id"] for f in found}
    similarities = [f["similarity"] for f in found]
    assert similarities == sorted(similarities, reverse=True)
    assert all(-1 <= s <= 1.000001 for s in similarities)
    missing = run_cli("similar", str(uuid.uuid4()))
    assert missing.returncode == 1 and "no scene" in missing.stdout


def test_process_with_classify_and_dedup_stages(
    worker: str, clip_env: dict[str, str], tmp_path: Path
) -> None:
    photos = write_unique_images(tmp_path / "photos", 3, tag="pipeline")
    with Image.open(photos[0]) as original:  # a re-encoded copy: a near-duplicate
        original.convert("RGB").save(tmp_path / "photos" / "copy.jpg", quality=90)
    done = run_cli("process", "--pipeline", "colors,classify,dedup", str(tmp_path / "photos"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "(classify) on the same scenes" in done.stdout
    assert "(dedup) over the whole catalogue" in done.stdout
    assert "classification" in done.stdout and "room type" in done.stdout
    assert "duplicate groups" in done.stdout and "copy.jpg" in done.stdout
