"""``POST /classify/reclassify``: CLIP room type, style and scene type of scenes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status

from modomo.api.enqueue import enqueue_job
from modomo.api.keys import Principal
from modomo.api.ratelimit import enqueue_limit
from modomo.api.schemas import Accepted, ReclassifyRequest

router = APIRouter(tags=["classification"])


@router.post("/classify/reclassify", status_code=status.HTTP_202_ACCEPTED)
def reclassify(
    _: Annotated[Principal, Depends(enqueue_limit)], body: ReclassifyRequest | None = None
) -> Accepted:
    """Classify up to ``limit`` scenes not classified yet (all of them with
    ``force_reclassify``)."""
    body = body or ReclassifyRequest()
    return enqueue_job(
        "classify",
        "modomo.tasks.classification_tasks.run_scene_reclassification_job",
        body.model_dump(),
        missing="scene classification is not available in this version: no task "
        "modomo.tasks.classification_tasks.run_scene_reclassification_job is registered",
    )
