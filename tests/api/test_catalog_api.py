"""Scenes and objects through the real server: filters, pagination, a scene with its objects,
its image and a preview with the objects drawn."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.api.scenes import make_scenes

pytestmark = pytest.mark.services


def add_objects(scene_id: uuid.UUID) -> None:
    """Two stored objects on a scene, as the detection pipeline writes them (the model is not
    what is tested here: the API's reading of the rows is)."""
    from pycocotools import mask as mask_utils

    from modomo.db.models import DetectedObject, Scene
    from modomo.db.session import session_scope

    with session_scope() as session:
        scene = session.get(Scene, scene_id)
        height, width = scene.height, scene.width
        mask = np.zeros((height, width), dtype=np.uint8)
        mask[8:30, 10:40] = 1
        rle = mask_utils.encode(np.asfortranarray(mask))
        rle["counts"] = rle["counts"].decode()
        common = {"scene_id": scene_id, "taxonomy_group": "seating", "models": {}}
        session.add_all(
            [
                DetectedObject(
                    bbox=[10, 8, 30, 22], category="sofa", confidence=0.91, mask_rle=rle, **common
                ),
                DetectedObject(bbox=[0, 0, 5, 5], category="chair", confidence=0.3, **common),
            ]
        )


def test_scenes_and_objects_filters(
    user: httpx.Client, admin: httpx.Client, tmp_path: Path
) -> None:
    scenes = make_scenes(tmp_path, 3)
    add_objects(scenes[0])
    detail = user.get(f"/scenes/{scenes[0]}").json()
    assert detail["objects"] == 2
    assert [o["category"] for o in detail["detected_objects"]] == ["sofa", "chair"]
    assert detail["detected_objects"][0]["bbox"] == [10, 8, 30, 22]
    assert detail["detected_objects"][0]["mask_rle"]["size"] == [detail["height"], detail["width"]]

    sofas = user.get("/objects", params={"scene_id": str(scenes[0]), "min_confidence": 0.5}).json()
    assert sofas["total"] == 1 and sofas["items"][0]["category"] == "sofa"
    assert "mask_rle" not in sofas["items"][0]
    with_masks = user.get(
        "/objects", params={"scene_id": str(scenes[0]), "include_masks": True}
    ).json()
    assert with_masks["total"] == 2 and with_masks["items"][0]["mask_rle"]["counts"]
    chairs = user.get("/objects", params={"category": "chair", "scene_id": str(scenes[0])})
    assert [o["confidence"] for o in chairs.json()["items"]] == [0.3]
    assert user.get("/objects", params={"min_confidence": 1.5}).status_code == 422

    # the ingest job is the CLI's, an admin's to see: a user filtering by it finds nothing
    ingest_job = admin.get("/jobs", params={"type": "ingest", "limit": 1}).json()["items"][0]
    in_job = admin.get("/scenes", params={"job_id": ingest_job["id"]}).json()
    assert {s["id"] for s in in_job["items"]} == {str(s) for s in scenes}
    with_objects = admin.get(
        "/scenes", params={"job_id": ingest_job["id"], "has_objects": True}
    ).json()
    assert [s["id"] for s in with_objects["items"]] == [str(scenes[0])]
    page = admin.get("/scenes", params={"job_id": ingest_job["id"], "limit": 2, "offset": 2})
    assert page.json()["total"] == 3 and len(page.json()["items"]) == 1
    assert user.get("/scenes", params={"job_id": ingest_job["id"]}).json()["total"] == 0


def test_scene_image_and_preview(user: httpx.Client, tmp_path: Path) -> None:
    (scene_id,) = make_scenes(tmp_path, 1)
    add_objects(scene_id)
    image = user.get(f"/scenes/{scene_id}/image")
    assert image.status_code == 200 and image.headers["content-type"] in ("image/png", "image/jpeg")
    original = np.asarray(Image.open(io.BytesIO(image.content)).convert("RGB"))
    preview = user.get(f"/scenes/{scene_id}/preview.png", params={"max_size": 2048})
    assert preview.status_code == 200 and preview.headers["content-type"] == "image/png"
    drawn = np.asarray(Image.open(io.BytesIO(preview.content)).convert("RGB"))
    assert drawn.shape == original.shape
    inside = (slice(12, 26), slice(14, 36))  # within the sofa's mask, away from the labels
    assert np.abs(drawn[inside].astype(int) - original[inside].astype(int)).mean() > 5
    small = user.get(f"/scenes/{scene_id}/preview.png", params={"max_size": 32})
    assert max(Image.open(io.BytesIO(small.content)).size) == 32
