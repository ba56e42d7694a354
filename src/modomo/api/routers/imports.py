"""``POST /import/huggingface-dataset``: images of a Hugging Face dataset as scenes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status

from modomo.api.enqueue import enqueue_job
from modomo.api.jobrequest import JobRequest
from modomo.api.keys import Principal
from modomo.api.ratelimit import enqueue_limit
from modomo.api.schemas import Accepted, HuggingFaceImportRequest

router = APIRouter(tags=["import"])

HF_IMPORT = JobRequest(HuggingFaceImportRequest)


@router.post(
    "/import/huggingface-dataset",
    status_code=status.HTTP_202_ACCEPTED,
    openapi_extra=HF_IMPORT.openapi_extra(),
)
def import_huggingface_dataset(
    principal: Annotated[Principal, Depends(enqueue_limit)],
    body: Annotated[HuggingFaceImportRequest, Depends(HF_IMPORT.dependency)],
) -> Accepted:
    """Import ``limit`` rows of ``dataset``/``split`` from ``offset`` (optionally detecting
    objects in them afterwards)."""
    return enqueue_job(
        principal,
        "import",
        "modomo.tasks.import_tasks.import_huggingface_dataset",
        body.task_kwargs(),
        options=body,
        missing="the Hugging Face import is not available in this version: no task "
        "modomo.tasks.import_tasks.import_huggingface_dataset is registered",
    )
