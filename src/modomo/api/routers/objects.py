"""Detected objects across scenes, filtered by category, group, scene, job, confidence."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from modomo.api.auth import CurrentUser
from modomo.api.ownership import job_visible
from modomo.api.schemas import PLAIN_TEXT, Page
from modomo.catalog import list_objects

router = APIRouter(prefix="/objects", tags=["objects"])


@router.get("")
def get_objects(
    principal: CurrentUser,
    category: Annotated[str | None, Query(max_length=64, pattern=PLAIN_TEXT)] = None,
    taxonomy_group: Annotated[str | None, Query(max_length=64, pattern=PLAIN_TEXT)] = None,
    scene_id: uuid.UUID | None = None,
    job_id: uuid.UUID | None = None,
    min_confidence: Annotated[float | None, Query(ge=0.0, le=1.0)] = None,
    include_masks: bool = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Page:
    """Objects, most confident first: bbox [x, y, w, h] in pixels, category, taxonomy group,
    confidence, depth statistics; mask RLE with ``include_masks``. ``job_id`` filters by one
    of the caller's jobs (an admin's: any job); another user's job matches nothing."""
    if job_id is not None and not job_visible(job_id, principal):
        return Page(items=[], total=0, limit=limit, offset=offset)
    items, total = list_objects(
        category=category,
        taxonomy_group=taxonomy_group,
        scene_id=scene_id,
        job_id=job_id,
        min_confidence=min_confidence,
        include_masks=include_masks,
        limit=limit,
        offset=offset,
    )
    return Page(items=items, total=total, limit=limit, offset=offset)
