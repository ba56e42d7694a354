"""Scenes: list, read (with detected objects), the stored image, a preview with the objects
drawn."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Response, status

from modomo.api.auth import CurrentUser
from modomo.api.ownership import job_visible
from modomo.api.schemas import PLAIN_TEXT, Page
from modomo.catalog import SceneNotFound, get_scene, list_scenes, scene_image_key

router = APIRouter(prefix="/scenes", tags=["scenes"])

_MEDIA = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"RIFF": "image/webp"}


@router.get("")
def get_scenes(
    principal: CurrentUser,
    scene_status: Annotated[Literal["ingested", "failed"] | None, Query(alias="status")] = None,
    source: Annotated[str | None, Query(max_length=16, pattern=PLAIN_TEXT)] = None,
    room_type: Annotated[str | None, Query(max_length=64, pattern=PLAIN_TEXT)] = None,
    job_id: uuid.UUID | None = None,
    has_objects: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Page:
    """Scenes, newest first, with their object counts. ``job_id`` filters by one of the
    caller's jobs (an admin's: any job); another user's job matches nothing, as a job that
    does not exist."""
    if job_id is not None and not job_visible(job_id, principal):
        return Page(items=[], total=0, limit=limit, offset=offset)
    items, total = list_scenes(
        status=scene_status,
        source=source,
        room_type=room_type,
        job_id=job_id,
        has_objects=has_objects,
        limit=limit,
        offset=offset,
    )
    return Page(items=items, total=total, limit=limit, offset=offset)


@router.get("/{scene_id}")
def get_one_scene(scene_id: uuid.UUID, _: CurrentUser) -> dict[str, Any]:
    """A scene with its detected objects (bbox [x, y, w, h] in pixels, mask RLE) and its
    recorded failures."""
    try:
        return get_scene(scene_id)
    except SceneNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from None


@router.get("/{scene_id}/similar")
def similar(
    scene_id: uuid.UUID, _: CurrentUser, k: Annotated[int, Query(ge=1, le=100)] = 10
) -> dict[str, Any]:
    """The ``k`` scenes with the most similar image embeddings (cosine similarity), most
    similar first. 409 when the scene has no embedding yet (classify it first)."""
    from modomo.similarity import NoEmbedding, similar_scenes

    try:
        return {"scene_id": str(scene_id), "k": k, "items": similar_scenes(scene_id, k)}
    except SceneNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
    except NoEmbedding as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None


def _image(scene_id: uuid.UUID) -> tuple[bytes, list[dict[str, Any]]]:
    from modomo.artifacts import artifact_store

    try:
        key, objects = scene_image_key(scene_id)
    except SceneNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
    if key is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"scene {scene_id} has no image")
    try:
        return artifact_store().get_bytes(key), objects
    except FileNotFoundError:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=f"the image of scene {scene_id} is missing"
        ) from None


@router.get("/{scene_id}/image", response_class=Response)
def scene_image(scene_id: uuid.UUID, _: CurrentUser) -> Response:
    """The scene's stored image, as ingested."""
    data, _objects = _image(scene_id)
    media = next((m for magic, m in _MEDIA.items() if data.startswith(magic)), None)
    return Response(data, media_type=media or "application/octet-stream")


@router.get("/{scene_id}/preview.png", response_class=Response)
def scene_preview(
    scene_id: uuid.UUID,
    _: CurrentUser,
    max_size: Annotated[int, Query(ge=32, le=2048)] = 512,
) -> Response:
    """The scene with its objects drawn (masks, boxes, labels), as PNG, longest side at most
    ``max_size`` pixels."""
    from modomo.config import get_settings
    from modomo.images import ImageError, load_image
    from modomo.preview import render_preview

    data, objects = _image(scene_id)
    try:
        image = load_image(data, max_pixels=get_settings().max_image_pixels)
    except ImageError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
    png = render_preview(image.rgb, objects, max_size=max_size)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=60"})
