"""``POST /process/colors``: palettes of the scenes that have none."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status

from modomo.api.enqueue import enqueue_job
from modomo.api.jobrequest import JobRequest
from modomo.api.keys import Principal
from modomo.api.ratelimit import enqueue_limit
from modomo.api.schemas import Accepted, ColorsRequest

router = APIRouter(tags=["colors"])

COLORS = JobRequest(ColorsRequest)


@router.post(
    "/process/colors",
    status_code=status.HTTP_202_ACCEPTED,
    openapi_extra=COLORS.openapi_extra(),
)
def process_colors(
    principal: Annotated[Principal, Depends(enqueue_limit)],
    body: Annotated[ColorsRequest, Depends(COLORS.dependency)],
) -> Accepted:
    """Compute CIELAB palettes (k-means) of up to ``limit`` scenes without one. Fields in
    the JSON body or the query string (``?limit=100``)."""
    return enqueue_job(
        principal,
        "colors",
        "modomo.tasks.color_tasks.run_color_processing_job",
        body.task_kwargs(),
        options=body,
        missing="colour processing is not available in this version",
    )
