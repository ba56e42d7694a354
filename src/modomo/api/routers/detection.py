"""``POST /detect/process``: the detection pipeline on an image URL or stored scenes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, status
from sqlalchemy import select

from modomo.api.enqueue import enqueue_job
from modomo.api.jobrequest import JobRequest
from modomo.api.keys import Principal
from modomo.api.ratelimit import enqueue_limit
from modomo.api.schemas import Accepted, DetectRequest
from modomo.db.models import Scene
from modomo.db.session import session_scope

router = APIRouter(tags=["detection"])

DETECT = JobRequest(DetectRequest)


@router.post(
    "/detect/process",
    status_code=status.HTTP_202_ACCEPTED,
    openapi_extra=DETECT.openapi_extra(),
)
def detect_process(
    principal: Annotated[Principal, Depends(enqueue_limit)],
    body: Annotated[DetectRequest, Depends(DETECT.dependency)],
) -> Accepted:
    """Detect, segment, estimate depth and colours: fetch ``image_url`` (public addresses
    only) or take ``scene_ids``; the work runs on the AI workers. Fields in the JSON body or
    the query string (``?image_url=...``)."""
    kwargs: dict[str, object] = {"stages": body.stages}
    if body.image_url is not None:
        kwargs["image_url"] = body.image_url
    else:
        assert body.scene_ids is not None
        with session_scope() as session:
            known = set(session.scalars(select(Scene.id).where(Scene.id.in_(body.scene_ids))))
        unknown = [str(s) for s in body.scene_ids if s not in known]
        if unknown:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail=[
                    {
                        "loc": ["body", "scene_ids"],
                        "msg": f"no such scene(s): {', '.join(unknown[:20])}",
                        "type": "value_error",
                    }
                ],
            )
        kwargs["scene_ids"] = [str(s) for s in body.scene_ids]
    return enqueue_job(
        principal,
        "detection",
        "modomo.tasks.detection_tasks.run_detection_pipeline",
        kwargs,
        options=body,
        missing="the detection pipeline is not available in this version",
    )
