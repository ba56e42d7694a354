"""Classification and de-duplication: ``POST /classify/reclassify`` (CLIP room type, style,
scene type and embeddings), ``POST /dedup`` (rebuild the duplicate groups) and
``GET /duplicates`` (the groups, each with its canonical scene)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from modomo.api.auth import CurrentUser
from modomo.api.enqueue import enqueue_job
from modomo.api.jobrequest import JobRequest
from modomo.api.keys import Principal
from modomo.api.ratelimit import enqueue_limit
from modomo.api.schemas import Accepted, JobOptions, Page, ReclassifyRequest

router = APIRouter(tags=["classification"])

RECLASSIFY = JobRequest(ReclassifyRequest)
DEDUP = JobRequest(JobOptions)

_MISSING = "this worker image has no classification tasks (modomo.tasks.classification_tasks)"


@router.post(
    "/classify/reclassify",
    status_code=status.HTTP_202_ACCEPTED,
    openapi_extra=RECLASSIFY.openapi_extra(),
)
def reclassify(
    principal: Annotated[Principal, Depends(enqueue_limit)],
    body: Annotated[ReclassifyRequest, Depends(RECLASSIFY.dependency)],
) -> Accepted:
    """Classify up to ``limit`` scenes not classified yet (all of them with
    ``force_reclassify``): room type, style and scene type (top k with probabilities,
    ``unknown`` below the threshold) and an image embedding per scene and object."""
    return enqueue_job(
        principal,
        "classify",
        "modomo.tasks.classification_tasks.run_scene_reclassification_job",
        body.task_kwargs(),
        options=body,
        missing=_MISSING,
    )


@router.post("/dedup", status_code=status.HTTP_202_ACCEPTED, openapi_extra=DEDUP.openapi_extra())
def dedup(
    principal: Annotated[Principal, Depends(enqueue_limit)],
    body: Annotated[JobOptions, Depends(DEDUP.dependency)],
) -> Accepted:
    """Hash the scenes without a pHash and rebuild the duplicate groups (pHash within
    ``MODOMO_PHASH_MAX_DISTANCE`` bits, embeddings from ``MODOMO_SEMANTIC_MIN_SIMILARITY``);
    the job's ``result`` says what was found."""
    return enqueue_job(
        principal,
        "dedup",
        "modomo.tasks.classification_tasks.run_dedup_job",
        {},
        options=body,
        missing=_MISSING,
    )


@router.get("/duplicates")
def duplicates(
    _: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Page:
    """Duplicate groups, largest first, each with its scenes (the canonical one first)."""
    from modomo.duplicates import group_count, list_groups

    return Page(items=list_groups(limit, offset), total=group_count(), limit=limit, offset=offset)
