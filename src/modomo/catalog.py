"""Reading the dataset: scenes and their detected objects as JSON-able records.

Used by the API (``GET /scenes``, ``GET /objects``) and the dashboard. Pagination is by
``limit`` / ``offset`` in a stable order (newest first, then id).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session

from modomo.db.models import DetectedObject, JobScene, Scene, SceneFailure
from modomo.db.session import session_scope

__all__ = [
    "SceneNotFound",
    "get_scene",
    "list_objects",
    "list_scenes",
    "object_record",
    "scene_image_key",
    "scene_record",
]


class SceneNotFound(LookupError):
    """No scene has the given id."""


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def scene_record(scene: Scene, objects: int | None = None) -> dict[str, Any]:
    """A scene row as a dict; ``width``/``height`` in pixels, ``colors`` the palette JSON."""
    record = {
        "id": str(scene.id),
        "source": scene.source,
        "source_key": scene.source_key,
        "image_url": scene.image_url,
        "sha256": scene.sha256,
        "phash": scene.phash,
        "width": scene.width,
        "height": scene.height,
        "status": scene.status,
        "room_type": scene.room_type,
        "style": scene.style,
        "scene_type": scene.scene_type,
        "classification": scene.classification,
        "embedding_model": scene.embedding_model,
        "duplicate_group_id": str(scene.duplicate_group_id) if scene.duplicate_group_id else None,
        "colors": scene.colors,
        "depth_model": scene.depth_model,
        "depth_info": scene.depth_info,
        "metadata": scene.meta,
        "reviewed_at": _iso(scene.reviewed_at),
        "created_at": _iso(scene.created_at),
        "updated_at": _iso(scene.updated_at),
    }
    if objects is not None:
        record["objects"] = objects
    return record


def object_record(obj: DetectedObject, include_mask: bool = True) -> dict[str, Any]:
    """A detected object as a dict: ``bbox`` [x, y, w, h] in pixels (COCO xywh),
    ``mask_rle`` COCO compressed RLE (left out when ``include_mask`` is False)."""
    record = {
        "id": str(obj.id),
        "scene_id": str(obj.scene_id),
        "job_id": str(obj.job_id) if obj.job_id else None,
        "bbox": obj.bbox,
        "category": obj.category,
        "taxonomy_group": obj.taxonomy_group,
        "confidence": obj.confidence,
        "mask_area": obj.mask_area,
        "mask_box_iou": obj.mask_box_iou,
        "depth_median": obj.depth_median,
        "depth_min": obj.depth_min,
        "depth_max": obj.depth_max,
        "colors": obj.colors,
        "models": obj.models,
        "labelled_by": obj.source,
        "created_at": _iso(obj.created_at),
    }
    if include_mask:
        record["mask_rle"] = obj.mask_rle
    return record


def _object_counts(session: Session, scene_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    if not scene_ids:
        return {}
    rows = session.execute(
        select(DetectedObject.scene_id, func.count())
        .where(DetectedObject.scene_id.in_(scene_ids))
        .group_by(DetectedObject.scene_id)
    )
    return {row[0]: row[1] for row in rows}


def _matching(query: Select[Any], *conditions: ColumnElement[bool] | None) -> Select[Any]:
    """``query`` restricted by every condition given (None: that filter was not asked for)."""
    return query.where(*[c for c in conditions if c is not None])


def list_scenes(
    *,
    status: str | None = None,
    source: str | None = None,
    room_type: str | None = None,
    job_id: uuid.UUID | None = None,
    has_objects: bool | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """Scenes matching every filter given, newest first; returns (page, total matching)."""
    with_objects = Scene.id.in_(select(DetectedObject.scene_id))
    query = _matching(
        select(Scene),
        Scene.status == status if status else None,
        Scene.source == source if source else None,
        Scene.room_type == room_type if room_type else None,
        Scene.id.in_(select(JobScene.scene_id).where(JobScene.job_id == job_id))
        if job_id
        else None,
        None if has_objects is None else (with_objects if has_objects else ~with_objects),
    )
    with session_scope() as session:
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        scenes = list(
            session.scalars(
                query.order_by(Scene.created_at.desc(), Scene.id).limit(limit).offset(offset)
            )
        )
        counts = _object_counts(session, [s.id for s in scenes])
        return [scene_record(s, counts.get(s.id, 0)) for s in scenes], int(total)


def get_scene(scene_id: uuid.UUID) -> dict[str, Any]:
    """One scene with its objects (masks included) and its recorded failures.

    Raises:
        SceneNotFound: no such scene.
    """
    with session_scope() as session:
        scene = session.get(Scene, scene_id)
        if scene is None:
            raise SceneNotFound(f"no scene {scene_id}")
        objects = list(
            session.scalars(
                select(DetectedObject)
                .where(DetectedObject.scene_id == scene_id)
                .order_by(DetectedObject.confidence.desc(), DetectedObject.id)
            )
        )
        failures = session.execute(
            select(SceneFailure.job_id, SceneFailure.stage, SceneFailure.error)
            .where(SceneFailure.scene_id == scene_id)
            .order_by(SceneFailure.id)
        ).all()
        record = scene_record(scene, len(objects))
        record["image_key"] = scene.image_key
        record["depth_key"] = scene.depth_key
        record["detected_objects"] = [object_record(o) for o in objects]
        record["failures"] = [
            {"job_id": str(f[0]) if f[0] else None, "stage": f[1], "error": f[2]} for f in failures
        ]
        return record


def list_objects(
    *,
    category: str | None = None,
    taxonomy_group: str | None = None,
    scene_id: uuid.UUID | None = None,
    job_id: uuid.UUID | None = None,
    min_confidence: float | None = None,
    include_masks: bool = False,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """Detected objects matching every filter given, most confident first; returns (page,
    total matching)."""
    query = _matching(
        select(DetectedObject),
        DetectedObject.category == category if category else None,
        DetectedObject.taxonomy_group == taxonomy_group if taxonomy_group else None,
        DetectedObject.scene_id == scene_id if scene_id else None,
        DetectedObject.job_id == job_id if job_id else None,
        DetectedObject.confidence >= min_confidence if min_confidence is not None else None,
    )
    with session_scope() as session:
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = session.scalars(
            query.order_by(DetectedObject.confidence.desc(), DetectedObject.id)
            .limit(limit)
            .offset(offset)
        )
        return [object_record(o, include_masks) for o in rows], int(total)


def scene_image_key(scene_id: uuid.UUID) -> tuple[str | None, list[dict[str, Any]]]:
    """A scene's stored image key and its objects (for drawing a preview).

    Raises:
        SceneNotFound: no such scene.
    """
    with session_scope() as session:
        key = session.scalar(select(Scene.image_key).where(Scene.id == scene_id))
        if key is None and session.get(Scene, scene_id) is None:
            raise SceneNotFound(f"no scene {scene_id}")
        objects = session.scalars(select(DetectedObject).where(DetectedObject.scene_id == scene_id))
        return key, [object_record(o) for o in objects]
