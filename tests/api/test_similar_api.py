"""``GET /scenes/{id}/similar``, ``POST /dedup``, ``GET /duplicates`` and
``POST /classify/reclassify`` on a real server: nearest scenes by stored embeddings (vectors
the test constructs, so the right answer is known), and the job endpoints' validation."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import update

from modomo.db.models import Scene
from modomo.db.session import session_scope
from tests.api.scenes import make_scenes


def _embed(scene_ids: list[uuid.UUID], vectors: np.ndarray) -> None:
    with session_scope() as session:
        for sid, vector in zip(scene_ids, vectors, strict=True):
            unit = vector / np.linalg.norm(vector)
            session.execute(
                update(Scene).where(Scene.id == sid).values(clip_embedding=unit.tolist())
            )


def test_similar_scenes_are_ranked_by_cosine_similarity(user: httpx.Client, tmp_path: Path) -> None:
    scenes = make_scenes(tmp_path, 6)
    rng = np.random.default_rng(5)
    query = rng.normal(size=512)
    # 0 is the query; 1..4 at decreasing similarity to it; 5 has no embedding
    noise = rng.normal(size=(4, 512))
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    unit = query / np.linalg.norm(query)
    vectors = np.stack(
        [unit] + [unit * w + noise[i] * (1 - w) for i, w in enumerate((0.9, 0.7, 0.5, 0.3))]
    )
    _embed(scenes[:5], vectors)

    answer = user.get(f"/scenes/{scenes[0]}/similar", params={"k": 4})
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    assert [item["scene_id"] for item in items] == [str(s) for s in scenes[1:5]]
    expected = [float(v @ unit / np.linalg.norm(v)) for v in vectors[1:5]]
    assert [item["similarity"] for item in items] == pytest.approx(expected, abs=1e-5)
    assert answer.json()["k"] == 4

    missing = user.get(f"/scenes/{scenes[5]}/similar")
    assert missing.status_code == 409 and "classify" in missing.json()["detail"]
    unknown = uuid.uuid4()
    gone = user.get(f"/scenes/{unknown}/similar")
    assert gone.status_code == 404 and str(unknown) in gone.json()["detail"]
    bad = user.get(f"/scenes/{scenes[0]}/similar", params={"k": 0})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "k"]


def test_classification_endpoints_validate_and_enqueue(user: httpx.Client) -> None:
    bad = user.post("/classify/reclassify", json={"limit": 0})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "limit"]
    extra = user.post("/classify/reclassify", json={"force": True})
    assert extra.status_code == 422  # an unknown field is named, not ignored
    for path, body, job_type in (
        ("/classify/reclassify", {"limit": 5, "force_reclassify": True}, "classify"),
        ("/dedup", None, "dedup"),
    ):
        answer = user.post(path, json=body)
        assert answer.status_code == 202, answer.text
        job = user.get(answer.json()["status_url"]).json()
        assert (job["type"], job["status"]) == (job_type, "pending")
        assert job["created_by"].startswith("key:")  # whose job it is (Supabase RLS reads it)
        if body:
            assert job["params"] == {"limit": 5, "force_reclassify": True}
        # no classification worker in this module: cancel, so none later finds it pending
        assert user.post(f"/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
    page = user.get("/duplicates", params={"limit": 5}).json()
    assert set(page) == {"items", "total", "limit", "offset"} and page["limit"] == 5
    assert user.get("/duplicates", params={"limit": 0}).status_code == 422
